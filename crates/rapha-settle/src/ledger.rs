//! The node's settlement ledger (SQLite): one row per job,
//! `pending -> submitted(tx hash, nonce) -> confirmed(n blocks) | failed`.
//!
//! Every signed transaction is written here (hash, nonce, raw bytes) and the write committed
//! **before** it is broadcast, so after a crash at any point the node knows every transaction
//! that may be in flight and can ask the chain about each. The database runs with
//! `synchronous = FULL` in WAL mode: a committed row survives a power cut.

use std::path::Path;

use alloy::primitives::{Bytes, B256};
use rapha_core::JobId;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Result, SettleError};
use crate::settlement::SignedSettlement;

/// A ledger row's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerState {
    /// Signed settlement held; no transaction signed yet.
    Pending,
    /// A transaction was signed and recorded (the latest of its attempts).
    Submitted { tx: B256, nonce: u64 },
    /// The settlement is on chain under `tx`, `confirmations` deep when last checked.
    Confirmed {
        tx: B256,
        block: u64,
        confirmations: u64,
    },
    /// Gave up; `reason` says why (e.g. the escrow refused the settlement).
    Failed { reason: String },
}

impl LedgerState {
    fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Submitted { .. } => "submitted",
            Self::Confirmed { .. } => "confirmed",
            Self::Failed { .. } => "failed",
        }
    }
}

/// One signed transaction attempt for a job (replacements share the nonce).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub tx: B256,
    pub nonce: u64,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
    pub raw: Bytes,
}

/// A ledger row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    pub job: JobId,
    pub settlement: SignedSettlement,
    pub state: LedgerState,
}

/// The settlement ledger.
pub struct Ledger {
    conn: Connection,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.conn.path())
            .finish()
    }
}

/// The ledger's schema history (`PRAGMA user_version`, `rapha_migrate`): version 1 is the layout
/// of the first release; a ledger written before versions existed is version 1.
pub const SCHEMA: rapha_migrate::sqlite::Schema = rapha_migrate::sqlite::Schema {
    store: "settlement ledger",
    create_v1: SCHEMA_V1,
    migrations: &[],
};

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS settlements (
    job_id        TEXT PRIMARY KEY,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'submitted', 'confirmed', 'failed')),
    settlement    TEXT NOT NULL,
    tx_hash       TEXT,
    nonce         INTEGER,
    block_number  INTEGER,
    confirmations INTEGER,
    failure       TEXT,
    CHECK (state != 'submitted' OR (tx_hash IS NOT NULL AND nonce IS NOT NULL)),
    CHECK (state != 'confirmed' OR (tx_hash IS NOT NULL AND confirmations IS NOT NULL))
);
CREATE TABLE IF NOT EXISTS attempts (
    tx_hash       TEXT PRIMARY KEY,
    job_id        TEXT NOT NULL REFERENCES settlements (job_id),
    nonce         INTEGER NOT NULL,
    max_fee       TEXT NOT NULL,
    priority_fee  TEXT NOT NULL,
    raw_tx        BLOB NOT NULL,
    seq           INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_job ON attempts (job_id, seq);
";

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn hash_col(s: Option<String>, job: &JobId) -> Result<B256> {
    s.as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| SettleError::CorruptLedger(*job, "missing or malformed tx hash".into()))
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`, migrating it to [`SCHEMA`]'s version in
    /// one transaction.
    ///
    /// # Errors
    /// [`SettleError::StoreVersion`] for a ledger newer than this code or a failed migration;
    /// SQLite failures.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        rapha_migrate::sqlite::open(&mut conn, path, &SCHEMA)?;
        Ok(Self { conn })
    }

    /// Adds a job's signed settlement as `pending`. Idempotent: a job already in the ledger
    /// keeps its row (and its state); returns that row.
    ///
    /// # Errors
    /// [`SettleError::SettlementForOtherJob`] or SQLite failures.
    pub fn enqueue(&self, job: &JobId, settlement: &SignedSettlement) -> Result<LedgerRow> {
        if settlement.fields.job_id != *job {
            return Err(SettleError::SettlementForOtherJob {
                job: *job,
                signed: settlement.fields.job_id,
            });
        }
        let json = serde_json::to_string(settlement)
            .map_err(|e| SettleError::CorruptLedger(*job, e.to_string()))?;
        self.conn.execute(
            "INSERT INTO settlements (job_id, state, settlement) VALUES (?1, 'pending', ?2)
             ON CONFLICT (job_id) DO NOTHING",
            params![job.to_string(), json],
        )?;
        self.get(job)?.ok_or(SettleError::NotInLedger(*job))
    }

    /// The row for `job`, if any.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn get(&self, job: &JobId) -> Result<Option<LedgerRow>> {
        let row = self
            .conn
            .query_row(
                "SELECT state, settlement, tx_hash, nonce, block_number, confirmations, failure
                 FROM settlements WHERE job_id = ?1",
                params![job.to_string()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((state, settlement, tx, nonce, block, confs, failure)) = row else {
            return Ok(None);
        };
        let settlement: SignedSettlement = serde_json::from_str(&settlement)
            .map_err(|e| SettleError::CorruptLedger(*job, e.to_string()))?;
        let u = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or_default();
        let state = match state.as_str() {
            "pending" => LedgerState::Pending,
            "submitted" => LedgerState::Submitted {
                tx: hash_col(tx, job)?,
                nonce: u(nonce),
            },
            "confirmed" => LedgerState::Confirmed {
                tx: hash_col(tx, job)?,
                block: u(block),
                confirmations: u(confs),
            },
            "failed" => LedgerState::Failed {
                reason: failure.unwrap_or_default(),
            },
            other => {
                return Err(SettleError::CorruptLedger(
                    *job,
                    format!("unknown state {other:?}"),
                ))
            }
        };
        Ok(Some(LedgerRow {
            job: *job,
            settlement,
            state,
        }))
    }

    /// Rows not yet confirmed or failed: what reconciliation looks at after a restart.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn open_rows(&self) -> Result<Vec<LedgerRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT job_id FROM settlements WHERE state IN ('pending', 'submitted') ORDER BY rowid",
        )?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            let job: JobId = id.parse().map_err(|_| {
                SettleError::CorruptLedger(JobId::from_bytes([0; 16]), format!("bad job id {id:?}"))
            })?;
            rows.push(self.get(&job)?.ok_or(SettleError::NotInLedger(job))?);
        }
        Ok(rows)
    }

    /// Every transaction ever signed for `job`, oldest first.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn attempts(&self, job: &JobId) -> Result<Vec<Attempt>> {
        let mut stmt = self.conn.prepare(
            "SELECT tx_hash, nonce, max_fee, priority_fee, raw_tx FROM attempts WHERE job_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![job.to_string()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ))
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(tx, nonce, max_fee, prio, raw)| {
                let bad = |what: &str| {
                    SettleError::CorruptLedger(*job, format!("attempt {tx}: bad {what}"))
                };
                Ok(Attempt {
                    tx: tx.parse().map_err(|_| bad("hash"))?,
                    nonce: u64::try_from(nonce).map_err(|_| bad("nonce"))?,
                    max_fee_per_gas: max_fee.parse().map_err(|_| bad("max fee"))?,
                    max_priority_fee_per_gas: prio.parse().map_err(|_| bad("priority fee"))?,
                    raw: Bytes::from(raw),
                })
            })
            .collect()
    }

    /// The highest nonce of any attempt still open (submitted rows), if any.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn max_open_nonce(&self) -> Result<Option<u64>> {
        let n: Option<i64> = self.conn.query_row(
            "SELECT MAX(nonce) FROM settlements WHERE state = 'submitted'",
            [],
            |r| r.get(0),
        )?;
        Ok(n.and_then(|n| u64::try_from(n).ok()))
    }

    /// Jobs whose settlement transaction is in flight (rows `submitted`), oldest first.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn submitted_jobs(&self) -> Result<Vec<JobId>> {
        let mut stmt = self
            .conn
            .prepare("SELECT job_id FROM settlements WHERE state = 'submitted' ORDER BY rowid")?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        ids.into_iter()
            .map(|id| {
                id.parse().map_err(|_| {
                    SettleError::CorruptLedger(
                        JobId::from_bytes([0; 16]),
                        format!("bad job id {id:?}"),
                    )
                })
            })
            .collect()
    }

    /// Records a signed transaction for `job` and moves the row to `submitted`, in one
    /// committed SQLite transaction. Call this BEFORE broadcasting `attempt.raw`.
    ///
    /// # Errors
    /// [`SettleError::BadTransition`] from `confirmed`/`failed`, or SQLite failures.
    pub fn record_attempt(&mut self, job: &JobId, attempt: &Attempt) -> Result<()> {
        self.record_attempt_with(job, attempt, None)
    }

    /// [`Ledger::record_attempt`] for a transaction that carries `settlement`, a signature made
    /// for this attempt (over the node's log head when it was sent): the row keeps it from now
    /// on, in the same committed SQLite transaction.
    ///
    /// # Errors
    /// As [`Ledger::record_attempt`]; [`SettleError::SettlementForOtherJob`].
    pub fn record_attempt_with(
        &mut self,
        job: &JobId,
        attempt: &Attempt,
        settlement: Option<&SignedSettlement>,
    ) -> Result<()> {
        let settlement = match settlement {
            Some(s) if s.fields.job_id != *job => {
                return Err(SettleError::SettlementForOtherJob {
                    job: *job,
                    signed: s.fields.job_id,
                })
            }
            Some(s) => Some(
                serde_json::to_string(s)
                    .map_err(|e| SettleError::CorruptLedger(*job, e.to_string()))?,
            ),
            None => None,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM settlements WHERE job_id = ?1",
                params![job.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        match state.as_deref() {
            None => return Err(SettleError::NotInLedger(*job)),
            Some("pending" | "submitted") => {}
            Some(other) => {
                return Err(SettleError::BadTransition {
                    job: *job,
                    state: other.into(),
                    action: "record a transaction",
                })
            }
        }
        let seq: i64 = tx.query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM attempts WHERE job_id = ?1",
            params![job.to_string()],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO attempts (tx_hash, job_id, nonce, max_fee, priority_fee, raw_tx, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                attempt.tx.to_string(),
                job.to_string(),
                to_i64(attempt.nonce),
                attempt.max_fee_per_gas.to_string(),
                attempt.max_priority_fee_per_gas.to_string(),
                attempt.raw.to_vec(),
                seq
            ],
        )?;
        tx.execute(
            "UPDATE settlements SET state = 'submitted', tx_hash = ?2, nonce = ?3,
                 settlement = COALESCE(?4, settlement) WHERE job_id = ?1",
            params![
                job.to_string(),
                attempt.tx.to_string(),
                to_i64(attempt.nonce),
                settlement
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks `job` confirmed under `tx` (ours or anyone's) at `block`, `confirmations` deep.
    ///
    /// # Errors
    /// [`SettleError::BadTransition`] from `failed`, or SQLite failures.
    pub fn mark_confirmed(
        &self,
        job: &JobId,
        tx: B256,
        block: u64,
        confirmations: u64,
    ) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE settlements SET state = 'confirmed', tx_hash = ?2, block_number = ?3, confirmations = ?4
             WHERE job_id = ?1 AND state IN ('pending', 'submitted', 'confirmed')",
            params![job.to_string(), tx.to_string(), to_i64(block), to_i64(confirmations)],
        )?;
        self.expect_one(job, n, "mark it confirmed")
    }

    /// Marks `job` failed with `reason`.
    ///
    /// # Errors
    /// [`SettleError::BadTransition`] from `confirmed`, or SQLite failures.
    pub fn mark_failed(&self, job: &JobId, reason: &str) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE settlements SET state = 'failed', failure = ?2 WHERE job_id = ?1 AND state IN ('pending', 'submitted', 'failed')",
            params![job.to_string(), reason],
        )?;
        self.expect_one(job, n, "mark it failed")
    }

    /// Back to `pending` after every recorded attempt was found dropped (its nonce taken by
    /// another transaction and the job still open on chain), or the latest one mined and
    /// reverted while the job is still open. Attempts stay recorded.
    ///
    /// # Errors
    /// [`SettleError::BadTransition`] unless `submitted`, or SQLite failures.
    pub fn mark_dropped(&self, job: &JobId) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE settlements SET state = 'pending', tx_hash = NULL, nonce = NULL WHERE job_id = ?1 AND state = 'submitted'",
            params![job.to_string()],
        )?;
        self.expect_one(job, n, "mark its transaction dropped")
    }

    fn expect_one(&self, job: &JobId, n: usize, action: &'static str) -> Result<()> {
        if n == 1 {
            return Ok(());
        }
        match self.get(job)? {
            None => Err(SettleError::NotInLedger(*job)),
            Some(row) => Err(SettleError::BadTransition {
                job: *job,
                state: row.state.name().into(),
                action,
            }),
        }
    }
}
