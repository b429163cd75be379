//! GPUs for trainers, from the host's Container Device Interface (CDI) specs.
//!
//! A node that has GPUs names them in its configuration (`[trainer] gpus =
//! ["nvidia.com/gpu=all"]`); the vendor's tool describes them in a CDI spec on the host
//! (`nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`). [`GpuDevices::resolve`] reads
//! those specs once, checks every edit they make, and [`GpuDevices::apply`] adds the edits to
//! the runc spec of a job that declared a GPU (`resources.gpus > 0`), and of no other job.
//! The publisher never names a device: only the node's configuration picks them.
//!
//! Only what the node can stand behind is applied; anything else refuses the whole spec:
//!
//! - device nodes (created in the container's `/dev`, with a cgroup rule allowing exactly
//!   that device, access `rw` unless the spec says otherwise), their type and numbers read
//!   from the host node when the spec leaves them out, as runtimes do;
//! - bind mounts, always read-only, `nosuid` and `nodev` whatever the spec says, never over
//!   or under the node's own mounts (`/`, `/proc`, `/dev`, `/rapha`, `/out`, `/tmp`);
//! - environment variables, never one the node sets (`PATH`, `HOME`, `RAPHA_*`);
//! - OCI hooks (the vendor's, e.g. `nvidia-ctk hook update-ldcache`): programs of the host
//!   that the OCI runtime runs as root around the container's start. They are the hospital's
//!   own installed tools, named by absolute path in a file only root writes;
//! - additional groups other than root's.
//!
//! Network devices (`netDevices`) would give the trainer a network interface and are refused,
//! as are Intel RDT settings and any field this module does not know (a later CDI version's
//! edit is never silently dropped).
//!
//! A GPU's memory is outside any enclave: the decoded pixels a trainer copies to its GPU
//! leave the runtime's locked memory. The session reports it in the confinement of the job's
//! manifest and receipt ([`crate::session::CONFINEMENT_DEVELOPMENT_GPU`]).
//!
//! This module has been run against sample specs in the form `nvidia-ctk` writes (unit tests)
//! and against the machine's ordinary device nodes; no GPU job has been run with it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

mod edits;
mod spec;

pub use edits::DeviceNode;
use edits::{edit_set, EditSet};
use spec::{read_spec, spec_files, Spec};

/// The directories runtimes read CDI specs from, lowest priority first (a device defined in
/// `/var/run/cdi` replaces the one of the same name in `/etc/cdi`).
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// Largest spec file read (a generated spec for eight GPUs is a few tens of KiB).
pub const MAX_SPEC_BYTES: u64 = 4 << 20;

/// A CDI spec or configured device name the node refuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CdiError {
    #[error(
        "{name:?} is not a CDI device name: write VENDOR/CLASS=NAME, e.g. \"nvidia.com/gpu=all\""
    )]
    BadName { name: String },
    #[error(
        "no CDI spec in {dirs} defines {name:?} (generate one, e.g. `nvidia-ctk cdi generate \
         --output=/etc/cdi/nvidia.yaml`, and list the names with `nvidia-ctk cdi list`)"
    )]
    Unknown { name: String, dirs: String },
    #[error("could not read the CDI spec {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CDI spec {path} is over {MAX_SPEC_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("the CDI spec {path} does not parse: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path} and {other} both define the CDI device {name:?}: keep one")]
    Duplicate {
        name: String,
        path: PathBuf,
        other: PathBuf,
    },
    #[error("the CDI spec {path} is refused: {detail}")]
    Refused { path: PathBuf, detail: String },
    #[error("the device node {path} of the CDI spec {spec} cannot be used: {detail}")]
    DeviceNode {
        path: String,
        spec: PathBuf,
        detail: String,
    },
}

/// The host's answer for a device node: its type (`c`, `b`) and numbers, or why it has none.
pub type NodeInfo = std::result::Result<(char, i64, i64), String>;

/// Reads a host device node's type and numbers (`stat(2)`).
pub fn stat_device(path: &Path) -> NodeInfo {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let kind = if m.file_type().is_char_device() {
        'c'
    } else if m.file_type().is_block_device() {
        'b'
    } else {
        return Err("not a device node".into());
    };
    let dev = m.rdev();
    // Linux's encoding of dev_t (major: 12 + 32 bits, minor: 8 + 24 bits); both fit i64.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    Ok((kind, major as i64, minor as i64))
}

/// The devices the node's configuration names, resolved from the host's CDI specs and
/// checked: everything [`GpuDevices::apply`] adds to a GPU job's runc spec.
///
/// A job that declares `n` GPUs gets the first `n` configured names (each with the edits of
/// the spec that defines it): name devices one by one (`nvidia.com/gpu=0`, `…=1`) for a job
/// to get no more than it declared; a name such as `nvidia.com/gpu=all` gives every GPU it
/// covers to any GPU job.
#[derive(Clone, Debug, Default)]
pub struct GpuDevices {
    names: Vec<String>,
    specs: Vec<PathBuf>,
    /// Each spec's own `containerEdits`, in the order of `specs`.
    common: Vec<EditSet>,
    /// Each configured name's device edits, with the index of its spec in `specs`.
    devices: Vec<(usize, EditSet)>,
    /// Everything, merged: what `doctor` checks.
    all: EditSet,
}

impl GpuDevices {
    /// Resolves `names` (`VENDOR/CLASS=NAME`) from the CDI specs in `dirs` (lowest priority
    /// first, e.g. [`DEFAULT_SPEC_DIRS`]); device nodes whose spec leaves out the type or the
    /// numbers are read from the host with [`stat_device`].
    ///
    /// # Errors
    /// A name that is malformed or that no spec defines, a spec of a requested kind that
    /// cannot be read or parsed or that makes an edit the node refuses, a device node whose
    /// type the host cannot tell.
    pub fn resolve(dirs: &[PathBuf], names: &[String]) -> Result<Self, CdiError> {
        Self::resolve_with(dirs, names, stat_device)
    }

    /// [`GpuDevices::resolve`] with the host's device nodes read by `probe` (tests describe a
    /// GPU host this way on a machine without one).
    ///
    /// # Errors
    /// As [`GpuDevices::resolve`].
    pub fn resolve_with(
        dirs: &[PathBuf],
        names: &[String],
        probe: impl Fn(&Path) -> NodeInfo,
    ) -> Result<Self, CdiError> {
        let wanted: Vec<(String, String)> = names
            .iter()
            .map(|n| parse_name(n).ok_or_else(|| CdiError::BadName { name: n.clone() }))
            .collect::<Result<_, _>>()?;
        let kinds: BTreeSet<&str> = wanted.iter().map(|(k, _)| k.as_str()).collect();
        // (kind, device) -> (spec index, device index), the highest-priority directory winning.
        let mut specs: Vec<(PathBuf, Spec)> = Vec::new();
        let mut index: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
        for dir in dirs {
            let mut in_dir: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
            for path in spec_files(dir)? {
                let Some(spec) = read_spec(&path, &kinds)? else {
                    continue;
                };
                let si = specs.len();
                for (di, d) in spec.devices.iter().enumerate() {
                    let key = (spec.kind.clone(), d.name.clone());
                    if let Some(other) = in_dir.insert(key.clone(), path.clone()) {
                        return Err(CdiError::Duplicate {
                            name: format!("{}={}", key.0, key.1),
                            path,
                            other,
                        });
                    }
                    index.insert(key, (si, di));
                }
                specs.push((path, spec));
            }
        }
        let mut out = Self {
            names: names.to_vec(),
            ..Self::default()
        };
        // spec index in `specs` -> index in `out.specs`
        let mut used: BTreeMap<usize, usize> = BTreeMap::new();
        for ((kind, dev), name) in wanted.iter().zip(names) {
            let Some(&(si, di)) = index.get(&(kind.clone(), dev.clone())) else {
                return Err(CdiError::Unknown {
                    name: name.clone(),
                    dirs: dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let (path, spec) = &specs[si];
            let ui = match used.get(&si) {
                Some(&ui) => ui,
                None => {
                    let common = edit_set(path, &spec.container_edits, &probe)?;
                    out.specs.push(path.clone());
                    out.common.push(common);
                    used.insert(si, out.specs.len() - 1);
                    out.specs.len() - 1
                }
            };
            let device = edit_set(path, &spec.devices[di].container_edits, &probe)?;
            out.devices.push((ui, device));
        }
        // Every conflict shows in the merge of everything (a job's edits are a part of it).
        let mut all = EditSet::default();
        for (set, path) in out
            .common
            .iter()
            .zip(&out.specs)
            .chain(out.devices.iter().map(|(ui, d)| (d, &out.specs[*ui])))
        {
            all.merge(set).map_err(|detail| CdiError::Refused {
                path: path.clone(),
                detail,
            })?;
        }
        out.all = all;
        Ok(out)
    }

    /// The configured names, as given.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The spec files the devices came from.
    pub fn spec_files(&self) -> &[PathBuf] {
        &self.specs
    }

    /// Every device node of the configured names.
    pub fn device_nodes(&self) -> &[DeviceNode] {
        &self.all.nodes
    }

    /// The host paths the bind mounts read (libraries, firmware, IPC sockets).
    pub fn mount_sources(&self) -> impl Iterator<Item = &str> {
        self.all.mounts.iter().map(|m| m.host_path.as_str())
    }

    /// The edits of a job that declared `gpus` GPUs: the first `gpus` names (all of them if it
    /// declared more), each with its spec's own edits.
    fn edits_for(&self, gpus: u32) -> EditSet {
        let n = usize::try_from(gpus).unwrap_or(usize::MAX);
        let devices = &self.devices[..n.min(self.devices.len())];
        let mut set = EditSet::default();
        let mut specs_done = BTreeSet::new();
        for (ui, device) in devices {
            if specs_done.insert(*ui) {
                if let Some(common) = self.common.get(*ui) {
                    // Cannot conflict: a part of `all`, whose merge succeeded.
                    let _ = set.merge(common);
                }
            }
            let _ = set.merge(device);
        }
        set
    }

    /// Adds the GPUs of a job that declared `gpus` of them (none for 0) to `spec`, an OCI
    /// runtime spec as [`crate::sandbox::oci_spec`] writes it: device nodes and their cgroup
    /// rules, mounts, environment, hooks, groups.
    pub fn apply(&self, spec: &mut Value, gpus: u32) {
        if gpus == 0 {
            return;
        }
        let set = self.edits_for(gpus);
        let push = |v: &mut Value, ptr: &str, items: Vec<Value>| {
            if items.is_empty() {
                return;
            }
            let parent = ptr.rsplit_once('/').map_or("", |(p, _)| p);
            let key = ptr.rsplit('/').next().unwrap_or_default();
            if let Some(obj) = v.pointer_mut(parent).and_then(Value::as_object_mut) {
                let arr = obj.entry(key).or_insert_with(|| json!([]));
                if let Some(a) = arr.as_array_mut() {
                    a.extend(items);
                }
            }
        };
        let nodes = set
            .nodes
            .iter()
            .map(|n| {
                let mut d = json!({"path": n.path, "type": n.kind.to_string(),
                                   "major": n.major, "minor": n.minor});
                if let Some(m) = n.file_mode {
                    d["fileMode"] = json!(m);
                }
                if let Some(u) = n.uid {
                    d["uid"] = json!(u);
                }
                if let Some(g) = n.gid {
                    d["gid"] = json!(g);
                }
                d
            })
            .collect();
        push(spec, "/linux/devices", nodes);
        let rules = set
            .nodes
            .iter()
            .map(|n| {
                json!({"allow": true, "type": n.kind.to_string(), "major": n.major,
                       "minor": n.minor, "access": n.access})
            })
            .collect();
        push(spec, "/linux/resources/devices", rules);
        let mounts = set
            .mounts
            .iter()
            .map(|m| {
                json!({"destination": m.container_path, "type": "bind",
                       "source": m.host_path, "options": m.options})
            })
            .collect();
        push(spec, "/mounts", mounts);
        push(
            spec,
            "/process/env",
            set.env.iter().map(|e| json!(e)).collect(),
        );
        push(
            spec,
            "/process/user/additionalGids",
            set.gids.iter().map(|g| json!(g)).collect(),
        );
        if !set.hooks.is_empty() {
            if let Some(obj) = spec.as_object_mut() {
                obj.entry("hooks").or_insert_with(|| json!({}));
            }
            for h in &set.hooks {
                let mut j = json!({"path": h.path});
                if !h.args.is_empty() {
                    j["args"] = json!(h.args);
                }
                if !h.env.is_empty() {
                    j["env"] = json!(h.env);
                }
                if let Some(t) = h.timeout {
                    j["timeout"] = json!(t);
                }
                push(spec, &format!("/hooks/{}", h.name), vec![j]);
            }
        }
    }
}

/// Checks a CDI device name's form (`VENDOR/CLASS=NAME`), as a configuration is loaded.
///
/// # Errors
/// [`CdiError::BadName`].
pub fn check_name(name: &str) -> Result<(), CdiError> {
    parse_name(name)
        .map(drop)
        .ok_or_else(|| CdiError::BadName { name: name.into() })
}

/// `VENDOR/CLASS=NAME` into (`VENDOR/CLASS`, `NAME`).
fn parse_name(s: &str) -> Option<(String, String)> {
    let (kind, name) = s.split_once('=')?;
    let (vendor, class) = kind.split_once('/')?;
    let word = |w: &str, extra: &[u8]| {
        w.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || extra.contains(&b))
    };
    (word(vendor, b".") && word(class, b"") && word(name, b".:"))
        .then(|| (kind.to_owned(), name.to_owned()))
}
