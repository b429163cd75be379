//! Shared test helpers.

use std::path::PathBuf;

/// pydicom's test files, extracted by ./scripts/test; `None` (with a loud message) when absent
/// and services are not required.
pub fn pydicom_corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("RAPHA_PYDICOM_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/rapha/pydicom-corpus")
        });
    if dir.join("CT_small.dcm").is_file() {
        return Some(dir);
    }
    assert!(
        !rapha_testkit::services::services_required(),
        "pydicom corpus missing at {} (RAPHA_REQUIRE_SERVICES=1)",
        dir.display()
    );
    eprintln!(
        "\n*** SKIPPED: pydicom corpus not found at {}; run ./scripts/test ***\n",
        dir.display()
    );
    None
}

/// `$RAPHA_PYTHON` (the venv with pydicom and numpy), or None with a loud message.
pub fn python() -> Option<PathBuf> {
    let py = std::env::var_os("RAPHA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/rapha/venv/bin/python")
        });
    if py.is_file() {
        return Some(py);
    }
    assert!(
        !rapha_testkit::services::services_required(),
        "python venv missing at {} (RAPHA_REQUIRE_SERVICES=1)",
        py.display()
    );
    eprintln!(
        "\n*** SKIPPED: python venv not found at {}; run ./scripts/test ***\n",
        py.display()
    );
    None
}

/// Whether a command-line tool is on PATH (for tpm2-tools, openssl); a missing one skips
/// loudly, or fails when services are required.
pub fn tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    if !found {
        assert!(
            !rapha_testkit::services::services_required(),
            "{name} missing (RAPHA_REQUIRE_SERVICES=1)"
        );
        eprintln!("\n*** SKIPPED: {name} not installed; run ./scripts/test ***\n");
    }
    found
}
