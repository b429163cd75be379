//! The record feed, spoken to over a real Unix socket exactly as a trainer would.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use rapha_core::JobId;
use rapha_enclave::feed::{self, Feed, FeedState};
use rapha_enclave::protocol::{read_frame, write_frame, MAX_IN_FLIGHT, MAX_REQUEST_HEADER};
use rapha_enclave::split::{split_records, Split};
use rapha_enclave::RecordSource;
use serde_json::{json, Value};

use crate::support::{cohort, SIDE};

struct Client(UnixStream);

impl Client {
    fn call(&mut self, req: Value) -> (Value, Vec<u8>) {
        write_frame(&mut self.0, &serde_json::to_vec(&req).unwrap(), &[]).unwrap();
        read_frame(&mut self.0).unwrap()
    }
}

/// Runs `f` against a feed serving a 20-patient cohort; returns the feed's final state.
fn with_feed(f: impl FnOnce(&dyn Fn() -> Client, &[Split])) -> FeedState {
    with_source(&cohort(20, 9).source, f)
}

/// Runs `f` against a feed serving `source`; returns the feed's final state.
fn with_source(
    source: &dyn RecordSource,
    f: impl FnOnce(&dyn Fn() -> Client, &[Split]),
) -> FeedState {
    let splits = split_records(source.records(), 30);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.sock");
    let listener = feed::bind(&path).unwrap();
    let feed = Feed {
        job: JobId::from_bytes([1; 16]),
        confinement: "none-development",
        source,
        splits: &splits,
        state: Mutex::new(FeedState::default()),
        stop: AtomicBool::new(false),
        decoders: feed::decoders(),
    };
    std::thread::scope(|s| {
        s.spawn(|| feed.serve(&listener));
        let connect = || Client(UnixStream::connect(&path).unwrap());
        f(&connect, &splits);
        feed.stop.store(true, Ordering::Relaxed);
    });
    feed.state.into_inner().unwrap()
}

fn hello(c: &mut Client) -> Value {
    c.call(json!({"op": "hello", "protocol": 1, "trainer": "test"}))
        .0
}

#[test]
fn validation_labels_are_never_sent() {
    with_feed(|connect, splits| {
        let mut c = connect();
        let h = hello(&mut c);
        assert_eq!(h["confinement"], "none-development");
        assert_eq!(h["records"], 20);
        let (list, _) = c.call(json!({"op": "list", "offset": 0, "limit": 1000}));
        let recs = list["records"].as_array().unwrap();
        assert_eq!(recs.len(), 20);
        let mut val = 0;
        for r in recs {
            let i = r["index"].as_u64().unwrap() as usize;
            match splits[i] {
                Split::Validation => {
                    val += 1;
                    assert_eq!(r["split"], "validation");
                    assert!(
                        r.get("label").is_none(),
                        "validation record {i} carries a label"
                    );
                }
                Split::Train => assert!(r["label"].is_u64()),
            }
            assert_eq!(r["instance"].as_str().unwrap().len(), 64);
        }
        assert_eq!(val, 6, "30% of 20 patients");
        // Not in any other message either.
        let (f, _) = c.call(json!({"op": "fetch", "index": splits.iter().position(|s| *s == Split::Validation).unwrap()}));
        assert!(f.get("label").is_none());
    });
}

#[test]
fn split_is_by_patient_deterministic_and_disjoint() {
    let c = cohort(60, 3);
    let recs = c.source.records();
    let a = split_records(recs, 25);
    assert_eq!(a, split_records(recs, 25));
    let train: BTreeSet<_> = recs
        .iter()
        .zip(&a)
        .filter(|(_, s)| **s == Split::Train)
        .map(|(r, _)| r.patient)
        .collect();
    let val: BTreeSet<_> = recs
        .iter()
        .zip(&a)
        .filter(|(_, s)| **s == Split::Validation)
        .map(|(r, _)| r.patient)
        .collect();
    assert!(train.is_disjoint(&val));
    assert_eq!(val.len(), 15);
    // The split depends on the patients, not on the order the records arrive in.
    let mut reversed = recs.to_vec();
    reversed.reverse();
    let b = split_records(&reversed, 25);
    let val_b: BTreeSet<_> = reversed
        .iter()
        .zip(&b)
        .filter(|(_, s)| **s == Split::Validation)
        .map(|(r, _)| r.patient)
        .collect();
    assert_eq!(val, val_b);
}

#[test]
fn fetch_serves_pixels_by_random_access_and_fingerprints_them() {
    let state = with_feed(|connect, _| {
        let mut c = connect();
        hello(&mut c);
        for i in [7usize, 2, 7, 19] {
            let (h, px) = c.call(json!({"op": "fetch", "index": i}));
            assert_eq!(h["ok"], true);
            assert_eq!(h["dtype"], "u16");
            assert_eq!(h["shape"], json!([1, SIDE, SIDE, 1]));
            assert_eq!(px.len(), (SIDE * SIDE * 2) as usize);
        }
        let (h, _) = c.call(json!({"op": "fetch", "index": 20}));
        assert_eq!(h["error"], "no_such_record");
    });
    assert_eq!(state.fed, BTreeSet::from([2, 7, 19]));
    assert_eq!(state.records_fed, 4);
    assert!(!state.fingerprints.is_empty());
}

#[test]
fn predictions_only_for_validation_records_once_each_in_range() {
    let state = with_feed(|connect, splits| {
        let val: Vec<usize> = (0..20)
            .filter(|&i| splits[i] == Split::Validation)
            .collect();
        let train = (0..20).find(|&i| splits[i] == Split::Train).unwrap();
        let mut c = connect();
        hello(&mut c);
        let pred = |i: usize, s: f64| json!({"index": i, "score": s});
        let (r, _) =
            c.call(json!({"op": "predict", "predictions": [pred(val[0], 0.5), pred(train, 0.5)]}));
        assert_eq!(r["error"], "not_validation");
        let (r, _) = c.call(json!({"op": "predict", "predictions": [pred(val[0], 1.5)]}));
        assert_eq!(r["error"], "bad_score");
        let (r, _) = c.call(json!({"op": "predict", "predictions": [pred(val[0], 0.9)]}));
        assert_eq!(
            (r["accepted"].as_u64(), r["remaining"].as_u64()),
            (Some(1), Some(val.len() as u64 - 1))
        );
        let (r, _) = c.call(json!({"op": "predict", "predictions": [pred(val[0], 0.1)]}));
        assert_eq!(r["error"], "duplicate_prediction");
        // State survives a reconnect.
        drop(c);
        let mut c = connect();
        hello(&mut c);
        let (r, _) = c.call(json!({"op": "predict", "predictions": [pred(val[1], 0.2)]}));
        assert_eq!(r["ok"], true);
        let (r, _) = c.call(json!({"op": "done"}));
        assert_eq!(r["predicted"], 2);
        let mut c = connect();
        assert_eq!(hello(&mut c)["error"], "finished");
    });
    assert_eq!(state.predictions.len(), 2);
    assert!(state.done);
}

#[test]
fn hello_is_required_and_unknown_fields_are_refused() {
    with_feed(|connect, _| {
        let mut c = connect();
        assert_eq!(
            c.call(json!({"op": "list", "offset": 0, "limit": 10})).0["error"],
            "protocol"
        );
        assert_eq!(
            c.call(json!({"op": "hello", "protocol": 2})).0["error"],
            "protocol"
        );
        assert_eq!(
            c.call(json!({"op": "hello", "protocol": 1, "path": "/etc"}))
                .0["error"],
            "bad_request"
        );
        assert_eq!(hello(&mut c)["ok"], true);
        assert_eq!(
            c.call(json!({"op": "list", "offset": 0, "limit": 1001})).0["error"],
            "bad_request"
        );
        assert_eq!(
            c.call(json!({"op": "progress", "metrics": {"Patient Name": 1.0}}))
                .0["error"],
            "bad_request"
        );
        assert_eq!(
            c.call(json!({"op": "progress", "epoch": 2, "loss": 0.3})).0["ok"],
            true
        );
    });
}

#[test]
fn oversized_header_closes_the_connection_without_allocating() {
    let state = with_feed(|connect, _| {
        let mut c = connect();
        let len = (MAX_REQUEST_HEADER as u32 + 1).to_le_bytes();
        c.0.write_all(&len).unwrap();
        // The node closes: the next read sees EOF, not a response.
        let r = read_frame(&mut c.0);
        assert!(r.is_err());
        // A new connection still works.
        let mut c = connect();
        assert_eq!(hello(&mut c)["ok"], true);
    });
    assert_eq!(state.protocol_errors, 1);
}

#[test]
fn self_reported_progress_is_kept_apart() {
    let state = with_feed(|connect, _| {
        let mut c = connect();
        hello(&mut c);
        c.call(json!({"op": "progress", "epoch": 4, "metrics": {"auc": 0.99}}));
    });
    let sr = state.self_reported.unwrap();
    assert_eq!(sr.epoch, Some(4));
    assert_eq!(sr.metrics, BTreeMap::from([("auc".to_string(), 0.99)]));
}

fn fetch_frame(index: usize) -> Vec<u8> {
    let h = serde_json::to_vec(&json!({"op": "fetch", "index": index})).unwrap();
    let mut out = (h.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out
}

#[test]
fn pipelined_fetches_are_answered_in_order_up_to_the_in_flight_limit() {
    let expected = cohort(20, 9);
    let state = with_feed(|connect, _| {
        let mut c = connect();
        hello(&mut c);
        // The protocol's limit, all written before any answer is read, in one write.
        let order: Vec<usize> = (0..MAX_IN_FLIGHT).map(|k| (k * 7 + 3) % 20).collect();
        let burst: Vec<u8> = order.iter().flat_map(|&i| fetch_frame(i)).collect();
        c.0.write_all(&burst).unwrap();
        for &i in &order {
            let (h, px) = read_frame(&mut c.0).unwrap();
            assert_eq!(h["ok"], true, "{h}");
            assert_eq!(h["index"], i);
            assert_eq!(px, expected.source.pixels(i).unwrap().bytes);
        }
        // The connection is still in step.
        assert_eq!(c.call(json!({"op": "done"})).0["ok"], true);
    });
    assert_eq!(state.records_fed, MAX_IN_FLIGHT as u64);
    assert_eq!(state.protocol_errors, 0);
}

#[test]
fn flooding_trainer_gets_a_protocol_error_and_is_disconnected() {
    let state = with_feed(|connect, _| {
        let mut c = connect();
        c.0.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        hello(&mut c);
        // A hostile trainer writes requests without reading answers: far more than the node
        // may be asked to hold (10 000 requests, ~250 KiB), from another thread so the
        // node's answers are read meanwhile.
        let mut w = c.0.try_clone().unwrap();
        let flood = std::thread::spawn(move || {
            for i in 0..10_000 {
                if w.write_all(&fetch_frame(i % 20)).is_err() {
                    return i; // the node closed the connection
                }
            }
            10_000
        });
        let mut answered = 0;
        let refusal = loop {
            let (h, _) = read_frame(&mut c.0).expect("the node answers before it closes");
            if h["ok"] == false {
                break h;
            }
            answered += 1;
        };
        assert_eq!(refusal["error"], "protocol");
        assert_eq!(
            refusal["message"],
            format!("more than {MAX_IN_FLIGHT} requests in flight; the connection is closed")
        );
        // Cut off early: nowhere near all of the flood was answered, and nothing follows.
        assert!(
            answered < 200,
            "{answered} requests answered before the refusal"
        );
        assert!(read_frame(&mut c.0).is_err());
        let sent = flood.join().unwrap();
        assert!(sent > answered, "{sent} sent, {answered} answered");
        // The job goes on: a new connection is served.
        let mut c = connect();
        assert_eq!(hello(&mut c)["ok"], true);
    });
    assert_eq!(state.protocol_errors, 1);
}

#[test]
fn requests_split_across_writes_and_bytes_are_reassembled() {
    let expected = cohort(20, 9);
    with_feed(|connect, _| {
        let mut c = connect();
        hello(&mut c);
        // Three requests dribbled a few bytes at a time: the node must wait for whole frames.
        let bytes: Vec<u8> = [4usize, 11, 0]
            .iter()
            .flat_map(|&i| fetch_frame(i))
            .collect();
        for chunk in bytes.chunks(5) {
            c.0.write_all(chunk).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for i in [4usize, 11, 0] {
            let (h, px) = read_frame(&mut c.0).unwrap();
            assert_eq!(h["index"], i);
            assert_eq!(px, expected.source.pixels(i).unwrap().bytes);
        }
    });
}

/// A record source that counts decodes per record.
struct Counting<'a> {
    inner: &'a dyn RecordSource,
    decodes: Mutex<BTreeMap<usize, u32>>,
}

impl RecordSource for Counting<'_> {
    fn records(&self) -> &[rapha_enclave::FeedRecord] {
        self.inner.records()
    }
    fn pixels(&self, index: usize) -> rapha_enclave::Result<rapha_enclave::Pixels> {
        *self.decodes.lock().unwrap().entry(index).or_default() += 1;
        self.inner.pixels(index)
    }
}

#[test]
fn records_fetched_again_are_kept_decoded_and_served_identically() {
    let cohort = cohort(20, 9);
    let source = Counting {
        inner: &cohort.source,
        decodes: Mutex::new(BTreeMap::new()),
    };
    let state = with_source(&source, |connect, _| {
        let mut c = connect();
        hello(&mut c);
        // Four epochs of record 3, one fetch of record 5.
        for i in [3usize, 5, 3, 3, 3] {
            let (h, px) = c.call(json!({"op": "fetch", "index": i}));
            assert_eq!(h["index"], i);
            assert_eq!(px, cohort.source.pixels(i).unwrap().bytes);
        }
        c.call(json!({"op": "done"}));
    });
    // Decoded on the first and second fetch (kept then), never again; once-fetched records
    // are not kept.
    assert_eq!(
        *source.decodes.lock().unwrap(),
        BTreeMap::from([(3, 2), (5, 1)])
    );
    assert_eq!(state.records_fed, 5);
    assert_eq!(state.fed, BTreeSet::from([3, 5]));
}

/// A record source whose decodes take time (the first records longest, so later ones finish
/// first when they run side by side), counting how many run at once.
struct Slow<'a> {
    inner: &'a dyn RecordSource,
    running: AtomicUsize,
    most: AtomicUsize,
}

impl RecordSource for Slow<'_> {
    fn records(&self) -> &[rapha_enclave::FeedRecord] {
        self.inner.records()
    }
    fn pixels(&self, index: usize) -> rapha_enclave::Result<rapha_enclave::Pixels> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(30 - index as u64 % 20));
        let p = self.inner.pixels(index);
        self.running.fetch_sub(1, Ordering::SeqCst);
        p
    }
}

#[test]
fn pipelined_fetches_decode_side_by_side_and_are_answered_in_request_order() {
    let cohort = cohort(20, 9);
    let slow = |inner| Slow {
        inner,
        running: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    };
    let order: Vec<usize> = (0..MAX_IN_FLIGHT).collect();
    let source = slow(&cohort.source);
    let state = with_source(&source, |connect, _| {
        let mut c = connect();
        hello(&mut c);
        let burst: Vec<u8> = order.iter().flat_map(|&i| fetch_frame(i)).collect();
        c.0.write_all(&burst).unwrap();
        for &i in &order {
            let (h, px) = read_frame(&mut c.0).unwrap();
            assert_eq!(h["index"], i, "answers come in request order");
            assert_eq!(px, cohort.source.pixels(i).unwrap().bytes);
        }
        assert_eq!(c.call(json!({"op": "done"})).0["ok"], true);
    });
    assert!(
        source.most.load(Ordering::SeqCst) >= 2,
        "pipelined records decoded one at a time"
    );
    assert_eq!(state.records_fed, MAX_IN_FLIGHT as u64);
    assert_eq!(state.fed.len(), MAX_IN_FLIGHT);
    assert!(!state.fingerprints.is_empty());

    // One request at a time: each is decoded where it is read, one at a time.
    let source = slow(&cohort.source);
    with_source(&source, |connect, _| {
        let mut c = connect();
        hello(&mut c);
        for i in [5usize, 1, 7] {
            let (h, px) = c.call(json!({"op": "fetch", "index": i}));
            assert_eq!(h["index"], i);
            assert_eq!(px, cohort.source.pixels(i).unwrap().bytes);
        }
    });
    assert_eq!(source.most.load(Ordering::SeqCst), 1);
}

/// A record source whose decoder panics on record 2 (a bug, say on a malformed instance).
struct PanicsOnTwo<'a>(&'a dyn RecordSource);

impl RecordSource for PanicsOnTwo<'_> {
    fn records(&self) -> &[rapha_enclave::FeedRecord] {
        self.0.records()
    }
    fn pixels(&self, index: usize) -> rapha_enclave::Result<rapha_enclave::Pixels> {
        assert_ne!(index, 2, "a decoder bug");
        self.0.pixels(index)
    }
}

#[test]
fn a_decoder_panic_answers_unavailable_in_place_and_the_connection_goes_on() {
    let cohort = cohort(20, 9);
    let source = PanicsOnTwo(&cohort.source);
    let state = with_source(&source, |connect, _| {
        let mut c = connect();
        hello(&mut c);
        // Pipelined (decoder threads), then one at a time (the reading thread), twice over.
        for _ in 0..2 {
            let order = [0usize, 1, 2, 3, 4];
            let burst: Vec<u8> = order.iter().flat_map(|&i| fetch_frame(i)).collect();
            c.0.write_all(&burst).unwrap();
            for i in order {
                let (h, px) = read_frame(&mut c.0).unwrap();
                if i == 2 {
                    assert_eq!(h["error"], "unavailable", "{h}");
                    assert!(px.is_empty());
                } else {
                    assert_eq!(h["index"], i, "{h}");
                    assert_eq!(px, cohort.source.pixels(i).unwrap().bytes);
                }
            }
            let (h, _) = c.call(json!({"op": "fetch", "index": 2}));
            assert_eq!(h["error"], "unavailable", "{h}");
        }
        assert_eq!(c.call(json!({"op": "done"})).0["ok"], true);
    });
    assert_eq!(state.fed, BTreeSet::from([0, 1, 3, 4]));
    assert_eq!(state.protocol_errors, 0);
}

#[test]
fn a_descriptor_passed_over_the_feed_is_closed_and_ends_the_connection() {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let state = with_feed(|connect, _| {
        let mut c = connect();
        hello(&mut c);
        // One end of a pair goes to the node; the node must not keep it.
        let (mine, passed) = UnixStream::pair().unwrap();
        let fds = [passed.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"x")];
        let sent = sendmsg::<()>(
            c.0.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        assert_eq!(sent, 1);
        drop(passed);
        // Closed by the node: its other end reads EOF, as does the feed connection.
        mine.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        assert_eq!((&mine).read(&mut [0u8; 1]).unwrap(), 0);
        c.0.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        assert_eq!(c.0.read(&mut [0u8; 1]).unwrap(), 0);
    });
    assert_eq!(state.protocol_errors, 1);
}

#[test]
fn a_list_page_of_large_records_is_cut_to_fit_the_response_limit_and_listing_goes_on() {
    // Records of enhanced volumes carry per-frame attributes: 40 records of ~90 KB each would
    // be a 3.6 MB page, near the trainer's 4 MiB response-header limit. The node answers a
    // shorter page; asking again from where it ended lists every record once.
    let base = cohort(40, 3).source;
    let n = base.records().len();
    let frames: Vec<Value> = (0..2000)
        .map(|i| json!({"image_position_patient": [-160.0, -160.0, f64::from(i) * 0.625]}))
        .collect();
    let source = rapha_enclave::MemorySource::new(
        (0..n)
            .map(|i| {
                let mut r = base.records()[i].clone();
                r.attributes.insert("frames".into(), json!(frames));
                (r, base.pixels(i).unwrap())
            })
            .collect(),
    );
    with_source(&source, |connect, _| {
        let mut c = connect();
        hello(&mut c);
        let mut seen = Vec::new();
        let mut pages = 0;
        while seen.len() < n {
            let (h, _) = c.call(json!({"op": "list", "offset": seen.len(), "limit": 1000}));
            let page = h["records"].as_array().unwrap();
            assert!(!page.is_empty(), "{h}");
            assert!(
                serde_json::to_vec(&h).unwrap().len()
                    < rapha_enclave::protocol::MAX_RESPONSE_HEADER
            );
            seen.extend(page.iter().map(|r| r["index"].as_u64().unwrap()));
            pages += 1;
        }
        assert!(pages > 1, "one page of {n} large records");
        assert_eq!(seen, (0..n as u64).collect::<Vec<_>>());
    });
}
