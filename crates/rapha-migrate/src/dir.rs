//! Versions of directory stores (the approval store): a `store-version` file holding the
//! version as decimal digits. A directory has no transactions, so a migration must be
//! idempotent (safe to run again after a crash); the version file is replaced atomically
//! (write beside, rename) only after every migration succeeded.

use std::path::{Path, PathBuf};

use crate::{too_new, Opened, VersionError};

/// Name of the version file inside the store directory.
pub const VERSION_FILE: &str = "store-version";

/// One forward step over the store directory; must be idempotent.
pub type Migration = fn(&Path) -> std::io::Result<()>;

/// A directory store's history.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    /// The store's name in messages.
    pub store: &'static str,
    /// `migrations[i]` moves the store from version `i + 1` to `i + 2`. Append only.
    pub migrations: &'static [Migration],
}

impl Schema {
    /// The version this code writes.
    pub fn current(&self) -> u32 {
        1 + u32::try_from(self.migrations.len()).unwrap_or(u32::MAX - 1)
    }
}

fn io_err(store: &'static str, path: &Path, e: std::io::Error) -> VersionError {
    VersionError::Io {
        store,
        path: path.to_owned(),
        source: Box::new(e),
    }
}

/// The version recorded in `dir` (0 when there is no version file).
///
/// # Errors
/// [`VersionError::Io`], also for a version file that is not a decimal number.
pub fn read(dir: &Path, schema: &Schema) -> Result<u32, VersionError> {
    let file = dir.join(VERSION_FILE);
    match std::fs::read_to_string(&file) {
        Ok(s) => s.trim().parse::<u32>().map_err(|e| VersionError::Io {
            store: schema.store,
            path: file,
            source: format!("not a version number: {e}").into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(schema.store, &file, e)),
    }
}

/// Brings the store directory `dir` (which must exist) to `schema.current()`: refuses a newer
/// one, runs the missing migrations, then records the version.
///
/// # Errors
/// [`VersionError::TooNew`], [`VersionError::Migration`], [`VersionError::Io`].
pub fn open(dir: &Path, schema: &Schema) -> Result<Opened, VersionError> {
    let supported = schema.current();
    let found = read(dir, schema)?;
    too_new(schema.store, dir, found, supported)?;
    let mut at = found.max(1);
    while at < supported {
        let step = schema.migrations[(at - 1) as usize];
        step(dir).map_err(|e| VersionError::Migration {
            store: schema.store,
            path: dir.to_owned(),
            from: at,
            to: at + 1,
            source: Box::new(e),
        })?;
        at += 1;
    }
    if found != supported {
        write(dir, schema.store, supported)?;
    }
    Ok(Opened {
        found,
        now: supported,
    })
}

fn write(dir: &Path, store: &'static str, version: u32) -> Result<(), VersionError> {
    let file: PathBuf = dir.join(VERSION_FILE);
    rapha_core::fs::write_atomic(&file, format!("{version}\n").as_bytes())
        .map_err(|e| io_err(store, &file, e))
}
