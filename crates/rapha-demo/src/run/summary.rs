//! The closing summary of `rapha-demo run`: the figures a run reports (text or `--json`), the
//! output guard's rules in words, and the check that no planted PHI string left the node.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use rapha_testkit::cohort::CohortManifest;
use serde::Serialize;

/// The demo's result, printed as text or (with `--json`) as one JSON object. Field names are
/// stable: scripts (bench/demo.sh) read them.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub job_id: String,
    /// `completed`, `refused`, `failed`, `violated` or `trainer-failed`.
    pub outcome: String,
    /// The reason code (all the AI company sees).
    pub reason: String,
    /// What happened, in words: the hospital's side of the ending (the demo is the
    /// hospital's console), empty for a completed job.
    pub detail: String,
    pub exit_code: i32,
    pub trainer: String,
    /// The hostile example's attack, when `--hostile-example` ran.
    pub hostile_attack: Option<String>,
    pub cohort: CohortFigures,
    pub pacs: PacsFigures,
    /// Node-computed validation metrics (empty unless completed).
    pub metrics: BTreeMap<String, f64>,
    pub guard: GuardFigures,
    pub released_dir: String,
    /// Names of the files in `released_dir`: exactly what left the hospital.
    pub released: Vec<String>,
    pub receipt: ReceiptFigures,
    pub payment: PaymentFigures,
    pub phi_check: PhiCheck,
    pub timings: Timings,
}

#[derive(Debug, Default, Serialize)]
pub struct CohortFigures {
    pub studies_generated: usize,
    /// Studies asked for (those in the label table).
    pub studies_queried: usize,
    pub studies_used: Option<u64>,
    pub patients: Option<u64>,
    pub train_patients: Option<u64>,
    pub validation_patients: Option<u64>,
    pub instances_used: Option<u64>,
    pub instances_by_modality: BTreeMap<String, u64>,
    pub instances_excluded: u64,
    pub exclusions: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct PacsFigures {
    pub qido_searches: u64,
    pub metadata_requests: u64,
    pub instance_retrievals: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct GuardFigures {
    /// `accepted`, `refused`, or `not-reached` (the job ended before the outputs existed).
    pub verdict: String,
    /// The rules that refused the outputs.
    pub rules: Vec<GuardRule>,
}

#[derive(Debug, Default, Serialize)]
pub struct GuardRule {
    /// The output guard's rule code, e.g. `pixel-block`, `dicom-content`.
    pub rule: String,
    /// What the rule catches, in words.
    pub what: String,
    /// The guard's finding as the hospital's audit trail records it.
    pub detail: String,
}

#[derive(Debug, Default, Serialize)]
pub struct ReceiptFigures {
    pub path: String,
    pub verified: bool,
    pub error: Option<String>,
}

/// Amounts in USDC base units (6 decimals).
#[derive(Debug, Default, Serialize)]
pub struct PaymentFigures {
    pub fee: u64,
    pub hospital_share: u64,
    pub protocol_share: u64,
    /// Balance changes on the local chain between before the deposit and after settlement.
    pub hospital_payout_delta: u64,
    pub treasury_delta: u64,
    pub company_delta: i64,
    /// The AI company got its whole deposit back.
    pub refunded: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct PhiCheck {
    /// Planted PHI strings looked for (those of 4 bytes or more).
    pub planted: usize,
    /// True if any of them appears in released/ or receipt.json.
    pub found: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Timings {
    /// Wall time of the job: from its submission to the node until it is settled on chain
    /// (cohort generation, trainer build and chain start-up are before it).
    pub job_seconds: f64,
    /// Wall time of the `running` state (the trainer under runc, fed by the node).
    pub running_seconds: Option<f64>,
    /// Each state the job entered, seconds after submission.
    pub states: Vec<StateTime>,
}

#[derive(Debug, Default, Serialize)]
pub struct StateTime {
    pub state: String,
    pub at_seconds: f64,
}

/// The output guard's findings, from the job's ending detail: the guard's sentences, then each
/// rejection as `Rule { field: .. }`, all joined by `"; "`. Each rule is paired with its
/// sentence when there is one per rule.
/// The rules in the hospital's detail of a guard refusal: its audit lines, joined by `; `,
/// each `<rule code>: <where, in the node's words>`.
pub(super) fn guard_rules(findings: &str) -> Vec<GuardRule> {
    findings
        .split("; ")
        .filter_map(|line| {
            let (rule, _) = line.split_once(": ")?;
            let is_code =
                !rule.is_empty() && rule.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
            is_code.then(|| GuardRule {
                rule: rule.to_owned(),
                what: rule_words(rule).to_owned(),
                detail: line.to_owned(),
            })
        })
        .collect()
}

fn rule_words(rule: &str) -> &'static str {
    match rule {
        "pixel-block" => "a verbatim block of a fed record's pixels in an output or the logs",
        "dicom-content" => "DICOM content in an output",
        "dicom-name" => "an output named .dcm/.dicom",
        "identifier" => "a raw identifier of the cohort in an output or the logs",
        "undeclared-output" => "a file the bundle does not declare",
        "bad-format" => "an output that is not valid in its declared format",
        "output-over-cap" | "outputs-over-total-cap" => "outputs over their declared size cap",
        "not-regular-file" | "hard-link" => "an output that is not a single regular file",
        _ => "see the job's ending in the audit trail",
    }
}

pub(super) fn print_summary(s: &Summary) {
    println!();
    println!("Summary (job {})", s.job_id);
    let by_guard = s.guard.verdict == "refused";
    println!(
        "  outcome: {}{}",
        s.outcome,
        if by_guard {
            " (by the output guard, see below)".to_owned()
        } else if s.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.reason)
        }
    );
    println!("  trainer: {}", s.trainer);
    let c = &s.cohort;
    println!("  cohort: {} studies generated", c.studies_generated);
    if let (Some(used), Some(p), Some(t), Some(v)) = (
        c.studies_used,
        c.patients,
        c.train_patients,
        c.validation_patients,
    ) {
        println!(
            "    studies queried: {} (those in the label table); used: {used}; patients {p} (train {t}, validation {v})",
            c.studies_queried
        );
    }
    if let Some(n) = c.instances_used {
        println!("    instances used: {n} {:?}", c.instances_by_modality);
        println!("    instances excluded: {}", c.instances_excluded);
        for (r, n) in &c.exclusions {
            println!("      {r}: {n}");
        }
    }
    println!(
        "  demo PACS served {} QIDO-RS searches, {} WADO-RS metadata and {} instance retrievals",
        s.pacs.qido_searches, s.pacs.metadata_requests, s.pacs.instance_retrievals
    );
    let m = &s.metrics;
    match (m.get("auc"), m.get("auc_ci95_low"), m.get("auc_ci95_high")) {
        (Some(a), Some(l), Some(h)) => {
            println!("  node-computed AUC {a:.3} (95% CI {l:.3}-{h:.3})")
        }
        _ if !m.is_empty() => println!("  node-computed metrics: {m:?}"),
        _ => {}
    }
    match s.guard.verdict.as_str() {
        "refused" => {
            println!("  output guard: REFUSED the whole output set; rule(s) that fired:");
            for r in &s.guard.rules {
                println!("    - {}: {}", r.rule, r.what);
                println!("      {}", r.detail);
            }
        }
        v => println!("  output guard: {v}"),
    }
    println!("  released to {}: {:?}", s.released_dir, s.released);
    println!(
        "  receipt: {} ({})",
        s.receipt.path,
        if s.receipt.verified {
            "verified".to_owned()
        } else {
            format!(
                "DID NOT VERIFY: {}",
                s.receipt.error.as_deref().unwrap_or("unknown")
            )
        }
    );
    let p = &s.payment;
    println!(
        "  fee {} base units: hospital share {} (70%), protocol share {} (30%)",
        p.fee, p.hospital_share, p.protocol_share
    );
    println!(
        "  on chain: hospital payout +{}, treasury +{}, AI company {} base units{}",
        p.hospital_payout_delta,
        p.treasury_delta,
        p.company_delta,
        if p.refunded {
            " (deposit refunded in full)"
        } else {
            ""
        }
    );
    println!(
        "  job wall time: {:.1} s from submission to settlement{}",
        s.timings.job_seconds,
        s.timings
            .running_seconds
            .map(|r| format!(" ({r:.1} s running the trainer)"))
            .unwrap_or_default()
    );
    if s.phi_check.found {
        println!("PHI CHECK FAILED: a planted PHI value appears in what left the hospital");
    } else {
        println!(
            "  PHI check: none of the {} planted PHI values appears in released/ or receipt.json",
            s.phi_check.planted
        );
    }
    if by_guard {
        let mut rules: Vec<&str> = s.guard.rules.iter().map(|r| r.rule.as_str()).collect();
        rules.dedup();
        println!(
            "job REFUSED: the output guard refused the trainer's outputs ({}); nothing was \
             released; outcome violated: the fee is charged and the publisher suspended until \
             the DPO reviews it",
            rules.join(", ")
        );
    } else if s.outcome == "refused" {
        println!("job REFUSED: {} (deposit refunded)", s.detail);
    }
}

/// True when no planted PHI string occurs in any file under `dir`.
pub(super) fn check_phi_absent(manifest: &CohortManifest, dir: &Path) -> Result<bool> {
    for e in std::fs::read_dir(dir)? {
        if !check_phi_absent_file(manifest, &e?.path())? {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(super) fn check_phi_absent_file(manifest: &CohortManifest, file: &Path) -> Result<bool> {
    let bytes = std::fs::read(file)?;
    Ok(!manifest
        .phi
        .iter()
        .any(|phi| phi.len() >= 4 && contains(&bytes, phi.as_bytes())))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
