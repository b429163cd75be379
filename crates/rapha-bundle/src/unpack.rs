//! Safe unpacking of image layers into a rootfs.
//!
//! The unpacker never follows a symlink: every entry's parent directories are checked to be
//! real directories inside the rootfs, existing names are removed before a new entry is
//! created (`create_new`, so nothing is written through an old file or link), and symlink and
//! hard link targets are checked before they are made. What it refuses, each with its own
//! error: absolute paths, `..`, paths through a symlink, symlinks whose target is absolute or
//! climbs above the rootfs, hard links to anything but a regular file already in the rootfs,
//! device nodes and FIFOs, setuid/setgid bits, and layers, images or entry counts over the
//! limits. OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) remove what lower layers made.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use rapha_core::Digest;

use crate::oci::DigestWriter;

use crate::error::{BundleError, Result};

/// Size limits for verification and unpacking. Defaults fit a trainer image with room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest compressed layer blob.
    pub max_blob_bytes: u64,
    /// Largest uncompressed layer (tar stream).
    pub max_layer_bytes: u64,
    /// Largest sum of uncompressed layers.
    pub max_rootfs_bytes: u64,
    /// Most tar entries over all layers.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_blob_bytes: 8 << 30,
            max_layer_bytes: 8 << 30,
            max_rootfs_bytes: 16 << 30,
            max_entries: 1 << 20,
        }
    }
}

/// Progress over the layers of one image.
#[derive(Debug)]
pub(crate) struct UnpackState {
    pub(crate) root: PathBuf,
    pub(crate) limits: Limits,
    pub(crate) total_bytes: u64,
    pub(crate) entries: u64,
}

/// Counts and hashes the uncompressed stream (its digest is the layer's diff_id) and stops
/// it at the limits.
struct CountingReader<'a> {
    inner: &'a mut dyn Read,
    hasher: DigestWriter,
    count: u64,
    layer_limit: u64,
    total_before: u64,
    total_limit: u64,
    index: usize,
    tripped: Option<BundleError>,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        let err = if self.count > self.layer_limit {
            Some(BundleError::LayerTooLarge {
                index: self.index,
                limit: self.layer_limit,
            })
        } else if self.total_before.saturating_add(self.count) > self.total_limit {
            Some(BundleError::RootfsTooLarge {
                limit: self.total_limit,
            })
        } else {
            None
        };
        if let Some(e) = err {
            self.tripped = Some(e);
            return Err(std::io::Error::other("size limit reached"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks one uncompressed tar layer into `dest` (an existing directory); returns the
/// layer's diff_id. The entry point the fuzz target drives.
///
/// # Errors
/// Every refusal listed in the module docs.
pub fn unpack_layer_tar(reader: &mut dyn Read, dest: &Path, limits: &Limits) -> Result<Digest> {
    let mut st = UnpackState {
        root: dest.to_owned(),
        limits: limits.clone(),
        total_bytes: 0,
        entries: 0,
    };
    unpack_tar_stream(reader, 0, &mut st)
}

pub(crate) fn unpack_tar_stream(
    reader: &mut dyn Read,
    index: usize,
    st: &mut UnpackState,
) -> Result<Digest> {
    let mut cr = CountingReader {
        inner: reader,
        hasher: DigestWriter::new(),
        count: 0,
        layer_limit: st.limits.max_layer_bytes,
        total_before: st.total_bytes,
        total_limit: st.limits.max_rootfs_bytes,
        index,
        tripped: None,
    };
    let result = {
        let mut archive = tar::Archive::new(&mut cr);
        process_entries(&mut archive, index, st)
    };
    if let Some(e) = cr.tripped.take() {
        return Err(e);
    }
    result?;
    // The end-of-archive blocks and any padding belong to the diff_id too.
    let drained = std::io::copy(&mut cr, &mut std::io::sink());
    if let Some(e) = cr.tripped.take() {
        return Err(e);
    }
    drained.map_err(|e| BundleError::LayerFormat {
        index,
        reason: e.to_string(),
    })?;
    st.total_bytes += cr.count;
    Ok(cr.hasher.finish())
}

fn process_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    index: usize,
    st: &mut UnpackState,
) -> Result<()> {
    let fmt = |e: std::io::Error| BundleError::LayerFormat {
        index,
        reason: e.to_string(),
    };
    let mut created: HashSet<PathBuf> = HashSet::new();
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    for entry in archive.entries().map_err(fmt)? {
        let mut entry = entry.map_err(fmt)?;
        st.entries += 1;
        if st.entries > st.limits.max_entries {
            return Err(BundleError::TooManyEntries {
                limit: st.limits.max_entries,
            });
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            continue;
        }
        let comps = sanitize(&raw, &shown)?;
        let Some((name, parents)) = comps.split_last() else {
            continue; // the root directory itself ("./")
        };
        let rel: PathBuf = comps.iter().collect();

        let name_bytes = name.as_bytes();
        if let Some(hidden) = name_bytes.strip_prefix(b".wh.") {
            whiteout(&st.root, parents, hidden, &shown, &created)?;
            continue;
        }

        let mode = entry.header().mode().map_err(fmt)? & 0o7777;
        if mode & 0o6000 != 0 {
            return Err(BundleError::SetuidBit { path: shown, mode });
        }
        let parent = ensure_parents(&st.root, parents, &shown)?;
        let path = parent.join(name);
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_existing(&path)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(BundleError::io(&path))?;
                std::io::copy(&mut entry, &mut file).map_err(BundleError::io(&path))?;
                file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
                    .map_err(BundleError::io(&path))?;
            }
            tar::EntryType::Directory => {
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    _ => {
                        remove_existing(&path)?;
                        std::fs::create_dir(&path).map_err(BundleError::io(&path))?;
                    }
                }
                dir_modes.push((path.clone(), mode & 0o1777));
            }
            tar::EntryType::Symlink => {
                let target = link_target(&entry, &shown)?;
                check_symlink_target(&shown, &target)?;
                remove_existing(&path)?;
                std::os::unix::fs::symlink(&target, &path).map_err(BundleError::io(&path))?;
            }
            tar::EntryType::Link => {
                let target = link_target(&entry, &shown)?;
                let escape = || BundleError::HardLinkEscape {
                    path: shown.clone(),
                    target: target.clone(),
                };
                let tcomps = sanitize(target.as_bytes(), &target).map_err(|_| escape())?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(escape());
                };
                let tparent = existing_parents(&st.root, tparents).ok_or_else(escape)?;
                let tpath = tparent.join(tname);
                match std::fs::symlink_metadata(&tpath) {
                    Ok(m) if m.file_type().is_file() => {}
                    _ => return Err(escape()),
                }
                if tpath != path {
                    remove_existing(&path)?;
                    std::fs::hard_link(&tpath, &path).map_err(BundleError::io(&path))?;
                }
            }
            tar::EntryType::Char => {
                return Err(BundleError::SpecialFile {
                    path: shown,
                    kind: "character device",
                })
            }
            tar::EntryType::Block => {
                return Err(BundleError::SpecialFile {
                    path: shown,
                    kind: "block device",
                })
            }
            tar::EntryType::Fifo => {
                return Err(BundleError::SpecialFile {
                    path: shown,
                    kind: "FIFO",
                })
            }
            other => {
                return Err(BundleError::LayerFormat {
                    index,
                    reason: format!("entry {shown:?} has unsupported type {other:?}"),
                })
            }
        }
        created.insert(rel);
    }
    // Directory modes last, deepest first, so a read-only directory could still be filled.
    for (path, mode) in dir_modes.iter().rev() {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
                .map_err(BundleError::io(path))?;
        }
    }
    Ok(())
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>, shown: &str) -> Result<String> {
    let bytes = entry
        .link_name_bytes()
        .ok_or_else(|| BundleError::InvalidPath(format!("{shown} (link without a target)")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Splits a tar path into plain components, refusing absolute paths and `..`.
fn sanitize(raw: &[u8], shown: &str) -> Result<Vec<OsString>> {
    if raw.first() == Some(&b'/') {
        return Err(BundleError::AbsolutePath(shown.to_owned()));
    }
    if raw.contains(&0) {
        return Err(BundleError::InvalidPath(shown.to_owned()));
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(BundleError::PathTraversal(shown.to_owned())),
            c => out.push(OsStr::from_bytes(c).to_owned()),
        }
    }
    Ok(out)
}

/// Walks `parents` under `root`, creating missing directories; refuses a symlink on the way.
fn ensure_parents(root: &Path, parents: &[OsString], shown: &str) -> Result<PathBuf> {
    let mut cur = root.to_owned();
    for c in parents {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                let through = cur.strip_prefix(root).unwrap_or(&cur).display().to_string();
                return Err(BundleError::PathThroughSymlink {
                    path: shown.to_owned(),
                    through,
                });
            }
            Ok(_) => {
                // A lower layer's file where this layer has a directory: the upper one wins.
                std::fs::remove_file(&cur).map_err(BundleError::io(&cur))?;
                std::fs::create_dir(&cur).map_err(BundleError::io(&cur))?;
                std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(0o755))
                    .map_err(BundleError::io(&cur))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&cur).map_err(BundleError::io(&cur))?;
                std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(0o755))
                    .map_err(BundleError::io(&cur))?;
            }
            Err(e) => {
                return Err(BundleError::Io {
                    path: cur,
                    source: e,
                })
            }
        }
    }
    Ok(cur)
}

/// The real directory `root/parents`, or `None` if a component is missing or not a real
/// directory (a symlink, a file).
fn existing_parents(root: &Path, parents: &[OsString]) -> Option<PathBuf> {
    let mut cur = root.to_owned();
    for c in parents {
        cur.push(c);
        if !std::fs::symlink_metadata(&cur).is_ok_and(|m| m.is_dir()) {
            return None;
        }
    }
    Some(cur)
}

fn remove_existing(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(BundleError::io(path)),
        Ok(_) => std::fs::remove_file(path).map_err(BundleError::io(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BundleError::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// Applies a whiteout entry `parents/.wh.<hidden>`: removes what lower layers put there.
fn whiteout(
    root: &Path,
    parents: &[OsString],
    hidden: &[u8],
    shown: &str,
    created: &HashSet<PathBuf>,
) -> Result<()> {
    // Whiteouts never create anything, but they must not act through a symlink either.
    let mut cur = root.to_owned();
    for c in parents {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                let through = cur.strip_prefix(root).unwrap_or(&cur).display().to_string();
                return Err(BundleError::PathThroughSymlink {
                    path: shown.to_owned(),
                    through,
                });
            }
            _ => return Ok(()), // nothing below to remove
        }
    }
    let rel_dir: PathBuf = parents.iter().collect();
    if hidden == b".wh..opq" {
        let entries = std::fs::read_dir(&cur).map_err(BundleError::io(&cur))?;
        for e in entries {
            let e = e.map_err(BundleError::io(&cur))?;
            if !created.contains(&rel_dir.join(e.file_name())) {
                remove_existing(&e.path())?;
            }
        }
        return Ok(());
    }
    if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.starts_with(b".wh.") {
        return Err(BundleError::InvalidPath(shown.to_owned()));
    }
    let name = OsStr::from_bytes(hidden);
    if !created.contains(&rel_dir.join(name)) {
        remove_existing(&cur.join(name))?;
    }
    Ok(())
}

/// Refuses a symlink at `link_path` (relative to the rootfs) whose `target` is absolute, or
/// climbs with `..` above the rootfs, or uses `..` after a name (which could climb out
/// through another symlink).
pub(crate) fn check_symlink_target(link_path: &str, target: &str) -> Result<()> {
    let escape = || {
        Err(BundleError::SymlinkEscape {
            path: link_path.to_owned(),
            target: target.to_owned(),
        })
    };
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return escape();
    }
    let depth = link_path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .count()
        .saturating_sub(1);
    let mut ups = 0usize;
    let mut named = false;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." if named => return escape(),
            ".." => ups += 1,
            _ => named = true,
        }
    }
    if ups > depth {
        return escape();
    }
    Ok(())
}
