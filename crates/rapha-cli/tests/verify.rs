//! `rapha verify`: the honest receipt passes with a readable summary; each kind of forgery
//! exits with its own documented code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rapha_core::release::LeakageBound;
use rapha_core::{JobId, Outcome};
use rapha_receipt::body::{Attestation, Leakage};
use rapha_receipt::{issue, NodeKey, ReceiptBody, ReceiptFile, ReceiptLog, SignedTreeHead};

const NODE_SECRET: [u8; 32] = [0x11; 32];

fn rapha(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rapha"))
        .args(args)
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The full example body shipped with rapha-receipt's seed corpus.
fn example_body() -> ReceiptBody {
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rapha-receipt/tests/data/corpus/receipt-completed.json"
    );
    let file = ReceiptFile::from_json(&std::fs::read(seed).unwrap()).unwrap();
    serde_json::from_value(file.body).unwrap()
}

struct Node {
    dir: tempfile::TempDir,
    key: NodeKey,
    log: ReceiptLog,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = ReceiptLog::open(&dir.path().join("log.sqlite")).unwrap();
        Self {
            dir,
            key: NodeKey::from_secret_bytes(&NODE_SECRET).unwrap(),
            log,
        }
    }

    fn issue(&mut self, job: u8, edit: impl FnOnce(&mut ReceiptBody)) -> ReceiptFile {
        let mut body = example_body();
        body.job_id = JobId::from_bytes([job; 16]);
        edit(&mut body);
        issue(
            &body,
            &self.key,
            &mut self.log,
            1_764_000_000_000 + u64::from(job),
        )
        .unwrap()
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn write_receipt(&self, name: &str, f: &ReceiptFile) -> PathBuf {
        self.write(name, &f.to_json().unwrap())
    }

    fn write_head(&self, name: &str, h: &SignedTreeHead) -> PathBuf {
        self.write(name, &serde_json::to_vec(h).unwrap())
    }

    fn address(&self) -> String {
        self.key.address().to_string()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn honest_receipt_verifies_with_a_human_summary() {
    let mut node = Node::new();
    node.issue(1, |_| {});
    let f = node.issue(2, |_| {});
    let p = node.write_receipt("r.json", &f);
    let out = rapha(&["verify", s(&p), "--node-address", &node.address()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "VERIFIED receipt for job 02020202020202020202020202020202 — outcome completed",
        "matches --node-address",
        "acme-ai / chest-xray-classifier",
        "128 instances (CR 100, DX 28); excluded: burned-in-annotation 3, opted-out 2",
        "model.safetensors (1048576 bytes)",
        "auroc 0.8731",
        "hospital 84.000000 to 0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "leaf 1 in the signed head of size 2",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // Without a pinned address the summary says the signer is only the receipt's own claim.
    let out = rapha(&["verify", s(&p)]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("NOT pinned"));
}

/// A v2 body of a completed job as the node writes it now, with the reference trainer's
/// leakage bound (5,953 F32 parameters, 64 KiB of metrics.json, a 30-minute run).
fn with_leakage(b: &mut ReceiptBody) {
    b.schema = rapha_receipt::body::SCHEMA_V2.into();
    b.reason = "completed".into();
    // 1_764_000_000_000 is a whole minute.
    b.timestamps.submitted_ms = 1_764_000_000_000;
    b.timestamps.started_ms = Some(b.timestamps.submitted_ms + 120_000);
    b.timestamps.finished_ms = b.timestamps.submitted_ms + 900_000;
    b.leakage = Some(Leakage {
        bound: LeakageBound {
            tensors: 5_953 * 32,
            files: 2,
            metrics_file: 65_536 * 8,
            node_metrics: 61,
            outcome: 5,
            run_length: 5,
            total: 714_857,
        },
        patients: Some(40),
        per_patient: Some(17_872),
        publisher_bits: 3 * 714_857,
        publisher_cap: 1 << 28,
    });
}

#[test]
fn verify_shows_the_leakage_bound_and_a_tampered_bound_fails() {
    use base64::Engine as _;
    let mut node = Node::new();
    let f = node.issue(12, with_leakage);
    let p = node.write_receipt("r.json", &f);
    let out = rapha(&["verify", s(&p), "--node-address", &node.address()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "  leakage      at most 714857 bits to the publisher: tensors 190496, files written 2, \
         metrics.json 524288, node metrics 61, outcome 5, run length 5\n",
        "               17872 bits per patient (40 patients)\n",
        "               publisher total 2144571 of its cap 268435456 bits on this node\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // The signed bytes edited to state a smaller bound, its figures made to agree: the
    // node's signature no longer matches (exit 4, invalid signature).
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body: ReceiptBody = serde_json::from_slice(&b64.decode(&f.body_b64).unwrap()).unwrap();
    let l = body.leakage.as_mut().unwrap();
    l.bound.tensors = 0;
    l.bound.total -= 190_496;
    l.per_patient = l.bound.per_patient(40);
    let bytes = body.canonical_bytes().unwrap();
    let mut t = f.clone();
    t.body_b64 = b64.encode(&bytes);
    t.body = serde_json::from_slice(&bytes).unwrap();
    t.receipt_digest = rapha_core::Digest::of(&bytes);
    let p = node.write_receipt("smaller.json", &t);
    let out = rapha(&["verify", s(&p), "--node-address", &node.address()]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    // Terms that do not add up to the total: malformed, before any signature (exit 6).
    let mut v: serde_json::Value =
        serde_json::from_slice(&b64.decode(&f.body_b64).unwrap()).unwrap();
    v["leakage"]["bound"]["tensors"] = 0.into();
    let bytes = rapha_core::jcs::to_vec(&v).unwrap();
    let mut t = f.clone();
    t.body_b64 = b64.encode(&bytes);
    t.body = v;
    t.receipt_digest = rapha_core::Digest::of(&bytes);
    let p = node.write_receipt("unsummed.json", &t);
    let out = rapha(&["verify", s(&p), "--node-address", &node.address()]);
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(stderr(&out).contains("do not add up"), "{}", stderr(&out));
}

#[test]
fn verify_shows_the_privacy_audit_or_why_there_is_none() {
    use rapha_receipt::body::Audit;
    let mut node = Node::new();
    let f = node.issue(13, |b| {
        with_leakage(b);
        b.audit = Some(Audit::Measured {
            attack_auc: 0.81,
            ci_low: 0.7,
            ci_high: 0.92,
            members: 24,
            non_members: 24,
            runner: rapha_core::Digest::of(b"runner"),
            graph: rapha_core::Digest::of(b"graph"),
        });
    });
    let p = node.write_receipt("audited.json", &f);
    let out = rapha(&["verify", s(&p), "--node-address", &node.address()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let want = format!(
        "  audit        membership attack AUC 0.81 (95% CI 0.7-0.92) over 24 training and 24 \
         held-out records; runner {}, graph {}\n",
        rapha_core::Digest::of(b"runner"),
        rapha_core::Digest::of(b"graph")
    );
    assert!(stdout(&out).contains(&want), "{}", stdout(&out));
    let f = node.issue(14, |b| {
        with_leakage(b);
        b.audit = Some(Audit::NotAvailable {
            reason: "no-pinned-graph".into(),
        });
    });
    let p = node.write_receipt("unaudited.json", &f);
    let out = rapha(&["verify", s(&p), "--node-address", &node.address()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("  audit        not available: no-pinned-graph\n"));
    // A receipt written before the audit still verifies, and says so.
    let f = node.issue(15, with_leakage);
    let p = node.write_receipt("older.json", &f);
    let out = rapha(&["verify", s(&p), "--node-address", &node.address()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("  audit        not stated (a receipt written before"));
}

#[test]
fn json_output_carries_the_verified_facts() {
    let mut node = Node::new();
    let f = node.issue(3, |_| {});
    let p = node.write_receipt("r.json", &f);
    let out = rapha(&["verify", s(&p), "--json"]);
    assert_eq!(code(&out), 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["job_id"], "03030303030303030303030303030303");
    assert_eq!(v["signer"], node.address());
    assert_eq!(v["leaf_index"], 0);
    assert_eq!(v["receipt_digest"], f.receipt_digest.to_hex());
    assert_eq!(v["body"]["payment"]["fee"], "120000000");
}

#[test]
fn refused_job_summary_says_the_deposit_is_refunded() {
    let mut node = Node::new();
    let f = node.issue(4, |b| {
        b.outcome = Outcome::Refused;
        b.reason = "admission policy: fee below the hospital minimum".into();
        b.policy.admission.allow = false;
        b.policy.final_gate = None;
        b.dpo_approval = None;
        b.attestation = Attestation::NotReached;
        b.cohort = None;
        b.outputs = None;
        b.timestamps.started_ms = None;
    });
    let p = node.write_receipt("r.json", &f);
    let out = rapha(&["verify", s(&p)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("outcome refused"), "{text}");
    assert!(text.contains("fee below the hospital minimum"));
    assert!(text.contains("payout       none: the deposit of 120.000000 USDC is refunded"));
    assert!(text.contains("what left    nothing"));
}

#[test]
fn receipt_from_another_node_exits_4() {
    let mut node = Node::new();
    let f = node.issue(5, |_| {});
    let p = node.write_receipt("r.json", &f);
    let other = NodeKey::from_secret_bytes(&[0x22; 32])
        .unwrap()
        .address()
        .to_string();
    let out = rapha(&["verify", s(&p), "--node-address", &other]);
    assert_eq!(code(&out), 4);
    assert!(
        stderr(&out).contains("not by the expected node"),
        "{}",
        stderr(&out)
    );
    // An edited signature: 4 as well.
    let mut t = f.clone();
    t.signature.0[40] ^= 1;
    let p = node.write_receipt("sig.json", &t);
    let out = rapha(&["verify", s(&p), "--json"]);
    assert_eq!(code(&out), 4);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["verified"].as_bool(), v["class"].as_str()),
        (Some(false), Some("invalid-signature"))
    );
}

#[test]
fn edited_audit_path_or_foreign_head_exits_7() {
    let mut node = Node::new();
    for j in 10..14 {
        node.issue(j, |_| {});
    }
    let f = node.issue(6, |_| {});
    let mut t = f.clone();
    let mut b = *t.inclusion.audit_path[0].as_bytes();
    b[3] ^= 4;
    t.inclusion.audit_path[0] = rapha_core::Digest::from_bytes(b);
    let p = node.write_receipt("path.json", &t);
    let out = rapha(&["verify", s(&p)]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("not in the log"));
    // A later head the receipt's proof is not for.
    node.issue(7, |_| {});
    let later = node.log.sign_head(&node.key, 9).unwrap();
    let h = node.write_head("later.json", &later);
    let p = node.write_receipt("r.json", &f);
    let out = rapha(&["verify", s(&p), "--sth", s(&h)]);
    assert_eq!(code(&out), 7);
    // Re-proved at that head by the node, it verifies.
    let mut fresh = f.clone();
    fresh.prove_at(&node.log, later, &[]).unwrap();
    let p = node.write_receipt("fresh.json", &fresh);
    let out = rapha(&[
        "verify",
        s(&p),
        "--sth",
        s(&h),
        "--node-address",
        &node.address(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn forked_log_exits_8_and_honest_history_passes() {
    let mut node = Node::new();
    let f = node.issue(8, |_| {});
    node.issue(9, |_| {});
    let old = node.log.sign_head(&node.key, 2).unwrap();
    node.issue(10, |_| {});
    let latest = node.log.sign_head(&node.key, 3).unwrap();
    let mut file = f.clone();
    file.prove_at(&node.log, latest, &[old.tree_size]).unwrap();
    let p = node.write_receipt("r.json", &file);
    let h = node.write_head("latest.json", &latest);
    let o = node.write_head("old.json", &old);
    let out = rapha(&["verify", s(&p), "--sth", s(&h), "--consistency-from", s(&o)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("consistent with the earlier head of size 2"));
    // The node signed another history of size 2 (equivocation).
    let forked =
        SignedTreeHead::sign(&node.key, 2, rapha_core::Digest::of(b"other history"), 2).unwrap();
    let fo = node.write_head("forked.json", &forked);
    let out = rapha(&[
        "verify",
        s(&p),
        "--sth",
        s(&h),
        "--consistency-from",
        s(&fo),
    ]);
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    assert!(stderr(&out).contains("inconsistent"));
}

#[test]
fn malformed_input_exits_6_and_unreadable_file_exits_1() {
    let mut node = Node::new();
    let f = node.issue(11, |_| {});
    let garbage = node.write("garbage.json", b"{\"format\": 42");
    assert_eq!(code(&rapha(&["verify", s(&garbage)])), 6);
    // The human copy edited to show another payout address.
    let mut t = f.clone();
    t.body["payment"]["payout"] =
        serde_json::Value::from("0x000000000000000000000000000000000000dEaD");
    let p = node.write_receipt("copy.json", &t);
    let out = rapha(&["verify", s(&p)]);
    assert_eq!(code(&out), 6);
    assert!(
        stderr(&out).contains("human-readable copy"),
        "{}",
        stderr(&out)
    );
    let p = node.write_receipt("r.json", &f);
    assert_eq!(code(&rapha(&["verify", s(&p), "--sth", s(&garbage)])), 6);
    assert_eq!(
        code(&rapha(&["verify", s(&p), "--node-address", "0xnope"])),
        6
    );
    let missing = node.dir.path().join("missing.json");
    assert_eq!(code(&rapha(&["verify", s(&missing)])), 1);
}

/// The receipts written before issue 18 (`testdata/v1`, schema `rapha-receipt/1`) verify with
/// today's `rapha verify`, exit code 0, pinned to their node; an edited copy still exits with
/// the documented code of its class.
#[test]
fn v1_fixture_receipts_verify_with_todays_cli() {
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/v1");
    let fixture: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v1.join("fixture.json")).unwrap()).unwrap();
    let node = fixture["node"]["address"].as_str().unwrap();
    for outcome in ["completed", "refused", "failed"] {
        let receipt = v1.join(format!("receipts/{outcome}.json"));
        let o = rapha(&["verify", receipt.to_str().unwrap(), "--node-address", node]);
        assert_eq!(code(&o), 0, "{outcome}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains(&format!("outcome {outcome}")), "{out}");
        assert!(out.contains("schema       rapha-receipt/1"), "{out}");
        assert!(out.contains("matches --node-address"), "{out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v1.join("receipts/completed.json")).unwrap())
            .unwrap();
    file["body"]["reason"] = "edited".into();
    let edited = dir.path().join("edited.json");
    std::fs::write(&edited, serde_json::to_vec(&file).unwrap()).unwrap();
    let o = rapha(&["verify", edited.to_str().unwrap(), "--node-address", node]);
    assert_eq!(
        code(&o),
        6,
        "an edited human copy is malformed: {}",
        stderr(&o)
    );
}

/// A DPO passkey approval: the honest receipt verifies and says so; a tampered assertion,
/// an unenrolled credential, another job's assertion and a replay each exit with their own
/// code (9, 10, 11, 12) and name what was refused.
#[test]
fn passkey_approvals_verify_and_each_forgery_exits_with_its_own_code() {
    use rapha_receipt::body::{DpoApproval, PasskeyApproval};
    use rapha_testkit::passkey::{Alg, SoftAuthenticator};

    const RP: &str = "localhost";
    const T: u64 = 1_764_000_000;
    let mut node = Node::new();
    let old = node.issue(1, |_| {}); // an Ed25519 approval from before passkeys
    let mut first = SoftAuthenticator::new(Alg::Es256, 1, RP, "http://localhost:8443");
    let mut second = SoftAuthenticator::new(Alg::EdDsa, 2, RP, "http://localhost:8443");
    let append = |node: &mut Node, e: &rapha_receipt::credentials::CredentialEntry| {
        node.log
            .append(&e.canonical_bytes().unwrap())
            .unwrap()
            .index
    };
    let e0 = append(&mut node, &first.enrolment(None, None, [1; 32], T));
    let e1 = append(
        &mut node,
        &second.enrolment(Some(&mut first), Some(e0), [2; 32], T),
    );
    let digest = |job: u8| rapha_core::Digest::of(&[job]);
    let issue_with = |node: &mut Node, job: u8, p: PasskeyApproval| {
        node.issue(job, |b| {
            b.dpo_approval = Some(DpoApproval {
                signer: DpoApproval::passkey_signer(&p.assertion.credential_id),
                signature: p.assertion.signature.encode(),
                passkey: Some(p),
            });
        })
    };
    let run = |node: &Node, name: &str, f: &ReceiptFile, extra: &[&str]| {
        let p = node.write_receipt(name, f);
        let mut args = vec!["verify", s(&p), "--node-address"];
        let addr = node.address();
        args.push(&addr);
        args.extend_from_slice(extra);
        let out = rapha(&args);
        (code(&out), stdout(&out), stderr(&out))
    };

    let approval = second.approve(&digest(2), [3; 32], T + 60, e1);
    let honest = issue_with(&mut node, 2, approval.clone());
    let (c, out, err) = run(&node, "honest.json", &honest, &[]);
    assert_eq!(c, 0, "{err}");
    assert!(
        out.contains(&format!("DPO passkey {}", second.id())) && out.contains("verified"),
        "{out}"
    );
    let (c, _, err) = run(&node, "old.json", &old, &[]);
    assert_eq!(c, 0, "{err}");

    let mut tampered = second.approve(&digest(3), [4; 32], T + 60, e1);
    tampered.assertion.authenticator_data.0[32] ^= 0x04; // clear UV after signing
    let f = issue_with(&mut node, 3, tampered);
    let (c, _, err) = run(&node, "tampered.json", &f, &[]);
    assert_eq!(c, 9, "{err}");
    assert!(err.contains("passkey-tampered"), "{err}");

    let mut stranger = SoftAuthenticator::new(Alg::Es256, 9, RP, "http://localhost:8443");
    let f = issue_with(
        &mut node,
        4,
        stranger.approve(&digest(4), [5; 32], T + 60, e1),
    );
    let (c, _, err) = run(&node, "stranger.json", &f, &[]);
    assert_eq!(c, 11, "{err}");
    assert!(err.contains("passkey-not-enrolled"), "{err}");

    let mut other_job = first.approve(&digest(99), [6; 32], T + 60, e1);
    other_job.job_digest = digest(5);
    let f = issue_with(&mut node, 5, other_job);
    let (c, _, err) = run(&node, "other-job.json", &f, &[]);
    assert_eq!(c, 10, "{err}");
    assert!(err.contains("passkey-other-job"), "{err}");

    // The honest approval captured and put in job 6's receipt: alone it verifies; given the
    // receipt it was taken from, it is a replay.
    let replayed = issue_with(&mut node, 6, approval);
    let (c, _, err) = run(&node, "replayed.json", &replayed, &[]);
    assert_eq!(c, 0, "{err}");
    let honest_path = node.write_receipt("honest.json", &honest);
    let (c, _, err) = run(
        &node,
        "replayed.json",
        &replayed,
        &["--other", s(&honest_path)],
    );
    assert_eq!(c, 12, "{err}");
    assert!(
        err.contains("passkey-replayed") && err.contains("replay"),
        "{err}"
    );
    // The honest receipt given with itself is no replay.
    let (c, _, err) = run(
        &node,
        "honest2.json",
        &honest,
        &["--other", s(&honest_path)],
    );
    assert_eq!(c, 0, "{err}");
}
