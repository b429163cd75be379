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
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rapha_core::JobId;
use serde::Serialize;

use crate::error::{io, Result};
use crate::fingerprint::{Collector, Fingerprints};
use crate::protocol::{self, ErrorCode, FrameError, Request};
use crate::record::RecordSource;
use crate::split::Split;

mod answer;
mod cache;
mod connection;

use cache::PixelCache;
use connection::{Answer, AnswerWriter, DecodeJob, Queues, RequestReader, Slot};

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
