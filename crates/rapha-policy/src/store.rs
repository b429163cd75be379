//! The node's approval store: jobs waiting for review, signed approvals, and the one-way
//! choice between "revoked" and "started".
//!
//! Layout of the directory (one set of files per job digest `D`):
//!
//! ```text
//!   D.review.json     the ReviewRequest the node submitted at step 4
//!   D.approval.json   the DPO's signed Approval
//!   D.state           created exactly once, with O_EXCL: "revoked <unix>" or "started <unix>"
//!   store-version     the store's version (see [`SCHEMA`]); absent in a store from before
//!                     versions, which is version 1 and gets the file on open
//! ```
//!
//! Revocation and job start race for `D.state`; the file system decides which came first, so a
//! job can never start after its approval was revoked, and an approval can never be revoked
//! after its job started.

use std::io::Write;
use std::path::{Path, PathBuf};

use rapha_core::Digest;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::approval::{Approval, ApprovalRecord, ReviewRequest};
use crate::error::{PolicyError, Result};

/// The approval store's version history (`store-version` file, `rapha_migrate::dir`): version 1
/// is the layout above; a store written before versions existed is version 1.
pub const SCHEMA: rapha_migrate::dir::Schema = rapha_migrate::dir::Schema {
    store: "approval store",
    migrations: &[],
};

/// File-backed approval store.
#[derive(Clone, Debug)]
pub struct ApprovalStore {
    dir: PathBuf,
}

/// One job in the store, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreEntry {
    pub job_digest: Digest,
    pub review: Option<ReviewRequest>,
    pub record: Option<ApprovalRecord>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Revoked(u64),
    Started(u64),
}

impl ApprovalStore {
    /// Opens (creating if needed) the store at `dir`, bringing it to [`SCHEMA`]'s version.
    ///
    /// # Errors
    /// [`PolicyError::StoreIo`]; [`PolicyError::StoreVersion`] for a store newer than this code
    /// or a migration that failed.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| PolicyError::StoreIo {
            path: dir.to_owned(),
            source,
        })?;
        rapha_migrate::dir::open(dir, &SCHEMA)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, digest: &Digest, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", digest.to_hex()))
    }

    /// Submits a job for the DPO's review (step 4). Returns its job digest.
    ///
    /// # Errors
    /// [`PolicyError::StoreIo`].
    pub fn submit(&self, review: &ReviewRequest) -> Result<Digest> {
        let digest = review.job_digest()?;
        write_json_atomic(&self.path(&digest, "review.json"), review)?;
        Ok(digest)
    }

    /// The review request of a job.
    ///
    /// # Errors
    /// [`PolicyError::UnknownJob`], [`PolicyError::StoreIo`], [`PolicyError::StoreCorrupt`].
    pub fn review(&self, digest: &Digest) -> Result<ReviewRequest> {
        let review: ReviewRequest = read_json(&self.path(digest, "review.json"))?
            .ok_or(PolicyError::UnknownJob(*digest))?;
        // A review file whose content does not hash to its name was edited: refuse it.
        if review.job_digest().ok() != Some(*digest) {
            return Err(PolicyError::StoreCorrupt {
                path: self.path(digest, "review.json"),
                message: "its job and cohort do not match the digest in its name".to_owned(),
            });
        }
        Ok(review)
    }

    /// Records a signed approval for a job that is waiting for review. Replaces an earlier
    /// approval (e.g. with a later expiry) unless the job was revoked or has started.
    ///
    /// # Errors
    /// [`PolicyError::BadSignature`], [`PolicyError::UnknownJob`], [`PolicyError::Revoked`],
    /// [`PolicyError::AlreadyStarted`], store errors.
    pub fn record(&self, approval: &Approval) -> Result<()> {
        approval.verify()?;
        let digest = approval.job_digest;
        self.review(&digest)?;
        match self.state(&digest)? {
            Some(State::Revoked(_)) => return Err(PolicyError::Revoked(digest)),
            Some(State::Started(_)) => return Err(PolicyError::AlreadyStarted(digest)),
            None => {}
        }
        write_json_atomic(&self.path(&digest, "approval.json"), approval)
    }

    /// The approval of a job with its state, if one was recorded.
    ///
    /// # Errors
    /// Store errors.
    pub fn get(&self, digest: &Digest) -> Result<Option<ApprovalRecord>> {
        let Some(approval): Option<Approval> = read_json(&self.path(digest, "approval.json"))?
        else {
            return Ok(None);
        };
        if approval.job_digest != *digest {
            return Err(PolicyError::StoreCorrupt {
                path: self.path(digest, "approval.json"),
                message: "it approves a different job than its name says".to_owned(),
            });
        }
        let state = self.state(digest)?;
        Ok(Some(ApprovalRecord {
            approval,
            revoked_at: match state {
                Some(State::Revoked(t)) => Some(t),
                _ => None,
            },
            started_at: match state {
                Some(State::Started(t)) => Some(t),
                _ => None,
            },
        }))
    }

    /// Revokes the approval of a job that has not started.
    ///
    /// # Errors
    /// [`PolicyError::NoApproval`], [`PolicyError::AlreadyStarted`], [`PolicyError::Revoked`]
    /// (already revoked), store errors.
    pub fn revoke(&self, digest: &Digest, now: u64) -> Result<()> {
        if self.get(digest)?.is_none() {
            return Err(PolicyError::NoApproval(*digest));
        }
        match self.claim_state(digest, State::Revoked(now))? {
            None => Ok(()),
            Some(State::Started(_)) => Err(PolicyError::AlreadyStarted(*digest)),
            Some(State::Revoked(_)) => Err(PolicyError::Revoked(*digest)),
        }
    }

    /// Marks a job as started, after which its approval can no longer be revoked. The node
    /// calls this right after the final gate allowed the job and before the trainer starts.
    ///
    /// # Errors
    /// [`PolicyError::NoApproval`], [`PolicyError::Revoked`], [`PolicyError::AlreadyStarted`],
    /// store errors.
    pub fn mark_started(&self, digest: &Digest, now: u64) -> Result<()> {
        if self.get(digest)?.is_none() {
            return Err(PolicyError::NoApproval(*digest));
        }
        match self.claim_state(digest, State::Started(now))? {
            None => Ok(()),
            Some(State::Revoked(_)) => Err(PolicyError::Revoked(*digest)),
            Some(State::Started(_)) => Err(PolicyError::AlreadyStarted(*digest)),
        }
    }

    /// Every job in the store, sorted by digest.
    ///
    /// # Errors
    /// Store errors.
    pub fn list(&self) -> Result<Vec<StoreEntry>> {
        let io = |source| PolicyError::StoreIo {
            path: self.dir.clone(),
            source,
        };
        let mut digests = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            let name = name.to_string_lossy();
            if let Some((hex, _)) = name.split_once('.') {
                if let Ok(d) = hex.parse::<Digest>() {
                    digests.insert(d);
                }
            }
        }
        digests
            .into_iter()
            .map(|d| {
                let review = match self.review(&d) {
                    Ok(r) => Some(r),
                    Err(PolicyError::UnknownJob(_)) => None,
                    Err(e) => return Err(e),
                };
                Ok(StoreEntry {
                    job_digest: d,
                    review,
                    record: self.get(&d)?,
                })
            })
            .collect()
    }

    fn state(&self, digest: &Digest) -> Result<Option<State>> {
        let path = self.path(digest, "state");
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_state(&text)
                .map(Some)
                .ok_or(PolicyError::StoreCorrupt {
                    path,
                    message: "unreadable state".to_owned(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PolicyError::StoreIo { path, source }),
        }
    }

    /// Creates the state file with `state`; returns the state that was already there, if any.
    fn claim_state(&self, digest: &Digest, state: State) -> Result<Option<State>> {
        let path = self.path(digest, "state");
        let text = match state {
            State::Revoked(t) => format!("revoked {t}\n"),
            State::Started(t) => format!("started {t}\n"),
        };
        let io = |source| PolicyError::StoreIo {
            path: path.clone(),
            source,
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(text.as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.state(digest),
            Err(source) => Err(io(source)),
        }
    }
}

fn parse_state(text: &str) -> Option<State> {
    let (word, t) = text.trim().split_once(' ')?;
    let t = t.parse().ok()?;
    match word {
        "revoked" => Some(State::Revoked(t)),
        "started" => Some(State::Started(t)),
        _ => None,
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| PolicyError::StoreCorrupt {
                    path: path.to_owned(),
                    message: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PolicyError::StoreIo {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let io = |source| PolicyError::StoreIo {
        path: path.to_owned(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| PolicyError::StoreCorrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    rapha_core::fs::write_atomic(path, &bytes).map_err(io)
}
