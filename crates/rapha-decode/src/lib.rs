//! The sandboxed decode process: pixel codecs that exist only as C or C++ libraries (JPEG-LS
//! through CharLS, JPEG extended 12-bit through GDCM's build of IJG 6b, HTJ2K through OpenJPH,
//! two to three times as fast as the in-process Rust port of OpenJPEG) run in a worker process of
//! their own, `rapha-decode`, so that a bug in them reaches nothing of the node's: not its
//! keys, not another job's pixels, not the network (**I3**; the threat model in
//! ARCHITECTURE.md).
//!
//! ```text
//!  enclave runtime (rapha-dicom pixels)          rapha-decode worker (per job and thread)
//!  ------------------------------------          -----------------------------------
//!  header checked, frame split          stdin    mlockall, no_new_privs, rlimits (AS, CPU,
//!  Request (24 bytes) + frame bytes  ─────────▶  FSIZE=0, NOFILE, NPROC=0, CORE=0), fds > 2 closed,
//!    (input length capped)                       unshare(user, net, ipc) where allowed,
//!                                                seccomp allowlist; then reads the request,
//!  exactly rows x cols x samples x      stdout   checks the codec's own header against it,
//!  bytes per sample, or an error     ◀─────────  decodes, writes the samples
//!  (short, long, exit status, signal,
//!   wall-clock timeout: killed)
//! ```
//!
//! This library is the two sides' contract and the parent's half, in safe Rust and with no C
//! code: [`Request`], the fixed header the parent sends before the frame, and [`Worker`],
//! which finds the binary (next to the running executable, or `RAPHA_DECODE_WORKER`), starts
//! it with an empty environment, feeds it, reads at most the output the header implies and
//! turns every way it can fail into a [`WorkerError`]. The binary (`src/bin/rapha-decode/`)
//! holds the sandbox and the C calls.
//!
//! A job's frames go to long-lived workers ([`JobWorkers`], [`Session`]): one worker process
//! per thread decoding at a time, serving frame after frame of that job only, each request
//! numbered and each answer ([`Answer`]) checked to be for that request and exactly the
//! image's length, every frame under its own deadline, and the worker killed and replaced
//! after any failure. The job owns its `JobWorkers` and drops it (killing the workers) when it
//! ends; a worker is never handed to another job. The trade against a process per frame: a
//! worker compromised by one of a job's frames could alter that job's later frames; it still
//! reaches no key of the node's, no other job's pixels, no file and no network. A decode
//! outside a job ([`Worker::decode`]) starts one process per frame, as before.
//!
//! The worker sets its own limits before it reads a byte of input, so a decoder bug it meets
//! runs under them: it can read its stdin, write its stdout and stderr, map memory without
//! execute permission up to its address-space limit, and exit. Any other system call kills the
//! process (seccomp `KILL_PROCESS`). The parent counts such an end like a malformed stream:
//! the instance is excluded and the job goes on.

mod request;
mod session;
mod worker;

#[cfg(feature = "test-hooks")]
pub use request::Hook;
pub use request::{
    Answer, Codec, Request, RequestError, ANSWER_LEN, MAX_INPUT_BYTES, MAX_J2K_TILES,
    MAX_OUTPUT_BYTES, REQUEST_LEN,
};
pub use session::{JobWorkers, Session, FRAMES_PER_WORKER};
pub use worker::{Worker, WorkerError, SESSION_ARG, WORKER_ENV, WORKER_NAME};
