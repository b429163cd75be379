//! The CDI spec files as the node reads them: `*.json`, `*.yaml`, `*.yml` in the configured
//! directories, at most [`MAX_SPEC_BYTES`] each, `cdiVersion` 0.3.0 to 1.x, every field known
//! (`deny_unknown_fields`: a later version's edit is refused, never silently dropped). Only
//! specs of a configured kind are parsed past their `kind`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{CdiError, MAX_SPEC_BYTES};

/// One CDI spec file (`cdiVersion` 0.3.0 to 1.x).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Spec {
    pub(super) cdi_version: String,
    pub(super) kind: String,
    // Read (so the spec parses) and not applied: annotations are for the runtime's own
    // device plugins, none of which run here.
    #[serde(default, rename = "annotations")]
    pub(super) _annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) devices: Vec<Device>,
    #[serde(default)]
    pub(super) container_edits: Edits,
}

/// Only the kind: a spec of another kind is not the node's business and is not parsed further.
#[derive(Debug, Deserialize)]
pub(super) struct Header {
    pub(super) kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Device {
    pub(super) name: String,
    #[serde(default, rename = "annotations")]
    pub(super) _annotations: BTreeMap<String, String>,
    pub(super) container_edits: Edits,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Edits {
    #[serde(default)]
    pub(super) env: Vec<String>,
    #[serde(default)]
    pub(super) device_nodes: Vec<SpecNode>,
    #[serde(default)]
    pub(super) hooks: Vec<SpecHook>,
    #[serde(default)]
    pub(super) mounts: Vec<SpecMount>,
    #[serde(default, rename = "additionalGIDs")]
    pub(super) additional_gids: Vec<u32>,
    // Known but refused: a network interface in the trainer's namespace, or cache and memory
    // bandwidth settings the node does not review.
    #[serde(default)]
    pub(super) net_devices: Option<Value>,
    #[serde(default)]
    pub(super) intel_rdt: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SpecNode {
    pub(super) path: String,
    #[serde(default)]
    pub(super) host_path: Option<String>,
    #[serde(default, rename = "type")]
    pub(super) kind: Option<String>,
    #[serde(default)]
    pub(super) major: Option<i64>,
    #[serde(default)]
    pub(super) minor: Option<i64>,
    #[serde(default)]
    pub(super) file_mode: Option<u32>,
    #[serde(default)]
    pub(super) permissions: Option<String>,
    #[serde(default)]
    pub(super) uid: Option<u32>,
    #[serde(default)]
    pub(super) gid: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SpecMount {
    pub(super) host_path: String,
    pub(super) container_path: String,
    #[serde(default, rename = "type")]
    pub(super) kind: Option<String>,
    #[serde(default)]
    pub(super) options: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SpecHook {
    pub(super) hook_name: String,
    pub(super) path: String,
    #[serde(default)]
    pub(super) args: Vec<String>,
    #[serde(default)]
    pub(super) env: Vec<String>,
    #[serde(default)]
    pub(super) timeout: Option<i64>,
}

/// The `*.json`, `*.yaml` and `*.yml` files of `dir`, sorted; none if it does not exist.
pub(super) fn spec_files(dir: &Path) -> Result<Vec<PathBuf>, CdiError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CdiError::Io {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|source| CdiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let p = e.path();
        let ext = p.extension().and_then(|x| x.to_str()).unwrap_or_default();
        if matches!(ext, "json" | "yaml" | "yml") && p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The spec at `path` if its kind is one of `kinds`.
pub(super) fn read_spec(path: &Path, kinds: &BTreeSet<&str>) -> Result<Option<Spec>, CdiError> {
    let io = |source| CdiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_SPEC_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_SPEC_BYTES {
        return Err(CdiError::TooLarge {
            path: path.to_owned(),
        });
    }
    let parse_err = |detail: String| CdiError::Parse {
        path: path.to_owned(),
        detail,
    };
    let json = path.extension().is_some_and(|x| x == "json");
    let header: Header = if json {
        serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))?
    } else {
        serde_yaml::from_str(&text).map_err(|e| parse_err(e.to_string()))?
    };
    if !kinds.contains(header.kind.as_str()) {
        return Ok(None);
    }
    let spec: Spec = if json {
        serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))?
    } else {
        serde_yaml::from_str(&text).map_err(|e| parse_err(e.to_string()))?
    };
    let major = spec
        .cdi_version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    if !matches!(major, Some(0 | 1)) {
        return Err(parse_err(format!(
            "cdiVersion {:?} is not one this node reads (0.3.0 to 1.x)",
            spec.cdi_version
        )));
    }
    Ok(Some(spec))
}
