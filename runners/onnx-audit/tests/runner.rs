//! The runner from the attacker's side: the graph and the weights are the publisher's files.
//! Each refusal names its reason and happens before anything is scored; the honest reference
//! graph computes what the reference trainer's network computes.
//!
//! The scores against the reference trainer's own, through the node's real record feed, are
//! tested in rapha-trainer-sdk (`tests/audit_runner.rs`), which has the node's side to hand.

use std::collections::BTreeMap;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;

use onnx_audit::declaration::{Declaration, Input, Output};
use onnx_audit::graph::{Scorer, BATCH};
use onnx_audit::reference::{reference_graph, reference_model, TENSORS};
use onnx_audit::weights::Weight;
use onnx_audit::{Refusal, MAX_ELEMENTS};
use prost::Message;
use tract_onnx::pb;

const DECLARATION: Declaration = Declaration {
    input: Input::GreyV1 { side: 64 },
    output: Output::Logit,
};

/// Reproducible weights of the reference network's shapes, of the size He initialisation gives.
fn weights(seed: u64) -> BTreeMap<String, Weight> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    TENSORS
        .iter()
        .map(|(name, dims)| {
            let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
            let n: usize = shape.iter().product();
            let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
            let bound = (6.0 / fan_in as f32).sqrt();
            let values = (0..n).map(|_| next() * bound).collect();
            ((*name).to_owned(), Weight { shape, values })
        })
        .collect()
}

fn load(model: &pb::ModelProto, w: &BTreeMap<String, Weight>) -> Result<Scorer, Refusal> {
    Scorer::load(&model.encode_to_vec(), w, DECLARATION)
}

fn refused(model: &pb::ModelProto, w: &BTreeMap<String, Weight>) -> String {
    let e = load(model, w).expect_err("the graph must be refused");
    assert_eq!(e.code, 3, "{}", e.reason);
    e.reason
}

fn node_mut<'a>(m: &'a mut pb::ModelProto, name: &str) -> &'a mut pb::NodeProto {
    m.graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.name == name)
        .unwrap()
}

// ---- the honest path ----

#[test]
fn committed_reference_graph_equals_the_generator() {
    let committed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../trainers/lesion-classifier/model.onnx");
    let bytes = std::fs::read(&committed).unwrap();
    assert!(
        bytes == reference_graph(),
        "{} differs from the generator: run `cargo run --bin reference-graph -- {}`",
        committed.display(),
        committed.display()
    );
}

/// The reference network written out by hand (valid 3x3 convolutions, 2x2 max pooling, global
/// max and mean pooling, linear layer), as the trainer's candle `Net` computes it.
fn forward(w: &BTreeMap<String, Weight>, img: &[f32]) -> f32 {
    fn conv(x: &[f32], c: usize, side: usize, w: &Weight, b: &Weight) -> (Vec<f32>, usize) {
        let o = w.shape[0];
        let s = side - 2;
        let mut y = vec![0f32; o * s * s];
        for oc in 0..o {
            for r in 0..s {
                for col in 0..s {
                    let mut acc = b.values[oc];
                    for ic in 0..c {
                        for kr in 0..3 {
                            for kc in 0..3 {
                                acc += x[(ic * side + r + kr) * side + col + kc]
                                    * w.values[((oc * c + ic) * 3 + kr) * 3 + kc];
                            }
                        }
                    }
                    y[(oc * s + r) * s + col] = acc.max(0.0);
                }
            }
        }
        (y, s)
    }
    fn pool(x: &[f32], c: usize, side: usize) -> (Vec<f32>, usize) {
        let s = side / 2;
        let mut y = vec![0f32; c * s * s];
        for ch in 0..c {
            for r in 0..s {
                for col in 0..s {
                    let at =
                        |dr: usize, dc: usize| x[(ch * side + 2 * r + dr) * side + 2 * col + dc];
                    y[(ch * s + r) * s + col] = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                }
            }
        }
        (y, s)
    }
    let (x, s) = conv(img, 1, 64, &w["c1.weight"], &w["c1.bias"]);
    let (x, s) = pool(&x, 8, s);
    let (x, s) = conv(&x, 8, s, &w["c2.weight"], &w["c2.bias"]);
    let (x, s) = pool(&x, 16, s);
    let (x, s) = conv(&x, 16, s, &w["c3.weight"], &w["c3.bias"]);
    let plane = s * s;
    let mut pooled: Vec<f32> = x
        .chunks(plane)
        .map(|p| p.iter().copied().fold(f32::MIN, f32::max))
        .collect();
    pooled.extend(
        x.chunks(plane)
            .map(|p| p.iter().sum::<f32>() / plane as f32),
    );
    let fc = &w["fc.weight"].values;
    w["fc.bias"].values[0] + pooled.iter().zip(fc).map(|(a, b)| a * b).sum::<f32>()
}

#[test]
fn the_reference_graph_computes_the_reference_network() {
    let w = weights(1);
    let scorer = load(&reference_model(), &w).unwrap();
    let mut state = 9u64;
    let images: Vec<Vec<f32>> = (0..BATCH + 3)
        .map(|_| {
            (0..64 * 64)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
                })
                .collect()
        })
        .collect();
    // A full batch, then a short one (padded inside, the padding's scores dropped).
    for batch in images.chunks(BATCH) {
        let views: Vec<&[f32]> = batch.iter().map(Vec::as_slice).collect();
        let scores = scorer.score(&views).unwrap();
        assert_eq!(scores.len(), batch.len());
        for (img, got) in batch.iter().zip(scores) {
            let want = 1.0 / (1.0 + (-f64::from(forward(&w, img))).exp());
            assert!((got - want).abs() < 1e-5, "graph {got} vs by hand {want}");
        }
    }
    // A probability output is taken as it is, and refused outside [0, 1].
    let p = Scorer::load(
        &reference_graph(),
        &w,
        Declaration {
            output: Output::Probability,
            ..DECLARATION
        },
    )
    .unwrap();
    let logit = f64::from(forward(&w, &images[0]));
    match p.score(&[&images[0]]) {
        Ok(s) => assert!((s[0] - logit).abs() < 1e-5 && (0.0..=1.0).contains(&logit)),
        Err(e) => {
            assert!(!(0.0..=1.0).contains(&logit), "{}", e.reason);
            assert_eq!(e.code, 4);
            assert!(e.reason.contains("outside [0, 1]"), "{}", e.reason);
        }
    }
}

#[test]
fn released_weights_at_a_lower_precision_load_widened() {
    let mut w = weights(2);
    for t in w.values_mut() {
        for v in &mut t.values {
            *v = half::bf16::from_f32(*v).to_f32();
        }
    }
    let file = safetensors_file(&w, safetensors::Dtype::BF16, |v| {
        half::bf16::from_f32(v).to_le_bytes().to_vec()
    });
    let parsed = onnx_audit::weights::parse(&file).unwrap();
    assert_eq!(parsed, w);
    let img = vec![0.5f32; 64 * 64];
    let s = load(&reference_model(), &parsed)
        .unwrap()
        .score(&[&img])
        .unwrap();
    let want = 1.0 / (1.0 + (-f64::from(forward(&w, &img))).exp());
    assert!((s[0] - want).abs() < 1e-5);
}

// ---- refusals: the graph ----

#[test]
fn an_operator_off_the_list_is_refused_before_tract_sees_it() {
    let mut m = reference_model();
    node_mut(&mut m, "r1").op_type = "NonZero".into();
    assert!(refused(&m, &weights(1)).contains("operator \"NonZero\" is not one this runner loads"));
    let mut m = reference_model();
    node_mut(&mut m, "r1").domain = "com.example".into();
    assert!(refused(&m, &weights(1)).contains("\"com.exampleRelu\" is not one"));
}

#[test]
fn a_graph_tract_cannot_load_is_refused_with_tracts_reason() {
    // MaxPool without its kernel shape.
    let mut m = reference_model();
    node_mut(&mut m, "p1").attribute.clear();
    let reason = refused(&m, &weights(1));
    assert!(reason.starts_with("cannot "), "{reason}");
    // A Gemm whose sizes do not agree: the pooled features are 64, here taken as 32.
    let mut m = reference_model();
    node_mut(&mut m, "logit").input[0] = "gmax".into();
    let reason = refused(&m, &weights(1));
    assert!(reason.starts_with("cannot type the graph"), "{reason}");
    // Not a protobuf at all.
    let e = Scorer::load(b"\xff\xff\xff\xff", &weights(1), DECLARATION).unwrap_err();
    assert!(e.reason.contains("not an ONNX model"), "{}", e.reason);
}

#[test]
fn weights_that_do_not_match_the_graphs_initializers_are_refused() {
    // A released tensor the graph does not have (the graph's initializer is named otherwise).
    let mut w = weights(1);
    let t = w.remove("fc.bias").unwrap();
    w.insert("fc.bias2".into(), t.clone());
    assert!(refused(&reference_model(), &w)
        .contains("initializer \"fc.bias\" is not in the released weights"));
    // An extra released tensor the graph does not use.
    let mut w = weights(1);
    w.insert("hidden".into(), t);
    assert!(refused(&reference_model(), &w)
        .contains("released tensor \"hidden\" is not an initializer"));
    // A tensor of another shape (same number of values).
    let mut w = weights(1);
    w.get_mut("fc.weight").unwrap().shape = vec![64, 1];
    assert!(refused(&reference_model(), &w).contains("initializer \"fc.weight\" is [1, 64]"));
    // An initializer that is not f32.
    let mut m = reference_model();
    m.graph.as_mut().unwrap().initializer[1].data_type = 7;
    assert!(refused(&m, &weights(1)).contains("initializer \"c1.bias\" is [8] of element type 7"));
}

#[test]
fn huge_declared_shapes_are_refused_before_anything_is_allocated() {
    // An initializer declaring 2^60 values (its data is 32 bytes).
    let mut m = reference_model();
    m.graph.as_mut().unwrap().initializer[1].dims = vec![1 << 30, 1 << 30];
    assert!(refused(&m, &weights(1)).contains(&format!("declares more than {MAX_ELEMENTS} values")));
    // A Constant declaring as many.
    let mut m = reference_model();
    let g = m.graph.as_mut().unwrap();
    g.node.insert(
        0,
        pb::NodeProto {
            op_type: "Constant".into(),
            name: "k".into(),
            output: vec!["k".into()],
            attribute: vec![pb::AttributeProto {
                name: "value".into(),
                r#type: 4,
                t: Some(pb::TensorProto {
                    dims: vec![1 << 20, 1 << 20],
                    data_type: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    assert!(refused(&m, &weights(1)).contains("declares more than"));
    // A convolution padded so that one batch's values pass the bound: typed, then refused.
    let mut m = reference_model();
    node_mut(&mut m, "c1").attribute.push(pb::AttributeProto {
        name: "pads".into(),
        r#type: 7,
        ints: vec![5000, 5000, 5000, 5000],
        ..Default::default()
    });
    let reason = refused(&m, &weights(1));
    assert!(
        reason.contains(&format!("a batch of {BATCH} records needs")),
        "{reason}"
    );
    assert!(
        reason.ends_with(&format!("over {MAX_ELEMENTS}")),
        "{reason}"
    );
}

#[test]
fn constants_only_nodes_external_data_and_subgraphs_are_refused() {
    // A node that computes on a weight alone (tract would evaluate it while loading).
    let mut m = reference_model();
    m.graph.as_mut().unwrap().node.push(pb::NodeProto {
        op_type: "Concat".into(),
        name: "grow".into(),
        input: vec!["c3.weight".into(), "c3.weight".into()],
        output: vec!["grown".into()],
        attribute: vec![pb::AttributeProto {
            name: "axis".into(),
            r#type: 2,
            i: 0,
            ..Default::default()
        }],
        ..Default::default()
    });
    assert!(refused(&m, &weights(1)).contains("node \"grow\" (Concat) computes on constants only"));
    // An initializer pointing at a file.
    let mut m = reference_model();
    m.graph.as_mut().unwrap().initializer[0].data_location = Some(1);
    assert!(refused(&m, &weights(1)).contains("\"c1.weight\" points at external data"));
    // A subgraph attribute.
    let mut m = reference_model();
    node_mut(&mut m, "r1").attribute.push(pb::AttributeProto {
        name: "body".into(),
        r#type: 5,
        g: Some(pb::GraphProto::default()),
        ..Default::default()
    });
    assert!(refused(&m, &weights(1)).contains("carries a subgraph"));
    // Two data inputs.
    let mut m = reference_model();
    let g = m.graph.as_mut().unwrap();
    let mut second = g.input[0].clone();
    second.name = "other".into();
    g.input.push(second);
    assert!(refused(&m, &weights(1)).contains("2 data inputs and 1 outputs"));
}

// ---- refusals: the whole program ----

/// Runs the runner binary on `dir` with a feed socket that is bound and never served: a
/// refusal must come before any connection.
fn run_binary(dir: &Path) -> (i32, String, bool) {
    let sock = dir.join("data.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("--in")
        .arg(dir)
        .env("RAPHA_DATA_SOCKET", &sock)
        .output()
        .unwrap();
    let connected = listener.accept().is_ok();
    std::fs::remove_file(&sock).unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        connected,
    )
}

/// `w` as a safetensors file of `dtype`, each value's bytes written by `bytes`.
fn safetensors_file(
    w: &BTreeMap<String, Weight>,
    dtype: safetensors::Dtype,
    bytes: fn(f32) -> Vec<u8>,
) -> Vec<u8> {
    let data: Vec<(&String, Vec<u8>, &Vec<usize>)> = w
        .iter()
        .map(|(n, t)| {
            (
                n,
                t.values.iter().flat_map(|&v| bytes(v)).collect(),
                &t.shape,
            )
        })
        .collect();
    let views = data.iter().map(|(n, b, s)| {
        let view = safetensors::tensor::TensorView::new(dtype, (*s).clone(), b).unwrap();
        ((*n).clone(), view)
    });
    safetensors::serialize(views, None).unwrap()
}

fn write_inputs(dir: &Path, graph: &[u8], w: &BTreeMap<String, Weight>, audit: &str) {
    let file = safetensors_file(w, safetensors::Dtype::F32, |v| v.to_le_bytes().to_vec());
    std::fs::write(dir.join("model.safetensors"), file).unwrap();
    std::fs::write(dir.join("model.onnx"), graph).unwrap();
    std::fs::write(dir.join("audit.json"), audit).unwrap();
}

#[test]
fn each_refusal_exits_non_zero_with_one_line_and_never_touches_the_feed() {
    let honest = r#"{"input": {"kind": "grey-v1", "side": 64}, "output": "logit"}"#;
    let mut bad_op = reference_model();
    node_mut(&mut bad_op, "r2").op_type = "Loop".into();
    let mut wrong_shape = weights(3);
    wrong_shape.get_mut("c2.bias").unwrap().shape = vec![4, 4];
    let mut renamed = weights(3);
    let t = renamed.remove("c3.bias").unwrap();
    renamed.insert("c3.b".into(), t);
    // What is tried, the graph, the weights, audit.json, the exit code, what stderr says.
    type Case<'a> = (
        &'a str,
        Vec<u8>,
        BTreeMap<String, Weight>,
        &'a str,
        i32,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "op tract is not given",
            bad_op.encode_to_vec(),
            weights(3),
            honest,
            3,
            "operator \"Loop\"",
        ),
        (
            "initializer names differ",
            reference_graph(),
            renamed,
            honest,
            3,
            "\"c3.bias\" is not in the released weights",
        ),
        (
            "weights of another shape",
            reference_graph(),
            wrong_shape,
            honest,
            3,
            "\"c2.bias\" is [16] of element type 1, the released tensor is [4, 4]",
        ),
        (
            "unknown input kind",
            reference_graph(),
            weights(3),
            r#"{"input": {"kind": "rgb-v1", "side": 64}, "output": "logit"}"#,
            2,
            "unknown input kind \"rgb-v1\"",
        ),
        (
            "a declared side whose batch passes the value bound",
            reference_graph(),
            weights(3),
            r#"{"input": {"kind": "grey-v1", "side": 1024}, "output": "logit"}"#,
            3,
            "a batch of 32 records needs",
        ),
    ];
    for (what, graph, w, audit, code, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        write_inputs(dir.path(), &graph, &w, audit);
        let (got, stderr, connected) = run_binary(dir.path());
        assert_eq!(got, code, "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
        assert!(
            stderr.starts_with("onnx-audit: ") && stderr.contains(says),
            "{what}: {stderr}"
        );
        assert!(!connected, "{what}: the runner connected to the feed");
    }
    // A graph file over the cap is not even read whole.
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &reference_graph(), &weights(3), honest);
    let f = std::fs::File::create(dir.path().join("model.onnx")).unwrap();
    f.set_len(onnx_audit::MAX_GRAPH_BYTES + 1).unwrap();
    let (got, stderr, connected) = run_binary(dir.path());
    assert_eq!(got, 3, "{stderr}");
    assert!(
        stderr.contains(&format!("is over {} bytes", onnx_audit::MAX_GRAPH_BYTES)),
        "{stderr}"
    );
    assert!(!connected);
}
