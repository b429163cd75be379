//! The record feed: serves trainer protocol v1 on a Unix socket (`docs/trainer-protocol.md`).
//!
//! Pixels are fetched and decoded by the [`RecordSource`] into memory and written to the
//! socket. A record fetched a second time (a trainer's second epoch) is kept decoded in this
//! process's memory for the rest of the job (up to [`PIXEL_CACHE_BYTES`]; past that, records
//! are decoded again on each fetch), so later epochs do not decode again. Records fetched once
//! are not kept: holding them would cost the first epoch fresh memory for every record.
//! Nothing is spilled to disk, so there is nothing to encrypt at rest; the cache is dropped
//! when the feed ends.
//! As each record is fed for the first time its pixel bytes are fingerprinted for the
//! output guard, and its index joins the fed set the manifest commits to. Validation labels
//! never leave this module; validation predictions come in and stay here.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rapha_core::JobId;
use serde::Serialize;
use serde_json::json;

use crate::error::{io, Result};
use crate::fingerprint::{Collector, Fingerprints};
use crate::protocol::{self, ErrorCode, FrameError, Request, MAX_PAGE, MAX_PAYLOAD};
use crate::record::RecordSource;
use crate::split::Split;

/// Records first fed on a connection are handed to the fingerprinting worker this many at a
/// time (and the rest when the connection ends).
pub const FINGERPRINT_BATCH: usize = 8;

/// Decoded pixel bytes kept in memory per job (records fetched more than once), so later
/// epochs skip decoding.
pub const PIXEL_CACHE_BYTES: usize = 2 << 30;

/// How long a feed connection may take to end by itself once the trainer's container is gone
/// (its last requests answered, its processes' sockets closed by the kernel), before the node
/// cuts it ([`Feed::cut`]).
pub const CUT_GRACE: Duration = Duration::from_secs(5);

/// One record's decoded pixel bytes, shared by the cache, the socket writer and the
/// fingerprinting worker.
type Shared = Arc<Vec<u8>>;

/// Decoded records of one job, within [`PIXEL_CACHE_BYTES`].
#[derive(Default)]
struct PixelCache {
    records: Mutex<(BTreeMap<usize, Shared>, usize)>,
}

impl PixelCache {
    fn get(&self, index: usize) -> Option<Shared> {
        let g = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.0.get(&index).cloned()
    }

    fn keep(&self, index: usize, bytes: &Shared) {
        let mut g = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (map, total) = &mut *g;
        if *total + bytes.len() <= PIXEL_CACHE_BYTES && !map.contains_key(&index) {
            *total += bytes.len();
            map.insert(index, Arc::clone(bytes));
        }
    }
}

/// What one connection needs from the feed's serving loop.
struct Served<'s> {
    fingerprint: &'s SyncSender<Vec<(u32, Shared)>>,
    cache: &'s PixelCache,
}

/// What the trainer said about itself: kept apart, never the job's metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SelfReported {
    pub epoch: Option<u64>,
    pub step: Option<u64>,
    pub loss: Option<f64>,
    pub metrics: BTreeMap<String, f64>,
}

/// Feed state shared between the socket thread and the runtime.
#[derive(Debug, Default)]
pub struct FeedState {
    pub predictions: BTreeMap<usize, f64>,
    pub fed: BTreeSet<usize>,
    pub self_reported: Option<SelfReported>,
    pub done: bool,
    pub fingerprints: Fingerprints,
    pub bytes_fed: u64,
    pub records_fed: u64,
    pub first_fetch: Option<Instant>,
    pub connections: u32,
    pub protocol_errors: u32,
    /// The connection being served (a second handle on it, for [`Feed::cut`]).
    serving: Option<UnixStream>,
    /// Set by [`Feed::cut`]: no connection is accepted any more.
    closing: bool,
    /// Set by [`Feed::cut`] once it shut the connection being served: nothing more of it is
    /// answered.
    cut: bool,
}

/// The feed for one job.
pub struct Feed<'a> {
    pub job: JobId,
    pub confinement: &'static str,
    pub source: &'a dyn RecordSource,
    pub splits: &'a [Split],
    pub state: Mutex<FeedState>,
    pub stop: AtomicBool,
    /// Threads per connection that fetch and decode pipelined records ([`decoders`] is the
    /// default; 1 decodes them one after another).
    pub decoders: usize,
}

impl std::fmt::Debug for Feed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

/// Binds the feed socket (mode 0666 so the unprivileged trainer can connect; its directory
/// is the only thing bound into the container).
///
/// # Errors
/// The socket cannot be created.
pub fn bind(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let l = UnixListener::bind(path).map_err(io("bind the record feed socket", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(io("set the feed socket's permissions", path))?;
    l.set_nonblocking(true)
        .map_err(io("configure the record feed socket", path))?;
    Ok(l)
}

impl Feed<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        // A panic while holding the lock cannot leave the state half-written in a way that
        // matters: every field is updated in one statement. Recover the guard.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Accepts and serves connections, one at a time, until [`Feed::stop`] is set.
    ///
    /// Fingerprinting fed pixels runs on a worker thread, off the path to the trainer. Records
    /// go to it in batches of [`FINGERPRINT_BATCH`] (one wake-up per batch, not per record);
    /// the bounded channel keeps at most a few batches in flight. The fingerprints are
    /// complete when this returns.
    pub fn serve(&self, listener: &UnixListener) {
        let cache = PixelCache::default();
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(u32, Shared)>>(2);
            let worker = s.spawn(move || {
                let mut fp = Collector::default();
                for (index, bytes) in rx.into_iter().flatten() {
                    fp.add_record(index, &bytes);
                }
                fp.seal()
            });
            let served = Served {
                fingerprint: &tx,
                cache: &cache,
            };
            self.accept_loop(listener, &served);
            drop(tx);
            match worker.join() {
                Ok(fp) => self.lock().fingerprints = fp,
                // A panic while fingerprinting is a bug; the guard must not run without them.
                Err(p) => std::panic::resume_unwind(p),
            }
        });
    }

    fn accept_loop(&self, listener: &UnixListener, served: &Served<'_>) {
        while !self.stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    {
                        let mut st = self.lock();
                        // A connection [`Feed::cut`] cannot reach is not served at all.
                        let Ok(handle) = stream.try_clone() else {
                            tracing::warn!(
                                "could not keep a handle on a trainer connection; refused"
                            );
                            continue;
                        };
                        if st.closing {
                            break;
                        }
                        st.connections += 1;
                        st.serving = Some(handle);
                    }
                    let served = self.serve_connection(stream, served);
                    let mut st = self.lock();
                    st.serving = None;
                    match served {
                        // A connection the node cut ends with whatever error it was in.
                        _ if st.cut => {}
                        Err(FrameError::Closed) | Ok(()) => {}
                        Err(e) => {
                            st.protocol_errors += 1;
                            drop(st);
                            tracing::warn!(error = %e, "trainer connection closed on a protocol violation");
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept on the record feed failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Ends the feed once the trainer's container is gone (every process of it dead): no new
    /// connection is served, and the one being served is given `grace` to end by itself (its
    /// last requests answered, the EOF the kernel sent when the trainer's processes died read).
    /// One that has not ended by then is shut down both ways, which wakes the node's writer
    /// blocked on a full socket (EPIPE) and its reader (EOF), and is served no further.
    ///
    /// Returns true when the trainer's end of that connection was still open then. With every
    /// process of the trainer gone, only a socket the trainer passed away keeps it open (sent
    /// with `SCM_RIGHTS` into a queue the node no longer reads): the trainer did it on purpose,
    /// to hold the node's run open, and the run is the trainer's failure.
    pub fn cut(&self, grace: Duration) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now().checked_add(grace);
        loop {
            let mut st = self.lock();
            st.closing = true;
            let Some(conn) = st.serving.as_ref() else {
                return false;
            };
            if deadline.is_none_or(|d| Instant::now() >= d) {
                let held = !hung_up(conn);
                let _ = conn.shutdown(std::net::Shutdown::Both);
                st.cut = true;
                return held;
            }
            drop(st);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether [`Feed::cut`] cut the connection being served.
    fn was_cut(&self) -> bool {
        self.lock().cut
    }

    /// Serves one connection: this thread reads requests and queues their answers in order,
    /// [`decoders`] threads fetch and decode records side by side, and a writer thread writes
    /// the answers in request order as each is ready. With a pipelining trainer the next
    /// records decode while one is on the socket (and, from a PACS, their fetches overlap).
    /// Both queues hold at most the protocol's in-flight limit.
    fn serve_connection(&self, stream: UnixStream, served: &Served<'_>) -> Result<(), FrameError> {
        stream.set_nonblocking(false)?;
        let requests = RequestReader::new(stream.try_clone()?);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Slot>(protocol::MAX_IN_FLIGHT);
        let (jobs, job_queue) = std::sync::mpsc::sync_channel::<DecodeJob>(protocol::MAX_IN_FLIGHT);
        let job_queue = Mutex::new(job_queue);
        std::thread::scope(|s| {
            for _ in 0..self.decoders.max(1) {
                let job_queue = &job_queue;
                s.spawn(move || loop {
                    let job = job_queue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .recv();
                    let Ok((index, reply)) = job else {
                        break; // the connection is over
                    };
                    // The writer waits for every queued answer, so this does not fail.
                    let _ = reply.send(self.fetch_caught(index, served.cache));
                });
            }
            let fingerprint = served.fingerprint;
            let writer = s.spawn(move || {
                let mut w = AnswerWriter::new(stream, fingerprint);
                for slot in rx {
                    let answer = match slot {
                        Slot::Ready(a) => a,
                        Slot::Decoding(r) => match r.recv() {
                            Ok(a) => a,
                            // Decoders catch panics and always answer, so this cannot happen;
                            // if it did, every later answer would be out of step: end the
                            // connection instead.
                            Err(_) => {
                                w.abort("a decoder stopped without answering");
                                continue;
                            }
                        },
                    };
                    // After a write error the rest is drained and only fingerprinted; the
                    // error is kept for `finish`.
                    let _ = w.write(answer);
                }
                w.finish()
            });
            let queues = Queues { answers: tx, jobs };
            let read = self.serve_requests(requests, &queues, served.cache);
            // Closing the queues stops the decoders and lets the writer finish what is queued.
            drop(queues);
            let written = match writer.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            };
            // A write failure (the trainer went away) is what ended the reading too.
            written.and(read)
        })
    }

    fn serve_requests(
        &self,
        mut requests: RequestReader,
        queues: &Queues,
        cache: &PixelCache,
    ) -> Result<(), FrameError> {
        let send = |a: Answer| queues.answer(a);
        let mut greeted = false;
        loop {
            let header = requests.next_header()?;
            // A cut connection is answered no further (what is already queued is dropped).
            if self.was_cut() {
                return Err(FrameError::Closed);
            }
            // Requests already received behind this one: more than the protocol allows in
            // flight is refused, so a flooding trainer learns why it was cut off. (Requests
            // already taken from the buffer and queued for an answer are not counted: the check
            // never refuses a trainer within the limit, and catches a flood within two limits'
            // worth. The node holds at most its read-ahead buffer of requests and the protocol's
            // limit of queued answers per connection.)
            let queued = requests.queued()?;
            if 1 + queued > protocol::MAX_IN_FLIGHT {
                send(Answer::error(
                    ErrorCode::Protocol,
                    &format!(
                        "more than {} requests in flight; the connection is closed",
                        protocol::MAX_IN_FLIGHT
                    ),
                ))?;
                return Err(FrameError::TooManyInFlight(protocol::MAX_IN_FLIGHT));
            }
            let req = match protocol::parse_request(&header) {
                Ok(r) => r,
                Err(msg) => {
                    send(Answer::error(ErrorCode::BadRequest, &msg))?;
                    continue;
                }
            };
            if self.lock().done {
                send(Answer::error(
                    ErrorCode::Finished,
                    "the trainer already sent done",
                ))?;
                return Ok(());
            }
            if !greeted && !matches!(req, Request::Hello { .. }) {
                send(Answer::error(
                    ErrorCode::Protocol,
                    "the first request must be hello",
                ))?;
                continue;
            }
            // A fetch with more requests behind it goes to the decoders, so records decode side
            // by side; a lone fetch (a trainer asking one record at a time) is decoded right
            // here, without the hand-off to another thread and back.
            if let (Request::Fetch { index }, 1..) = (&req, queued) {
                queues.decode(*index)?;
                continue;
            }
            send(self.answer(&req, &mut greeted, cache))?;
            if matches!(req, Request::Done) {
                return Ok(());
            }
        }
    }

    fn answer(&self, req: &Request, greeted: &mut bool, cache: &PixelCache) -> Answer {
        let records = self.source.records();
        let ok = |v: serde_json::Value| Answer::plain(serde_json::to_vec(&v).unwrap_or_default());
        let err = |c: ErrorCode, m: String| Answer::error(c, &m);
        match req {
            Request::Hello {
                protocol: v,
                trainer,
            } => {
                if *v != protocol::PROTOCOL_VERSION {
                    return err(
                        ErrorCode::Protocol,
                        format!("this node speaks protocol 1, not {v}"),
                    );
                }
                if trainer.len() > protocol::MAX_TRAINER_NAME {
                    return err(ErrorCode::BadRequest, "trainer name over 128 bytes".into());
                }
                *greeted = true;
                let val = self
                    .splits
                    .iter()
                    .filter(|s| **s == Split::Validation)
                    .count();
                ok(
                    json!({"ok": true, "protocol": 1, "job": self.job.to_string(),
                    "records": records.len(), "train": records.len() - val, "validation": val,
                    "confinement": self.confinement, "max_payload": MAX_PAYLOAD}),
                )
            }
            Request::List { offset, limit } => {
                if *limit == 0 || *limit > MAX_PAGE || *offset > records.len() {
                    return err(
                        ErrorCode::BadRequest,
                        format!(
                            "list needs offset <= {} and limit 1..={MAX_PAGE}",
                            records.len()
                        ),
                    );
                }
                let end = (*offset + *limit).min(records.len());
                let page: Vec<serde_json::Value> = (*offset..end)
                    .map(|i| {
                        let r = &records[i];
                        let split = self.splits.get(i).copied().unwrap_or(Split::Validation);
                        let mut v = json!({"index": i, "instance": r.instance.to_hex(),
                            "series": r.series.to_hex(), "study": r.study.to_hex(),
                            "patient": r.patient.to_hex(), "split": split,
                            "modality": r.modality, "dtype": r.dtype, "shape": r.shape,
                            "attributes": r.attributes});
                        // I1 + the metrics promise: labels go out for training records only.
                        if let (Split::Train, Some(label)) = (split, r.label) {
                            v["label"] = json!(label);
                        }
                        v
                    })
                    .collect();
                ok(json!({"ok": true, "total": records.len(), "records": page}))
            }
            // Pipelined fetches go to the decoder threads instead ([`Queues::decode`]).
            Request::Fetch { index } => self.fetch_caught(*index, cache),
            Request::Progress {
                epoch,
                step,
                loss,
                metrics,
            } => {
                let keys_ok = metrics.len() <= 32
                    && metrics.keys().all(|k| {
                        (1..=32).contains(&k.len())
                            && k.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    });
                if !keys_ok {
                    return err(
                        ErrorCode::BadRequest,
                        "at most 32 metrics with keys [a-z0-9_]{1,32}".into(),
                    );
                }
                self.lock().self_reported = Some(SelfReported {
                    epoch: *epoch,
                    step: *step,
                    loss: *loss,
                    metrics: metrics.clone(),
                });
                ok(json!({"ok": true}))
            }
            Request::Predict { predictions } => {
                if predictions.len() > MAX_PAGE {
                    return err(
                        ErrorCode::BadRequest,
                        format!("at most {MAX_PAGE} predictions per request"),
                    );
                }
                let mut st = self.lock();
                let mut seen = BTreeSet::new();
                for p in predictions {
                    if p.index >= records.len() {
                        return err(
                            ErrorCode::NoSuchRecord,
                            format!(
                                "record index {} is out of range (0..{})",
                                p.index,
                                records.len()
                            ),
                        );
                    }
                    if self.splits.get(p.index) != Some(&Split::Validation) {
                        return err(
                            ErrorCode::NotValidation,
                            format!("record {} is a training record", p.index),
                        );
                    }
                    if st.predictions.contains_key(&p.index) || !seen.insert(p.index) {
                        return err(
                            ErrorCode::DuplicatePrediction,
                            format!("record {} already has a prediction", p.index),
                        );
                    }
                    if !(p.score.is_finite() && (0.0..=1.0).contains(&p.score)) {
                        return err(
                            ErrorCode::BadScore,
                            format!("score for record {} is not in [0, 1]", p.index),
                        );
                    }
                }
                for p in predictions {
                    st.predictions.insert(p.index, p.score);
                }
                let val = self
                    .splits
                    .iter()
                    .filter(|s| **s == Split::Validation)
                    .count();
                ok(
                    json!({"ok": true, "accepted": predictions.len(), "remaining": val - st.predictions.len()}),
                )
            }
            Request::Done => {
                let mut st = self.lock();
                st.done = true;
                let val = self
                    .splits
                    .iter()
                    .filter(|s| **s == Split::Validation)
                    .count();
                ok(json!({"ok": true, "predicted": st.predictions.len(), "validation": val}))
            }
        }
    }

    /// [`Feed::fetch`], with a panic while fetching or decoding (a bug, say in a decoder on
    /// a malformed instance) answered as `unavailable`, like any record that cannot be
    /// decoded: the trainer gets no pixels for it, the connection stays in step, and the
    /// other records are still served.
    fn fetch_caught(&self, index: usize, cache: &PixelCache) -> Answer {
        let fetched =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.fetch(index, cache)));
        fetched.unwrap_or_else(|_| {
            tracing::error!(
                record = index,
                "decoding the record panicked; answered unavailable"
            );
            Answer::error(ErrorCode::Unavailable, UNAVAILABLE)
        })
    }

    /// The answer to a fetch of `index`: the record's header and pixels (and its index when
    /// this is its first feed), or an error.
    fn fetch(&self, index: usize, cache: &PixelCache) -> Answer {
        let records = self.source.records();
        let Some(rec) = records.get(index) else {
            return Answer::error(
                ErrorCode::NoSuchRecord,
                &format!(
                    "record index {index} is out of range (0..{})",
                    records.len()
                ),
            );
        };
        let pixels = match cache.get(index) {
            Some(bytes) => bytes,
            None => match self.source.pixels(index) {
                Ok(p)
                    if p.dtype == rec.dtype
                        && p.shape == rec.shape
                        && p.bytes.len() <= MAX_PAYLOAD =>
                {
                    let bytes = Arc::new(p.bytes);
                    if self.lock().fed.contains(&index) {
                        cache.keep(index, &bytes);
                    }
                    bytes
                }
                Ok(_) => {
                    tracing::warn!(record = %rec.instance, "decoded pixels do not match the listed shape");
                    return Answer::error(
                        ErrorCode::Unavailable,
                        "record pixels do not match their listed shape",
                    );
                }
                Err(e) => {
                    tracing::warn!(record = %rec.instance, error = %e, "record unavailable");
                    return Answer::error(ErrorCode::Unavailable, UNAVAILABLE);
                }
            },
        };
        let first_feed = {
            let mut st = self.lock();
            st.first_fetch.get_or_insert_with(Instant::now);
            st.bytes_fed += pixels.len() as u64;
            st.records_fed += 1;
            // u32 suffices: cohorts are far below 4 billion records.
            st.fed
                .insert(index)
                .then(|| u32::try_from(index).unwrap_or(u32::MAX))
        };
        // Written directly (numbers and a fixed dtype name only): no JSON tree per record.
        let [f, r, c, s] = rec.shape;
        let header = format!(
            r#"{{"ok":true,"index":{index},"dtype":"{}","shape":[{f},{r},{c},{s}],"payload":{}}}"#,
            rec.dtype.name(),
            pixels.len()
        );
        Answer {
            header: header.into_bytes(),
            payload: Some(pixels),
            first_feed,
        }
    }
}

/// The default number of threads per connection that fetch and decode records: the
/// machine's cores, at least two and at most eight.
pub fn decoders() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .clamp(2, 8)
}

/// Whether the other end of `conn` is gone: `POLLHUP` (every direction shut, as the kernel
/// does when the last handle on the peer socket is closed).
fn hung_up(conn: &UnixStream) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(conn.as_fd(), PollFlags::empty())];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

/// A record to decode, and where its answer goes.
type DecodeJob = (usize, SyncSender<Answer>);

/// An answer in the writer's queue: ready, or being decoded.
enum Slot {
    Ready(Answer),
    Decoding(std::sync::mpsc::Receiver<Answer>),
}

/// The reading thread's side of one connection's queues.
struct Queues {
    answers: SyncSender<Slot>,
    jobs: SyncSender<DecodeJob>,
}

impl Queues {
    /// Queues a ready answer. The writer drains its queue until it closes, so this does not
    /// fail; if it ever did, the connection is over.
    fn answer(&self, a: Answer) -> Result<(), FrameError> {
        self.answers
            .send(Slot::Ready(a))
            .map_err(|_| FrameError::Closed)
    }

    /// Queues the answer to a fetch of `index` in its place, and the record for decoding.
    fn decode(&self, index: usize) -> Result<(), FrameError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.jobs
            .send((index, reply))
            .map_err(|_| FrameError::Closed)?;
        self.answers
            .send(Slot::Decoding(answer))
            .map_err(|_| FrameError::Closed)
    }
}

/// One answer on its way from the reading thread to the writer.
struct Answer {
    header: Vec<u8>,
    payload: Option<Shared>,
    /// The record's index when this is its first feed (it goes to fingerprinting).
    first_feed: Option<u32>,
}

impl Answer {
    fn plain(header: Vec<u8>) -> Self {
        Self {
            header,
            payload: None,
            first_feed: None,
        }
    }

    fn error(code: ErrorCode, message: &str) -> Self {
        Self::plain(protocol::error_header(code, message))
    }
}

/// What a trainer is told of a record that could not be fetched or decoded (the reason stays
/// in the node's log).
const UNAVAILABLE: &str = "the node could not fetch or decode this record";

/// Writes answers in order; records fed for the first time go to the fingerprinting worker in
/// batches of [`FINGERPRINT_BATCH`], and the rest at [`AnswerWriter::finish`], so every fed
/// record is fingerprinted before the feed returns.
struct AnswerWriter<'f> {
    stream: UnixStream,
    fingerprint: &'f SyncSender<Vec<(u32, Shared)>>,
    batch: Vec<(u32, Shared)>,
    result: Result<(), FrameError>,
}

impl<'f> AnswerWriter<'f> {
    fn new(stream: UnixStream, fingerprint: &'f SyncSender<Vec<(u32, Shared)>>) -> Self {
        Self {
            stream,
            fingerprint,
            batch: Vec::with_capacity(FINGERPRINT_BATCH),
            result: Ok(()),
        }
    }

    /// Writes one answer. After a write error nothing more is written (the socket is shut,
    /// so the reading side stops too), but every answered record is still fingerprinted: a
    /// frame cut off mid-payload may have reached the trainer in part.
    fn write(&mut self, a: Answer) -> Result<(), FrameError> {
        if self.result.is_ok() {
            let bytes: &[u8] = a.payload.as_deref().map_or(&[], Vec::as_slice);
            self.result = protocol::write_frame(&mut self.stream, &a.header, bytes);
            if self.result.is_err() {
                let _ = self.stream.shutdown(std::net::Shutdown::Both);
            }
        }
        if let (Some(index), Some(bytes)) = (a.first_feed, a.payload) {
            self.batch.push((index, bytes));
            if self.batch.len() >= FINGERPRINT_BATCH {
                // Fails only if the worker is gone, which `serve` turns into a panic anyway.
                let _ = self.fingerprint.send(std::mem::take(&mut self.batch));
            }
        }
        if self.result.is_err() {
            return Err(FrameError::Closed);
        }
        Ok(())
    }

    /// Ends the connection: nothing more is written (answers still queued are only
    /// fingerprinted).
    fn abort(&mut self, why: &str) {
        if self.result.is_ok() {
            self.result = Err(FrameError::Io(std::io::Error::other(why.to_owned())));
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Hands the last records to fingerprinting; the first write error, if any.
    fn finish(self) -> Result<(), FrameError> {
        if !self.batch.is_empty() {
            // Fails only if the worker is gone, which `serve` turns into a panic anyway.
            let _ = self.fingerprint.send(self.batch);
        }
        self.result
    }
}

/// Bytes of requests the node reads ahead of the one it is answering.
const READ_AHEAD: usize = 64 << 10;

/// The request side of one connection: frames are cut from a bounded read-ahead buffer, so
/// the node can count the requests a pipelining trainer has already sent
/// ([`RequestReader::queued`]) without ever buffering more than [`READ_AHEAD`] bytes beyond
/// the largest allowed request.
struct RequestReader {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl RequestReader {
    fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            buf: vec![0; READ_AHEAD],
            start: 0,
            end: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Appends what one `recvmsg` of at most `want` bytes returns; with `nonblocking` it
    /// returns `Ok(false)` when nothing is waiting. EOF is [`FrameError::Closed`]. File
    /// descriptors the trainer passed along (`SCM_RIGHTS`) are closed as they arrive and end
    /// the connection ([`FrameError::PassedDescriptors`]): a socket of the trainer's kept in
    /// the node would outlive the trainer.
    fn recv(&mut self, want: usize, nonblocking: bool) -> Result<bool, FrameError> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < self.end + want {
            // Only a frame larger than the read-ahead grows the buffer, to exactly its size.
            self.buf.resize(self.end + want, 0);
        }
        let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
        if nonblocking {
            flags |= MsgFlags::MSG_DONTWAIT;
        }
        let fd = self.stream.as_raw_fd();
        let mut control = nix::cmsg_space!([std::os::fd::RawFd; 8]);
        loop {
            let mut iov = [std::io::IoSliceMut::new(
                &mut self.buf[self.end..self.end + want],
            )];
            let (n, passed) = match recvmsg::<()>(fd, &mut iov, Some(&mut control), flags) {
                Ok(msg) => {
                    // More descriptors than fit are closed by the kernel (MSG_CTRUNC).
                    let mut passed = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                    for c in msg.cmsgs().into_iter().flatten() {
                        passed = true;
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for fd in fds {
                                let _ = nix::unistd::close(fd);
                            }
                        }
                    }
                    (msg.bytes, passed)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) if nonblocking => return Ok(false),
                Err(e) => return Err(FrameError::Io(std::io::Error::from(e))),
            };
            if passed {
                return Err(FrameError::PassedDescriptors);
            }
            if n == 0 {
                return Err(FrameError::Closed);
            }
            self.end += n;
            return Ok(true);
        }
    }

    /// The next request's header bytes (blocks until the whole frame is here).
    fn next_header(&mut self) -> Result<Vec<u8>, FrameError> {
        loop {
            let have = self.pending().len();
            let want = match protocol::request_frame_len(self.pending())? {
                Some(n) if have >= n => {
                    let header = self.pending()[4..n].to_vec();
                    self.start += n;
                    return Ok(header);
                }
                Some(n) if n > READ_AHEAD => n - have,
                _ => READ_AHEAD - have,
            };
            self.recv(want, false)?;
        }
    }

    /// Complete requests already received behind the current one. When none is buffered,
    /// reads what has arrived without waiting (up to the read-ahead limit): a trainer over
    /// the in-flight limit is seen as soon as its requests reach the node.
    fn queued(&mut self) -> Result<usize, FrameError> {
        if protocol::complete_requests(self.pending()) > 0 {
            return Ok(protocol::complete_requests(self.pending()));
        }
        while self.pending().len() < READ_AHEAD {
            match self.recv(READ_AHEAD - self.pending().len(), true) {
                Ok(true) => {}
                // The peer may close after its last request; what it sent is still answered.
                Ok(false) | Err(FrameError::Closed) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(protocol::complete_requests(self.pending()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure
    use std::io::Read;

    use super::*;

    #[test]
    fn records_answered_after_the_trainer_hung_up_mid_payload_are_still_fingerprinted() {
        let (node, mut trainer) = UnixStream::pair().unwrap();
        // Reads the start of the first frame, then hangs up while the node is still writing
        // its payload (far larger than any socket buffer).
        let peer = std::thread::spawn(move || {
            let mut start = vec![0u8; 64 << 10];
            trainer.read_exact(&mut start).unwrap();
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let mut w = AnswerWriter::new(node, &tx);
        let answer = |index: u32| Answer {
            header: br#"{"ok":true}"#.to_vec(),
            payload: Some(Arc::new(vec![index as u8; 16 << 20])),
            first_feed: Some(index),
        };
        assert!(w.write(answer(3)).is_err(), "the frame was cut off");
        peer.join().unwrap();
        assert!(
            w.write(answer(4)).is_err(),
            "nothing is written after an error"
        );
        assert!(w.finish().is_err());
        drop(tx);
        let fingerprinted: Vec<u32> = rx.iter().flatten().map(|(index, _)| index).collect();
        assert_eq!(fingerprinted, [3, 4]);
    }
}
