//! Store versions. Every store the node keeps (job store, receipt log, settlement ledger:
//! SQLite; approval store: a directory) carries a version from issue 18 on, and the code that
//! opens a store moves it forward, never back:
//!
//! ```text
//!   found version            on open (read-write)
//!   -------------            --------------------
//!   none (0)                 a new store, or one written before versions: create version 1
//!                            (IF NOT EXISTS), then migrate as from 1
//!   1 ..= current - 1        run each migration in order, stamp `current`
//!   current                  nothing
//!   > current                refused: TooNew names the store, its version and ours
//! ```
//!
//! For SQLite ([`sqlite::open`]) the version is `PRAGMA user_version` and the whole move (the
//! version-1 schema, every migration, the new version) is one `BEGIN IMMEDIATE` transaction:
//! a migration that fails leaves the store exactly as it was. Read-only openers
//! ([`sqlite::check`]) only look: they refuse a newer store and one not yet migrated.
//!
//! Why a crate of its own: the three SQLite stores live in `rapha-receipt`, `rapha-settle` and
//! `rapha-node`, and the approval store in `rapha-policy`; none of them may depend on another
//! for this (`rapha-receipt` must stay small for auditors, `rapha-policy` has no SQLite), and
//! `rapha-core` is linked into everything, the trainer SDK's dependencies included, so it must
//! not pull in SQLite. This crate depends on nothing of Rapha's; its SQLite half is a feature
//! the approval store leaves off.

#[cfg(feature = "sqlite")]
pub mod sqlite;

pub mod dir;

use std::path::PathBuf;

/// Why a store could not be opened at a version this code understands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    #[error(
        "the {store} at {path} is version {found}, newer than this node supports (version \
         {supported}): run the rapha-node release that wrote it, or restore the store from the \
         backup taken before that upgrade"
    )]
    TooNew {
        store: &'static str,
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "the {store} at {path} is version {found}, older than this node's version {supported}: \
         it is migrated when the node opens it for writing (rapha-node serve or run-job); \
         start the node first"
    )]
    NotMigrated {
        store: &'static str,
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "migrating the {store} at {path} from version {from} to {to} failed; the store was left \
         as it was: {source}"
    )]
    Migration {
        store: &'static str,
        path: PathBuf,
        from: u32,
        to: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot read or write the version of the {store} at {path}: {source}")]
    Io {
        store: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What opening did: the version found (0 for a store without one) and the version it is at now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub found: u32,
    pub now: u32,
}

impl Opened {
    /// Whether a migration ran (or an unversioned store was stamped).
    pub fn changed(self) -> bool {
        self.found != self.now
    }
}

/// The version a store at `found` must be refused at, if any: newer than `supported`.
fn too_new(
    store: &'static str,
    path: &std::path::Path,
    found: u32,
    supported: u32,
) -> Result<(), VersionError> {
    if found > supported {
        return Err(VersionError::TooNew {
            store,
            path: path.to_owned(),
            found,
            supported,
        });
    }
    Ok(())
}
