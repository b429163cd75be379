use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;

use proptest::prelude::*;
use rapha_trainer_sdk::outputs::{self, Tensor};
use rapha_trainer_sdk::{Client, Cohort, Pixels, SdkError, Split};
use serde_json::{json, Value};

fn frame(header: &Value, payload: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    out
}

fn read_request(s: &mut UnixStream) -> Value {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut h = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut h).unwrap();
    serde_json::from_slice(&h).unwrap()
}

fn hello() -> Value {
    json!({"ok": true, "protocol": 1, "job": "ab".repeat(16), "records": 2, "train": 1,
           "validation": 1, "confinement": "none-development", "max_payload": 536870912})
}

/// A peer that answers hello, then sends `replies` raw, one per request.
fn scripted(replies: Vec<Vec<u8>>) -> (UnixStream, thread::JoinHandle<Vec<Value>>) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let h = thread::spawn(move || {
        let mut seen = vec![read_request(&mut b)];
        b.write_all(&frame(&hello(), &[])).unwrap();
        for r in replies {
            let mut len = [0u8; 4];
            if b.read_exact(&mut len).is_err() {
                break;
            }
            let mut h = vec![0u8; u32::from_le_bytes(len) as usize];
            b.read_exact(&mut h).unwrap();
            seen.push(serde_json::from_slice(&h).unwrap());
            let _ = b.write_all(&r);
        }
        seen
    });
    (a, h)
}

fn record(index: u32, split: &str, label: Option<u8>) -> Value {
    let mut r = json!({"index": index, "instance": "1".repeat(64), "series": "2".repeat(64),
        "study": "3".repeat(64), "patient": format!("{index}").repeat(64), "split": split,
        "modality": "CT", "dtype": "u16", "shape": [1, 2, 2, 1],
        "attributes": {"rescale_slope": 1.0, "pixel_spacing": [0.5, 0.5]}});
    if let Some(l) = label {
        r["label"] = json!(l);
    }
    r
}

#[test]
fn honest_session_lists_fetches_predicts_and_finishes() {
    let pixels: Vec<u8> = [1u16, 2, 3, 65535]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let (sock, peer) = scripted(vec![
        frame(
            &json!({"ok": true, "total": 2, "records": [record(0, "train", Some(1)), record(1, "validation", None)]}),
            &[],
        ),
        frame(
            &json!({"ok": true, "index": 0, "dtype": "u16", "shape": [1, 2, 2, 1], "payload": 8}),
            &pixels,
        ),
        frame(&json!({"ok": true}), &[]),
        frame(&json!({"ok": true, "accepted": 1, "remaining": 0}), &[]),
        frame(&json!({"ok": true, "predicted": 1, "validation": 1}), &[]),
    ]);
    let mut c = Client::over(sock, "test-trainer").unwrap();
    assert_eq!(c.info().records, 2);
    assert_eq!(c.info().confinement, "none-development");
    let cohort = Cohort::load(&mut c).unwrap();
    assert_eq!(cohort.train().count(), 1);
    let val: Vec<_> = cohort.validation().collect();
    assert_eq!(
        (val.len(), val[0].split, val[0].label),
        (1, Split::Validation, None)
    );
    assert_eq!(cohort.records()[0].attr_f64("pixel_spacing"), Some(0.5));
    let r = c.fetch(0).unwrap();
    assert_eq!(r.pixels, Pixels::U16(vec![1, 2, 3, 65535]));
    assert_eq!(r.dims(), (1, 2, 2, 1));
    c.progress(&rapha_trainer_sdk::Progress {
        epoch: Some(1),
        loss: Some(0.5),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(c.predict(&[(1, 0.75)]).unwrap().remaining, 0);
    assert_eq!(c.done().unwrap().predicted, 1);
    let seen = peer.join().unwrap();
    let ops: Vec<&str> = seen.iter().map(|v| v["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        ["hello", "list", "fetch", "progress", "predict", "done"]
    );
    assert_eq!(seen[0]["protocol"], 1);
    assert_eq!(seen[4]["predictions"][0]["score"], 0.75);
}

#[test]
fn node_refusal_is_a_typed_error_naming_the_reason() {
    let (sock, _peer) = scripted(vec![frame(
        &json!({"ok": false, "error": "not_validation", "message": "record 0 is a training record"}),
        &[],
    )]);
    let mut c = Client::over(sock, "t").unwrap();
    match c.predict(&[(0, 0.5)]).unwrap_err() {
        SdkError::Refused {
            op: "predict",
            error,
            ..
        } => assert_eq!(error, "not_validation"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn oversized_header_is_refused_before_allocation() {
    let mut bad = (64u32 << 20).to_le_bytes().to_vec();
    bad.extend_from_slice(b"{}");
    let (sock, _peer) = scripted(vec![bad]);
    let mut c = Client::over(sock, "t").unwrap();
    assert!(matches!(c.fetch(0).unwrap_err(), SdkError::HeaderTooLarge(n, _) if n == 64 << 20));
}

#[test]
fn oversized_payload_is_refused_before_allocation() {
    let (sock, _peer) = scripted(vec![frame(
        &json!({"ok": true, "index": 0, "dtype": "u8", "shape": [1, 1, 1, 1], "payload": 1u64 << 40}),
        &[],
    )]);
    let mut c = Client::over(sock, "t").unwrap();
    assert!(matches!(
        c.fetch(0).unwrap_err(),
        SdkError::PayloadTooLarge(..)
    ));
}

#[test]
fn payload_that_does_not_match_shape_is_refused_and_the_connection_stays_in_step() {
    let px: Vec<u8> = [7u16, 8, 9, 10]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let (sock, _peer) = scripted(vec![
        frame(
            &json!({"ok": true, "index": 3, "dtype": "u16", "shape": [1, 2, 2, 1], "payload": 6}),
            &[0xEE; 6],
        ),
        frame(
            &json!({"ok": true, "index": 9, "dtype": "u16", "shape": [1, 2, 2, 1], "payload": 8}),
            &[0xEE; 8],
        ),
        frame(
            &json!({"ok": true, "index": 3, "dtype": "f64", "shape": [1, 1, 1, 1], "payload": 8}),
            &[0xEE; 8],
        ),
        frame(&json!({"index": 3, "payload": 3}), &[0xEE; 3]),
        // A refusal that carries a payload anyway: read whole and dropped.
        frame(
            &json!({"ok": false, "error": "unavailable", "message": "gone", "payload": 5}),
            &[0xEE; 5],
        ),
        frame(
            &json!({"ok": true, "index": 4, "dtype": "u16", "shape": [1, 2, 2, 1], "payload": 8}),
            &px,
        ),
    ]);
    let mut c = Client::over(sock, "t").unwrap();
    assert!(matches!(
        c.fetch(3).unwrap_err(),
        SdkError::PayloadMismatch {
            index: 3,
            got: 6,
            ..
        }
    ));
    // An answer for another record, with an unknown dtype, or without "ok", each carrying a
    // payload: refused, and read whole.
    assert!(matches!(c.fetch(3).unwrap_err(), SdkError::BadFrame(m) if m.contains("record 3")));
    assert!(matches!(c.fetch(3).unwrap_err(), SdkError::UnknownDtype(_)));
    assert!(matches!(c.fetch(3).unwrap_err(), SdkError::BadFrame(m) if m.contains("ok")));
    assert!(matches!(
        c.fetch(5).unwrap_err(),
        SdkError::Refused { error, .. } if error == "unavailable"
    ));
    let r = c.fetch(4).unwrap();
    assert_eq!(r.pixels, Pixels::U16(vec![7, 8, 9, 10]));
}

#[test]
fn pixels_read_from_a_stream_end_early_or_misaligned_are_errors() {
    use rapha_trainer_sdk::Dtype;
    let bytes = [1u8; 10];
    assert!(matches!(
        Pixels::read_le(Dtype::U16, &mut &bytes[..], 12),
        Err(SdkError::Closed)
    ));
    assert!(matches!(
        Pixels::read_le(Dtype::F32, &mut &bytes[..], 10),
        Err(SdkError::BadFrame(m)) if m.contains("whole number")
    ));
    assert!(matches!(
        Pixels::read_le(Dtype::U16, &mut &bytes[..], usize::MAX - 1),
        Err(SdkError::PayloadTooLarge(..))
    ));
}

#[test]
fn non_json_header_and_missing_ok_are_bad_frames() {
    let mut not_json = 5u32.to_le_bytes().to_vec();
    not_json.extend_from_slice(b"hello");
    let (sock, _peer) = scripted(vec![not_json]);
    let mut c = Client::over(sock, "t").unwrap();
    assert!(matches!(c.fetch(0).unwrap_err(), SdkError::BadFrame(_)));

    let (sock, _peer) = scripted(vec![frame(&json!({"index": 0}), &[])]);
    let mut c = Client::over(sock, "t").unwrap();
    assert!(matches!(c.fetch(0).unwrap_err(), SdkError::BadFrame(m) if m.contains("ok")));
}

#[test]
fn validation_label_in_a_list_is_parsed_but_out_of_range_labels_are_refused() {
    let mut r = record(0, "train", None);
    r["label"] = json!(7);
    let (sock, _peer) = scripted(vec![frame(
        &json!({"ok": true, "total": 1, "records": [r]}),
        &[],
    )]);
    let mut c = Client::over(sock, "t").unwrap();
    assert!(matches!(c.list(0, 10).unwrap_err(), SdkError::BadFrame(m) if m.contains("label")));
}

#[test]
fn wrong_protocol_version_is_refused() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        read_request(&mut b);
        let mut h = hello();
        h["protocol"] = json!(2);
        b.write_all(&frame(&h, &[])).unwrap();
    });
    assert!(matches!(
        Client::over(a, "t").unwrap_err(),
        SdkError::Version(2)
    ));
    t.join().unwrap();
}

#[test]
fn epochs_shuffle_reproducibly_and_cover_every_training_record() {
    let mut recs = Vec::new();
    for i in 0..50u32 {
        let v = if i % 5 == 0 {
            record(i, "validation", None)
        } else {
            record(i, "train", Some((i % 2) as u8))
        };
        recs.push(v);
    }
    let (sock, _peer) = scripted(vec![frame(
        &json!({"ok": true, "total": 50, "records": recs}),
        &[],
    )]);
    let mut c = Client::over(sock, "t").unwrap();
    let cohort = Cohort::from_records(c.list(0, 1000).unwrap());
    let e0: Vec<u32> = cohort
        .train_batches(7, 0)
        .concat()
        .iter()
        .map(|m| m.index)
        .collect();
    let e0b: Vec<u32> = cohort
        .train_batches(7, 0)
        .concat()
        .iter()
        .map(|m| m.index)
        .collect();
    let e1: Vec<u32> = cohort
        .train_batches(7, 1)
        .concat()
        .iter()
        .map(|m| m.index)
        .collect();
    assert_eq!(e0, e0b);
    assert_ne!(e0, e1);
    let mut sorted = e0.clone();
    sorted.sort_unstable();
    let want: Vec<u32> = (0..50).filter(|i| i % 5 != 0).collect();
    assert_eq!(sorted, want);
    assert!(cohort.train_batches(7, 0).iter().all(|b| b.len() <= 7));
}

#[test]
fn safetensors_round_trip_and_metrics_schema() {
    let dir = std::env::temp_dir().join(format!("rapha-sdk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w = [1.0f32, -2.5, 3.25, 0.0, 5.0, 6.0];
    let b = [0.5f32];
    let p = dir.join("model.safetensors");
    outputs::write_safetensors(
        &p,
        &[
            Tensor {
                name: "conv.weight",
                shape: vec![2, 3],
                data: &w,
            },
            Tensor {
                name: "conv.bias",
                shape: vec![1],
                data: &b,
            },
        ],
    )
    .unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(hlen % 8, 0, "header padded to 8 bytes");
    let back = outputs::read_safetensors(&p).unwrap();
    let find = |n: &str| back.iter().find(|t| t.0 == n).unwrap().clone();
    assert_eq!(
        find("conv.weight"),
        ("conv.weight".into(), vec![2, 3], w.to_vec())
    );
    assert_eq!(find("conv.bias").2, b.to_vec());
    assert!(outputs::write_safetensors(
        &p,
        &[Tensor {
            name: "x",
            shape: vec![4],
            data: &w
        }]
    )
    .is_err());

    let m = dir.join("metrics.json");
    outputs::write_metrics(&m, &[("epochs", 3.0), ("loss", 0.25)]).unwrap();
    let v: Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    assert_eq!(v, json!({"epochs": 3.0, "loss": 0.25}));
    assert!(matches!(
        outputs::write_metrics(&m, &[("patient_id", 1.0)]),
        Err(SdkError::Output(..))
    ));
    assert!(matches!(
        outputs::write_metrics(&m, &[("loss", f64::NAN)]),
        Err(SdkError::Output(..))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn weights_written_by_the_sdk_pass_the_output_guards_safetensors_check() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    let w: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let b = [0.25f32, -1.0];
    // Given out of name order: the file holds them sorted, and reads back sorted.
    let tensors = [
        Tensor {
            name: "head.weight",
            shape: vec![2, 3, 4],
            data: &w,
        },
        Tensor {
            name: "head.bias",
            shape: vec![2],
            data: &b,
        },
        Tensor {
            name: "empty",
            shape: vec![0],
            data: &[],
        },
    ];
    outputs::write_safetensors(&p, &tensors).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    rapha_enclave::formats::check_safetensors(&bytes).unwrap();
    let back = outputs::read_safetensors(&p).unwrap();
    let names: Vec<&str> = back.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, ["empty", "head.bias", "head.weight"]);
    assert_eq!(back[2], ("head.weight".into(), vec![2, 3, 4], w.clone()));
    assert_eq!(back[1].2, b);

    // A name given twice, or reserved for the format, is refused before anything is written.
    let twice = [tensors[1].clone(), tensors[1].clone()];
    assert!(matches!(
        outputs::write_safetensors(&dir.path().join("twice"), &twice),
        Err(SdkError::Output(_, why)) if why.contains("given twice")
    ));
    assert!(!dir.path().join("twice").exists());
    let reserved = [Tensor {
        name: "__metadata__",
        shape: vec![2],
        data: &b,
    }];
    assert!(outputs::write_safetensors(&dir.path().join("r"), &reserved).is_err());

    // Reading refuses what is not a whole F32 safetensors file.
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 4]).unwrap();
    assert!(matches!(
        outputs::read_safetensors(&cut),
        Err(SdkError::Output(..))
    ));
    let header = br#"{"x":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut i32_file = (header.len() as u64).to_le_bytes().to_vec();
    i32_file.extend_from_slice(header);
    i32_file.extend_from_slice(&7i32.to_le_bytes());
    let i32_path = dir.path().join("i32.safetensors");
    std::fs::write(&i32_path, &i32_file).unwrap();
    assert!(matches!(
        outputs::read_safetensors(&i32_path),
        Err(SdkError::Output(_, why)) if why.contains("not F32")
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// Pixels read straight from the stream into their typed array are the values decoded
    /// from the same bytes one by one, for every dtype, and leave the rest of the stream.
    #[test]
    fn pixels_read_from_a_stream_are_the_values_of_its_bytes(
        dtype in prop_oneof![Just("u8"), Just("u16"), Just("i16"), Just("u32"), Just("i32"), Just("f32")],
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let dtype = rapha_trainer_sdk::Dtype::parse(dtype).unwrap();
        let n = bytes.len() / dtype.size() * dtype.size();
        let mut stream = &bytes[..];
        let read = Pixels::read_le(dtype, &mut stream, n).unwrap();
        let decoded = Pixels::from_le_bytes(dtype, &bytes[..n]).unwrap();
        prop_assert_eq!(read.to_le_bytes(), decoded.to_le_bytes());
        prop_assert_eq!(read.to_le_bytes(), &bytes[..n]);
        prop_assert_eq!(stream, &bytes[n..]);
    }

    /// Whatever a hostile or broken node sends, the SDK returns an error or a value, never
    /// panics or allocates past the limits.
    #[test]
    fn arbitrary_node_bytes_never_panic(reply in proptest::collection::vec(any::<u8>(), 0..256),
                                        as_header in any::<bool>()) {
        let raw = if as_header {
            let mut v = (reply.len() as u32).to_le_bytes().to_vec();
            v.extend_from_slice(&reply);
            v
        } else {
            reply
        };
        let (sock, _peer) = scripted(vec![raw]);
        let mut c = Client::over(sock, "t").unwrap();
        let _ = c.fetch(0);
    }
}

/// A node that reads `first` requests before it answers any (so a client that does not
/// pipeline times out here), then answers in order: fetch `i` with four u16 pixels of value
/// `i` (or `unavailable` for `unavailable`, or the wrong index for `misindex`), anything else
/// with `{"ok": true}`. Returns every request it saw.
fn pipelining_node(
    first: usize,
    unavailable: u64,
    misindex: Option<u64>,
) -> (UnixStream, thread::JoinHandle<Vec<Value>>) {
    let (a, b) = UnixStream::pair().unwrap();
    (a, pipelining_peer(b, first, unavailable, misindex))
}

fn pipelining_peer(
    mut b: UnixStream,
    first: usize,
    unavailable: u64,
    misindex: Option<u64>,
) -> thread::JoinHandle<Vec<Value>> {
    b.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    thread::spawn(move || {
        let mut seen = vec![read_request(&mut b)];
        b.write_all(&frame(&hello(), &[])).unwrap();
        let answer = |req: &Value| {
            let Some(i) = req["index"].as_u64() else {
                return frame(&json!({"ok": true}), &[]);
            };
            if i == unavailable {
                return frame(
                    &json!({"ok": false, "error": "unavailable", "message": "gone"}),
                    &[],
                );
            }
            let px: Vec<u8> = [i as u16; 4].iter().flat_map(|v| v.to_le_bytes()).collect();
            let index = if misindex == Some(i) { 999 } else { i };
            frame(
                &json!({"ok": true, "index": index, "dtype": "u16", "shape": [1, 2, 2, 1], "payload": 8}),
                &px,
            )
        };
        let queued: Vec<Value> = (0..first).map(|_| read_request(&mut b)).collect();
        // Nothing more may come before an answer: that would be over the client's depth.
        thread::sleep(std::time::Duration::from_millis(20));
        b.set_nonblocking(true).unwrap();
        let more = b.read(&mut [0u8; 1]);
        assert!(
            matches!(&more, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the client sent more than {first} requests before any answer"
        );
        b.set_nonblocking(false).unwrap();
        for q in &queued {
            b.write_all(&answer(q)).unwrap();
        }
        seen.extend(queued);
        loop {
            let mut len = [0u8; 4];
            if b.read_exact(&mut len).is_err() {
                break;
            }
            let mut h = vec![0u8; u32::from_le_bytes(len) as usize];
            b.read_exact(&mut h).unwrap();
            let req: Value = serde_json::from_slice(&h).unwrap();
            let _ = b.write_all(&answer(&req));
            seen.push(req);
        }
        seen
    })
}

#[test]
fn records_keeps_requests_in_flight_and_yields_in_order() {
    let (sock, node) = pipelining_node(rapha_trainer_sdk::PREFETCH_DEPTH, 5, None);
    let mut c = Client::over(sock, "t").unwrap();
    let got: Vec<Result<rapha_trainer_sdk::Record, SdkError>> = c.records(0..12).collect();
    assert_eq!(got.len(), 12);
    for (i, r) in got.into_iter().enumerate() {
        match r {
            Ok(rec) => {
                assert_eq!(rec.index as usize, i);
                assert_eq!(rec.pixels, Pixels::U16(vec![i as u16; 4]));
            }
            // An unavailable record is an error item; the stream goes on.
            Err(SdkError::Refused { op, error, .. }) => {
                assert_eq!((i, op, error.as_str()), (5, "fetch", "unavailable"));
            }
            Err(e) => panic!("record {i}: {e}"),
        }
    }
    c.progress(&Default::default()).unwrap();
    drop(c);
    let seen = node.join().unwrap();
    let fetched: Vec<u64> = seen[1..13]
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(fetched, (0..12).collect::<Vec<u64>>());
    assert_eq!(seen[13]["op"], "progress");
}

#[test]
fn dropping_records_early_reads_the_answers_in_flight_and_stays_in_step() {
    let (sock, node) = pipelining_node(rapha_trainer_sdk::PREFETCH_DEPTH, u64::MAX, None);
    let mut c = Client::over(sock, "t").unwrap();
    let two: Vec<u32> = c
        .records(0..100)
        .take(2)
        .map(|r| r.unwrap().index)
        .collect();
    assert_eq!(two, [0, 1]);
    // The next call gets its own answer, not a record still on the wire.
    c.progress(&Default::default()).unwrap();
    assert_eq!(c.fetch(42).unwrap().pixels, Pixels::U16(vec![42; 4]));
    drop(c);
    let seen = node.join().unwrap();
    let ops: Vec<&str> = seen.iter().map(|r| r["op"].as_str().unwrap()).collect();
    // hello, 8 fetches ahead (no top-up before half are answered), then progress and fetch.
    assert_eq!(ops.len(), 1 + 8 + 2);
    assert_eq!(&ops[9..], ["progress", "fetch"]);
}

#[test]
fn answer_for_another_record_stops_the_stream_and_the_connection() {
    let (sock, _node) = pipelining_node(rapha_trainer_sdk::PREFETCH_DEPTH, u64::MAX, Some(0));
    let mut c = Client::over(sock, "t").unwrap();
    let mut it = c.records(0..12);
    match it.next() {
        Some(Err(SdkError::BadFrame(m))) => assert_eq!(m, "fetch response is not for record 0"),
        other => panic!("{other:?}"),
    }
    assert!(it.next().is_none());
    drop(it);
    // Answers still on the wire would be taken for later calls': every call now refuses.
    assert!(matches!(
        c.progress(&Default::default()),
        Err(SdkError::Desynchronised)
    ));
    assert!(matches!(c.fetch(1), Err(SdkError::Desynchronised)));
}

#[test]
fn records_depth_is_clamped_to_the_protocol_limit() {
    let (sock, node) = pipelining_node(rapha_trainer_sdk::MAX_IN_FLIGHT, u64::MAX, None);
    let mut c = Client::over(sock, "t").unwrap();
    let got: Vec<u32> = c
        .records_with_depth(0..40, 1000)
        .map(|r| r.unwrap().index)
        .collect();
    assert_eq!(got, (0..40).collect::<Vec<u32>>());
    drop(c);
    assert_eq!(node.join().unwrap().len(), 41);
}

/// The Python SDK's `records()` against the same pipelining node: 8 requests before any
/// answer, a refusal raised at its turn with the rest drained, `skip_unavailable`, and an
/// early `break` that leaves the connection in step.
#[test]
fn python_records_pipelines_and_stays_in_step() {
    let python = std::env::var("RAPHA_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_numpy = std::process::Command::new(&python)
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_numpy {
        assert!(
            !std::env::var("RAPHA_REQUIRE_SERVICES").is_ok_and(|v| v == "1"),
            "{python} with numpy is required (scripts/test installs it)"
        );
        eprintln!("SKIPPED: {python} has no numpy; Python SDK pipelining test not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let node = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        pipelining_peer(stream, 8, 5, None).join().unwrap()
    });
    let script = r#"
import json, sys
from rapha_trainer import Client, RefusedError
c = Client.connect("t", sys.argv[1])
got = []
try:
    for r in c.records(range(12)):
        got.append([r.index, int(r.pixels.reshape(-1)[0])])
except RefusedError as e:
    got.append(["refused", e.error])
c.progress(epoch=1)
skipped = [r.index for r in c.records(range(12), skip_unavailable=True)]
first_two = []
for r in c.records(range(100)):
    first_two.append(r.index)
    if len(first_two) == 2:
        break
c.progress(epoch=2)
print(json.dumps({"got": got, "skipped": skipped, "first_two": first_two}))
"#;
    let stdout = rapha_testkit::command::stdout_of(
        std::process::Command::new(&python)
            .args(["-c", script])
            .arg(&path)
            .env(
                "PYTHONPATH",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/python"),
            ),
    );
    let v: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(
        v["got"],
        json!([
            [0, 0],
            [1, 1],
            [2, 2],
            [3, 3],
            [4, 4],
            ["refused", "unavailable"]
        ])
    );
    assert_eq!(v["skipped"], json!([0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]));
    assert_eq!(v["first_two"], json!([0, 1]));
    let seen = node.join().unwrap();
    let last = seen.last().unwrap();
    assert_eq!(
        (&last["op"], &last["epoch"]),
        (&json!("progress"), &json!(2))
    );
}
