//! The reference trainer's pinned graph (`trainers/lesion-classifier/model.onnx`), written here
//! so it can be made again and compared with the committed file: the same network as the
//! trainer's candle `Net`, with its weights as initializers named like the released tensors
//! (all zero here: the weights come from the release).
//!
//! ```text
//! input [N,1,64,64] -> Conv c1 (8, 3x3) -> Relu -> MaxPool 2x2/2
//!                   -> Conv c2 (16, 3x3) -> Relu -> MaxPool 2x2/2
//!                   -> Conv c3 (32, 3x3) -> Relu            [N,32,12,12]
//!                   -> [ReduceMax over H,W ; ReduceMean over H,W] -> Concat [N,64]
//!                   -> Gemm fc (x fc.weight^T + fc.bias) -> logit [N,1]
//! ```
//!
//! candle's `Conv2dConfig::default()` is padding 0, stride 1, dilation 1, one group (ONNX
//! Conv's defaults); its `max_pool2d(2)` is a 2x2 kernel with stride 2, rounding down (ONNX
//! MaxPool with `ceil_mode` 0); its `Linear` computes `x W^T + b` (Gemm with `transB` 1); its
//! max and mean pooling are concatenated max first.

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};

/// The input side the reference trainer resizes records to (its `SIDE`).
pub const SIDE: i64 = 64;

/// The reference trainer's released tensors: name and shape, as its trainer.toml declares.
pub const TENSORS: &[(&str, &[i64])] = &[
    ("c1.weight", &[8, 1, 3, 3]),
    ("c1.bias", &[8]),
    ("c2.weight", &[16, 8, 3, 3]),
    ("c2.bias", &[16]),
    ("c3.weight", &[32, 16, 3, 3]),
    ("c3.bias", &[32]),
    ("fc.weight", &[1, 64]),
    ("fc.bias", &[1]),
];

/// The graph's ONNX operator set.
const OPSET: i64 = 13;

/// The reference graph as ONNX protobuf bytes (prost writes fields in tag order: the same
/// graph gives the same bytes).
pub fn reference_graph() -> Vec<u8> {
    reference_model().encode_to_vec()
}

/// The reference graph as a protobuf message.
pub fn reference_model() -> pb::ModelProto {
    let conv = |i: &str, w: &str, out: &str| {
        node(
            "Conv",
            &[i, &format!("{w}.weight"), &format!("{w}.bias")],
            out,
            vec![ints("kernel_shape", &[3, 3])],
        )
    };
    let pool = |i: &str, out: &str| {
        node(
            "MaxPool",
            &[i],
            out,
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        )
    };
    let nodes = vec![
        conv("input", "c1", "c1"),
        node("Relu", &["c1"], "r1", vec![]),
        pool("r1", "p1"),
        conv("p1", "c2", "c2"),
        node("Relu", &["c2"], "r2", vec![]),
        pool("r2", "p2"),
        conv("p2", "c3", "c3"),
        node("Relu", &["c3"], "r3", vec![]),
        node(
            "ReduceMax",
            &["r3"],
            "gmax",
            vec![ints("axes", &[2, 3]), int("keepdims", 0)],
        ),
        node(
            "ReduceMean",
            &["r3"],
            "gmean",
            vec![ints("axes", &[2, 3]), int("keepdims", 0)],
        ),
        node("Concat", &["gmax", "gmean"], "pooled", vec![int("axis", 1)]),
        node(
            "Gemm",
            &["pooled", "fc.weight", "fc.bias"],
            "logit",
            vec![int("transB", 1)],
        ),
    ];
    let initializer = TENSORS
        .iter()
        .map(|(name, dims)| pb::TensorProto {
            name: (*name).to_owned(),
            dims: dims.to_vec(),
            data_type: 1,
            raw_data: vec![0; 4 * dims.iter().product::<i64>() as usize],
            ..Default::default()
        })
        .collect();
    pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "rapha onnx-audit reference-graph".into(),
        doc_string: "The reference lesion classifier (trainers/lesion-classifier): the \
                     architecture its released weights load into."
            .into(),
        graph: Some(pb::GraphProto {
            name: "lesion-classifier".into(),
            node: nodes,
            initializer,
            input: vec![value(
                "input",
                &[dim_param("N"), dim(1), dim(SIDE), dim(SIDE)],
            )],
            output: vec![value("logit", &[dim_param("N"), dim(1)])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.to_owned()],
        name: output.to_owned(),
        op_type: op.to_owned(),
        attribute,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn dim(v: i64) -> Dimension {
    Dimension {
        value: Some(dimension::Value::DimValue(v)),
        ..Default::default()
    }
}

fn dim_param(p: &str) -> Dimension {
    Dimension {
        value: Some(dimension::Value::DimParam(p.to_owned())),
        ..Default::default()
    }
}

fn value(name: &str, dims: &[Dimension]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto { dim: dims.to_vec() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
