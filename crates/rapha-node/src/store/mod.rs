//! The job store: one row per job, an append-only transition history, and the artifacts each
//! step produced (cohort summary, approval, evidence, output manifest, receipt), in SQLite with
//! WAL and `synchronous = FULL`.
//!
//! A transition is a compare-and-swap on the job's state inside one transaction together with
//! the artifacts it produced: either the whole step is recorded or none of it is. A process
//! killed between two transitions resumes from the last recorded one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use rapha_core::{JobId, JobRequest, Outcome};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

mod budget;
mod reader;
mod suspensions;

use budget::RELEASE_BITS_SCHEMA;
pub use budget::{Charge, OverCap};
pub use reader::JobReader;
pub use suspensions::Suspension;
use suspensions::SUSPENSIONS_SCHEMA;

/// The states of a job, in the order of ARCHITECTURE.md's data flow.
///
/// `Refused` and `Failed` are entered with a reason from any state before `Receipted`; such a
/// job still gets a receipt and, if a deposit was confirmed, a refund settlement.
///
/// Money before outputs: every job goes `Receipted -> Settled` once its settlement is
/// confirmed on chain; only a completed job the escrow shows paid then goes
/// `Settled -> Released`. A job's last state is therefore `Released` (completed and paid) or
/// `Settled` (every other outcome, and a completed job whose deposit was refunded instead of
/// paid). Stores written before this order may hold a completed job in `Released` that was
/// released before settling; it continues `Released -> Settled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Received,
    BundleVerified,
    Admitted,
    CohortBuilt,
    AwaitingApproval,
    Approved,
    AwaitingDeposit,
    DepositConfirmed,
    Attested,
    FinalGatePassed,
    Running,
    OutputsGuarded,
    Refused,
    Failed,
    Receipted,
    Settled,
    Released,
}

impl JobState {
    /// Every state, in data-flow order.
    pub const ALL: [JobState; 17] = [
        Self::Received,
        Self::BundleVerified,
        Self::Admitted,
        Self::CohortBuilt,
        Self::AwaitingApproval,
        Self::Approved,
        Self::AwaitingDeposit,
        Self::DepositConfirmed,
        Self::Attested,
        Self::FinalGatePassed,
        Self::Running,
        Self::OutputsGuarded,
        Self::Refused,
        Self::Failed,
        Self::Receipted,
        Self::Settled,
        Self::Released,
    ];

    /// The name stored in the database and shown in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::BundleVerified => "bundle-verified",
            Self::Admitted => "admitted",
            Self::CohortBuilt => "cohort-built",
            Self::AwaitingApproval => "awaiting-approval",
            Self::Approved => "approved",
            Self::AwaitingDeposit => "awaiting-deposit",
            Self::DepositConfirmed => "deposit-confirmed",
            Self::Attested => "attested",
            Self::FinalGatePassed => "final-gate-passed",
            Self::Running => "running",
            Self::OutputsGuarded => "outputs-guarded",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Receipted => "receipted",
            Self::Released => "released",
            Self::Settled => "settled",
        }
    }

    /// Whether the job can be at its end in this state: `Settled` or `Released`. Whether it
    /// is (a settled completed job may still await its release, a v1 released job its
    /// settlement) depends on its outcome and artifacts: [`JobStore::unfinished`] decides.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Settled | Self::Released)
    }

    /// Whether `self -> to` is an edge of the state machine.
    pub fn may_advance_to(self, to: JobState) -> bool {
        use JobState::*;
        match (self, to) {
            // A job can be refused or fail from any state before its receipt exists.
            (s, Refused | Failed) => {
                !matches!(s, Refused | Failed | Receipted | Released | Settled)
            }
            (Received, BundleVerified)
            | (BundleVerified, Admitted)
            | (Admitted, CohortBuilt)
            | (CohortBuilt, AwaitingApproval)
            | (AwaitingApproval, Approved)
            | (Approved, AwaitingDeposit)
            | (AwaitingDeposit, DepositConfirmed)
            | (DepositConfirmed, Attested)
            | (Attested, FinalGatePassed)
            | (FinalGatePassed, Running)
            | (Running, OutputsGuarded)
            | (OutputsGuarded | Refused | Failed, Receipted)
            | (Receipted, Settled)
            | (Settled, Released)
            // Stores from before the money-first order released a completed job first.
            | (Released, Settled) => true,
            _ => false,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown job state {s:?}")))
    }
}

/// SQL condition on a `jobs` row: the node has no more work for it (see
/// [`JobStore::unfinished`]). Artifact kinds are the pipeline's `settlement`, `release` and
/// `withheld`.
const FINISHED: &str = "(state = 'released' AND EXISTS (SELECT 1 FROM artifacts a
        WHERE a.job_id = jobs.id AND a.kind = 'settlement'))
    OR (state = 'settled' AND (outcome IS NOT 'completed' OR EXISTS (SELECT 1 FROM artifacts a
        WHERE a.job_id = jobs.id AND a.kind IN ('release', 'withheld'))))";

/// Errors of the job store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("job store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Version(#[from] rapha_migrate::VersionError),
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("job {0} already exists")]
    Duplicate(JobId),
    #[error("job {job}: {from} -> {to} is not a step of the job state machine")]
    IllegalTransition {
        job: JobId,
        from: JobState,
        to: JobState,
    },
    #[error("job {job} is in state {actual}, not {expected}: another worker moved it")]
    Conflict {
        job: JobId,
        expected: JobState,
        actual: JobState,
    },
    #[error("job store is corrupt: {0}")]
    Corrupt(String),
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A job as stored.
#[derive(Clone, Debug, Serialize)]
pub struct JobRow {
    pub id: JobId,
    pub state: JobState,
    pub request: JobRequest,
    /// Set once the job is refused, failed or completed.
    pub outcome: Option<Outcome>,
    /// Why the job was refused or failed, in words for the DPO and the AI company.
    pub reason: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

/// One recorded transition.
#[derive(Clone, Debug, Serialize)]
pub struct Transition {
    pub from: Option<JobState>,
    pub to: JobState,
    pub at: u64,
}

/// The job store's schema history (`PRAGMA user_version`, `rapha_migrate`): version 1 is the
/// layout of the first release (a store written before versions existed is version 1). A
/// schema change is a new function appended to `migrations`, never an edit of `SCHEMA_V1`.
pub const SCHEMA: rapha_migrate::sqlite::Schema = rapha_migrate::sqlite::Schema {
    store: "job store",
    create_v1: SCHEMA_V1,
    migrations: &[add_suspensions, add_release_bits],
};

/// Version 2: publishers suspended after a violation (issue 18).
fn add_suspensions(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(SUSPENSIONS_SCHEMA)
}

/// Version 3: each admitted job's leakage bound, charged to its publisher (issue 19).
fn add_release_bits(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(RELEASE_BITS_SCHEMA)
}

const SCHEMA_V1: &str = "CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    outcome TEXT,
    reason TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    kind TEXT NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (job_id, kind)
);";

/// The SQLite job store.
pub struct JobStore {
    conn: Connection,
}

impl fmt::Debug for JobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobStore")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl JobStore {
    /// Opens (creating if needed) the store at `path` and migrates it to [`SCHEMA`]'s version
    /// in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Version`] for a store newer than this node or a migration that failed
    /// (the store is left as it was); [`StoreError::Sqlite`] if the database cannot be opened.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let opened = rapha_migrate::sqlite::open(&mut conn, path, &SCHEMA)?;
        if opened.changed() {
            tracing::info!(store = SCHEMA.store, path = %path.display(), from = opened.found, to = opened.now, "store version migrated");
        }
        Ok(Self { conn })
    }

    /// The directory holding the store's file (the node's state directory), or `None` for a
    /// store without a file.
    pub fn dir(&self) -> Option<PathBuf> {
        self.conn
            .path()
            .filter(|p| !p.is_empty())
            .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
    }

    /// Records a newly received job in state [`JobState::Received`].
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] if the job id is already known.
    pub fn insert(&mut self, request: &JobRequest) -> Result<()> {
        let id = request.job_id;
        let json = serde_json::to_string(request)
            .map_err(|e| StoreError::Corrupt(format!("job request does not serialise: {e}")))?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx
            .query_row("SELECT 1 FROM jobs WHERE id = ?1", [id.to_string()], |_| {
                Ok(true)
            })
            .optional()?
            .is_some();
        if exists {
            return Err(StoreError::Duplicate(id));
        }
        let t = now();
        tx.execute(
            "INSERT INTO jobs (id, state, request, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![id.to_string(), JobState::Received.as_str(), json, t],
        )?;
        tx.execute(
            "INSERT INTO transitions (job_id, from_state, to_state, at) VALUES (?1, NULL, ?2, ?3)",
            params![id.to_string(), JobState::Received.as_str(), t],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Moves `job` from `from` to `to` and stores `artifacts` (kind, bytes), all in one
    /// transaction. `outcome`/`reason` are recorded when given.
    ///
    /// # Errors
    /// [`StoreError::IllegalTransition`] for an edge the machine does not have,
    /// [`StoreError::Conflict`] if the job is no longer in `from`.
    pub fn advance(
        &mut self,
        job: JobId,
        from: JobState,
        to: JobState,
        artifacts: &[(&str, &[u8])],
        ending: Option<(Outcome, &str)>,
    ) -> Result<()> {
        if !from.may_advance_to(to) {
            return Err(StoreError::IllegalTransition { job, from, to });
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let actual: Option<String> = tx
            .query_row(
                "SELECT state FROM jobs WHERE id = ?1",
                [job.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        let actual: JobState = actual.ok_or(StoreError::NotFound(job))?.parse()?;
        if actual != from {
            return Err(StoreError::Conflict {
                job,
                expected: from,
                actual,
            });
        }
        let t = now();
        match ending {
            Some((outcome, reason)) => tx.execute(
                "UPDATE jobs SET state = ?2, outcome = ?3, reason = ?4, updated_at = ?5 WHERE id = ?1",
                params![job.to_string(), to.as_str(), outcome_str(outcome), reason, t],
            )?,
            None => tx.execute(
                "UPDATE jobs SET state = ?2, updated_at = ?3 WHERE id = ?1",
                params![job.to_string(), to.as_str(), t],
            )?,
        };
        tx.execute(
            "INSERT INTO transitions (job_id, from_state, to_state, at) VALUES (?1, ?2, ?3, ?4)",
            params![job.to_string(), from.as_str(), to.as_str(), t],
        )?;
        for (kind, bytes) in artifacts {
            tx.execute(
                "INSERT INTO artifacts (job_id, kind, bytes) VALUES (?1, ?2, ?3)
                 ON CONFLICT (job_id, kind) DO UPDATE SET bytes = excluded.bytes",
                params![job.to_string(), kind, bytes],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores (or replaces) an artifact without a transition: for outputs a step must keep
    /// before its effect outside the store (a receipt body before it is appended to the log),
    /// and for the decision of a step whose transition is a refusal.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown job.
    pub fn put_artifact(&mut self, job: JobId, kind: &str, bytes: &[u8]) -> Result<()> {
        let n = self.conn.execute(
            "INSERT INTO artifacts (job_id, kind, bytes) SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?1)
             ON CONFLICT (job_id, kind) DO UPDATE SET bytes = excluded.bytes",
            params![job.to_string(), kind, bytes],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(job));
        }
        Ok(())
    }

    /// The job's current row.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown job.
    pub fn get(&self, job: JobId) -> Result<JobRow> {
        job_row(&self.conn, job)
    }

    /// An artifact a step stored, if any.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn artifact(&self, job: JobId, kind: &str) -> Result<Option<Vec<u8>>> {
        artifact_bytes(&self.conn, job, kind)
    }

    /// Every job the node still has work for, oldest first: what start-up must resume or
    /// fail. A job is finished in `Released` once settled, and in `Settled` unless it is a
    /// completed job whose release (or its withholding) is not yet recorded.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn unfinished(&self) -> Result<Vec<JobRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id FROM jobs WHERE NOT ({FINISHED}) ORDER BY created_at, id"
        ))?;
        let ids: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.iter()
            .map(|id| {
                let id: JobId = id
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("bad job id {id:?}")))?;
                self.get(id)
            })
            .collect()
    }

    /// Whether the node has no more work for `job` (the complement of
    /// [`JobStore::unfinished`]): what a client waiting for the job's end polls for.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown job, [`StoreError::Sqlite`] on database failure.
    pub fn finished(&self, job: JobId) -> Result<bool> {
        job_finished(&self.conn, job)
    }

    /// Count of jobs per state, for `/metrics`.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn counts_by_state(&self) -> Result<Vec<(JobState, u64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (s, n) = row?;
            out.push((s.parse()?, n));
        }
        Ok(out)
    }

    /// The jobs of `publisher` admitted at or after `since` (Unix seconds), with the time each
    /// was admitted, oldest first: the history the admission gate's job budget counts.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure, [`StoreError::Corrupt`] for a bad row.
    pub fn admitted_since(&self, publisher: &str, since: u64) -> Result<Vec<(JobRow, u64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT job_id, MIN(at) FROM transitions WHERE to_state = ?1 AND at >= ?2
             GROUP BY job_id ORDER BY MIN(at), job_id",
        )?;
        let rows = stmt.query_map(params![JobState::Admitted.as_str(), since], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, at) = row?;
            let id: JobId = id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("bad job id {id:?}")))?;
            let job = self.get(id)?;
            if job.request.publisher == publisher {
                out.push((job, at));
            }
        }
        Ok(out)
    }

    /// The job's transition history, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] on database failure.
    pub fn transitions(&self, job: JobId) -> Result<Vec<Transition>> {
        let mut stmt = self.conn.prepare(
            "SELECT from_state, to_state, at FROM transitions WHERE job_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([job.to_string()], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (from, to, at) = row?;
            out.push(Transition {
                from: from.map(|f| f.parse()).transpose()?,
                to: to.parse()?,
                at,
            });
        }
        Ok(out)
    }
}

fn job_finished(conn: &Connection, job: JobId) -> Result<bool> {
    conn.prepare_cached(&format!("SELECT {FINISHED} FROM jobs WHERE id = ?1"))?
        .query_row([job.to_string()], |r| r.get::<_, bool>(0))
        .optional()?
        .ok_or(StoreError::NotFound(job))
}

fn artifact_bytes(conn: &Connection, job: JobId, kind: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT bytes FROM artifacts WHERE job_id = ?1 AND kind = ?2")?
        .query_row(params![job.to_string(), kind], |r| r.get(0))
        .optional()?)
}

fn job_row(conn: &Connection, job: JobId) -> Result<JobRow> {
    conn.prepare_cached(
        "SELECT state, request, outcome, reason, created_at, updated_at FROM jobs WHERE id = ?1",
    )?
    .query_row([job.to_string()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, u64>(4)?,
            r.get::<_, u64>(5)?,
        ))
    })
    .optional()?
    .ok_or(StoreError::NotFound(job))
    .and_then(
        |(state, request, outcome, reason, created_at, updated_at)| {
            Ok(JobRow {
                id: job,
                state: state.parse()?,
                request: serde_json::from_str(&request)
                    .map_err(|e| StoreError::Corrupt(format!("job {job} request: {e}")))?,
                outcome: outcome.map(|o| parse_outcome(&o)).transpose()?,
                reason,
                created_at,
                updated_at,
            })
        },
    )
}

fn outcome_str(o: Outcome) -> &'static str {
    o.as_str()
}

fn parse_outcome(s: &str) -> Result<Outcome> {
    Outcome::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown outcome {s:?}")))
}

#[cfg(test)]
mod tests;
