//! The parent's half: find the worker, start it in an empty environment, feed it one frame and
//! take back exactly the samples the request implies, within a wall-clock deadline.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::request::{Request, RequestError};

/// The worker binary's file name, looked for next to the running executable.
pub const WORKER_NAME: &str = "rapha-decode";

/// An explicit path to the worker (tests, or an installation that keeps it elsewhere).
pub const WORKER_ENV: &str = "RAPHA_DECODE_WORKER";

/// Most of the worker's stderr kept for the error message.
pub(crate) const MAX_MESSAGE: u64 = 1024;

/// Why a frame did not come back decoded. Every variant excludes the instance; none is the
/// node's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The request was refused before a worker was started.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The worker could not be started (or its pipes read).
    #[error("the sandboxed decoder {path} could not be run: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The decoder refused the frame (the worker's own message).
    #[error("{0}")]
    Refused(String),
    /// The worker ended with another status (its sandbox refused to start, or it crashed).
    #[error("the sandboxed decoder failed ({status}){}", message_suffix(.message))]
    Failed { status: String, message: String },
    /// The worker was still running at the deadline and was killed.
    #[error("the sandboxed decoder ran past its {0:?} deadline and was killed")]
    TimedOut(Duration),
    /// The worker wrote fewer bytes than the image has.
    #[error("the sandboxed decoder wrote {got} bytes, the image has {expected}")]
    ShortOutput { got: usize, expected: usize },
    /// The worker wrote more bytes than the image has; it was killed.
    #[error(
        "the sandboxed decoder wrote more than the {expected} bytes of the image and was killed"
    )]
    LongOutput { expected: usize },
    /// A session's worker answered out of step: not an answer header, or the answer to
    /// another request than the one sent. It was killed.
    #[error("the sandboxed decoder answered out of step ({0}) and was killed")]
    OutOfStep(String),
}

fn message_suffix(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

/// Exit status of a worker whose decoder refused the frame (its message is on stderr).
pub(crate) const EXIT_REFUSED: i32 = 2;

/// The worker's third argument when it serves a job's session ([`crate::Session`]).
pub const SESSION_ARG: &str = "session";

/// A worker binary and the deadline each frame gets.
#[derive(Clone, Debug)]
pub struct Worker {
    path: PathBuf,
    timeout: Option<Duration>,
}

impl Worker {
    /// The worker named by `RAPHA_DECODE_WORKER`, else the `rapha-decode` next to the running
    /// executable; `None` when there is no such file (the node then reports the syntaxes it
    /// serves as undecodable).
    pub fn locate() -> Option<Self> {
        let path = match std::env::var_os(WORKER_ENV) {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe().ok()?.parent()?.join(WORKER_NAME),
        };
        path.is_file().then(|| Self::at(path))
    }

    /// The worker at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            timeout: None,
        }
    }

    /// Every frame gets `timeout` instead of the deadline computed from its size.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Where the binary is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The deadline a frame gets: the one set, else the one from its size.
    pub(crate) fn timeout_for(&self, budget: &Budget) -> Duration {
        self.timeout.unwrap_or(budget.wall)
    }

    /// Starts the worker in an empty environment with its three pipes, under `memory` bytes of
    /// address space and `cpu_secs` of CPU, serving a session when `session` is set.
    pub(crate) fn spawn(
        &self,
        memory: u64,
        cpu_secs: u64,
        session: bool,
    ) -> Result<Child, WorkerError> {
        let mut command = Command::new(&self.path);
        command.arg(memory.to_string()).arg(cpu_secs.to_string());
        if session {
            command.arg(SESSION_ARG);
        }
        command
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| WorkerError::Spawn {
                path: self.path.clone(),
                source,
            })
    }

    /// Decodes one frame: exactly [`Request::output_len`] bytes.
    ///
    /// # Errors
    /// [`WorkerError`]: whatever the worker did other than decode the frame.
    pub fn decode(&self, request: &Request, frame: &[u8]) -> Result<Vec<u8>, WorkerError> {
        self.decode_watched(request, frame, |_| {})
    }

    /// [`Worker::decode`], calling `started` with the worker's process id once it runs (the
    /// tests look at the sandbox from outside).
    ///
    /// # Errors
    /// As [`Worker::decode`].
    pub fn decode_watched(
        &self,
        request: &Request,
        frame: &[u8],
        started: impl FnOnce(u32),
    ) -> Result<Vec<u8>, WorkerError> {
        if frame.len() != request.input_len() {
            return Err(RequestError::Framing.into());
        }
        let expected = request.output_len();
        let budget = Budget::for_request(request);
        let timeout = self.timeout_for(&budget);
        let mut child = self.spawn(budget.memory, budget.cpu_secs, false)?;
        let deadline = Instant::now() + timeout;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill(&mut child);
            return Err(WorkerError::Spawn {
                path: self.path.clone(),
                source: std::io::Error::other("no pipes to the worker"),
            });
        };
        let header = request.encode();
        std::thread::scope(|scope| {
            // A worker that stops reading ends this write with a broken pipe once it is gone.
            scope.spawn(move || {
                let _ = stdin
                    .write_all(&header)
                    .and_then(|()| stdin.write_all(frame));
            });
            let (out_tx, out_rx) = mpsc::channel();
            scope.spawn(move || {
                let mut out = Vec::new();
                let r = out
                    .try_reserve_exact(expected)
                    .map_err(std::io::Error::other)
                    .and_then(|()| stdout.take(expected as u64 + 1).read_to_end(&mut out));
                let _ = out_tx.send(r.map(|_| out));
            });
            let message = scope.spawn(move || {
                let mut text = Vec::new();
                let mut stderr = stderr;
                let _ = (&mut stderr).take(MAX_MESSAGE).read_to_end(&mut text);
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
                String::from_utf8_lossy(&text).trim().to_owned()
            });
            started(child.id());
            let left = deadline.saturating_duration_since(Instant::now());
            let out = match out_rx.recv_timeout(left) {
                Ok(Ok(out)) => out,
                Ok(Err(source)) => {
                    kill(&mut child);
                    return Err(WorkerError::Spawn {
                        path: self.path.clone(),
                        source,
                    });
                }
                Err(_) => {
                    kill(&mut child);
                    return Err(WorkerError::TimedOut(timeout));
                }
            };
            if out.len() > expected {
                kill(&mut child);
                return Err(WorkerError::LongOutput { expected });
            }
            let Some(status) = wait_until(&mut child, deadline) else {
                kill(&mut child);
                return Err(WorkerError::TimedOut(timeout));
            };
            let message = message.join().unwrap_or_default();
            match status.code() {
                Some(0) if out.len() == expected => Ok(out),
                Some(0) => Err(WorkerError::ShortOutput {
                    got: out.len(),
                    expected,
                }),
                Some(EXIT_REFUSED) => Err(WorkerError::Refused(message)),
                _ => Err(WorkerError::Failed {
                    status: describe(status),
                    message,
                }),
            }
        })
    }
}

/// What one frame may cost the worker, from the request alone.
pub(crate) struct Budget {
    /// Address-space limit (bytes): the process image and the libraries, the frame, the output
    /// and the decoder's working memory (a few times the output at most).
    pub(crate) memory: u64,
    pub(crate) cpu_secs: u64,
    pub(crate) wall: Duration,
}

impl Budget {
    pub(crate) fn for_request(r: &Request) -> Self {
        let out = r.output_len() as u64;
        let secs = 10 + out / (4 << 20);
        Self {
            memory: (256 << 20) + 2 * r.input_len() as u64 + 4 * out,
            cpu_secs: secs + 1,
            wall: Duration::from_secs(secs),
        }
    }
}

/// Waits for the worker to exit, until `deadline`.
pub(crate) fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            _ => return None,
        }
    }
}

/// Kills and reaps the worker (it is ours and not yet reaped, so its pid is still its own).
pub(crate) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(31)) => {
            "killed by signal 31 (SIGSYS): a system call outside its seccomp allowlist".into()
        }
        (None, Some(9)) => "killed by signal 9 (SIGKILL; past its CPU limit)".into(),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "ended without a status".into(),
    }
}
