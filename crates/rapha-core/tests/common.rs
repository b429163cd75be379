//! Test helpers: the independent Python tools of the test venv (`python.rs`).

use crate::python::{run_json, venv_python};

/// `$RAPHA_PYTHON` with the `rfc8785` package, or `None` with a loud message (a hard failure
/// when `RAPHA_REQUIRE_SERVICES=1`).
pub fn python() -> Option<String> {
    venv_python("rfc8785", "rfc8785")
}

/// Runs `script` (in tests/) with `args` and `input` on stdin; parses its JSON output.
pub fn run_python(
    py: &str,
    script: &str,
    args: &[&str],
    input: &serde_json::Value,
) -> serde_json::Value {
    let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut all = vec![path.as_str()];
    all.extend_from_slice(args);
    run_json(py, &all, Some(input))
}
