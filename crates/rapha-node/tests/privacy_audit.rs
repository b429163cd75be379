//! The acceptance test of issue 19's privacy audit: an overfit model (the reference trainer,
//! many epochs on a tiny cohort) audited by the hospital's runner through the whole node. It
//! needs the runner (`$RAPHA_AUDIT_RUNNER`, built from runners/onnx-audit) and the reference
//! trainer's pinned graph (trainers/lesion-classifier/model.onnx); with
//! `RAPHA_REQUIRE_SERVICES=1` a missing runner fails the test, as any missing service does.

use std::path::{Path, PathBuf};

use rapha_core::Digest;
use rapha_node::store::JobState;
use rapha_testkit::bundle::{sign_rootfs, trainer_spec, SpecLimits};

use crate::api_live::{reference_trainer, WALL_SECONDS};
use crate::pipeline_e2e::{world_with, PUBLISHER, TRAINER};

/// The audit runner, or `None` (skipped) where it is not built; a failure under
/// `RAPHA_REQUIRE_SERVICES=1`.
fn audit_runner() -> Option<PathBuf> {
    match std::env::var_os("RAPHA_AUDIT_RUNNER").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        _ => {
            assert!(
                std::env::var("RAPHA_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "RAPHA_AUDIT_RUNNER must name the static audit runner (runners/onnx-audit) when \
                 RAPHA_REQUIRE_SERVICES=1"
            );
            eprintln!("SKIPPED: RAPHA_AUDIT_RUNNER is not set to a file; audit test not run");
            None
        }
    }
}

fn pinned_graph() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../trainers/lesion-classifier/model.onnx")
}

#[test]
fn an_overfit_model_is_caught_by_the_membership_attack_with_its_ci_above_one_half() {
    let Some(trainer) = reference_trainer() else {
        return;
    };
    let Some(runner) = audit_runner() else { return };
    let graph_path = pinned_graph();
    let graph = std::fs::read(&graph_path)
        .unwrap_or_else(|e| panic!("the pinned graph {}: {e}", graph_path.display()));
    // A tiny cohort, many epochs: the model memorises its training records.
    let Some(mut w) = world_with(60, 19) else {
        return;
    };
    w.node
        .set_privacy_audit(rapha_node::pipeline::PrivacyAudit {
            runner: Some((
                runner.clone(),
                rapha_core::ResourceLimits {
                    memory_mb: 1024,
                    cpus: 1,
                    pids: 32,
                    wall_seconds: 600,
                    tmp_mb: 64,
                    gpus: 0,
                },
            )),
            holdout_fraction: 0.3,
            min_patients: 3,
            max_attack_auc: None,
        });
    let tmp = w.tmp.path().to_path_buf();
    let rootfs = tmp.join("audited-rootfs");
    std::fs::create_dir_all(rootfs.join("model")).unwrap();
    std::fs::copy(&trainer, rootfs.join("trainer")).unwrap();
    std::fs::write(rootfs.join("model/model.onnx"), &graph).unwrap();
    let limits = SpecLimits {
        memory_mb: 2048,
        cpus: 2,
        pids: 64,
        wall_seconds: WALL_SECONDS,
        model_max_bytes: 1048576,
        metrics_max_bytes: 65536,
    };
    let mut spec = rapha_testkit::bundle::with_reference_tensors(
        trainer_spec(PUBLISHER, TRAINER, &limits).unwrap(),
    );
    spec.audit = Some(rapha_bundle::statement::AuditDecl {
        graph: "/model/model.onnx".into(),
        graph_sha256: Digest::of(&graph),
        input: rapha_bundle::statement::AuditInput {
            kind: rapha_bundle::statement::AuditInputKind::GreyV1,
            side: 64,
        },
        output: rapha_bundle::statement::AuditOutput::Logit,
    });
    let (dir, manifest) = sign_rootfs(
        &tmp,
        "audited",
        &rootfs,
        &["/trainer", "--epochs", "200"],
        &spec,
        &w.publisher_key,
    )
    .unwrap();
    let job = w.submit_scoped(&dir, manifest);
    assert_eq!(w.drive_within(job, 1800), JobState::Released);
    let receipt = w.node.receipt(job).unwrap().unwrap();
    let a = &receipt.body["audit"];
    assert_eq!(a["status"], "measured", "{a}");
    let (auc, low, high) = (
        a["attack_auc"].as_f64().unwrap(),
        a["ci_low"].as_f64().unwrap(),
        a["ci_high"].as_f64().unwrap(),
    );
    eprintln!(
        "FIGURES privacy audit of the overfit reference trainer (200 epochs, {} members, {} \
         non-members): attack AUC {auc} (95% CI {low}-{high})",
        a["members"], a["non_members"]
    );
    assert!(auc >= 0.7, "attack AUC {auc}");
    assert!(low > 0.5, "CI lower bound {low}");
    assert_eq!(a["members"], a["non_members"]);
    assert_eq!(
        a["runner"],
        Digest::of(&std::fs::read(&runner).unwrap()).to_hex()
    );
    assert_eq!(a["graph"], Digest::of(&graph).to_hex());
    let bytes = w
        .node
        .store()
        .artifact(job, rapha_node::pipeline::artifact::RECEIPT)
        .unwrap()
        .unwrap();
    rapha_receipt::verify(&bytes, &rapha_receipt::VerifyOptions::default())
        .expect("the receipt verifies");
}
