//! A helper tool run by a test (an independent reference, a checker): its output, or a failed
//! test that says why.

use std::process::Command;

/// Runs `cmd` and returns its stdout.
///
/// # Panics
/// If it cannot be started or exits unsuccessfully (with its stderr).
#[allow(clippy::expect_used)] // test support: a failed tool is a failed test
pub fn stdout_of(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("the test's helper tool starts");
    assert!(
        out.status.success(),
        "{:?} failed:\n{}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
