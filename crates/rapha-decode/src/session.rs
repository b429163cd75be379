//! Workers kept for the frames of one job: a [`Session`] is one sandboxed worker process that
//! decodes frame after frame, and [`JobWorkers`] holds the sessions of one job (at most one per
//! thread decoding at a time).
//!
//! Starting a worker (exec, loading the C libraries, entering the sandbox) costs more than
//! decoding a small frame; a session pays it once per job and decoder thread instead of once
//! per frame. The isolation the node relies on stays: the worker enters the same sandbox
//! (seccomp allowlist, rlimits, namespaces, no descriptors but its pipes) before it reads its
//! first request, every frame has its own wall-clock deadline, and both directions are
//! length-capped and checked (the request names its frame's length; the answer names the
//! request it answers and its length, which must be the request's image exactly). What a
//! session does not protect is the later frames of the same job from a worker compromised by
//! an earlier one: such a worker could alter them. It still reaches no key of the node's, no
//! other job's frames (a session belongs to one [`JobWorkers`], which one job owns and drops
//! with its sessions' processes, and which cannot be cloned or handed a session of another),
//! no file and no network.
//!
//! After any end other than a decoded frame (a refusal, a crash, a deadline, an answer out of
//! step or of the wrong size) the worker is killed, and the next frame gets a fresh one.

use std::io::{Read, Write};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use crate::request::{Answer, Request, RequestError, ANSWER_LEN};
use crate::worker::{describe, kill, wait_until, Budget, Worker, WorkerError, MAX_MESSAGE};

/// Frames one worker process decodes before it is replaced: its CPU limit is this many frames'
/// worth (a limit on the process's whole life, where each frame also has its deadline).
pub const FRAMES_PER_WORKER: u32 = 256;

/// A session worker's address-space limit is its first frame's budget rounded up to a multiple
/// of this (64 MiB); a later frame that needs more gets a new worker.
pub const MEMORY_STEP: u64 = 64 << 20;

/// A running session worker and the limits it was started with.
struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: ChildStderr,
    memory: u64,
    cpu_secs: u64,
    served: u32,
}

impl Running {
    /// Kills and reaps the worker; its message on stderr (at most [`MAX_MESSAGE`] bytes).
    fn end(mut self) -> String {
        kill(&mut self.child);
        let mut text = Vec::new();
        let _ = (&mut self.stderr).take(MAX_MESSAGE).read_to_end(&mut text);
        String::from_utf8_lossy(&text).trim().to_owned()
    }
}

/// One sandboxed worker process serving frame after frame, started on the first frame and
/// again after any failure. Not `Clone`; dropping it kills its worker.
pub struct Session {
    worker: Worker,
    running: Option<Running>,
    sequence: u32,
}

impl Session {
    /// A session of the worker binary `worker` (no process yet).
    pub fn new(worker: Worker) -> Self {
        Self {
            worker,
            running: None,
            sequence: 0,
        }
    }

    /// The process id of the worker serving the session now, if one runs.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.child.id())
    }

    /// Decodes one frame: exactly [`Request::output_len`] bytes.
    ///
    /// # Errors
    /// [`WorkerError`]: whatever the worker did other than decode the frame (it is then gone).
    pub fn decode(&mut self, request: &Request, frame: &[u8]) -> Result<Vec<u8>, WorkerError> {
        self.decode_watched(request, frame, |_| {})
    }

    /// [`Session::decode`], calling `started` with the process id of the worker that serves
    /// this frame (the tests look at it from outside).
    ///
    /// # Errors
    /// As [`Session::decode`].
    pub fn decode_watched(
        &mut self,
        request: &Request,
        frame: &[u8],
        started: impl FnOnce(u32),
    ) -> Result<Vec<u8>, WorkerError> {
        if frame.len() != request.input_len() {
            return Err(RequestError::Framing.into());
        }
        let budget = Budget::for_request(request);
        // A frame needing more than the running worker was allowed, or a worker whose life's
        // CPU allowance is spent, gets a new worker.
        if self.running.as_ref().is_some_and(|r| {
            budget.memory > r.memory
                || budget.cpu_secs > r.cpu_secs
                || r.served >= FRAMES_PER_WORKER
        }) {
            if let Some(r) = self.running.take() {
                r.end();
            }
        }
        let mut running = match self.running.take() {
            Some(r) => r,
            None => self.start(&budget)?,
        };
        self.sequence = self.sequence.wrapping_add(1);
        started(running.child.id());
        let deadline = Instant::now() + self.worker.timeout_for(&budget);
        match exchange(&mut running, request, self.sequence, frame, deadline) {
            Ok(samples) => {
                running.served += 1;
                self.running = Some(running);
                Ok(samples)
            }
            Err(Exchange::Refused(message)) => {
                running.end();
                Err(WorkerError::Refused(message))
            }
            Err(Exchange::TimedOut) => {
                running.end();
                Err(WorkerError::TimedOut(self.worker.timeout_for(&budget)))
            }
            Err(Exchange::Long) => {
                running.end();
                Err(WorkerError::LongOutput {
                    expected: request.output_len(),
                })
            }
            Err(Exchange::Short(got)) => {
                running.end();
                Err(WorkerError::ShortOutput {
                    got,
                    expected: request.output_len(),
                })
            }
            Err(Exchange::OutOfStep(what)) => {
                running.end();
                Err(WorkerError::OutOfStep(what))
            }
            Err(Exchange::Ended) => {
                // The worker closed its answer early: wait (briefly) for its status.
                let status = wait_until(&mut running.child, deadline);
                let message = running.end();
                Err(WorkerError::Failed {
                    status: status.map_or_else(|| "no answer".to_owned(), describe),
                    message,
                })
            }
        }
    }

    fn start(&self, budget: &Budget) -> Result<Running, WorkerError> {
        let cpu_secs = budget.cpu_secs;
        // The frame's address-space budget rounded up to [`MEMORY_STEP`], so that the job's
        // next frames of about its size (their lengths vary) keep this worker.
        let memory = budget
            .memory
            .div_ceil(MEMORY_STEP)
            .saturating_mul(MEMORY_STEP);
        let mut child = self.worker.spawn(
            memory,
            cpu_secs.saturating_mul(u64::from(FRAMES_PER_WORKER)),
            true,
        )?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill(&mut child);
            return Err(WorkerError::Spawn {
                path: self.worker.path().to_owned(),
                source: std::io::Error::other("no pipes to the worker"),
            });
        };
        Ok(Running {
            child,
            stdin,
            stdout,
            stderr,
            memory,
            cpu_secs,
            served: 0,
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.end();
        }
    }
}

/// How one request and answer went, short of the samples.
enum Exchange {
    Refused(String),
    TimedOut,
    Long,
    Short(usize),
    OutOfStep(String),
    /// The answer ended before its header or its length (the worker exited or crashed).
    Ended,
}

/// Sends `request` numbered `sequence` and its frame, and reads the answer until `deadline`:
/// the header first, checked against the request, then exactly the length it names.
fn exchange(
    running: &mut Running,
    request: &Request,
    sequence: u32,
    frame: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, Exchange> {
    let expected = request.output_len();
    let header = request.encode_numbered(sequence);
    let Running {
        child,
        stdin,
        stdout,
        ..
    } = running;
    std::thread::scope(|scope| {
        // A worker that stops reading ends this write with a broken pipe once it is killed.
        let (wrote, written) = mpsc::channel();
        scope.spawn(move || {
            let _ = stdin
                .write_all(&header)
                .and_then(|()| stdin.write_all(frame));
            let _ = wrote.send(());
        });
        let (tx, rx) = mpsc::channel();
        scope.spawn(move || {
            let _ = tx.send(read_answer(stdout, sequence, expected));
        });
        let left = || deadline.saturating_duration_since(Instant::now());
        let answer = match rx.recv_timeout(left()) {
            Ok(answer) => answer,
            Err(_) => {
                // Killing the worker ends both the write and the read above.
                kill(child);
                return Err(Exchange::TimedOut);
            }
        };
        // The whole frame must have been taken: a worker that answers without reading it
        // would leave the write waiting (and the rest of the frame read as the next request).
        if written.recv_timeout(left()).is_err() {
            kill(child);
            return Err(Exchange::OutOfStep(
                "answered before reading its frame".into(),
            ));
        }
        answer
    })
}

/// Reads and checks one answer: the samples of the image (`expected` bytes), or a refusal.
fn read_answer(
    stdout: &mut ChildStdout,
    sequence: u32,
    expected: usize,
) -> Result<Vec<u8>, Exchange> {
    let mut head = [0u8; ANSWER_LEN];
    stdout.read_exact(&mut head).map_err(|_| Exchange::Ended)?;
    let answer =
        Answer::decode(&head).ok_or_else(|| Exchange::OutOfStep("not an answer header".into()))?;
    if answer.sequence != sequence {
        return Err(Exchange::OutOfStep(format!(
            "the answer to request {} where {sequence} was sent",
            answer.sequence
        )));
    }
    let len = answer.len as usize;
    if answer.refused {
        if len as u64 > MAX_MESSAGE {
            return Err(Exchange::Long);
        }
        let mut text = vec![0u8; len];
        stdout.read_exact(&mut text).map_err(|_| Exchange::Ended)?;
        return Err(Exchange::Refused(
            String::from_utf8_lossy(&text).trim().to_owned(),
        ));
    }
    if len > expected {
        return Err(Exchange::Long);
    }
    if len < expected {
        return Err(Exchange::Short(len));
    }
    let mut out = Vec::new();
    out.try_reserve_exact(expected)
        .map_err(|_| Exchange::Ended)?;
    stdout
        .take(expected as u64)
        .read_to_end(&mut out)
        .map_err(|_| Exchange::Ended)?;
    if out.len() == expected {
        Ok(out)
    } else {
        Err(Exchange::Ended)
    }
}

/// The session workers of one job: a decoding thread takes one (or a new one), decodes its
/// frames and gives it back; at most as many as threads decode at once. Owned by the job (the
/// enclave runtime's record source of that job) and dropped with it, which kills every
/// worker; not `Clone`, and it takes no session from outside, so no worker ever serves frames
/// of two jobs.
pub struct JobWorkers {
    worker: Worker,
    idle: Mutex<Vec<Session>>,
}

impl JobWorkers {
    /// The sessions of a new job, of the worker binary `worker`.
    pub fn new(worker: Worker) -> Self {
        Self {
            worker,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The worker binary.
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// Decodes one frame in one of this job's sessions (an idle one, else a new one), which
    /// is given back for the job's next frames whatever the outcome (after a failure it holds
    /// no process and starts a fresh one).
    ///
    /// # Errors
    /// As [`Session::decode`].
    pub fn decode(&self, request: &Request, frame: &[u8]) -> Result<Vec<u8>, WorkerError> {
        let mut session = self
            .lock()
            .pop()
            .unwrap_or_else(|| Session::new(self.worker.clone()));
        let r = session.decode(request, frame);
        self.lock().push(session);
        r
    }

    /// Process ids of the job's idle session workers (the tests look at them from outside).
    pub fn pids(&self) -> Vec<u32> {
        self.lock().iter().filter_map(Session::pid).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        // Every update is one push or pop: a poisoned list is still whole.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
