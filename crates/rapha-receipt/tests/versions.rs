//! Receipt schemas: v2 (written now) carries only vocabulary codes and minute times; v1
//! receipts written before issue 18 (`testdata/v1`) verify forever, byte for byte.

use base64::Engine as _;
use rapha_core::{Outcome, ReasonCode};
use rapha_receipt::body::{Attestation, SCHEMA_V1, SCHEMA_V2};
use rapha_receipt::{
    issue, verify, verify_file, ReceiptBody, ReceiptError, ReceiptFile, ReceiptLog, VerifyOptions,
};
use serde_json::Value;

use crate::common::{self, sample_body};

fn v1_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/v1")
}

fn v1_node() -> rapha_receipt::Address {
    let f: Value =
        serde_json::from_slice(&std::fs::read(v1_dir().join("fixture.json")).unwrap()).unwrap();
    rapha_receipt::parse_address(f["node"]["address"].as_str().unwrap()).unwrap()
}

/// A body of `outcome` ended with `code`, as a v2 node writes it.
fn ended(outcome: Outcome, code: ReasonCode, job: u8) -> ReceiptBody {
    let mut body = sample_body(common::node_key().address(), job);
    body.outcome = outcome;
    body.reason = code.as_str().to_owned();
    if outcome != Outcome::Completed {
        body.outputs = None;
        body.audit = None;
    }
    if outcome == Outcome::Refused {
        body.attestation = Attestation::NotReached;
        body.timestamps.started_ms = None;
    }
    body
}

fn refused_body(body: &ReceiptBody) -> String {
    match body.canonical_bytes() {
        Err(ReceiptError::InconsistentBody(m)) => m,
        other => panic!("expected the body to be refused, got {other:?}"),
    }
}

#[test]
fn every_outcome_issues_and_verifies_as_v2() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ReceiptLog::open(&dir.path().join("log.sqlite")).unwrap();
    let key = common::node_key();
    for (i, code) in ReasonCode::ALL.into_iter().enumerate() {
        let body = ended(code.outcome(), code, i as u8);
        let file = issue(&body, &key, &mut log, 60_000).unwrap();
        let v = verify_file(
            &file,
            &VerifyOptions {
                node_address: Some(key.address()),
                ..VerifyOptions::default()
            },
        )
        .unwrap();
        assert_eq!(v.body.schema, SCHEMA_V2);
        assert_eq!(v.body.reason_code(), Some(code));
        assert_eq!(v.body.outcome.code(), code.outcome().code());
    }
}

/// The attack of issue 18 item 1: a refusal reason carrying what the trainer chose (a file
/// named after hex-encoded pixels, which identifier matched). A v2 body takes only a code.
#[test]
fn v2_reason_with_trainer_chosen_text_is_refused() {
    let mut body = ended(Outcome::Violated, ReasonCode::OutputGuard, 1);
    body.reason =
        "output guard refused the outputs: 4d524e3a3132333435.bin is not declared".to_owned();
    let m = refused_body(&body);
    assert!(m.contains("is not a code of the fixed vocabulary"), "{m}");
    // Nor a code with trailing bytes, nor another case.
    for reason in ["output-guard ", "Output-Guard", "output-guard\u{0}x"] {
        body.reason = reason.to_owned();
        assert!(
            refused_body(&body).contains("fixed vocabulary"),
            "{reason:?}"
        );
    }
}

/// A guard refusal must not come back as a refund: the code decides the outcome.
#[test]
fn v2_reason_of_another_outcome_is_refused() {
    let body = ended(Outcome::Refused, ReasonCode::OutputGuard, 2);
    assert_eq!(
        refused_body(&body),
        "reason output-guard belongs to outcome violated, not refused"
    );
    let body = ended(Outcome::Failed, ReasonCode::TrainerFailed, 3);
    assert!(refused_body(&body).contains("belongs to outcome trainer-failed"));
}

/// The trainer's timing (when it exits) reaches the publisher only to the minute.
#[test]
fn v2_times_that_are_not_whole_minutes_are_refused() {
    let mut body = ended(Outcome::TrainerFailed, ReasonCode::TrainerFailed, 4);
    body.timestamps.finished_ms += 1_234;
    assert!(
        refused_body(&body).starts_with("finished_ms "),
        "not whole minute"
    );
    let mut body = ended(Outcome::Completed, ReasonCode::Completed, 5);
    body.timestamps.started_ms = Some(body.timestamps.started_ms.unwrap() + 1);
    assert!(refused_body(&body).contains("started_ms"));
    assert_eq!(
        rapha_receipt::body::to_minute(1_764_000_059_999),
        1_764_000_000_000
    );
}

/// A job that released nothing lists no outputs (no file names, no metrics).
#[test]
fn v2_outputs_on_a_job_that_released_nothing_are_refused() {
    let mut body = ended(Outcome::Violated, ReasonCode::OutputGuard, 6);
    body.outputs = sample_body(common::node_key().address(), 6).outputs;
    assert!(refused_body(&body).contains("releases nothing"));
}

/// A v2 receipt written before the leakage bound (issue 19) has no `leakage` member: it still
/// issues and verifies, and its canonical bytes name no such member. A v1 body never carries
/// one.
#[test]
fn v2_bodies_without_a_leakage_bound_still_verify_and_v1_bodies_never_carry_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ReceiptLog::open(&dir.path().join("log.sqlite")).unwrap();
    let key = common::node_key();
    let mut body = ended(Outcome::Completed, ReasonCode::Completed, 8);
    body.leakage = None;
    let bytes = body.canonical_bytes().unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("leakage"));
    let file = issue(&body, &key, &mut log, 60_000).unwrap();
    let v = verify_file(
        &file,
        &VerifyOptions {
            node_address: Some(key.address()),
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(v.body.leakage, None);
    let mut body = ended(Outcome::Failed, ReasonCode::NodeError, 9);
    body.schema = SCHEMA_V1.to_owned();
    body.reason = "the node failed".to_owned();
    assert!(refused_body(&body).contains("has no leakage bound"));
    body.leakage = None;
    body.audit = Some(common::sample_audit());
    assert!(refused_body(&body).contains("has no audit"));
}

/// v1 knew three outcomes and free text: a v1 body cannot be used to smuggle free text into a
/// new outcome.
#[test]
fn v1_body_with_a_v2_outcome_is_refused() {
    let mut body = ended(Outcome::Violated, ReasonCode::OutputGuard, 7);
    body.schema = SCHEMA_V1.to_owned();
    assert!(refused_body(&body).contains("does not exist in schema rapha-receipt/1"));
    body.schema = "rapha-receipt/3".to_owned();
    assert!(matches!(
        body.canonical_bytes(),
        Err(ReceiptError::UnsupportedSchema { .. })
    ));
}

/// The receipts of `testdata/v1`, written by the pre-issue-18 node, verify pinned to its
/// address, their bodies are still v1 with their words, and they are in the v1 receipt log.
#[test]
fn v1_fixture_receipts_verify_and_are_in_the_v1_log() {
    let node = v1_node();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("receipts.log");
    std::fs::copy(v1_dir().join("node/receipts.log"), &log_path).unwrap();
    let log = ReceiptLog::open(&log_path).unwrap();
    let head = log.latest_head().unwrap().unwrap();
    let want_head: rapha_receipt::SignedTreeHead =
        serde_json::from_slice(&std::fs::read(v1_dir().join("receipts/log-head.json")).unwrap())
            .unwrap();
    assert_eq!(head, want_head);
    for (outcome, want) in [
        ("completed", Outcome::Completed),
        ("refused", Outcome::Refused),
        ("failed", Outcome::Failed),
    ] {
        let bytes = std::fs::read(v1_dir().join(format!("receipts/{outcome}.json"))).unwrap();
        let opts = VerifyOptions {
            node_address: Some(node),
            ..VerifyOptions::default()
        };
        let v = verify(&bytes, &opts).unwrap();
        assert!(v.body.is_v1());
        assert_eq!(v.body.outcome, want);
        assert!(v.signer_pinned);
        // The signed bytes are exactly the body's canonical form today.
        let file = ReceiptFile::from_json(&bytes).unwrap();
        let signed = base64::engine::general_purpose::STANDARD
            .decode(&file.body_b64)
            .unwrap();
        assert_eq!(v.body.canonical_bytes().unwrap(), signed);
        // And the v1 log holds it: re-proved at the log's latest head, it verifies there.
        let mut at_head = file.clone();
        at_head.prove_at(&log, head, &[]).unwrap();
        let v = verify_file(
            &at_head,
            &VerifyOptions {
                node_address: Some(node),
                sth: Some(head),
                consistency_from: Some(file.sth),
            },
        )
        .unwrap();
        assert_eq!(v.head.tree_size, head.tree_size);
    }
    assert_eq!(
        log.size(),
        5,
        "three settled receipts, the receipted and the released job"
    );
}
