//! The pinned graph with the released weights in it, ready to score batches of records.
//!
//! Loading is in two steps, so that tract sees only what has been checked:
//! 1. the ONNX protobuf is decoded and checked here: one data input, one output, only the
//!    operators of [`ALLOWED_OPS`], no node computing on constants alone, no external data,
//!    subgraph or local function, at most [`MAX_ELEMENTS`] values in constants; then every
//!    initializer is replaced by the released tensor of the same name and shape, and every
//!    released tensor must replace one;
//! 2. tract types the graph for a batch of [`BATCH`] records of the declared input, every
//!    intermediate value must have a concrete shape, and their sizes together stay within
//!    [`MAX_ELEMENTS`], before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::declaration::{Declaration, Output};
use crate::weights::Weight;
use crate::{Refusal, MAX_ELEMENTS};

/// Records scored per run of the graph (the last batch is padded with zero images, whose
/// scores are dropped).
pub const BATCH: usize = 32;

/// The ONNX operators an image classifier's graph may use here. None of them makes a value
/// larger than its inputs and attributes say, which the typed shapes bound before running;
/// operators that build tensors from data (ConstantOfShape, Expand, Tile, Range, Resize, Pad,
/// control flow, random generators) are not loaded.
pub const ALLOWED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Identity",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mul",
    "ReduceMax",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

/// ONNX's FLOAT element type.
const ONNX_FLOAT: i32 = 1;

/// The graph with the released weights, typed for [`BATCH`] records.
#[derive(Debug)]
pub struct Scorer {
    plan: Arc<TypedRunnableModel>,
    declaration: Declaration,
}

impl Scorer {
    /// Checks `graph` (ONNX protobuf bytes) and `weights`, substitutes the weights into the
    /// graph and types it for the declared input.
    ///
    /// # Errors
    /// Any check of the module documentation, or tract cannot load or type the graph.
    pub fn load(
        graph: &[u8],
        weights: &BTreeMap<String, Weight>,
        declaration: Declaration,
    ) -> Result<Self, Refusal> {
        let mut proto = pb::ModelProto::decode(graph)
            .map_err(|e| Refusal::model(format!("the graph is not an ONNX model: {e}")))?;
        check_and_substitute(&mut proto, weights)?;
        let model = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .map_err(|e| refused_by_tract("cannot load the graph", &e))?;
        let shape = declaration.input.shape(BATCH);
        let typed = model
            .with_input_fact(0, f32::fact(shape).into())
            .and_then(|m| m.into_typed())
            .map_err(|e| refused_by_tract("cannot type the graph for the declared input", &e))?;
        check_sizes(&typed)?;
        let output = typed
            .output_fact(0)
            .map_err(|e| refused_by_tract("the graph has no output", &e))?;
        if output.datum_type != f32::datum_type() {
            return Err(Refusal::model(format!(
                "the graph's output is {:?}, not f32",
                output.datum_type
            )));
        }
        let volume = output
            .shape
            .as_concrete()
            .map(|s| s.iter().product::<usize>());
        if volume != Some(BATCH) {
            return Err(Refusal::model(format!(
                "the graph's output has shape {:?}, not one value per record",
                output.shape
            )));
        }
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| refused_by_tract("cannot optimise the graph", &e))?;
        Ok(Self { plan, declaration })
    }

    /// The declared input (the preprocessing each record gets).
    pub fn input(&self) -> crate::declaration::Input {
        self.declaration.input
    }

    /// The probability of the positive class for each image (at most [`BATCH`], each the
    /// declared input's size).
    ///
    /// # Errors
    /// An image of the wrong size, tract fails, or a score is not one (a non-finite logit, a
    /// probability outside [0, 1]).
    pub fn score(&self, images: &[&[f32]]) -> Result<Vec<f64>, Refusal> {
        let shape = self.declaration.input.shape(BATCH);
        let per: usize = shape[1..].iter().product();
        if images.len() > BATCH || images.iter().any(|i| i.len() != per) {
            return Err(Refusal::scoring(format!(
                "a batch is at most {BATCH} images of {per} values"
            )));
        }
        let mut data = vec![0f32; BATCH * per];
        for (dst, img) in data.chunks_exact_mut(per).zip(images) {
            dst.copy_from_slice(img);
        }
        let input = Tensor::from_shape(&shape, &data)
            .map_err(|e| Refusal::scoring(format!("cannot build the input: {e}")))?;
        let out = self
            .plan
            .run(tvec!(input.into_tvalue()))
            .map_err(|e| Refusal::scoring(format!("the graph failed: {}", one_line(&e))))?;
        let no_output = || Refusal::scoring("the graph gave no f32 output");
        let view = out
            .first()
            .and_then(|t| t.try_as_plain_ram().ok())
            .ok_or_else(no_output)?;
        let values = view.as_slice::<f32>().map_err(|_| no_output())?;
        images
            .iter()
            .zip(values)
            .map(|(_, &v)| {
                let v = f64::from(v);
                match self.declaration.output {
                    Output::Logit if v.is_finite() => Ok(1.0 / (1.0 + (-v).exp())),
                    Output::Probability if (0.0..=1.0).contains(&v) => Ok(v),
                    Output::Logit => Err(Refusal::scoring(format!(
                        "the graph gave a non-finite logit ({v})"
                    ))),
                    Output::Probability => Err(Refusal::scoring(format!(
                        "the graph gave a probability outside [0, 1] ({v})"
                    ))),
                }
            })
            .collect()
    }
}

fn one_line(e: &impl std::fmt::Debug) -> String {
    // tract's errors carry their context chain; `{:?}` shows it all, on several lines.
    format!("{e:?}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn refused_by_tract(what: &str, e: &TractError) -> Refusal {
    let mut reason = format!("{what}: {}", one_line(e));
    reason.truncate(reason.floor_char_boundary(400));
    Refusal::model(reason)
}

fn elements(dims: &[i64]) -> Option<u64> {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
}

/// The static checks, then the released weights in place of the initializers.
fn check_and_substitute(
    proto: &mut pb::ModelProto,
    weights: &BTreeMap<String, Weight>,
) -> Result<(), Refusal> {
    if !proto.functions.is_empty() {
        return Err(Refusal::model("the graph defines local functions"));
    }
    if let Some(o) = proto
        .opset_import
        .iter()
        .find(|o| !(o.domain.is_empty() || o.domain == "ai.onnx"))
    {
        return Err(Refusal::model(format!(
            "the graph imports operator set {:?}, not the standard one",
            o.domain.chars().take(64).collect::<String>()
        )));
    }
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| Refusal::model("the ONNX model has no graph"))?;
    if !graph.sparse_initializer.is_empty() {
        return Err(Refusal::model("the graph has sparse initializers"));
    }
    let initializers: BTreeSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let data_inputs: Vec<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !initializers.contains(*n))
        .collect();
    if data_inputs.len() != 1 || graph.output.len() != 1 {
        return Err(Refusal::model(format!(
            "the graph has {} data inputs and {} outputs, not one of each",
            data_inputs.len(),
            graph.output.len()
        )));
    }
    // Values known before any record is fed: tract would compute a node on them alone while
    // loading, before its size could be checked.
    let mut constants = initializers.clone();
    let mut total: u64 = 0;
    for node in &graph.node {
        let op = node.op_type.as_str();
        if !(node.domain.is_empty() || node.domain == "ai.onnx") || !ALLOWED_OPS.contains(&op) {
            return Err(Refusal::model(format!(
                "operator {:?} is not one this runner loads",
                format!("{}{op}", node.domain)
                    .chars()
                    .take(64)
                    .collect::<String>()
            )));
        }
        for a in &node.attribute {
            if a.g.is_some() || !a.graphs.is_empty() || a.sparse_tensor.is_some() {
                return Err(Refusal::model(format!(
                    "node {:?} carries a subgraph",
                    node.name
                )));
            }
            let n = match &a.t {
                Some(t) => {
                    check_inline(t)?;
                    elements(&t.dims)
                }
                None => Some(0),
            }
            .and_then(|n| n.checked_add((a.floats.len() + a.ints.len()) as u64));
            total = n.map_or(u64::MAX, |n| total.saturating_add(n));
            if total > MAX_ELEMENTS || !a.tensors.is_empty() {
                return Err(Refusal::model(format!(
                    "the graph's constants hold more than {MAX_ELEMENTS} values"
                )));
            }
        }
        let inputs: Vec<&String> = node.input.iter().filter(|i| !i.is_empty()).collect();
        if op == "Constant" {
            constants.extend(node.output.iter().cloned());
        } else if inputs.iter().all(|i| constants.contains(*i)) {
            return Err(Refusal::model(format!(
                "node {:?} ({op}) computes on constants only",
                node.name
            )));
        }
    }
    let mut used = BTreeSet::new();
    for t in &mut graph.initializer {
        check_inline(t)?;
        let Some(w) = weights.get(&t.name) else {
            return Err(Refusal::model(format!(
                "the graph's initializer {:?} is not in the released weights",
                t.name
            )));
        };
        let dims: Vec<i64> = w.shape.iter().map(|&d| d as i64).collect();
        if t.dims != dims || t.data_type != ONNX_FLOAT {
            return Err(Refusal::model(format!(
                "the graph's initializer {:?} is {:?} of element type {}, the released tensor \
                 is {:?} of f32",
                t.name, t.dims, t.data_type, w.shape
            )));
        }
        total = total.saturating_add(w.values.len() as u64);
        if total > MAX_ELEMENTS {
            return Err(Refusal::model(format!(
                "the graph's constants hold more than {MAX_ELEMENTS} values"
            )));
        }
        t.float_data.clear();
        t.raw_data = w.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        used.insert(t.name.clone());
    }
    if let Some(extra) = weights.keys().find(|k| !used.contains(*k)) {
        return Err(Refusal::model(format!(
            "the released tensor {extra:?} is not an initializer of the graph"
        )));
    }
    Ok(())
}

/// A tensor must hold its data itself, never point at a file.
fn check_inline(t: &pb::TensorProto) -> Result<(), Refusal> {
    if t.data_location.unwrap_or(0) != 0 || !t.external_data.is_empty() {
        return Err(Refusal::model(format!(
            "tensor {:?} points at external data",
            t.name
        )));
    }
    match elements(&t.dims) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(Refusal::model(format!(
            "tensor {:?} declares more than {MAX_ELEMENTS} values",
            t.name
        ))),
    }
}

/// Every value of one batch has a concrete shape, and all of them together stay within
/// [`MAX_ELEMENTS`].
fn check_sizes(model: &TypedModel) -> Result<(), Refusal> {
    let mut total: u64 = 0;
    for node in model.nodes() {
        for o in &node.outputs {
            let Some(shape) = o.fact.shape.as_concrete() else {
                return Err(Refusal::model(format!(
                    "node {:?} has no fixed shape for a batch of {BATCH}",
                    node.name
                )));
            };
            let n = shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
                .unwrap_or(u64::MAX);
            total = total.saturating_add(n);
        }
    }
    if total > MAX_ELEMENTS {
        return Err(Refusal::model(format!(
            "a batch of {BATCH} records needs {total} values, over {MAX_ELEMENTS}"
        )));
    }
    Ok(())
}
