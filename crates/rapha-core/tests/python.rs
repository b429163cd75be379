//! The independent Python reference tools the tests check against (RFC 8785, RFC 9162 Merkle
//! trees, EIP-712), written once for the tests of rapha-core, rapha-receipt and rapha-policy:
//! the other two include this file with `#[path]`. It is not in rapha-testkit because the
//! testkit depends on rapha-core and rapha-policy, so it cannot be their dev-dependency
//! without a cycle.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// `$RAPHA_PYTHON` when it runs `import {imports}`, or `None` with a loud message naming
/// `packages` (a hard failure when `RAPHA_REQUIRE_SERVICES=1`).
pub fn venv_python(imports: &str, packages: &str) -> Option<String> {
    let py = std::env::var("RAPHA_PYTHON")
        .ok()
        .filter(|p| std::path::Path::new(p).exists());
    let ok = py.as_ref().is_some_and(|p| {
        Command::new(p)
            .args(["-c", &format!("import {imports}")])
            .status()
            .is_ok_and(|s| s.success())
    });
    if ok {
        return py;
    }
    let msg = format!(
        "RAPHA_PYTHON with {packages} is missing: source scripts/lib.sh and run install_all"
    );
    assert!(
        std::env::var("RAPHA_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{msg}"
    );
    eprintln!("SKIPPED: {msg}");
    None
}

/// Runs `py` with `args` (a script and its arguments, or `-c` and code), `input` as JSON on
/// stdin when given; asserts it succeeded and parses its JSON output.
pub fn run_json(py: &str, args: &[&str], input: Option<&serde_json::Value>) -> serde_json::Value {
    let mut child = Command::new(py)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = input.map(|v| serde_json::to_vec(v).unwrap());
    let mut stdin = child.stdin.take().unwrap();
    // Written from another thread, so a tool that answers before it has read all of its input
    // cannot deadlock the test.
    let writer = std::thread::spawn(move || match input {
        Some(bytes) => stdin.write_all(&bytes),
        None => Ok(()),
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
