//! Issue 18, item 1, from the publisher's side: a hostile trainer tries to carry data out
//! through what the node shows its publisher about a refused job (status, receipt), or to use
//! the guard's refusal as an identifier oracle. Driven through the HTTP API of a node over the
//! real components (Orthanc + DICOMweb, swtpm, anvil, runc), with the trainer of
//! `publisher_trainer.c`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rapha_core::{Digest, JobRequest};
use rapha_node::api::ApiState;
use reqwest::StatusCode;

use crate::api::{error_code, serve_state, tokens, Served, DPO_TOKEN, PUBLISHER_TOKEN};
use crate::pipeline_e2e::{bundle_args, world, Chain, FEE, PUBLISHER};

/// `publisher_trainer.c`, compiled once (static, for the trainer's empty rootfs).
pub fn publisher_trainer() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "rapha-node-publisher-trainer-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).ok()?;
        let out = dir.join("trainer");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/publisher_trainer.c");
        let ok = rapha_testkit::trainer::compile_c_trainer(&src, &out);
        assert!(ok, "gcc -static could not build {}", src.display());
        Some(out)
    })
    .clone()
}

pub fn get_json(s: &Served, path: &str, token: &str) -> serde_json::Value {
    let (st, text) = s.call("get", path, Some(token), None);
    assert_eq!(st, StatusCode::OK, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Polls the job's status as the publisher until `done` holds; returns that status.
pub fn wait_status(
    s: &Served,
    job: &str,
    seconds: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..seconds * 4 {
        last = get_json(s, &format!("/v1/jobs/{job}"), PUBLISHER_TOKEN);
        if done(&last) {
            return last;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("job {job} did not get there: {last}");
}

/// Uploads the bundle and submits `request` as the publisher: (status, body) of the submit.
pub fn submit(s: &Served, bundle_dir: &Path, request: &JobRequest) -> (StatusCode, String) {
    let (st, text) = s.upload(
        PUBLISHER_TOKEN,
        rapha_bundle::pack_bundle_to_vec(bundle_dir).unwrap(),
    );
    assert!(st == StatusCode::CREATED || st == StatusCode::OK, "{text}");
    let body = serde_json::to_vec(&serde_json::json!({ "request": request })).unwrap();
    s.call("post", "/v1/jobs", Some(PUBLISHER_TOKEN), Some(&body))
}

/// Approves the job as the DPO through the API (its cohort must be under review).
pub fn approve(s: &Served, w: &Dpo<'_>, job: &str) {
    crate::api::wait_pending(s, job, 120);
    let pending = get_json(s, "/v1/approvals/pending", DPO_TOKEN);
    let review = pending["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["job_id"] == job)
        .unwrap_or_else(|| panic!("job {job} not pending: {pending}"))
        .clone();
    let digest: Digest = review["job_digest"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let approval = w.0.approve(digest, now, now + 3600).unwrap();
    let (st, text) = s.call(
        "post",
        &format!("/v1/jobs/{job}/approve"),
        Some(DPO_TOKEN),
        Some(&serde_json::to_vec(&approval).unwrap()),
    );
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
}

/// The DPO's signing key, kept when the world's node moves into the API.
pub struct Dpo<'a>(pub &'a rapha_policy::DpoSigningKey);

/// What the publisher was shown of a job that ran: its final status and its receipt.
pub struct Shown {
    pub status: serde_json::Value,
    pub receipt: String,
}

/// Runs `request` through approval and deposit until its receipt is issued, as the publisher
/// sees it.
pub fn run_to_receipt(
    s: &Served,
    chain: &Chain,
    dpo: &Dpo<'_>,
    bundle_dir: &Path,
    request: &JobRequest,
) -> Shown {
    let job = request.job_id.to_string();
    let (st, text) = submit(s, bundle_dir, request);
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    approve(s, dpo, &job);
    wait_status(s, &job, 60, |v| v["state"] == "awaiting-deposit");
    chain.deposit(&request.job_id);
    let receipt = wait_receipt(s, &job);
    // Escrow v2 settles every outcome (a violation 70/30): wait for it, then read the status.
    let status = wait_status(s, &job, 60, |v| v["finished"] == true);
    Shown { status, receipt }
}

/// Polls the job's receipt as the publisher (four minutes at most) and returns it.
pub fn wait_receipt(s: &Served, job: &str) -> String {
    for _ in 0..240 * 4 {
        let (st, text) = s.call(
            "get",
            &format!("/v1/jobs/{job}/receipt"),
            Some(PUBLISHER_TOKEN),
            None,
        );
        if st == StatusCode::OK {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("job {job} issued no receipt");
}

fn hex_names(text: &str) -> Vec<String> {
    text.match_indices("px-")
        .map(|(i, _)| text[i..].chars().take(35).collect())
        .collect()
}

/// Publisher-visible bytes: the status JSON and the receipt.
fn shown_text(shown: &Shown) -> String {
    format!("{}\n{}", shown.status, shown.receipt)
}

/// The audit trail's lines as written, then every string in them decoded from JSON (so a
/// quoted name reads as the node wrote it, and an escaped byte cannot hide from a search).
fn audit_text(tmp: &Path) -> String {
    fn strings(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let raw = std::fs::read_to_string(tmp.join("audit.jsonl")).unwrap();
    let mut text = raw.clone();
    for line in raw.lines() {
        strings(&serde_json::from_str(line).unwrap(), &mut text);
    }
    text
}

#[test]
fn a_file_named_after_pixels_reaches_only_the_audit_trail_the_job_is_charged_and_the_publisher_suspended(
) {
    let Some(trainer) = publisher_trainer() else {
        return;
    };
    let Some(w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle_args(&tmp, &trainer, "hex", &["hex-name"], &w.publisher_key);
    let request = w.request(manifest, w.scoped_query());
    let dpo = Dpo(&w.dpo);
    let next = w.request(manifest, w.scoped_query());
    let node = w.node;
    let s = serve_state(ApiState::new(node, tmp.join("jobs.sqlite"), tokens()));
    let company = w.chain.company.address();
    let before = w.chain.funds(company);

    let shown = run_to_receipt(&s, &w.chain, &dpo, &dir, &request);

    // The trainer named a file after 16 pixel bytes: none of it reaches the publisher.
    let leaked = hex_names(&shown_text(&shown));
    assert!(
        leaked.is_empty(),
        "trainer-chosen bytes reached the publisher: {leaked:?}\nstatus: {}\nreceipt: {}",
        shown.status,
        shown.receipt
    );
    assert_eq!(shown.status["outcome"], "violated", "{}", shown.status);
    assert_eq!(shown.status["reason"], "output-guard", "{}", shown.status);
    let receipt: serde_json::Value = serde_json::from_str(&shown.receipt).unwrap();
    assert_eq!(receipt["body"]["outcome"], "violated", "{receipt}");
    assert_eq!(receipt["body"]["reason"], "output-guard", "{receipt}");
    assert!(receipt["body"]["outputs"].is_null(), "{receipt}");
    // The hospital's audit trail and the DPO's view say which rule fired, naming the file by
    // the digest of its name: the name itself (pixel bytes) reaches no log either.
    let audit = audit_text(&tmp);
    assert!(
        audit.contains("undeclared-output: sha256:"),
        "the audit trail lacks the guard's detail"
    );
    assert!(
        hex_names(&audit).is_empty(),
        "pixel bytes reached the audit trail"
    );
    let dpo_view = get_json(&s, &format!("/v1/jobs/{}", request.job_id), DPO_TOKEN);
    let dpo_text = dpo_view.to_string();
    assert!(
        dpo_text.contains("undeclared-output: sha256:"),
        "{dpo_view}"
    );
    assert!(hex_names(&dpo_text).is_empty(), "{dpo_view}");
    // The publisher's view has no `detail`.
    assert!(shown.status.get("detail").is_none(), "{}", shown.status);

    // Charged like a completed job: the deposit is not refunded.
    assert_eq!(
        w.chain.funds(company),
        before - alloy::primitives::U256::from(FEE),
        "a guard refusal was refunded"
    );

    // The publisher is suspended: its next job is refused before anything is stored.
    let (st, text) = submit(&s, &dir, &next);
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::FORBIDDEN, "publisher-suspended"),
        "{text}"
    );
    let suspended = get_json(&s, "/v1/publishers/suspended", DPO_TOKEN);
    assert_eq!(
        suspended["suspended"][0]["publisher"], PUBLISHER,
        "{suspended}"
    );
    assert_eq!(
        suspended["suspended"][0]["job_id"],
        request.job_id.to_string(),
        "{suspended}"
    );
    // Only a DPO lifts it, with a reason; the lifting is audited.
    let path = format!("/v1/publishers/{PUBLISHER}/reinstate");
    let reason = br#"{"reason":"reviewed the violation with the publisher"}"#;
    let (st, _) = s.call("post", &path, Some(PUBLISHER_TOKEN), Some(reason));
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, text) = s.call("post", &path, Some(DPO_TOKEN), Some(br#"{"reason":""}"#));
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::BAD_REQUEST, "bad-reason")
    );
    let (st, text) = s.call("post", &path, Some(DPO_TOKEN), Some(reason));
    assert_eq!(st, StatusCode::OK, "{text}");
    assert!(audit_text(&tmp).contains("reviewed the violation with the publisher"));
    let (st, text) = s.call("post", &path, Some(DPO_TOKEN), Some(reason));
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::CONFLICT, "not-suspended"),
        "{text}"
    );
    let (st, text) = submit(&s, &dir, &next);
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
}

#[test]
fn zip_entries_named_after_candidate_mrns_do_not_tell_the_publisher_which_one_is_real() {
    let Some(trainer) = publisher_trainer() else {
        return;
    };
    let Some(w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    // One real MRN of a patient in the job's cohort among candidates that are no one's.
    let real = w
        .manifest
        .studies
        .iter()
        .find(|st| st.label.is_some() && !w.manifest.opted_out_patients.contains(&st.patient_id))
        .unwrap()
        .patient_id
        .clone();
    let mut candidates: Vec<String> = (0..40).map(|i| format!("MRN9{i:03}{:05}", i * 7)).collect();
    candidates.insert(23, real.clone());
    let mut args = vec!["mrn-zip"];
    args.extend(candidates.iter().map(String::as_str));
    let (dir, manifest) = bundle_args(&tmp, &trainer, "mrn", &args, &w.publisher_key);
    let request = w.request(manifest, w.scoped_query());
    let dpo = Dpo(&w.dpo);
    let node = w.node;
    let s = serve_state(ApiState::new(node, tmp.join("jobs.sqlite"), tokens()));
    let company = w.chain.company.address();
    let before = w.chain.funds(company);

    let shown = run_to_receipt(&s, &w.chain, &dpo, &dir, &request);

    let text = shown_text(&shown);
    let named: Vec<&String> = candidates
        .iter()
        .filter(|c| text.contains(c.as_str()))
        .collect();
    assert!(
        named.is_empty(),
        "the publisher was shown which candidate is real: {named:?}\nstatus: {}\nreceipt: {}",
        shown.status,
        shown.receipt
    );
    // Nor where in the file it matched: no offset, no entry, no rule detail.
    assert!(!text.contains("offset"), "{text}");
    assert_eq!(shown.status["outcome"], "violated", "{}", shown.status);
    assert_eq!(shown.status["reason"], "output-guard", "{}", shown.status);
    // The hospital's audit trail says which rule fired and where, in the node's words: not
    // the MRN the trainer wrote into an entry name (the audit trail may leave the PACS
    // network, and must never carry PHI); the entry is named by its index.
    let audit = audit_text(&tmp);
    assert!(
        audit.contains("identifier: a raw identifier in \"model.safetensors\"!\"<entry 23>\""),
        "the audit trail lacks the guard's detail"
    );
    let leaked: Vec<&String> = candidates
        .iter()
        .filter(|c| audit.contains(c.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "trainer-chosen names reached the audit trail: {leaked:?}"
    );
    assert_eq!(
        w.chain.funds(company),
        before - alloy::primitives::U256::from(FEE),
        "the oracle query was refunded"
    );
}

#[test]
fn a_dpo_lists_and_reinstates_a_suspended_publisher_from_the_console() {
    use crate::node_common::{node, stderr, stdout, ConfigSpec};
    let dir = tempfile::tempdir().unwrap();
    let spec = ConfigSpec::under(dir.path());
    let config = spec.write(&dir.path().join("node.toml"));
    let config = config.to_str().unwrap();
    std::fs::create_dir_all(&spec.state_dir).unwrap();
    let job = rapha_core::JobId::random();
    rapha_node::store::JobStore::open(&spec.state_dir.join("jobs.sqlite"))
        .unwrap()
        .suspend(PUBLISHER, job)
        .unwrap();

    let out = node(&["publishers", "list", "--config", config]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{PUBLISHER}  suspended since"))
            && stdout(&out).contains(&job.to_string()),
        "{}",
        stdout(&out)
    );
    let out = node(&[
        "publishers",
        "reinstate",
        PUBLISHER,
        "--reason",
        " ",
        "--config",
        config,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs a --reason"),
        "{}",
        stderr(&out)
    );
    let reason = "reviewed the violation; the publisher rebuilt its trainer";
    let out = node(&[
        "publishers",
        "reinstate",
        PUBLISHER,
        "--reason",
        reason,
        "--config",
        config,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let audit = std::fs::read_to_string(spec.state_dir.join("audit.jsonl")).unwrap();
    assert!(
        audit.contains(reason) && audit.contains(&job.to_string()),
        "{audit}"
    );
    let store = rapha_node::store::JobStore::open(&spec.state_dir.join("jobs.sqlite")).unwrap();
    assert_eq!(store.suspension(PUBLISHER).unwrap(), None);
    let out = node(&[
        "publishers",
        "reinstate",
        PUBLISHER,
        "--reason",
        reason,
        "--config",
        config,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not suspended"),
        "{}",
        stderr(&out)
    );
}

/// Review F2: the trainer chooses when it exits, and the node commits the run's end only on a
/// whole quantum after its start (`RUN_QUANTUM`). While the state is `running`, what the
/// publisher's status shows of the run must not change when the trainer exits: otherwise the
/// moment it did (here about 2 s into a 20 s quantum) is read back by polling.
#[test]
fn the_publisher_cannot_see_when_the_trainer_exited_before_the_quantum_ends() {
    let Some(trainer) = publisher_trainer() else {
        return;
    };
    let Some(w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle_args(&tmp, &trainer, "early", &["sleep", "1"], &w.publisher_key);
    let request = w.request(manifest, w.scoped_query());
    let job = request.job_id.to_string();
    let dpo = Dpo(&w.dpo);
    let mut node = w.node;
    node.set_run_quantum(std::time::Duration::from_secs(20));
    let s = serve_state(ApiState::new(node, tmp.join("jobs.sqlite"), tokens()));
    let (st, text) = submit(&s, &dir, &request);
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    approve(&s, &dpo, &job);
    wait_status(&s, &job, 60, |v| v["state"] == "awaiting-deposit");
    w.chain.deposit(&request.job_id);
    wait_status(&s, &job, 120, |v| v["state"] == "running");
    let t = std::time::Instant::now();
    let mut running = Vec::new();
    let ended = loop {
        let v = get_json(&s, &format!("/v1/jobs/{job}"), PUBLISHER_TOKEN);
        if v["state"] != "running" {
            break v;
        }
        running.push((t.elapsed(), v["run"].clone()));
        assert!(t.elapsed() < std::time::Duration::from_secs(120), "{v}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        running.len() > 50,
        "the run was polled {} times",
        running.len()
    );
    let changed: Vec<_> = running
        .iter()
        .filter(|(_, run)| *run != running[0].1)
        .collect();
    assert!(
        changed.is_empty(),
        "the publisher saw the run change from {} while the job was running: {:?}",
        running[0].1,
        changed.first()
    );
    assert_eq!(
        running[0].1,
        serde_json::json!({"elapsed_minutes": 0, "wall_limit_secs": 120}),
    );
    assert_eq!(ended["outcome"], "completed", "{ended}");
}

/// Review F3: the trainer has the pixels and the burned-in text. It names undeclared files and
/// zip entries after pixel bytes (hex), a real MRN, and labels of the node's own form
/// (`<entry ...>`), hoping the hospital's audit trail (shipped to syslog, possibly off the
/// PACS network) carries them out. Everything the node keeps or logs of the refusal is in its
/// own words: rule codes, declared output names, entry indexes and digests of names.
#[test]
fn trainer_chosen_names_reach_no_audit_line_syslog_dpo_view_or_stored_ending() {
    let Some(trainer) = publisher_trainer() else {
        return;
    };
    let Some(w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let mrn = w
        .manifest
        .studies
        .iter()
        .find(|st| st.label.is_some() && !w.manifest.opted_out_patients.contains(&st.patient_id))
        .unwrap()
        .patient_id
        .clone();
    let (dir, manifest) = bundle_args(&tmp, &trainer, "names", &["names", &mrn], &w.publisher_key);
    let request = w.request(manifest, w.scoped_query());
    let dpo = Dpo(&w.dpo);
    let node = w.node;
    let s = serve_state(ApiState::new(node, tmp.join("jobs.sqlite"), tokens()));

    let shown = run_to_receipt(&s, &w.chain, &dpo, &dir, &request);
    assert_eq!(shown.status["outcome"], "violated", "{}", shown.status);

    let store = rapha_node::store::JobStore::open(&tmp.join("jobs.sqlite")).unwrap();
    let stored = |kind: &str| {
        String::from_utf8(store.artifact(request.job_id, kind).unwrap().unwrap()).unwrap()
    };
    let places = [
        ("audit trail", audit_text(&tmp)),
        ("syslog", w.syslog.text()),
        (
            "DPO view",
            get_json(&s, &format!("/v1/jobs/{}", request.job_id), DPO_TOKEN).to_string(),
        ),
        ("ending", stored(rapha_node::pipeline::artifact::ENDING)),
        (
            "run record",
            stored(rapha_node::pipeline::artifact::MANIFEST),
        ),
    ];
    for (place, text) in &places {
        let leaked: Vec<String> = hex_names(text)
            .into_iter()
            .chain(
                [&mrn, "12345678"]
                    .into_iter()
                    .filter(|b| text.contains(*b))
                    .map(str::to_owned),
            )
            .collect();
        assert!(
            leaked.is_empty(),
            "trainer-chosen bytes in the {place}: {leaked:?}\n{text}"
        );
    }
    // What the guard found is there, in the node's words.
    let (_, audit) = &places[0];
    for line in [
        "undeclared-output: sha256:",
        "identifier: a raw identifier in \"model.safetensors\"!\"<entry 3>\"",
    ] {
        assert!(
            audit.contains(line),
            "{line:?} not in the audit trail:\n{audit}"
        );
        // Syslog carries the same event as JSON, so the line's quotes are escaped there.
        let escaped = serde_json::to_string(line).unwrap();
        let escaped = &escaped[1..escaped.len() - 1];
        assert!(
            w.syslog.text().contains(escaped),
            "{line:?} not in syslog:\n{}",
            w.syslog.text()
        );
    }
}
