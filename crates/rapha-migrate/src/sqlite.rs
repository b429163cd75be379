//! Versions of SQLite stores: `PRAGMA user_version`, migrated in one transaction.

use std::path::Path;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::{too_new, Opened, VersionError};

/// One forward step: moves a store from the version before it to the next.
pub type Migration = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// A store's schema history.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    /// The store's name in messages ("job store", "receipt log", …).
    pub store: &'static str,
    /// SQL creating version 1, written with `IF NOT EXISTS` throughout: it runs on a store with
    /// no version, which is either new or was written before versions existed (version 1).
    pub create_v1: &'static str,
    /// `migrations[i]` moves the store from version `i + 1` to `i + 2`. Append only.
    pub migrations: &'static [Migration],
}

impl Schema {
    /// The version this code writes: 1 plus the number of migrations.
    pub fn current(&self) -> u32 {
        1 + u32::try_from(self.migrations.len()).unwrap_or(u32::MAX - 1)
    }
}

fn io(schema: &Schema, path: &Path) -> impl FnOnce(rusqlite::Error) -> VersionError {
    let (store, path) = (schema.store, path.to_owned());
    move |e| VersionError::Io {
        store,
        path,
        source: Box::new(e),
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    // user_version is a signed 32-bit header field; a negative one is as foreign as a huge one.
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

/// Brings the store on `conn` (at `path`, for messages) to `schema.current()`: creates version 1
/// if it has no version, runs the missing migrations, stamps the version, all in one
/// `BEGIN IMMEDIATE` transaction. Set connection pragmas such as `journal_mode` before: they
/// cannot change inside a transaction.
///
/// # Errors
/// [`VersionError::TooNew`] (nothing is changed), [`VersionError::Migration`] (rolled back),
/// [`VersionError::Io`].
pub fn open(conn: &mut Connection, path: &Path, schema: &Schema) -> Result<Opened, VersionError> {
    let supported = schema.current();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(io(schema, path))?;
    let found = user_version(&tx).map_err(io(schema, path))?;
    too_new(schema.store, path, found, supported)?;
    let mut at = found;
    if at == 0 {
        tx.execute_batch(schema.create_v1)
            .map_err(|e| VersionError::Migration {
                store: schema.store,
                path: path.to_owned(),
                from: 0,
                to: 1,
                source: Box::new(e),
            })?;
        at = 1;
    }
    while at < supported {
        let step = schema.migrations[(at - 1) as usize];
        step(&tx).map_err(|e| VersionError::Migration {
            store: schema.store,
            path: path.to_owned(),
            from: at,
            to: at + 1,
            source: Box::new(e),
        })?;
        at += 1;
    }
    if found != supported {
        tx.pragma_update(None, "user_version", supported)
            .map_err(io(schema, path))?;
    }
    tx.commit().map_err(io(schema, path))?;
    Ok(Opened {
        found,
        now: supported,
    })
}

/// For read-only connections: refuses a store newer than `schema.current()` and one that a
/// writer has not migrated yet (a store with no version counts as version 1).
///
/// # Errors
/// [`VersionError::TooNew`], [`VersionError::NotMigrated`], [`VersionError::Io`].
pub fn check(conn: &Connection, path: &Path, schema: &Schema) -> Result<u32, VersionError> {
    let supported = schema.current();
    let found = user_version(conn).map_err(io(schema, path))?;
    too_new(schema.store, path, found, supported)?;
    if found.max(1) != supported {
        return Err(VersionError::NotMigrated {
            store: schema.store,
            path: path.to_owned(),
            found,
            supported,
        });
    }
    Ok(found)
}
