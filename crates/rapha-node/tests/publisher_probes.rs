//! A hostile publisher against the node's pipeline and API (issue 18, the publisher-side
//! review): what it chooses in a request (the validation split, a linkage group, a query wide
//! enough to make the cohort unstorable), what it reads back (cohort-step timing and codes,
//! API latency, admission digests) and how it could exhaust the node (stalled downloads, a job
//! whose step keeps failing). Against the real node: Orthanc + DICOMweb, swtpm, anvil, runc.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rapha_core::{CohortQuery, JobId, JobRequest, Outcome, Usdc};
use rapha_node::api::ApiState;
use rapha_node::pipeline::artifact;
use rapha_node::store::{JobState, JobStore};
use rapha_testkit::node_config::NodeConfig;
use reqwest::StatusCode;

use crate::api::{serve_state, tokens, ADMIN_TOKEN, DPO_TOKEN, PUBLISHER_TOKEN};
use crate::pipeline_e2e::{
    bundle, sandbox_ready, secret_file, world, world_with_policy, Chain, NodeFixture, World, FEE,
    PUBLISHER, TRAINER,
};

/// The code part of a job's reason.
fn code(reason: Option<&str>) -> &str {
    reason
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
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
fn a_validation_percent_outside_the_hospitals_range_is_refused_at_admission() {
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "split", "honest", &w.publisher_key);
    let mut failures = Vec::new();
    // 0 and 95 put the cohort-size threshold where the publisher wants it; 200 underflowed
    // `patients - validation` under the node lock (a panic in a debug build).
    for percent in [0u8, 95, 200] {
        let mut req = w.request(manifest, w.scoped_query());
        req.validation_percent = percent;
        let job = w.node.submit(&dir, req).unwrap();
        let driven = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.node.run_until_blocked(job)
        }));
        let Ok(Ok(end)) = driven else {
            failures.push(format!(
                "{percent}%: the node panicked or failed driving the job"
            ));
            continue;
        };
        let row = w.node.store().get(job).unwrap();
        let seen = states(&w, job);
        if end != JobState::Settled
            || row.outcome != Some(Outcome::Refused)
            || code(row.reason.as_deref()) != "validation-out-of-range"
            || seen.contains(&JobState::Admitted)
        {
            failures.push(format!(
                "{percent}%: ended {end} with {:?} ({:?}) through {seen:?}",
                row.outcome, row.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(w.pacs_calls(), 0, "a refused job reached the PACS");
    // The honest split within the range is admitted.
    let job = w.submit_scoped(&dir, manifest);
    assert_eq!(
        w.node.run_until_blocked(job).unwrap(),
        JobState::AwaitingApproval
    );
}

#[test]
fn a_cohort_over_the_instance_cap_is_refused_with_the_empty_cohort_code() {
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "wide", "honest", &w.publisher_key);
    // The cap below what the (admissible) query matches: the cohort would be kept whole in
    // memory and stored as one value, past what SQLite stores at the real sizes.
    w.node.rules_mut().max_cohort_instances = 10;
    let job = w.submit_scoped(&dir, manifest);
    assert_eq!(w.node.run_until_blocked(job).unwrap(), JobState::Settled);
    let row = w.node.store().get(job).unwrap();
    assert_eq!(row.outcome, Some(Outcome::Refused), "{:?}", row.reason);
    assert_eq!(code(row.reason.as_deref()), "cohort-empty");
    assert!(w
        .node
        .store()
        .artifact(job, artifact::COHORT)
        .unwrap()
        .is_none());
    // The hospital's record says why.
    let ending = w.node.ending(job).unwrap().unwrap();
    assert!(
        ending.detail.contains("more than 10 instances"),
        "{}",
        ending.detail
    );
}

/// A publisher's poll of a job's status: its view, or `None` when refused for its rate.
fn poll(s: &crate::api::Served, job: JobId, token: &str) -> Option<serde_json::Value> {
    let (st, text) = s.call("get", &format!("/v1/jobs/{job}"), Some(token), None);
    if st == StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    assert_eq!(st, StatusCode::OK, "{text}");
    Some(serde_json::from_str(&text).unwrap())
}

#[test]
fn two_probe_jobs_look_alike_to_the_publisher_in_states_codes_and_time() {
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "probe", "honest", &w.publisher_key);
    // A page allowance the existing study's build passes over (its series search is a second
    // QIDO-RS page): the build of a probe that exists ends on a budget, the build of one that
    // does not never gets that far. Before, the first ended `pacs-unavailable` (failed), the
    // second `cohort-empty` (refused).
    let mut dicom = rapha_dicom::DicomConfig::default();
    dicom.pacs.max_pages = 1;
    w.node.set_dicom(dicom);
    let quantum = Duration::from_secs(4);
    w.node.set_cohort_quantum(quantum);
    let node = std::mem::replace(&mut w.node, crate::api::node(&tmp.join("spare"), &w.chain));
    let s = serve_state(ApiState::new(node, tmp.join("jobs.sqlite"), tokens()));
    let (st, text) = s.upload(
        PUBLISHER_TOKEN,
        rapha_bundle::pack_bundle_to_vec(&dir).unwrap(),
    );
    assert_eq!(st, StatusCode::CREATED, "{text}");

    // Per probe: the publisher's view changes, with the time since it submitted.
    let mut seen = Vec::new();
    let mut jobs = Vec::new();
    for probe in [w.accessions[0].clone(), "NOSUCHACC0001".to_owned()] {
        let mut req = w.request(
            manifest,
            CohortQuery {
                limit: Some(1),
                accession_numbers: vec![probe],
                ..CohortQuery::default()
            },
        );
        req.validation_percent = 50;
        let job = req.job_id;
        let body = serde_json::to_vec(&serde_json::json!({ "request": req })).unwrap();
        let start = Instant::now();
        let (st, text) = s.call("post", "/v1/jobs", Some(PUBLISHER_TOKEN), Some(&body));
        assert_eq!(st, StatusCode::ACCEPTED, "{text}");
        let mut changes: Vec<(serde_json::Value, Duration)> = Vec::new();
        while start.elapsed() < Duration::from_secs(30) {
            if let Some(v) = poll(&s, job, PUBLISHER_TOKEN) {
                let view = serde_json::json!({
                    "state": v["state"], "outcome": v["outcome"], "reason": v["reason"],
                    "progress": v["progress"], "records": v["records"], "run": v["run"],
                });
                if changes.last().map(|(l, _)| l) != Some(&view) {
                    changes.push((view, start.elapsed()));
                }
                if v["finished"] == true {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        seen.push(changes);
        jobs.push(job);
    }
    // What each probe showed the publisher: the codes in the order they appeared and when each
    // appeared, in whole quanta since submission. The steps before admission (the bundle's
    // check) are quick and the same for any query; a poll may or may not catch them.
    let shown = |i: usize| {
        let mut out: Vec<(serde_json::Value, u64)> = Vec::new();
        for (v, t) in &seen[i] {
            let state = v["state"].as_str().unwrap_or_default();
            assert!(
                !["cohort-built", "awaiting-approval"].contains(&state),
                "the publisher sees the cohort step's own state: {v}"
            );
            if v["outcome"].is_null() {
                assert!(
                    ["received", "bundle-verified", "admitted"].contains(&state),
                    "{v}"
                );
            }
            let codes = serde_json::json!([v["outcome"], v["reason"]]);
            if out.last().map(|(c, _)| c) != Some(&codes) {
                let quanta = (t.as_secs_f64() / quantum.as_secs_f64()).round() as u64;
                out.push((codes, quanta));
            }
        }
        out
    };
    assert_eq!(
        shown(0),
        shown(1),
        "the publisher tells an existing accession from a missing one: {seen:#?}"
    );
    assert_eq!(shown(0).len(), 2, "{seen:#?}");
    // The hospital's roles see what happened.
    let details: Vec<String> = jobs
        .iter()
        .map(|job| {
            let v = poll(&s, *job, DPO_TOKEN).unwrap();
            v["detail"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert!(details[0].contains("cohort query failed"), "{details:?}");
    assert_ne!(details[0], details[1]);
    drop(s);
}

/// `rapha-node serve` started from a configuration file under `t` (the fixture's node, with
/// `api_extra` added to its `[api]` table), and its port.
pub fn spawn_serve(
    t: &Path,
    fixture: &NodeFixture,
    chain: &Chain,
    tokens: &str,
    api_extra: &str,
) -> (std::process::Child, u16) {
    secret_file(&t.join("tokens"), tokens.as_bytes());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = format!(
        "[settlement]\nsettler_key_file = \"settler.key\"\nhospital_address = \"{}\"\n\
         payout_address = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\ntokens_file = \"tokens\"\n{api_extra}",
        chain.hospital, chain.payout
    );
    let config = t.join("node.toml");
    let toml = NodeConfig {
        extra,
        data_dir: t.join("data"),
        state_dir: t.join("state"),
        ..fixture.config(chain)
    }
    .to_toml();
    std::fs::write(&config, toml).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rapha-node"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(t.join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    (child, port)
}

/// Waits until the node on `port` answers `/healthz`; false if it exited or never did.
pub fn wait_healthy(child: &mut std::process::Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz"))
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// A job request of the fixture's publisher over its cohort.
fn fixture_request(fixture: &NodeFixture, chain: &Chain) -> JobRequest {
    JobRequest {
        job_id: JobId::random(),
        publisher: PUBLISHER.into(),
        trainer: TRAINER.into(),
        bundle_manifest: fixture.manifest,
        query: CohortQuery {
            limit: Some(fixture.accessions.len() as u32),
            accession_numbers: fixture.accessions.clone(),
            ..CohortQuery::default()
        },
        requested_fields: vec![],
        validation_percent: 20,
        fee: Usdc::from_base_units(FEE),
        chain_id: 137,
        depositor: chain.company.address().to_string(),
        linkage: None,
    }
}

#[test]
fn a_job_whose_step_keeps_failing_does_not_stop_serve_from_starting() {
    let Some(trainer) = sandbox_ready() else {
        return;
    };
    let Some(orthanc) = rapha_testkit::require!(rapha_testkit::services::Orthanc::start()) else {
        return;
    };
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fixture = NodeFixture::new(t, &orthanc, &chain, &trainer, 41);
    // A job whose next step fails on the node's side every time (the review step finds no
    // cohort summary), as a cohort artifact SQLite refused to store made the cohort step fail.
    std::fs::create_dir_all(t.join("state")).unwrap();
    let request = fixture_request(&fixture, &chain);
    let job = request.job_id;
    {
        let mut store = JobStore::open(&t.join("state/jobs.sqlite")).unwrap();
        store.insert(&request).unwrap();
        for (from, to) in [
            (JobState::Received, JobState::BundleVerified),
            (JobState::BundleVerified, JobState::Admitted),
        ] {
            store.advance(job, from, to, &[], None).unwrap();
        }
        store
            .advance(job, JobState::Admitted, JobState::CohortBuilt, &[], None)
            .unwrap();
    }
    let (mut child, port) = spawn_serve(t, &fixture, &chain, &format!("admin {ADMIN_TOKEN}\n"), "");
    let healthy = wait_healthy(&mut child, port);
    // The job's step is retried with a back-off and, after a bounded number of attempts, the
    // job ends failed (refunded): it neither stops the node nor loops for ever.
    let mut ended = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while healthy && Instant::now() < deadline {
        let store = rapha_node::store::JobReader::open(&t.join("state/jobs.sqlite")).unwrap();
        let row = store.get(job).unwrap();
        if row.state == JobState::Settled {
            ended = Some(row);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(t.join("serve.log")).unwrap_or_default();
    assert!(healthy, "serve did not start: {stderr}");
    let row = ended.unwrap_or_else(|| panic!("the failing job did not end: {stderr}"));
    assert_eq!(row.outcome, Some(Outcome::Failed));
    assert_eq!(code(row.reason.as_deref()), "node-error");
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn stalled_downloads_of_a_large_output_keep_the_nodes_memory_bounded() {
    let Some(trainer) = sandbox_ready() else {
        return;
    };
    let Some(orthanc) = rapha_testkit::require!(rapha_testkit::services::Orthanc::start()) else {
        return;
    };
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fixture = NodeFixture::new(t, &orthanc, &chain, &trainer, 43);
    // A finished job of the publisher with one large released file (an output declared at the
    // hospital's max_file_bytes).
    std::fs::create_dir_all(t.join("state")).unwrap();
    let request = fixture_request(&fixture, &chain);
    let job = request.job_id;
    {
        let mut store = JobStore::open(&t.join("state/jobs.sqlite")).unwrap();
        store.insert(&request).unwrap();
        store
            .advance(
                job,
                JobState::Received,
                JobState::Failed,
                &[],
                Some((Outcome::Failed, "node-error")),
            )
            .unwrap();
        for (from, to) in [
            (JobState::Failed, JobState::Receipted),
            (JobState::Receipted, JobState::Settled),
        ] {
            store.advance(job, from, to, &[], None).unwrap();
        }
    }
    const FILE: usize = 64 << 20;
    let released = t.join("data/released").join(job.to_string());
    std::fs::create_dir_all(&released).unwrap();
    let content: Vec<u8> = (0..FILE).map(|i| (i % 251) as u8).collect();
    std::fs::write(released.join("weights.bin"), &content).unwrap();
    let (mut child, port) = spawn_serve(
        t,
        &fixture,
        &chain,
        &format!("publisher {PUBLISHER_TOKEN} {PUBLISHER}\nadmin {ADMIN_TOKEN}\n"),
        "max_downloads_per_caller = 2\ndownload_timeout_secs = 600\ndownload_stall_secs = 4\n",
    );
    assert!(
        wait_healthy(&mut child, port),
        "serve did not start: {}",
        std::fs::read_to_string(t.join("serve.log")).unwrap_or_default()
    );
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(1));
    let before = rss(pid);

    // The attack: many downloads of the large file whose client never reads a byte.
    const STALLED: usize = 24;
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        use std::io::Write as _;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            c,
            "GET /v1/jobs/{job}/outputs/weights.bin HTTP/1.1\r\nHost: node\r\n\
             Authorization: Bearer {PUBLISHER_TOKEN}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        stalled.push(c);
    }
    std::thread::sleep(Duration::from_secs(3));
    let during = rss(pid);
    let grown = during.saturating_sub(before);
    eprintln!(
        "node RSS: {} MiB before, {} MiB with {STALLED} stalled downloads of {} MiB",
        before >> 20,
        during >> 20,
        FILE >> 20
    );
    if grown >= 48 << 20 {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{STALLED} stalled downloads grew the node by {} MiB",
            grown >> 20
        );
    }

    // A stalled download is cut off once its client has left it unread for the stall time:
    // what the client then reads is short of the file and ends.
    std::thread::sleep(Duration::from_secs(4));
    let mut cut = 0;
    let mut refused = 0;
    for mut c in stalled {
        use std::io::Read as _;
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let ended = c.read_to_end(&mut got);
        let head = String::from_utf8_lossy(&got[..got.len().min(200)]).into_owned();
        if head.starts_with("HTTP/1.1 429") && head.contains("too-many-downloads") {
            refused += 1;
        } else if head.starts_with("HTTP/1.1 200") && got.len() < FILE && ended.is_ok_or_reset() {
            cut += 1;
        } else {
            panic!(
                "a stalled download ended {ended:?} after {} bytes: {head}",
                got.len()
            );
        }
    }
    // The node is still there, and an honest download gets the whole file.
    let client = reqwest::blocking::Client::new();
    let resp = client
        .get(format!(
            "http://127.0.0.1:{port}/v1/jobs/{job}/outputs/weights.bin"
        ))
        .bearer_auth(PUBLISHER_TOKEN)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.bytes().unwrap();
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(alive);
    assert_eq!((cut, refused), (2, STALLED - 2));
    assert!(body[..] == content[..], "the honest download differs");
}

/// How a stalled download's connection may end once the node cuts it off.
trait EndedOrReset {
    fn is_ok_or_reset(&self) -> bool;
}

impl EndedOrReset for std::io::Result<usize> {
    fn is_ok_or_reset(&self) -> bool {
        match self {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn a_publisher_polling_faster_than_its_rate_gets_429_and_the_hospitals_roles_do_not() {
    let Some(w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let limit = rapha_node::api::RateLimit {
        per_sec: 2,
        burst: 5,
    };
    let node = crate::api::node(&tmp.join("rate"), &w.chain);
    let s = serve_state(
        ApiState::new(node, tmp.join("rate/jobs.sqlite"), tokens()).with_publisher_rate(limit),
    );
    let job = JobId::random();
    // The attack: status polls as fast as the node answers, to sample its latency.
    let get = |token: &str| {
        s.http
            .get(format!("{}/v1/jobs/{job}", s.base))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    let mut answered = 0;
    let mut limited = Vec::new();
    for _ in 0..40 {
        let r = get(PUBLISHER_TOKEN);
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body: serde_json::Value = r.json().unwrap();
            limited.push((after, body["error"].clone()));
        } else {
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
            answered += 1;
        }
    }
    assert!(
        !limited.is_empty(),
        "40 polls in a burst were all answered: the publisher samples the node's latency at will"
    );
    assert!(
        answered <= 5 + 2,
        "{answered} of 40 polls answered at a limit of 5 a burst"
    );
    for (after, error) in &limited {
        assert_eq!(error, "rate-limited");
        assert!(matches!(after, Some(1..=2)), "Retry-After {after:?}");
    }
    // The hospital's roles are not limited.
    for token in [DPO_TOKEN, ADMIN_TOKEN] {
        for _ in 0..40 {
            assert_eq!(get(token).status(), StatusCode::NOT_FOUND);
        }
    }
    // After the wait, the publisher is answered again.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(get(PUBLISHER_TOKEN).status(), StatusCode::NOT_FOUND);
}

#[test]
fn a_linkage_group_job_whose_query_differs_from_the_groups_is_refused_at_admission() {
    let Some(mut w) = world_with_policy(20, 13, |h| {
        h.linkage_publishers = vec![PUBLISHER.to_owned()];
    }) else {
        return;
    };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "differ", "honest", &w.publisher_key);
    let group = rapha_core::LinkageGroup::new("fed-run-7").unwrap();
    let linked = |w: &World, query: CohortQuery| {
        let mut req = w.request(manifest, query);
        req.linkage = Some(group.clone());
        req
    };
    // J1 lists every accession; J2, of the same group, all but one: the difference between
    // their (joined) records is that one accession's patient.
    let j1 = w.node.submit(&dir, linked(&w, w.scoped_query())).unwrap();
    assert_eq!(
        w.node.run_until_blocked(j1).unwrap(),
        JobState::AwaitingApproval
    );
    let mut shorter = w.scoped_query();
    shorter.accession_numbers.pop();
    shorter.limit = Some(shorter.accession_numbers.len() as u32);
    let calls = w.pacs_calls();
    let j2 = w.node.submit(&dir, linked(&w, shorter)).unwrap();
    assert_eq!(w.node.run_until_blocked(j2).unwrap(), JobState::Settled);
    let row = w.node.store().get(j2).unwrap();
    assert_eq!(row.outcome, Some(Outcome::Refused), "{:?}", row.reason);
    assert_eq!(code(row.reason.as_deref()), "admission-refused");
    assert!(!states(&w, j2).contains(&JobState::Admitted));
    assert_eq!(w.pacs_calls(), calls, "the refused job reached the PACS");
    let ending = w.node.ending(j2).unwrap().unwrap();
    assert!(
        ending.detail.contains("fed-run-7") && ending.detail.contains(&j1.to_string()),
        "{}",
        ending.detail
    );
    // J3 asks the group's query: admitted, and the DPO's review shows it beside J1.
    let j3 = w.node.submit(&dir, linked(&w, w.scoped_query())).unwrap();
    assert_eq!(
        w.node.run_until_blocked(j3).unwrap(),
        JobState::AwaitingApproval
    );
    let review = w.node.review(j3).unwrap().unwrap();
    let earlier: Vec<(JobId, bool)> = review
        .linkage_jobs
        .iter()
        .map(|l| (l.job_id, l.same_query))
        .collect();
    assert_eq!(earlier, vec![(j1, true)], "{:?}", review.linkage_jobs);
    // J1's review shows the group's other admitted job too; the refused J2 is no member.
    let others: Vec<JobId> = w
        .node
        .review(j1)
        .unwrap()
        .unwrap()
        .linkage_jobs
        .iter()
        .map(|l| l.job_id)
        .collect();
    assert_eq!(others, vec![j3]);
}

#[test]
fn an_admission_digest_does_not_commit_to_a_cohort_size_the_publisher_never_saw() {
    let mut hospital = None;
    let Some(mut w) = world_with_policy(20, 14, |h| hospital = Some(h.clone())) else {
        return;
    };
    let hospital = hospital.unwrap();
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "sizes", "honest", &w.publisher_key);
    // J1's cohort is built, reviewed and never started: the publisher is shown no figure of it.
    let req1 = w.request(manifest, w.scoped_query());
    let j1 = w.node.submit(&dir, req1.clone()).unwrap();
    assert_eq!(
        w.node.run_until_blocked(j1).unwrap(),
        JobState::AwaitingApproval
    );
    let hidden = w.node.review(j1).unwrap().unwrap().cohort.patients;
    let req2 = w.request(manifest, w.scoped_query());
    let j2 = w.node.submit(&dir, req2.clone()).unwrap();
    w.node.run_until_blocked(j2).unwrap();
    // J2's admission decision digest (it is in J2's receipt).
    let decision: rapha_policy::Decision = serde_json::from_slice(
        &w.node
            .store()
            .artifact(j2, artifact::ADMISSION)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let admitted_at = |job: JobId| {
        w.node
            .store()
            .transitions(job)
            .unwrap()
            .iter()
            .find(|t| t.to == JobState::Admitted)
            .map(|t| t.at)
            .unwrap()
    };
    // The attack: everything else in the digested input is the publisher's own or bracketed
    // from polling (the policy and data.hospital guessed); enumerate J1's cohort size.
    let vb = rapha_bundle::verify_bundle(&dir, w.node.trust()).unwrap();
    let policy = rapha_policy::Policy::builtin().unwrap();
    let t1 = admitted_at(j1);
    let t2 = admitted_at(j2);
    let mut matched = Vec::new();
    for patients in std::iter::once(None).chain((0..=200).map(Some)) {
        for now in t2.saturating_sub(2)..=t2 + 2 {
            let past = rapha_policy::PastJob {
                admitted_at: t1,
                outcome: None,
                patients,
                query_digest: req1.query.digest(),
            };
            let input = rapha_policy::AdmissionInput::new(
                &req2,
                rapha_policy::Declared {
                    outputs: vb.outputs(),
                    resources: vb.resources(),
                },
                now,
                vec![past],
            )
            .unwrap();
            if policy.admission(&input, &hospital).unwrap().digest == decision.digest {
                matched.push(patients);
            }
        }
    }
    assert!(
        !matched.is_empty(),
        "the enumeration never matched: the test lost its model"
    );
    assert_eq!(
        matched,
        vec![None],
        "the publisher recovers J1's hidden cohort size ({hidden}) from J2's admission digest"
    );
}
