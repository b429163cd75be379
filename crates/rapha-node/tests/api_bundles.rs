//! Bundle upload (`POST /v1/bundles`) and job submission by manifest digest: the honest path
//! (stored once, by publisher and digest, re-upload is a no-op, jobs name it), and from the
//! attacker's side: hostile archives, untrusted signers, another publisher's bundle, a wrong
//! media type and oversized bodies are each refused with their own typed error, and nothing of
//! theirs is stored.

use std::path::{Path, PathBuf};

use rapha_bundle::{sign_bundle, ArchiveLimits, SigningKey, TrainerSpec, TrustStore};
use rapha_core::{CohortQuery, Digest, JobId, JobRequest, Usdc};
use rapha_node::api::bundles::{BundleStore, UploadError};
use rapha_node::api::ApiState;
use rapha_node::audit::AuditLog;
use reqwest::StatusCode;

use crate::api::{
    error_code, node, publisher_key, serve_state, tokens, ADMIN_TOKEN, DPO_TOKEN, OTHER_TOKEN,
    PUBLISHER_TOKEN,
};
use crate::pipeline_e2e::{bundle, Chain, FEE, PUBLISHER, TRAINER};

/// A stand-in for the trainer binary: these bundles are uploaded, never run.
fn fake_trainer(dir: &Path) -> PathBuf {
    let p = dir.join("fake-trainer");
    std::fs::write(&p, b"#!/bin/sh\nexit 0\n").unwrap();
    p
}

/// Renames the archive's first entry (and fixes its header checksum), or changes its type.
fn edit_first_header(archive: &[u8], name: Option<&str>, typeflag: Option<u8>) -> Vec<u8> {
    let mut out = archive.to_vec();
    if let Some(n) = name {
        out[..100].fill(0);
        out[..n.len()].copy_from_slice(n.as_bytes());
        out[345..500].fill(0); // the ustar prefix
    }
    if let Some(t) = typeflag {
        out[156] = t;
    }
    out[148..156].fill(b' ');
    let sum: u32 = out[..512].iter().map(|b| u32::from(*b)).sum();
    out[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out
}

fn request(manifest: Digest, publisher: &str, depositor: String) -> JobRequest {
    JobRequest {
        job_id: JobId::random(),
        publisher: publisher.into(),
        trainer: TRAINER.into(),
        bundle_manifest: manifest,
        // Broad: refused by the node before any PACS request, so the job ends quickly.
        query: CohortQuery {
            modalities: vec!["CT".into()],
            ..CohortQuery::default()
        },
        requested_fields: vec![],
        validation_percent: 50,
        fee: Usdc::from_base_units(FEE),
        chain_id: 137,
        depositor,
        linkage: None,
    }
}

fn stored_dirs(root: &Path) -> Vec<String> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match std::fs::read_dir(e.path()) {
                Ok(inner) if !name.starts_with('.') => {
                    for i in inner.flatten() {
                        out.push(format!("{name}/{}", i.file_name().to_string_lossy()));
                    }
                }
                _ => out.push(name),
            }
        }
    }
    out.sort();
    out
}

#[test]
fn uploaded_bundle_is_verified_stored_once_by_digest_and_named_by_jobs() {
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let trainer = fake_trainer(tmp.path());
    let (bundle_dir, manifest) = bundle(tmp.path(), &trainer, "up", "honest", &publisher_key());
    let archive = rapha_bundle::pack_bundle_to_vec(&bundle_dir).unwrap();
    let state = ApiState::new(
        node(tmp.path(), &chain),
        tmp.path().join("jobs.sqlite"),
        tokens(),
    );
    let store_root = state.bundle_dir().to_owned();
    assert_eq!(store_root, tmp.path().join("bundles"));
    let s = serve_state(state);
    let depositor = chain.company.address().to_string();

    // A job naming a bundle the node has never received: told to upload it first.
    let req = request(manifest, PUBLISHER, depositor.clone());
    let body = serde_json::to_vec(&serde_json::json!({ "request": req })).unwrap();
    let (st, text) = s.call("post", "/v1/jobs", Some(PUBLISHER_TOKEN), Some(&body));
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown-bundle"),
        "{text}"
    );
    assert!(text.contains("POST /v1/bundles"), "{text}");

    // The wrong media type, and a role that may not upload.
    let (st, text) = s.call("post", "/v1/bundles", Some(PUBLISHER_TOKEN), Some(&archive));
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type"),
        "{text}"
    );
    let (st, text) = s.upload(DPO_TOKEN, archive.clone());
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );

    // The honest upload: 201 with the digest to put in job requests; stored under the
    // publisher and digest; nothing else left in the store.
    let (st, text) = s.upload(PUBLISHER_TOKEN, archive.clone());
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        stored,
        serde_json::json!({
            "bundle_manifest": manifest.to_oci(),
            "publisher": PUBLISHER,
            "trainer": TRAINER,
            "trainer_version": "0.1.0",
        })
    );
    let digest_dir = format!("sha256-{}", manifest.to_hex());
    assert_eq!(
        stored_dirs(&store_root),
        vec![format!("{PUBLISHER}/{digest_dir}")]
    );
    assert_eq!(
        std::fs::read(
            store_root
                .join(PUBLISHER)
                .join(&digest_dir)
                .join("signature.dsse.json")
        )
        .unwrap(),
        std::fs::read(bundle_dir.join("signature.dsse.json")).unwrap()
    );
    // Uploading it again changes nothing and says so.
    let (st, again) = s.upload(PUBLISHER_TOKEN, archive.clone());
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&again).unwrap(),
        stored
    );

    // Another publisher's token cannot upload (and so cannot shadow) acme-ai's bundle.
    let (st, text) = s.upload(OTHER_TOKEN, archive.clone());
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{text}"
    );
    assert!(text.contains(PUBLISHER), "{text}");

    // A bundle signed by a key the hospital does not trust: well-formed, refused.
    let untrusted = SigningKey::ed25519_from_seed(&[8; 32]);
    let (rogue_dir, _) = bundle(tmp.path(), &trainer, "rogue", "honest", &untrusted);
    let (st, text) = s.upload(
        PUBLISHER_TOKEN,
        rapha_bundle::pack_bundle_to_vec(&rogue_dir).unwrap(),
    );
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "bundle-refused"),
        "{text}"
    );
    assert!(text.contains("trust store"), "{text}");

    // Hostile archives: each refused with the archive rule it broke.
    for (what, bytes, words) in [
        (
            "traversal",
            edit_first_header(&archive, Some("../../../etc/cron.d/x"), None),
            "path traversal",
        ),
        (
            "absolute",
            edit_first_header(&archive, Some("/etc/passwd"), None),
            "absolute path",
        ),
        (
            "symlink",
            edit_first_header(&archive, None, Some(b'2')),
            "symbolic link",
        ),
        (
            "hard link",
            edit_first_header(&archive, None, Some(b'1')),
            "hard link",
        ),
        (
            "truncated",
            archive[..archive.len() / 2].to_vec(),
            "ends early",
        ),
        (
            "stray name",
            edit_first_header(&archive, Some("run.sh"), None),
            "holds only",
        ),
    ] {
        let (st, text) = s.upload(ADMIN_TOKEN, bytes);
        assert_eq!(
            (st, error_code(&text).as_str()),
            (StatusCode::BAD_REQUEST, "bad-archive"),
            "{what}: {text}"
        );
        assert!(text.contains(words), "{what}: {text}");
    }
    assert!(!tmp.path().join("etc").exists());
    assert_eq!(
        stored_dirs(&store_root),
        vec![format!("{PUBLISHER}/{digest_dir}")],
        "refused uploads left nothing in the store"
    );

    // The job names the uploaded bundle by digest (with or without the sha256: prefix) ...
    let mut body: serde_json::Value = serde_json::json!({ "request": req });
    body["request"]["bundle_manifest"] = manifest.to_oci().into();
    let (st, text) = s.call(
        "post",
        "/v1/jobs",
        Some(PUBLISHER_TOKEN),
        Some(&serde_json::to_vec(&body).unwrap()),
    );
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    // ... and only that publisher's stored bundles count: the admin naming acme-ai's digest
    // under another publisher finds nothing.
    let other = request(manifest, "other-co", depositor);
    let body = serde_json::to_vec(&serde_json::json!({ "request": other })).unwrap();
    let (st, text) = s.call("post", "/v1/jobs", Some(ADMIN_TOKEN), Some(&body));
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown-bundle"),
        "{text}"
    );
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, text) = s.call(
            "get",
            &format!("/v1/jobs/{}", req.job_id),
            Some(PUBLISHER_TOKEN),
            None,
        );
        status = serde_json::from_str(&text).unwrap();
        if status["state"] == "settled" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(status["state"], "settled", "{status}");
    // Refused before a cohort was built: no record counts (and the publisher is never shown
    // a feed count, issue 18).
    assert_eq!(status["records"], serde_json::json!({"cohort": null}));

    // Uploads are audited: the stored bundle by digest, the refusals by code.
    let audit = tmp.path().join("audit.jsonl");
    let mut events = vec![];
    for _ in 0..50 {
        events = AuditLog::read_all(&audit).unwrap_or_default();
        let refusals = events
            .iter()
            .filter(|e| e.outcome_description.starts_with("bundle upload refused"))
            .count();
        if refusals >= 8 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let uploads: Vec<_> = events
        .iter()
        .filter(|e| e.event_id == "110100" && e.outcome_description.starts_with("bundle uploaded"))
        .collect();
    assert_eq!(uploads.len(), 2, "first upload and the repeat");
    assert_eq!(uploads[0].objects[0].id_type_code, "bundle-manifest");
    assert_eq!(uploads[0].objects[0].id, manifest.to_oci());
    let refused = events
        .iter()
        .filter(|e| {
            e.event_id == "110113" && e.outcome_description.starts_with("bundle upload refused")
        })
        .count();
    // forbidden (other publisher), bundle-refused, six bad archives.
    assert!(refused >= 8, "{refused} upload refusals audited");
}

/// A 413 `body-too-large`, or (when the node answered while the client was still sending) a
/// connection closed under the request body.
fn refused_as_too_large(sent: reqwest::Result<reqwest::blocking::Response>) {
    match sent {
        Ok(resp) => {
            assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(error_code(&resp.text().unwrap()), "body-too-large");
        }
        Err(e) => assert!(e.is_body() || e.is_request(), "{e}"),
    }
}

#[test]
fn bundle_uploads_over_the_limit_are_refused_with_or_without_a_content_length() {
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let trainer = fake_trainer(tmp.path());
    let (bundle_dir, _) = bundle(tmp.path(), &trainer, "big", "honest", &publisher_key());
    let archive = rapha_bundle::pack_bundle_to_vec(&bundle_dir).unwrap();
    let limit = 4096;
    assert!(archive.len() > limit);
    let state = ApiState::new(
        node(tmp.path(), &chain),
        tmp.path().join("jobs.sqlite"),
        tokens(),
    )
    .with_bundle_limit(limit as u64)
    .with_bundle_dir(tmp.path().join("data/bundles"));
    assert_eq!(state.bundle_dir(), tmp.path().join("data/bundles"));
    let s = serve_state(state);
    // Content-Length over the limit: refused before the body is read.
    let sent = s
        .http
        .post(format!("{}/v1/bundles", s.base))
        .bearer_auth(PUBLISHER_TOKEN)
        .header("content-type", "application/x-tar")
        .body(archive.clone())
        .send();
    refused_as_too_large(sent);
    // A chunked body (no length up front) is counted as it arrives; either way the bundle (a
    // valid one) is not stored.
    let sent = s
        .http
        .post(format!("{}/v1/bundles", s.base))
        .bearer_auth(PUBLISHER_TOKEN)
        .header("content-type", "application/x-tar")
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(archive)))
        .send();
    refused_as_too_large(sent);
    assert!(stored_dirs(&tmp.path().join("data/bundles")).is_empty());
    assert!(!tmp.path().join("bundles").exists());
    // The node still answers (on a new connection: the refused one was closed).
    let fresh = reqwest::blocking::Client::new()
        .get(format!("{}/healthz", s.base))
        .send()
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
}

#[test]
fn bundle_store_replaces_a_re_signed_bundle_refuses_another_publisher_and_clears_leftovers() {
    let tmp = tempfile::tempdir().unwrap();
    let key = publisher_key();
    TrustStore::add(
        &tmp.path().join("trust"),
        PUBLISHER,
        &key.public_key(),
        &[TRAINER.into()],
        None,
    )
    .unwrap();
    let root = tmp.path().join("bundles");
    std::fs::create_dir_all(root.join(".upload-interrupted")).unwrap();
    std::fs::write(root.join(".upload-interrupted/archive.tar"), b"partial").unwrap();
    let store = BundleStore::new(root.clone(), tmp.path().join("trust"));
    assert!(
        stored_dirs(&root).is_empty(),
        "an interrupted upload is cleared at start-up"
    );
    let trainer = fake_trainer(tmp.path());
    let (dir, manifest) = bundle(tmp.path(), &trainer, "s", "honest", &key);
    let put = |bundle_dir: &Path, publisher: Option<&str>| {
        let staging = store.staging().unwrap();
        std::fs::write(
            staging.archive(),
            rapha_bundle::pack_bundle_to_vec(bundle_dir).unwrap(),
        )
        .unwrap();
        store.accept(
            &staging,
            &ArchiveLimits::default(),
            publisher,
            &rapha_bundle::Cancel::new(),
        )
    };

    let err = put(&dir, Some("other-co")).unwrap_err();
    assert!(
        matches!(&err, UploadError::OtherPublisher { signer, token } if signer == PUBLISHER && token == "other-co"),
        "{err}"
    );
    assert!(store.find(PUBLISHER, &manifest).is_none());

    let first = put(&dir, Some(PUBLISHER)).unwrap();
    assert!(first.created);
    assert_eq!(first.manifest, manifest);
    assert!(!put(&dir, None).unwrap().created, "same bundle again");

    // The same image re-signed as version 0.2.0: same manifest, new envelope, which replaces
    // the old one.
    let spec = TrainerSpec::from_toml(&format!(
        "publisher = \"{PUBLISHER}\"\nname = \"{TRAINER}\"\nversion = \"0.2.0\"\n\
         [[outputs]]\nname = \"metrics.json\"\nkind = \"metrics-json\"\nmax_bytes = 4096\n"
    ))
    .unwrap();
    let resigned = tmp.path().join("resigned");
    assert_eq!(
        sign_bundle(&key, &tmp.path().join("s-layout"), &spec, &resigned).unwrap(),
        manifest
    );
    let second = put(&resigned, Some(PUBLISHER)).unwrap();
    assert!(second.created);
    assert_eq!(second.trainer_version, "0.2.0");
    let found = store.find(PUBLISHER, &manifest).unwrap();
    assert_eq!(
        std::fs::read(found.join("signature.dsse.json")).unwrap(),
        std::fs::read(resigned.join("signature.dsse.json")).unwrap()
    );
    assert_eq!(
        stored_dirs(&root),
        vec![format!("{PUBLISHER}/sha256-{}", manifest.to_hex())],
        "no staging or replaced copies left"
    );
    // Lookups never leave the store.
    assert!(store.find("..", &manifest).is_none());
    assert!(store.find("../bundles/acme-ai", &manifest).is_none());
    assert!(store.find("other-co", &manifest).is_none());
}

/// A body that sends one block, then waits until told to end.
struct Stalling {
    first: Option<Vec<u8>>,
    release: std::sync::mpsc::Receiver<()>,
}

impl std::io::Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(b) = self.first.take() {
            buf[..b.len()].copy_from_slice(&b);
            return Ok(b.len());
        }
        let _ = self.release.recv();
        Ok(0)
    }
}

#[test]
fn uploads_beyond_the_concurrency_limit_are_refused_with_429_until_one_ends() {
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let s = serve_state(
        ApiState::new(
            node(tmp.path(), &chain),
            tmp.path().join("jobs.sqlite"),
            tokens(),
        )
        .with_max_uploads(1),
    );
    let (release, wait) = std::sync::mpsc::channel();
    let base = s.base.clone();
    let slow = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .post(format!("{base}/v1/bundles"))
            .bearer_auth(PUBLISHER_TOKEN)
            .header("content-type", "application/x-tar")
            .body(reqwest::blocking::Body::new(Stalling {
                first: Some(vec![0u8; 512]),
                release: wait,
            }))
            .send()
            .unwrap()
            .status()
    });
    // While the slow upload holds the only slot, another is refused (poll: the slow one
    // needs a moment to reach the handler).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut refused = None;
    for _ in 0..100 {
        let (st, text) = s.upload(PUBLISHER_TOKEN, vec![0u8; 1024]);
        if st == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(text);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let text = refused.expect("a second upload was never refused");
    assert_eq!(error_code(&text), "too-many-uploads");
    // The slow upload ends (one zero block: a truncated archive); the slot is free again.
    let _ = release.send(());
    assert_eq!(slow.join().unwrap(), StatusCode::BAD_REQUEST);
    let (st, text) = s.upload(PUBLISHER_TOKEN, vec![0u8; 1024]);
    // Two zero blocks: an empty archive, so not a bundle (nothing signed in it).
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "bundle-refused"),
        "{text}"
    );
}

#[test]
fn a_request_that_cannot_get_the_busy_node_in_time_is_a_503_node_busy_that_did_nothing() {
    let lock = std::sync::Arc::new(std::sync::Mutex::new(0u32));
    let held = std::sync::Arc::clone(&lock);
    let (taken, wait) = std::sync::mpsc::channel();
    let (done, release) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _g = held.lock().unwrap();
        taken.send(()).unwrap();
        let _ = release.recv();
    });
    wait.recv().unwrap();
    let err = rapha_node::api::lock_within(&lock, std::time::Duration::from_millis(100))
        .expect_err("the lock is held");
    let resp = axum::response::IntoResponse::into_response(err);
    assert_eq!(resp.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
    let body = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(axum::body::to_bytes(resp.into_body(), 4096))
        .unwrap();
    assert_eq!(error_code(&String::from_utf8_lossy(&body)), "node-busy");
    done.send(()).unwrap();
    holder.join().unwrap();
    // Once free, the caller gets it (and could act).
    *rapha_node::api::lock_within(&lock, std::time::Duration::from_millis(100)).unwrap() += 1;
    assert_eq!(*lock.lock().unwrap(), 1);
}
