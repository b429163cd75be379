//! Review finding 3 from the publisher's side: a trusted publisher makes verifying its bundle
//! expensive (a layer blob listed over and over, an envelope of junk signatures), or merely
//! large, and the node must neither spend what the publisher chooses nor hold the node lock
//! while it hashes; an upload whose time runs out stops and leaves nothing behind, and the
//! bytes it stages count against the publisher's quota while it runs. Against the real node
//! (its HTTP API, anvil; Orthanc, swtpm and runc for the job that reaches review).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rapha_bundle::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use rapha_bundle::oci::{Descriptor, OciLayout, MEDIA_CONFIG, MEDIA_LAYER_TAR, MEDIA_MANIFEST};
use rapha_bundle::statement::{Statement, TrainerId};
use rapha_bundle::{build_image, BuildSpec, SigningKey, TrainerPredicate, TrainerSpec};
use rapha_core::Digest;
use rapha_node::api::{ApiState, Quotas};
use reqwest::StatusCode;

use crate::api::{error_code, node, publisher_key, serve_state, tokens, Served, PUBLISHER_TOKEN};
use crate::pipeline_e2e::{bundle, world, Chain, PUBLISHER, TRAINER};
use crate::publisher_channels::{approve, get_json, wait_status, Dpo};

/// What a hand-signed bundle adds to the test trainer's image.
#[derive(Default)]
struct Extra {
    /// Bytes of an extra layer of zeros (none when 0).
    zeros: u64,
    /// How many times the manifest lists that layer.
    listed: usize,
    /// Junk signatures (no keyid) before the real one.
    junk: usize,
    /// Bytes of requested fields padding the signed statement.
    padding: usize,
}

/// A file of `bytes` zeros (sparse: no disk, and reading it is memory speed) and its digest.
fn zeros_blob(dir: &Path, bytes: u64) -> Digest {
    let tmp = dir.join(".zeros");
    std::fs::File::create(&tmp).unwrap().set_len(bytes).unwrap();
    let mut d = Digest::hasher();
    std::io::copy(&mut std::fs::File::open(&tmp).unwrap(), &mut d).unwrap();
    let digest = d.finish();
    std::fs::rename(&tmp, dir.join(digest.to_hex())).unwrap();
    digest
}

fn put_json(blobs: &Path, value: &impl serde::Serialize, media: &str) -> Descriptor {
    let bytes = serde_json::to_vec(value).unwrap();
    let d = Digest::of(&bytes);
    std::fs::write(blobs.join(d.to_hex()), &bytes).unwrap();
    Descriptor {
        media_type: media.into(),
        digest: d.to_oci(),
        size: bytes.len() as u64,
        annotations: None,
    }
}

/// The test trainer's image with `extra`, signed by hand with `key` (as a publisher may write
/// its bundle: `rapha bundle sign` would refuse most of these). Returns the bundle directory
/// and its manifest digest.
fn hand_signed(
    tmp: &Path,
    trainer: &Path,
    name: &str,
    key: &SigningKey,
    extra: &Extra,
) -> (PathBuf, Digest) {
    let rootfs = tmp.join(format!("{name}-rootfs"));
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy(trainer, rootfs.join("trainer")).unwrap();
    let dir = tmp.join(format!("{name}-bundle"));
    build_image(
        &BuildSpec {
            rootfs,
            entrypoint: vec!["/trainer".into(), "honest".into()],
            env: vec![],
        },
        &dir,
    )
    .unwrap();
    let (mut desc, mut manifest, mut config) = OciLayout::open(&dir).unwrap().image().unwrap();
    if extra.listed > 0 {
        let blobs = dir.join("blobs/sha256");
        let layer = zeros_blob(&blobs, extra.zeros);
        for _ in 0..extra.listed {
            manifest.layers.push(Descriptor {
                media_type: MEDIA_LAYER_TAR.into(),
                digest: layer.to_oci(),
                size: extra.zeros,
                annotations: None,
            });
            // An uncompressed layer's diff_id is its digest.
            config.rootfs.diff_ids.push(layer.to_oci());
        }
        manifest.config = put_json(&blobs, &config, MEDIA_CONFIG);
        desc = put_json(&blobs, &manifest, MEDIA_MANIFEST);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [desc]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
    let spec = TrainerSpec::from_toml(&format!(
        "publisher = \"{PUBLISHER}\"\nname = \"{TRAINER}\"\nversion = \"0.1.0\"\n\
         [resources]\nmemory_mb = 256\ncpus = 1\npids = 32\nwall_seconds = 120\n\
         [[outputs]]\nname = \"model.safetensors\"\nkind = \"safetensors\"\nmax_bytes = 65536\n\
         [[outputs.tensors]]\nname = \"w\"\ndtype = \"U8\"\nshape = [16]\n\
         [[outputs]]\nname = \"metrics.json\"\nkind = \"metrics-json\"\nmax_bytes = 4096\n"
    ))
    .unwrap();
    let predicate = TrainerPredicate {
        publisher: spec.publisher,
        trainer: TrainerId {
            name: spec.name,
            version: spec.version,
        },
        entrypoint: config.argv(),
        env: config.env(),
        outputs: spec.outputs,
        resources: spec.resources,
        requested_fields: (0..extra.padding / 24)
            .map(|i| format!("BodyPartExamined{i:06}"))
            .collect(),
        audit: None,
    };
    let manifest_digest = desc.sha256().unwrap();
    let statement = Statement::new(manifest_digest, &predicate).unwrap();
    let mut envelope = Envelope::sign(
        IN_TOTO_PAYLOAD_TYPE,
        &serde_json::to_vec(&statement).unwrap(),
        key,
    );
    let honest = envelope.signatures[0].clone();
    // A junk signature: the real one with a base64 digit of its scalar changed, so that it
    // parses and fails only after the whole statement is hashed.
    let mut junk = honest.clone();
    junk.keyid.clear();
    let mut chars: Vec<char> = junk.sig.chars().collect();
    chars[60] = if chars[60] == 'A' { 'B' } else { 'A' };
    junk.sig = chars.into_iter().collect();
    envelope.signatures = std::iter::repeat_n(junk, extra.junk)
        .chain(std::iter::once(honest))
        .collect();
    std::fs::write(
        dir.join("signature.dsse.json"),
        serde_json::to_vec(&envelope).unwrap(),
    )
    .unwrap();
    (dir, manifest_digest)
}

/// A stand-in trainer binary: the bundles uploaded here are never run.
fn fake_trainer(dir: &Path) -> PathBuf {
    let p = dir.join("fake-trainer");
    std::fs::write(&p, b"#!/bin/sh\nexit 0\n").unwrap();
    p
}

/// Uploads `archive` as the publisher: (status, body, time to the answer).
fn timed_upload(s: &Served, archive: Vec<u8>) -> (StatusCode, String, Duration) {
    let t = Instant::now();
    let (st, text) = s.upload(PUBLISHER_TOKEN, archive);
    (st, text, t.elapsed())
}

#[test]
fn a_bundle_listing_one_layer_127_times_is_refused_at_upload_in_moments() {
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let trainer = fake_trainer(tmp.path());
    // One 64 MiB blob in the archive, listed 127 times (with the image's own layer, as many
    // layers as a bundle may have): 8 GiB of hashing if taken at its word.
    let extra = Extra {
        zeros: 64 << 20,
        listed: 127,
        ..Extra::default()
    };
    let (dir, _) = hand_signed(tmp.path(), &trainer, "dup", &publisher_key(), &extra);
    let archive = rapha_bundle::pack_bundle_to_vec(&dir).unwrap();
    let state = ApiState::new(
        node(tmp.path(), &chain),
        tmp.path().join("jobs.sqlite"),
        tokens(),
    );
    let stored = state.bundle_dir().to_owned();
    let s = serve_state(state);
    let (st, text, took) = timed_upload(&s, archive);
    eprintln!("FIGURES upload of a 64 MiB layer listed 127 times: {st} after {took:?}");
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "bundle-refused"),
        "{text}"
    );
    assert!(text.contains("twice"), "{text}");
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    assert!(!stored.join(PUBLISHER).exists(), "the bundle was stored");
}

#[test]
fn a_bundle_with_hundreds_of_junk_signatures_is_refused_at_upload_in_moments() {
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let trainer = fake_trainer(tmp.path());
    // A 350 KB statement and 300 junk signatures before the real one, each hashing the
    // statement again if tried.
    let extra = Extra {
        junk: 300,
        padding: 350_000,
        ..Extra::default()
    };
    let (dir, _) = hand_signed(tmp.path(), &trainer, "junk", &publisher_key(), &extra);
    let archive = rapha_bundle::pack_bundle_to_vec(&dir).unwrap();
    let state = ApiState::new(
        node(tmp.path(), &chain),
        tmp.path().join("jobs.sqlite"),
        tokens(),
    );
    let stored = state.bundle_dir().to_owned();
    let s = serve_state(state);
    let (st, text, took) = timed_upload(&s, archive);
    eprintln!("FIGURES upload of a bundle with 300 junk signatures: {st} after {took:?}");
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "bundle-refused"),
        "{text}"
    );
    assert!(text.contains("301 signatures"), "{text}");
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    assert!(!stored.join(PUBLISHER).exists(), "the bundle was stored");
}

/// Mirrors `from` at `to` with hard links (the sparse layer is not copied).
fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            link_tree(&e.path(), &dest);
        } else {
            std::fs::hard_link(e.path(), &dest).unwrap();
        }
    }
}

#[test]
fn while_a_large_honest_bundle_is_verified_another_jobs_approval_and_status_answer_promptly() {
    let Some(w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "quick", "honest", &w.publisher_key);
    // The test trainer's image and a 4 GiB layer: honest, large, and seconds to hash.
    let extra = Extra {
        zeros: 4 << 30,
        listed: 1,
        ..Extra::default()
    };
    let (large_dir, large) = hand_signed(&tmp, &w.trainer, "large", &w.publisher_key, &extra);
    let a = w.request(manifest, w.scoped_query());
    let b = w.request(large, w.scoped_query());
    let dpo = Dpo(&w.dpo);
    let state = ApiState::new(w.node, tmp.join("jobs.sqlite"), tokens());
    // The large bundle is already in the node's bundle store (uploaded earlier; the upload is
    // not what this test is about).
    link_tree(
        &large_dir,
        &state
            .bundle_dir()
            .join(PUBLISHER)
            .join(format!("sha256-{}", large.to_hex())),
    );
    let s = serve_state(state);
    let (st, text) = crate::publisher_channels::submit(&s, &dir, &a);
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    let a_id = a.job_id.to_string();
    crate::api::wait_pending(&s, &a_id, 120);

    let body = serde_json::to_vec(&serde_json::json!({ "request": b })).unwrap();
    let (st, text) = s.call("post", "/v1/jobs", Some(PUBLISHER_TOKEN), Some(&body));
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    let b_id = b.job_id.to_string();
    std::thread::sleep(Duration::from_millis(500));

    // B's bundle is being verified. Meanwhile: A's approval and status.
    let t = Instant::now();
    approve(&s, &dpo, &a_id);
    let approve_took = t.elapsed();
    let t = Instant::now();
    let status = get_json(&s, &format!("/v1/jobs/{a_id}"), PUBLISHER_TOKEN);
    let status_took = t.elapsed();
    let a_moved = wait_status(&s, &a_id, 10, |v| v["state"] == "awaiting-deposit");
    let b_now = get_json(&s, &format!("/v1/jobs/{b_id}"), PUBLISHER_TOKEN);
    eprintln!(
        "FIGURES while a 4 GiB bundle was verified: approval {approve_took:?}, status \
         {status_took:?}; the other job was then {}",
        b_now["state"]
    );
    assert!(
        b_now["state"] == "received" || b_now["state"] == "bundle-verified",
        "B's verification ended before the calls: {b_now}"
    );
    for (what, took) in [("approval", approve_took), ("status", status_took)] {
        assert!(
            took < Duration::from_secs(2),
            "{what} took {took:?} while another job's bundle was verified"
        );
    }
    // The publisher sees `admitted` until the DPO's decision is committed, then `approved`
    // (the decision may be committed before this read or after it): never the cohort step's
    // own states.
    assert!(
        status["state"] == "admitted" || status["state"] == "approved",
        "{status}"
    );
    assert_eq!(a_moved["state"], "awaiting-deposit");
    // B goes on once verified (twice: its own step and admission), to its review.
    crate::api::wait_pending(&s, &b_id, 240);
}

/// One end of an in-memory pipe: what [`PipeWriter`] writes, read as a request body.
struct PipeReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.buf = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

struct PipeWriter(mpsc::SyncSender<Vec<u8>>);

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(buf.to_vec())
            .map_err(|_| std::io::Error::other("the request ended"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts what is written.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The bundle archive of `dir` as a request body, packed while it is sent (no copy on disk or
/// in memory), with its length.
fn streamed_archive(dir: &Path) -> reqwest::blocking::Body {
    let mut count = Counter(0);
    rapha_bundle::pack_bundle(dir, &mut count).unwrap();
    let (tx, rx) = mpsc::sync_channel(8);
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        let _ = rapha_bundle::pack_bundle(&dir, &mut std::io::BufWriter::new(PipeWriter(tx)));
    });
    reqwest::blocking::Body::sized(
        PipeReader {
            rx,
            buf: vec![],
            at: 0,
        },
        count.0,
    )
}

/// The upload staging directories under the bundle store `root`, and whether one of them has
/// reached unpacking (its body was received whole).
fn staging(root: &Path) -> (usize, bool) {
    let mut n = 0;
    let mut unpacking = false;
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(".upload-") {
            n += 1;
            unpacking |= e.path().join("bundle").exists();
        }
    }
    (n, unpacking)
}

#[test]
fn an_upload_whose_time_runs_out_stops_verifying_and_leaves_nothing_behind() {
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let trainer = fake_trainer(tmp.path());
    let extra = Extra {
        zeros: 384 << 20,
        listed: 1,
        ..Extra::default()
    };
    let (dir, _) = hand_signed(tmp.path(), &trainer, "slow", &publisher_key(), &extra);
    // The time limit must run out after the body was received (while it is unpacked and
    // verified, on the node's blocking threads): start short and lengthen it by half while it
    // runs out earlier; when an upload ends in time, aim at the middle of the span it spent
    // unpacking and verifying (on a loaded host the times vary from one upload to the next).
    let mut limit = Duration::from_millis(500);
    for attempt in 0..12 {
        let root = tmp.path().join(format!("node-{attempt}"));
        std::fs::create_dir_all(&root).unwrap();
        let state = ApiState::new(node(&root, &chain), root.join("jobs.sqlite"), tokens())
            .with_bundle_timeout(limit);
        let store = state.bundle_dir().to_owned();
        let s = serve_state(state);
        let stop = Arc::new(AtomicBool::new(false));
        let unpacking_seen = Arc::new(Mutex::new(None::<Instant>));
        let watcher = {
            let (stop, seen, store) = (stop.clone(), unpacking_seen.clone(), store.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if staging(&store).1 {
                        seen.lock().unwrap().get_or_insert_with(Instant::now);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let started = Instant::now();
        let sent = s
            .http
            .post(format!("{}/v1/bundles", s.base))
            .bearer_auth(PUBLISHER_TOKEN)
            .header("content-type", "application/x-tar")
            .body(streamed_archive(&dir))
            .send();
        let answered = Instant::now();
        let Ok(resp) = sent else {
            // Answered before the body was sent whole: try a longer limit.
            stop.store(true, Ordering::SeqCst);
            watcher.join().unwrap();
            limit = limit * 3 / 2;
            continue;
        };
        let (st, text) = (resp.status(), resp.text().unwrap());
        stop.store(true, Ordering::SeqCst);
        watcher.join().unwrap();
        if st == StatusCode::CREATED {
            let unpacked = unpacking_seen.lock().unwrap().map(|t| t - started);
            let done = answered - started;
            limit = unpacked.map_or(limit * 3 / 2, |u| (u + done) / 2);
            eprintln!("attempt {attempt}: stored after {done:?}, next limit {limit:?}");
            continue;
        }
        assert_eq!(
            (st, error_code(&text).as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            "{text}"
        );
        if unpacking_seen.lock().unwrap().is_none() {
            // The time ran out while the body was still arriving: try a longer limit.
            limit = limit * 3 / 2;
            continue;
        }
        // The staging directory goes at once, and nothing is stored, however long the
        // verification would have taken.
        let mut gone_after = None;
        for _ in 0..600 {
            if staging(&store).0 == 0 {
                gone_after = Some(answered.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let gone_after = gone_after.expect("the staging directory was never removed");
        std::thread::sleep(Duration::from_secs(2));
        eprintln!(
            "FIGURES upload timed out after {limit:?} while unpacking or verifying 384 MiB: \
             staging removed {gone_after:?} after the 503"
        );
        assert!(
            !store.join(PUBLISHER).exists(),
            "the timed-out upload was stored ({gone_after:?} after its 503)"
        );
        assert!(
            gone_after < Duration::from_secs(2),
            "the staging directory stayed {gone_after:?} after the 503"
        );
        return;
    }
    panic!("the time limit never ran out after the body was received");
}

/// A body of known length that sends its first `first` bytes, then waits until told to go on.
struct Paused {
    bytes: Vec<u8>,
    at: usize,
    first: usize,
    go: Option<mpsc::Receiver<()>>,
}

impl Read for Paused {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.first {
            if let Some(go) = self.go.take() {
                let _ = go.recv();
            }
        }
        let end = if self.at < self.first {
            self.first
        } else {
            self.bytes.len()
        };
        let n = out.len().min(end - self.at);
        out[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn an_upload_under_way_counts_against_the_publishers_bundle_quota() {
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let trainer = fake_trainer(tmp.path());
    let key = publisher_key();
    let archives: Vec<Vec<u8>> = (0..2u64)
        .map(|i| {
            // Two images (layers of different sizes), so the second cannot replace the first.
            let extra = Extra {
                zeros: (1 << 20) + i * 4096,
                listed: 1,
                ..Extra::default()
            };
            let (dir, _) = hand_signed(tmp.path(), &trainer, &format!("q{i}"), &key, &extra);
            rapha_bundle::pack_bundle_to_vec(&dir).unwrap()
        })
        .collect();
    // Room for one of these bundles, not two.
    let one = archives[0].len().max(archives[1].len()) as u64;
    let state = ApiState::new(
        node(tmp.path(), &chain),
        tmp.path().join("jobs.sqlite"),
        tokens(),
    )
    .with_quotas(Quotas {
        max_jobs_in_flight: 4,
        max_bundle_bytes: one + one / 2,
    });
    let store = state.bundle_dir().to_owned();
    let s = serve_state(state);
    // The first upload sends half its body and waits.
    let (go, wait) = mpsc::channel();
    let body = Paused {
        first: archives[0].len() / 2,
        bytes: archives[0].clone(),
        at: 0,
        go: Some(wait),
    };
    let len = archives[0].len() as u64;
    let base = s.base.clone();
    let first = std::thread::spawn(move || {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{base}/v1/bundles"))
            .bearer_auth(PUBLISHER_TOKEN)
            .header("content-type", "application/x-tar")
            .body(reqwest::blocking::Body::sized(body, len))
            .send()
            .unwrap();
        (resp.status(), resp.text().unwrap())
    });
    let mut waited = 0;
    while staging(&store).0 == 0 {
        assert!(waited < 200, "the first upload never started");
        std::thread::sleep(Duration::from_millis(25));
        waited += 1;
    }
    // While it runs, the second upload would put the publisher over its quota.
    let (st, text) = s.upload(PUBLISHER_TOKEN, archives[1].clone());
    let _ = go.send(());
    let (first_st, first_text) = first.join().unwrap();
    assert_eq!(first_st, StatusCode::CREATED, "{first_text}");
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "quota-exceeded"),
        "{text}"
    );
    let stored: Vec<_> = std::fs::read_dir(store.join(PUBLISHER))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(stored.len(), 1, "the publisher holds more than its quota");
}
