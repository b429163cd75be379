//! The file helpers the stores and loaders share: listing every regular file under a
//! directory, replacing a file's contents atomically, and writing and reading secret files.

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

/// Why a secret file (a key, a token, a credential) was refused by [`read_secret`]. The
/// texts follow "key file PATH: " in the callers' messages and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be opened or read (not found, no permission, ...).
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// The path is a symbolic link. Refused even when it points at a private file: the
    /// checked file and the read file must be the same, and a link can be re-pointed.
    #[error("it is a symbolic link; name the file itself")]
    Symlink,
    /// A FIFO, device, socket or directory.
    #[error("it is not a regular file")]
    NotRegular,
    /// Readable or writable by group or others (the permission bits found).
    #[error("mode {0:o} lets group or others read it; run `chmod 600` on it")]
    Loose(u32),
    /// Owned by another user than the one reading it: that user could replace its contents.
    #[error(
        "it is owned by uid {owner}, not by uid {reader} that reads it; run `chown {reader}` on it"
    )]
    Owner { owner: u32, reader: u32 },
    /// Larger than any secret of its kind: refused before reading it into memory.
    #[error("it is larger than {max} bytes, too large for this kind of file")]
    TooLarge { max: usize },
}

/// Reads a secret file of at most `max_len` bytes, the one way every key, token and
/// credential file is read. The file is opened once, without following a symbolic link and
/// without blocking on a FIFO; its type (regular file), mode (no group or other bits), owner
/// (the effective user reading it) and size are then checked on that open handle, so the
/// bytes read are those of the file checked. The bytes are wiped when dropped.
///
/// # Errors
/// [`SecretFileError`], each case with its own variant.
pub fn read_secret(
    path: &Path,
    max_len: usize,
) -> Result<zeroize::Zeroizing<Vec<u8>>, SecretFileError> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;

    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => SecretFileError::Symlink,
        e => SecretFileError::Io(e.into()),
    })?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(SecretFileError::Io)?;
    if !meta.file_type().is_file() {
        return Err(SecretFileError::NotRegular);
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Loose(mode));
    }
    let reader = rustix::process::geteuid().as_raw();
    if meta.uid() != reader {
        return Err(SecretFileError::Owner {
            owner: meta.uid(),
            reader,
        });
    }
    let too_large = SecretFileError::TooLarge { max: max_len };
    if meta.len() > max_len as u64 {
        return Err(too_large);
    }
    // The size may change after the check: read at most one byte more than allowed.
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(max_len as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(SecretFileError::Io)?;
    if bytes.len() > max_len {
        return Err(too_large);
    }
    Ok(bytes)
}

/// [`read_secret`] of a text file (UTF-8).
///
/// # Errors
/// As [`read_secret`]; invalid UTF-8 is an [`SecretFileError::Io`] of kind `InvalidData`.
pub fn read_secret_text(
    path: &Path,
    max_len: usize,
) -> Result<zeroize::Zeroizing<String>, SecretFileError> {
    let mut bytes = read_secret(path, max_len)?;
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(zeroize::Zeroizing::new(text)),
        Err(e) => {
            zeroize::Zeroize::zeroize(&mut e.into_bytes());
            Err(SecretFileError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "it is not UTF-8 text",
            )))
        }
    }
}

impl From<SecretFileError> for std::io::Error {
    /// For callers whose error type carries an [`std::io::Error`]: the I/O error itself, or
    /// the refusal's text with a matching kind.
    fn from(e: SecretFileError) -> Self {
        use std::io::ErrorKind;
        let kind = match e {
            SecretFileError::Io(io) => return io,
            SecretFileError::Symlink | SecretFileError::NotRegular => ErrorKind::InvalidInput,
            SecretFileError::Loose(_) | SecretFileError::Owner { .. } => {
                ErrorKind::PermissionDenied
            }
            SecretFileError::TooLarge { .. } => ErrorKind::FileTooLarge,
        };
        std::io::Error::new(kind, e.to_string())
    }
}
