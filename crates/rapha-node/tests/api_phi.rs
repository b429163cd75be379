//! Criterion 6 for the API: a job driven entirely through the HTTP API against the real
//! components (Orthanc + DICOMweb with the synthetic cohort, swtpm, anvil, runc, the static
//! test trainer) completes, and no planted PHI value from the cohort manifest occurs in any
//! byte the API answered with: upload, submit, status, the DPO's pending review with its
//! cohort summary, the approval, the receipt, the outputs list, every released file, the log
//! head and proofs, and /metrics. A control shows the same search finds the values where they
//! are (the cohort's DICOM files) and in a response that had one.

use rapha_core::Digest;
use rapha_node::api::ApiState;
use reqwest::StatusCode;

use crate::api::{serve_state, tokens, Served, ADMIN_TOKEN, DPO_TOKEN, PUBLISHER_TOKEN};
use crate::pipeline_e2e::{all_files, bundle, phi_in, world};

/// Polls the job's status (as the publisher) until `want`; returns the last answer's bytes.
fn wait_for(s: &Served, job: &str, want: &str, seconds: u64) -> Vec<u8> {
    let mut last = Vec::new();
    for _ in 0..seconds * 4 {
        let (st, text) = s.call(
            "get",
            &format!("/v1/jobs/{job}"),
            Some(PUBLISHER_TOKEN),
            None,
        );
        assert_eq!(st, StatusCode::OK, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        last = text.into_bytes();
        if v["state"] == want {
            return last;
        }
        assert_ne!(v["finished"], true, "finished before {want}: {v}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!(
        "job {job} did not reach {want}: {}",
        String::from_utf8_lossy(&last)
    );
}

#[test]
fn no_planted_phi_value_in_any_api_response_for_a_completed_job() {
    let Some(w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (bundle_dir, manifest) = bundle(&tmp, &w.trainer, "phi", "honest", &w.publisher_key);
    let request = w.request(manifest, w.scoped_query());
    let job = request.job_id.to_string();
    let phi = w.manifest.phi.clone();
    assert!(phi.iter().any(|p| p.len() >= 4), "the cohort plants PHI");

    // Control: the search finds planted values where they are, in the cohort the PACS serves.
    let in_cohort: usize = all_files(&tmp.join("cohort/dicom"))
        .iter()
        .map(|f| phi_in(&phi, &std::fs::read(f).unwrap()).len())
        .sum();
    assert!(in_cohort > 0, "the PHI search finds nothing in the cohort");

    let node = w.node;
    let s = serve_state(ApiState::new(node, tmp.join("jobs.sqlite"), tokens()));
    let mut answers: Vec<(String, Vec<u8>)> = Vec::new();

    let (st, text) = s.upload(
        PUBLISHER_TOKEN,
        rapha_bundle::pack_bundle_to_vec(&bundle_dir).unwrap(),
    );
    assert_eq!(st, StatusCode::CREATED, "{text}");
    answers.push(("upload".into(), text.into_bytes()));
    let body = serde_json::to_vec(&serde_json::json!({ "request": request })).unwrap();
    let (st, text) = s.call("post", "/v1/jobs", Some(PUBLISHER_TOKEN), Some(&body));
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    answers.push(("submit".into(), text.into_bytes()));

    answers.push(("status awaiting approval".into(), {
        // The publisher sees the job `admitted` until the DPO decides.
        crate::api::wait_pending(&s, &job, 120);
        wait_for(&s, &job, "admitted", 10)
    }));
    let (st, text) = s.call("get", "/v1/approvals/pending", Some(DPO_TOKEN), None);
    assert_eq!(st, StatusCode::OK, "{text}");
    let pending: serde_json::Value = serde_json::from_str(&text).unwrap();
    let review = &pending["pending"][0];
    assert_eq!(review["job_id"], job.as_str(), "{pending}");
    assert!(
        review["cohort"]["instances"].as_u64().unwrap() > 0,
        "{pending}"
    );
    let digest: Digest = review["job_digest"].as_str().unwrap().parse().unwrap();
    let pending_bytes = text.into_bytes();
    answers.push(("pending approvals".into(), pending_bytes.clone()));

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let approval = w.dpo.approve(digest, now, now + 3600).unwrap();
    let (st, text) = s.call(
        "post",
        &format!("/v1/jobs/{job}/approve"),
        Some(DPO_TOKEN),
        Some(&serde_json::to_vec(&approval).unwrap()),
    );
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    answers.push(("approve".into(), text.into_bytes()));

    answers.push((
        "status awaiting deposit".into(),
        wait_for(&s, &job, "awaiting-deposit", 60),
    ));
    // The deposit confirms on the chain; nothing calls the API: the node's own re-drive
    // notices it and runs the job to the end.
    w.chain.deposit(&request.job_id);
    let done = wait_for(&s, &job, "released", 240);
    let status: serde_json::Value = serde_json::from_slice(&done).unwrap();
    assert_eq!(status["outcome"], "completed", "{status}");
    let cohort = status["records"]["cohort"].as_u64().unwrap();
    // The publisher is shown no feed count (issue 18); the hospital's view has it.
    assert!(status["records"].get("fed").is_none(), "{status}");
    let (st, admin) = s.call("get", &format!("/v1/jobs/{job}"), Some(ADMIN_TOKEN), None);
    assert_eq!(st, StatusCode::OK, "{admin}");
    let admin: serde_json::Value = serde_json::from_str(&admin).unwrap();
    let fed = admin["records"]["fed"].as_u64().unwrap();
    assert!(cohort > 0 && fed > 0 && fed <= cohort, "{admin}");
    answers.push(("status released".into(), done));

    let mut get = |what: &str, path: &str, token: &str| {
        let (st, bytes) = s.get_bytes(path, token);
        assert_eq!(
            st,
            StatusCode::OK,
            "{what}: {}",
            String::from_utf8_lossy(&bytes)
        );
        answers.push((what.to_owned(), bytes.clone()));
        bytes
    };
    get(
        "receipt",
        &format!("/v1/jobs/{job}/receipt"),
        PUBLISHER_TOKEN,
    );
    let listing = get(
        "outputs",
        &format!("/v1/jobs/{job}/outputs"),
        PUBLISHER_TOKEN,
    );
    let listing: serde_json::Value = serde_json::from_slice(&listing).unwrap();
    let mut names: Vec<String> = listing["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["metrics.json", "model.safetensors", "receipt.json"]);
    for name in &names {
        get(
            name,
            &format!("/v1/jobs/{job}/outputs/{name}"),
            PUBLISHER_TOKEN,
        );
    }
    let head = get("log head", "/v1/log/head", PUBLISHER_TOKEN);
    let size = serde_json::from_slice::<serde_json::Value>(&head).unwrap()["tree_size"]
        .as_u64()
        .unwrap();
    assert!(size >= 1);
    get(
        "inclusion proof",
        &format!("/v1/log/inclusion?index={}&size={size}", size - 1),
        PUBLISHER_TOKEN,
    );
    get(
        "consistency proof",
        &format!("/v1/log/consistency?old=1&new={size}"),
        PUBLISHER_TOKEN,
    );
    let metrics = get("metrics", "/metrics", ADMIN_TOKEN);
    assert!(String::from_utf8_lossy(&metrics).contains("rapha_jobs{state=\"released\"} 1"));

    for (what, bytes) in &answers {
        let found = phi_in(&phi, bytes);
        assert!(
            found.is_empty(),
            "PHI {found:?} in the API's {what} response"
        );
    }
    // Control: had a response carried a planted value, the same check would have caught it.
    let planted = phi.iter().find(|p| p.len() >= 4).unwrap();
    let mut leaky = pending_bytes;
    leaky.extend_from_slice(planted.as_bytes());
    assert!(phi_in(&phi, &leaky).contains(planted));
    drop(s);
}
