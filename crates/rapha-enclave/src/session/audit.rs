//! The node's privacy audit of a released model (issue 19): the hospital's runner scores the
//! audit split (records the trainer never received: non-members) and as many records of the
//! training split (members), and the node computes the loss-based membership attack
//! ([`metrics::membership_attack`]) from those scores and the labels only it holds.
//!
//! ```text
//!  audit split ∪ sample of training split ─▶ shuffled, renumbered (Subset) ─▶ feed
//!        runc run (the runner; /in read-only: model.onnx, model.safetensors, audit.json)
//!        ─▶ `predict` per record ─▶ confidence in the true label ─▶ attack AUC + CI
//! ```
//!
//! The runner runs exactly like a trainer (no network, read-only root, the feed on its
//! socket) under the node's limits, never the publisher's. Every record is offered as a
//! validation record, so no label is listed to it, and the order tells it nothing of which
//! side a record is on. A runner that cannot load or run the model (it exits non-zero, runs
//! out of time, or leaves a record unscored) gives "not available" with that class, never a
//! figure.

use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use rapha_core::ResourceLimits;
use serde::Serialize;

use super::out::mount_out;
use super::{feed_panicked, CutOnDrop, EnclaveSession};
use crate::error::{io, Result};
use crate::feed::{self, Feed, FeedState};
use crate::metrics::{self, MembershipAttack};
use crate::record::{RecordSource, Subset};
use crate::sandbox::{self, Exit, LaunchSpec, SandboxConfig};
use crate::split::{self, split_records, Split};

/// Where the runner finds the model it scores, read-only: `model.onnx` (the graph the
/// predicate pins), `model.safetensors` (the node's release), `audit.json` (input and output).
pub const AUDIT_INPUT_DIR: &str = "/in";

/// The `/out` the runner gets: it writes nothing the node reads, and this much at most.
const RUNNER_OUT_CAP: u64 = 1 << 20;

/// The hospital's audit runner and what it reads.
#[derive(Clone, Copy, Debug)]
pub struct AuditRunner<'a> {
    /// The runner's root (the node's own: a minimal root with the runner's static binary).
    pub rootfs: &'a Path,
    pub entrypoint: &'a [String],
    /// Host directory bound read-only at [`AUDIT_INPUT_DIR`].
    pub inputs: &'a Path,
    /// The node's limits for the runner (never the publisher's).
    pub limits: &'a ResourceLimits,
    pub wall: Duration,
}

/// Why a job's receipt says "audit: not available": the class only (what the runner said is
/// the hospital's, in [`AuditOutcome::NotAvailable::detail`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AuditUnavailable {
    /// The job has no audit split, or it or the training split has no labelled record.
    #[error("the job has no labelled audit or training records to score")]
    NoAuditSplit,
    /// The runner exited non-zero or was killed: it could not load or run the model.
    #[error("the audit runner could not load or run the model")]
    RunnerFailed,
    /// The runner ran past the node's wall time for it.
    #[error("the audit runner ran past its wall time")]
    RunnerTimeout,
    /// The runner exited without scoring every record it was offered.
    #[error("the audit runner did not score every record")]
    IncompleteScores,
}

impl AuditUnavailable {
    /// The class as receipts name it.
    pub const fn reason(self) -> &'static str {
        match self {
            AuditUnavailable::NoAuditSplit => "no-audit-split",
            AuditUnavailable::RunnerFailed => "runner-failed",
            AuditUnavailable::RunnerTimeout => "runner-timeout",
            AuditUnavailable::IncompleteScores => "incomplete-scores",
        }
    }
}

/// What an audit found.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AuditOutcome {
    Measured(MembershipAttack),
    NotAvailable {
        reason: AuditUnavailable,
        /// For the hospital's audit trail: the runner's exit and first line of stderr.
        detail: String,
    },
}

/// `k` of `items` chosen uniformly at random, in random order (a partial Fisher-Yates).
fn sample(mut items: Vec<usize>, k: usize) -> Vec<usize> {
    let k = k.min(items.len());
    for i in 0..k {
        let left = (items.len() - i) as u64;
        // Multiply-shift keeps it in range; the bias is below 2^-32 for any cohort.
        let j = i + usize::try_from((u128::from(OsRng.next_u64()) * u128::from(left)) >> 64)
            .unwrap_or(0);
        items.swap(i, j);
    }
    items.truncate(k);
    items
}

impl EnclaveSession {
    /// Runs `runner` over the job's audit split and an equal-size random sample of its
    /// training split (both labelled records only) and computes the membership attack.
    ///
    /// # Errors
    /// Infrastructure failures (cannot mount, bind or start the OCI runtime). A runner that
    /// fails is an [`AuditOutcome::NotAvailable`], never an error.
    pub fn audit(
        &self,
        sandbox_cfg: &SandboxConfig,
        work_root: &Path,
        runner: &AuditRunner<'_>,
        source: &dyn RecordSource,
    ) -> Result<AuditOutcome> {
        let cohort = source.records();
        let held = split::audit_holdout(cohort, self.job.audit_patients);
        let trainer_idx: Vec<usize> = (0..cohort.len()).filter(|&i| !held[i]).collect();
        let trainer_records: Vec<_> = trainer_idx.iter().map(|&i| cohort[i].clone()).collect();
        let trainer_splits = split_records(&trainer_records, self.job.validation_percent);
        let training: Vec<usize> = trainer_idx
            .iter()
            .zip(&trainer_splits)
            .filter(|&(&i, s)| *s == Split::Train && cohort[i].label.is_some())
            .map(|(&i, _)| i)
            .collect();
        let non_members: Vec<usize> = (0..cohort.len())
            .filter(|&i| held[i] && cohort[i].label.is_some())
            .collect();
        if self.job.audit_patients == 0 || non_members.is_empty() || training.is_empty() {
            return Ok(AuditOutcome::NotAvailable {
                reason: AuditUnavailable::NoAuditSplit,
                detail: format!(
                    "{} labelled audit records, {} labelled training records",
                    non_members.len(),
                    training.len()
                ),
            });
        }
        let members = sample(training, non_members.len());
        let member_set: std::collections::BTreeSet<usize> = members.iter().copied().collect();
        let offered_all: Vec<usize> = members.iter().chain(&non_members).copied().collect();
        let n = offered_all.len();
        let offered = Subset::new(source, sample(offered_all, n));
        let splits = vec![Split::Validation; n];

        fs::create_dir_all(work_root).map_err(io("create the work directory", work_root))?;
        let work = tempfile::Builder::new()
            .prefix("rapha-audit-")
            .tempdir_in(work_root)
            .map_err(io("create the audit directory", work_root))?;
        let (sock_dir, out_dir, bundle_dir) = (
            work.path().join("feed"),
            work.path().join("out"),
            work.path().join("bundle"),
        );
        for d in [&sock_dir, &out_dir, &bundle_dir] {
            fs::create_dir(d).map_err(io("create an audit directory", d))?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&sock_dir, fs::Permissions::from_mode(0o755))
                .map_err(io("set the feed directory's permissions", &sock_dir))?;
        }
        let out_mount = mount_out(&out_dir, RUNNER_OUT_CAP)?;
        let listener = feed::bind(&sock_dir.join("data.sock"))?;
        let feed = Feed {
            job: self.job.job_id,
            confinement: self.confinement,
            source: &offered,
            splits: &splits,
            state: Mutex::new(FeedState::default()),
            stop: AtomicBool::new(false),
            decoders: feed::decoders(),
        };
        let container_id = format!("rapha-audit-{}", self.job.job_id);
        let launch = LaunchSpec {
            container_id: &container_id,
            rootfs: runner.rootfs,
            entrypoint: runner.entrypoint,
            limits: runner.limits,
            socket_dir: &sock_dir,
            out_dir: &out_dir,
            bundle_dir: &bundle_dir,
            inputs: Some(runner.inputs),
            wall: runner.wall,
        };
        let run = std::thread::scope(|s| {
            let server = s.spawn(|| feed.serve(&listener));
            let cut = CutOnDrop(&feed);
            let r = sandbox::run(sandbox_cfg, &launch);
            let _ = feed.cut(feed::CUT_GRACE);
            drop(cut);
            if let Err(p) = server.join() {
                return Err(feed_panicked(p.as_ref()));
            }
            r
        })?;
        drop(out_mount);
        let state = feed
            .state
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stderr_line = String::from_utf8_lossy(&run.stderr.bytes)
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(240)
            .collect::<String>();
        let not_available = |reason, detail: String| {
            tracing::warn!(job = %self.job.job_id, reason = reason_str(reason), "audit not available");
            Ok(AuditOutcome::NotAvailable { reason, detail })
        };
        match run.exit {
            Exit::TimedOut { seconds } => {
                return not_available(
                    AuditUnavailable::RunnerTimeout,
                    format!("the audit runner ran past {seconds} s"),
                )
            }
            ref e if !e.success() => {
                return not_available(
                    AuditUnavailable::RunnerFailed,
                    format!("the audit runner ended {e:?}: {stderr_line}"),
                )
            }
            _ => {}
        }
        let mut member_scores = Vec::with_capacity(members.len());
        let mut non_member_scores = Vec::with_capacity(non_members.len());
        let mut member_patients = std::collections::BTreeSet::new();
        let mut non_member_patients = std::collections::BTreeSet::new();
        for i in 0..n {
            let (Some(inner), Some(&p)) = (offered.inner_index(i), state.predictions.get(&i))
            else {
                return not_available(
                    AuditUnavailable::IncompleteScores,
                    format!(
                        "the audit runner scored {} of {n} records",
                        state.predictions.len()
                    ),
                );
            };
            let Some(label) = cohort[inner].label else {
                continue;
            };
            if member_set.contains(&inner) {
                member_scores.push((label, p));
                member_patients.insert(cohort[inner].patient);
            } else {
                non_member_scores.push((label, p));
                non_member_patients.insert(cohort[inner].patient);
            }
        }
        match metrics::membership_attack(&member_scores, &non_member_scores) {
            Some(a) => {
                // The interval over patients, the independent units.
                let a = a.over_patients(member_patients.len(), non_member_patients.len());
                tracing::info!(job = %self.job.job_id, attack_auc = a.attack_auc, members = a.members, non_members = a.non_members, "audit measured");
                Ok(AuditOutcome::Measured(a))
            }
            None => not_available(
                AuditUnavailable::IncompleteScores,
                "the audit runner's scores give no attack figure".into(),
            ),
        }
    }
}

fn reason_str(r: AuditUnavailable) -> &'static str {
    r.reason()
}
