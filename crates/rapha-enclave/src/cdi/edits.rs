//! What a spec's edits become once checked, and the checks (**I3** and the sandbox's
//! isolation): device nodes under `/dev` with their numbers, bind mounts read-only, `nosuid`
//! and `nodev` and never over the node's own mounts, environment never the node's, hooks by
//! absolute path, no group 0, no network device, no Intel RDT. One edit the node refuses
//! refuses the whole spec.

use std::path::Path;

use super::spec::{Edits, SpecMount, SpecNode};
use super::{CdiError, NodeInfo};

/// Paths of the container the node mounts itself: no CDI mount goes over or under them.
const NODE_MOUNTS: [&str; 5] = ["/proc", "/dev", "/rapha", "/out", "/tmp"];

/// Environment variables the node sets for the trainer: no CDI spec may set them.
const NODE_ENV: [&str; 2] = ["PATH", "HOME"];

/// A device node as the runc spec gets it: type and numbers known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceNode {
    /// Path inside the container.
    pub path: String,
    /// Path on the host it stands for.
    pub host_path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    /// cgroup access (`r`, `w`, `m`).
    pub access: String,
    pub file_mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Mount {
    pub(super) host_path: String,
    pub(super) container_path: String,
    pub(super) options: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Hook {
    pub(super) name: String,
    pub(super) path: String,
    pub(super) args: Vec<String>,
    pub(super) env: Vec<String>,
    pub(super) timeout: Option<i64>,
}

/// The edits of one spec's `containerEdits` or one device's, checked and ready to apply.
#[derive(Clone, Debug, Default)]
pub(super) struct EditSet {
    pub(super) nodes: Vec<DeviceNode>,
    pub(super) mounts: Vec<Mount>,
    pub(super) env: Vec<String>,
    pub(super) hooks: Vec<Hook>,
    pub(super) gids: Vec<u32>,
}

impl EditSet {
    /// Adds `other`'s edits, each once. `Err` names a conflict: one device node or mount path
    /// given two different meanings.
    pub(super) fn merge(&mut self, other: &EditSet) -> Result<(), String> {
        for n in &other.nodes {
            match self.nodes.iter().find(|o| o.path == n.path) {
                Some(o) if o != n => {
                    return Err(format!(
                        "the device node {} is defined twice, differently",
                        n.path
                    ))
                }
                Some(_) => {}
                None => self.nodes.push(n.clone()),
            }
        }
        for m in &other.mounts {
            match self
                .mounts
                .iter()
                .find(|o| o.container_path == m.container_path)
            {
                Some(o) if o != m => {
                    return Err(format!("two different mounts at {}", m.container_path))
                }
                Some(_) => {}
                None => self.mounts.push(m.clone()),
            }
        }
        for e in &other.env {
            push_new(&mut self.env, e.clone());
        }
        for h in &other.hooks {
            push_new(&mut self.hooks, h.clone());
        }
        for g in &other.gids {
            push_new(&mut self.gids, *g);
        }
        Ok(())
    }
}

/// Checks one `containerEdits` of the spec at `spec`.
pub(super) fn edit_set(
    spec: &Path,
    e: &Edits,
    probe: &impl Fn(&Path) -> NodeInfo,
) -> Result<EditSet, CdiError> {
    let refuse = |detail: String| CdiError::Refused {
        path: spec.to_owned(),
        detail,
    };
    if e.net_devices.is_some() {
        return Err(refuse(
            "it adds network devices, which would give the trainer a network".into(),
        ));
    }
    if e.intel_rdt.is_some() {
        return Err(refuse(
            "it sets Intel RDT, which the node does not review".into(),
        ));
    }
    let mut set = EditSet::default();
    for v in &e.env {
        let Some((k, _)) = v.split_once('=') else {
            return Err(refuse(format!("environment entry {v:?} is not NAME=VALUE")));
        };
        if k.is_empty() || NODE_ENV.contains(&k) || k.starts_with("RAPHA_") {
            return Err(refuse(format!(
                "it sets {k:?}, which the node sets for the trainer"
            )));
        }
        push_new(&mut set.env, v.clone());
    }
    for &g in &e.additional_gids {
        if g == 0 {
            return Err(refuse("it adds the trainer to group 0 (root)".into()));
        }
        push_new(&mut set.gids, g);
    }
    let mut one = EditSet::default();
    for n in &e.device_nodes {
        one.nodes = vec![device_node(spec, n, probe)?];
        set.merge(&one).map_err(refuse)?;
    }
    one.nodes.clear();
    for m in &e.mounts {
        one.mounts = vec![mount(m).map_err(refuse)?];
        set.merge(&one).map_err(refuse)?;
    }
    for h in &e.hooks {
        const NAMES: [&str; 6] = [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop",
        ];
        if !NAMES.contains(&h.hook_name.as_str()) {
            return Err(refuse(format!("unknown hook {:?}", h.hook_name)));
        }
        if !h.path.starts_with('/') {
            return Err(refuse(format!("hook path {:?} is not absolute", h.path)));
        }
        push_new(
            &mut set.hooks,
            Hook {
                name: h.hook_name.clone(),
                path: h.path.clone(),
                args: h.args.clone(),
                env: h.env.clone(),
                timeout: h.timeout,
            },
        );
    }
    Ok(set)
}

fn push_new<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

fn absolute_clean(p: &str) -> bool {
    p.starts_with('/') && !p.contains('\0') && p.split('/').all(|c| c != ".." && c != ".")
}

fn device_node(
    spec: &Path,
    n: &SpecNode,
    probe: &impl Fn(&Path) -> NodeInfo,
) -> Result<DeviceNode, CdiError> {
    let err = |detail: String| CdiError::DeviceNode {
        path: n.path.clone(),
        spec: spec.to_owned(),
        detail,
    };
    if !absolute_clean(&n.path) || !n.path.starts_with("/dev/") {
        return Err(err(
            "a device node must be an absolute path under /dev".into()
        ));
    }
    let host_path = n.host_path.clone().unwrap_or_else(|| n.path.clone());
    if !absolute_clean(&host_path) {
        return Err(err(format!("host path {host_path:?} is not absolute")));
    }
    let access = n.permissions.clone().unwrap_or_else(|| "rw".into());
    if access.is_empty() || !access.bytes().all(|b| matches!(b, b'r' | b'w' | b'm')) {
        return Err(err(format!(
            "permissions {access:?} are not some of r, w, m"
        )));
    }
    let given = n.kind.as_deref().and_then(|k| match k {
        "c" | "u" => Some('c'),
        "b" => Some('b'),
        _ => None,
    });
    if n.kind.is_some() && given.is_none() {
        return Err(err(format!(
            "type {:?} is not a character or block device",
            n.kind.as_deref().unwrap_or_default()
        )));
    }
    let (kind, major, minor) = match (given, n.major, n.minor) {
        (Some(k), Some(ma), Some(mi)) => (k, ma, mi),
        _ => {
            let (k, ma, mi) = probe(Path::new(&host_path))
                .map_err(|e| err(format!("the host's {host_path}: {e}")))?;
            if given.is_some_and(|g| g != k) {
                return Err(err(format!(
                    "the spec says type {}, the host's {host_path} is {k}",
                    given.unwrap_or(k)
                )));
            }
            (k, n.major.unwrap_or(ma), n.minor.unwrap_or(mi))
        }
    };
    if major < 0 || minor < 0 {
        return Err(err("negative device numbers".into()));
    }
    Ok(DeviceNode {
        path: n.path.clone(),
        host_path,
        kind,
        major,
        minor,
        access,
        file_mode: n.file_mode,
        uid: n.uid,
        gid: n.gid,
    })
}

fn mount(m: &SpecMount) -> Result<Mount, String> {
    if !absolute_clean(&m.container_path) || m.container_path == "/" {
        return Err(format!(
            "mount destination {:?} is not an absolute path below /",
            m.container_path
        ));
    }
    if let Some(own) = NODE_MOUNTS.iter().find(|own| {
        m.container_path == **own
            || m.container_path.starts_with(&format!("{own}/"))
            || own.starts_with(&format!("{}/", m.container_path.trim_end_matches('/')))
    }) {
        return Err(format!(
            "it mounts {} over the node's own {own}",
            m.container_path
        ));
    }
    if !absolute_clean(&m.host_path) {
        return Err(format!("mount source {:?} is not absolute", m.host_path));
    }
    if m.kind.as_deref().is_some_and(|k| k != "bind") {
        return Err(format!(
            "mount {} is of type {:?}: only bind mounts are applied",
            m.container_path,
            m.kind.as_deref().unwrap_or_default()
        ));
    }
    // Read-only, no setuid, no devices, whatever the spec asked for.
    let mut options: Vec<String> = m
        .options
        .iter()
        .filter(|o| {
            !matches!(
                o.as_str(),
                "rw" | "suid" | "dev" | "ro" | "nosuid" | "nodev"
            )
        })
        .cloned()
        .collect();
    if !options.iter().any(|o| o == "bind" || o == "rbind") {
        options.insert(0, "rbind".into());
    }
    options.extend(["ro", "nosuid", "nodev"].map(String::from));
    Ok(Mount {
        host_path: m.host_path.clone(),
        container_path: m.container_path.clone(),
        options,
    })
}
