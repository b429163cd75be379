//! A decoder bug turned against the worker: what the compromised worker tries (through the
//! test hooks) fails closed, and whatever it does comes back to the parent as an error that
//! excludes one instance.

use std::time::{Duration, Instant};

use rapha_decode::{Codec, Hook, Request, WorkerError};
use rapha_dicom::pixels::{decode, Output, PixelError};

use crate::dicom_common::corpus;
use crate::support::{first_fragment, install_worker, with_fragments, worker};

pub(crate) fn hook(h: Hook) -> Request {
    Request::new(Codec::Hook(h), (8, 8, 1), 2, 4).unwrap()
}

pub(crate) const FRAME: [u8; 4] = [0xFF, 0xD8, 0xFF, 0xD9];

/// Reads a running worker's `/proc` status once its seccomp filter is in place.
pub(crate) fn status_when_filtered(pid: u32) -> (String, Vec<String>, String, bool) {
    // The worker is not killed before this returns: a loaded machine may take long to start it.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.contains("Seccomp:\t2") || Instant::now() > until {
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
            let own_userns = std::fs::read_link(format!("/proc/{pid}/ns/user")).ok()
                != std::fs::read_link("/proc/self/ns/user").ok();
            return (status, fds, limits, own_userns);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn running_worker_is_under_seccomp_with_no_new_privileges_locked_memory_and_only_its_pipes() {
    let mut seen = None;
    let r = worker()
        .with_timeout(Duration::from_secs(2))
        .decode_watched(&hook(Hook::Spin), &FRAME, |pid| {
            seen = Some(status_when_filtered(pid));
        });
    assert!(matches!(r, Err(WorkerError::TimedOut(_))), "{r:?}");
    assert_sandboxed(seen.unwrap());
}

/// What a running worker must be under, from its `/proc` status, descriptors and limits.
pub(crate) fn assert_sandboxed(
    (status, mut fds, limits, own_userns): (String, Vec<String>, String, bool),
) {
    assert!(status.contains("Seccomp:\t2"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let locked = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    assert!(
        locked.is_some_and(|kb| kb > 0),
        "memory not locked: {status}"
    );
    // No capability in the node's user namespace: a user namespace of its own, or none left.
    assert!(
        own_userns || status.contains("CapEff:\t0000000000000000"),
        "the worker keeps capabilities in the node's user namespace: {status}"
    );
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"], "descriptors other than the pipes");
    let limit = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l.split_whitespace()
                    .skip(name.split_whitespace().count())
                    .take(2)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert_eq!(limit("Max file size"), ["0", "0"], "{limits}");
    assert_eq!(limit("Max core file size"), ["0", "0"], "{limits}");
    assert_eq!(limit("Max processes"), ["0", "0"], "{limits}");
    assert_eq!(limit("Max open files"), ["3", "3"], "{limits}");
    assert_ne!(
        limit("Max address space"),
        ["unlimited", "unlimited"],
        "{limits}"
    );
    assert_ne!(
        limit("Max cpu time"),
        ["unlimited", "unlimited"],
        "{limits}"
    );
}

#[test]
fn worker_that_opens_a_file_or_a_socket_is_killed_by_seccomp() {
    for (what, h) in [
        ("opened a file", Hook::OpenFile),
        ("made a socket", Hook::Socket),
    ] {
        match worker().decode(&hook(h), &FRAME) {
            Err(WorkerError::Failed { status, .. }) => {
                assert!(status.contains("SIGSYS"), "{status}")
            }
            other => panic!("the worker {what}: {other:?}"),
        }
    }
}

#[test]
fn worker_that_hangs_is_killed_at_the_deadline() {
    let mut pid = 0;
    let start = Instant::now();
    let r = worker()
        .with_timeout(Duration::from_millis(500))
        .decode_watched(&hook(Hook::Spin), &FRAME, |p| pid = p);
    assert!(matches!(r, Err(WorkerError::TimedOut(_))), "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the worker is still there after its deadline"
    );
}

#[test]
fn worker_that_writes_more_or_less_than_the_image_is_refused() {
    let r = worker().decode(&hook(Hook::Overflow), &FRAME);
    assert!(
        matches!(r, Err(WorkerError::LongOutput { expected: 128 })),
        "{r:?}"
    );
    let r = worker().decode(&hook(Hook::Short), &FRAME);
    assert!(
        matches!(
            r,
            Err(WorkerError::ShortOutput {
                got: 64,
                expected: 128
            })
        ),
        "{r:?}"
    );
}

#[test]
fn worker_cannot_reserve_memory_past_its_address_space_limit() {
    match worker().decode(&hook(Hook::Allocate), &FRAME) {
        Err(WorkerError::Refused(m)) => assert!(m.starts_with("allocation refused"), "{m}"),
        other => panic!("the worker reserved 2 GiB for an 8 x 8 frame: {other:?}"),
    }
}

#[test]
fn a_missing_worker_is_an_error_not_a_panic() {
    let r =
        rapha_decode::Worker::at("/nonexistent/rapha-decode").decode(&hook(Hook::Short), &FRAME);
    assert!(matches!(r, Err(WorkerError::Spawn { .. })), "{r:?}");
}

#[test]
fn a_stream_larger_than_the_header_is_refused_before_it_is_decoded() {
    let Some(dir) = corpus() else { return };
    for (file, codec) in [
        ("MR_small_jpeg_ls_lossless.dcm", Codec::JpegLs),
        ("JPGExtended.dcm", Codec::Jpeg12),
    ] {
        let frame = first_fragment(&dir.join(file));
        // The DICOM header says 16 x 16; the stream is larger. The decoder would write the
        // stream's image: the worker refuses it before decoding.
        let request = Request::new(codec, (16, 16, 1), 2, frame.len()).unwrap();
        match worker().decode(&request, &frame) {
            Err(WorkerError::Refused(m)) => {
                assert!(m.contains("the DICOM header says 16x16"), "{m}")
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn truncated_or_garbage_streams_exclude_the_instance_as_malformed() {
    let Some(dir) = corpus() else { return };
    install_worker();
    for file in [
        "MR_small_jpeg_ls_lossless.dcm",
        "JPEGLSNearLossless_16.dcm",
        "JPGExtended.dcm",
    ] {
        let path = dir.join(file);
        let good = first_fragment(&path);
        let mut noise = vec![0xFF, 0xD8];
        noise.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        let mut flipped = good.clone();
        for i in (40..flipped.len()).step_by(97) {
            flipped[i] ^= 0x5A;
        }
        for (what, frame) in [
            ("truncated", good[..good.len() / 2].to_vec()),
            ("cut after the header", good[..60.min(good.len())].to_vec()),
            ("garbage", noise),
            ("empty", vec![0xFF, 0xD8]),
        ] {
            let bytes = with_fragments(&path, vec![frame]);
            match decode(&bytes, Output::Stored) {
                Err(e @ PixelError::Malformed(_)) => {
                    assert_eq!(e.reason(), "malformed-pixel-data", "{file} {what}");
                }
                other => panic!("{file} {what}: {other:?}"),
            }
        }
        // Bits flipped in the entropy-coded data may still decode (to other values), but only
        // ever to the header's image or to a refusal.
        let bytes = with_fragments(&path, vec![flipped]);
        match decode(&bytes, Output::Stored) {
            Ok(px) => assert_eq!(px.data.len(), px.shape().iter().product::<usize>()),
            Err(e) => assert_eq!(e.reason(), "malformed-pixel-data", "{file}: {e}"),
        }
    }
}

#[test]
fn doctor_probe_finds_the_worker_entering_its_sandbox_and_refusing_an_empty_stream() {
    install_worker();
    let found = rapha_dicom::pixels::sandboxed::probe().unwrap();
    assert_eq!(
        found.as_deref(),
        Some(std::path::Path::new(env!("CARGO_BIN_EXE_rapha-decode")))
    );
}
