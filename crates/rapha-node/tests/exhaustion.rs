//! Issue 18, item 7, from the attacker's side: an authenticated publisher (or its trainer) tries
//! to exhaust the node's disk or to hold the node so that nobody else is served. Against the
//! real components (Orthanc + DICOMweb, swtpm, anvil, runc).

use std::path::Path;
use std::time::{Duration, Instant};

use rapha_node::api::ApiState;
use rapha_node::store::JobState;
use reqwest::StatusCode;

use crate::api::{error_code, serve_state, tokens, DPO_TOKEN, PUBLISHER_TOKEN};
use crate::pipeline_e2e::{bundle, bundle_args, world};
use crate::publisher_channels::{approve, get_json, publisher_trainer, submit, wait_status, Dpo};

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                total += disk_bytes(&e.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

#[test]
fn a_publisher_submitting_jobs_in_a_loop_hits_its_quota() {
    let Some(w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "loop", "honest", &w.publisher_key);
    let requests: Vec<_> = (0..8)
        .map(|_| w.request(manifest, w.scoped_query()))
        .collect();
    let node = w.node;
    let s = serve_state(ApiState::new(node, tmp.join("jobs.sqlite"), tokens()));
    let mut answers = Vec::new();
    for r in &requests {
        let (st, text) = submit(&s, &dir, r);
        answers.push((st, text));
    }
    let accepted = answers
        .iter()
        .filter(|(st, _)| *st == StatusCode::ACCEPTED)
        .count();
    assert_eq!(
        accepted,
        4, // the default quota of jobs in flight per publisher
        "one publisher kept {accepted} of 8 jobs in flight: {answers:?}"
    );
    for (st, text) in &answers[accepted..] {
        assert_eq!(
            (*st, error_code(text).as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "quota-exceeded"),
            "{text}"
        );
    }
    // Nothing of the refused submissions was stored: no job row, no working directory.
    let jobs = std::fs::read_dir(tmp.join("work/jobs")).unwrap().count();
    assert_eq!(jobs, accepted, "working directories of refused submissions");
    for r in &requests[accepted..] {
        let (st, _) = s.call(
            "get",
            &format!("/v1/jobs/{}", r.job_id),
            Some(PUBLISHER_TOKEN),
            None,
        );
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
}

#[test]
fn the_nodes_working_data_returns_to_its_baseline_after_jobs_finish() {
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (ok_dir, ok_manifest) = bundle(&tmp, &w.trainer, "gc-ok", "honest", &w.publisher_key);
    let (bad_dir, bad_manifest) =
        bundle(&tmp, &w.trainer, "gc-bad", "pixel-copy", &w.publisher_key);
    let work = tmp.join("work");
    let baseline = disk_bytes(&work);
    let mut seen = Vec::new();
    // A completed job, a refused one (broad query) and a failed one (the trainer's outputs
    // refused): each leaves its bundle link, rootfs and staged outputs behind today.
    let broad = w.request(
        ok_manifest,
        rapha_core::CohortQuery {
            modalities: vec!["CT".into()],
            ..rapha_core::CohortQuery::default()
        },
    );
    let id = w.node.submit(&ok_dir, broad).unwrap();
    assert_eq!(w.node.run_until_blocked(id).unwrap(), JobState::Settled);
    seen.push(disk_bytes(&work));
    let ok = w.request(ok_manifest, w.scoped_query());
    let id = w.node.submit(&ok_dir, ok).unwrap();
    assert_eq!(w.drive(id), JobState::Released);
    seen.push(disk_bytes(&work));
    assert!(w.node.release_path(id).join("model.safetensors").is_file());
    let bad = w.request(bad_manifest, w.scoped_query());
    let id = w.node.submit(&bad_dir, bad).unwrap();
    // Violated: charged by escrow v2, settled.
    assert_eq!(w.drive(id), JobState::Settled);
    seen.push(disk_bytes(&work));
    assert!(
        seen.iter().all(|b| *b == baseline),
        "working data after each finished job: {seen:?} bytes, baseline {baseline}"
    );
    // Receipts, the receipt log and the audit trail are kept.
    assert!(w.node.receipt(id).unwrap().is_some());
    assert!(std::fs::metadata(w.node.audit_path()).unwrap().len() > 0);
}

#[test]
fn while_a_trainer_runs_another_jobs_approval_status_and_rejection_answer_promptly() {
    let Some(trainer) = publisher_trainer() else {
        return;
    };
    let Some(w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (slow_dir, slow) = bundle_args(&tmp, &trainer, "slow", &["sleep", "40"], &w.publisher_key);
    let (dir, manifest) = bundle(&tmp, &w.trainer, "quick", "honest", &w.publisher_key);
    let a = w.request(slow, w.scoped_query());
    let b = w.request(manifest, w.scoped_query());
    let c = w.request(manifest, w.scoped_query());
    let dpo = Dpo(&w.dpo);
    let node = w.node;
    let s = serve_state(ApiState::new(node, tmp.join("jobs.sqlite"), tokens()));
    for (d, r) in [(&slow_dir, &a), (&dir, &b), (&dir, &c)] {
        let (st, text) = submit(&s, d, r);
        assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    }
    for r in [&b, &c] {
        crate::api::wait_pending(&s, &r.job_id.to_string(), 120);
    }
    let a_id = a.job_id.to_string();
    approve(&s, &dpo, &a_id);
    wait_status(&s, &a_id, 60, |v| v["state"] == "awaiting-deposit");
    w.chain.deposit(&a.job_id);
    wait_status(&s, &a_id, 120, |v| v["state"] == "running");
    std::thread::sleep(Duration::from_secs(3));

    // The trainer sleeps for 40 s. Meanwhile: job B's status (still waiting for its DPO: read
    // before the approval, which the driver may act on at once), its approval, job C's rejection.
    let t = Instant::now();
    let status = get_json(&s, &format!("/v1/jobs/{}", b.job_id), PUBLISHER_TOKEN);
    let status_took = t.elapsed();
    let t = Instant::now();
    approve(&s, &dpo, &b.job_id.to_string());
    let approve_took = t.elapsed();
    let t = Instant::now();
    let (st, text) = s.call(
        "post",
        &format!("/v1/jobs/{}/reject", c.job_id),
        Some(DPO_TOKEN),
        Some(br#"{"reason":"not this quarter"}"#),
    );
    let reject_took = t.elapsed();
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    // B moves on to its deposit while A's trainer still runs.
    let b_state = wait_status(&s, &b.job_id.to_string(), 10, |v| {
        v["state"] == "awaiting-deposit"
    });
    eprintln!(
        "FIGURES while another job's trainer ran: approval {approve_took:?}, status \
         {status_took:?}, rejection {reject_took:?}"
    );
    let a_now = get_json(&s, &format!("/v1/jobs/{a_id}"), PUBLISHER_TOKEN);
    assert_eq!(
        a_now["state"], "running",
        "A ended before the calls: {a_now}"
    );
    // What the publisher sees of a running trainer: state and whole minutes, no feed counts.
    assert_eq!(a_now["run"]["elapsed_minutes"], 0, "{a_now}");
    assert!(a_now["run"].get("elapsed_secs").is_none(), "{a_now}");
    assert!(
        a_now["run"].get("distinct_records_fed").is_none(),
        "{a_now}"
    );
    assert!(a_now["records"].get("fed").is_none(), "{a_now}");
    for (what, took) in [
        ("approval", approve_took),
        ("status", status_took),
        ("rejection", reject_took),
    ] {
        assert!(
            took < Duration::from_secs(3),
            "{what} took {took:?} while another job's trainer ran"
        );
    }
    // The publisher's view of a job waiting for its DPO.
    assert_eq!(status["state"], "admitted", "{status}");
    assert_eq!(b_state["state"], "awaiting-deposit");
}

#[test]
fn a_publisher_uploading_bundles_in_a_loop_hits_its_storage_quota() {
    let Some(chain) = crate::pipeline_e2e::Chain::start() else {
        return;
    };
    let Some(trainer) = crate::pipeline_e2e::trainer_binary() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let key = crate::api::publisher_key();
    let bundles: Vec<_> = (0..3)
        .map(|i| {
            let (dir, _) = bundle(
                tmp.path(),
                &trainer,
                &format!("b{i}"),
                &format!("m{i}"),
                &key,
            );
            rapha_bundle::pack_bundle_to_vec(&dir).unwrap()
        })
        .collect();
    // Room for two of these bundles, not three.
    let one = bundles[0].len() as u64;
    let quotas = rapha_node::api::Quotas {
        max_jobs_in_flight: 4,
        max_bundle_bytes: 2 * one + one / 2,
    };
    let state = ApiState::new(
        crate::api::node(tmp.path(), &chain),
        tmp.path().join("jobs.sqlite"),
        tokens(),
    )
    .with_quotas(quotas);
    let stored = state.bundle_dir().to_owned();
    let s = serve_state(state);
    for b in &bundles[..2] {
        let (st, text) = s.upload(PUBLISHER_TOKEN, b.clone());
        assert_eq!(st, StatusCode::CREATED, "{text}");
    }
    let before = disk_bytes(&stored);
    let (st, text) = s.upload(PUBLISHER_TOKEN, bundles[2].clone());
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "quota-exceeded"),
        "{text}"
    );
    assert_eq!(
        disk_bytes(&stored),
        before,
        "the refused upload left bytes behind"
    );
}

#[test]
fn a_runs_end_is_committed_on_a_whole_quantum_after_its_start() {
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "quantum", "honest", &w.publisher_key);
    w.node.set_run_quantum(Duration::from_secs(7));
    let job = w.submit_scoped(&dir, manifest);
    assert_eq!(w.drive(job), JobState::Released);
    let t = w.node.store().transitions(job).unwrap();
    let at = |s: JobState| t.iter().find(|x| x.to == s).unwrap().at;
    let ran = at(JobState::OutputsGuarded) - at(JobState::Running);
    // The test trainer exits within a second or two: its end waits for the first quantum.
    // (Transition times are whole seconds, so one second either way.)
    assert!(
        (6..=9).contains(&ran),
        "the run's end came {ran} s after its start"
    );
}

/// Review F1: a run the node had to abandon (or a node killed mid-run) leaves the trainer's
/// `/out` tmpfs mounted under the node's run directory. The next start-up clean-up unmounts it
/// before it removes the directory: the node starts, instead of stopping on EBUSY until
/// someone unmounts it by hand.
#[test]
fn a_leftover_out_tmpfs_of_a_dead_run_does_not_stop_the_node_starting() {
    let Some(mut w) = world() else { return };
    let out = w.tmp.path().join("work/run/rapha-job-dead01/out");
    std::fs::create_dir_all(&out).unwrap();
    /// Detaches the mount if the node left it (the test failed).
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(ok.success());
    let _unmount = Unmount(out.clone());
    std::fs::write(out.join("model.safetensors"), b"left by a dead run").unwrap();

    let resumed = w.node.resume_all();
    assert!(resumed.is_ok(), "start-up failed: {resumed:?}");
    assert!(!out.exists(), "the dead run's directory is left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(out.to_str().unwrap()),
        "the dead run's /out is still mounted"
    );
}
