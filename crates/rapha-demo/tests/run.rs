//! `rapha-demo run` end to end on tiny cohorts: the real binary, runc, anvil and the
//! in-process node. Skips loudly without runc (as root) or anvil, unless
//! RAPHA_REQUIRE_SERVICES=1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use rapha_receipt::{verify, VerifyOptions};
use rapha_testkit::cohort::CohortManifest;

fn required() -> bool {
    rapha_testkit::services::services_required()
}

pub(crate) fn skip(why: &str) -> bool {
    assert!(!required(), "{why} (RAPHA_REQUIRE_SERVICES=1)");
    eprintln!("SKIPPED: {why}; rapha-demo end-to-end test not run");
    true
}

pub(crate) fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// The reference trainer's rootfs: $RAPHA_DEMO_REFERENCE_TRAINER, else built here with
/// trainers/lesion-classifier/build.sh.
fn reference_rootfs() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("RAPHA_DEMO_REFERENCE_TRAINER").map(PathBuf::from) {
            if d.join("trainer").is_file() {
                return Some(d);
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = std::env::temp_dir().join(format!("rapha-demo-trainer-{}", std::process::id()));
        let ok = Command::new(root.join("trainers/lesion-classifier/build.sh"))
            .arg(&out)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(out)
    })
    .clone()
}

pub(crate) fn ready() -> Option<PathBuf> {
    if !(have("runc", "--version") && is_root()) {
        skip("runc (as root) is not available");
        return None;
    }
    let anvil = std::env::var("RAPHA_ANVIL").unwrap_or_else(|_| "anvil".into());
    if !have(&anvil, "--version") {
        skip("anvil is not installed");
        return None;
    }
    Some(reference_rootfs().expect("the reference trainer builds"))
}

fn demo(rootfs: &Path, out: &Path, args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_rapha-demo"))
        .arg("run")
        .args(args)
        .arg("--out")
        .arg(out)
        .env("RAPHA_DEMO_REFERENCE_TRAINER", rootfs)
        .output()
        .unwrap();
    eprintln!(
        "rapha-demo stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every planted PHI value (4+ bytes) is absent from every byte that left the hospital.
fn assert_no_phi(out: &Path) {
    let manifest: CohortManifest =
        serde_json::from_slice(&std::fs::read(out.join("cohort/manifest.json")).unwrap()).unwrap();
    assert!(
        !manifest.phi.is_empty(),
        "the cohort planted no PHI to look for"
    );
    let mut files = vec![out.join("receipt.json")];
    for e in std::fs::read_dir(out.join("released")).unwrap() {
        files.push(e.unwrap().path());
    }
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for phi in manifest.phi.iter().filter(|p| p.len() >= 4) {
            assert!(
                !contains(&bytes, phi.as_bytes()),
                "planted PHI {phi:?} found in {}",
                f.display()
            );
        }
    }
}

fn verified_receipt(out: &Path) -> rapha_receipt::VerifiedReceipt {
    let bytes = std::fs::read(out.join("receipt.json")).expect("OUT/receipt.json is written");
    verify(&bytes, &VerifyOptions::default()).expect("the receipt verifies")
}

#[test]
fn demo_job_completes_releases_weights_and_a_verifying_receipt_without_phi() {
    let Some(rootfs) = ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = demo(&rootfs, &out, &["--studies", "40", "--epochs", "1"]);
    assert_eq!(o.status.code(), Some(0), "the demo job did not complete");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(!stdout.contains("NOT RUN"), "a step did not run");
    let r = verified_receipt(&out);
    assert_eq!(r.body.outcome, rapha_core::Outcome::Completed);
    let p = &r.body.payment;
    assert_eq!(p.fee.base_units(), 120_000_000);
    assert_eq!(p.hospital_share.base_units(), 84_000_000);
    assert_eq!(p.protocol_share.base_units(), 36_000_000);
    let mut released: Vec<String> = std::fs::read_dir(out.join("released"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    released.sort();
    assert!(
        released.contains(&"model.safetensors".to_owned())
            && released.contains(&"metrics.json".to_owned()),
        "released: {released:?}"
    );
    // What left is exactly what the receipt lists (plus the receipt itself).
    let listed: Vec<String> = r
        .body
        .outputs
        .as_ref()
        .expect("a completed receipt lists its outputs")
        .files
        .iter()
        .map(|f| f.name.clone())
        .collect();
    for name in released.iter().filter(|n| *n != "receipt.json") {
        assert!(
            listed.contains(name),
            "{name} released but not in the receipt"
        );
    }
    assert!(
        stdout.contains("hospital payout +84000000, treasury +36000000"),
        "payout not on chain"
    );
    assert_no_phi(&out);
}

#[test]
fn demo_job_on_a_cohort_below_the_minimum_is_refused_with_exit_3_and_refunded() {
    let Some(rootfs) = ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = demo(&rootfs, &out, &["--studies", "20", "--epochs", "1"]);
    assert_eq!(o.status.code(), Some(3), "a refused job exits 3");
    let stdout = String::from_utf8_lossy(&o.stdout);
    // Below the minimum is refused at the cohort step, before any review and before the
    // trainer, with the one code every unusable cohort ends with (issue 18: the publisher
    // learns nothing of the cohort's size from the code).
    assert!(
        stdout.contains("job REFUSED: the cohort is empty or below this hospital's minimum size"),
        "the reason is printed: {stdout}"
    );
    assert!(
        stdout.contains("outcome: refused (cohort-empty)"),
        "{stdout}"
    );
    let r = verified_receipt(&out);
    assert_eq!(r.body.outcome, rapha_core::Outcome::Refused);
    assert_eq!(r.body.reason, "cohort-empty");
    assert_eq!(
        std::fs::read_dir(out.join("released")).unwrap().count(),
        0,
        "a refused job releases nothing"
    );
    assert!(
        stdout.contains("hospital payout +0, treasury +0, AI company 0 base units"),
        "the deposit is refunded in full"
    );
    assert_no_phi(&out);
}

#[test]
fn demo_runs_a_user_trainer_from_trainer_rootfs_signed_with_the_dev_key() {
    let Some(reference) = ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("my-trainer");
    std::fs::create_dir(&mine).unwrap();
    std::fs::copy(reference.join("trainer"), mine.join("train")).unwrap();
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_rapha-demo"))
        .args([
            "run",
            "--studies",
            "40",
            "--epochs",
            "1",
            "--entrypoint",
            "/train",
        ])
        .arg("--trainer-rootfs")
        .arg(&mine)
        .arg("--out")
        .arg(&out)
        .env_remove("RAPHA_DEMO_REFERENCE_TRAINER")
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(o.status.code(), Some(0));
    let r = verified_receipt(&out);
    assert_eq!(r.body.trainer, "custom-trainer");
    assert_eq!(r.body.outcome, rapha_core::Outcome::Completed);
    assert_no_phi(&out);
}

/// `--hostile-example`: a trainer that trains like any other, then hides the raw pixel bytes
/// of fed records in its weights. The output guard refuses the whole output set, the summary
/// (the hospital's console) names the rule that fired, nothing is released, and the job is
/// `violated`: the fee is charged (issue 18), exit code 3.
#[test]
fn hostile_example_is_refused_by_the_output_guard_nothing_released_and_charged() {
    let Some(rootfs) = ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = demo(
        &rootfs,
        &out,
        &["--studies", "40", "--hostile-example", "--json"],
    );
    assert_eq!(o.status.code(), Some(3), "a violated job exits 3");
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    assert_eq!(s["outcome"], "violated");
    assert_eq!(s["reason"], "output-guard");
    assert_eq!(s["exit_code"], 3);
    assert_eq!(s["trainer"], "hostile-example");
    assert_eq!(s["hostile_attack"], "pixels-in-weights");
    assert_eq!(s["guard"]["verdict"], "refused");
    let rules: Vec<&str> = s["guard"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["pixel-block"], "the pixel-copy rule fired: {s}");
    assert!(
        s["guard"]["rules"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("pixel-block: \"model.safetensors\" at offset "),
        "{s}"
    );
    assert_eq!(s["released"], serde_json::json!([]));
    assert_eq!(
        std::fs::read_dir(out.join("released")).unwrap().count(),
        0,
        "nothing left the hospital"
    );
    assert_eq!(s["payment"]["refunded"], false);
    assert_eq!(
        s["payment"]["hospital_payout_delta"], s["payment"]["hospital_share"],
        "{s}"
    );
    assert_eq!(
        s["payment"]["treasury_delta"], s["payment"]["protocol_share"],
        "{s}"
    );
    // The trainer ran: the guard judged real outputs, not a job that never started.
    assert!(s["timings"]["running_seconds"].as_f64().is_some(), "{s}");
    let r = verified_receipt(&out);
    assert_eq!(r.body.outcome, rapha_core::Outcome::Violated);
    // What the AI company's receipt says: one code, no rule, no name, no offset.
    assert_eq!(r.body.reason, "output-guard");
    assert!(
        s["detail"]
            .as_str()
            .unwrap()
            .contains("output guard refused the outputs: pixel-block: "),
        "the hospital's detail names the rule: {s}"
    );
    assert_no_phi(&out);
}

#[test]
fn hostile_example_renamed_dicom_is_refused_and_the_text_summary_says_why() {
    let Some(rootfs) = ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = demo(
        &rootfs,
        &out,
        &["--studies", "40", "--hostile-example", "renamed-dicom"],
    );
    assert_eq!(o.status.code(), Some(3), "a violated job exits 3");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("output guard: REFUSED the whole output set"),
        "{stdout}"
    );
    assert!(
        stdout.contains("- dicom-content: DICOM content in an output"),
        "{stdout}"
    );
    assert!(stdout.contains("released to "), "{stdout}");
    assert!(stdout.contains(": []"), "nothing released: {stdout}");
    assert!(
        !stdout.contains("(deposit refunded in full)"),
        "a guard refusal is charged, not refunded: {stdout}"
    );
    assert!(
        stdout
            .contains("job REFUSED: the output guard refused the trainer's outputs (dicom-content"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_dir(out.join("released")).unwrap().count(), 0);
}

/// `rapha-demo run --example pytorch` (issue 16): the PyTorch example's image (Debian base,
/// `buildah build`, oci-archive) signed with the dev key as it is and run through the whole
/// path; the job completes with a verified receipt, a node-computed AUC of at least 0.75 and
/// its declared model, re-serialised by the node (the example releases no ONNX file until an
/// ONNX graph can be pinned, issue 19). (The node's own test on Orthanc, rapha-node's
/// pipeline_pytorch.rs, checks what the image holds and how it unpacks.)
///
/// 120 studies, not fewer: pseudonyms are scoped per job, so the patient split (ordered by
/// pseudonym) and the record order differ from job to job. At 60 studies the validation side
/// is 4 patients and the node's AUC ranged 0.69-1.0 over six runs of the same image; at 120
/// (8 validation patients) it was 0.975-0.998 over four.
#[test]
fn demo_example_pytorch_completes_with_a_verified_receipt_auc_and_its_declared_model() {
    let Some(rootfs) = ready() else { return };
    let image = rapha_testkit::pytorch::image();

    let dir = tempfile::tempdir().unwrap();
    // The job, end to end.
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_rapha-demo"))
        .args(["run", "--example", "pytorch", "--studies", "120", "--json"])
        .arg("--out")
        .arg(&out)
        .env("RAPHA_DEMO_PYTORCH_IMAGE", &image)
        .env("RAPHA_DEMO_REFERENCE_TRAINER", &rootfs)
        .output()
        .unwrap();
    eprintln!("stderr:\n{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    eprintln!("summary: {s}");
    assert_eq!(
        o.status.code(),
        Some(0),
        "the PyTorch job did not complete: {s}"
    );
    assert_eq!(s["outcome"], "completed");
    assert_eq!(s["trainer"], "pytorch-lesion");
    let auc = s["metrics"]["auc"]
        .as_f64()
        .expect("the node computed an AUC");
    assert!(auc >= 0.75, "node-computed AUC {auc} < 0.75");
    let r = verified_receipt(&out);
    assert_eq!(r.body.outcome, rapha_core::Outcome::Completed);
    assert_eq!(r.body.trainer, "pytorch-lesion");
    let mut released: Vec<String> = std::fs::read_dir(out.join("released"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    released.sort();
    assert_eq!(
        released,
        ["metrics.json", "model.safetensors", "receipt.json"],
        "{s}"
    );
    rapha_testkit::pytorch::assert_models(&out.join("released"));
    assert_no_phi(&out);
}
