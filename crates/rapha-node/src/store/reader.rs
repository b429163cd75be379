//! The API's read-only connection to the job store.

use std::fmt;
use std::path::Path;

use rapha_core::JobId;
use rusqlite::{Connection, OpenFlags};

use super::suspensions::{in_flight_of, suspension_of, Suspension};
use super::{artifact_bytes, job_finished, job_row, JobRow, Result, SCHEMA};

/// A read-only connection to the job store, for the API's status reads: under WAL a reader
/// never waits for the pipeline's write transactions, and a kept connection spares each
/// request the cost of opening the database.
pub struct JobReader {
    conn: Connection,
}

impl fmt::Debug for JobReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobReader")
    }
}

impl JobReader {
    /// Opens the existing store at `path` read-only.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] if the database cannot be opened.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // A WAL reader waits only in rare cases (recovery of the WAL index); the API reads on
        // its request threads, so such a wait stays short and ends in an error.
        conn.busy_timeout(std::time::Duration::from_secs(1))?;
        rapha_migrate::sqlite::check(&conn, path, &SCHEMA)?;
        Ok(Self { conn })
    }

    /// The job's current row, as [`JobStore::get`].
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown job.
    pub fn get(&self, job: JobId) -> Result<JobRow> {
        job_row(&self.conn, job)
    }

    /// An artifact a step stored, as [`JobStore::artifact`].
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn artifact(&self, job: JobId, kind: &str) -> Result<Option<Vec<u8>>> {
        artifact_bytes(&self.conn, job, kind)
    }

    /// As [`JobStore::suspension`]. A store opened before the suspensions table existed has
    /// none (the table is created by the node's read-write open).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn suspension(&self, publisher: &str) -> Result<Option<Suspension>> {
        suspension_of(&self.conn, publisher)
    }

    /// As [`JobStore::in_flight`].
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn in_flight(&self, publisher: &str) -> Result<u64> {
        in_flight_of(&self.conn, publisher)
    }

    /// The `limit` most recently created jobs, newest first (the console's job list).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure, [`StoreError::Corrupt`] for a bad id.
    pub fn recent(&self, limit: u32) -> Result<Vec<JobRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM jobs ORDER BY created_at DESC, id DESC LIMIT ?1")?;
        let ids: Vec<String> = stmt
            .query_map([limit], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        ids.iter()
            .map(|id| {
                let id: JobId = id
                    .parse()
                    .map_err(|_| super::StoreError::Corrupt(format!("bad job id {id:?}")))?;
                self.get(id)
            })
            .collect()
    }

    /// Whether the node has no more work for `job`, as [`JobStore::finished`].
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown job.
    pub fn finished(&self, job: JobId) -> Result<bool> {
        job_finished(&self.conn, job)
    }
}
