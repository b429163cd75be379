//! Production is not the demo (**I8**): the mode says production and nothing in the
//! configuration points at a demo-only component.

use rapha_policy::Mode;
use serde_json::Value;

use crate::config::Config;

use super::{fail, Outcome};

/// Strings that mark a demo-only component; a production config referencing one is refused.
const DEMO_MARKERS: &[&str] = &["rapha-demo", "rapha-testkit"];

pub(super) fn check_mode(config: &Config) -> Outcome {
    match config.mode {
        Mode::Production => Ok("production".into()),
        Mode::Demo => fail(
            "mode = \"demo\"",
            "set mode = \"production\" (demo configs never run in production)",
        ),
    }
}

pub(super) fn check_no_demo(config: &Config) -> Outcome {
    let json = serde_json::to_value(config).unwrap_or(Value::Null);
    let mut found = Vec::new();
    collect_demo_refs("", &json, &mut found);
    if config.mode == Mode::Demo {
        found.push("mode = \"demo\"".to_owned());
    }
    if found.is_empty() {
        Ok("no demo PACS, simulated attestation or demo tooling referenced".into())
    } else {
        fail(
            format!("demo components referenced: {}", found.join(", ")),
            "replace them with the hospital's real PACS, keys, runtime and chain",
        )
    }
}

fn collect_demo_refs(path: &str, v: &Value, found: &mut Vec<String>) {
    match v {
        Value::String(s) if DEMO_MARKERS.iter().any(|m| s.contains(m)) => {
            found.push(format!("{path} = {s:?}"))
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_demo_refs(&format!("{path}[{i}]"), item, found);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                collect_demo_refs(&p, item, found);
            }
        }
        _ => {}
    }
}
