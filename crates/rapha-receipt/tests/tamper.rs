//! Acceptance: an honest receipt verifies; every edit an attacker can make is refused with its
//! own error.

use base64::Engine as _;
use rapha_core::merkle;
use rapha_core::Digest;
use rapha_receipt::{
    issue, jcs, verify_file, ErrorClass, NodeKey, ReceiptBody, ReceiptError, ReceiptFile,
    ReceiptLog, SignedTreeHead, VerifyOptions,
};
use serde_json::Value;

use crate::common::{self, sample_body};

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub log: ReceiptLog,
    pub file: ReceiptFile,
    pub key: NodeKey,
}

/// A log with a few other receipts around ours, so the audit path is not trivial.
pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ReceiptLog::open(&dir.path().join("log.sqlite")).unwrap();
    let key = common::node_key();
    for j in 0..5u8 {
        issue(
            &sample_body(key.address(), 100 + j),
            &key,
            &mut log,
            1_000 + u64::from(j),
        )
        .unwrap();
    }
    let file = issue(&sample_body(key.address(), 7), &key, &mut log, 2_000).unwrap();
    for j in 0..3u8 {
        issue(
            &sample_body(key.address(), 200 + j),
            &key,
            &mut log,
            3_000 + u64::from(j),
        )
        .unwrap();
    }
    Fixture {
        _dir: dir,
        log,
        file,
        key,
    }
}

fn pinned(f: &Fixture) -> VerifyOptions {
    VerifyOptions {
        node_address: Some(f.key.address()),
        ..VerifyOptions::default()
    }
}

fn with_body_bytes(file: &ReceiptFile, bytes: &[u8]) -> ReceiptFile {
    let mut t = file.clone();
    t.body_b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    t.body = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    t.receipt_digest = Digest::of(bytes);
    t
}

#[test]
fn honest_receipt_verifies_with_its_head_and_a_later_one() {
    let f = fixture();
    let v = verify_file(&f.file, &pinned(&f)).unwrap();
    assert_eq!(v.signer, f.key.address());
    assert_eq!(v.leaf_index, 5);
    assert_eq!(v.head.tree_size, 6);
    assert_eq!(v.body, sample_body(f.key.address(), 7));
    // Re-proved at the latest head, with a consistency proof from an auditor's older head.
    let old = f.log.head_at(7).unwrap().unwrap();
    let latest = f.log.latest_head().unwrap().unwrap();
    let mut file = f.file.clone();
    file.prove_at(&f.log, latest, &[7]).unwrap();
    let opts = VerifyOptions {
        sth: Some(latest),
        consistency_from: Some(old),
        ..pinned(&f)
    };
    let v = verify_file(&file, &opts).unwrap();
    assert_eq!(
        (v.head.tree_size, v.consistent_with.unwrap().tree_size),
        (9, 7)
    );
    // The round trip through JSON changes nothing.
    let parsed = ReceiptFile::from_json(&file.to_json().unwrap()).unwrap();
    assert_eq!(parsed, file);
}

/// Every leaf of the body JSON, by JSON pointer.
fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, c)| leaves(c, format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| leaves(c, format!("{at}/{i}"), out)),
        _ => out.push(at),
    }
}

/// A different value of the same shape, so the body still parses where possible.
fn mutate(v: &Value) -> Value {
    match v {
        Value::Null => Value::from(1),
        Value::Bool(b) => Value::Bool(!b),
        Value::Number(n) if n.is_u64() => Value::from(n.as_u64().unwrap() + 1),
        Value::Number(n) => Value::from(n.as_f64().unwrap() + 0.001),
        Value::String(s) => {
            let hexlike = s.trim_start_matches("0x");
            if s.len() == 42 && s.starts_with("0x") {
                // An address: flip a digit, keep the EIP-55 checksum valid.
                let mut lower = s.to_lowercase();
                let flipped = if lower.ends_with('0') { '1' } else { '0' };
                lower.replace_range(41.., &flipped.to_string());
                Value::String(lower.parse::<rapha_receipt::Address>().unwrap().to_string())
            } else if !hexlike.is_empty() && hexlike.chars().all(|c| c.is_ascii_hexdigit()) {
                let mut c: Vec<char> = s.chars().collect();
                let last = c.len() - 1;
                c[last] = if c[last] == '0' { '1' } else { '0' };
                Value::String(c.into_iter().collect())
            } else {
                match s.as_str() {
                    "completed" => Value::from("refused"),
                    "verified" => Value::from("none-development"),
                    _ => Value::String(format!("{s}x")),
                }
            }
        }
        other => other.clone(),
    }
}

#[test]
fn each_body_field_edited_is_refused() {
    let f = fixture();
    let body: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(&f.file.body_b64)
            .unwrap(),
    )
    .unwrap();
    let mut paths = vec![];
    leaves(&body, String::new(), &mut paths);
    assert!(
        paths.len() > 40,
        "the sample body fills every section ({} leaves)",
        paths.len()
    );
    let mut by_signature = 0;
    let mut before_signature: Vec<&str> = vec![];
    for p in &paths {
        let mut edited = body.clone();
        let target = edited.pointer_mut(p).unwrap();
        *target = mutate(target);
        let bytes = jcs::to_vec(&edited).unwrap();
        let err = verify_file(&with_body_bytes(&f.file, &bytes), &pinned(&f)).expect_err(p);
        match err {
            // The edit still makes a valid body: the signature no longer matches it.
            ReceiptError::SignerMismatch { claimed, .. } => {
                by_signature += 1;
                let node_address_edited = p == "/node/address";
                assert!(node_address_edited || claimed == f.key.address(), "{p}");
            }
            // The edit broke the schema or the I7 split: refused before any signature check.
            // (An attestation re-tagged as `none-development` parses, but drops its evidence
            // and so no longer matches its own bytes: NotCanonical.)
            ReceiptError::Malformed(_)
            | ReceiptError::NotCanonical
            | ReceiptError::InconsistentBody(_)
            | ReceiptError::UnsupportedSchema { .. } => before_signature.push(p.as_str()),
            other => panic!("{p}: unexpected {other:?}"),
        }
    }
    // Exactly these edits are caught before the signature: the schema id, the tagged
    // attestation, the sums that must add up (cohort counts, the 70/30 split, the leakage
    // terms and their figure per patient), and what v2
    // ties together (the reason is a code of the outcome, times are whole minutes).
    assert_eq!(
        before_signature,
        [
            "/attestation/mode",
            "/audit/status",
            "/cohort/by_modality/CR",
            "/cohort/by_modality/DX",
            "/cohort/instances",
            "/leakage/bound/files",
            "/leakage/bound/metrics_file",
            "/leakage/bound/node_metrics",
            "/leakage/bound/outcome",
            "/leakage/bound/run_length",
            "/leakage/bound/tensors",
            "/leakage/bound/total",
            "/leakage/patients",
            "/leakage/per_patient",
            "/outcome",
            "/payment/fee",
            "/payment/hospital_share",
            "/payment/protocol_share",
            "/reason",
            "/schema",
            "/timestamps/finished_ms",
            "/timestamps/started_ms",
            "/timestamps/submitted_ms"
        ]
    );
    assert_eq!(by_signature + before_signature.len(), paths.len());
}

#[test]
fn consistent_edits_of_sums_are_caught_by_the_signature() {
    let f = fixture();
    let mut body = sample_body(f.key.address(), 7);
    body.payment = rapha_receipt::body::Payment::new(
        body.payment.chain_id,
        body.payment.escrow,
        body.payment.token,
        body.payment.payout,
        rapha_core::Usdc::from_base_units(999_000_000),
    );
    let c = body.cohort.as_mut().unwrap();
    c.instances += 5;
    *c.by_modality.get_mut("CR").unwrap() += 5;
    let bytes = body.canonical_bytes().unwrap();
    assert!(matches!(
        verify_file(&with_body_bytes(&f.file, &bytes), &pinned(&f)),
        Err(ReceiptError::SignerMismatch { .. })
    ));
}

/// A publisher (or anyone) lowering the stated bound, with every figure made to agree again, is
/// caught by the node's signature; figures that do not agree are refused before it.
#[test]
fn a_tampered_leakage_bound_fails_verification() {
    let f = fixture();
    let mut body = sample_body(f.key.address(), 7);
    let l = body.leakage.as_mut().unwrap();
    l.bound.tensors = 0;
    l.bound.total -= 190_496;
    l.per_patient = l.patients.and_then(|p| l.bound.per_patient(p));
    l.publisher_bits -= 190_496;
    let bytes = body.canonical_bytes().unwrap();
    assert!(matches!(
        verify_file(&with_body_bytes(&f.file, &bytes), &pinned(&f)),
        Err(ReceiptError::SignerMismatch { .. })
    ));
    let mut body = sample_body(f.key.address(), 7);
    body.leakage.as_mut().unwrap().bound.tensors = 0;
    assert!(matches!(
        body.canonical_bytes(),
        Err(ReceiptError::InconsistentBody(ref m)) if m.contains("do not add up")
    ));
    let mut body = sample_body(f.key.address(), 7);
    body.leakage.as_mut().unwrap().publisher_cap = 1000;
    assert!(matches!(
        body.canonical_bytes(),
        Err(ReceiptError::InconsistentBody(ref m)) if m.contains("within the cap")
    ));
}

/// A publisher raising its audit's attack AUC's CI, or making a withheld figure "not
/// available", with the figures kept consistent, is caught by the node's signature; figures
/// that do not hold together, or a reason outside the vocabulary, are refused before it.
#[test]
fn a_tampered_audit_fails_verification() {
    use rapha_receipt::body::Audit;
    let f = fixture();
    for edit in [
        Audit::Measured {
            attack_auc: 0.5,
            ci_low: 0.39,
            ci_high: 0.61,
            members: 30,
            non_members: 30,
            runner: Digest::of(b"runner"),
            graph: Digest::of(b"graph"),
        },
        Audit::NotAvailable {
            reason: "runner-failed".into(),
        },
    ] {
        let mut body = sample_body(f.key.address(), 7);
        body.audit = Some(edit);
        let bytes = body.canonical_bytes().unwrap();
        assert!(matches!(
            verify_file(&with_body_bytes(&f.file, &bytes), &pinned(&f)),
            Err(ReceiptError::SignerMismatch { .. })
        ));
    }
    let refused = |a: Audit| {
        let mut body = sample_body(f.key.address(), 7);
        body.audit = Some(a);
        match body.canonical_bytes() {
            Err(ReceiptError::InconsistentBody(m)) => m,
            other => panic!("{other:?}"),
        }
    };
    let measured = |auc: f64, lo: f64, hi: f64, members: u64| Audit::Measured {
        attack_auc: auc,
        ci_low: lo,
        ci_high: hi,
        members,
        non_members: 30,
        runner: Digest::of(b"runner"),
        graph: Digest::of(b"graph"),
    };
    assert!(refused(measured(0.7, 0.71, 0.8, 30)).contains("outside its CI"));
    assert!(refused(measured(1.2, 0.9, 1.3, 30)).contains("in [0, 1]"));
    assert!(refused(measured(f64::NAN, 0.4, 0.6, 30)).contains("in [0, 1]"));
    assert!(refused(measured(0.6, 0.5, 0.7, 0)).contains("members and non-members"));
    assert!(refused(Audit::NotAvailable {
        reason: "the model leaks nothing".into()
    })
    .contains("not a class of the vocabulary"));
    // Only a job that released outputs has an audit.
    let mut body = sample_body(f.key.address(), 7);
    body.outputs = None;
    assert!(matches!(
        body.canonical_bytes(),
        Err(ReceiptError::InconsistentBody(ref m)) if m.contains("without released outputs")
    ));
}

#[test]
fn edited_human_copy_is_refused() {
    let f = fixture();
    let mut t = f.file.clone();
    t.body["payment"]["payout"] = Value::from("0x0000000000000000000000000000000000000bad");
    assert!(matches!(
        verify_file(&t, &pinned(&f)),
        Err(ReceiptError::CopyMismatch)
    ));
}

#[test]
fn non_canonical_body_bytes_are_refused() {
    let f = fixture();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&f.file.body_b64)
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let pretty = serde_json::to_vec_pretty(&v).unwrap();
    assert!(matches!(
        verify_file(&with_body_bytes(&f.file, &pretty), &pinned(&f)),
        Err(ReceiptError::NotCanonical)
    ));
}

#[test]
fn wrong_fee_split_is_refused_even_if_signed() {
    let f = fixture();
    let mut body = sample_body(f.key.address(), 9);
    body.payment.hospital_share = rapha_core::Usdc::from_base_units(1);
    let err = body.canonical_bytes().unwrap_err();
    assert!(matches!(err, ReceiptError::InconsistentBody(ref m) if m.contains("70/30")));
}

#[test]
fn edited_signature_is_refused() {
    let f = fixture();
    let mut t = f.file.clone();
    t.signature.0[40] ^= 0x01; // s stays low and valid: it recovers some other key
    assert!(matches!(
        verify_file(&t, &pinned(&f)),
        Err(ReceiptError::SignerMismatch { .. })
    ));
    let mut t = f.file.clone();
    t.signature.0[64] = 30;
    assert!(matches!(
        verify_file(&t, &pinned(&f)),
        Err(ReceiptError::BadSignature(_))
    ));
}

#[test]
fn receipt_signed_by_another_key_is_refused() {
    let f = fixture();
    let other = common::other_key();
    // Same body, re-signed by another key: the body names our node.
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&f.file.body_b64)
        .unwrap();
    let body = ReceiptBody::from_canonical_bytes(&bytes).unwrap();
    let (domain, msg) =
        rapha_receipt::settlement_for(&body, &Digest::of(&bytes), &f.file.log_at_signing);
    let mut t = f.file.clone();
    t.signature = other
        .sign(&rapha_receipt::settlement_digest(&domain, &msg))
        .unwrap();
    assert!(matches!(
        verify_file(&t, &VerifyOptions::default()),
        Err(ReceiptError::SignerMismatch { recovered, .. }) if recovered == other.address()
    ));
    // A complete forgery by another node (its own log, its own address in the body) is only
    // caught by pinning the node address.
    let dir = tempfile::tempdir().unwrap();
    let mut log = ReceiptLog::open(&dir.path().join("forged.sqlite")).unwrap();
    let forged = issue(&sample_body(other.address(), 7), &other, &mut log, 1).unwrap();
    assert!(
        verify_file(&forged, &VerifyOptions::default()).is_ok(),
        "self-consistent"
    );
    let err = verify_file(&forged, &pinned(&f)).unwrap_err();
    assert!(
        matches!(err, ReceiptError::WrongSigner { found, expected } if found == other.address() && expected == f.key.address())
    );
    assert_eq!(err.class(), ErrorClass::InvalidSignature);
}

#[test]
fn edited_audit_path_is_refused() {
    let f = fixture();
    let mut t = f.file.clone();
    let mut b = *t.inclusion.audit_path[1].as_bytes();
    b[0] ^= 0x80;
    t.inclusion.audit_path[1] = Digest::from_bytes(b);
    assert!(
        matches!(verify_file(&t, &pinned(&f)), Err(ReceiptError::NotInLog(m)) if m.contains("signed root"))
    );
    let mut t = f.file.clone();
    t.inclusion.audit_path.pop();
    assert!(
        matches!(verify_file(&t, &pinned(&f)), Err(ReceiptError::NotInLog(m)) if m.contains("shorter"))
    );
    let mut t = f.file.clone();
    t.inclusion.leaf_index += 1;
    assert!(matches!(
        verify_file(&t, &pinned(&f)),
        Err(ReceiptError::NotInLog(_))
    ));
}

#[test]
fn edited_tree_size_is_refused() {
    let f = fixture();
    let mut t = f.file.clone();
    t.inclusion.tree_size += 1;
    assert!(
        matches!(verify_file(&t, &pinned(&f)), Err(ReceiptError::NotInLog(m)) if m.contains("head checked"))
    );
    // Editing the head to match breaks the head's signature instead.
    t.sth.tree_size += 1;
    assert!(matches!(
        verify_file(&t, &pinned(&f)),
        Err(ReceiptError::HeadSigner { .. })
    ));
    // The signed log position is covered by the receipt signature.
    let mut t = f.file.clone();
    t.log_at_signing.tree_size += 1;
    assert!(matches!(
        verify_file(&t, &pinned(&f)),
        Err(ReceiptError::SignerMismatch { .. })
    ));
}

#[test]
fn head_from_another_key_or_another_size_is_refused() {
    let f = fixture();
    let foreign = SignedTreeHead::sign(&common::other_key(), 6, f.file.sth.root_hash, 5).unwrap();
    let opts = VerifyOptions {
        sth: Some(foreign),
        ..pinned(&f)
    };
    assert!(matches!(
        verify_file(&f.file, &opts),
        Err(ReceiptError::HeadSigner { .. })
    ));
    let later = f.log.latest_head().unwrap().unwrap();
    let opts = VerifyOptions {
        sth: Some(later),
        ..pinned(&f)
    };
    assert!(
        matches!(verify_file(&f.file, &opts), Err(ReceiptError::NotInLog(m)) if m.contains("ask the node"))
    );
}

#[test]
fn a_forked_log_is_detected_by_consistency_with_an_older_head() {
    let f = fixture();
    // The node signs a different history of size 7 (equivocation).
    let forked_root = merkle::node_hash(&Digest::of(b"x"), &Digest::of(b"y"));
    let forked = SignedTreeHead::sign(&f.key, 7, forked_root, 9).unwrap();
    let latest = f.log.latest_head().unwrap().unwrap();
    let mut file = f.file.clone();
    file.prove_at(&f.log, latest, &[7]).unwrap();
    let opts = VerifyOptions {
        sth: Some(latest),
        consistency_from: Some(forked),
        ..pinned(&f)
    };
    let err = verify_file(&file, &opts).unwrap_err();
    assert!(matches!(err, ReceiptError::Inconsistent(_)), "{err}");
    assert_eq!(err.class(), ErrorClass::Inconsistent);
    // Same size as the receipt's head but another root: also a fork.
    let same_size = SignedTreeHead::sign(&f.key, 9, forked_root, 9).unwrap();
    let opts = VerifyOptions {
        sth: Some(latest),
        consistency_from: Some(same_size),
        ..pinned(&f)
    };
    assert!(matches!(
        verify_file(&file, &opts),
        Err(ReceiptError::Inconsistent(_))
    ));
}

#[test]
fn reissuing_the_same_body_returns_the_same_receipt_position_and_signature() {
    let mut f = fixture();
    let again = issue(&sample_body(f.key.address(), 7), &f.key, &mut f.log, 9_999).unwrap();
    assert_eq!(again.signature, f.file.signature);
    assert_eq!(again.log_at_signing, f.file.log_at_signing);
    assert_eq!(again.inclusion.leaf_index, 5);
    verify_file(&again, &pinned(&f)).unwrap();
}

#[test]
fn body_naming_another_node_is_not_signed() {
    let mut f = fixture();
    let body = sample_body(common::other_key().address(), 8);
    assert!(matches!(
        issue(&body, &f.key, &mut f.log, 1),
        Err(ReceiptError::InconsistentBody(_))
    ));
}

#[test]
fn refused_job_gets_a_receipt_too() {
    let mut f = fixture();
    let mut body = sample_body(f.key.address(), 42);
    body.outcome = rapha_core::Outcome::Refused;
    body.reason = "admission-refused".into();
    body.policy.admission.allow = false;
    body.policy.final_gate = None;
    body.dpo_approval = None;
    body.attestation = rapha_receipt::body::Attestation::NotReached;
    body.cohort = None;
    body.outputs = None;
    body.audit = None;
    body.timestamps.started_ms = None;
    let file = issue(&body, &f.key, &mut f.log, 5).unwrap();
    let v = verify_file(&file, &pinned(&f)).unwrap();
    assert_eq!(v.body.outcome.code(), 2);
}

#[test]
fn batch_verifier_checks_each_head_once_and_still_refuses_foreign_heads() {
    let f = fixture();
    let latest = f.log.latest_head().unwrap().unwrap();
    let mut v = rapha_receipt::Verifier::new(VerifyOptions {
        sth: Some(latest),
        ..pinned(&f)
    });
    for j in [100u8, 101, 7, 200] {
        let mut body = sample_body(f.key.address(), j);
        body.job_id = rapha_core::JobId::from_bytes([j; 16]);
        let bytes = body.canonical_bytes().unwrap();
        // Re-prove each already-logged receipt at the common head.
        let index = (0..f.log.size())
            .find(|i| f.log.leaf(*i).unwrap() == bytes)
            .unwrap();
        let mut file = f.file.clone();
        file.inclusion.leaf_index = index;
        file.log_at_signing = rapha_receipt::LogPosition {
            tree_size: index + 1,
            root_hash: f.log.root_at(index + 1).unwrap(),
        };
        let (domain, msg) =
            rapha_receipt::settlement_for(&body, &Digest::of(&bytes), &file.log_at_signing);
        file.signature = f
            .key
            .sign(&rapha_receipt::settlement_digest(&domain, &msg))
            .unwrap();
        let file = with_body_bytes(&file, &bytes);
        let mut file = file;
        file.prove_at(&f.log, latest, &[]).unwrap();
        let ok = v.verify(&file.to_json().unwrap()).unwrap();
        assert_eq!(ok.leaf_index, index);
    }
    // The cache is keyed by the whole signed head: another key's head is still checked.
    let foreign = SignedTreeHead::sign(
        &common::other_key(),
        latest.tree_size,
        latest.root_hash,
        latest.timestamp,
    )
    .unwrap();
    let mut v = rapha_receipt::Verifier::new(VerifyOptions {
        sth: Some(foreign),
        ..pinned(&f)
    });
    let mut file = f.file.clone();
    file.prove_at(&f.log, latest, &[]).unwrap();
    assert!(matches!(
        v.verify(&file.to_json().unwrap()),
        Err(ReceiptError::HeadSigner { .. })
    ));
}

/// A metric with an integral value (sensitivity 1.0, specificity 0.0) is written `1` / `0` in
/// the canonical bytes and in the file's copy; the honest receipt still verifies, and an edited
/// copy of such a metric is still refused.
#[test]
fn receipt_with_integral_metrics_verifies_and_an_edited_copy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ReceiptLog::open(&dir.path().join("log.sqlite")).unwrap();
    let key = common::node_key();
    let mut body = sample_body(key.address(), 9);
    let outputs = body.outputs.as_mut().unwrap();
    outputs.metrics.insert("sensitivity".to_owned(), 1.0);
    outputs.metrics.insert("specificity".to_owned(), 0.0);
    let file = issue(&body, &key, &mut log, 5_000).unwrap();
    let reread = ReceiptFile::from_json(&file.to_json().unwrap()).unwrap();
    let opts = VerifyOptions {
        node_address: Some(key.address()),
        ..VerifyOptions::default()
    };
    verify_file(&reread, &opts).expect("an honest receipt with integral metrics verifies");
    let mut edited = reread.clone();
    edited.body["outputs"]["metrics"]["sensitivity"] = Value::from(0.5);
    assert!(matches!(
        verify_file(&edited, &opts),
        Err(ReceiptError::CopyMismatch)
    ));
}
