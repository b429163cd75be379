//! The hospital's audit runner (`runners/onnx-audit`) against the node's real record feed:
//! the reference trainer trains and scores its validation records, the node re-serialises its
//! weights, and the runner, given the pinned graph (`trainers/lesion-classifier/model.onnx`)
//! and those released weights, scores every record with the trainer's own scores, within 1e-4.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rapha_core::{OutputDecl, OutputKind};
use rapha_enclave::dicom::DicomSource;
use rapha_enclave::{RecordSource, Split};

use crate::reference::{labelled_cohort, reference_trainer, required, serve_feed, static_binary};

/// The static audit runner: `$RAPHA_AUDIT_RUNNER` (scripts/test builds it), else built here
/// with its build script.
fn audit_runner() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    static_binary(
        &BIN,
        "RAPHA_AUDIT_RUNNER",
        "runners/onnx-audit/build.sh",
        "runner",
    )
}

#[test]
fn audit_runner_scores_equal_the_reference_trainers_own() {
    let (Some(trainer), Some(runner)) = (reference_trainer(), audit_runner()) else {
        assert!(
            !required(),
            "the reference trainer and the audit runner must build"
        );
        eprintln!("SKIPPED: the reference trainer or the audit runner did not build");
        return;
    };
    let (dir, cohort) = labelled_cohort(24, 19, 0.2, 0x19);
    let (source, _ids) = DicomSource::new(&cohort.entries, None);
    let records = source.records().len();

    // The reference trainer trains briefly and scores its validation records.
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let splits = rapha_enclave::split::split_records(source.records(), 50);
    let sock = dir.path().join("data.sock");
    let (trained, state) = serve_feed(
        &source,
        &splits,
        &sock,
        Command::new(&trainer)
            .args(["--epochs", "3"])
            .env("RAPHA_OUT", &out),
    );
    assert!(
        trained.status.success() && state.done,
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let own = state.predictions;
    assert!(own.len() >= 6, "{} validation scores", own.len());

    // What the node releases: its re-serialisation of the declared tensors.
    let decl = OutputDecl {
        name: "model.safetensors".into(),
        kind: OutputKind::Safetensors,
        max_bytes: 8 << 20,
        tensors: rapha_testkit::bundle::reference_tensors(),
    };
    let written = std::fs::read(out.join("model.safetensors")).unwrap();
    let released = rapha_enclave::guard::release::reserialise_released(
        &decl,
        &written,
        rapha_core::release::ReleaseTransform::DECLARED,
    )
    .unwrap();

    // The runner, fed every record, scores them all from the pinned graph and those weights.
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::copy(
        root.join("trainers/lesion-classifier/model.onnx"),
        input.join("model.onnx"),
    )
    .unwrap();
    std::fs::write(input.join("model.safetensors"), &released).unwrap();
    std::fs::write(
        input.join("audit.json"),
        r#"{"input": {"kind": "grey-v1", "side": 64}, "output": "logit"}"#,
    )
    .unwrap();
    let every = vec![Split::Validation; records];
    let (audited, state) = serve_feed(
        &source,
        &every,
        &sock,
        Command::new(&runner).arg("--in").arg(&input),
    );
    let stderr = String::from_utf8_lossy(&audited.stderr);
    assert!(audited.status.success() && state.done, "{stderr}");
    assert_eq!(state.predictions.len(), records, "{stderr}");
    let mut worst: f64 = 0.0;
    for (i, theirs) in &own {
        let ours = state.predictions[i];
        worst = worst.max((ours - theirs).abs());
    }
    eprintln!(
        "FIGURES audit runner: {records} records scored, {} compared with the trainer's own, \
         largest difference {worst:.2e}",
        own.len()
    );
    assert!(worst <= 1e-4, "runner and trainer differ by {worst}");
    // The trained model separates something: the scores are not all one value.
    let spread = own.values().fold(f64::MIN, |a, &b| a.max(b))
        - own.values().fold(f64::MAX, |a, &b| a.min(b));
    assert!(
        spread > 1e-3,
        "the trainer's scores barely differ ({spread})"
    );
}
