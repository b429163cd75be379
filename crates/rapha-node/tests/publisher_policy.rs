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

/// The detail of a job's ending, for the hospital's admin (what to change).
fn ending_detail(w: &World, job: JobId) -> String {
    w.node.ending(job).unwrap().unwrap().detail
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

/// Drives `job` to its end, checks it was refused `admission-refused`, and returns the
/// hospital's detail of why.
fn refused_at_admission(w: &mut World, job: JobId) -> String {
    assert_eq!(drive_to_end(w, job), JobState::Settled);
    let row = w.node.store().get(job).unwrap();
    assert_eq!(row.outcome, Some(Outcome::Refused));
    let reason = row.reason.unwrap_or_default();
    assert_eq!(code(&reason), "admission-refused", "{reason}");
    ending_detail(w, job)
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
        let job = w.submit_scoped(&dir, manifest);
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
    let job = w.submit_to_review("limits-ok");
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
    let job = w.submit_scoped(&dir, manifest);
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
    let job = w.submit_scoped(&dir, manifest);
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
        let job = w.submit_scoped(&dir, manifest);
        assert_eq!(
            w.node.run_until_blocked(job).unwrap(),
            JobState::AwaitingApproval
        );
    }
    let calls = w.pacs_calls();
    let third = w.submit_scoped(&dir, manifest);
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
        let job = w.submit_scoped(&dir, manifest);
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
        let job = w.submit_scoped(&dir, manifest);
        // What to change, for the hospital's admin (and the publisher's support).
        let detail = refused_at_admission(&mut w, job);
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
    let job = w.submit_to_review("bits-ok");
    let review = w.node.review(job).unwrap().unwrap();
    let release = review.release.clone().unwrap();
    assert_eq!(
        (release.parameters, release.bits, release.max_bits),
        (16, 128, Some(128))
    );
    // The leakage bound before approval, and the publisher's total with it (issue 19).
    let bound = release.bound.unwrap();
    assert_eq!(bound, test_trainer_bound());
    // Released as declared: no precision or noise setting, no reduced figure.
    assert_eq!(
        release.transform(),
        rapha_core::release::ReleaseTransform::DECLARED
    );
    assert_eq!(release.released_bits, None);
    assert_eq!(
        release.publisher,
        Some(rapha_policy::PublisherBits {
            bits: TEST_TRAINER_BITS,
            cap: rapha_policy::DEFAULT_MAX_PUBLISHER_BITS
        })
    );
    let text = rapha_node::approvals::summary(&review);
    assert!(text.contains(
        "16 parameters, 128 bits at their declared dtypes (this hospital's cap: 128 bits)"
    ));
    for want in [
        format!("  leakage bound:     {TEST_TRAINER_BITS} bits per job, every field"),
        "tensors 128, files written 2, metrics.json 32768, node metrics 61, outcome 5, run \
         length 7\n"
            .to_owned(),
        format!(
            "  publisher total:   {TEST_TRAINER_BITS} of {} bits with this job",
            rapha_policy::DEFAULT_MAX_PUBLISHER_BITS
        ),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
}

/// The test trainer's leakage bound (`trainer_spec` with `SpecLimits::SMALL`), by hand: 16 U8
/// parameters (128 bits), 2 declared files, a 4 KiB metrics.json (32,768 bits, under its
/// schema), the node's metrics (61), 25 reason codes (5), and a 120 s run published to the
/// second (the test node's run quantum is 0, counted as 1 s): ⌈log2 121⌉ = 7.
const TEST_TRAINER_BITS: u64 = 128 + 2 + 32_768 + 61 + 5 + 7;

fn test_trainer_bound() -> rapha_core::release::LeakageBound {
    let b = rapha_core::release::LeakageBound {
        tensors: 128,
        files: 2,
        metrics_file: 32_768,
        node_metrics: 61,
        outcome: 5,
        run_length: 7,
        total: TEST_TRAINER_BITS,
    };
    let spec = rapha_testkit::bundle::trainer_spec(
        crate::pipeline_e2e::PUBLISHER,
        crate::pipeline_e2e::TRAINER,
        &rapha_testkit::bundle::SpecLimits::SMALL,
    )
    .unwrap();
    let computed = rapha_core::release::release_bound(&rapha_core::release::BoundInput {
        outputs: &spec.outputs,
        wall_seconds: spec.resources.wall_seconds,
        run_quantum_secs: 0,
        transform: rapha_core::release::ReleaseTransform::DECLARED,
    });
    assert_eq!(computed, Ok(b));
    b
}

/// Issue 19, attacker side: a publisher that splits what it wants into many small jobs adds
/// them up. Each admitted job's bound is charged to the publisher; the job that would pass
/// `[policy.outputs] max_publisher_bits` is refused at admission, before its query reaches
/// the PACS, with what is spent, the cap and how a DPO raises it; the total is durable (a
/// restarted node reads it back) and the receipt of a charged job states it.
#[test]
fn small_jobs_adding_up_past_the_publishers_bit_cap_are_refused_before_the_pacs() {
    let cap = 2 * TEST_TRAINER_BITS + TEST_TRAINER_BITS / 2;
    let Some(mut w) = world_with_policy(20, 15, |h| h.outputs.max_publisher_bits = Some(cap))
    else {
        return;
    };
    let tmp = w.tmp.path().to_path_buf();
    let mut admitted = Vec::new();
    for i in 0..2 {
        let (dir, manifest) = bundle(
            &tmp,
            &w.trainer,
            &format!("small-{i}"),
            "honest",
            &w.publisher_key,
        );
        let job = w.submit_scoped(&dir, manifest);
        assert_eq!(
            w.node.run_until_blocked(job).unwrap(),
            JobState::AwaitingApproval,
            "job {i}"
        );
        let release = w.node.review(job).unwrap().unwrap().release.unwrap();
        assert_eq!(
            release.publisher,
            Some(rapha_policy::PublisherBits {
                bits: (i + 1) * TEST_TRAINER_BITS,
                cap
            })
        );
        admitted.push(job);
    }
    let pacs_before = w.pacs_calls();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "small-2", "honest", &w.publisher_key);
    let job = w.submit_scoped(&dir, manifest);
    let detail = refused_at_admission(&mut w, job);
    let want = format!(
        "publisher-bits-over-cap: publisher \"{}\" has taken {} bits from this node and this \
         job's leakage bound is {TEST_TRAINER_BITS} bits, past its cap of {cap} bits. A DPO \
         who approves more raises [policy.outputs] max_publisher_bits",
        crate::pipeline_e2e::PUBLISHER,
        2 * TEST_TRAINER_BITS
    );
    assert!(detail.starts_with(&want), "{detail}");
    assert!(!states(&w, job).contains(&JobState::Admitted));
    assert_eq!(
        w.pacs_calls(),
        pacs_before,
        "the refused job reached the PACS"
    );
    // Its receipt states no bound (nothing was charged); the publisher's total is unchanged.
    let receipt = w.node.receipt(job).unwrap().unwrap();
    assert!(receipt.body.get("leakage").is_none(), "{}", receipt.body);
    // The total is the store's: a node started on the same state reads it back.
    let reopened = rapha_node::store::JobStore::open(&tmp.join("jobs.sqlite")).unwrap();
    assert_eq!(
        reopened
            .publisher_bits(crate::pipeline_e2e::PUBLISHER)
            .unwrap(),
        2 * TEST_TRAINER_BITS
    );
    drop(reopened);
    // A charged job's receipt states its bound and the total after it.
    let first = admitted[0];
    let mut deposited = false;
    let receipt = loop {
        if let Some(r) = w.node.receipt(first).unwrap() {
            break r;
        }
        match w.node.run_until_blocked(first).unwrap() {
            JobState::AwaitingApproval => w.approve(first),
            JobState::AwaitingDeposit if !deposited => {
                w.chain.deposit(&first);
                deposited = true;
            }
            s if s.is_terminal() => panic!("{s} without a receipt"),
            _ => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    };
    assert_eq!(receipt.body["outcome"], "completed", "{}", receipt.body);
    let leakage: rapha_receipt::body::Leakage =
        serde_json::from_value(receipt.body["leakage"].clone()).unwrap();
    assert_eq!(leakage.bound, test_trainer_bound());
    assert_eq!(leakage.publisher_bits, TEST_TRAINER_BITS);
    assert_eq!(leakage.publisher_cap, cap);
    let patients = leakage
        .patients
        .expect("the trainer ran: its cohort's patients");
    assert_eq!(
        leakage.per_patient,
        Some(TEST_TRAINER_BITS.div_ceil(patients))
    );
}

/// Issue 19 item 3: with a release precision and node noise in `[policy.outputs]`, the cap
/// applies to the bits the released tensors can carry then, and the DPO's review shows the
/// setting and those bits. 16 F32 parameters (512 bits declared): int8 leaves 16 × 8 + 32 (the
/// scale) = 160 bits, under a cap of 200; bf16 leaves 256, over it.
#[test]
fn the_bit_cap_and_the_review_count_the_precision_and_noise_the_node_applies() {
    use rapha_core::release::{NoiseK, ReleasePrecision, TensorDtype};
    use rapha_testkit::bundle::{sign_trainer, trainer_spec, SpecLimits};
    for (precision, k, admitted, released) in [
        (ReleasePrecision::Int8, 0.0, true, 160),
        (ReleasePrecision::Bf16, 0.0, false, 256),
        // ½·log2(1 + 1/0.25) = 1.16 bits × 16 + the RMS (32) = 50.6: 51.
        (ReleasePrecision::Bf16, 0.5, true, 51),
    ] {
        let Some(mut w) = world_with_policy(20, 14, |h| {
            h.outputs.max_release_bits = Some(200);
            h.outputs.release_precision = precision;
            h.outputs.release_noise_k = NoiseK::try_from(k).unwrap();
        }) else {
            return;
        };
        let tmp = w.tmp.path().to_path_buf();
        let mut spec = trainer_spec(
            crate::pipeline_e2e::PUBLISHER,
            crate::pipeline_e2e::TRAINER,
            &SpecLimits::SMALL,
        )
        .unwrap();
        spec.outputs[0].tensors[0].dtype = TensorDtype::F32;
        spec.outputs[0].tensors[0].shape = vec![16];
        let (dir, manifest) = sign_trainer(
            &tmp,
            "f32",
            &w.trainer,
            &["honest"],
            &spec,
            &w.publisher_key,
        )
        .unwrap();
        let job = w.submit_scoped(&dir, manifest);
        let case = format!("{precision:?} k={k}");
        if !admitted {
            assert_eq!(drive_to_end(&mut w, job), JobState::Settled, "{case}");
            let detail = ending_detail(&w, job);
            assert!(
                detail.starts_with(&format!(
                    "release-bits-over-cap: the outputs declare 16 parameters, {released} bits \
                     once released at precision bf16 with noise k = 0; this hospital releases \
                     at most 200 bits"
                )),
                "{case}: {detail}"
            );
            continue;
        }
        assert_eq!(
            w.node.run_until_blocked(job).unwrap(),
            JobState::AwaitingApproval,
            "{case}"
        );
        let review = w.node.review(job).unwrap().unwrap();
        let release = review.release.clone().unwrap();
        assert_eq!(
            (
                release.parameters,
                release.bits,
                release.max_bits,
                release.precision,
                release.noise_k,
                release.released_bits
            ),
            (
                16,
                512,
                Some(200),
                precision,
                NoiseK::try_from(k).unwrap(),
                Some(released)
            ),
            "{case}"
        );
        // The leakage bound counts the tensors at the bits they are released at.
        assert_eq!(release.bound.map(|b| b.tensors), Some(released), "{case}");
        let summary = rapha_node::approvals::summary(&review);
        assert!(
            summary.contains(&format!(
                "  released at:       precision {}, node noise k = {k} (σ = k × RMS per \
                 tensor): at most {released} bits (this hospital's cap: 200 bits)\n",
                precision.as_str()
            )),
            "{case}: {summary}"
        );
    }
}

/// Issue 19 item 3 end to end: the reference trainer's job (a small cohort, two epochs)
/// through the node with `release_precision = "bf16"` and noise k = 0.1. What leaves is the
/// node's file: every declared tensor in BF16 (half the bytes), no infinity or NaN, the
/// receipt's digest is of it, and the review records the setting and its bits. (That the
/// noise is the node's, of σ = k × RMS, and differs between releases is shown on the node's
/// release function in rapha-enclave's tests/precision.rs.)
#[test]
fn the_reference_trainer_s_weights_leave_in_bf16_with_node_noise() {
    use rapha_core::release::{NoiseK, ReleasePrecision};
    let Some(trainer) = crate::api_live::reference_trainer() else {
        return;
    };
    let Some(mut w) = world_with_policy(40, 5, |h| {
        h.outputs.release_precision = ReleasePrecision::Bf16;
        h.outputs.release_noise_k = NoiseK::try_from(0.1).unwrap();
    }) else {
        return;
    };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = crate::api_live::reference_bundle(&tmp, &trainer, 2, &w.publisher_key);
    let job = w.submit_scoped(&dir, manifest);
    assert_eq!(w.drive_within(job, 1200), JobState::Released);
    let model = std::fs::read(w.node.release_path(job).join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(model[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&model[8..8 + header_len]).unwrap();
    let tensors = rapha_testkit::bundle::reference_tensors();
    assert_eq!(header.as_object().unwrap().len(), tensors.len());
    let mut values = 0usize;
    for t in &tensors {
        assert_eq!(header[&t.name]["dtype"], "BF16", "{}", t.name);
        assert_eq!(header[&t.name]["shape"], serde_json::json!(t.shape));
        values += t.elements().unwrap() as usize;
    }
    // 5,953 parameters × 2 bytes after the header.
    assert_eq!(model.len(), 8 + header_len + 2 * values);
    let data = &model[8 + header_len..];
    assert!(data
        .chunks_exact(2)
        .all(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7f80 != 0x7f80));
    let receipt = w.node.receipt(job).unwrap().unwrap().body;
    let digest = rapha_core::Digest::of(&model).to_string();
    assert!(
        receipt.to_string().contains(&digest),
        "the receipt names the released file's digest {digest}: {receipt}"
    );
    let review = w.node.review(job).unwrap().unwrap().release.unwrap();
    assert_eq!(review.precision, ReleasePrecision::Bf16);
    // 5,953 × ½·log2(101) + 8 tensors' RMS × 32 bits, rounded up.
    let want = (5953.0 * 0.5 * 101f64.log2() + 8.0 * 32.0).ceil() as u64;
    assert_eq!(review.released_bits, Some(want));
}
