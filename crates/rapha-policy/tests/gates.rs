//! The two gates through the typed API: honest paths and what each attack gets back.

use rapha_core::Digest;
use rapha_policy::{
    date_range_days, decision_digest, ApprovalFacts, ApprovalRecord, ApprovalStore, CohortSummary,
    Decision, DpoSigningKey, Gate, Mode, Policy, PolicyError, ReviewRequest,
};

use crate::common::*;

#[test]
fn good_job_is_admitted_with_no_reasons() {
    let p = Policy::builtin().unwrap();
    let d = p.admission(&admission_input(), &hospital()).unwrap();
    assert_eq!(
        d,
        Decision {
            allow: true,
            reasons: vec![],
            digest: d.digest
        }
    );
}

#[test]
fn every_denial_reason_is_reported_not_just_the_first() {
    let p = Policy::builtin().unwrap();
    let mut input = admission_input();
    input.publisher = "mallory".into();
    input.fee = rapha_core::Usdc::from_base_units(1);
    input.fee_usdc = "0.000001".into();
    input.requested_fields.push("InstitutionName".into());
    let d = p.admission(&input, &hospital()).unwrap();
    assert!(!d.allow);
    assert_eq!(
        d.reasons,
        vec![
            "The fee offered (0.000001 USDC) is below this hospital's minimum of 100.000000 USDC.",
            "The publisher 'mallory' is not on this hospital's list of trusted publishers.",
            "The trainer asks for the metadata field 'InstitutionName', which this hospital does not share.",
        ]
    );
}

#[test]
fn decision_digest_binds_policy_input_and_data() {
    let p = Policy::builtin().unwrap();
    let base = p.admission(&admission_input(), &hospital()).unwrap();
    // Same everything: same digest.
    assert_eq!(
        base.digest,
        p.admission(&admission_input(), &hospital()).unwrap().digest
    );
    // Recomputable by an auditor from the three parts.
    let input = serde_json::to_value(admission_input()).unwrap();
    let expected = decision_digest(
        Gate::Admission,
        &p.digest(),
        &rapha_core::jcs::digest_of(&input).unwrap(),
        &rapha_core::jcs::digest_of(&hospital().data_json()).unwrap(),
    );
    assert_eq!(base.digest, expected);
    // A changed input, data or policy gives a different digest, even with the same verdict.
    let mut other_input = admission_input();
    other_input.now += 1;
    assert_ne!(
        base.digest,
        p.admission(&other_input, &hospital()).unwrap().digest
    );
    let mut other_data = hospital();
    other_data.scope.max_studies += 1;
    assert_ne!(
        base.digest,
        p.admission(&admission_input(), &other_data).unwrap().digest
    );
    let edited = Policy::from_source(
        "edited",
        &format!("{}\n# edited\n", rapha_policy::DEFAULT_POLICY),
    )
    .unwrap();
    let d = edited.admission(&admission_input(), &hospital()).unwrap();
    assert!(d.allow);
    assert_ne!(base.digest, d.digest);
}

#[test]
fn decision_serialises_as_plain_data_for_the_receipt() {
    let p = Policy::builtin().unwrap();
    let mut input = final_input();
    input.approval = None;
    let d = p.final_gate(&input, &hospital()).unwrap();
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["allow"], false);
    assert_eq!(
        json["reasons"][0],
        "No Data Protection Officer approval has been recorded for this job."
    );
    assert_eq!(json["digest"], d.digest.to_hex());
    assert_eq!(serde_json::from_value::<Decision>(json).unwrap(), d);
    let extra = serde_json::json!({"allow": true, "reasons": [], "digest": d.digest, "x": 1});
    assert!(serde_json::from_value::<Decision>(extra).is_err());
}

#[test]
fn policy_contradicting_itself_fails_closed() {
    let src = "package rapha\nimport rego.v1\nadmission := {\"allow\": true, \"reasons\": [\"but no\"]}\n";
    let p = Policy::from_source("bad", src).unwrap();
    let err = p.admission(&admission_input(), &hospital()).unwrap_err();
    assert!(
        matches!(
            err,
            PolicyError::MalformedDecision {
                gate: "admission",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn policy_without_the_gate_fails_closed() {
    let src = "package rapha\nimport rego.v1\nadmission := {\"allow\": true, \"reasons\": []}\n";
    let p = Policy::from_source("no-final", src).unwrap();
    assert!(p.admission(&admission_input(), &hospital()).unwrap().allow);
    let err = p.final_gate(&final_input(), &hospital()).unwrap_err();
    assert!(
        matches!(
            err,
            PolicyError::MalformedDecision { gate: "final", .. }
                | PolicyError::Evaluation { gate: "final", .. }
        ),
        "{err}"
    );
}

#[test]
fn policy_of_another_package_or_broken_syntax_is_refused() {
    let err = Policy::from_source("other", "package other\nx := 1\n").unwrap_err();
    assert!(err.to_string().contains("expected package rapha"), "{err}");
    let err = Policy::from_source("broken", "package rapha\nadmission := {\n").unwrap_err();
    assert!(matches!(err, PolicyError::PolicyCompile { .. }), "{err}");
}

#[test]
fn date_ranges_are_counted_inclusively_and_junk_is_refused() {
    assert_eq!(date_range_days("20240101-20241231").unwrap(), Some(366));
    assert_eq!(date_range_days("20230101-20231231").unwrap(), Some(365));
    assert_eq!(date_range_days("20240229").unwrap(), Some(1));
    assert_eq!(date_range_days("20240101-").unwrap(), None);
    assert_eq!(date_range_days("-20240101").unwrap(), None);
    for bad in [
        "",
        "-",
        "2024-01-01",
        "20230229",
        "20241301-20241302",
        "20240102-20240101",
        "2024010a",
        "*",
    ] {
        assert!(
            matches!(date_range_days(bad), Err(PolicyError::InvalidDateRange(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn open_ended_date_range_is_not_narrowing() {
    let p = Policy::builtin().unwrap();
    let mut req = request();
    req.query.study_date = Some("19000101-".into());
    let input = rapha_policy::AdmissionInput::new(&req, declared(&outputs()), NOW, vec![]).unwrap();
    let d = p.admission(&input, &hospital()).unwrap();
    assert_eq!(
        d.reasons,
        vec!["The query is not narrowed to named studies or a study date range; the whole archive cannot be requested."]
    );
}

fn approved_record(key: &DpoSigningKey, job: Digest, expires_at: u64) -> ApprovalRecord {
    ApprovalRecord {
        approval: key.approve(job, NOW - 100, expires_at).unwrap(),
        revoked_at: None,
        started_at: None,
    }
}

#[test]
fn real_signed_approval_passes_the_final_gate() {
    let p = Policy::builtin().unwrap();
    let dpo = DpoSigningKey::generate();
    let record = approved_record(&dpo, job(), NOW + 60);
    let mut input = final_input();
    input.approval = Some(ApprovalFacts::of(&record, &[dpo.public()]));
    let d = p.final_gate(&input, &hospital()).unwrap();
    assert!(d.allow, "{:?}", d.reasons);
}

#[test]
fn approval_by_an_unknown_key_is_refused_by_the_final_gate() {
    let p = Policy::builtin().unwrap();
    let dpo = DpoSigningKey::generate();
    let mallory = DpoSigningKey::generate();
    let record = approved_record(&mallory, job(), NOW + 60);
    let mut input = final_input();
    input.approval = Some(ApprovalFacts::of(&record, &[dpo.public()]));
    let d = p.final_gate(&input, &hospital()).unwrap();
    assert_eq!(
        d.reasons,
        vec!["The approval was signed with a key that is not one of this hospital's Data Protection Officer keys."]
    );
}

#[test]
fn approval_with_an_extended_expiry_is_refused_as_forged() {
    let p = Policy::builtin().unwrap();
    let dpo = DpoSigningKey::generate();
    let mut record = approved_record(&dpo, job(), NOW - 1);
    record.approval.expires_at = NOW + 10_000; // edited after signing
    let mut input = final_input();
    input.approval = Some(ApprovalFacts::of(&record, &[dpo.public()]));
    let d = p.final_gate(&input, &hospital()).unwrap();
    assert_eq!(
        d.reasons,
        vec!["The approval's signature does not verify; it may have been altered."]
    );
}

#[test]
fn approval_of_a_changed_cohort_does_not_carry_over() {
    let p = Policy::builtin().unwrap();
    let dpo = DpoSigningKey::generate();
    let cohort = |commitment| CohortSummary {
        commitment,
        patients: 120,
        train_patients: 96,
        validation_patients: 24,
        studies: 130,
        instances: 400,
        modalities: Default::default(),
        exclusions: Default::default(),
        demographics: None,
    };
    let reviewed = ReviewRequest::new(request(), cohort(Digest::of(b"cohort A")));
    let changed = ReviewRequest::new(request(), cohort(Digest::of(b"cohort B")));
    assert_ne!(
        reviewed.job_digest().unwrap(),
        changed.job_digest().unwrap()
    );
    let record = approved_record(&dpo, reviewed.job_digest().unwrap(), NOW + 60);
    let mut input = final_input();
    input.job_digest = changed.job_digest().unwrap();
    input.approval = Some(ApprovalFacts::of(&record, &[dpo.public()]));
    let d = p.final_gate(&input, &hospital()).unwrap();
    assert_eq!(
        d.reasons,
        vec!["The approval is for a different job or cohort; the job or its cohort changed after approval, so it needs a new approval."]
    );
}

#[test]
fn revoked_approval_in_the_store_is_refused_by_the_final_gate() {
    let p = Policy::builtin().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ApprovalStore::open(dir.path()).unwrap();
    let review = ReviewRequest::new(
        request(),
        CohortSummary {
            commitment: Digest::of(b"c"),
            patients: 120,
            train_patients: 96,
            validation_patients: 24,
            studies: 120,
            instances: 300,
            modalities: Default::default(),
            exclusions: Default::default(),
            demographics: None,
        },
    );
    let digest = store.submit(&review).unwrap();
    let dpo = DpoSigningKey::generate();
    store
        .record(&dpo.approve(digest, NOW - 5, NOW + 60).unwrap())
        .unwrap();
    store.revoke(&digest, NOW - 1).unwrap();
    let record = store.get(&digest).unwrap().unwrap();
    let mut input = final_input();
    input.job_digest = digest;
    input.approval = Some(ApprovalFacts::of(&record, &[dpo.public()]));
    let d = p.final_gate(&input, &hospital()).unwrap();
    assert_eq!(
        d.reasons,
        vec!["The Data Protection Officer revoked the approval for this job."]
    );
}

#[test]
fn demo_mode_skips_attestation_but_production_requires_it() {
    let p = Policy::builtin().unwrap();
    let mut input = final_input();
    input.attestation.present = false;
    input.attestation.verified = false;
    assert!(!p.final_gate(&input, &hospital()).unwrap().allow);
    let mut demo = hospital();
    demo.mode = Mode::Demo;
    assert!(p.final_gate(&input, &demo).unwrap().allow);
}
