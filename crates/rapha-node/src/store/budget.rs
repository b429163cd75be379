//! Each publisher's running total of leakage bounds (issue 19): one row per admitted job, its
//! bound charged against the publisher's cap at admission. Job store version 3.
//!
//! A row is keyed by job; the publisher's total is the sum of its rows. The `run` column holds
//! the federated run a job belongs to (issue 21, not built: always `''` now), so a run's total
//! is the same sum narrowed to one run.

use rapha_core::JobId;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{now, JobStore, Result, StoreError};

pub(super) const RELEASE_BITS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS release_bits (
     job_id TEXT PRIMARY KEY REFERENCES jobs(id),
     publisher TEXT NOT NULL,
     run TEXT NOT NULL DEFAULT '',
     bits INTEGER NOT NULL,
     publisher_bits INTEGER NOT NULL,
     cap INTEGER NOT NULL,
     at INTEGER NOT NULL
 );
 CREATE INDEX IF NOT EXISTS release_bits_publisher ON release_bits (publisher, run);";

/// What a job was charged: its bound, the publisher's total with it, and the cap then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charge {
    pub bits: u64,
    pub publisher_bits: u64,
    pub cap: u64,
}

/// Why a charge was refused: what the publisher has spent and the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverCap {
    pub spent: u64,
    pub cap: u64,
}

fn to_sql(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{v} bits do not fit the store")))
}

fn from_sql(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("a negative bit count {v}")))
}

impl JobStore {
    /// Charges `bits` for `job` to `publisher` if its total stays within `cap`, in one
    /// transaction. A job charged before (a step re-run after a crash) keeps its first charge.
    /// `Ok(Err(_))`: the charge would pass the cap; nothing was recorded.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn charge_release(
        &mut self,
        job: JobId,
        publisher: &str,
        bits: u64,
        cap: u64,
    ) -> Result<std::result::Result<Charge, OverCap>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(c) = charge_of(&tx, job)? {
            return Ok(Ok(c));
        }
        let spent: i64 = tx.query_row(
            "SELECT COALESCE(SUM(bits), 0) FROM release_bits WHERE publisher = ?1",
            [publisher],
            |r| r.get(0),
        )?;
        let spent = from_sql(spent)?;
        let Some(total) = spent.checked_add(bits).filter(|&t| t <= cap) else {
            return Ok(Err(OverCap { spent, cap }));
        };
        tx.execute(
            "INSERT INTO release_bits (job_id, publisher, run, bits, publisher_bits, cap, at)
             VALUES (?1, ?2, '', ?3, ?4, ?5, ?6)",
            params![
                job.to_string(),
                publisher,
                to_sql(bits)?,
                to_sql(total)?,
                to_sql(cap)?,
                now()
            ],
        )?;
        tx.commit()?;
        Ok(Ok(Charge {
            bits,
            publisher_bits: total,
            cap,
        }))
    }

    /// What `job` was charged at admission, if it was.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn release_charge(&self, job: JobId) -> Result<Option<Charge>> {
        charge_of(&self.conn, job)
    }

    /// The bits charged to `publisher` over all its jobs.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn publisher_bits(&self, publisher: &str) -> Result<u64> {
        let spent: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(bits), 0) FROM release_bits WHERE publisher = ?1",
            [publisher],
            |r| r.get(0),
        )?;
        from_sql(spent)
    }
}

fn charge_of(conn: &rusqlite::Connection, job: JobId) -> Result<Option<Charge>> {
    let row: Option<(i64, i64, i64)> = conn
        .query_row(
            "SELECT bits, publisher_bits, cap FROM release_bits WHERE job_id = ?1",
            [job.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    row.map(|(bits, publisher_bits, cap)| {
        Ok(Charge {
            bits: from_sql(bits)?,
            publisher_bits: from_sql(publisher_bits)?,
            cap: from_sql(cap)?,
        })
    })
    .transpose()
}
