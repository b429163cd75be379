//! One job's enclave session: per-job key pair, feed, isolated run, guard, metrics, and the
//! signed output manifest.
//!
//! ```text
//!  EnclaveSession::new ── harden process, fresh Ed25519 key ──▶ public_key() → attestation
//!        │
//!   run(): split by patient ─▶ bind feed socket ─▶ mount /out tmpfs ─▶ runc run (trainer)
//!          ◀── records over /rapha/data.sock ──┘        (wall-time kill, teardown always)
//!        ─▶ guard(/out + logs) ─▶ node-computed metrics ─▶ manifest ─▶ sign ─▶ release
//!          (completed only) ─▶ unmount /out (every output byte discarded)
//! ```

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use rapha_core::release::ReleaseTransform;
use rapha_core::{merkle, Digest, JobId, OutputDecl, ResourceLimits};
use serde::Serialize;

use crate::error::{io, EnclaveError, Result};
use crate::feed::{self, Feed, FeedState, SelfReported};
use crate::guard::{Guard, GuardBudget, LogStream};
use crate::identifiers::RawIdentifiers;
use crate::metrics;
use crate::record::{RecordSource, Subset};
use crate::sandbox::{self, Exit, LaunchSpec, SandboxConfig};
use crate::split::{self, split_records, Split};

mod audit;
mod manifest;
mod out;

pub use audit::{AuditOutcome, AuditRunner, AuditUnavailable, AUDIT_INPUT_DIR};
pub use manifest::{
    GuardSummary, JobResult, ManifestOutcome, OutputManifest, RunDetails, RunStats, SignedManifest,
    MANIFEST_VERSION,
};
pub use out::clear_work_root;
use out::mount_out;

/// What this runtime reports as its confinement when it runs as an ordinary process.
pub const CONFINEMENT_DEVELOPMENT: &str = "none-development";
/// The confinement of a job that declared a GPU: what [`CONFINEMENT_DEVELOPMENT`] says, and
/// that the pixels the trainer copies to its GPU are in GPU memory, outside the runtime's
/// locked memory and any enclave ([`crate::cdi`]).
pub const CONFINEMENT_DEVELOPMENT_GPU: &str = "none-development+gpu-memory-outside-enclave";

/// What the node tells the runtime about the job.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub job_id: JobId,
    /// Percent of patients held out for validation.
    pub validation_percent: u8,
    /// Validation patients required before metrics are released.
    pub min_validation_patients: usize,
    /// Patients held back for the node's privacy audit ([`crate::split::audit_holdout`]; 0:
    /// none). The trainer is never told of their records: it is served the others only.
    pub audit_patients: usize,
    /// The bundle's declared outputs.
    pub outputs: Vec<OutputDecl>,
    /// The bundle's total output cap (also the size of the `/out` tmpfs).
    pub total_output_cap: u64,
    pub limits: ResourceLimits,
    /// A wall-time limit shorter than `limits.wall_seconds` (tests), if any.
    pub wall_override: Option<Duration>,
    /// The precision and noise the node releases declared float tensors at (what the DPO
    /// reviewed; [`Guard::release_at`]).
    pub release: ReleaseTransform,
}

/// Where a run happens.
#[derive(Debug)]
pub struct RunPaths<'a> {
    /// Root-only directory for the job's working files (socket, bundle, `/out` mount point).
    pub work_root: &'a Path,
    /// The verified, unpacked trainer rootfs.
    pub rootfs: &'a Path,
    /// Where accepted outputs are copied.
    pub release_dir: &'a Path,
}

/// A running job's feed as the node may show it while the trainer runs: counts the node
/// measured, and what the trainer said about itself (kept apart, never the job's metrics).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunProgress {
    /// Records fetched by the trainer, repeats (epochs) included.
    pub fetches: u64,
    /// Distinct records fetched (what the manifest's `records_fed` will say).
    pub distinct_fed: u64,
    /// Decoded pixel bytes sent to the trainer.
    pub bytes_fed: u64,
    /// The trainer's last `progress` report, if any.
    pub self_reported: Option<SelfReported>,
    /// Since the trainer was launched.
    pub elapsed: Duration,
    /// When the runtime kills the trainer.
    pub wall_limit: Duration,
    /// False while the trainer runs; true in the last report, once it has exited.
    pub finished: bool,
}

/// How often [`EnclaveSession::run_observed`] reports progress while the trainer runs.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// The enclave runtime for one job.
pub struct EnclaveSession {
    job: JobSpec,
    key: SigningKey,
    confinement: &'static str,
}

impl std::fmt::Debug for EnclaveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveSession")
            .field("job", &self.job.job_id)
            .field("public_key", &hex::encode(self.public_key()))
            .field("confinement", &self.confinement)
            .finish()
    }
}

/// Ends the feed when dropped, at once ([`Feed::cut`] with no grace): however the run ends,
/// a panic included, the scope that waits for the feed's thread is not left waiting on a
/// connection the trainer keeps open.
struct CutOnDrop<'f, 'a>(&'f Feed<'a>);

impl Drop for CutOnDrop<'_, '_> {
    fn drop(&mut self) {
        self.0.cut(Duration::ZERO);
    }
}

/// What the hospital's details say of a run whose feed connection the node had to cut.
pub const FEED_HELD: &str = "the trainer's feed connection outlived the trainer (it passed \
    its socket away, keeping it open); the node cut it";

/// The error of a feed whose thread panicked, with the panic's words.
fn feed_panicked(p: &(dyn std::any::Any + Send)) -> EnclaveError {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    EnclaveError::FeedFailed(what)
}

fn commitment(ids: impl Iterator<Item = [u8; 32]>) -> Digest {
    let sorted: BTreeSet<[u8; 32]> = ids.collect();
    let v: Vec<[u8; 32]> = sorted.into_iter().collect();
    merkle::root(&v)
}

impl EnclaveSession {
    /// Checks the job's limits, hardens this process (no core dumps, not dumpable, memory
    /// locked against swap) and makes the job's key pair.
    ///
    /// # Errors
    /// The spec or its limits are unusable ([`EnclaveError::Limit`]), or the process cannot be
    /// hardened ([`EnclaveError::Harden`], [`EnclaveError::MemoryLock`]).
    pub fn new(job: JobSpec) -> Result<Self> {
        if job.validation_percent > 90 {
            return Err(EnclaveError::BadSpec(
                "validation_percent must be at most 90".into(),
            ));
        }
        if job.outputs.is_empty() {
            return Err(EnclaveError::BadSpec(
                "the bundle declares no outputs".into(),
            ));
        }
        sandbox::check_limits(&job.limits)?;
        crate::harden::harden_current_process()?;
        crate::harden::lock_memory()?;
        let key = SigningKey::generate(&mut rand_core::OsRng);
        let confinement = if job.limits.gpus > 0 {
            CONFINEMENT_DEVELOPMENT_GPU
        } else {
            CONFINEMENT_DEVELOPMENT
        };
        Ok(Self {
            job,
            key,
            confinement,
        })
    }

    /// The job's public key, to bind into the attestation.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// How this runtime is confined.
    pub fn confinement(&self) -> &'static str {
        self.confinement
    }

    /// Runs the trainer on the cohort and returns the signed manifest and what was released.
    ///
    /// # Errors
    /// Infrastructure failures (cannot mount, bind or start the OCI runtime). Trainer
    /// misbehaviour is never an error: it is a failed or rejected manifest.
    pub fn run(
        &self,
        sandbox_cfg: &SandboxConfig,
        paths: &RunPaths<'_>,
        entrypoint: &[String],
        source: &dyn RecordSource,
        identifiers: &RawIdentifiers,
    ) -> Result<JobResult> {
        self.run_observed(sandbox_cfg, paths, entrypoint, source, identifiers, &|_| {})
    }

    /// [`EnclaveSession::run`], calling `observer` with the feed's progress about every
    /// [`PROGRESS_INTERVAL`] while the trainer runs (from another thread; it must return
    /// quickly) and once more after the trainer has exited.
    ///
    /// # Errors
    /// As [`EnclaveSession::run`].
    pub fn run_observed(
        &self,
        sandbox_cfg: &SandboxConfig,
        paths: &RunPaths<'_>,
        entrypoint: &[String],
        source: &dyn RecordSource,
        identifiers: &RawIdentifiers,
        observer: &(dyn Fn(&RunProgress) + Sync),
    ) -> Result<JobResult> {
        use std::os::unix::fs::PermissionsExt;
        let cohort = source.records();
        // The trainer's view: the cohort without the audit split, renumbered, so an audit
        // record's index is no index at all to the trainer (listed, fetched or predicted).
        let trainer_view = (self.job.audit_patients > 0).then(|| {
            let held = split::audit_holdout(cohort, self.job.audit_patients);
            Subset::new(source, (0..cohort.len()).filter(|&i| !held[i]).collect())
        });
        let source: &dyn RecordSource = match &trainer_view {
            Some(view) => view,
            None => source,
        };
        let records = source.records();
        let splits = split_records(records, self.job.validation_percent);

        fs::create_dir_all(paths.work_root)
            .map_err(io("create the work directory", paths.work_root))?;
        let work = tempfile::Builder::new()
            .prefix("rapha-job-")
            .tempdir_in(paths.work_root)
            .map_err(io("create the job directory", paths.work_root))?;
        let sock_dir = work.path().join("feed");
        let out_dir = work.path().join("out");
        let bundle_dir = work.path().join("bundle");
        for d in [&sock_dir, &out_dir, &bundle_dir] {
            fs::create_dir(d).map_err(io("create a job directory", d))?;
        }
        fs::set_permissions(&sock_dir, fs::Permissions::from_mode(0o755))
            .map_err(io("set the feed directory's permissions", &sock_dir))?;
        // The trainer user must be able to traverse its own root.
        fs::set_permissions(paths.rootfs, fs::Permissions::from_mode(0o755))
            .map_err(io("set the rootfs permissions", paths.rootfs))?;
        let out_mount = mount_out(&out_dir, self.job.total_output_cap)?;
        let listener = feed::bind(&sock_dir.join("data.sock"))?;

        let feed = Feed {
            job: self.job.job_id,
            confinement: self.confinement,
            source,
            splits: &splits,
            state: Mutex::new(FeedState::default()),
            stop: AtomicBool::new(false),
            decoders: crate::feed::decoders(),
        };
        let container_id = format!("rapha-{}", self.job.job_id);
        let wall = self
            .job
            .wall_override
            .unwrap_or(Duration::from_secs(self.job.limits.wall_seconds));
        let launch = LaunchSpec {
            container_id: &container_id,
            rootfs: paths.rootfs,
            entrypoint,
            limits: &self.job.limits,
            socket_dir: &sock_dir,
            out_dir: &out_dir,
            bundle_dir: &bundle_dir,
            inputs: None,
            wall,
        };
        let launched = std::time::Instant::now();
        let progress = |st: &FeedState, finished: bool| RunProgress {
            fetches: st.records_fed,
            distinct_fed: st.fed.len() as u64,
            bytes_fed: st.bytes_fed,
            self_reported: st.self_reported.clone(),
            elapsed: launched.elapsed(),
            wall_limit: wall,
            finished,
        };
        let run = std::thread::scope(|s| {
            let server = s.spawn(|| feed.serve(&listener));
            let reporter = s.spawn(|| {
                let mut last = std::time::Instant::now();
                while !feed.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    if last.elapsed() >= PROGRESS_INTERVAL {
                        last = std::time::Instant::now();
                        // The snapshot is taken under the feed's lock, reported outside it.
                        let p = {
                            let st = feed
                                .state
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            progress(&st, false)
                        };
                        observer(&p);
                    }
                }
            });
            // The feed and the reporter stop however the run ends, a panic included: the scope
            // waits for them, so a run that panicked would otherwise hang the node.
            let cut = CutOnDrop(&feed);
            let r = sandbox::run(sandbox_cfg, &launch);
            // The container is gone, and every process of the trainer with it: the feed ends
            // within the grace (the node cuts a connection that does not), so the wait for it
            // below is bounded by the decodes in progress.
            let held = feed.cut(feed::CUT_GRACE);
            drop(cut);
            let served = server.join();
            let _ = reporter.join();
            // A feed that panicked has not handed over the fingerprints of what it fed: the
            // guard could not look for those pixels, so nothing may be released (fail closed).
            if let Err(p) = served {
                return Err(feed_panicked(p.as_ref()));
            }
            r.map(|r| (r, held))
        });
        let cohort_root = commitment(cohort.iter().map(|r| *r.instance.as_bytes()));
        let state = feed
            .state
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fed_root = commitment(
            state
                .fed
                .iter()
                .filter_map(|&i| records.get(i))
                .map(|r| *r.instance.as_bytes()),
        );
        let (run, feed_held) = match run {
            Ok(r) => r,
            // The node failed after the run began: signed as such, nothing released, the
            // details for the hospital (`out_mount` discards whatever the trainer wrote).
            Err(e) => return self.node_failure(&e, records, &splits, cohort_root, &state),
        };
        observer(&progress(&state, true));

        // Guard: outputs and logs, against identifiers and fed pixel fingerprints.
        let searcher = identifiers
            .searcher()
            .map_err(|e| EnclaveError::BadSpec(format!("identifier set: {e}")))?;
        let guard = Guard {
            outputs: &self.job.outputs,
            total_cap: self.job.total_output_cap,
            identifiers: &searcher,
            fingerprints: &state.fingerprints,
        };
        let logs = [
            LogStream {
                name: "stdout",
                bytes: &run.stdout.bytes,
                overflowed: run.stdout.overflowed,
                cap: sandbox_cfg.log_cap,
            },
            LogStream {
                name: "stderr",
                bytes: &run.stderr.bytes,
                overflowed: run.stderr.overflowed,
                cap: sandbox_cfg.log_cap,
            },
        ];
        let log_bytes = (run.stdout.bytes.len() + run.stderr.bytes.len()) as u64;
        let mut budget = GuardBudget::for_outputs(self.job.total_output_cap, log_bytes);
        if let Some(wall) = sandbox_cfg.guard_wall {
            budget.wall = wall;
        }
        let verdict = guard.check_within(&out_dir, &logs, budget);
        // What leaves is the node's re-serialisation of an accepted set (declared tensors,
        // fixed metrics), never the trainer's bytes; its refusals are the guard's.
        let (verdict, node_files) = if run.exit.success() && !feed_held {
            guard.release_at(&out_dir, verdict, self.job.release)
        } else {
            (verdict, Vec::new())
        };

        let mut details_reasons = Vec::new();
        // A feed connection held open past the trainer's exit is the trainer's doing, whatever
        // its exit status: charged like any failure of the trainer, never refunded.
        let (outcome, reasons) = if !run.exit.success() || feed_held {
            details_reasons.push(describe_exit(&run.exit));
            if feed_held {
                details_reasons.push(FEED_HELD.to_owned());
            }
            details_reasons.extend(
                verdict
                    .rejections
                    .iter()
                    .map(|r| r.audit_line(&self.job.outputs)),
            );
            (
                ManifestOutcome::TrainerFailed,
                vec![ManifestOutcome::TRAINER_FAILED],
            )
        } else if !verdict.accepted {
            details_reasons.extend(
                verdict
                    .rejections
                    .iter()
                    .map(|r| r.audit_line(&self.job.outputs)),
            );
            (ManifestOutcome::Rejected, verdict.rules())
        } else {
            (ManifestOutcome::Completed, Vec::new())
        };
        let completed = outcome == ManifestOutcome::Completed;

        let val_idx: Vec<usize> = (0..records.len())
            .filter(|&i| splits[i] == Split::Validation)
            .collect();
        let val_patients: BTreeSet<_> = val_idx.iter().map(|&i| records[i].patient).collect();
        let (metrics, withheld) = if completed {
            let labelled: Vec<usize> = val_idx
                .iter()
                .copied()
                .filter(|&i| records[i].label.is_some())
                .collect();
            let pairs: Vec<(u8, f64)> = labelled
                .iter()
                .filter_map(|&i| Some((records[i].label?, *state.predictions.get(&i)?)))
                .collect();
            match metrics::compute(
                &pairs,
                labelled.len(),
                val_patients.len(),
                self.job.min_validation_patients,
            ) {
                Ok(m) => (Some(m), None),
                Err(w) => (None, Some(w)),
            }
        } else {
            (None, None)
        };

        let mut released = Vec::new();
        if completed {
            fs::create_dir_all(paths.release_dir)
                .map_err(io("create the release directory", paths.release_dir))?;
            for (f, bytes) in verdict.files.iter().zip(&node_files) {
                if Digest::of(bytes) != f.digest {
                    return Err(EnclaveError::BadSpec(format!(
                        "output {:?} is not the file the guard released",
                        f.name
                    )));
                }
                let dst = paths.release_dir.join(&f.name);
                fs::write(&dst, bytes).map_err(io("write a released output", &dst))?;
                released.push(dst);
            }
        }
        drop(out_mount); // every byte the trainer wrote is gone after this point

        let manifest = OutputManifest {
            version: MANIFEST_VERSION,
            job: self.job.job_id,
            confinement: self.confinement,
            enclave_public_key: hex::encode(self.public_key()),
            outcome,
            reasons,
            guard: GuardSummary {
                accepted: completed,
                files: if completed {
                    verdict.files.clone()
                } else {
                    Vec::new()
                },
            },
            metrics,
            metrics_withheld: withheld,
            cohort_root,
            fed_root: completed.then_some(fed_root),
            records_fed: completed.then_some(state.fed.len()),
            validation_records: val_idx.len(),
            validation_patients: val_patients.len(),
        };
        let signed = self.sign(manifest)?;
        tracing::info!(job = %self.job.job_id, outcome = ?outcome, records_fed = state.fed.len(), "enclave run finished");
        Ok(JobResult {
            signed,
            details: RunDetails {
                trainer_exit: Some(run.exit.clone()),
                feed_held,
                verdict: Some(verdict),
                reasons: details_reasons,
                records_fed: state.fed.len(),
                fed_root,
                self_reported: state.self_reported.clone(),
            },
            released,
            stdout: run.stdout.bytes,
            stderr: run.stderr.bytes,
            logs_releasable: completed,
            stats: RunStats {
                elapsed: run.elapsed,
                first_fetch_after_launch: state
                    .first_fetch
                    .map(|t| t.saturating_duration_since(launched)),
                bytes_fed: state.bytes_fed,
                fetches: state.records_fed,
                protocol_errors: state.protocol_errors,
            },
        })
    }

    fn sign(&self, manifest: OutputManifest) -> Result<SignedManifest> {
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|_| EnclaveError::Serialise("the output manifest"))?;
        let signature = self.key.sign(&bytes).to_bytes();
        Ok(SignedManifest {
            manifest,
            bytes,
            signature,
            public_key: self.public_key(),
        })
    }

    /// The signed result of a run the node failed after it began: outcome
    /// [`ManifestOutcome::Failed`] with the error's reason code; its text in the details.
    fn node_failure(
        &self,
        error: &EnclaveError,
        records: &[crate::record::FeedRecord],
        splits: &[Split],
        cohort_root: Digest,
        state: &FeedState,
    ) -> Result<JobResult> {
        tracing::error!(job = %self.job.job_id, error = %error, "the enclave run failed on the node's side");
        let val_idx: Vec<usize> = (0..records.len())
            .filter(|&i| splits.get(i) == Some(&Split::Validation))
            .collect();
        let val_patients: BTreeSet<_> = val_idx.iter().map(|&i| records[i].patient).collect();
        let manifest = OutputManifest {
            version: MANIFEST_VERSION,
            job: self.job.job_id,
            confinement: self.confinement,
            enclave_public_key: hex::encode(self.public_key()),
            outcome: ManifestOutcome::Failed,
            reasons: vec![error.reason_code()],
            guard: GuardSummary {
                accepted: false,
                files: Vec::new(),
            },
            metrics: None,
            metrics_withheld: None,
            cohort_root,
            fed_root: None,
            records_fed: None,
            validation_records: val_idx.len(),
            validation_patients: val_patients.len(),
        };
        Ok(JobResult {
            signed: self.sign(manifest)?,
            details: RunDetails {
                trainer_exit: None,
                feed_held: false,
                verdict: None,
                reasons: vec![error.to_string()],
                records_fed: state.fed.len(),
                fed_root: commitment(
                    state
                        .fed
                        .iter()
                        .filter_map(|&i| records.get(i))
                        .map(|r| *r.instance.as_bytes()),
                ),
                self_reported: state.self_reported.clone(),
            },
            released: Vec::new(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            logs_releasable: false,
            stats: RunStats::default(),
        })
    }
}

fn describe_exit(e: &Exit) -> String {
    match e {
        Exit::Exited { code } => format!("the trainer exited with status {code}"),
        Exit::Signaled { signal: 9 } => {
            "the trainer was killed (signal 9: memory limit or forced stop)".into()
        }
        Exit::Signaled { signal } => format!("the trainer was killed by signal {signal}"),
        Exit::TimedOut { seconds } => {
            format!("the trainer ran past its wall-time limit of {seconds} s and was killed")
        }
    }
}
