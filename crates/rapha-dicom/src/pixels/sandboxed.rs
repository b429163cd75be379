//! JPEG-LS (`.4.80` lossless, `.4.81` near-lossless) and JPEG extended with 12-bit precision
//! (`.4.51`), decoded by C libraries (CharLS; GDCM's 12-bit build of IJG 6b) in the sandboxed
//! worker process `rapha-decode`, never in this address space: no pure-Rust decoder of either
//! exists that returns what the reference decoders do, and a C decoder's bug must not reach the
//! node's keys, another job's pixels or the network (the design is in `rapha_decode`). HTJ2K
//! (`.4.201`-`.4.203`) goes to the same worker, where OpenJPH (C++) decodes it two to three
//! times as fast as the in-process Rust port of OpenJPEG ([`super::j2k`]), bit for bit as that
//! port on lossless frames and within a unit on lossy ones; each frame is first checked as the
//! port's own are (SIZ against the header, coding styles, tiles). Without an installed worker
//! HTJ2K stays with the port, in process, as before.
//!
//! Here, in the enclave runtime: the header is checked and the pixel data split into one
//! frame per codestream as for the other encapsulated syntaxes; each frame goes to a worker
//! with the image the header describes, and comes back as exactly that many samples or as an
//! error. A job's decodes ([`super::Instance::decode_for_job`]) go to that job's own
//! [`JobDecoders`]: long-lived workers, one per thread decoding at a time, each serving frame
//! after frame of that job only and replaced after any failure (`rapha_decode::Session`); a
//! decode outside a job ([`super::Instance::decode`]) starts one worker per frame. The worker reads the codec's own header first and refuses a stream that
//! describes another image; whatever else goes wrong in it (a crash, a system call outside its
//! allowlist, its time or memory limit, too much or too little output) is
//! [`PixelError::Malformed`], `malformed-pixel-data`, for that instance only. A node installed
//! without the worker next to it reports these syntaxes as [`PixelError::Unsupported`]
//! (`undecodable-transfer-syntax`) and says so once in its log.

use std::path::PathBuf;
use std::sync::Once;

use dicom_object::DefaultDicomObject;
use rapha_decode::{Codec, JobWorkers, Request, Worker, WorkerError};

use super::header::Header;
use super::{Output, PixelError, Pixels};

/// JPEG-LS lossless and near-lossless.
pub(super) const JPEG_LS: [&str; 2] = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];

/// JPEG extended (processes 2 & 4); only its 12-bit frames come here.
pub(super) const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";

/// HTJ2K lossless, lossless RPCL and lossy: decoded by OpenJPH in the worker when one is
/// installed, else in process by the JPEG 2000 decoder ([`super::j2k`]).
pub(super) const HTJ2K: [&str; 3] = [
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
];

/// Whether a worker is there for a decode: the job's, else (outside a job) one
/// [`Worker::locate`] finds.
pub(super) fn installed(job: Option<&JobDecoders>) -> bool {
    match job {
        Some(j) => j.workers.is_some(),
        None => Worker::locate().is_some(),
    }
}

/// Which worker codec decodes `ts` at this bit depth, if any.
pub(super) fn codec_for(ts: &str, h: &Header) -> Option<Codec> {
    if JPEG_LS.contains(&ts) {
        Some(Codec::JpegLs)
    } else if ts == JPEG_EXTENDED && h.bits_allocated > 8 {
        Some(Codec::Jpeg12)
    } else {
        None
    }
}

/// Whether the sandboxed decoder is installed and works, for `doctor`: `Ok(None)` when none is
/// installed (these syntaxes are then undecodable), `Ok(Some(path))` when a worker started,
/// entered its sandbox and its decoder answered (refusing an empty stream, as it must).
///
/// # Errors
/// What went wrong with an installed worker (it cannot run, or cannot enter its sandbox: every
/// JPEG-LS and 12-bit JPEG instance would then be excluded as malformed).
pub fn probe() -> Result<Option<PathBuf>, String> {
    let Some(worker) = Worker::locate() else {
        return Ok(None);
    };
    let empty = [0xFF, 0xD8, 0xFF, 0xD9];
    let request =
        Request::new(Codec::JpegLs, (1, 1, 1), 1, empty.len()).map_err(|e| e.to_string())?;
    match worker.decode(&request, &empty) {
        Err(WorkerError::Refused(_)) => Ok(Some(worker.path().to_owned())),
        Ok(_) => Err(format!(
            "{}: decoded an empty stream",
            worker.path().display()
        )),
        Err(e) => Err(format!("{}: {e}", worker.path().display())),
    }
}

/// The sandboxed decode workers of one job. The job's record source creates it and drops it
/// with the job (which ends its workers); it is not `Clone`, so a worker started for one job's
/// frames never sees another job's. Without a worker installed it holds none, and the syntaxes
/// it serves are undecodable as in [`super::Instance::decode`].
pub struct JobDecoders {
    workers: Option<JobWorkers>,
}

impl std::fmt::Debug for JobDecoders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobDecoders")
            .field("worker", &self.workers.as_ref().map(|w| w.worker().path()))
            .finish()
    }
}

impl JobDecoders {
    /// The decoders of a new job: the worker [`Worker::locate`] finds, none started yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            workers: Worker::locate().map(JobWorkers::new),
        }
    }

    /// Process ids of the job's idle workers (tests look at them from outside).
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.workers
            .as_ref()
            .map(JobWorkers::pids)
            .unwrap_or_default()
    }
}

impl Default for JobDecoders {
    fn default() -> Self {
        Self::new()
    }
}

/// What a missing worker makes of `ts` (the text the build without a decoder always gave).
fn unsupported(ts: &str, codec: Codec) -> PixelError {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            worker = rapha_decode::WORKER_NAME,
            "the sandboxed decoder is not installed next to this executable (or at {}): \
             JPEG-LS and 12-bit JPEG instances are excluded as undecodable",
            rapha_decode::WORKER_ENV
        );
    });
    match codec {
        Codec::Jpeg12 => PixelError::Unsupported(format!("{ts} with 12-bit precision")),
        _ => PixelError::Unsupported(ts.to_owned()),
    }
}

/// Where a frame is decoded: in a job's workers, or (outside a job) in a worker started for it.
enum Via<'a> {
    Job(&'a JobWorkers),
    Frame(Worker),
}

impl<'a> Via<'a> {
    /// The job's workers, else the worker [`Worker::locate`] finds; [`unsupported`] (naming
    /// `ts`) without one.
    fn find(job: Option<&'a JobDecoders>, ts: &str, codec: Codec) -> Result<Self, PixelError> {
        match job {
            Some(j) => j.workers.as_ref().map(Self::Job),
            None => Worker::locate().map(Self::Frame),
        }
        .ok_or_else(|| unsupported(ts, codec))
    }

    fn decode(&self, request: &Request, frame: &[u8]) -> Result<Vec<u8>, WorkerError> {
        match self {
            Self::Job(workers) => workers.decode(request, frame),
            Self::Frame(worker) => worker.decode(request, frame),
        }
    }
}

/// Decodes one bare frame in the worker as an image of `(rows, columns, samples)` with
/// `bytes_per_sample` bytes per sample: the fuzz entry point's way in
/// ([`crate::fuzzing::sandboxed_frame`]).
///
/// # Errors
/// [`PixelError::Unsupported`] without a worker, [`PixelError::Malformed`] for a request or a
/// frame refused, or a worker that failed.
pub fn decode_frame(
    codec: Codec,
    geometry: (u32, u32, u16),
    bytes_per_sample: u8,
    frame: &[u8],
) -> Result<Vec<u8>, PixelError> {
    bare_frame(None, codec, geometry, bytes_per_sample, frame)
}

/// [`decode_frame`] in a job's workers (`job`): the fuzz entry point's way into a session
/// ([`crate::fuzzing::sandboxed_frame_in_job`]).
///
/// # Errors
/// As [`decode_frame`].
pub fn decode_frame_in_job(
    job: &JobDecoders,
    codec: Codec,
    geometry: (u32, u32, u16),
    bytes_per_sample: u8,
    frame: &[u8],
) -> Result<Vec<u8>, PixelError> {
    bare_frame(Some(job), codec, geometry, bytes_per_sample, frame)
}

fn bare_frame(
    job: Option<&JobDecoders>,
    codec: Codec,
    geometry: (u32, u32, u16),
    bytes_per_sample: u8,
    frame: &[u8],
) -> Result<Vec<u8>, PixelError> {
    let request = Request::new(codec, geometry, bytes_per_sample, frame.len())
        .map_err(|e| PixelError::Malformed(e.to_string()))?;
    Via::find(job, "a bare frame", codec)?
        .decode(&request, frame)
        .map_err(|e| PixelError::Malformed(e.to_string()))
}

/// Decodes every frame in the job's workers (`job`), else each in its own worker, then lets the
/// header interpret the samples (sign extension from BitsStored, rescale).
pub(super) fn decode(
    obj: &DefaultDicomObject,
    h: &Header,
    output: Output,
    ts: &str,
    codec: Codec,
    job: Option<&JobDecoders>,
) -> Result<Pixels, PixelError> {
    let what = match codec {
        Codec::Jpeg12 => "12-bit JPEG",
        Codec::Htj2k => "HTJ2K",
        _ => "JPEG-LS",
    };
    let bytes_per_sample: u8 = match (codec, h.bits_allocated) {
        (Codec::JpegLs | Codec::Htj2k, 8) => 1,
        (_, 16) => 2,
        (_, bits) => {
            return Err(PixelError::Malformed(format!(
                "{what} pixel data with BitsAllocated {bits} (8 or 16 expected)"
            )))
        }
    };
    let raw = match codec {
        Codec::Htj2k => super::j2k::frames(obj, h)?,
        _ => super::frame_streams(super::fragments(obj, what)?, h.frames as usize, what, |f| {
            f.starts_with(&[0xFF, 0xD8])
        })?,
    };
    // An HTJ2K frame goes to the worker as its bare codestream once its SIZ and coding styles
    // pass the checks the in-process JPEG 2000 decoder makes (the worker checks SIZ again).
    let frames = match codec {
        Codec::Htj2k => raw
            .iter()
            .map(|f| super::j2k::checked_codestream(f, h))
            .collect::<Result<Vec<_>, _>>()?,
        _ => raw.iter().map(AsRef::as_ref).collect(),
    };
    // The job's workers, else (outside a job) a worker started per frame.
    let via = Via::find(job, ts, codec)?;
    let geometry = (h.rows, h.columns, h.samples);
    let requests = frames
        .iter()
        .map(|f| Request::new(codec, geometry, bytes_per_sample, f.len()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PixelError::Malformed(format!("{what} frame: {e}")))?;
    let frame_bytes = requests.first().map_or(0, Request::output_len);
    let mut out = Vec::with_capacity(h.total_samples()? * usize::from(bytes_per_sample));
    for (frame, request) in frames.iter().zip(&requests) {
        let samples = via
            .decode(request, frame)
            .map_err(|e| PixelError::Malformed(format!("{what} frame: {e}")))?;
        debug_assert_eq!(samples.len(), frame_bytes);
        out.extend_from_slice(&samples);
    }
    h.finish(&out, output)
}
