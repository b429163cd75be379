//! `[audit]` of trainer.toml: the graph the node's privacy audit pins (issue 19).

use rapha_bundle::statement::{AuditInputKind, AuditOutput, Statement};
use rapha_bundle::{TrainerPredicate, TrainerSpec};
use rapha_core::Digest;

use crate::common::{spec, PREDICATE};

fn with_audit(section: &str) -> Result<TrainerSpec, String> {
    TrainerSpec::from_toml(&format!("{PREDICATE}\n[audit]\n{section}")).map_err(|e| e.to_string())
}

const HASH: &str = "3b7c0f0b2d0e9d5a1e1f7c9b0a4d2c6e8f1a3b5c7d9e0f2a4b6c8d0e1f3a5b7c";

#[test]
fn an_audit_section_pins_graph_input_and_output() {
    let s = with_audit(&format!(
        "graph = \"/model/model.onnx\"\ngraph_sha256 = \"{HASH}\"\n\
         input = {{ kind = \"grey-v1\", side = 64 }}\noutput = \"logit\"\n"
    ))
    .unwrap();
    let a = s.audit.unwrap();
    assert_eq!(a.graph, "/model/model.onnx");
    assert_eq!(a.graph_sha256, HASH.parse::<Digest>().unwrap());
    assert_eq!(a.input.kind, AuditInputKind::GreyV1);
    assert_eq!(a.input.side, 64);
    assert_eq!(a.output, AuditOutput::Logit);
}

#[test]
fn an_audit_section_outside_its_vocabulary_or_bounds_is_refused() {
    let g = format!("graph_sha256 = \"{HASH}\"\n");
    for (section, want) in [
        (
            format!("graph = \"/m.onnx\"\n{g}input = {{ kind = \"rgb-v9\", side = 64 }}\noutput = \"logit\"\n"),
            "unknown variant",
        ),
        (
            format!("graph = \"/m.onnx\"\n{g}input = {{ kind = \"grey-v1\", side = 64 }}\noutput = \"softmax\"\n"),
            "unknown variant",
        ),
        (
            format!("graph = \"/m.onnx\"\n{g}input = {{ kind = \"grey-v1\", side = 4096 }}\noutput = \"logit\"\n"),
            "outside 8 to 1024",
        ),
        (
            format!("graph = \"/m.onnx\"\n{g}input = {{ kind = \"grey-v1\", side = 4 }}\noutput = \"logit\"\n"),
            "outside 8 to 1024",
        ),
        (
            format!("graph = \"model.onnx\"\n{g}input = {{ kind = \"grey-v1\", side = 64 }}\noutput = \"logit\"\n"),
            "absolute path",
        ),
        (
            format!("graph = \"/model/../etc/shadow\"\n{g}input = {{ kind = \"grey-v1\", side = 64 }}\noutput = \"logit\"\n"),
            "absolute path",
        ),
        (
            "graph = \"/m.onnx\"\ngraph_sha256 = \"abc\"\ninput = { kind = \"grey-v1\", side = 64 }\noutput = \"logit\"\n".to_owned(),
            "invalid digest",
        ),
        (
            format!("graph = \"/m.onnx\"\n{g}input = {{ kind = \"grey-v1\", side = 64 }}\noutput = \"logit\"\nweights = \"/w\"\n"),
            "unknown field",
        ),
    ] {
        let e = with_audit(&section).unwrap_err();
        assert!(e.contains(want), "{section}: {e}");
    }
}

fn predicate(s: TrainerSpec) -> TrainerPredicate {
    TrainerPredicate {
        publisher: s.publisher,
        trainer: rapha_bundle::statement::TrainerId {
            name: s.name,
            version: s.version,
        },
        entrypoint: vec!["/trainer".into()],
        env: vec![],
        outputs: s.outputs,
        resources: s.resources,
        requested_fields: s.requested_fields,
        audit: s.audit,
    }
}

#[test]
fn the_signed_statement_carries_the_audit_and_a_statement_without_one_is_unchanged() {
    let m = Digest::of(b"manifest");
    let plain = predicate(spec());
    let st = Statement::new(m, &plain).unwrap();
    let bytes = serde_json::to_vec(&st).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("audit"));
    assert_eq!(Statement::parse_trainer(&bytes).unwrap().1, plain);

    let audited = predicate(
        with_audit(&format!(
            "graph = \"/model.onnx\"\ngraph_sha256 = \"{HASH}\"\n\
             input = {{ kind = \"grey-v1\", side = 64 }}\noutput = \"probability\"\n"
        ))
        .unwrap(),
    );
    let bytes = serde_json::to_vec(&Statement::new(m, &audited).unwrap()).unwrap();
    assert_eq!(Statement::parse_trainer(&bytes).unwrap().1, audited);
    // A statement signed with a graph path the node would not read is refused on parsing.
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["predicate"]["audit"]["graph"] = "relative.onnx".into();
    let e = Statement::parse_trainer(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(e.to_string().contains("absolute path"), "{e}");
}
