//! Safe unpacking of image layers into a rootfs.
//!
//! The unpacker never follows a symlink while writing. The rootfs is opened once per layer
//! and every name below it is reached from that descriptor one component at a time, each
//! parent opened with `O_DIRECTORY | O_NOFOLLOW` (`openat`); a symlink met on the way is a
//! refusal, never entered. Existing names are removed (the link itself, not what it points
//! at) before a new entry is created with `O_CREAT | O_EXCL`, hard links are made with
//! `linkat` without `AT_SYMLINK_FOLLOW`, and directory modes are set through a descriptor
//! opened with `O_NOFOLLOW`. So an ordinary distro image unpacks as it is: absolute symlinks
//! such as `/usr/bin/python3 -> /usr/bin/python3.11` are kept as written (runc's root makes
//! them resolve inside the container at run time), and setuid/setgid bits are cleared and
//! counted ([`crate::UnpackedRootfs::setuid_cleared`]; the trainer runs without capabilities
//! and with `noNewPrivileges`, so the bits would do nothing).
//!
//! What it refuses, each with its own error: absolute entry paths, `..`, entries, whiteouts
//! and opaque whiteouts whose parent path goes through a symlink (including a directory a
//! later layer turned into a link), relative symlinks that climb above the rootfs, hard
//! links to anything but a regular file reached through real directories of the rootfs,
//! device nodes and FIFOs (a tar cannot carry a socket), and layers, images or entry counts
//! over the limits. OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) remove what lower layers made.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{self, AtFlags, FileType, Mode, OFlags};

use rapha_core::Digest;

use rapha_core::DigestWriter;

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
    pub(crate) setuid_cleared: u64,
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
        setuid_cleared: 0,
    };
    unpack_tar_stream(reader, 0, &mut st)
}

pub(crate) fn unpack_tar_stream(
    reader: &mut dyn Read,
    index: usize,
    st: &mut UnpackState,
) -> Result<Digest> {
    stream_tar(reader, index, st, &mut |archive, st| {
        process_entries(archive, index, st)
    })
}

/// Counts what one uncompressed tar layer holds into `out`, writing nothing; returns the
/// layer's diff_id. The same limits as unpacking apply.
pub(crate) fn survey_tar_stream(
    reader: &mut dyn Read,
    index: usize,
    st: &mut UnpackState,
    out: &mut ImageContents,
) -> Result<Digest> {
    stream_tar(reader, index, st, &mut |archive, st| {
        survey_entries(archive, index, st, out)
    })
}

type EntriesFn<'f> =
    dyn FnMut(&mut tar::Archive<&mut dyn Read>, &mut UnpackState) -> Result<()> + 'f;

fn stream_tar(
    reader: &mut dyn Read,
    index: usize,
    st: &mut UnpackState,
    body: &mut EntriesFn<'_>,
) -> Result<Digest> {
    let mut cr = CountingReader {
        inner: reader,
        hasher: DigestWriter::default(),
        count: 0,
        layer_limit: st.limits.max_layer_bytes,
        total_before: st.total_bytes,
        total_limit: st.limits.max_rootfs_bytes,
        index,
        tripped: None,
    };
    let result = {
        let mut archive = tar::Archive::new(&mut cr as &mut dyn Read);
        body(&mut archive, st)
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

/// What an image's layers hold, counted from their tar headers (nothing is written): what
/// `rapha bundle inspect` shows and a reviewer should know before approving a run.
// A deliberate duplicate (issue 23): rapha-policy's `ImageReview`
// (crates/rapha-policy/src/approval.rs) holds most of these counts as the stored record of what
// the DPO reviewed (the node maps this into it at admission). This one is the unpacker's own
// count, that one the approval store's format; the policy crate does not link the bundle
// unpacker, so one struct cannot serve both.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImageContents {
    /// Layers read.
    pub layers: usize,
    /// Tar entries over all layers.
    pub entries: u64,
    /// Uncompressed layer bytes.
    pub bytes: u64,
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Symlinks, and of them those with an absolute target (kept; resolved inside the
    /// container at run time).
    pub symlinks: u64,
    /// Symlinks whose target is absolute.
    pub absolute_symlinks: u64,
    /// Hard links.
    pub hard_links: u64,
    /// Whiteouts and opaque whiteouts.
    pub whiteouts: u64,
    /// Files and directories with a setuid or setgid bit, which unpacking clears.
    pub setuid_setgid: u64,
    /// Device nodes and FIFOs, for which unpacking refuses the image.
    pub special_files: u64,
}

fn survey_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    index: usize,
    st: &mut UnpackState,
    out: &mut ImageContents,
) -> Result<()> {
    let fmt = |e: std::io::Error| BundleError::LayerFormat {
        index,
        reason: e.to_string(),
    };
    for entry in archive.entries().map_err(fmt)? {
        let entry = entry.map_err(fmt)?;
        st.entries += 1;
        if st.entries > st.limits.max_entries {
            return Err(BundleError::TooManyEntries {
                limit: st.limits.max_entries,
            });
        }
        out.entries += 1;
        let is_whiteout = entry
            .path_bytes()
            .rsplit(|b| *b == b'/')
            .find(|c| !c.is_empty())
            .is_some_and(|name| name.starts_with(b".wh."));
        if is_whiteout {
            out.whiteouts += 1;
            continue;
        }
        let mode = entry.header().mode().map_err(fmt)?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => out.files += 1,
            tar::EntryType::Directory => out.directories += 1,
            tar::EntryType::Symlink => {
                out.symlinks += 1;
                if entry
                    .link_name_bytes()
                    .is_some_and(|t| t.first() == Some(&b'/'))
                {
                    out.absolute_symlinks += 1;
                }
            }
            tar::EntryType::Link => out.hard_links += 1,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                out.special_files += 1;
            }
            _ => {}
        }
        if mode & 0o6000 != 0
            && matches!(
                kind,
                tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory
            )
        {
            out.setuid_setgid += 1;
        }
    }
    Ok(())
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
    let tree = Tree::open(&st.root)?;
    let mut created: HashSet<Vec<OsString>> = HashSet::new();
    let mut dir_modes: Vec<(Vec<OsString>, u32)> = Vec::new();
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

        let name_bytes = name.as_bytes();
        if let Some(hidden) = name_bytes.strip_prefix(b".wh.") {
            whiteout(&tree, parents, hidden, &shown, &created)?;
            continue;
        }

        let mut mode = entry.header().mode().map_err(fmt)? & 0o7777;
        match kind {
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
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory
                if mode & 0o6000 != 0 =>
            {
                // The trainer runs with no capabilities and noNewPrivileges, so the bits
                // would do nothing; they are dropped and counted for the DPO's review.
                mode &= !0o6000;
                st.setuid_cleared += 1;
            }
            _ => {}
        }
        let parent = match tree.walk(parents, true)? {
            Walked::Dir(fd) => fd,
            Walked::Link(i) => return Err(through_link(&shown, &parents[..=i])),
            Walked::Missing => return Err(BundleError::InvalidPath(shown)),
        };
        let rel = || tree.display(&comps);
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                tree.remove_at(&parent, name, &comps)?;
                let fd = fs::openat(
                    &parent,
                    name.as_os_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(io_err(rel()))?;
                let mut file = std::fs::File::from(fd);
                std::io::copy(&mut entry, &mut file).map_err(BundleError::io(rel()))?;
                fs::fchmod(&file, Mode::from_bits_truncate(mode & 0o777)).map_err(io_err(rel()))?;
            }
            tar::EntryType::Directory => {
                if kind_at(&parent, name).map_err(io_err(rel()))? != Some(FileType::Directory) {
                    tree.remove_at(&parent, name, &comps)?;
                    fs::mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(0o755))
                        .map_err(io_err(rel()))?;
                }
                dir_modes.push((comps.clone(), mode & 0o1777));
            }
            tar::EntryType::Symlink => {
                let target = link_target(&entry, &shown)?;
                check_symlink_target(&shown, &target)?;
                tree.remove_at(&parent, name, &comps)?;
                fs::symlinkat(target.as_str(), &parent, name.as_os_str()).map_err(io_err(rel()))?;
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
                let Walked::Dir(tparent) = tree.walk(tparents, false)? else {
                    return Err(escape());
                };
                if kind_at(&tparent, tname).map_err(io_err(tree.display(&tcomps)))?
                    != Some(FileType::RegularFile)
                {
                    return Err(escape());
                }
                if tcomps != comps {
                    tree.remove_at(&parent, name, &comps)?;
                    // Without AT_SYMLINK_FOLLOW: links the name itself, checked above to be
                    // a regular file reached through real directories only.
                    fs::linkat(
                        &tparent,
                        tname.as_os_str(),
                        &parent,
                        name.as_os_str(),
                        AtFlags::empty(),
                    )
                    .map_err(io_err(rel()))?;
                }
            }
            other => {
                return Err(BundleError::LayerFormat {
                    index,
                    reason: format!("entry {shown:?} has unsupported type {other:?}"),
                })
            }
        }
        created.insert(comps);
    }
    // Directory modes last, deepest first, so a read-only directory could still be filled.
    for (comps, mode) in dir_modes.iter().rev() {
        if let Walked::Dir(fd) = tree.walk(comps, false)? {
            fs::fchmod(&fd, Mode::from_bits_truncate(*mode))
                .map_err(io_err(tree.display(comps)))?;
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

fn through_link(shown: &str, upto: &[OsString]) -> BundleError {
    BundleError::PathThroughSymlink {
        path: shown.to_owned(),
        through: upto.iter().collect::<PathBuf>().display().to_string(),
    }
}

fn io_err(path: PathBuf) -> impl FnOnce(rustix::io::Errno) -> BundleError {
    move |e| BundleError::Io {
        path,
        source: e.into(),
    }
}

/// The rootfs, opened once per layer; every name below it is reached from this descriptor
/// one component at a time, never through a symlink.
struct Tree {
    root: PathBuf,
    fd: OwnedFd,
}

/// Where a walk from the rootfs ended.
enum Walked {
    /// The real directory the components name.
    Dir(OwnedFd),
    /// A component is missing or a file (only when not creating).
    Missing,
    /// Component `i` is a symlink.
    Link(usize),
}

/// Opens a directory entry of `dir` as a directory, failing on a symlink (`O_NOFOLLOW`) or a
/// non-directory (`O_DIRECTORY`).
fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The type of `dir/name` without following it, `None` if it does not exist.
fn kind_at(dir: &OwnedFd, name: &OsStr) -> rustix::io::Result<Option<FileType>> {
    match fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Tree {
    fn open(root: &Path) -> Result<Self> {
        let fd = fs::openat(
            fs::CWD,
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err(root.to_owned()))?;
        Ok(Self {
            root: root.to_owned(),
            fd,
        })
    }

    fn display(&self, comps: &[OsString]) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(comps);
        p
    }

    /// Opens `comps` below the rootfs as a directory, never following a link. With `create`,
    /// missing directories are made (mode 0755) and a lower layer's file in the way is
    /// replaced by a directory (the upper layer wins); a symlink is reported, never entered.
    fn walk(&self, comps: &[OsString], create: bool) -> Result<Walked> {
        let mut cur = open_dir_at(&self.fd, OsStr::new(".")).map_err(io_err(self.root.clone()))?;
        for (i, c) in comps.iter().enumerate() {
            let here = || self.display(&comps[..=i]);
            let err = match open_dir_at(&cur, c) {
                Ok(fd) => {
                    cur = fd;
                    continue;
                }
                Err(e) => e,
            };
            match kind_at(&cur, c).map_err(io_err(here()))? {
                Some(FileType::Symlink) => return Ok(Walked::Link(i)),
                Some(FileType::Directory) => return Err(io_err(here())(err)),
                _ if !create => return Ok(Walked::Missing),
                Some(_) => {
                    fs::unlinkat(&cur, c.as_os_str(), AtFlags::empty()).map_err(io_err(here()))?;
                }
                None => {}
            }
            fs::mkdirat(&cur, c.as_os_str(), Mode::from_bits_truncate(0o755))
                .map_err(io_err(here()))?;
            let fd = open_dir_at(&cur, c).map_err(io_err(here()))?;
            fs::fchmod(&fd, Mode::from_bits_truncate(0o755)).map_err(io_err(here()))?;
            cur = fd;
        }
        Ok(Walked::Dir(cur))
    }

    /// Removes `dir/name` (of path `comps`) if it exists: a symlink itself, never what it
    /// points at; a directory with everything below it, entered only through `O_NOFOLLOW`.
    fn remove_at(&self, dir: &OwnedFd, name: &OsStr, comps: &[OsString]) -> Result<()> {
        let here = || self.display(comps);
        match kind_at(dir, name).map_err(io_err(here()))? {
            None => Ok(()),
            Some(FileType::Directory) => {
                let sub = open_dir_at(dir, name).map_err(io_err(here()))?;
                for child in list_dir(&sub).map_err(io_err(here()))? {
                    let mut c = comps.to_vec();
                    c.push(child.clone());
                    self.remove_at(&sub, &child, &c)?;
                }
                fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(io_err(here()))
            }
            Some(_) => fs::unlinkat(dir, name, AtFlags::empty()).map_err(io_err(here())),
        }
    }
}

/// The names in a directory, without `.` and `..`.
fn list_dir(dir: &OwnedFd) -> rustix::io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for e in fs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    Ok(names)
}

/// Applies a whiteout entry `parents/.wh.<hidden>`: removes what lower layers put there.
fn whiteout(
    tree: &Tree,
    parents: &[OsString],
    hidden: &[u8],
    shown: &str,
    created: &HashSet<Vec<OsString>>,
) -> Result<()> {
    // Whiteouts never create anything, but they must not act through a symlink either.
    let dir = match tree.walk(parents, false)? {
        Walked::Dir(fd) => fd,
        Walked::Link(i) => return Err(through_link(shown, &parents[..=i])),
        Walked::Missing => return Ok(()), // nothing below to remove
    };
    let mut path = parents.to_vec();
    if hidden == b".wh..opq" {
        for name in list_dir(&dir).map_err(io_err(tree.display(parents)))? {
            path.push(name);
            if !created.contains(&path) {
                if let Some(name) = path.last() {
                    tree.remove_at(&dir, name, &path)?;
                }
            }
            path.pop();
        }
        return Ok(());
    }
    if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.starts_with(b".wh.") {
        return Err(BundleError::InvalidPath(shown.to_owned()));
    }
    let name = OsStr::from_bytes(hidden);
    path.push(name.to_owned());
    if !created.contains(&path) {
        tree.remove_at(&dir, name, &path)?;
    }
    Ok(())
}

/// Refuses a symlink at `link_path` (relative to the rootfs) whose relative `target` climbs
/// with `..` above the rootfs or uses `..` after a name (which could climb out through
/// another symlink), and an empty target or one with a NUL. An absolute target is kept as
/// written: it is only data here (the unpacker never follows a link), and at run time runc
/// resolves it inside the container's root, where `/..` is `/`.
pub(crate) fn check_symlink_target(link_path: &str, target: &str) -> Result<()> {
    let escape = || {
        Err(BundleError::SymlinkEscape {
            path: link_path.to_owned(),
            target: target.to_owned(),
        })
    };
    if target.is_empty() || target.contains('\0') {
        return escape();
    }
    if target.starts_with('/') {
        return Ok(());
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
