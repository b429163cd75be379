//! What a hostile publisher chooses in its bundle and its request, against the real node
//! (Orthanc + DICOMweb, swtpm, anvil, runc): resource requests out of the node's bounds, a job
//! budget it tries to exceed, pseudonyms it would like to join across jobs, and the cohort
//! figures it would like to read before any DPO has looked at the job.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;

use rapha_core::{CohortQuery, JobId, Outcome};
use rapha_dicom::cohort::CohortEntry;
use rapha_node::pipeline::artifact;
use rapha_node::store::JobState;

use crate::pipeline_e2e::{bundle, bundle_with, world, world_with_policy, World};

/// The code part of a job's reason (`code` or `code: detail`).
fn code(reason: &str) -> &str {
    reason.split(':').next().unwrap_or_default().trim()
}

/// Drives `job` to its end as an honest hospital and a paying publisher would: approves it when
/// it waits for the DPO, deposits when it waits for the deposit.
fn drive_to_end(w: &mut World, job: JobId) -> JobState {
    let mut deposited = false;
    for _ in 0..240 {
        let state = w.node.run_until_blocked(job).unwrap();
        match state {
            JobState::Settled => return state,
            JobState::AwaitingApproval => w.approve(job),
            JobState::AwaitingDeposit if !deposited => {
                w.chain.deposit(&job);
                deposited = true;
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
    w.node.store().get(job).unwrap().state
}

fn states(w: &World, job: JobId) -> Vec<JobState> {
    w.node
        .store()
        .transitions(job)
        .unwrap()
        .iter()
        .map(|t| t.to)
        .collect()
}

#[test]
fn resources_outside_the_nodes_bounds_are_refused_before_anything_runs() {
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    type Edit = fn(&mut rapha_core::ResourceLimits);
    let cases: [(&str, Edit); 6] = [
        // Before the bounds: `Instant + wall` overflowed in the run step, a panic inside the
        // enclave's thread scope, whose feed thread then waited for ever (the node lock held).
        ("wall_seconds = 2^64 - 2", |r| r.wall_seconds = u64::MAX - 1),
        // Before: 0 went to runc, for which it means "no limit"; the jobs completed.
        ("memory_mb = 0", |r| r.memory_mb = 0),
        ("pids = 0", |r| r.pids = 0),
        ("cpus = 0", |r| r.cpus = 0),
        // A 1 TiB RAM-backed /tmp.
        ("tmp_mb = 2^20", |r| r.tmp_mb = 1 << 20),
        // A GPU on a node that has none ([trainer] gpus unset: the bound is 0..=0).
        ("gpus = 1", |r| r.gpus = 1),
    ];
    let mut failures = Vec::new();
    for (i, (what, edit)) in cases.into_iter().enumerate() {
        let (dir, manifest) = bundle_with(
            &tmp,
            &w.trainer,
            &format!("limits-{i}"),
            "honest",
            &w.publisher_key,
            edit,
        );
        let job = w
            .node
            .submit(&dir, w.request(manifest, w.scoped_query()))
            .unwrap();
        let driven = std::panic::catch_unwind(AssertUnwindSafe(|| drive_to_end(&mut w, job)));
        let Ok(end) = driven else {
            failures.push(format!("{what}: the node panicked driving the job"));
            continue;
        };
        let row = w.node.store().get(job).unwrap();
        let reason = row.reason.clone().unwrap_or_default();
        let seen = states(&w, job);
        if end != JobState::Settled
            || row.outcome != Some(Outcome::Refused)
            || code(&reason) != "resources-out-of-range"
            || seen.contains(&JobState::Admitted)
        {
            failures.push(format!(
                "{what}: ended {end} with {:?} ({reason:?}) through {seen:?}",
                row.outcome
            ));
            continue;
        }
        let receipt = w
            .node
            .receipt(job)
            .unwrap()
            .expect("a refused job's receipt");
        assert_eq!(receipt.body["outcome"], "refused", "{}", receipt.body);
        assert_eq!(
            code(receipt.body["reason"].as_str().unwrap()),
            "resources-out-of-range",
            "{}",
            receipt.body
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(w.pacs_calls(), 0, "a refused job reached the PACS");

    // Control: the same bundle within the bounds is admitted and reaches the DPO.
    let (dir, manifest) = bundle(&tmp, &w.trainer, "limits-ok", "honest", &w.publisher_key);
    let job = w
        .node
        .submit(&dir, w.request(manifest, w.scoped_query()))
        .unwrap();
    assert_eq!(
        w.node.run_until_blocked(job).unwrap(),
        JobState::AwaitingApproval
    );
    // The DPO reviews the resources with the bounds they passed.
    let review = w.node.review(job).unwrap().unwrap();
    let resources = review.resources.expect("the review shows the resources");
    assert_eq!(
        (resources.requested.memory_mb, resources.requested.tmp_mb),
        (256, rapha_core::DEFAULT_TMP_MB)
    );
    assert_eq!(resources.bounds, rapha_core::ResourceBounds::default());
    assert_eq!(resources.requested.gpus, 0);
    // And what the image holds (issue 16, item 1), counted at admission.
    let image = review.image.expect("the review shows the image's contents");
    assert_eq!((image.layers, image.setuid_setgid_cleared), (1, 0));
    assert!(image.files >= 1 && image.bytes > 0, "{image:?}");
}

/// Issue 16, item 5, attacker side: on a node whose bound admits one GPU, a bundle asking for
/// two is refused `resources-out-of-range` before anything runs; one asking
/// for one is admitted and the DPO sees the request and the bound.
#[test]
fn gpu_requests_are_admitted_only_within_the_nodes_gpu_bound() {
    let Some(mut w) = world_with_policy(20, 12, |h| {
        h.resources.gpus = Some(rapha_core::Bound::new(0, 1));
    }) else {
        return;
    };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle_with(&tmp, &w.trainer, "gpu-2", "honest", &w.publisher_key, |r| {
        r.gpus = 2;
    });
    let job = w
        .node
        .submit(&dir, w.request(manifest, w.scoped_query()))
        .unwrap();
    assert_eq!(drive_to_end(&mut w, job), JobState::Settled);
    let row = w.node.store().get(job).unwrap();
    assert_eq!(row.outcome, Some(Outcome::Refused));
    let reason = row.reason.unwrap_or_default();
    assert_eq!(code(&reason), "resources-out-of-range", "{reason}");
    assert!(!states(&w, job).contains(&JobState::Admitted));
    assert_eq!(w.pacs_calls(), 0, "a refused job reached the PACS");

    let (dir, manifest) = bundle_with(&tmp, &w.trainer, "gpu-1", "honest", &w.publisher_key, |r| {
        r.gpus = 1;
    });
    let job = w
        .node
        .submit(&dir, w.request(manifest, w.scoped_query()))
        .unwrap();
    assert_eq!(
        w.node.run_until_blocked(job).unwrap(),
        JobState::AwaitingApproval
    );
    let review = w.node.review(job).unwrap().unwrap();
    let resources = review
        .resources
        .as_ref()
        .expect("the review shows the resources");
    assert_eq!(resources.requested.gpus, 1);
    assert_eq!(resources.bounds.gpu_bound(), rapha_core::Bound::new(0, 1));
    assert!(rapha_node::approvals::summary(&review)
        .contains("gpus:              1 (0..=1); GPU memory is outside any enclave"));
}

#[test]
fn a_publisher_over_its_job_budget_is_refused_at_admission() {
    let Some(mut w) = world_with_policy(20, 12, |h| h.budget.max_jobs = 2) else {
        return;
    };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "budget", "honest", &w.publisher_key);
    for _ in 0..2 {
        let job = w
            .node
            .submit(&dir, w.request(manifest, w.scoped_query()))
            .unwrap();
        assert_eq!(
            w.node.run_until_blocked(job).unwrap(),
            JobState::AwaitingApproval
        );
    }
    let calls = w.pacs_calls();
    let third = w
        .node
        .submit(&dir, w.request(manifest, w.scoped_query()))
        .unwrap();
    assert_eq!(w.node.run_until_blocked(third).unwrap(), JobState::Settled);
    let row = w.node.store().get(third).unwrap();
    assert_eq!(row.outcome, Some(Outcome::Refused), "{:?}", row.reason);
    assert_eq!(code(row.reason.as_deref().unwrap()), "admission-refused");
    assert_eq!(w.pacs_calls(), calls, "the refused job queried the PACS");
    let admission: serde_json::Value = serde_json::from_slice(
        &w.node
            .store()
            .artifact(third, artifact::ADMISSION)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        admission["reasons"],
        serde_json::json!([
            "The publisher 'acme-ai' has already run 2 jobs here in the last 24 hours, the most this hospital allows in that time."
        ]),
        "{admission}"
    );
}

/// Pseudonyms of one job's cohort, by role.
struct Pseudonyms {
    patients: BTreeSet<String>,
    studies: BTreeSet<String>,
    series: BTreeSet<String>,
    instances: BTreeSet<String>,
}

fn pseudonyms_of(w: &World, job: JobId) -> (Vec<CohortEntry>, Pseudonyms) {
    let entries = w
        .node
        .cohort_entries(job)
        .unwrap()
        .expect("the cohort is built");
    let hex = |h: &rapha_core::HashedId| h.to_hex();
    let p = Pseudonyms {
        patients: entries.iter().map(|e| hex(&e.record.patient)).collect(),
        studies: entries.iter().map(|e| hex(&e.record.study)).collect(),
        series: entries.iter().map(|e| hex(&e.record.series)).collect(),
        instances: entries.iter().map(|e| hex(&e.record.instance)).collect(),
    };
    (entries, p)
}

#[test]
fn two_jobs_over_the_same_cohort_share_no_pseudonym() {
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "pseudo", "honest", &w.publisher_key);
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let job = w
            .node
            .submit(&dir, w.request(manifest, w.scoped_query()))
            .unwrap();
        assert_eq!(
            w.node.run_until_blocked(job).unwrap(),
            JobState::AwaitingApproval
        );
        jobs.push(job);
    }
    let (entries_a, a) = pseudonyms_of(&w, jobs[0]);
    let (entries_b, b) = pseudonyms_of(&w, jobs[1]);
    assert_eq!(entries_a.len(), entries_b.len(), "the same cohort twice");
    assert!(!entries_a.is_empty());

    // Within one job, one pseudonym per identifier: the records of a study join.
    let raw_studies: BTreeSet<String> = entries_a
        .iter()
        .map(|e| match &e.source {
            rapha_dicom::cohort::InstanceSource::DicomWeb { study_uid, .. } => study_uid.clone(),
            other => panic!("not a DICOMweb entry: {other:?}"),
        })
        .collect();
    assert_eq!(a.studies.len(), raw_studies.len());
    assert_eq!(a.instances.len(), entries_a.len());

    // Across jobs, none: no patient, study, series or instance of one job's records can be
    // joined with the other's.
    for (role, x, y) in [
        ("patient", &a.patients, &b.patients),
        ("study", &a.studies, &b.studies),
        ("series", &a.series, &b.series),
        ("instance", &a.instances, &b.instances),
    ] {
        let shared = x.intersection(y).count();
        assert_eq!(shared, 0, "{shared} {role} pseudonyms shared by two jobs");
    }
}

#[test]
fn a_linkage_group_joins_only_the_jobs_that_name_it_and_only_where_allowed() {
    let Some(mut w) = world_with_policy(20, 12, |h| {
        h.linkage_publishers = vec![crate::pipeline_e2e::PUBLISHER.to_owned()];
    }) else {
        return;
    };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "linkage", "honest", &w.publisher_key);
    let group = rapha_core::LinkageGroup::new("fed-run-1").unwrap();
    let mut jobs = Vec::new();
    for linkage in [Some(group.clone()), Some(group), None] {
        let mut req = w.request(manifest, w.scoped_query());
        req.linkage = linkage;
        let job = w.node.submit(&dir, req).unwrap();
        assert_eq!(
            w.node.run_until_blocked(job).unwrap(),
            JobState::AwaitingApproval
        );
        jobs.push(job);
    }
    let (_, a) = pseudonyms_of(&w, jobs[0]);
    let (_, b) = pseudonyms_of(&w, jobs[1]);
    let (_, own) = pseudonyms_of(&w, jobs[2]);
    assert_eq!(a.patients, b.patients, "one group: the records join");
    assert_eq!(a.instances, b.instances);
    assert_eq!(a.instances.intersection(&own.instances).count(), 0);
    assert_eq!(a.patients.intersection(&own.patients).count(), 0);
    // The DPO sees the group in the request it approves: the digest covers it.
    let review = w.node.review(jobs[0]).unwrap().unwrap();
    assert_eq!(review.job.linkage.as_ref().unwrap().as_str(), "fed-run-1");

    // A hospital that does not allow linkage for the publisher refuses the request.
    let Some(mut w) = world() else { return };
    let (dir, manifest) = bundle(
        w.tmp.path(),
        &w.trainer,
        "linkage-refused",
        "honest",
        &w.publisher_key,
    );
    let mut req = w.request(manifest, w.scoped_query());
    req.linkage = Some(rapha_core::LinkageGroup::new("fed-run-1").unwrap());
    let job = w.node.submit(&dir, req).unwrap();
    assert_eq!(w.node.run_until_blocked(job).unwrap(), JobState::Settled);
    let row = w.node.store().get(job).unwrap();
    assert_eq!(code(row.reason.as_deref().unwrap()), "admission-refused");
    let admission: serde_json::Value = serde_json::from_slice(
        &w.node
            .store()
            .artifact(job, artifact::ADMISSION)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        admission["reasons"],
        serde_json::json!([
            "The job asks for its pseudonyms to be linked with the other jobs of group 'fed-run-1'; this hospital does not allow linkage for the publisher 'acme-ai'."
        ]),
        "{admission}"
    );
    assert_eq!(w.pacs_calls(), 0);
}

/// The publisher's view of a job's status, without what differs between any two jobs (id,
/// times).
fn publisher_view(status: &serde_json::Value) -> serde_json::Value {
    let mut v = status.clone();
    for k in ["job_id", "created_at", "updated_at"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

#[test]
fn the_publisher_learns_no_cohort_figure_before_the_trainer_runs() {
    use crate::api::{serve_state, tokens, DPO_TOKEN, PUBLISHER_TOKEN};
    use rapha_node::api::ApiState;
    use reqwest::StatusCode;

    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "oracle", "honest", &w.publisher_key);
    // The attack: the same list of accessions, plus one probe whose existence (or opt-out)
    // the publisher wants to learn. Probe 1 exists; probe 2 does not.
    let base: Vec<String> = w.accessions[1..].to_vec();
    let probes = [w.accessions[0].clone(), "NOSUCHACC0001".to_owned()];
    let mut jobs = Vec::new();
    for probe in &probes {
        let mut listed = base.clone();
        listed.push(probe.clone());
        let query = CohortQuery {
            limit: Some(listed.len() as u32),
            accession_numbers: listed,
            ..CohortQuery::default()
        };
        let job = w.node.submit(&dir, w.request(manifest, query)).unwrap();
        assert_eq!(
            w.node.run_until_blocked(job).unwrap(),
            JobState::AwaitingApproval
        );
        jobs.push(job);
    }
    let node = w.node;
    let s = serve_state(ApiState::new(node, tmp.join("jobs.sqlite"), tokens()));
    let status = |job: &JobId| {
        let (st, text) = s.call(
            "get",
            &format!("/v1/jobs/{job}"),
            Some(PUBLISHER_TOKEN),
            None,
        );
        assert_eq!(st, StatusCode::OK, "{text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    let views: Vec<serde_json::Value> = jobs.iter().map(|j| publisher_view(&status(j))).collect();
    assert_eq!(
        views[0], views[1],
        "the publisher tells the two probes apart before any DPO decision"
    );
    assert!(views[0]["records"]["cohort"].is_null(), "{}", views[0]);

    // The DPO rejects both; their receipts (the publisher's to keep) tell nothing apart either.
    let mut cohorts = Vec::new();
    for job in &jobs {
        let (st, text) = s.call(
            "post",
            &format!("/v1/jobs/{job}/reject"),
            Some(DPO_TOKEN),
            Some(br#"{"reason":"not this one"}"#),
        );
        assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    }
    for job in &jobs {
        let mut receipt = None;
        for _ in 0..120 {
            let (st, bytes) = s.get_bytes(&format!("/v1/jobs/{job}/receipt"), PUBLISHER_TOKEN);
            if st == StatusCode::OK {
                receipt = Some(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap());
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        let receipt = receipt.expect("a receipt for the rejected job");
        cohorts.push(receipt["body"]["cohort"].clone());
    }
    assert_eq!(cohorts[0], cohorts[1], "receipts tell the probes apart");
    assert!(cohorts[0].is_null(), "{}", cohorts[0]);
    drop(s);
}

/// Issue 19, attacker side: a bundle whose model declares no tensors, one releasing a pickle,
/// and one whose declared tensors take more bits than `[policy.outputs] max_release_bits` are
/// refused at admission, before anything runs, with what to change in the reason; a bundle
/// within the cap is admitted and its DPO sees the parameters and bits.
#[test]
fn outputs_the_node_cannot_re_write_or_over_the_bit_cap_are_refused_at_admission() {
    use rapha_testkit::bundle::{sign_trainer, trainer_spec, SpecLimits};
    // The test trainer's model declares `w`, 16 U8 values: 128 bits.
    let Some(mut w) = world_with_policy(20, 13, |h| {
        h.outputs.max_release_bits = Some(127);
        h.outputs.kinds.push(rapha_core::OutputKind::PytorchZip);
    }) else {
        return;
    };
    let tmp = w.tmp.path().to_path_buf();
    let spec = |edit: Edit| {
        let mut s = trainer_spec(
            crate::pipeline_e2e::PUBLISHER,
            crate::pipeline_e2e::TRAINER,
            &SpecLimits::SMALL,
        )
        .unwrap();
        edit(&mut s);
        s
    };
    type Edit = fn(&mut rapha_bundle::TrainerSpec);
    let cases: [(&str, Edit, &str); 3] = [
        (
            "no-tensors",
            |s| s.outputs[0].tensors.clear(),
            "not-releasable: output \"model.safetensors\" declares no tensors; add one \
             [[outputs.tensors]]",
        ),
        (
            "pickle",
            |s| {
                s.outputs[0].tensors.clear();
                s.outputs[0].kind = rapha_core::OutputKind::PytorchZip;
            },
            "not-releasable: output \"model.safetensors\" is a pickle (pytorch-zip); pickles \
             are not released. Write the model's tensors as safetensors",
        ),
        (
            "over-cap",
            |_| {},
            "release-bits-over-cap: the outputs declare 16 parameters, 128 bits; this \
             hospital releases at most 127 bits per job",
        ),
    ];
    for (name, edit, want) in cases {
        let (dir, manifest) = sign_trainer(
            &tmp,
            name,
            &w.trainer,
            &["honest"],
            &spec(edit),
            &w.publisher_key,
        )
        .unwrap();
        let job = w
            .node
            .submit(&dir, w.request(manifest, w.scoped_query()))
            .unwrap();
        assert_eq!(drive_to_end(&mut w, job), JobState::Settled, "{name}");
        let row = w.node.store().get(job).unwrap();
        assert_eq!(row.outcome, Some(Outcome::Refused), "{name}");
        let reason = row.reason.unwrap_or_default();
        assert_eq!(code(&reason), "admission-refused", "{name}: {reason}");
        // What to change, for the hospital's admin (and the publisher's support).
        let ending: serde_json::Value = serde_json::from_slice(
            &w.node
                .store()
                .artifact(job, artifact::ENDING)
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        let detail = ending["detail"].as_str().unwrap();
        assert!(detail.starts_with(want), "{name}: {detail}");
        assert!(!states(&w, job).contains(&JobState::Admitted), "{name}");
    }
    assert_eq!(w.pacs_calls(), 0, "a refused job reached the PACS");
}

#[test]
fn the_dpo_sees_the_declared_parameters_and_bits_of_an_admitted_job() {
    let Some(mut w) = world_with_policy(20, 14, |h| h.outputs.max_release_bits = Some(128)) else {
        return;
    };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "bits-ok", "honest", &w.publisher_key);
    let job = w
        .node
        .submit(&dir, w.request(manifest, w.scoped_query()))
        .unwrap();
    assert_eq!(
        w.node.run_until_blocked(job).unwrap(),
        JobState::AwaitingApproval
    );
    let review = w.node.review(job).unwrap().unwrap();
    assert_eq!(
        review.release,
        Some(rapha_policy::ReleaseReview {
            parameters: 16,
            bits: 128,
            max_bits: Some(128),
        })
    );
    assert!(rapha_node::approvals::summary(&review).contains(
        "16 parameters, 128 bits at their declared dtypes (this hospital's cap: 128 bits)"
    ));
}
