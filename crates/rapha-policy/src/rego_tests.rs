//! Runs the Rego unit tests next to a policy: every rule `test_*` in a `*_test.rego` file must
//! evaluate to `true`, as with `opa test`.

use std::path::{Path, PathBuf};

use crate::error::{PolicyError, Result};
use crate::gate::new_engine;

/// Outcome of one Rego test rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegoTestResult {
    /// `package.rule`, e.g. `rapha_test.test_good_job_is_admitted`.
    pub name: String,
    pub passed: bool,
    /// Why it failed (the value it produced, or the evaluation error).
    pub detail: Option<String>,
}

/// Loads every `.rego` file in `dir` (not recursively) and runs each `test_*` rule of the
/// `*_test.rego` files.
///
/// # Errors
/// [`PolicyError::PolicyIo`] for an unreadable directory or file, [`PolicyError::PolicyCompile`]
/// when a file does not compile. Failing tests are results, not errors.
pub fn run_rego_tests(dir: &Path) -> Result<Vec<RegoTestResult>> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PolicyError::PolicyIo { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rego"))
        .collect();
    files.sort();
    let mut engine = new_engine();
    let mut tests = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).map_err(io(file))?;
        let name = file.display().to_string();
        let package = engine
            .add_policy(name.clone(), source.clone())
            .map_err(|e| PolicyError::PolicyCompile {
                name: name.clone(),
                message: e.to_string(),
            })?;
        if file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with("_test.rego"))
        {
            for rule in test_rules(&source) {
                tests.push((package.clone(), rule));
            }
        }
    }
    let mut results = Vec::new();
    for (package, rule) in tests {
        let path = format!("{package}.{rule}");
        let short = path.strip_prefix("data.").unwrap_or(&path).to_owned();
        let (passed, detail) = match engine.eval_rule(path) {
            Ok(regorus::Value::Bool(true)) => (true, None),
            Ok(regorus::Value::Undefined) => {
                (false, Some("undefined (a condition was false)".to_owned()))
            }
            Ok(other) => (false, Some(format!("evaluated to {other}, not true"))),
            Err(e) => (false, Some(format!("error: {e}"))),
        };
        results.push(RegoTestResult {
            name: short,
            passed,
            detail,
        });
    }
    Ok(results)
}

/// Names of the rules starting at the beginning of a line with `test_`, in file order, once
/// each.
fn test_rules(source: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in source.lines() {
        if !line.starts_with("test_") {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_test_rules_at_line_start_only() {
        let src = "package x\ntest_a if { true }\n  test_b if { true }\ntest_a if { false }\ntest_c := true\n";
        assert_eq!(
            test_rules(src),
            vec!["test_a".to_owned(), "test_c".to_owned()]
        );
    }
}
