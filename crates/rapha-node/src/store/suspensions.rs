//! Publishers suspended after a violation, and the in-flight counts the admission gate reads.

use rapha_core::JobId;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::{now, JobState, JobStore, Result, StoreError, FINISHED};

/// Publishers suspended after a violation (issue 18): one row per suspended publisher, kept
/// until a DPO reinstates it. Job store version 2 ([`SCHEMA`]'s first migration).
pub(super) const SUSPENSIONS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS suspensions (
     publisher TEXT PRIMARY KEY,
     job_id TEXT NOT NULL,
     since INTEGER NOT NULL
 );";

/// A publisher's suspension: the job whose outputs the guard refused, and since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Suspension {
    pub publisher: String,
    pub job_id: JobId,
    pub since: u64,
}

impl JobStore {
    /// Suspends `publisher` (all its keys) because of `job`. A publisher already suspended
    /// stays suspended for its first violation.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn suspend(&mut self, publisher: &str, job: JobId) -> Result<()> {
        self.conn.execute(
            "INSERT INTO suspensions (publisher, job_id, since) VALUES (?1, ?2, ?3)
             ON CONFLICT (publisher) DO NOTHING",
            params![publisher, job.to_string(), now()],
        )?;
        Ok(())
    }

    /// Lifts `publisher`'s suspension; the suspension lifted, or `None` if there was none.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn reinstate(&mut self, publisher: &str) -> Result<Option<Suspension>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = suspension_of(&tx, publisher)?;
        if found.is_some() {
            tx.execute("DELETE FROM suspensions WHERE publisher = ?1", [publisher])?;
        }
        tx.commit()?;
        Ok(found)
    }

    /// `publisher`'s suspension, if it is suspended.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn suspension(&self, publisher: &str) -> Result<Option<Suspension>> {
        suspension_of(&self.conn, publisher)
    }

    /// Every suspended publisher, oldest suspension first.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn suspensions(&self) -> Result<Vec<Suspension>> {
        let mut stmt = self.conn.prepare(
            "SELECT publisher, job_id, since FROM suspensions ORDER BY since, publisher",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(suspension_row(row?)?);
        }
        Ok(out)
    }

    /// Jobs of `publisher` not yet finished (its jobs in flight; see [`JobStore::unfinished`]).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn in_flight(&self, publisher: &str) -> Result<u64> {
        in_flight_of(&self.conn, publisher)
    }

    /// Every job id with its state (for the start-up clean-up of working directories).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn states(&self) -> Result<Vec<(JobId, JobState)>> {
        let mut stmt = self.conn.prepare("SELECT id, state FROM jobs")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, state) = row?;
            let id: JobId = id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("bad job id {id:?}")))?;
            out.push((id, state.parse()?));
        }
        Ok(out)
    }
}

fn suspension_row((publisher, job, since): (String, String, u64)) -> Result<Suspension> {
    Ok(Suspension {
        job_id: job
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("bad job id {job:?} in suspensions")))?,
        publisher,
        since,
    })
}

pub(super) fn suspension_of(conn: &Connection, publisher: &str) -> Result<Option<Suspension>> {
    conn.prepare_cached("SELECT publisher, job_id, since FROM suspensions WHERE publisher = ?1")?
        .query_row([publisher], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u64>(2)?,
            ))
        })
        .optional()?
        .map(suspension_row)
        .transpose()
}

pub(super) fn in_flight_of(conn: &Connection, publisher: &str) -> Result<u64> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM jobs WHERE NOT ({FINISHED}) AND json_extract(request, '$.publisher') = ?1"
        ))?
        .query_row(params![publisher], |r| r.get(0))?)
}
