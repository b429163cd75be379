//! Between steps 9 and 10: the node's privacy audit of a completed job's release (issue 19).
//!
//! After the guard accepted the outputs and the node re-serialised them, and before the
//! receipt is signed, the hospital's runner scores the audit split (records the trainer never
//! received) and as many training records with the released weights loaded into the graph
//! the signed predicate pins; the membership attack's AUC and CI go into the receipt's `audit`
//! member, or why there is none. It runs in the run step's work and is committed with the
//! run's manifest, so a restart during it ends the run as any restart does (refunded, never a
//! second receipt).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use rapha_bundle::statement::{AuditDecl, AuditOutput, MAX_AUDIT_GRAPH_BYTES};
use rapha_core::{Digest, ResourceLimits};
use rapha_enclave::session::{AuditOutcome as Measured, AuditRunner};
use rapha_enclave::{EnclaveSession, RecordSource, SandboxConfig};
use rapha_receipt::body::Audit;

/// The node's privacy audit settings (`[audit]`, `[policy.audit]`): no runner until
/// [`super::Node::set_privacy_audit`] names one.
#[derive(Clone, Debug)]
pub struct PrivacyAudit {
    /// The runner binary and its limits; `None`: no job is audited (`no-runner`).
    pub runner: Option<(PathBuf, ResourceLimits)>,
    /// Share of a job's patients held back for the audit.
    pub holdout_fraction: f64,
    /// Fewest audit patients worth an audit.
    pub min_patients: usize,
    /// A release whose attack AUC's lower 95% bound is above this is withheld.
    pub max_attack_auc: Option<f64>,
}

impl Default for PrivacyAudit {
    fn default() -> Self {
        Self {
            runner: None,
            holdout_fraction: crate::config::DEFAULT_HOLDOUT_FRACTION,
            min_patients: usize::try_from(crate::config::DEFAULT_MIN_AUDIT_PATIENTS)
                .unwrap_or(usize::MAX),
            max_attack_auc: None,
        }
    }
}

impl PrivacyAudit {
    /// Patients of a cohort of `patients` held back for the audit: none unless a runner is
    /// configured and the bundle pins a graph.
    pub fn audit_patients(&self, pinned: bool, patients: u64) -> usize {
        if self.runner.is_none() || !pinned {
            return 0;
        }
        rapha_enclave::split::audit_patient_count(
            usize::try_from(patients).unwrap_or(usize::MAX),
            self.holdout_fraction,
            self.min_patients,
        )
    }

    /// Whether `audit` withholds the release: a measured attack whose lower 95% bound is above
    /// `max_attack_auc` (an audit not available never does: it reports, the threshold needs
    /// a figure).
    pub fn withholds(&self, audit: &Audit) -> bool {
        match (self.max_attack_auc, audit) {
            (Some(max), Audit::Measured { ci_low, .. }) => *ci_low > max,
            _ => false,
        }
    }
}

fn not_available(reason: &str) -> Audit {
    Audit::NotAvailable {
        reason: reason.to_owned(),
    }
}

/// Reads at most [`MAX_AUDIT_GRAPH_BYTES`] of the graph at `decl.graph` in the verified,
/// unpacked image (never through a symlink) and checks its digest.
fn pinned_graph(rootfs: &Path, decl: &AuditDecl) -> Result<Vec<u8>, String> {
    let path = rootfs.join(decl.graph.trim_start_matches('/'));
    // The image's own file, not what a link in it points at (the image was verified and
    // unpacked by the node, read-only to the trainer; a link could lead out of it).
    let is_file = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
    if !is_file {
        return Err(format!(
            "the pinned graph {} is not a file in the image",
            decl.graph
        ));
    }
    let f = std::fs::File::open(&path)
        .map_err(|e| format!("the pinned graph {} cannot be opened: {e}", decl.graph))?;
    let mut bytes = Vec::new();
    f.take(MAX_AUDIT_GRAPH_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("the pinned graph cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_AUDIT_GRAPH_BYTES {
        return Err(format!(
            "the pinned graph is larger than {MAX_AUDIT_GRAPH_BYTES} bytes"
        ));
    }
    if Digest::of(&bytes) != decl.graph_sha256 {
        return Err("the graph in the image is not the one the predicate pins".into());
    }
    Ok(bytes)
}

/// What the audit of one completed run needs.
pub(super) struct AuditInput<'a> {
    pub job: rapha_core::JobId,
    pub settings: &'a PrivacyAudit,
    pub decl: Option<&'a AuditDecl>,
    pub session: &'a EnclaveSession,
    pub sandbox: &'a SandboxConfig,
    pub work_root: &'a Path,
    /// The trainer's unpacked image (the pinned graph is read from it).
    pub rootfs: &'a Path,
    /// The node's released files.
    pub released: &'a [PathBuf],
    pub source: &'a dyn RecordSource,
}

/// Runs the audit; returns the receipt's member and, for the hospital, what happened.
pub(super) fn audit_release(i: &AuditInput<'_>) -> (Audit, String) {
    let Some((runner_path, limits)) = &i.settings.runner else {
        return (
            not_available("no-runner"),
            "no audit runner configured".into(),
        );
    };
    let Some(decl) = i.decl else {
        return (
            not_available("no-pinned-graph"),
            "the bundle pins no graph ([audit] in trainer.toml)".into(),
        );
    };
    let graph = match pinned_graph(i.rootfs, decl) {
        Ok(g) => g,
        Err(e) => return (not_available("graph-mismatch"), e),
    };
    let Some(weights) = i
        .released
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
    else {
        return (
            not_available("no-audit-split"),
            "the release holds no safetensors file to load".into(),
        );
    };
    let runner_bytes = match std::fs::read(runner_path) {
        Ok(b) => b,
        Err(e) => {
            return (
                not_available("runner-failed"),
                format!(
                    "the audit runner {} cannot be read: {e}",
                    runner_path.display()
                ),
            )
        }
    };
    let runner_digest = Digest::of(&runner_bytes);
    // The runner's root and inputs, removed when the audit ends (and by the start-up
    // clean-up of the work directory after a crash).
    let dir = i.work_root.join(format!("audit-{}", i.job));
    let _ = std::fs::remove_dir_all(&dir);
    let prepared = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt as _;
            let (inputs, root) = (dir.join("in"), dir.join("root"));
            let audit_json = serde_json::json!({
                "input": {"kind": "grey-v1", "side": decl.input.side},
                "output": match decl.output {
                    AuditOutput::Logit => "logit",
                    _ => "probability",
                },
            });
            let write = |p: PathBuf, b: &[u8], mode: u32| -> std::io::Result<()> {
                std::fs::write(&p, b)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            };
            std::fs::create_dir(&inputs)
                .and_then(|()| std::fs::create_dir(&root))
                .and_then(|()| write(inputs.join("model.onnx"), &graph, 0o444))
                .and_then(|()| std::fs::read(weights))
                .and_then(|w| write(inputs.join("model.safetensors"), &w, 0o444))
                .and_then(|()| {
                    write(
                        inputs.join("audit.json"),
                        audit_json.to_string().as_bytes(),
                        0o444,
                    )
                })
                .and_then(|()| write(root.join("audit-runner"), &runner_bytes, 0o555))
                .and_then(|()| {
                    for d in [&dir, &inputs, &root] {
                        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
                    }
                    Ok(())
                })
                .map_err(|e| e.to_string())
                .map(|()| (inputs, root))
        });
    let (inputs, root) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return (
                not_available("runner-failed"),
                format!("the audit's inputs cannot be written: {e}"),
            );
        }
    };
    let entry = vec!["/audit-runner".to_owned()];
    let runner = AuditRunner {
        rootfs: &root,
        entrypoint: &entry,
        inputs: &inputs,
        limits,
        wall: std::time::Duration::from_secs(limits.wall_seconds),
    };
    let outcome = i.session.audit(i.sandbox, i.work_root, &runner, i.source);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(job = %i.job, error = %e, "cannot remove the audit's inputs");
    }
    match outcome {
        Ok(Measured::Measured(a)) => (
            Audit::Measured {
                attack_auc: a.attack_auc,
                ci_low: a.ci_low,
                ci_high: a.ci_high,
                members: a.members as u64,
                non_members: a.non_members as u64,
                runner: runner_digest,
                graph: decl.graph_sha256,
            },
            format!(
                "membership attack AUC {} ({}-{}) over {} members and {} non-members",
                a.attack_auc, a.ci_low, a.ci_high, a.members, a.non_members
            ),
        ),
        Ok(Measured::NotAvailable { reason, detail }) => (not_available(reason.reason()), detail),
        Ok(_) => (
            not_available("runner-failed"),
            "an audit outcome this node does not know".into(),
        ),
        Err(e) => (
            not_available("runner-failed"),
            format!("the audit could not run: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(ci_low: f64) -> Audit {
        Audit::Measured {
            attack_auc: ci_low + 0.1,
            ci_low,
            ci_high: ci_low + 0.2,
            members: 20,
            non_members: 20,
            runner: Digest::of(b"runner"),
            graph: Digest::of(b"graph"),
        }
    }

    #[test]
    fn a_release_is_withheld_only_when_the_attacks_lower_bound_passes_the_threshold() {
        let report_only = PrivacyAudit::default();
        assert!(!report_only.withholds(&measured(0.9)));
        let strict = PrivacyAudit {
            max_attack_auc: Some(0.7),
            ..PrivacyAudit::default()
        };
        assert!(strict.withholds(&measured(0.71)));
        assert!(
            !strict.withholds(&measured(0.7)),
            "at the threshold: released"
        );
        assert!(!strict.withholds(&measured(0.45)));
        assert!(!strict.withholds(&not_available("runner-failed")));
    }

    #[test]
    fn no_audit_split_without_a_runner_or_a_pinned_graph() {
        let none = PrivacyAudit::default();
        assert_eq!(none.audit_patients(true, 100), 0);
        let runner = PrivacyAudit {
            runner: Some(("/r".into(), ResourceLimits::default())),
            ..PrivacyAudit::default()
        };
        assert_eq!(runner.audit_patients(false, 100), 0);
        assert_eq!(runner.audit_patients(true, 100), 15);
        assert_eq!(
            runner.audit_patients(true, 40),
            0,
            "6 is below the minimum of 10"
        );
    }
}
