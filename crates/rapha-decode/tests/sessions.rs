//! A job's long-lived workers (`Session`, `JobWorkers`): a worker serves the frames of one job
//! only, in the same sandbox as a worker per frame; after any failure it is gone and the next
//! frame gets a fresh one; an answer for another request or of the wrong size is refused.

use std::path::Path;
use std::time::Duration;

use rapha_decode::{Codec, Hook, JobWorkers, Request, Session, WorkerError};
use rapha_dicom::pixels::{Instance, JobDecoders, Output, PixelError};

use crate::attacks::{assert_sandboxed, hook, status_when_filtered, FRAME};
use crate::dicom_common::corpus;
use crate::support::{first_fragment, install_worker, with_fragments, worker};

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The first JPEG-LS frame of the corpus and its request, with what a worker per frame makes
/// of it.
fn jpeg_ls_frame(dir: &Path) -> (Request, Vec<u8>, Vec<u8>) {
    let frame = first_fragment(&dir.join("MR_small_jpeg_ls_lossless.dcm"));
    let request = Request::new(Codec::JpegLs, (64, 64, 1), 2, frame.len()).unwrap();
    let once = worker().decode(&request, &frame).unwrap();
    (request, frame, once)
}

#[test]
fn a_jobs_worker_serves_its_frames_and_no_other_job_and_ends_with_the_job() {
    let Some(dir) = corpus() else { return };
    let (request, frame, once) = jpeg_ls_frame(&dir);
    let job_a = JobWorkers::new(worker());
    let job_b = JobWorkers::new(worker());
    assert_eq!(job_a.decode(&request, &frame).unwrap(), once);
    let [a] = job_a.pids()[..] else {
        panic!("{:?}", job_a.pids())
    };
    // The same worker decodes the job's next frame, to the same samples.
    assert_eq!(job_a.decode(&request, &frame).unwrap(), once);
    assert_eq!(job_a.pids(), [a]);
    // Another job gets a worker of its own.
    assert_eq!(job_b.decode(&request, &frame).unwrap(), once);
    let [b] = job_b.pids()[..] else {
        panic!("{:?}", job_b.pids())
    };
    assert_ne!(a, b);
    // The job ends: its worker is gone, the other job's is not.
    drop(job_a);
    assert!(!alive(a), "the ended job's worker {a} is still running");
    assert!(alive(b));
    assert_eq!(job_b.decode(&request, &frame).unwrap(), once);
    assert_eq!(job_b.pids(), [b]);
    drop(job_b);
    assert!(!alive(b));
}

#[test]
fn a_session_worker_is_sandboxed_like_a_worker_per_frame_and_killed_at_its_frames_deadline() {
    let mut session = Session::new(worker().with_timeout(Duration::from_secs(2)));
    let mut seen = None;
    let mut pid = 0;
    let r = session.decode_watched(&hook(Hook::Spin), &FRAME, |p| {
        pid = p;
        seen = Some(status_when_filtered(p));
    });
    assert!(matches!(r, Err(WorkerError::TimedOut(_))), "{r:?}");
    assert_sandboxed(seen.unwrap());
    assert!(!alive(pid), "the worker is still there after its deadline");
    assert_eq!(session.pid(), None);
}

#[test]
fn a_worker_crashed_mid_job_fails_only_its_frame_and_the_next_frame_gets_a_fresh_worker() {
    let Some(dir) = corpus() else { return };
    let (request, frame, once) = jpeg_ls_frame(&dir);
    let mut session = Session::new(worker());
    assert_eq!(session.decode(&request, &frame).unwrap(), once);
    let first = session.pid().unwrap();
    for (what, h) in [
        ("opened a file", Hook::OpenFile),
        ("made a socket", Hook::Socket),
    ] {
        match session.decode(&hook(h), &FRAME) {
            Err(WorkerError::Failed { status, .. }) => {
                assert!(status.contains("SIGSYS"), "{status}")
            }
            other => panic!("the worker {what}: {other:?}"),
        }
        assert_eq!(session.pid(), None, "a failed worker is kept");
        assert!(!alive(first));
    }
    // Refused by its decoder: the worker is replaced too.
    let _ = session.decode(&request, &frame).unwrap();
    let second = session.pid().unwrap();
    assert_ne!(first, second);
    let r = session.decode(&hook(Hook::Allocate), &FRAME);
    assert!(matches!(r, Err(WorkerError::Refused(_))), "{r:?}");
    assert!(!alive(second));
    assert_eq!(session.decode(&request, &frame).unwrap(), once);
    assert_ne!(session.pid(), Some(second));

    // Through the node's decode: of three instances of one job, the broken one alone is
    // excluded, and the one after it decodes.
    install_worker();
    let path = dir.join("MR_small_jpeg_ls_lossless.dcm");
    let good = std::fs::read(&path).unwrap();
    let mut noise = vec![0xFF, 0xD8];
    noise.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let broken = with_fragments(&path, vec![noise]);
    let job = JobDecoders::new();
    let limits = rapha_dicom::pixels::DecodeLimits::default();
    let decode = |b: &[u8]| Instance::open(b, &limits)?.decode_for_job(Output::Stored, &job);
    let before = decode(&good).unwrap();
    match decode(&broken) {
        Err(e @ PixelError::Malformed(_)) => assert_eq!(e.reason(), "malformed-pixel-data"),
        other => panic!("{other:?}"),
    }
    assert_eq!(decode(&good).unwrap().data, before.data);
}

#[test]
fn a_session_worker_answering_another_request_or_the_wrong_size_is_refused_and_replaced() {
    let Some(dir) = corpus() else { return };
    let (request, frame, once) = jpeg_ls_frame(&dir);
    let mut session = Session::new(worker());
    for h in [Hook::OtherSequence, Hook::Overflow, Hook::Short] {
        assert_eq!(session.decode(&request, &frame).unwrap(), once);
        let pid = session.pid().unwrap();
        match (h, session.decode(&hook(h), &FRAME)) {
            (Hook::OtherSequence, Err(WorkerError::OutOfStep(m))) => {
                assert!(m.contains("was sent"), "{m}")
            }
            (Hook::Overflow, Err(WorkerError::LongOutput { expected: 128 })) => {}
            (
                Hook::Short,
                Err(WorkerError::ShortOutput {
                    got: 64,
                    expected: 128,
                }),
            ) => {}
            (h, other) => panic!("{h:?}: {other:?}"),
        }
        assert_eq!(session.pid(), None);
        assert!(!alive(pid), "the out-of-step worker {pid} is still running");
    }
    assert_eq!(session.decode(&request, &frame).unwrap(), once);
}
