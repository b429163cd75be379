//! The file helpers the stores and loaders share: listing every regular file under a
//! directory, replacing a file's contents atomically, and writing a new secret file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// An I/O failure and the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> FsError + '_ {
    move |source| FsError {
        path: path.to_owned(),
        source,
    }
}

/// Every regular file under `dir`, recursively, sorted by path. Symbolic links are neither
/// followed nor listed, nor is anything else that is not a regular file or a directory.
///
/// # Errors
/// [`FsError`] naming the directory that could not be listed or the entry that could not be
/// examined.
pub fn walk_files(dir: &Path) -> Result<Vec<PathBuf>, FsError> {
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), FsError> {
    for entry in std::fs::read_dir(dir).map_err(at(dir))? {
        let entry = entry.map_err(at(dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(at(&path))?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if ft.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Writes `bytes` to a new file at `path` with mode 0600 (owner read/write only) and flushes it
/// to disk; refuses to overwrite an existing file (the keys and tokens the node and CLI make).
///
/// # Errors
/// [`std::io::Error`], [`std::io::ErrorKind::AlreadyExists`] when `path` exists.
pub fn write_new_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Replaces `path` with `bytes` so that a crash leaves the old contents or the new, never a
/// mix: written to `.NAME.tmp` beside it, flushed to disk, renamed over it, and the directory
/// flushed so that the rename itself survives a power cut.
///
/// # Errors
/// [`std::io::Error`] from any step (a temporary file may be left behind; the next write
/// replaces it).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
