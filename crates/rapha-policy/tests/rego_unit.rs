//! The Rego unit tests in `policy/` (what `rapha-node policy test` runs) pass, and a failing
//! Rego test is reported as failing.

use std::path::PathBuf;

use rapha_policy::run_rego_tests;

fn policy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policy")
}

#[test]
fn shipped_policy_unit_tests_all_pass() {
    let results = run_rego_tests(&policy_dir()).unwrap();
    assert!(
        results.len() >= 25,
        "found only {} Rego tests",
        results.len()
    );
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    assert!(failed.is_empty(), "failing Rego tests: {failed:#?}");
}

#[test]
fn failing_rego_test_is_reported_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        policy_dir().join("rapha.rego"),
        dir.path().join("rapha.rego"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("extra_test.rego"),
        "package extra_test\nimport rego.v1\nimport data.rapha\n\
         test_passes if { rapha.default_min_patients == 50 }\n\
         test_fails if { rapha.default_min_patients == 49 }\n\
         test_not_boolean := 3\n",
    )
    .unwrap();
    let results = run_rego_tests(dir.path()).unwrap();
    let by_name = |n: &str| results.iter().find(|r| r.name == n).unwrap().clone();
    assert!(by_name("extra_test.test_passes").passed);
    assert!(!by_name("extra_test.test_fails").passed);
    assert!(!by_name("extra_test.test_not_boolean").passed);
    assert_eq!(results.len(), 3);
}

#[test]
fn test_file_that_does_not_compile_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("x_test.rego"),
        "package x_test\ntest_a if {\n",
    )
    .unwrap();
    assert!(matches!(
        run_rego_tests(dir.path()),
        Err(rapha_policy::PolicyError::PolicyCompile { .. })
    ));
}
