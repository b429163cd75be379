//! Child processes of the harness: own process group, log file, graceful stop, and a watchdog
//! so a service never outlives the test process, even when that process is killed outright.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::HarnessError;

/// `sh` wrapper around every service. It runs the program in the background, forwards
/// SIGTERM/SIGINT to it and waits until it has exited (so `--state` dumps complete before we
/// see the wrapper exit), and runs a watchdog that SIGKILLs the program once the test process
/// (`$1`) is gone — a test binary killed by a signal runs no destructors.
const WRAPPER: &str = r#"parent=$1; shift
"$@" </dev/null &
child=$!
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM INT
( while kill -0 "$parent" 2>/dev/null; do sleep 1; done; kill -KILL "$child" 2>/dev/null ) </dev/null >/dev/null 2>&1 &
watchdog=$!
wait "$child"
status=$?
kill "$watchdog" 2>/dev/null
exit "$status"
"#;

/// How long a service gets to exit after SIGTERM before the whole group is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A running service process (the wrapper is the process-group leader).
pub(crate) struct Proc {
    name: &'static str,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Proc {
    /// Starts `program args…` in its own process group, stdout and stderr appended to `log`.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[OsString],
        cwd: &Path,
        log: &Path,
    ) -> Result<Proc, HarnessError> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| HarnessError::io(format!("open log {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::io(format!("open log {}", log.display()), e))?;
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg(format!("rapha-{name}"))
            .arg(std::process::id().to_string())
            .arg(program)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawn {name} ({})", program.display()), e))?;
        Ok(Proc {
            name,
            child: Some(child),
            log_path: log.to_path_buf(),
        })
    }

    /// `Err(Exited)` when the service has already died (bad config, port taken…).
    pub(crate) fn check_alive(&mut self) -> Result<(), HarnessError> {
        let Some(child) = self.child.as_mut() else {
            return Err(self.exited("was stopped".into()));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exited(status.to_string())),
            Err(e) => Err(HarnessError::io(format!("wait for {}", self.name), e)),
        }
    }

    fn exited(&self, status: String) -> HarnessError {
        HarnessError::Exited {
            service: self.name,
            status,
            log: self.log_path.clone(),
            log_tail: log_tail(&self.log_path),
        }
    }

    /// Polls `ready` until it answers true, the process dies, or `timeout` passes.
    pub(crate) fn wait_ready(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    service: self.name,
                    waited: timeout,
                    log: self.log_path.clone(),
                    log_tail: log_tail(&self.log_path),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM to the group, wait for the program to exit, SIGKILL if it does not in time.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Ok(raw) = i32::try_from(child.id()) else {
            return;
        };
        let pgid = Pid::from_raw(raw);
        if matches!(child.try_wait(), Ok(Some(_))) {
            // The wrapper is gone; make sure nothing else of the group survived it.
            let _ = killpg(pgid, Signal::SIGKILL);
            return;
        }
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                let _ = killpg(pgid, Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(service = self.name, "did not stop after SIGTERM; killing");
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A service's working directory: removed on drop, unless the thread is panicking, when it
/// is kept and its log path printed so the failure can be read.
pub(crate) struct Workdir {
    dir: Option<TempDir>,
    path: PathBuf,
    log: PathBuf,
    keep: bool,
}

impl Workdir {
    pub(crate) fn new(service: &str) -> Result<Workdir, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rapha-{service}-"))
            .tempdir()
            .map_err(|e| HarnessError::io("create a temporary directory".into(), e))?;
        let path = dir.path().to_path_buf();
        let log = path.join(format!("{service}.log"));
        Ok(Workdir {
            dir: Some(dir),
            path,
            log,
            keep: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// Keep the directory after drop: the service failed and its log names it.
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() || self.keep {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!(
                    "rapha-testkit: service failed; its dir is kept at {}, log {}",
                    kept.display(),
                    self.log.display()
                );
            }
        }
    }
}

/// A loopback TCP port that was free a moment ago (bind to port 0 and drop). Another process
/// may take it before the service binds it; start functions retry on that.
pub(crate) fn free_port() -> Result<u16, HarnessError> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| HarnessError::io("bind a free loopback port".into(), e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| HarnessError::io("read a bound port".into(), e))
}

/// Two consecutive free ports (P, P+1), as swtpm's server and control channels need.
pub(crate) fn free_port_pair() -> Result<u16, HarnessError> {
    for _ in 0..64 {
        let p = free_port()?;
        let Some(next) = p.checked_add(1) else {
            continue;
        };
        let both = TcpListener::bind(("127.0.0.1", p))
            .and_then(|a| TcpListener::bind(("127.0.0.1", next)).map(|b| (a, b)));
        if both.is_ok() {
            return Ok(p);
        }
    }
    Err(HarnessError::NoFreePort)
}

pub(crate) fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// The last ~40 lines of a log, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Finds an executable: an explicit path (from an env var) if set, else the first of
/// `candidates` that exists, else a search of PATH for `name`.
pub(crate) fn find_binary(env: Option<&str>, name: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(var) = env {
        if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            return p.is_file().then_some(p);
        }
    }
    for c in candidates {
        let p = PathBuf::from(c);
        if p.is_file() {
            return Some(p);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
