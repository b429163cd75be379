//! The release channel of a job (**I4**): the tensors a released model file declares, and
//! what they can carry.
//!
//! A trainer can transform what it read (XOR with a key, pixels stored as floats, a cipher)
//! so that no content inspection finds it, and then release it in any byte the output format
//! lets it choose. What can be bounded is the channel: the signed predicate declares every
//! tensor of a released model file (name, dtype, shape), the node re-writes the file from
//! those tensors alone, and the declaration's size in bits is what the DPO approves and the
//! admission policy can cap ([`declared_bits`]).
//!
//! Only kinds the node re-serialises are released ([`release_refusal`]): safetensors with
//! declared tensors and `metrics.json`. Pickles (`pytorch-zip`) run code when loaded and carry
//! free strings; ONNX graphs carry node names, doc strings and attributes the trainer chooses.
//! Neither is released: a model is released as safetensors.

use serde::{Deserialize, Serialize};

use crate::{OutputDecl, OutputKind};

/// The element types a declared tensor may have. Bool and the 8-bit float formats are left
/// out: a bool stored in a byte, or a float format with spare encodings, would carry more than
/// its declared bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TensorDtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
}

impl TensorDtype {
    /// Every dtype, in the order above.
    pub const ALL: [Self; 12] = [
        Self::F64,
        Self::F32,
        Self::F16,
        Self::BF16,
        Self::I64,
        Self::I32,
        Self::I16,
        Self::I8,
        Self::U64,
        Self::U32,
        Self::U16,
        Self::U8,
    ];

    /// The name safetensors headers use (`"F32"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::F64 => "F64",
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::I64 => "I64",
            Self::I32 => "I32",
            Self::I16 => "I16",
            Self::I8 => "I8",
            Self::U64 => "U64",
            Self::U32 => "U32",
            Self::U16 => "U16",
            Self::U8 => "U8",
        }
    }

    /// The dtype named `s` in a safetensors header, if it is one of [`TensorDtype::ALL`].
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Bits of one element.
    pub const fn bits(self) -> u64 {
        match self {
            Self::F64 | Self::I64 | Self::U64 => 64,
            Self::F32 | Self::I32 | Self::U32 => 32,
            Self::F16 | Self::BF16 | Self::I16 | Self::U16 => 16,
            Self::I8 | Self::U8 => 8,
        }
    }

    /// Bytes of one element.
    pub const fn bytes(self) -> u64 {
        self.bits() / 8
    }

    /// Whether the dtype is a floating-point format (its NaN and infinities are refused).
    pub const fn is_float(self) -> bool {
        matches!(self, Self::F64 | Self::F32 | Self::F16 | Self::BF16)
    }
}

/// One tensor a released model file declares (`[[outputs.tensors]]` of `trainer.toml`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorDecl {
    /// The tensor's name in the file; the same alphabet as an output's name.
    pub name: String,
    pub dtype: TensorDtype,
    /// Dimensions, each at least 1; `[]` is a scalar.
    pub shape: Vec<u64>,
}

/// Most tensors one output may declare.
pub const MAX_TENSORS: usize = 4096;
/// Most dimensions of one tensor.
pub const MAX_DIMS: usize = 8;
/// What a tensor name may be made of (the DPO's tools print them).
pub const TENSOR_NAME: &str =
    "1-128 characters from A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.'";

/// Whether `name` is a tensor name by [`TENSOR_NAME`].
pub fn tensor_name_ok(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl TensorDecl {
    /// Elements of the tensor, or `None` when the product overflows.
    pub fn elements(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }
}

/// What a declaration adds up to: parameters and the bits they take as declared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSize {
    /// Elements of every declared tensor of every output.
    pub parameters: u64,
    /// Σ elements × dtype bits: the most information the tensors can carry as declared.
    pub bits: u64,
}

/// Checks one output's tensor declarations: names by [`TENSOR_NAME`] and not repeated, at
/// most [`MAX_TENSORS`] tensors of at most [`MAX_DIMS`] dimensions each at least 1, and the
/// data they declare fitting the output's `max_bytes` (all arithmetic checked). Returns the
/// output's [`ReleaseSize`].
///
/// # Errors
/// What is wrong, in words a publisher can act on.
pub fn check_tensors(output: &OutputDecl) -> Result<ReleaseSize, String> {
    let o = &output.name;
    if !output.tensors.is_empty() && output.kind != OutputKind::Safetensors {
        return Err(format!(
            "output {o:?} is {:?}: only safetensors outputs declare tensors",
            output.kind
        ));
    }
    if output.tensors.len() > MAX_TENSORS {
        return Err(format!(
            "output {o:?} declares {} tensors, more than {MAX_TENSORS}",
            output.tensors.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut size = ReleaseSize::default();
    let mut bytes = 0u64;
    for t in &output.tensors {
        if !tensor_name_ok(&t.name) {
            return Err(format!(
                "output {o:?}: tensor name {:?} is not {TENSOR_NAME}",
                t.name
            ));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(format!(
                "output {o:?}: tensor {:?} is declared twice",
                t.name
            ));
        }
        if t.shape.len() > MAX_DIMS || t.shape.contains(&0) {
            return Err(format!(
                "output {o:?}: tensor {:?} must have at most {MAX_DIMS} dimensions, each at \
                 least 1",
                t.name
            ));
        }
        let too_large = || {
            format!(
                "output {o:?}: its declared tensors take more than its max_bytes ({})",
                output.max_bytes
            )
        };
        let elements = t.elements().ok_or_else(too_large)?;
        bytes = elements
            .checked_mul(t.dtype.bytes())
            .and_then(|b| bytes.checked_add(b))
            .filter(|&b| b <= output.max_bytes)
            .ok_or_else(too_large)?;
        size.parameters = size
            .parameters
            .checked_add(elements)
            .ok_or_else(too_large)?;
        size.bits = elements
            .checked_mul(t.dtype.bits())
            .and_then(|b| size.bits.checked_add(b))
            .ok_or_else(too_large)?;
    }
    Ok(size)
}

/// The parameters and bits every output of a job declares ([`check_tensors`] of each).
///
/// # Errors
/// The first output whose declaration is refused.
pub fn declared_bits(outputs: &[OutputDecl]) -> Result<ReleaseSize, String> {
    let mut total = ReleaseSize::default();
    for o in outputs {
        let s = check_tensors(o)?;
        total.parameters = total
            .parameters
            .checked_add(s.parameters)
            .ok_or("the declared parameters overflow")?;
        total.bits = total
            .bits
            .checked_add(s.bits)
            .ok_or("the declared bits overflow")?;
    }
    Ok(total)
}

/// Why the node will not release `outputs`, if it will not: a kind it does not re-serialise
/// (`pytorch-zip`, `onnx`), or a safetensors output that declares no tensors. Checked at
/// admission, before anything of the job runs; the output guard refuses the same at release.
pub fn release_refusal(outputs: &[OutputDecl]) -> Option<String> {
    outputs.iter().find_map(|o| match o.kind {
        OutputKind::PytorchZip => Some(format!(
            "output {:?} is a pickle (pytorch-zip); pickles are not released. Write the model's \
             tensors as safetensors and declare them ([[outputs.tensors]] name, dtype, shape)",
            o.name
        )),
        OutputKind::Onnx => Some(format!(
            "output {:?} is an ONNX graph; ONNX is not released (a graph carries free text the \
             node cannot re-write yet). Release the weights as safetensors with declared \
             tensors",
            o.name
        )),
        OutputKind::Safetensors if o.tensors.is_empty() => Some(format!(
            "output {:?} declares no tensors; add one [[outputs.tensors]] (name, dtype, shape) \
             for each tensor it releases: only declared tensors leave",
            o.name
        )),
        _ => None,
    })
}

/// The `metrics.json` schema as the bound counts it: keys holding one number, keys holding a
/// curve, and a curve's most values. The same figures as `rapha_protocol::METRICS_KEYS` and
/// `MAX_CURVE` (rapha-core links no protocol crate; a test of rapha-enclave, which links both,
/// fails when the two differ).
pub const METRICS_SCALAR_KEYS: u64 = 14;
/// Keys of `metrics.json` holding a curve (`*_curve`).
pub const METRICS_CURVE_KEYS: u64 = 3;
/// Most values of one curve.
pub const METRICS_MAX_CURVE: u64 = 10_000;
/// Values of the node-computed validation metrics in a receipt (AUC, its CI's two ends,
/// accuracy, sensitivity, specificity), each rounded to 3 decimals.
pub const NODE_METRICS: u64 = 6;

/// Bits one parameter of `tensor` can carry as released: its declared dtype's bits. The one
/// per-parameter figure of [`release_bound`]; a node-side precision or noise setting changes
/// this term only.
pub const fn bits_per_parameter(tensor: &TensorDecl) -> u64 {
    tensor.dtype.bits()
}

/// What [`release_bound`] needs of a job besides its declared outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundInput<'a> {
    /// The outputs the signed predicate declares.
    pub outputs: &'a [OutputDecl],
    /// The run's wall-time limit (`[resources] wall_seconds` as admitted).
    pub wall_seconds: u64,
    /// The resolution of the run's end as published (the node's run quantum), at least 1.
    pub run_quantum_secs: u64,
}

/// An upper bound, in bits, on what a publisher learns from one job through every field it is
/// shown, term by term (docs/receipts.md, "The leakage bound"). Each term is a count of the
/// values the field can take as the node publishes it, in whole bits rounded up; `total` is
/// their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakageBound {
    /// The released tensors: Σ declared parameters × [`bits_per_parameter`].
    pub tensors: u64,
    /// Which declared outputs were written: 1 bit each. Their sizes and digests add nothing:
    /// the node writes them, a function of the values counted here.
    pub files: u64,
    /// Each declared `metrics.json`: the lesser of 8 × its `max_bytes` (the node's file is a
    /// function of the trainer's, at most that long) and its schema (per one-number key, 1 bit
    /// present + 32 bits of an IEEE single; per curve key, its length and 32 bits a value).
    pub metrics_file: u64,
    /// The node-computed metrics of the receipt: 1 bit (released or withheld) + the six
    /// values of 3 decimals in \[0, 1\], ⌈log2 1001⌉ = 10 bits each.
    pub node_metrics: u64,
    /// The outcome and reason: ⌈log2⌉ of the reason codes a receipt can carry.
    pub outcome: u64,
    /// The run's length as published: ⌈log2(⌈wall_seconds / quantum⌉ + 1)⌉.
    pub run_length: u64,
    pub total: u64,
}

/// ⌈log2 n⌉ for n ≥ 1 (0 for n ≤ 1).
const fn ceil_log2(n: u64) -> u64 {
    if n <= 1 {
        0
    } else {
        (64 - (n - 1).leading_zeros()) as u64
    }
}

impl LeakageBound {
    /// The sum of the terms, or `None` when it overflows.
    pub fn sum(&self) -> Option<u64> {
        [
            self.tensors,
            self.files,
            self.metrics_file,
            self.node_metrics,
            self.outcome,
            self.run_length,
        ]
        .into_iter()
        .try_fold(0u64, u64::checked_add)
    }

    /// The bound per patient of a cohort of `patients`, rounded up (`None` for no patient).
    pub fn per_patient(&self, patients: u64) -> Option<u64> {
        (patients > 0).then(|| self.total.div_ceil(patients))
    }
}

/// The leakage bound of a job ([`LeakageBound`]), computed from its declaration before anything
/// of it runs; the figure the DPO sees, the admission gate charges against the publisher's
/// budget, and the receipt states.
///
/// # Errors
/// A declaration [`declared_bits`] refuses, or a total past 2^53 − 1 (a receipt carries it as
/// an exact JSON integer).
pub fn release_bound(input: &BoundInput<'_>) -> Result<LeakageBound, String> {
    let too_large = || "the release bound overflows".to_owned();
    declared_bits(input.outputs)?;
    let mut tensors = 0u64;
    for t in input.outputs.iter().flat_map(|o| &o.tensors) {
        tensors = t
            .elements()
            .and_then(|n| n.checked_mul(bits_per_parameter(t)))
            .and_then(|b| tensors.checked_add(b))
            .ok_or_else(too_large)?;
    }
    let schema = METRICS_SCALAR_KEYS * 33
        + METRICS_CURVE_KEYS * (ceil_log2(METRICS_MAX_CURVE + 1) + METRICS_MAX_CURVE * 32);
    let mut metrics_file = 0u64;
    for o in input
        .outputs
        .iter()
        .filter(|o| o.kind == OutputKind::MetricsJson)
    {
        let bits = o.max_bytes.saturating_mul(8).min(schema);
        metrics_file = metrics_file.checked_add(bits).ok_or_else(too_large)?;
    }
    let quanta = input.wall_seconds.div_ceil(input.run_quantum_secs.max(1));
    let mut bound = LeakageBound {
        tensors,
        files: input.outputs.len() as u64,
        metrics_file,
        node_metrics: 1 + NODE_METRICS * ceil_log2(1001),
        outcome: ceil_log2(crate::ReasonCode::ALL.len() as u64),
        run_length: ceil_log2(quanta.saturating_add(1)),
        total: 0,
    };
    bound.total = bound
        .sum()
        .filter(|&t| t <= crate::jcs::MAX_SAFE_INTEGER)
        .ok_or_else(too_large)?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(tensors: Vec<TensorDecl>, max_bytes: u64) -> OutputDecl {
        OutputDecl {
            name: "model.safetensors".into(),
            kind: OutputKind::Safetensors,
            max_bytes,
            tensors,
        }
    }

    fn t(name: &str, dtype: TensorDtype, shape: &[u64]) -> TensorDecl {
        TensorDecl {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn bits_are_parameters_times_dtype_bits() {
        let o = model(
            vec![
                t("w", TensorDtype::F32, &[64, 3]),
                t("b", TensorDtype::F16, &[3]),
                t("s", TensorDtype::U8, &[]),
            ],
            1 << 20,
        );
        assert_eq!(
            check_tensors(&o),
            Ok(ReleaseSize {
                parameters: 196,
                bits: 192 * 32 + 3 * 16 + 8
            })
        );
    }

    #[test]
    fn overflowing_shapes_are_refused_not_wrapped() {
        let o = model(
            vec![t("w", TensorDtype::F64, &[1 << 32, 1 << 32])],
            u64::MAX,
        );
        assert!(check_tensors(&o).unwrap_err().contains("max_bytes"));
        let o = model(vec![t("w", TensorDtype::F64, &[1 << 61])], u64::MAX);
        assert!(check_tensors(&o).unwrap_err().contains("max_bytes"));
        let o = model(
            vec![
                t("a", TensorDtype::U8, &[u64::MAX / 2]),
                t("b", TensorDtype::U8, &[u64::MAX / 2 + 2]),
            ],
            u64::MAX,
        );
        assert!(check_tensors(&o).unwrap_err().contains("max_bytes"));
    }

    #[test]
    fn declarations_that_do_not_fit_their_cap_are_refused() {
        let o = model(vec![t("w", TensorDtype::F32, &[4])], 15);
        assert!(check_tensors(&o).is_err());
        let o = model(vec![t("w", TensorDtype::F32, &[4])], 16);
        assert!(check_tensors(&o).is_ok());
    }

    #[test]
    fn bad_names_zero_dims_and_repeats_are_refused() {
        for bad in [
            vec![t("w b", TensorDtype::F32, &[1])],
            vec![t(".w", TensorDtype::F32, &[1])],
            vec![t("", TensorDtype::F32, &[1])],
            vec![t(&"w".repeat(129), TensorDtype::F32, &[1])],
            vec![t("w", TensorDtype::F32, &[0])],
            vec![t("w", TensorDtype::F32, &[1; 9])],
            vec![
                t("w", TensorDtype::F32, &[1]),
                t("w", TensorDtype::F16, &[1]),
            ],
        ] {
            assert!(
                check_tensors(&model(bad.clone(), 1 << 20)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn pickles_onnx_and_undeclared_safetensors_are_not_released() {
        let mut o = model(vec![], 100);
        assert!(release_refusal(&[o.clone()])
            .unwrap()
            .contains("[[outputs.tensors]]"));
        o.tensors = vec![t("w", TensorDtype::F32, &[1])];
        assert_eq!(release_refusal(&[o.clone()]), None);
        o.kind = OutputKind::PytorchZip;
        assert!(release_refusal(&[o.clone()])
            .unwrap()
            .contains("safetensors"));
        o.kind = OutputKind::Onnx;
        assert!(release_refusal(&[o]).unwrap().contains("safetensors"));
    }

    #[test]
    fn an_output_without_tensors_keeps_its_serialisation() {
        let o = model(vec![], 100);
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"name":"model.safetensors","kind":"safetensors","max_bytes":100}"#
        );
        let back: OutputDecl = serde_json::from_str(
            r#"{"name":"m","kind":"safetensors","max_bytes":1,"tensors":[{"name":"w","dtype":"BF16","shape":[2]}]}"#,
        )
        .unwrap();
        assert_eq!(back.tensors[0].dtype, TensorDtype::BF16);
        assert!(serde_json::from_str::<OutputDecl>(
            r#"{"name":"m","kind":"safetensors","max_bytes":1,"tensors":[{"name":"w","dtype":"BOOL","shape":[2]}]}"#,
        )
        .is_err());
    }

    /// The reference trainer's declaration (trainers/lesion-classifier/trainer.toml).
    fn reference() -> Vec<OutputDecl> {
        let f = TensorDtype::F32;
        vec![
            model(
                vec![
                    t("c1.weight", f, &[8, 1, 3, 3]),
                    t("c1.bias", f, &[8]),
                    t("c2.weight", f, &[16, 8, 3, 3]),
                    t("c2.bias", f, &[16]),
                    t("c3.weight", f, &[32, 16, 3, 3]),
                    t("c3.bias", f, &[32]),
                    t("fc.weight", f, &[1, 64]),
                    t("fc.bias", f, &[1]),
                ],
                52_428_800,
            ),
            OutputDecl {
                name: "metrics.json".into(),
                kind: OutputKind::MetricsJson,
                max_bytes: 65_536,
                tensors: vec![],
            },
        ]
    }

    #[test]
    fn the_reference_trainers_bound_is_the_hand_computed_figure() {
        let outputs = reference();
        let b = release_bound(&BoundInput {
            outputs: &outputs,
            wall_seconds: 1800,
            run_quantum_secs: 60,
        })
        .unwrap();
        assert_eq!(
            b,
            LeakageBound {
                // 5,953 F32 parameters.
                tensors: 5_953 * 32,
                // Two declared outputs, each written or not.
                files: 2,
                // 64 KiB of metrics.json is less than its schema (960,504 bits).
                metrics_file: 65_536 * 8,
                // Released or withheld, and six values of 1001 each.
                node_metrics: 1 + 6 * 10,
                // 24 reason codes.
                outcome: 5,
                // 30 minutes of run, ended on one of 31 whole minutes.
                run_length: 5,
                total: 190_496 + 2 + 524_288 + 61 + 5 + 5,
            }
        );
        assert_eq!(b.total, 714_857);
        assert_eq!(b.per_patient(40), Some(17_872));
        assert_eq!(b.per_patient(0), None);
    }

    #[test]
    fn a_metrics_file_is_bounded_by_its_schema_when_its_cap_is_larger() {
        let o = OutputDecl {
            name: "metrics.json".into(),
            kind: OutputKind::MetricsJson,
            max_bytes: 1 << 30,
            tensors: vec![],
        };
        let b = release_bound(&BoundInput {
            outputs: &[o],
            wall_seconds: 60,
            run_quantum_secs: 60,
        })
        .unwrap();
        assert_eq!(b.metrics_file, 14 * 33 + 3 * (14 + 10_000 * 32));
        assert_eq!(b.run_length, 1);
        assert_eq!(b.tensors, 0);
    }

    #[test]
    fn a_bound_past_exact_json_integers_is_refused() {
        let o = model(vec![t("w", TensorDtype::F64, &[1 << 48])], u64::MAX);
        let err = release_bound(&BoundInput {
            outputs: &[o],
            wall_seconds: 60,
            run_quantum_secs: 60,
        })
        .unwrap_err();
        assert!(err.contains("overflows"), "{err}");
    }
}
