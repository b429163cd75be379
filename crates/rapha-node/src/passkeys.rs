//! The node's side of DPO passkeys (issue 20): single-use challenges with an expiry, the
//! one-time enrolment code for the first DPO credential, and the credential set, whose every
//! change is a leaf of the receipt log (`rapha_receipt::credentials`). The console and the API
//! call these functions for each ceremony; the WebAuthn checks themselves are
//! `rapha_receipt::webauthn`, the same code `rapha verify` runs offline.
//!
//! ```text
//!  passkeys.sqlite  challenges(nonce, purpose, subject, issued_at, expires_at, used)
//!                   codes(hash, expires_at, used)        one-time enrolment codes, hashed
//!                   sign_counts(credential, count)
//!                   meta(key, value)                     last credential entry, log scanned to
//!  receipt log      rapha-dpo-credential/1 leaves        the credential set itself
//! ```
//!
//! Every nonce is 32 random bytes, bound to one purpose and subject (a job digest, or the
//! credential an enrolment or revocation names), valid for [`CHALLENGE_TTL`] and consumed by
//! the first verification that uses it, whether it succeeds or not: a replayed assertion finds
//! its nonce used and is refused with [`PasskeyError::NonceUsed`].

use std::path::Path;

use rapha_core::Digest;
use rapha_receipt::body::PasskeyApproval;
use rapha_receipt::credentials::{
    Authorisation, CredentialAction, CredentialEntry, CredentialError, CredentialSet,
    CREDENTIAL_SCHEMA,
};
use rapha_receipt::webauthn::{
    approval_challenge, enrolment_challenge, revocation_challenge, Assertion, B64u, Origins,
    RelyingParty, WebauthnError,
};
use rapha_receipt::{ReceiptError, ReceiptLog};
use rusqlite::{params, Connection, OptionalExtension};

/// How long an issued challenge stays valid (seconds).
pub const CHALLENGE_TTL: u64 = 300;
/// How long a one-time enrolment code stays valid (seconds).
pub const CODE_TTL: u64 = 900;

/// What a challenge is for; its nonce is valid for that purpose and subject only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `navigator.credentials.create` of a new credential (the registration's own challenge).
    Register,
    /// An enrolled DPO's assertion admitting the credential with this id and COSE key.
    Enrol {
        credential_id: B64u,
        public_key: B64u,
    },
    /// An enrolled DPO's assertion revoking this credential.
    Revoke { credential_id: B64u },
    /// A DPO's approval of the job with this digest (v2).
    Approve { job_digest: Digest },
}

impl Purpose {
    fn name(&self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Enrol { .. } => "enrol",
            Self::Revoke { .. } => "revoke",
            Self::Approve { .. } => "approve",
        }
    }

    fn subject(&self) -> Vec<u8> {
        match self {
            Self::Register => Vec::new(),
            Self::Enrol {
                credential_id,
                public_key,
            } => [sha(&credential_id.0), sha(&public_key.0)].concat(),
            Self::Revoke { credential_id } => sha(&credential_id.0).to_vec(),
            Self::Approve { job_digest } => job_digest.as_bytes().to_vec(),
        }
    }

    /// The WebAuthn challenge for this purpose with `nonce` issued at `issued_at`.
    pub fn challenge(&self, nonce: &[u8; 32], issued_at: u64) -> [u8; 32] {
        match self {
            Self::Register => sha(&[
                b"rapha-dpo-register-v1\0".as_slice(),
                nonce,
                &issued_at.to_be_bytes(),
            ]
            .concat()),
            Self::Enrol {
                credential_id,
                public_key,
            } => enrolment_challenge(&credential_id.0, &public_key.0, nonce, issued_at),
            Self::Revoke { credential_id } => {
                revocation_challenge(&credential_id.0, nonce, issued_at)
            }
            Self::Approve { job_digest } => approval_challenge(job_digest, nonce, issued_at),
        }
    }
}

fn sha(b: &[u8]) -> [u8; 32] {
    *Digest::of(b).as_bytes()
}

/// An issued challenge: what the browser signs (`challenge`) and what comes back with the
/// assertion (`nonce`, `issued_at`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Challenge {
    pub challenge: B64u,
    #[serde(with = "hex::serde")]
    pub nonce: [u8; 32],
    pub issued_at: u64,
    pub expires_at: u64,
    pub rp_id: String,
}

/// Why a passkey ceremony was refused; each its own variant (and API error code).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasskeyError {
    #[error("no challenge was issued with this nonce for this purpose")]
    UnknownNonce,
    #[error("DPO passkeys are not configured on this node ([approval] rp_id and origins)")]
    NotConfigured,
    #[error("this challenge was already used: an assertion cannot be used twice")]
    NonceUsed,
    #[error("this challenge expired; ask for a new one")]
    Expired,
    #[error("the one-time enrolment code is wrong, used or expired")]
    BadCode,
    #[error("credential {0} is not an enrolled DPO credential")]
    NotEnrolled(B64u),
    #[error(
        "the authenticator's signature counter did not increase ({stored} then {got}): the \
         credential may have been cloned"
    )]
    SignCount { stored: u32, got: u32 },
    #[error(transparent)]
    Webauthn(#[from] WebauthnError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("passkey store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error(transparent)]
    Log(#[from] ReceiptError),
    #[error(transparent)]
    Version(#[from] rapha_migrate::VersionError),
}

impl PasskeyError {
    /// The API's error code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownNonce => "unknown-challenge",
            Self::NotConfigured => "passkeys-not-configured",
            Self::NonceUsed => "challenge-replayed",
            Self::Expired => "challenge-expired",
            Self::BadCode => "bad-enrolment-code",
            Self::NotEnrolled(_) => "credential-not-enrolled",
            Self::SignCount { .. } => "sign-count-not-increased",
            Self::Webauthn(WebauthnError::ChallengeMismatch) => "challenge-mismatch",
            Self::Webauthn(_) => "bad-assertion",
            Self::Credential(_) => "enrolment-refused",
            Self::Store(_) | Self::Log(_) | Self::Version(_) => "internal",
        }
    }
}

type Result<T, E = PasskeyError> = std::result::Result<T, E>;

/// How a new credential is authorised.
#[derive(Clone, Debug)]
pub enum Authority {
    /// The one-time code (first credential only).
    Code(String),
    /// An enrolled DPO's assertion over a [`Purpose::Enrol`] challenge for the new credential.
    Dpo(Assertion),
}

/// A browser's registration response.
#[derive(Clone, Debug)]
pub struct Registration {
    pub attestation_object: Vec<u8>,
    pub client_data_json: Vec<u8>,
    /// The nonce and time of the [`Purpose::Register`] challenge it answers.
    pub nonce: [u8; 32],
    pub issued_at: u64,
    pub label: String,
}

/// The node's passkey state.
pub struct Passkeys {
    db: Connection,
    rp: RelyingParty,
    set: CredentialSet,
    last_entry: Option<u64>,
}

impl std::fmt::Debug for Passkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passkeys")
            .field("rp", &self.rp)
            .field("enrolled", &self.set.len())
            .finish_non_exhaustive()
    }
}

/// The store's schema history (`PRAGMA user_version`, `rapha_migrate`).
pub const SCHEMA: rapha_migrate::sqlite::Schema = rapha_migrate::sqlite::Schema {
    store: "passkey store",
    create_v1: SCHEMA_V1,
    migrations: &[],
};

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS challenges(nonce BLOB PRIMARY KEY, purpose TEXT NOT NULL,
  subject BLOB NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS codes(hash BLOB PRIMARY KEY, expires_at INTEGER NOT NULL,
  used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS sign_counts(credential BLOB PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Passkeys {
    /// Opens (creating) the store at `path` for the relying party `rp_id` with `origins`, and
    /// reads the credential set from `log`: the chain from the last credential entry it knows,
    /// then any credential entry appended after the point it had scanned to (a crash between
    /// an append and the store's update loses nothing).
    ///
    /// # Errors
    /// Store and log errors; a credential chain in the log that does not replay.
    pub fn open(path: &Path, rp_id: &str, origins: Vec<String>, log: &ReceiptLog) -> Result<Self> {
        let mut db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        rapha_migrate::sqlite::open(&mut db, path, &SCHEMA)?;
        let mut me = Self {
            db,
            rp: RelyingParty {
                rp_id: rp_id.to_owned(),
                origins: Origins::Exact(origins),
            },
            set: CredentialSet::default(),
            last_entry: None,
        };
        me.load(log)?;
        Ok(me)
    }

    /// The credential set as `log` records it, read without writing anything (for `doctor`):
    /// through the passkey store at `path` when it exists, else from the whole log.
    ///
    /// # Errors
    /// Store and log errors; a chain that does not replay.
    pub fn read_set(path: &Path, log: &ReceiptLog) -> Result<CredentialSet> {
        let (chain, _) = if path.exists() {
            let db = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            read_chain(&db, log)?
        } else {
            let db = Connection::open_in_memory()?;
            db.execute_batch(SCHEMA_V1)?;
            read_chain(&db, log)?
        };
        replay(&chain)
    }

    fn set_meta(&self, key: &str, value: u64) -> Result<()> {
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
            params![key, to_i64(value)],
        )?;
        Ok(())
    }

    fn load(&mut self, log: &ReceiptLog) -> Result<()> {
        let (chain, scanned) = read_chain(&self.db, log)?;
        self.set = replay(&chain)?;
        self.last_entry = chain.last().map(|(i, _)| *i);
        if let Some(i) = self.last_entry {
            self.set_meta("last_entry", i)?;
        }
        self.set_meta("scanned_to", scanned)?;
        Ok(())
    }

    /// The enrolled credentials.
    pub fn credentials(&self) -> &CredentialSet {
        &self.set
    }

    /// The log index of the last credential entry.
    pub fn last_entry(&self) -> Option<u64> {
        self.last_entry
    }

    /// The relying party id.
    pub fn rp_id(&self) -> &str {
        &self.rp.rp_id
    }

    /// A new one-time enrolment code (printed on the node's console, never stored but as its
    /// SHA-256), valid for [`CODE_TTL`]; earlier unused codes stop working.
    ///
    /// # Errors
    /// Store errors.
    pub fn new_enrolment_code(&self, now: u64) -> Result<String> {
        let mut raw = [0u8; 15];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
        // Base32 without padding: 24 characters a person types from a console.
        const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let mut code = String::new();
        let mut bits: u32 = 0;
        let mut n = 0;
        for b in raw {
            bits = (bits << 8) | u32::from(b);
            n += 8;
            while n >= 5 {
                n -= 5;
                code.push(char::from(ALPHABET[((bits >> n) & 31) as usize]));
            }
        }
        self.db
            .execute("UPDATE codes SET used = 1 WHERE used = 0", [])?;
        self.db.execute(
            "INSERT INTO codes(hash, expires_at) VALUES (?1, ?2)",
            params![sha(code.as_bytes()).to_vec(), to_i64(now + CODE_TTL)],
        )?;
        Ok(code)
    }

    fn take_code(&self, code: &str, now: u64) -> Result<()> {
        let n = self.db.execute(
            "UPDATE codes SET used = 1 WHERE hash = ?1 AND used = 0 AND expires_at >= ?2",
            params![sha(code.trim().as_bytes()).to_vec(), to_i64(now)],
        )?;
        if n == 1 {
            Ok(())
        } else {
            Err(PasskeyError::BadCode)
        }
    }

    /// Issues a challenge for `purpose`.
    ///
    /// # Errors
    /// Store errors.
    pub fn challenge(&self, purpose: &Purpose, now: u64) -> Result<Challenge> {
        let mut nonce = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        self.db.execute(
            "DELETE FROM challenges WHERE expires_at < ?1",
            [to_i64(now)],
        )?;
        self.db.execute(
            "INSERT INTO challenges(nonce, purpose, subject, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![nonce.to_vec(), purpose.name(), purpose.subject(), to_i64(now), to_i64(now + CHALLENGE_TTL)],
        )?;
        Ok(Challenge {
            challenge: B64u(purpose.challenge(&nonce, now).to_vec()),
            nonce,
            issued_at: now,
            expires_at: now + CHALLENGE_TTL,
            rp_id: self.rp.rp_id.clone(),
        })
    }

    /// Consumes the nonce of a challenge issued for `purpose` at `issued_at`: it is marked used
    /// before anything is verified, so it serves one attempt only.
    fn consume(&self, purpose: &Purpose, nonce: &[u8; 32], issued_at: u64, now: u64) -> Result<()> {
        let row: Option<(String, Vec<u8>, i64, i64, i64)> = self
            .db
            .query_row(
                "SELECT purpose, subject, issued_at, expires_at, used FROM challenges WHERE nonce = ?1",
                [nonce.to_vec()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((p, subject, at, expires, used)) = row else {
            return Err(PasskeyError::UnknownNonce);
        };
        if p != purpose.name() || subject != purpose.subject() || at != to_i64(issued_at) {
            return Err(PasskeyError::UnknownNonce);
        }
        if used != 0 {
            return Err(PasskeyError::NonceUsed);
        }
        self.db.execute(
            "UPDATE challenges SET used = 1 WHERE nonce = ?1",
            [nonce.to_vec()],
        )?;
        if expires < to_i64(now) {
            return Err(PasskeyError::Expired);
        }
        Ok(())
    }

    /// Checks and records the sign count of an assertion by `id` (a counter of 0 means the
    /// authenticator keeps none, as synced passkeys do).
    fn check_sign_count(&self, id: &B64u, got: u32) -> Result<()> {
        let stored: Option<i64> = self
            .db
            .query_row(
                "SELECT count FROM sign_counts WHERE credential = ?1",
                [id.0.clone()],
                |r| r.get(0),
            )
            .optional()?;
        let stored = stored.and_then(|s| u32::try_from(s).ok()).unwrap_or(0);
        if (got != 0 || stored != 0) && got <= stored {
            return Err(PasskeyError::SignCount { stored, got });
        }
        self.db.execute(
            "INSERT INTO sign_counts(credential, count) VALUES (?1, ?2) ON CONFLICT(credential) DO UPDATE SET count = ?2",
            params![id.0.clone(), i64::from(got)],
        )?;
        Ok(())
    }

    fn verify_by_enrolled(&self, purpose: &Purpose, a: &Assertion, now: u64) -> Result<()> {
        self.consume(purpose, &a.nonce, a.issued_at, now)?;
        let enrolled = self
            .set
            .get(&a.credential_id)
            .ok_or_else(|| PasskeyError::NotEnrolled(a.credential_id.clone()))?;
        let data = a.verify(
            &self.rp,
            &enrolled.public_key,
            &purpose.challenge(&a.nonce, a.issued_at),
        )?;
        self.check_sign_count(&a.credential_id, data.sign_count)
    }

    fn append(&mut self, log: &mut ReceiptLog, mut entry: CredentialEntry) -> Result<u64> {
        entry.previous = self.last_entry;
        let index = log.size();
        let mut next = self.set.clone();
        next.apply(&entry, index, &self.rp.origins)?;
        let at = log.append(&entry.canonical_bytes()?)?;
        if !at.new || at.index != index {
            // Each entry names its predecessor and carries a fresh nonce: never a duplicate.
            return Err(ReceiptError::LogRequest(format!(
                "credential entry landed at leaf {} instead of {index}",
                at.index
            ))
            .into());
        }
        self.set = next;
        self.last_entry = Some(index);
        self.set_meta("last_entry", index)?;
        self.set_meta("scanned_to", at.tree_size)?;
        Ok(index)
    }

    /// Enrols a DPO credential: the registration (answering a [`Purpose::Register`]
    /// challenge, user verification required) and its authority (the one-time code for the
    /// first, an enrolled DPO's assertion for any other). Appends the entry to `log`.
    ///
    /// # Errors
    /// [`PasskeyError`]: the registration's, the code's, the assertion's refusal.
    pub fn enrol(
        &mut self,
        log: &mut ReceiptLog,
        reg: &Registration,
        authority: Authority,
        now: u64,
    ) -> Result<u64> {
        self.consume(&Purpose::Register, &reg.nonce, reg.issued_at, now)?;
        let challenge = Purpose::Register.challenge(&reg.nonce, reg.issued_at);
        let cred = self.rp.verify_registration(
            &reg.attestation_object,
            &reg.client_data_json,
            &challenge,
        )?;
        let credential_id = B64u(cred.credential_id);
        let public_key = B64u(cred.public_key_cose);
        let authorised_by = match authority {
            Authority::Code(code) => {
                if !self.set.is_empty() {
                    return Err(CredentialError::CodeNotFirst(self.set.len()).into());
                }
                self.take_code(&code, now)?;
                Authorisation::EnrolmentCode
            }
            Authority::Dpo(assertion) => {
                let purpose = Purpose::Enrol {
                    credential_id: credential_id.clone(),
                    public_key: public_key.clone(),
                };
                self.verify_by_enrolled(&purpose, &assertion, now)?;
                Authorisation::DpoAssertion { assertion }
            }
        };
        let entry = CredentialEntry {
            schema: CREDENTIAL_SCHEMA.to_owned(),
            action: CredentialAction::Enrol,
            credential_id,
            public_key,
            rp_id: self.rp.rp_id.clone(),
            label: reg.label.chars().take(100).collect(),
            at: now,
            previous: None,
            authorised_by,
        };
        self.append(log, entry)
    }

    /// Revokes `credential_id` by an enrolled DPO's assertion over a [`Purpose::Revoke`]
    /// challenge (a credential may revoke itself). Appends the entry to `log`.
    ///
    /// # Errors
    /// [`PasskeyError`].
    pub fn revoke(
        &mut self,
        log: &mut ReceiptLog,
        credential_id: &B64u,
        assertion: Assertion,
        now: u64,
    ) -> Result<u64> {
        let target = self
            .set
            .get(credential_id)
            .ok_or_else(|| PasskeyError::NotEnrolled(credential_id.clone()))?
            .clone();
        let purpose = Purpose::Revoke {
            credential_id: credential_id.clone(),
        };
        self.verify_by_enrolled(&purpose, &assertion, now)?;
        let entry = CredentialEntry {
            schema: CREDENTIAL_SCHEMA.to_owned(),
            action: CredentialAction::Revoke,
            credential_id: credential_id.clone(),
            public_key: B64u(target.public_key_cose),
            rp_id: target.rp_id,
            label: target.label,
            at: now,
            previous: None,
            authorised_by: Authorisation::DpoAssertion { assertion },
        };
        self.append(log, entry)
    }

    /// Whether a recorded approval still holds: its credential is enrolled now and its
    /// assertion verifies for its job digest (the checks `rapha verify` makes; the nonce was
    /// consumed when it was recorded).
    pub fn still_valid(&self, approval: &PasskeyApproval) -> bool {
        let a = &approval.assertion;
        let Some(enrolled) = self.set.get(&a.credential_id) else {
            return false;
        };
        let challenge = approval_challenge(&approval.job_digest, &a.nonce, a.issued_at);
        approval.rp_id == self.rp.rp_id
            && a.verify(&self.rp, &enrolled.public_key, &challenge).is_ok()
    }

    /// Verifies a passkey approval of `job_digest` (consuming its nonce, checking the
    /// credential is enrolled and its counter went up) and returns what the receipt records.
    ///
    /// # Errors
    /// [`PasskeyError`]: a replay is [`PasskeyError::NonceUsed`].
    pub fn approve(
        &self,
        job_digest: &Digest,
        assertion: Assertion,
        now: u64,
    ) -> Result<PasskeyApproval> {
        let purpose = Purpose::Approve {
            job_digest: *job_digest,
        };
        self.verify_by_enrolled(&purpose, &assertion, now)?;
        let credentials_at = self
            .last_entry
            .ok_or_else(|| PasskeyError::NotEnrolled(assertion.credential_id.clone()))?;
        Ok(PasskeyApproval {
            job_digest: *job_digest,
            rp_id: self.rp.rp_id.clone(),
            assertion,
            credentials_at,
        })
    }
}

fn meta(db: &Connection, key: &str) -> Result<Option<u64>> {
    Ok(db
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .and_then(|v| u64::try_from(v).ok()))
}

/// The credential chain: back from the last entry the store knows, oldest first, then any
/// credential entry appended after the point it had scanned to (a crash between an append
/// and the store's update loses nothing); and the log size scanned to.
fn read_chain(db: &Connection, log: &ReceiptLog) -> Result<(Vec<(u64, CredentialEntry)>, u64)> {
    let mut chain = Vec::new();
    let mut next = meta(db, "last_entry")?;
    while let Some(i) = next {
        let entry =
            CredentialEntry::from_leaf(&log.leaf(i)?)?.ok_or_else(|| ReceiptError::Corrupt {
                path: log.path().to_owned(),
                reason: format!("leaf {i} is not the DPO credential entry the passkey store names"),
            })?;
        next = entry.previous.filter(|p| *p < i);
        chain.push((i, entry));
    }
    chain.reverse();
    let mut scanned = meta(db, "scanned_to")?.unwrap_or(0);
    while scanned < log.size() {
        if let Some(entry) = CredentialEntry::from_leaf(&log.leaf(scanned)?)? {
            if chain.last().is_none_or(|(i, _)| scanned > *i) {
                chain.push((scanned, entry));
            }
        }
        scanned += 1;
    }
    Ok((chain, scanned))
}

/// Replays a chain; ceremonies were verified against the node's origins when they happened,
/// replaying needs only the rp id's own.
fn replay(chain: &[(u64, CredentialEntry)]) -> Result<CredentialSet> {
    CredentialSet::replay(chain.iter().map(|(i, e)| (*i, e)), &Origins::OfRpId).map_err(|(i, e)| {
        ReceiptError::CredentialChain {
            index: i,
            why: e.to_string(),
        }
        .into()
    })
}

/// Arguments of `rapha-node dpo`.
#[derive(Debug, clap::Args)]
pub struct DpoArgs {
    /// Node configuration file.
    #[arg(long, env = "RAPHA_NODE_CONFIG", global = true)]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: DpoCommand,
}

/// `dpo` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DpoCommand {
    /// Print a one-time code that enrols the first DPO passkey (valid 15 minutes, single use;
    /// refused once a DPO credential is enrolled: further ones need an enrolled DPO's passkey).
    EnrolCode,
    /// List the enrolled DPO passkeys (from the receipt log).
    List,
}

/// Runs `rapha-node dpo`.
///
/// # Errors
/// Missing `--config` or `[approval]`, store and log errors, a code asked for while a DPO
/// credential is enrolled.
pub fn run(args: &DpoArgs) -> anyhow::Result<()> {
    use anyhow::{bail, Context as _};
    let Some(path) = &args.config else {
        bail!("--config FILE is required (or set RAPHA_NODE_CONFIG)")
    };
    let cfg = crate::config::Config::load(path)?;
    let Some(a) = &cfg.approval else {
        bail!("DPO passkeys are not configured: add an [approval] section with rp_id and origins")
    };
    a.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = &cfg.paths.state_dir;
    // Read only when the node has a log (it may be serving); a new node's log is created, as
    // the node's first start would (`init` then `dpo enrol-code` before the first `serve`).
    let log_path = state.join("receipts");
    let log = if log_path.exists() {
        ReceiptLog::open_read_only(&log_path)
    } else {
        ReceiptLog::open(&log_path)
    }
    .context("receipt log")?;
    let keys = Passkeys::open(
        &state.join("passkeys.sqlite"),
        &a.rp_id,
        a.origins.clone(),
        &log,
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match args.command {
        DpoCommand::EnrolCode => {
            if !keys.credentials().is_empty() {
                bail!(
                    "{} DPO credential(s) are enrolled: a further one needs an enrolled DPO's \
                     passkey, not a code",
                    keys.credentials().len()
                );
            }
            let code = keys.new_enrolment_code(now)?;
            println!(
                "one-time DPO enrolment code (valid {} minutes, single use): {code}",
                CODE_TTL / 60
            );
        }
        DpoCommand::List => {
            println!(
                "relying party {}; {} DPO credential(s)",
                keys.rp_id(),
                keys.credentials().len()
            );
            for (id, e) in keys.credentials().iter() {
                println!(
                    "  {id}  {}  {}  enrolled at log entry {}",
                    e.public_key.algorithm(),
                    crate::approvals::shown(&e.label),
                    e.enrolled_at
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure
mod tests;
