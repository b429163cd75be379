//! `rapha verify RECEIPT`: offline verification of a receipt and its place in the node's
//! transparency log (**I6**), as an auditor, the AI company or the hospital runs it.
//! `rapha job fetch` calls [`check`] on the receipt it downloads. Both receipt schemas verify:
//! `rapha-receipt/2` (reason codes, minute times) and `rapha-receipt/1` (receipts written before
//! issue 18), with the same exit codes.
//!
//! Exit codes are the CLI's shared table (`crate::exit`, also in `docs/receipts.md`): 0
//! verified, 1 a file could not be read or bad arguments, 4 invalid signature, 6 malformed
//! input, 7 not in the log, 8 two signed heads of the node contradict each other; for a DPO
//! passkey approval, 9 its assertion was altered, 10 it was made for another job, 11 its
//! credential was not enrolled in the log at the time, 12 it replays the approval of another
//! receipt given with `--other`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use rapha_receipt::body::{Attestation, Audit};
use rapha_receipt::{
    parse_address, ErrorClass, ReceiptError, SignedTreeHead, VerifiedReceipt, VerifyOptions,
};

use crate::exit::{self, Failure};

/// Arguments of `rapha verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The receipt file (JSON, as the node hands it out).
    pub receipt: PathBuf,
    /// The node address you trust (0x…). Without it, the address the receipt names is used
    /// and the result says so.
    #[arg(long, value_name = "ADDR")]
    pub node_address: Option<String>,
    /// A signed tree head obtained independently (JSON); the receipt must be included in it.
    #[arg(long, value_name = "STH")]
    pub sth: Option<PathBuf>,
    /// An older signed tree head you saw before (JSON); the log must have grown from it.
    #[arg(long, value_name = "OLD_STH")]
    pub consistency_from: Option<PathBuf>,
    /// Other receipts of the same node (repeatable): a passkey approval whose credential and
    /// single-use nonce also approved one of them is a replay, refused (exit 12).
    #[arg(long = "other", value_name = "RECEIPT")]
    pub others: Vec<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn head(path: &Option<PathBuf>) -> anyhow::Result<Result<Option<SignedTreeHead>, ReceiptError>> {
    Ok(match path {
        None => Ok(None),
        Some(p) => SignedTreeHead::from_json(&read(p)?).map(Some),
    })
}

/// Verifies receipt bytes offline; a failure carries the exit code of its class.
///
/// # Errors
/// [`Failure::Receipt`].
pub fn check(receipt: &[u8], opts: &VerifyOptions) -> Result<VerifiedReceipt, Failure> {
    rapha_receipt::verify(receipt, opts).map_err(|e| failure(&e))
}

fn failure(e: &ReceiptError) -> Failure {
    let (code, class) = match e.class() {
        ErrorClass::InvalidSignature => (exit::VERIFICATION, "invalid-signature"),
        ErrorClass::NotInLog => (exit::NOT_IN_LOG, "not-in-log"),
        ErrorClass::Inconsistent => (exit::INCONSISTENT, "log-inconsistent"),
        ErrorClass::PasskeyTampered => (exit::PASSKEY_TAMPERED, "passkey-tampered"),
        ErrorClass::PasskeyOtherJob => (exit::PASSKEY_OTHER_JOB, "passkey-other-job"),
        ErrorClass::PasskeyNotEnrolled => (exit::PASSKEY_NOT_ENROLLED, "passkey-not-enrolled"),
        ErrorClass::PasskeyReplayed => (exit::PASSKEY_REPLAYED, "passkey-replayed"),
        _ => (exit::MALFORMED, "malformed"),
    };
    Failure::Receipt {
        code,
        class,
        message: e.to_string(),
    }
}

/// Runs `rapha verify`. Unreadable files are local errors (exit 1); a verification failure is
/// a [`Failure::Receipt`] with the exit code of its class.
pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let receipt = read(&args.receipt)?;
    let sth = head(&args.sth)?;
    let old = head(&args.consistency_from)?;
    let others = args
        .others
        .iter()
        .map(read)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let result = (|| {
        let node_address = args
            .node_address
            .as_deref()
            .map(|a| parse_address(a).map_err(ReceiptError::from))
            .transpose()
            .map_err(|e| failure(&e))?;
        let opts = VerifyOptions {
            node_address,
            sth: sth.map_err(|e| failure(&e))?,
            consistency_from: old.map_err(|e| failure(&e))?,
        };
        let verified = check(&receipt, &opts)?;
        if !others.is_empty() {
            // The others are checked as receipts of the same node (any head of its log); a
            // file that is not one proves no replay.
            let pinned = VerifyOptions {
                node_address: Some(verified.signer),
                ..VerifyOptions::default()
            };
            let others = others
                .iter()
                .map(|o| check(o, &pinned))
                .collect::<Result<Vec<_>, _>>()?;
            rapha_receipt::check_passkey_replay(&verified, &others).map_err(|e| failure(&e))?;
        }
        Ok(verified)
    })();
    match result {
        Ok(v) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&json_summary(&v))?);
            } else {
                print!("{}", human_summary(&v));
            }
            Ok(())
        }
        Err(f) => {
            if args.json {
                let (class, error) = match &f {
                    Failure::Receipt { class, message, .. } => (*class, message.clone()),
                    other => (other.kind(), other.to_string()),
                };
                let out = serde_json::json!({
                    "verified": false,
                    "class": class,
                    "error": error,
                    "exit_code": f.code(),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Err(f.into())
        }
    }
}

pub fn json_summary(v: &VerifiedReceipt) -> serde_json::Value {
    serde_json::json!({
        "verified": true,
        "job_id": v.body.job_id,
        "outcome": v.body.outcome,
        "reason": v.body.reason,
        "schema": v.body.schema,
        "signer": v.signer.to_string(),
        "signer_pinned": v.signer_pinned,
        "receipt_digest": v.receipt_digest,
        "settlement_digest": format!("0x{}", hex32(&v.settlement_digest)),
        "leaf_index": v.leaf_index,
        "head": v.head,
        "consistent_with": v.consistent_with,
        "body": v.body,
    })
}

pub fn human_summary(v: &VerifiedReceipt) -> String {
    let b = &v.body;
    let mut s = String::new();
    let outcome = b.outcome.as_str();
    let _ = writeln!(
        s,
        "VERIFIED receipt for job {} — outcome {outcome}",
        b.job_id
    );
    if !b.reason.is_empty() {
        let _ = writeln!(s, "  reason       {}", b.reason);
    }
    let _ = writeln!(s, "  schema       {}", b.schema);
    let pin = if v.signer_pinned {
        "matches --node-address"
    } else {
        "NOT pinned: this is the address the receipt names; pass --node-address to check it is your node"
    };
    let _ = writeln!(s, "  node         {} ({}) — {pin}", v.signer, b.node.name);
    let _ = writeln!(
        s,
        "  what ran     {} / {} — bundle {}",
        b.publisher,
        b.trainer,
        b.bundle_manifest.to_oci()
    );
    let _ = writeln!(s, "  confinement  {}", b.confinement);
    match &b.dpo_approval {
        None => {
            let _ = writeln!(
                s,
                "  approval     none (the job stopped before the DPO's review)"
            );
        }
        Some(a) => match &a.passkey {
            None => {
                let _ = writeln!(s, "  approval     DPO key {} (Ed25519 key file)", a.signer);
            }
            Some(p) => {
                let _ = writeln!(
                    s,
                    "  approval     DPO passkey {} (rp {}), verified: over job digest {}, \
                     enrolled in the log at entry {}",
                    p.assertion.credential_id, p.rp_id, p.job_digest, p.credentials_at
                );
            }
        },
    }
    let attest = match &b.attestation {
        Attestation::NoneDevelopment => "none-development (no hardware attestation)".to_owned(),
        Attestation::NotReached => "not reached".to_owned(),
        Attestation::Verified { evidence } => evidence
            .iter()
            .map(|e| format!("{} {}", e.kind, e.result))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let _ = writeln!(s, "  attestation  {attest}");
    match &b.cohort {
        None => {
            let _ = writeln!(
                s,
                "  cohort       none (the job stopped before the cohort was built)"
            );
        }
        Some(c) => {
            let mods: Vec<String> = c
                .by_modality
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let excl: Vec<String> = c
                .exclusions
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "  cohort       {} instances ({}); excluded: {}",
                c.instances,
                mods.join(", "),
                if excl.is_empty() {
                    "none".to_owned()
                } else {
                    excl.join(", ")
                }
            );
            let _ = writeln!(s, "               commitment {}", c.merkle_root);
        }
    }
    match &b.outputs {
        None => {
            let _ = writeln!(s, "  what left    nothing (the trainer did not run)");
        }
        Some(o) => {
            let _ = writeln!(s, "  output guard {}", o.guard_verdict);
            if o.files.is_empty() {
                let _ = writeln!(s, "  what left    nothing");
            }
            for f in &o.files {
                let _ = writeln!(
                    s,
                    "  what left    {} ({} bytes) sha256 {}",
                    f.name, f.bytes, f.sha256
                );
            }
            let metrics: Vec<String> = o.metrics.iter().map(|(k, x)| format!("{k} {x}")).collect();
            let _ = writeln!(
                s,
                "  metrics      {}",
                if metrics.is_empty() {
                    "none".to_owned()
                } else {
                    metrics.join(", ")
                }
            );
        }
    }
    match &b.leakage {
        None => {
            let _ = writeln!(
                s,
                "  leakage      not stated (a receipt written before the bound, or a job \
                 refused before admission)"
            );
        }
        Some(l) => {
            let t = &l.bound;
            let _ = writeln!(
                s,
                "  leakage      at most {} bits to the publisher: tensors {}, files written \
                 {}, metrics.json {}, node metrics {}, outcome {}, run length {}",
                t.total,
                t.tensors,
                t.files,
                t.metrics_file,
                t.node_metrics,
                t.outcome,
                t.run_length
            );
            if let (Some(n), Some(per)) = (l.patients, l.per_patient) {
                let _ = writeln!(s, "               {per} bits per patient ({n} patients)");
            }
            let _ = writeln!(
                s,
                "               publisher total {} of its cap {} bits on this node",
                l.publisher_bits, l.publisher_cap
            );
        }
    }
    match &b.audit {
        None if b.outputs.is_some() => {
            let _ = writeln!(
                s,
                "  audit        not stated (a receipt written before the privacy audit)"
            );
        }
        None => {}
        Some(Audit::Measured {
            attack_auc,
            ci_low,
            ci_high,
            members,
            non_members,
            runner,
            graph,
        }) => {
            let _ = writeln!(
                s,
                "  audit        membership attack AUC {attack_auc} (95% CI {ci_low}-{ci_high}) \
                 over {members} training and {non_members} held-out records; runner {runner}, \
                 graph {graph}"
            );
        }
        Some(Audit::NotAvailable { reason }) => {
            let _ = writeln!(s, "  audit        not available: {reason}");
        }
        Some(_) => {
            let _ = writeln!(s, "  audit        of a kind this verifier does not know");
        }
    }
    let p = &b.payment;
    if b.outcome.charged() {
        let _ = writeln!(
            s,
            "  payout       fee {} USDC: hospital {} to {}, protocol {} (chain {}, token {}, escrow {})",
            p.fee, p.hospital_share, p.payout, p.protocol_share, p.chain_id, p.token, p.escrow
        );
    } else {
        let _ = writeln!(
            s,
            "  payout       none: the deposit of {} USDC is refunded (chain {}, escrow {})",
            p.fee, p.chain_id, p.escrow
        );
    }
    let _ = writeln!(
        s,
        "  log          leaf {} in the signed head of size {} (root {}, signed at {} ms)",
        v.leaf_index, v.head.tree_size, v.head.root_hash, v.head.timestamp
    );
    if let Some(old) = &v.consistent_with {
        let _ = writeln!(
            s,
            "               consistent with the earlier head of size {} (root {})",
            old.tree_size, old.root_hash
        );
    }
    let _ = writeln!(
        s,
        "  receipt      sha256 {}; EIP-712 settlement digest 0x{}",
        v.receipt_digest,
        hex32(&v.settlement_digest)
    );
    s
}

fn hex32(b: &[u8; 32]) -> String {
    b.iter().fold(String::with_capacity(64), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}
