//! The HTTP API (`rapha_node::api`) served in-process on 127.0.0.1:0 over a node whose
//! payments run against the escrow on anvil: role checks on every route (401 vs 403, both
//! audited), the OpenAPI document covering every route, `/healthz`, the Prometheus `/metrics`
//! text, and typed JSON errors for bad JSON, oversized bodies and unknown jobs.

use std::path::Path;

use rapha_bundle::TrustStore;
use rapha_core::{HmacKey, Usdc};
use rapha_dicom::exclusion::OptOuts;
use rapha_dicom::{ClientOptions, DicomConfig, DicomWebClient, Pseudonymizer};
use rapha_enclave::SandboxConfig;
use rapha_node::api::{self, ApiState, Tokens, ROUTES};
use rapha_node::audit::AuditLog;
use rapha_node::pipeline::chain::{ChainPayments, ChainSettings};
use rapha_node::pipeline::{NoEvidence, Node, NodeParts};
use rapha_node::store::JobStore;
use rapha_policy::{ApprovalStore, Policy};
use rapha_receipt::{NodeKey, ReceiptLog};
use rapha_testkit::policy::test_hospital;
use reqwest::blocking::Client;
use reqwest::StatusCode;

use crate::pipeline_e2e::{bundle, trainer_binary, Chain, FEE, PUBLISHER, TRAINER};

pub fn publisher_key() -> rapha_bundle::SigningKey {
    rapha_bundle::SigningKey::ed25519_from_seed(&[7; 32])
}

pub const PUBLISHER_TOKEN: &str = "pub-0123456789abcdef0123456789abcdef";
pub const OTHER_TOKEN: &str = "oth-0123456789abcdef0123456789abcdef";
pub const DPO_TOKEN: &str = "dpo-0123456789abcdef0123456789abcdef";
pub const ADMIN_TOKEN: &str = "adm-0123456789abcdef0123456789abcdef";

pub fn node(dir: &Path, chain: &Chain) -> Node {
    let mut node = node_parts(dir, chain);
    node.set_run_quantum(std::time::Duration::ZERO);
    node.set_cohort_quantum(std::time::Duration::ZERO);
    node
}

fn node_parts(dir: &Path, chain: &Chain) -> Node {
    std::fs::create_dir_all(dir.join("trust")).unwrap();
    TrustStore::add(
        &dir.join("trust"),
        PUBLISHER,
        &publisher_key().public_key(),
        &[TRAINER.into()],
        None,
    )
    .unwrap();
    let payments = ChainPayments::connect(
        &ChainSettings {
            rpc_url: chain.url.clone(),
            escrow: chain.escrow,
            hospital: chain.hospital,
            payout: chain.payout,
            depositors: chain.depositors(),
            confirmations: 1,
            settle_margin_secs: 600,
            poll_interval: std::time::Duration::from_millis(250),
        },
        &chain.settler,
        &dir.join("ledger.sqlite"),
    )
    .unwrap();
    Node::new(NodeParts {
        store: JobStore::open(&dir.join("jobs.sqlite")).unwrap(),
        trust: TrustStore::open(&dir.join("trust")).unwrap(),
        policy: Policy::builtin().unwrap(),
        hospital: {
            let mut hospital = test_hospital(PUBLISHER, TRAINER);
            hospital.scope.modalities = vec!["CT".into()];
            hospital.outputs.kinds = vec![];
            hospital
        },
        pseudonymizer: Pseudonymizer::new(HmacKey::from_bytes([0x5a; 32])),
        dicom: DicomConfig::default(),
        optouts: OptOuts::none(),
        labels: None,
        // No job reaches the PACS in this suite: a port nothing listens on.
        pacs: Box::new(|| DicomWebClient::new(ClientOptions::new("http://127.0.0.1:9/dicom-web"))),
        approvals: ApprovalStore::open(&dir.join("approvals")).unwrap(),
        dpo_keys: vec![],
        evidence: Box::new(NoEvidence),
        verifier: rapha_attest::EvidenceVerifier::development(),
        tpm_verifier: None,
        sandbox: SandboxConfig {
            runtime_root: dir.join("runc-state"),
            ..SandboxConfig::default()
        },
        min_validation_patients: 2,
        node_key: NodeKey::from_secret_bytes(&chain.node_secret).unwrap(),
        node_name: "api-test-hospital".into(),
        receipts: ReceiptLog::open(&dir.join("receipts")).unwrap(),
        payments: Box::new(payments),
        audit: AuditLog::open(&dir.join("audit.jsonl"), "api-test-hospital", None).unwrap(),
        work_dir: dir.join("work"),
        release_dir: dir.join("released"),
    })
    .unwrap()
}

/// Fields drop in order: the runtime (and the server's handle on the node) first, then the
/// last handle here, outside any async context (the node's chain client owns a runtime).
pub struct Served {
    _rt: tokio::runtime::Runtime,
    _state: ApiState,
    pub base: String,
    pub http: Client,
}

pub fn tokens() -> Tokens {
    Tokens::parse(&format!(
        "# role token\npublisher {PUBLISHER_TOKEN} {PUBLISHER}\npublisher {OTHER_TOKEN} other-co\ndpo {DPO_TOKEN}\nadmin {ADMIN_TOKEN}\n"
    ))
    .unwrap()
}

fn serve(dir: &Path, chain: &Chain) -> Served {
    serve_state(ApiState::new(
        node(dir, chain),
        dir.join("jobs.sqlite"),
        tokens(),
    ))
}

/// Serves `state` on 127.0.0.1:0.
pub fn serve_state(state: ApiState) -> Served {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(api::serve(listener, state.clone()));
    Served {
        _rt: rt,
        _state: state,
        base: format!("http://{addr}"),
        // No connection reuse: a refused upload's connection is closed by the node, and a
        // request must not land on it.
        http: Client::builder().pool_max_idle_per_host(0).build().unwrap(),
    }
}

impl Served {
    /// The served API's state (the console serves beside it over the same state).
    pub fn state(&self) -> &ApiState {
        &self._state
    }

    /// Uploads `body` as a bundle archive.
    pub fn upload(&self, token: &str, body: Vec<u8>) -> (StatusCode, String) {
        let resp = self
            .http
            .post(format!("{}/v1/bundles", self.base))
            .bearer_auth(token)
            .header("content-type", "application/x-tar")
            .body(body)
            .send()
            .unwrap();
        let status = resp.status();
        (status, resp.text().unwrap())
    }

    /// Raw bytes of a GET (released files).
    pub fn get_bytes(&self, path: &str, token: &str) -> (StatusCode, Vec<u8>) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .unwrap();
        let status = resp.status();
        (status, resp.bytes().unwrap().to_vec())
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> (StatusCode, String) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "get" => self.http.get(url),
            "post" => self.http.post(url),
            other => panic!("method {other}"),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_vec());
        }
        let resp = req.send().unwrap();
        let status = resp.status();
        (status, resp.text().unwrap())
    }
}

/// Waits until `job` is in the DPO's pending reviews (its cohort built, its review
/// requested). The publisher sees such a job as `admitted` until the DPO decides, so only a
/// hospital role can wait for this.
pub fn wait_pending(s: &Served, job: &str, seconds: u64) {
    for _ in 0..seconds * 4 {
        let (st, text) = s.call("get", "/v1/approvals/pending", Some(DPO_TOKEN), None);
        assert_eq!(st, StatusCode::OK, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let listed = v["pending"]
            .as_array()
            .is_some_and(|p| p.iter().any(|r| r["job_id"] == job));
        if listed {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("job {job} never waited for the DPO");
}

/// The roles each route admits (the API's contract, restated here independently).
fn allowed(method: &str, path: &str) -> &'static [&'static str] {
    match (method, path) {
        ("get", "/healthz") => &["none", "publisher", "dpo", "admin"],
        ("get", "/metrics") => &["admin"],
        ("get", "/openapi.json") => &["publisher", "dpo", "admin"],
        ("post", "/v1/bundles" | "/v1/jobs") => &["publisher", "admin"],
        ("get", "/v1/jobs/{id}") => &["publisher", "dpo", "admin"],
        ("get", "/v1/approvals/pending") => &["dpo", "admin"],
        ("post", "/v1/jobs/{id}/approve" | "/v1/jobs/{id}/reject") => &["dpo"],
        ("post", "/v1/jobs/{id}/approval-challenge") => &["dpo"],
        ("get" | "post", "/v1/dpo/credentials") => &["dpo", "admin"],
        ("post", "/v1/dpo/credentials/options") => &["dpo", "admin"],
        (
            "post",
            "/v1/dpo/credentials/enrol-challenge"
            | "/v1/dpo/credentials/{id}/revoke-challenge"
            | "/v1/dpo/credentials/{id}/revoke",
        ) => &["dpo"],
        ("get", "/v1/jobs/{id}/receipt") => &["publisher", "dpo", "admin"],
        ("get", "/v1/jobs/{id}/outputs") => &["publisher", "admin"],
        ("get", "/v1/jobs/{id}/outputs/{name}") => &["publisher", "admin"],
        ("get", "/v1/log/head" | "/v1/log/inclusion" | "/v1/log/consistency") => {
            &["publisher", "dpo", "admin"]
        }
        ("get", "/v1/publishers/suspended") => &["dpo", "admin"],
        ("post", "/v1/publishers/{name}/reinstate") => &["dpo"],
        other => panic!("route {other:?} has no expected roles in this test"),
    }
}

pub fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body}"));
    assert!(
        v["message"].is_string(),
        "typed error has a message: {body}"
    );
    v["error"].as_str().unwrap().to_owned()
}

#[test]
fn api_checks_roles_on_every_route_documents_them_and_answers_with_typed_errors() {
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let s = serve(tmp.path(), &chain);

    // Every served route is in the OpenAPI document, and the document has no extra path.
    let (st, doc) = s.call("get", "/openapi.json", Some(DPO_TOKEN), None);
    assert_eq!(st, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path) in ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is served but missing from openapi.json"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|ops| ops.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "openapi.json documents a route the router does not serve"
    );

    // Role checks: no token and an unknown token are 401, a known token of a role the route
    // does not admit is 403; an admitted role gets past the check.
    let job = rapha_core::JobId::random().to_string();
    for (method, path) in ROUTES {
        let url = path
            .replace("{id}", &job)
            .replace("{name}", "model.safetensors");
        let body: Option<&[u8]> = (*method == "post").then_some(b"{}".as_slice());
        for (who, token) in [
            ("none", None),
            ("unknown", Some("xyz-0123456789abcdef0123456789abcdef")),
            ("publisher", Some(PUBLISHER_TOKEN)),
            ("dpo", Some(DPO_TOKEN)),
            ("admin", Some(ADMIN_TOKEN)),
        ] {
            let (st, text) = s.call(method, &url, token, body);
            let ok = allowed(method, path);
            if ok.contains(&who) || ok.contains(&"none") {
                assert!(
                    st != StatusCode::UNAUTHORIZED && st != StatusCode::FORBIDDEN,
                    "{who} refused on {method} {path}: {st} {text}"
                );
            } else if who == "none" || who == "unknown" {
                assert_eq!(
                    st,
                    StatusCode::UNAUTHORIZED,
                    "{who} on {method} {path}: {text}"
                );
                assert_eq!(error_code(&text), "unauthenticated");
            } else {
                assert_eq!(
                    st,
                    StatusCode::FORBIDDEN,
                    "{who} on {method} {path}: {text}"
                );
                assert_eq!(error_code(&text), "forbidden");
            }
        }
    }

    // A token of the right role with a different length or one flipped byte is no token.
    let flipped = format!("{}X", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]);
    assert_eq!(
        s.call("get", "/metrics", Some(&flipped), None).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.call("get", "/metrics", Some(&ADMIN_TOKEN[..33]), None).0,
        StatusCode::UNAUTHORIZED
    );

    // Refusals reach the audit trail (written off the request path: poll briefly).
    let audit = tmp.path().join("audit.jsonl");
    let mut refusals = 0;
    for _ in 0..50 {
        refusals = AuditLog::read_all(&audit)
            .map(|events| {
                events
                    .iter()
                    .filter(|e| {
                        e.event_id == "110113" && e.outcome_description.contains("API call to")
                    })
                    .count()
            })
            .unwrap_or(0);
        if refusals >= 10 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(refusals >= 10, "only {refusals} API refusals audited");

    // /healthz needs no token.
    let (st, text) = s.call("get", "/healthz", None, None);
    assert_eq!((st, text.as_str()), (StatusCode::OK, r#"{"status":"ok"}"#));

    // /metrics: Prometheus text, one gauge line per job state, and the unlabelled live feed
    // figures; no other labels.
    let (st, text) = s.call("get", "/metrics", Some(ADMIN_TOKEN), None);
    assert_eq!(st, StatusCode::OK);
    assert!(text.contains("# TYPE rapha_jobs gauge"), "{text}");
    assert!(
        text.contains("# TYPE rapha_records_fed_total counter"),
        "{text}"
    );
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let live = [
        "rapha_trainers_running",
        "rapha_records_fed_total",
        "rapha_record_bytes_fed_total",
    ];
    assert_eq!(
        samples.len(),
        rapha_node::store::JobState::ALL.len() + live.len(),
        "{text}"
    );
    for line in samples {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(
            (name.starts_with("rapha_jobs{state=\"") && name.ends_with("\"}"))
                || live.contains(&name),
            "{line}"
        );
        assert_eq!(value, "0", "empty store, nothing run: {line}");
    }

    // Typed errors: bad JSON, a body over the limit, an unknown job, a malformed job id.
    let (st, text) = s.call(
        "post",
        "/v1/jobs",
        Some(PUBLISHER_TOKEN),
        Some(b"{not json"),
    );
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::BAD_REQUEST, "bad-json")
    );
    let (st, text) = s.call(
        "post",
        "/v1/jobs",
        Some(PUBLISHER_TOKEN),
        Some(br#"{"bundle_path": 7}"#),
    );
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::BAD_REQUEST, "bad-json")
    );
    // A JSON route takes only a body declared as JSON (issue 24 item 3): a valid JSON text
    // sent as text/plain, as a form, or with no Content-Type at all is refused unread.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = s
            .http
            .post(format!("{}/v1/jobs", s.base))
            .bearer_auth(PUBLISHER_TOKEN)
            .body(r#"{"request": {}}"#);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        let resp = req.send().unwrap();
        let st = resp.status();
        let text = resp.text().unwrap();
        assert_eq!(
            (st, error_code(&text).as_str()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type"),
            "Content-Type {content_type:?}: {text}"
        );
    }
    let big = vec![b' '; api::DEFAULT_BODY_LIMIT + 1];
    let (st, text) = s.call("post", "/v1/jobs", Some(PUBLISHER_TOKEN), Some(&big));
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body-too-large")
    );
    let (st, text) = s.call("get", &format!("/v1/jobs/{job}"), Some(ADMIN_TOKEN), None);
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::NOT_FOUND, "unknown-job")
    );
    let (st, text) = s.call("get", "/v1/jobs/not-a-job", Some(ADMIN_TOKEN), None);
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::BAD_REQUEST, "bad-job-id")
    );
    // Nothing pending, nothing released, an empty receipt log; traversal names refused.
    let (st, text) = s.call("get", "/v1/approvals/pending", Some(DPO_TOKEN), None);
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        serde_json::json!({"pending": []})
    );
    let (st, text) = s.call(
        "get",
        &format!("/v1/jobs/{job}/receipt"),
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::NOT_FOUND, "no-receipt")
    );
    let (st, text) = s.call(
        "get",
        &format!("/v1/jobs/{job}/outputs"),
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::NOT_FOUND, "not-released")
    );
    let (st, text) = s.call(
        "get",
        &format!("/v1/jobs/{job}/outputs/..%2Fjobs.sqlite"),
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::BAD_REQUEST, "bad-file-name")
    );
    let (st, text) = s.call("get", "/v1/log/head", Some(PUBLISHER_TOKEN), None);
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        serde_json::json!({"head": null, "tree_size": 0})
    );
    let (st, text) = s.call(
        "get",
        "/v1/log/inclusion?index=3&size=1",
        Some(PUBLISHER_TOKEN),
        None,
    );
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::BAD_REQUEST, "bad-proof-request")
    );
    let (st, text) = s.call(
        "get",
        "/v1/log/consistency?old=x",
        Some(PUBLISHER_TOKEN),
        None,
    );
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::BAD_REQUEST, "bad-proof-request")
    );
    // A rejection needs a reason, and a job the node knows.
    let url = format!("/v1/jobs/{job}/reject");
    let (st, text) = s.call("post", &url, Some(DPO_TOKEN), Some(br#"{"reason":" "}"#));
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::BAD_REQUEST, "bad-reason")
    );
    let (st, text) = s.call(
        "post",
        &url,
        Some(DPO_TOKEN),
        Some(br#"{"reason":"scope too broad"}"#),
    );
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::NOT_FOUND, "unknown-job")
    );
    // An approval whose signature does not verify is refused before it is recorded.
    let forged = br#"{"job_digest":"0000000000000000000000000000000000000000000000000000000000000000","issued_at":1,"expires_at":2,"dpo_key":"0000000000000000000000000000000000000000000000000000000000000000","signature":"00"}"#;
    let (st, text) = s.call(
        "post",
        &format!("/v1/jobs/{job}/approve"),
        Some(DPO_TOKEN),
        Some(forged),
    );
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "bad-signature"),
        "{text}"
    );
    let (st, text) = s.call("get", "/v2/nothing", Some(ADMIN_TOKEN), None);
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::NOT_FOUND, "not-found")
    );
    for (method, path) in [("get", "/v1/bundles"), ("post", "/v1/log/head")] {
        let (st, text) = s.call(method, path, Some(ADMIN_TOKEN), Some(b"{}"));
        assert_eq!(
            (st, error_code(&text).as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"),
            "{method} {path}"
        );
    }
}

/// Attacker's side: a flood of refused calls (bad tokens, a publisher on a DPO route) must not
/// be a lever on the node's disk. Each route, role, reason and address is written once, then
/// counted; the counts reach the audit trail as one summary line when the server stops.
/// 20,000 calls here (100,000 with RAPHA_SLOW=1); before coalescing each was one line
/// (about 400 bytes), and past a full queue they were not audited at all.
#[test]
fn a_flood_of_refused_calls_grows_the_audit_file_by_a_bounded_amount_and_loses_no_count() {
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let audit = tmp.path().join("audit.jsonl");
    let s = serve(tmp.path(), &chain);
    let before = std::fs::metadata(&audit).map_or(0, |m| m.len());
    let calls: usize = if std::env::var_os("RAPHA_SLOW").is_some() {
        100_000
    } else {
        20_000
    };
    // Four kinds of refusal: no token and a wrong token on /metrics (one key: 401, same
    // reason), a publisher token on a DPO route (403), and no token on a job route.
    let kinds: [(&str, Option<&str>, StatusCode); 4] = [
        ("/metrics", None, StatusCode::UNAUTHORIZED),
        (
            "/metrics",
            Some("xyz-0123456789abcdef0123456789abcdef"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "/v1/approvals/pending",
            Some(PUBLISHER_TOKEN),
            StatusCode::FORBIDDEN,
        ),
        ("/v1/log/head", None, StatusCode::UNAUTHORIZED),
    ];
    let threads = 4;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let base = s.base.clone();
            let kinds = &kinds;
            scope.spawn(move || {
                // Keep-alive: a flood reuses its connections.
                let http = Client::new();
                for i in (t..calls).step_by(threads) {
                    let (path, token, want) = kinds[i % kinds.len()];
                    let mut req = http.get(format!("{base}{path}"));
                    if let Some(token) = token {
                        req = req.bearer_auth(token);
                    }
                    assert_eq!(req.send().unwrap().status(), want);
                }
            });
        }
    });
    let during = std::fs::metadata(&audit).unwrap().len() - before;
    let events_during = AuditLog::read_all(&audit).unwrap();
    let firsts: Vec<_> = events_during
        .iter()
        .filter(|e| e.outcome_description.starts_with("API call to "))
        .collect();
    // Three keys (the two /metrics refusals share route, role, reason and address).
    assert_eq!(firsts.len(), 3, "{firsts:#?}");
    assert!(
        firsts
            .iter()
            .all(|e| e.participants[0].network_access_point_id.as_deref() == Some("127.0.0.1")),
        "the caller's address is recorded: {firsts:#?}"
    );
    assert!(
        during < 4096,
        "{calls} refused calls wrote {during} bytes to the audit trail"
    );

    // Stopping the server writes the counts of the windows still open.
    drop(s);
    let mut counted = 0u64;
    for _ in 0..100 {
        counted = AuditLog::read_all(&audit)
            .unwrap()
            .iter()
            .filter(|e| e.outcome_description.contains("more API calls to"))
            .map(|e| {
                let detail = e.objects[0].detail.as_deref().unwrap();
                detail
                    .strip_prefix("count=")
                    .and_then(|d| d.split(' ').next())
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        if counted + 3 >= calls as u64 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        counted + 3,
        calls as u64,
        "every refused call is in a first event or a count"
    );
    let grown = std::fs::metadata(&audit).unwrap().len() - before;
    assert!(
        grown < 8192,
        "{calls} refused calls grew the audit trail by {grown} bytes"
    );
    eprintln!("{calls} refused calls: audit trail grew by {grown} bytes");
}

#[test]
fn token_file_refuses_unknown_roles_short_tokens_and_emptiness() {
    assert!(Tokens::parse(&format!("admin {ADMIN_TOKEN}")).is_ok());
    for (text, want) in [
        (format!("root {ADMIN_TOKEN}"), "unknown role"),
        ("admin short".to_owned(), "shorter than 32"),
        ("admin".to_owned(), "missing token"),
        (format!("admin {ADMIN_TOKEN} extra"), "trailing text"),
        (
            format!("publisher {PUBLISHER_TOKEN}"),
            "needs the publisher's name",
        ),
        ("# only a comment\n".to_owned(), "defines no token"),
    ] {
        let err = Tokens::parse(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: {err}");
    }
    // The Debug form never shows a token.
    let t = Tokens::parse(&format!("admin {ADMIN_TOKEN}")).unwrap();
    assert!(!format!("{t:?}").contains(ADMIN_TOKEN));
}

/// The token file is the other list the node reads (issue 17 item 4): saved with CRLF line
/// ends, stray spaces and tabs it is read entry for entry; a byte-order mark is refused with
/// the line named, never read as part of a role.
#[test]
fn token_file_with_crlf_and_stray_spaces_is_read_and_a_bom_is_refused_naming_the_line() {
    let text = format!(
        "# tokens\r\n  admin \t{ADMIN_TOKEN}  \r\n\r\npublisher {PUBLISHER_TOKEN} {PUBLISHER}\r\n"
    );
    assert_eq!(
        format!("{:?}", Tokens::parse(&text).unwrap()),
        "Tokens(2 entries)"
    );
    // A carriage return is no part of a token or a publisher's name: the last word of a line
    // ends before it, as trailing text after it is refused.
    let err = Tokens::parse(&format!("admin {ADMIN_TOKEN}\r extra\r\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 1") && err.contains("trailing text"),
        "{err}"
    );
    let err = Tokens::parse(&format!("\u{feff}admin {ADMIN_TOKEN}\r\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 1") && err.contains("unknown role"),
        "{err}"
    );
}

#[test]
fn serve_refuses_a_token_file_that_others_can_read() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "admin adm-0123456789abcdef0123456789abcdef0123\n").unwrap();
    std::fs::set_permissions(
        &tokens,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .unwrap();
    let err = rapha_node::api::Tokens::load(&tokens)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mode 644 lets group or others read it"),
        "a world-readable token file is refused: {err}"
    );
}

#[test]
fn serve_refuses_a_token_file_with_a_guessable_token() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("tokens");
    rapha_core::fs::write_new_secret(&tokens, b"admin short\n").unwrap();
    let out = crate::node_common::node(&[
        "serve",
        "--config",
        tmp.path().join("node.toml").to_str().unwrap(),
        "--tokens",
        tokens.to_str().unwrap(),
        "--hospital",
        "0x0000000000000000000000000000000000000001",
        "--payout",
        "0x0000000000000000000000000000000000000002",
        "--settler-key-file",
        tmp.path().join("settler").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = crate::node_common::stderr(&out);
    assert!(
        err.contains("line 1: token shorter than 32 characters"),
        "{err}"
    );
}

#[test]
fn a_job_submitted_through_the_api_runs_in_the_background_and_its_receipt_is_in_the_log() {
    let Some(trainer) = trainer_binary() else {
        eprintln!("SKIPPED: gcc could not build the test trainer; API job test not run");
        return;
    };
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (bundle_dir, manifest) = bundle(tmp.path(), &trainer, "api", "honest", &publisher_key());
    let s = serve(tmp.path(), &chain);
    // The AI company uploads its signed bundle; the job request names it by digest.
    let (st, text) = s.upload(
        PUBLISHER_TOKEN,
        rapha_bundle::pack_bundle_to_vec(&bundle_dir).unwrap(),
    );
    assert_eq!(st, StatusCode::CREATED, "{text}");

    // A query with no study list, date range or limit: the node refuses it before any PACS
    // client exists, receipts the refusal and settles it without money moving.
    let request = rapha_core::JobRequest {
        job_id: rapha_core::JobId::random(),
        publisher: PUBLISHER.into(),
        trainer: TRAINER.into(),
        bundle_manifest: manifest,
        query: rapha_core::CohortQuery {
            modalities: vec!["CT".into()],
            ..rapha_core::CohortQuery::default()
        },
        requested_fields: vec![],
        validation_percent: 50,
        fee: Usdc::from_base_units(FEE),
        chain_id: 137,
        depositor: chain.company.address().to_string(),
        linkage: None,
    };
    // A node path in the body is no longer part of the API.
    let with_path = serde_json::to_vec(&serde_json::json!({
        "bundle_path": bundle_dir,
        "request": request,
    }))
    .unwrap();
    let (st, text) = s.call("post", "/v1/jobs", Some(PUBLISHER_TOKEN), Some(&with_path));
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::BAD_REQUEST, "bad-json"),
        "{text}"
    );
    let body = serde_json::to_vec(&serde_json::json!({ "request": request })).unwrap();
    let (st, text) = s.call("post", "/v1/jobs", Some(PUBLISHER_TOKEN), Some(&body));
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    let id: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(id["job_id"], request.job_id.to_string());
    let job = request.job_id;

    // The API answers while the job is driven; poll its status until it is settled.
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        assert_eq!(s.call("get", "/healthz", None, None).0, StatusCode::OK);
        let (st, text) = s.call(
            "get",
            &format!("/v1/jobs/{job}"),
            Some(PUBLISHER_TOKEN),
            None,
        );
        assert_eq!(st, StatusCode::OK, "{text}");
        status = serde_json::from_str(&text).unwrap();
        if status["state"] == "settled" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(status["state"], "settled", "{status}");
    assert_eq!(
        status["finished"], true,
        "a refused job ends settled: {status}"
    );
    assert_eq!(status["outcome"], "refused", "{status}");
    assert!(
        status["reason"].as_str().unwrap().contains("query"),
        "{status}"
    );

    // Its receipt, the log holding it, and an inclusion proof for it.
    let (st, text) = s.call(
        "get",
        &format!("/v1/jobs/{job}/receipt"),
        Some(PUBLISHER_TOKEN),
        None,
    );
    assert_eq!(st, StatusCode::OK, "{text}");
    let receipt: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(receipt["body"]["outcome"], "refused", "{receipt}");
    let (_, text) = s.call("get", "/v1/log/head", Some(DPO_TOKEN), None);
    let head: serde_json::Value = serde_json::from_str(&text).unwrap();
    let size = head["tree_size"].as_u64().unwrap();
    assert!(size >= 1, "{head}");
    let (st, text) = s.call(
        "get",
        &format!("/v1/log/inclusion?index=0&size={size}"),
        Some(PUBLISHER_TOKEN),
        None,
    );
    assert_eq!(st, StatusCode::OK, "{text}");

    // Another publisher's token learns nothing about the job, and cannot submit in this
    // publisher's name.
    for path in ["", "/receipt", "/outputs"] {
        let (st, text) = s.call(
            "get",
            &format!("/v1/jobs/{job}{path}"),
            Some(OTHER_TOKEN),
            None,
        );
        assert_eq!(
            (st, error_code(&text).as_str()),
            (StatusCode::NOT_FOUND, "unknown-job"),
            "{path}"
        );
    }
    let (st, text) = s.call("post", "/v1/jobs", Some(OTHER_TOKEN), Some(&body));
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );

    // Metrics count it; nothing was released.
    let (_, text) = s.call("get", "/metrics", Some(ADMIN_TOKEN), None);
    assert!(text.contains("rapha_jobs{state=\"settled\"} 1"), "{text}");
    let (st, _) = s.call(
        "get",
        &format!("/v1/jobs/{job}/outputs"),
        Some(PUBLISHER_TOKEN),
        None,
    );
    assert_eq!(st, StatusCode::NOT_FOUND);
}

mod token_file_fuzz {
    use proptest::prelude::*;

    fn seeds() -> Vec<String> {
        vec![
            format!(
                "# role token\npublisher {} acme-ai\ndpo {}\nadmin {}\n",
                super::PUBLISHER_TOKEN,
                super::DPO_TOKEN,
                super::ADMIN_TOKEN
            ),
            format!("admin {}  # the operator\n\n", super::ADMIN_TOKEN),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Mutated token files never panic the parser; a refusal names a line or says the
        /// file is empty; an accepted file never shows a token in its Debug form.
        #[test]
        fn token_parser_never_panics_and_never_prints_a_token(
            seed in 0usize..2,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = seeds()[seed].clone().into_bytes();
            for (at, b) in edits {
                let i = at % bytes.len();
                bytes[i] = b;
            }
            if let Ok(text) = String::from_utf8(bytes) {
                match rapha_node::api::Tokens::parse(&text) {
                    Ok(tokens) => {
                        let shown = format!("{tokens:?}");
                        for word in text.split_whitespace().filter(|w| w.len() >= 32) {
                            prop_assert!(!shown.contains(word));
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        prop_assert!(msg.contains("line ") || msg.contains("no token"), "{}", msg);
                    }
                }
            }
        }
    }
}
