//! Runs code that may crash or exhaust the process in a child process, so the test that
//! attacks it survives to report what happened.
//!
//! The child is the test binary itself, re-run with a filter that selects only the calling
//! test and `RAPHA_VICTIM` naming it. In the child, [`isolate`] caps its own address space
//! (`RLIMIT_AS`: what it has now plus [`Limits::memory`]), runs the closure, prints the result
//! and exits; in the parent it waits at most [`Limits::timeout`] and reports how the child
//! ended. A stack overflow (Rust aborts the process), an allocation the cap refuses (Rust
//! aborts with "memory allocation of N bytes failed") and a hang are all outcomes the parent
//! can assert on, where in-process they would kill or wedge the whole test binary.
//!
//! ```no_run
//! use rapha_testkit::victim::{isolate, Ended, Limits};
//! let ended = isolate(concat!(module_path!(), "::my_test"), Limits::default(), || {
//!     "what the code under attack returned".to_owned()
//! });
//! assert_eq!(ended, Ended::Returned("what the code under attack returned".into()));
//! ```

// A test helper: when the test environment itself is broken (the child cannot be started or
// waited for) or the attacked code did not return, panicking is how the test fails.
#![allow(clippy::panic)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ENV: &str = "RAPHA_VICTIM";
const MARKER: &str = "RAPHA-VICTIM-RESULT:";

/// What the child may use.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Address space the child may add to what it holds when [`isolate`] starts (bytes).
    pub memory: u64,
    /// Wall time before the child is killed.
    pub timeout: Duration,
}

impl Default for Limits {
    /// 512 MiB and 60 s.
    fn default() -> Self {
        Self {
            memory: 512 << 20,
            timeout: Duration::from_secs(60),
        }
    }
}

/// How the child ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The closure returned this ([`isolate_measured`] also gives the child's peak memory).
    Returned(String),
    /// The child died before returning: a signal or an exit status, and the end of its stderr
    /// (Rust's "has overflowed its stack" or "memory allocation of N bytes failed").
    Crashed { status: String, stderr_tail: String },
    /// Still running when the timeout expired; it was killed.
    TimedOut { after: Duration },
}

impl Ended {
    /// The returned value, or a panic describing how the child ended instead.
    ///
    /// # Panics
    /// When the child crashed or timed out: that is the test's failure.
    pub fn returned(self) -> String {
        match self {
            Ended::Returned(s) => s,
            other => panic!("the code under attack did not return: {other:?}"),
        }
    }
}

/// Runs `f` in a child process under `limits` and reports how it ended. `test_path` is the
/// calling test's full path, `concat!(module_path!(), "::test_name")`.
///
/// # Panics
/// When the child cannot be started (the test environment is broken).
pub fn isolate(test_path: &str, limits: Limits, f: impl FnOnce() -> String) -> Ended {
    isolate_measured(test_path, limits, f).0
}

/// [`isolate`], also returning the child's peak resident set size in bytes when it returned.
///
/// # Panics
/// As [`isolate`].
pub fn isolate_measured(
    test_path: &str,
    limits: Limits,
    f: impl FnOnce() -> String,
) -> (Ended, Option<u64>) {
    let name = test_path
        .split_once("::")
        .map_or(test_path, |(_, rest)| rest);
    if std::env::var(ENV).as_deref() == Ok(name) {
        child(limits, f);
    }
    parent(name, limits)
}

fn child(limits: Limits, f: impl FnOnce() -> String) -> ! {
    let now = vm_bytes().unwrap_or(0);
    let cap = now.saturating_add(limits.memory);
    if let Err(e) = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, cap, cap)
    {
        eprintln!("victim: cannot set RLIMIT_AS: {e}");
        std::process::exit(97);
    }
    let out = f();
    // VmHWM, not getrusage: ru_maxrss carries over the parent's peak through the exec.
    let peak = peak_rss().unwrap_or(0);
    // One line: the escaped result and the peak RSS.
    println!(
        "\n{MARKER}{peak}:{}",
        serde_json::to_string(&out).unwrap_or_default()
    );
    std::process::exit(0);
}

/// The process's peak resident set size (VmHWM in /proc/self/status), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The process's virtual memory size, from /proc/self/statm (pages).
fn vm_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().next()?.parse().ok()?;
    Some(pages * 4096)
}

fn parent(name: &str, limits: Limits) -> (Ended, Option<u64>) {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut child = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV, name)
        // One malloc arena: each extra arena reserves 64 MiB of the capped address space.
        .env("MALLOC_ARENA_MAX", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the victim process: {e}"));
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= limits.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for the victim process: {e}"),
        }
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let Some(status) = status else {
        return (
            Ended::TimedOut {
                after: limits.timeout,
            },
            None,
        );
    };
    if let Some(line) = out.lines().find_map(|l| l.strip_prefix(MARKER)) {
        if let Some((peak, json)) = line.split_once(':') {
            if let Ok(v) = serde_json::from_str::<String>(json) {
                return (Ended::Returned(v), peak.parse().ok());
            }
        }
    }
    // Backtrace frames are indented; what the runtime said about the death is not.
    let tail: String = {
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with(' '))
            .filter(|l| !l.starts_with("stack backtrace") && !l.starts_with("note:"))
            .collect();
        lines[lines.len().saturating_sub(4)..].join("\n")
    };
    let status = {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (_, Some(sig)) => format!("killed by signal {sig}"),
            (Some(code), None) => format!("exit status {code}"),
            (None, None) => status.to_string(),
        }
    };
    (
        Ended::Crashed {
            status,
            stderr_tail: tail,
        },
        None,
    )
}
