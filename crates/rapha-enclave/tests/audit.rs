//! The node's privacy audit (issue 19): the audit split a trainer never receives, the
//! membership attack on known scores, and the runner's failures as "not available".

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rapha_core::ResourceLimits;
use rapha_enclave::metrics::{auc_ci95, membership_attack, MembershipAttack};
use rapha_enclave::session::{AuditOutcome, AuditRunner, AuditUnavailable};
use rapha_enclave::split::{audit_holdout, audit_patient_count, split_records, Split};
use rapha_enclave::{EnclaveSession, RecordSource};
use serde_json::Value;

use crate::support::*;

#[test]
fn the_attack_scores_confidence_in_the_true_label_against_the_same_label() {
    // Members: label 1 at confidences 0.9 and 0.3, label 0 at 0.8 (p = 0.2); non-members:
    // label 0 at 0.7 (p = 0.3), label 1 at 0.2. Same-label pairs: label 1, members win 2 of 2
    // (0.9 and 0.3 > 0.2); label 0, 1 of 1 (0.8 > 0.7). Pairs across labels do not count.
    let members = [(1, 0.9), (0, 0.2), (1, 0.3)];
    let non_members = [(0, 0.3), (1, 0.2)];
    let a = membership_attack(&members, &non_members).unwrap();
    let [lo, hi] = auc_ci95(1.0, 3, 2);
    assert_eq!(
        a,
        MembershipAttack {
            attack_auc: 1.0,
            ci_low: lo,
            ci_high: hi,
            members: 3,
            non_members: 2
        }
    );
    // A member at 0.15 confidence on label 1 loses its pair against the 0.2 non-member.
    let a = membership_attack(&[(1, 0.15), (1, 0.9)], &[(1, 0.2)]).unwrap();
    assert_eq!(a.attack_auc, 0.5);
    // No label on both sides: nothing to compare.
    assert_eq!(membership_attack(&[(1, 0.9)], &[(0, 0.1)]), None);
}

/// A model that knows nothing (the same probability for every record) leaks nothing, whatever
/// the mix of labels on each side: comparing confidences across labels would read the
/// difference in label mix between the training split and the audit split as membership.
#[test]
fn a_constant_model_scores_one_half_whatever_each_sides_label_mix() {
    // Members mostly positive, non-members mostly negative; p = 0.3 for everyone.
    let members: Vec<(u8, f64)> = (0..40).map(|i| (u8::from(i % 5 != 0), 0.3)).collect();
    let non_members: Vec<(u8, f64)> = (0..40).map(|i| (u8::from(i % 5 == 0), 0.3)).collect();
    let a = membership_attack(&members, &non_members).unwrap();
    assert_eq!(a.attack_auc, 0.5, "{a:?}");
    assert!(a.ci_low < 0.5 && a.ci_high > 0.5, "{a:?}");
}

/// Forty records on each side from four patients each are four independent draws a side, not
/// forty: the interval over patients is wider than the one over records, around the same
/// figure, and never narrower.
#[test]
fn the_interval_is_taken_over_patients_not_records() {
    let members: Vec<(u8, f64)> = (0..40)
        .map(|i| ((i % 2) as u8, if i % 2 == 0 { 0.8 } else { 0.3 }))
        .collect();
    let non_members: Vec<(u8, f64)> = (0..40)
        .map(|i| ((i % 2) as u8, if i % 3 == 0 { 0.8 } else { 0.4 }))
        .collect();
    let records = membership_attack(&members, &non_members).unwrap();
    let patients = records.clone().over_patients(4, 4);
    assert_eq!(patients.attack_auc, records.attack_auc);
    assert!(
        patients.ci_low < records.ci_low && patients.ci_high >= records.ci_high,
        "{records:?} vs {patients:?}"
    );
    assert_eq!(patients.members, 40);
    // One record per patient: the same interval.
    assert_eq!(records.clone().over_patients(40, 40), records);
    assert_eq!(records.clone().over_patients(400, 400), records);
}

#[test]
fn a_model_that_treats_members_and_non_members_alike_scores_one_half() {
    let same: Vec<(u8, f64)> = (0..40)
        .map(|i| ((i % 2) as u8, f64::from(i) / 40.0))
        .collect();
    let a = membership_attack(&same, &same).unwrap();
    assert_eq!(a.attack_auc, 0.5);
    assert!(a.ci_low < 0.5 && a.ci_high > 0.5);
}

#[test]
fn an_overfit_model_is_told_apart_with_its_ci_above_one_half() {
    // Memorised members: near-certain of their labels; non-members: at chance.
    let members: Vec<(u8, f64)> = (0..30)
        .map(|i| if i % 2 == 0 { (1, 0.99) } else { (0, 0.01) })
        .collect();
    let non_members: Vec<(u8, f64)> = (0..30).map(|i| ((i % 2) as u8, 0.5)).collect();
    let a = membership_attack(&members, &non_members).unwrap();
    assert_eq!(a.attack_auc, 1.0);
    assert!(a.ci_low > 0.5, "{a:?}");
}

#[test]
fn the_attack_refuses_empty_sides_and_probabilities_outside_zero_to_one() {
    assert_eq!(membership_attack(&[], &[(1, 0.5)]), None);
    assert_eq!(membership_attack(&[(1, 0.5)], &[]), None);
    assert_eq!(membership_attack(&[(1, 1.5)], &[(1, 0.5)]), None);
    assert_eq!(membership_attack(&[(1, f64::NAN)], &[(1, 0.5)]), None);
    assert_eq!(membership_attack(&[(1, 0.5)], &[(0, -0.1)]), None);
}

#[test]
fn the_audit_split_is_whole_patients_deterministic_and_sized_by_policy() {
    assert_eq!(audit_patient_count(100, 0.15, 5), 15);
    assert_eq!(
        audit_patient_count(20, 0.15, 5),
        0,
        "3 patients: below the minimum"
    );
    assert_eq!(audit_patient_count(40, 0.15, 5), 6);
    assert_eq!(audit_patient_count(10, 0.0, 1), 0);
    assert_eq!(audit_patient_count(10, 1.0, 1), 0);
    assert_eq!(audit_patient_count(10, f64::NAN, 1), 0);
    let c = cohort(30, 4);
    let records = c.source.records();
    let held = audit_holdout(records, 6);
    assert_eq!(held, audit_holdout(records, 6));
    let held_patients: BTreeSet<_> = records
        .iter()
        .zip(&held)
        .filter(|(_, h)| **h)
        .map(|(r, _)| r.patient)
        .collect();
    assert_eq!(held_patients.len(), 6);
    for (r, h) in records.iter().zip(&held) {
        assert_eq!(
            *h,
            held_patients.contains(&r.patient),
            "a patient straddles"
        );
    }
    // A larger audit split holds the smaller one: the order is the patients' audit keys.
    let more = audit_holdout(records, 9);
    assert!(held.iter().zip(&more).all(|(a, b)| !a || *b));
}

fn lines_with<'a>(stdout: &'a str, prefix: &str) -> Vec<&'a str> {
    stdout.lines().filter(|l| l.starts_with(prefix)).collect()
}

fn header(line: &str) -> Value {
    let at = line.find('{').unwrap();
    serde_json::from_str(&line[at..]).unwrap()
}

#[test]
fn a_trainer_hunting_for_the_audit_split_neither_sees_nor_reaches_it() {
    let Some(bin) = require_sandbox() else { return };
    let c = cohort(20, 11);
    let mut spec = job_spec(Duration::from_secs(20));
    spec.audit_patients = 4;
    let held = audit_holdout(c.source.records(), 4);
    let audit_instances: BTreeSet<String> = c
        .source
        .records()
        .iter()
        .zip(&held)
        .filter(|(_, h)| **h)
        .map(|(r, _)| r.instance.to_hex())
        .collect();
    assert_eq!(audit_instances.len(), 4);
    // The trainer's view has 16 records; it asks for the indices the 4 held-back records
    // would have taken, and beyond the whole cohort.
    let run = run_trainer(bin, &["probe-indices", "16"], &c, spec);
    let out = run.stdout();
    let hello = header(lines_with(&out, "hello ")[0]);
    assert_eq!(hello["records"], 16);
    let list = header(lines_with(&out, "list ")[0]);
    assert_eq!(list["total"], 16);
    let listed: BTreeSet<String> = list["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["instance"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed.len(), 16);
    assert!(listed.is_disjoint(&audit_instances));
    // Every probe, where an audit record would be (16..20) or past the cohort (20..24), gets
    // the one refusal, word for word but the index.
    let fetches = lines_with(&out, "fetch ");
    assert_eq!(fetches.len(), 8);
    for (k, line) in fetches.iter().enumerate() {
        let h = header(line);
        assert_eq!(h["ok"], false, "{line}");
        assert_eq!(h["error"], "no_such_record", "{line}");
        assert_eq!(
            h["message"],
            format!("record index {} is out of range (0..16)", 16 + k)
        );
    }
    let predict = header(lines_with(&out, "predict ")[0]);
    assert_eq!(predict["error"], "no_such_record");
    // The manifest commits the whole cohort, audit split included, and counts the trainer's
    // validation split of its 16 records only.
    let m = &run.result.signed.manifest;
    let all = c.source.records();
    let full: Vec<[u8; 32]> = all
        .iter()
        .map(|r| *r.instance.as_bytes())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(m.cohort_root, rapha_core::merkle::root(&full));
    let trainer_view: Vec<_> = all
        .iter()
        .zip(&held)
        .filter(|(_, h)| !**h)
        .map(|(r, _)| r.clone())
        .collect();
    let val = split_records(&trainer_view, 30)
        .iter()
        .filter(|s| **s == Split::Validation)
        .count();
    assert_eq!(m.validation_records, val);
}

fn runner_limits() -> ResourceLimits {
    ResourceLimits {
        memory_mb: 64,
        cpus: 1,
        pids: 32,
        wall_seconds: 30,
        tmp_mb: rapha_core::DEFAULT_TMP_MB,
        gpus: 0,
    }
}

/// Runs the node's audit with the test trainer in `mode` standing in as the runner (a
/// stand-in for the runner's plumbing only: what it scores is not a model's).
fn audit_with(bin: &Path, mode: &[&str], audit_patients: usize, wall: Duration) -> AuditOutcome {
    let dir = tempfile::tempdir().unwrap();
    let c = cohort(30, 5);
    let mut spec = job_spec(Duration::from_secs(20));
    spec.audit_patients = audit_patients;
    let job = spec.job_id;
    let session = EnclaveSession::new(spec).unwrap();
    let rootfs = dir.path().join("runner-root");
    std::fs::create_dir(&rootfs).unwrap();
    std::fs::copy(bin, rootfs.join("runner")).unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::write(
        inputs.join("audit.json"),
        br#"{"input":{"kind":"grey-v1","side":64},"output":"logit"}"#,
    )
    .unwrap();
    let mut entry: Vec<String> = vec!["/runner".into()];
    entry.extend(mode.iter().map(|s| s.to_string()));
    entry.push(job.to_string());
    let limits = runner_limits();
    let runner = AuditRunner {
        rootfs: &rootfs,
        entrypoint: &entry,
        inputs: &inputs,
        limits: &limits,
        wall,
    };
    let cfg = sandbox_config(dir.path());
    let out = session
        .audit(&cfg, &dir.path().join("work"), &runner, &c.source)
        .unwrap();
    assert_host_clean(&cfg, job, dir.path());
    out
}

#[test]
fn a_runner_that_exits_non_zero_gives_not_available_never_a_figure() {
    let Some(bin) = require_sandbox() else { return };
    match audit_with(bin, &["exit", "5"], 6, Duration::from_secs(20)) {
        AuditOutcome::NotAvailable { reason, detail } => {
            assert_eq!(reason, AuditUnavailable::RunnerFailed);
            assert_eq!(reason.reason(), "runner-failed");
            assert!(detail.contains("Exited { code: 5 }"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_runner_that_never_exits_is_a_timeout() {
    let Some(bin) = require_sandbox() else { return };
    match audit_with(bin, &["never-exit"], 6, Duration::from_secs(2)) {
        AuditOutcome::NotAvailable { reason, .. } => {
            assert_eq!(reason, AuditUnavailable::RunnerTimeout)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_job_without_an_audit_split_is_not_audited() {
    let Some(bin) = require_sandbox() else { return };
    match audit_with(bin, &["honest"], 0, Duration::from_secs(20)) {
        AuditOutcome::NotAvailable { reason, .. } => {
            assert_eq!(reason, AuditUnavailable::NoAuditSplit)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_runner_scores_the_audit_split_and_as_many_training_records() {
    let Some(bin) = require_sandbox() else { return };
    let c = cohort(30, 5);
    let held = audit_holdout(c.source.records(), 6);
    let labelled_audit = c
        .source
        .records()
        .iter()
        .zip(&held)
        .filter(|(r, h)| **h && r.label.is_some())
        .count();
    match audit_with(bin, &["honest"], 6, Duration::from_secs(20)) {
        AuditOutcome::Measured(a) => {
            assert_eq!(a.non_members, labelled_audit);
            assert_eq!(a.members, labelled_audit);
            assert!((0.0..=1.0).contains(&a.attack_auc));
            assert!(a.ci_low <= a.attack_auc && a.attack_auc <= a.ci_high);
        }
        other => panic!("{other:?}"),
    }
}
