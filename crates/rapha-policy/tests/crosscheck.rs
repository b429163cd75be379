//! The same policy and inputs under two independent Rego engines: regorus (in process) and
//! rego-cpp (`regopy` from PyPI). Decisions must be identical on every input, and the inputs
//! together must trigger every denial rule of the policy, so the policy stays portable to OPA.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use rapha_policy::{Gate, Mode, Policy, DEFAULT_POLICY};
use serde_json::{json, Value};

use crate::common::*;

struct Case {
    label: &'static str,
    gate: Gate,
    input: Value,
    data: Value,
}

fn admission(label: &'static str, edit: impl FnOnce(&mut Value)) -> Case {
    let mut input = serde_json::to_value(admission_input()).unwrap();
    edit(&mut input);
    Case {
        label,
        gate: Gate::Admission,
        input,
        data: hospital().data_json(),
    }
}

fn admission_data(label: &'static str, edit: impl FnOnce(&mut Value)) -> Case {
    let mut data = hospital().data_json();
    edit(&mut data["hospital"]);
    Case {
        label,
        gate: Gate::Admission,
        input: serde_json::to_value(admission_input()).unwrap(),
        data,
    }
}

fn final_(label: &'static str, edit: impl FnOnce(&mut Value)) -> Case {
    let mut input = serde_json::to_value(final_input()).unwrap();
    edit(&mut input);
    Case {
        label,
        gate: Gate::Final,
        input,
        data: hospital().data_json(),
    }
}

fn cases() -> Vec<Case> {
    vec![
        admission("good job", |_| {}),
        admission("untrusted publisher", |i| i["publisher"] = "mallory".into()),
        admission("unapproved trainer", |i| {
            i["trainer"] = "face-recogniser".into()
        }),
        admission("no limit", |i| i["query"]["limit"] = Value::Null),
        admission("zero limit", |i| i["query"]["limit"] = 0.into()),
        admission("limit over max", |i| i["query"]["limit"] = 501.into()),
        admission("limit at max", |i| i["query"]["limit"] = 500.into()),
        admission("too many named studies", |i| {
            i["query"]["study_uids"] = (0..300).map(|n| format!("1.2.3.{n}")).collect();
            i["query"]["accession_numbers"] = (0..201).map(|n| format!("A{n}")).collect();
        }),
        admission("named studies, no date range", |i| {
            i["query"]["study_uids"] = json!(["1.2.3.4"]);
            i["query"]["date_range_days"] = Value::Null;
        }),
        admission("not narrowed", |i| {
            i["query"]["date_range_days"] = Value::Null
        }),
        admission("date range too long", |i| {
            i["query"]["date_range_days"] = 367.into()
        }),
        admission("date range at max", |i| {
            i["query"]["date_range_days"] = 366.into()
        }),
        admission("modality not offered", |i| {
            i["query"]["modalities"] = json!(["CR", "US", "SC"])
        }),
        admission("no outputs", |i| i["outputs"] = json!([])),
        admission("onnx output not released", |i| {
            i["outputs"] = json!([{"name": "m.onnx", "kind": "onnx", "max_bytes": 10}]);
        }),
        admission("output file too big", |i| {
            i["outputs"][0]["max_bytes"] = json!((100u64 << 20) + 1)
        }),
        admission("outputs too big together", |i| {
            i["outputs"] = json!([
                {"name": "a.safetensors", "kind": "safetensors", "max_bytes": 100u64 << 20},
                {"name": "b.safetensors", "kind": "safetensors", "max_bytes": 100u64 << 20},
                {"name": "metrics.json", "kind": "metrics-json", "max_bytes": 1},
            ]);
        }),
        admission("field not shared", |i| {
            i["requested_fields"] = json!(["PatientAge", "InstitutionName"])
        }),
        admission("fee below minimum", |i| {
            i["fee"] = 99_999_999.into();
            i["fee_usdc"] = "99.999999".into();
        }),
        admission("fee at minimum", |i| {
            i["fee"] = 100_000_000.into();
            i["fee_usdc"] = "100.000000".into();
        }),
        admission("large fee", |i| {
            i["fee"] = 5_000_000_000_000u64.into();
            i["fee_usdc"] = "5000000.000000".into();
        }),
        admission("budget exhausted", |i| {
            i["publisher_history"] = json!([NOW - 1, NOW - 2, NOW - 3])
        }),
        admission("old jobs leave the window", |i| {
            i["publisher_history"] = json!([NOW - 1, NOW - 2, NOW - 720 * 3600]);
        }),
        admission("resources out of range", |i| {
            i["resources"]["memory_mb"] = 0.into();
            i["resources"]["pids"] = 100_000.into();
        }),
        admission("a GPU where the hospital admits none", |i| {
            i["resources"]["gpus"] = 1.into();
        }),
        admission("malformed: resources missing", |i| {
            i.as_object_mut().unwrap().remove("resources");
        }),
        admission("linkage allowed", |i| i["linkage"] = "fed-run-1".into()),
        admission("malformed: linkage is a number", |i| {
            i["linkage"] = 7.into()
        }),
        {
            let mut c = admission_data("linkage not allowed for this publisher", |h| {
                h["linkage_publishers"] = json!(["other-co"]);
            });
            c.input["linkage"] = "fed-run-1".into();
            c
        },
        admission("everything wrong at once", |i| {
            i["publisher"] = "mallory".into();
            i["query"]["limit"] = Value::Null;
            i["query"]["date_range_days"] = Value::Null;
            i["query"]["modalities"] = json!(["US"]);
            i["outputs"] = json!([]);
            i["requested_fields"] = json!(["PatientName"]);
            i["fee"] = 0.into();
            i["fee_usdc"] = "0.000000".into();
        }),
        admission("malformed: missing fields", |i| {
            *i = json!({"publisher": "acme-ai"})
        }),
        admission("malformed: fee is a string", |i| i["fee"] = "120".into()),
        admission("malformed: output size is a string", |i| {
            i["outputs"][0]["max_bytes"] = "big".into()
        }),
        admission("malformed: history holds a string", |i| {
            i["publisher_history"] = json!(["yesterday"])
        }),
        admission("malformed: outputs is not a list", |i| {
            i["outputs"] = json!({"a": 1})
        }),
        admission("malformed: study uids is a string", |i| {
            i["query"]["study_uids"] = "1.2.3".into()
        }),
        admission_data("publisher trusted, no trainers", |h| {
            h["publishers"]["acme-ai"]["trainers"] = json!([])
        }),
        admission_data("publisher trusted for any trainer", |h| {
            h["publishers"]["acme-ai"]["trainers"] = json!(["*"]);
        }),
        admission_data("budget of zero", |h| h["budget"]["max_jobs"] = 0.into()),
        final_("approved and attested", |_| {}),
        final_("no approval", |i| i["approval"] = Value::Null),
        final_("bad signature", |i| {
            i["approval"]["signature_valid"] = false.into()
        }),
        final_("unknown signer", |i| {
            i["approval"]["signer_trusted"] = false.into()
        }),
        final_("other job", |i| {
            i["approval"]["job_digest"] = rapha_core::Digest::of(b"x").to_hex().into()
        }),
        final_("expired", |i| i["approval"]["expires_at"] = NOW.into()),
        final_("revoked", |i| i["approval"]["revoked"] = true.into()),
        final_("no attestation", |i| {
            i["attestation"] = json!({"present": false, "verified": false})
        }),
        final_("attestation unverified", |i| {
            i["attestation"] = json!({"present": true, "verified": false})
        }),
        final_("cohort too small", |i| i["cohort"]["patients"] = 49.into()),
        final_("validation too small", |i| {
            i["cohort"]["validation_patients"] = 19.into()
        }),
        final_("cohort at minimums", |i| {
            i["cohort"] = json!({"patients": 50, "validation_patients": 20})
        }),
        final_("malformed: expiry is a string", |i| {
            i["approval"]["expires_at"] = "tomorrow".into()
        }),
        final_("malformed: patients is a string", |i| {
            i["cohort"]["patients"] = "many".into()
        }),
        final_("malformed final input", |i| *i = json!({"job_digest": 7})),
        final_("everything wrong at once", |i| {
            i["approval"] = json!({"job_digest": "00", "signature_valid": false, "signer_trusted": false,
                                   "expires_at": 0, "revoked": true});
            i["attestation"] = json!({"present": false, "verified": false});
            i["cohort"] = json!({"patients": 1, "validation_patients": 0});
        }),
        Case {
            label: "demo mode without attestation",
            gate: Gate::Final,
            input: {
                let mut i = serde_json::to_value(final_input()).unwrap();
                i["attestation"] = json!({"present": false, "verified": false});
                i
            },
            data: {
                let mut h = hospital();
                h.mode = Mode::Demo;
                h.data_json()
            },
        },
        Case {
            label: "default minimums (50, 20)",
            gate: Gate::Final,
            input: {
                let mut i = serde_json::to_value(final_input()).unwrap();
                i["cohort"] = json!({"patients": 49, "validation_patients": 19});
                i
            },
            data: {
                let mut d = hospital().data_json();
                let h = d["hospital"].as_object_mut().unwrap();
                h.remove("min_patients");
                h.remove("min_validation_patients");
                d
            },
        },
    ]
}

/// Each denial message template of the policy as a matcher: the literal pieces between the
/// `%s`/`%v` placeholders, in order.
fn templates() -> Vec<Vec<String>> {
    DEFAULT_POLICY
        .lines()
        .filter_map(|l| l.trim().strip_prefix("msg := "))
        .map(|rhs| {
            let quoted = rhs.strip_prefix("sprintf(").unwrap_or(rhs);
            let text = quoted[1..].split('"').next().unwrap();
            text.split("%s")
                .flat_map(|p| p.split("%v"))
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

fn matches(template: &[String], reason: &str) -> bool {
    let mut rest = reason;
    for (i, piece) in template.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(piece.as_str()) else {
                return false;
            };
            rest = r;
        } else if i == template.len() - 1 {
            return rest.ends_with(piece.as_str());
        } else {
            let Some(at) = rest.find(piece.as_str()) else {
                return false;
            };
            rest = &rest[at + piece.len()..];
        }
    }
    template.len() == 1 && rest.is_empty()
}

#[test]
fn inputs_cover_every_denial_rule_of_the_policy() {
    let policy = Policy::builtin().unwrap();
    let templates = templates();
    let rules = DEFAULT_POLICY.matches("_reasons contains msg if").count();
    assert_eq!(templates.len(), rules, "every rule has one message");
    let mut hit = BTreeSet::new();
    for case in cases() {
        let d = policy.evaluate(case.gate, &case.input, &case.data).unwrap();
        for reason in &d.reasons {
            let which: Vec<usize> = (0..templates.len())
                .filter(|&t| matches(&templates[t], reason))
                .collect();
            assert_eq!(
                which.len(),
                1,
                "{}: reason {reason:?} matches templates {which:?}",
                case.label
            );
            hit.insert(which[0]);
        }
    }
    let missed: Vec<_> = (0..templates.len())
        .filter(|t| !hit.contains(t))
        .map(|t| templates[t].join("…"))
        .collect();
    assert!(missed.is_empty(), "rules no input triggers: {missed:#?}");
}

fn regopy_python() -> Option<PathBuf> {
    let required = std::env::var("RAPHA_REQUIRE_SERVICES").as_deref() == Ok("1");
    let python = std::env::var_os("RAPHA_PYTHON").map(PathBuf::from);
    let usable = python.as_ref().is_some_and(|p| {
        Command::new(p)
            .args(["-c", "import regopy"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if usable {
        return python;
    }
    assert!(
        !required,
        "RAPHA_PYTHON with regopy is required (RAPHA_REQUIRE_SERVICES=1); source scripts/lib.sh"
    );
    eprintln!("SKIPPED: regopy not available (set RAPHA_PYTHON to a python with regopy 1.5.2)");
    None
}

#[test]
fn regorus_and_regopy_give_identical_decisions_on_every_input() {
    let cases = cases();
    assert!(
        cases.len() >= 30,
        "at least 30 inputs, have {}",
        cases.len()
    );
    let policy = Policy::builtin().unwrap();
    let ours: Vec<Value> = cases
        .iter()
        .map(|c| {
            let d = policy.evaluate(c.gate, &c.input, &c.data).unwrap();
            json!({"allow": d.allow, "reasons": d.reasons})
        })
        .collect();
    // The set of inputs is not trivially uniform: both verdicts occur for both gates.
    for gate in [Gate::Admission, Gate::Final] {
        for allow in [true, false] {
            assert!(
                cases
                    .iter()
                    .zip(&ours)
                    .any(|(c, o)| c.gate == gate && o["allow"] == allow),
                "no {gate:?} case with allow={allow}"
            );
        }
    }
    let Some(python) = regopy_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases_path = dir.path().join("cases.json");
    let out_path = dir.path().join("out.json");
    let policy_path = dir.path().join("rapha.rego");
    std::fs::write(&policy_path, DEFAULT_POLICY).unwrap();
    let json_cases: Vec<Value> = cases
        .iter()
        .map(|c| json!({"gate": c.gate.rule(), "input": c.input, "data": c.data}))
        .collect();
    std::fs::write(&cases_path, serde_json::to_vec(&json_cases).unwrap()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/regopy_eval.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&policy_path)
        .arg(&cases_path)
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "regopy script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<Value> = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    assert_eq!(theirs.len(), cases.len());
    for ((case, o), t) in cases.iter().zip(&ours).zip(&theirs) {
        assert_eq!(o, t, "engines disagree on {:?}", case.label);
    }
}
