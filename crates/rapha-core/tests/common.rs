//! Test helpers: the independent Python tools of the test venv.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// `$RAPHA_PYTHON` with the `rfc8785` package, or `None` with a loud message (a hard failure
/// when `RAPHA_REQUIRE_SERVICES=1`).
pub fn python() -> Option<String> {
    let py = std::env::var("RAPHA_PYTHON")
        .ok()
        .filter(|p| std::path::Path::new(p).exists());
    let ok = py.as_ref().is_some_and(|p| {
        Command::new(p)
            .args(["-c", "import rfc8785"])
            .status()
            .is_ok_and(|s| s.success())
    });
    if ok {
        return py;
    }
    let msg = "RAPHA_PYTHON with rfc8785 is missing: source scripts/lib.sh and run install_all";
    assert!(
        std::env::var("RAPHA_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{msg}"
    );
    eprintln!("SKIPPED: {msg}");
    None
}

/// Runs `script` (in tests/) with `args` and `input` on stdin; parses its JSON output.
pub fn run_python(
    py: &str,
    script: &str,
    args: &[&str],
    input: &serde_json::Value,
) -> serde_json::Value {
    let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(py)
        .arg(path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(input).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
