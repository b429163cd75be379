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

/// The precision the node releases a model's float tensors at (`[policy.outputs]
/// release_precision`): the DPO's choice, applied by the node after the guard accepts and
/// before the receipt signs the file's digest. Integer tensors are released as declared (their
/// full dtype bits count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleasePrecision {
    /// The declared dtype, values as the trainer wrote them.
    #[default]
    Declared,
    /// bfloat16 (8 exponent bits, 7 mantissa bits), round to nearest even, saturating.
    Bf16,
    /// IEEE half (5 exponent bits, 10 mantissa bits), round to nearest even, saturating.
    Fp16,
    /// Signed 8-bit integers with one symmetric scale per tensor: `q = round(x / scale)` in
    /// -127..=127, `scale = max|x| / 127` stored as an F32 scalar tensor named
    /// [`int8_scale_name`] (0 for an all-zero tensor); the value is `q × scale`.
    Int8,
}

impl ReleasePrecision {
    /// Every setting, in the order above.
    pub const ALL: [Self; 4] = [Self::Declared, Self::Bf16, Self::Fp16, Self::Int8];

    /// The name `[policy.outputs] release_precision` takes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Declared => "declared",
            Self::Bf16 => "bf16",
            Self::Fp16 => "fp16",
            Self::Int8 => "int8",
        }
    }

    /// Whether this is [`Self::Declared`] (the default).
    pub fn is_declared(&self) -> bool {
        *self == Self::Declared
    }

    /// Bits of one released element of a float tensor; `None` for [`Self::Declared`].
    pub const fn bits(self) -> Option<u64> {
        match self {
            Self::Declared => None,
            Self::Bf16 | Self::Fp16 => Some(16),
            Self::Int8 => Some(8),
        }
    }

    /// The dtype a tensor declared as `dtype` is released as: integer tensors and float
    /// tensors already as narrow as the setting keep their dtype; wider floats are written in
    /// the reduced dtype (fewer bytes leave).
    pub const fn released_dtype(self, dtype: TensorDtype) -> TensorDtype {
        if !dtype.is_float() {
            return dtype;
        }
        match self {
            Self::Declared => dtype,
            Self::Bf16 if dtype.bits() > 16 => TensorDtype::BF16,
            Self::Fp16 if dtype.bits() > 16 => TensorDtype::F16,
            Self::Bf16 | Self::Fp16 => dtype,
            Self::Int8 => TensorDtype::I8,
        }
    }
}

/// The name of the F32 scale tensor the node writes next to a tensor released as int8: the
/// declared name and `:scale`. A `:` is outside the declared names' alphabet
/// ([`TENSOR_NAME`]), so it never names a declared tensor.
pub fn int8_scale_name(tensor: &str) -> String {
    format!("{tensor}:scale")
}

/// Bits one int8 scale takes (an F32 per tensor released as int8).
pub const INT8_SCALE_BITS: u64 = 32;

/// Largest `release_noise_k`: beyond it the released values are noise (under 0.0001 bits
/// per parameter).
pub const MAX_NOISE_K: f64 = 100.0;

/// `[policy.outputs] release_noise_k`: the node adds Gaussian noise of σ = k × RMS of each
/// released float tensor, drawn from its own CSPRNG. 0 (the default) adds none. Finite, 0 to
/// [`MAX_NOISE_K`]; anything else is refused when the policy is loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct NoiseK(f64);

// Never NaN (`TryFrom` refuses it), so equality is an equivalence.
impl Eq for NoiseK {}

impl NoiseK {
    /// No noise.
    pub const NONE: Self = Self(0.0);

    /// The factor k.
    pub const fn get(self) -> f64 {
        self.0
    }

    /// Whether no noise is added (k = 0, the default).
    pub fn is_none(&self) -> bool {
        self.0 == 0.0
    }
}

impl TryFrom<f64> for NoiseK {
    type Error = String;

    fn try_from(k: f64) -> Result<Self, String> {
        if k.is_finite() && (0.0..=MAX_NOISE_K).contains(&k) {
            // -0.0 is 0.
            Ok(Self(k + 0.0))
        } else {
            Err(format!(
                "release_noise_k {k} is not a number from 0 to {MAX_NOISE_K} (σ = k × RMS of \
                 each released tensor; 0 adds no noise)"
            ))
        }
    }
}

impl From<NoiseK> for f64 {
    fn from(k: NoiseK) -> Self {
        k.0
    }
}

/// What the node does to released float tensors: the precision and the noise of
/// `[policy.outputs]`. The default changes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseTransform {
    pub precision: ReleasePrecision,
    pub noise_k: NoiseK,
}

impl ReleaseTransform {
    /// Declared precision, no noise: the trainer's values leave as they are.
    pub const DECLARED: Self = Self {
        precision: ReleasePrecision::Declared,
        noise_k: NoiseK::NONE,
    };

    /// Whether the transform leaves every value as declared.
    pub fn is_identity(&self) -> bool {
        *self == Self::DECLARED
    }
}

/// Bits of information one released parameter can carry, for a tensor declared as `dtype`
/// released at `precision` with node noise σ = `noise_k` × RMS: the dtype's bits, at most the
/// precision's bits, and with noise (k > 0) at most ½·log2(1 + 1/k²), the capacity of a
/// Gaussian channel whose signal power is the tensor's mean square (the trainer chooses the
/// values, the node the noise). Integer tensors are released as declared: their dtype bits.
/// A `noise_k` that is not positive (or NaN) counts as no noise.
pub fn effective_bits(dtype: TensorDtype, precision: ReleasePrecision, noise_k: f64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // at most 64
    let mut bits = dtype.bits() as f64;
    if !dtype.is_float() {
        return bits;
    }
    if let Some(p) = precision.bits() {
        #[allow(clippy::cast_precision_loss)] // at most 16
        let p = p as f64;
        bits = bits.min(p);
    }
    if noise_k > 0.0 {
        bits = bits.min(0.5 * (1.0 + 1.0 / (noise_k * noise_k)).log2());
    }
    bits
}

/// The parameters every output of a job declares and the bits they can carry once the node
/// applies `transform`: Σ elements × [`effective_bits`]; for each float tensor released as
/// int8, its scale ([`INT8_SCALE_BITS`]); for each float tensor the node noises, its RMS
/// (which sets σ and is the trainer's choice) at its dtype's bits; rounded up to a whole bit
/// and never above [`declared_bits`] (what leaves is a function of the declared values). With
/// [`ReleaseTransform::DECLARED`] this is [`declared_bits`].
///
/// # Errors
/// The first output whose declaration is refused ([`check_tensors`]).
pub fn effective_release_bits(
    outputs: &[OutputDecl],
    transform: ReleaseTransform,
) -> Result<ReleaseSize, String> {
    let declared = declared_bits(outputs)?;
    if transform.is_identity() {
        return Ok(declared);
    }
    let k = transform.noise_k.get();
    let mut bits = 0f64;
    for t in outputs.iter().flat_map(|o| &o.tensors) {
        // Checked by `declared_bits` above.
        let n = t.elements().unwrap_or(u64::MAX);
        #[allow(clippy::cast_precision_loss)] // a bound: rounded up below
        let n = n as f64;
        bits += n * effective_bits(t.dtype, transform.precision, k);
        if t.dtype.is_float() {
            if transform.precision.released_dtype(t.dtype) == TensorDtype::I8 {
                #[allow(clippy::cast_precision_loss)]
                let s = INT8_SCALE_BITS as f64;
                bits += s;
            }
            if k > 0.0 {
                #[allow(clippy::cast_precision_loss)]
                let rms = t.dtype.bits() as f64;
                bits += rms;
            }
        }
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // finite, ≥ 0, ceil
    let bits = (bits.ceil() as u64).min(declared.bits);
    Ok(ReleaseSize {
        parameters: declared.parameters,
        bits,
    })
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

/// What [`release_bound`] needs of a job besides its declared outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundInput<'a> {
    /// The outputs the signed predicate declares.
    pub outputs: &'a [OutputDecl],
    /// The run's wall-time limit (`[resources] wall_seconds` as admitted).
    pub wall_seconds: u64,
    /// The resolution of the run's end as published (the node's run quantum), at least 1.
    pub run_quantum_secs: u64,
    /// The precision and noise the node releases the tensors at (`[policy.outputs]
    /// release_precision`, `release_noise_k`, as recorded at admission).
    pub transform: ReleaseTransform,
}

/// An upper bound, in bits, on what a publisher learns from one job through every field it is
/// shown, term by term (docs/receipts.md, "The leakage bound"). Each term is a count of the
/// values the field can take as the node publishes it, in whole bits rounded up; `total` is
/// their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakageBound {
    /// The released tensors at the precision and noise the node releases them at:
    /// [`effective_release_bits`] (Σ declared parameters × [`effective_bits`], int8 scales and
    /// noised tensors' RMS included; the declared dtypes' bits when the node keeps them).
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
    let tensors = effective_release_bits(input.outputs, input.transform)?.bits;
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
    fn effective_bits_take_the_narrowest_of_dtype_precision_and_noise() {
        use ReleasePrecision::*;
        assert_eq!(effective_bits(TensorDtype::F32, Declared, 0.0), 32.0);
        assert_eq!(effective_bits(TensorDtype::F32, Bf16, 0.0), 16.0);
        assert_eq!(effective_bits(TensorDtype::F64, Fp16, 0.0), 16.0);
        assert_eq!(effective_bits(TensorDtype::F32, Int8, 0.0), 8.0);
        assert_eq!(effective_bits(TensorDtype::F16, Int8, 0.0), 8.0);
        // Integer tensors are released as declared.
        assert_eq!(effective_bits(TensorDtype::I32, Int8, 1.0), 32.0);
        // σ = RMS: ½·log2(2) = ½ bit.
        assert!((effective_bits(TensorDtype::F32, Declared, 1.0) - 0.5).abs() < 1e-12);
        // k = 0.1: ½·log2(101).
        let k01 = 0.5 * 101f64.log2();
        assert!((effective_bits(TensorDtype::F32, Bf16, 0.1) - k01).abs() < 1e-12);
        // Tiny noise bounds nothing below the precision.
        assert_eq!(effective_bits(TensorDtype::F32, Int8, 1e-6), 8.0);
        assert_eq!(effective_bits(TensorDtype::F32, Bf16, f64::NAN), 16.0);
        assert_eq!(effective_bits(TensorDtype::F32, Bf16, -1.0), 16.0);
    }

    #[test]
    fn released_dtypes_narrow_floats_only() {
        use ReleasePrecision::*;
        assert_eq!(Bf16.released_dtype(TensorDtype::F32), TensorDtype::BF16);
        assert_eq!(Bf16.released_dtype(TensorDtype::F16), TensorDtype::F16);
        assert_eq!(Fp16.released_dtype(TensorDtype::F64), TensorDtype::F16);
        assert_eq!(Fp16.released_dtype(TensorDtype::BF16), TensorDtype::BF16);
        assert_eq!(Int8.released_dtype(TensorDtype::BF16), TensorDtype::I8);
        assert_eq!(Int8.released_dtype(TensorDtype::U16), TensorDtype::U16);
        for d in TensorDtype::ALL {
            assert_eq!(Declared.released_dtype(d), d);
            for p in ReleasePrecision::ALL {
                assert!(p.released_dtype(d).bits() <= d.bits(), "{p:?} {d:?}");
            }
        }
        assert!(!tensor_name_ok(&int8_scale_name("fc.weight")));
    }

    #[test]
    fn effective_release_bits_count_the_int8_scales_and_the_noise() {
        let o = model(
            vec![
                t("w", TensorDtype::F32, &[64, 3]),
                t("b", TensorDtype::F32, &[3]),
                t("n", TensorDtype::I64, &[1]),
            ],
            1 << 20,
        );
        let outs = [o];
        let declared = declared_bits(&outs).unwrap();
        assert_eq!(
            effective_release_bits(&outs, ReleaseTransform::DECLARED),
            Ok(declared)
        );
        let with = |precision, k: f64| ReleaseTransform {
            precision,
            noise_k: NoiseK::try_from(k).unwrap(),
        };
        let bf16 = effective_release_bits(&outs, with(ReleasePrecision::Bf16, 0.0)).unwrap();
        assert_eq!(bf16.parameters, 196);
        assert_eq!(bf16.bits, 195 * 16 + 64);
        let int8 = effective_release_bits(&outs, with(ReleasePrecision::Int8, 0.0)).unwrap();
        assert_eq!(int8.bits, 195 * 8 + 2 * INT8_SCALE_BITS + 64);
        let noisy = effective_release_bits(&outs, with(ReleasePrecision::Declared, 1.0)).unwrap();
        // 195 × ½ bit and the two float tensors' RMS (32 bits each), rounded up, and the
        // integer tensor's 64.
        assert_eq!(noisy.bits, 98 + 2 * 32 + 64);
        // Never above what was declared: a scalar's scale and RMS are not added past it.
        let scalar = [model(vec![t("s", TensorDtype::F32, &[])], 1 << 20)];
        let s = effective_release_bits(&scalar, with(ReleasePrecision::Int8, 0.5)).unwrap();
        assert_eq!(s.bits, 32);
    }

    #[test]
    fn noise_k_outside_its_range_is_refused_at_load() {
        #[derive(Debug, Deserialize)]
        struct O {
            #[allow(dead_code)]
            release_noise_k: NoiseK,
        }
        for bad in ["-0.5", "101", "1e300"] {
            let e = serde_json::from_str::<O>(&format!(r#"{{"release_noise_k":{bad}}}"#))
                .unwrap_err()
                .to_string();
            assert!(e.contains("release_noise_k"), "{bad}: {e}");
        }
        assert!(NoiseK::try_from(f64::NAN).is_err());
        assert!(NoiseK::try_from(f64::INFINITY).is_err());
        assert_eq!(NoiseK::try_from(-0.0).unwrap().get().to_bits(), 0);
        let ok: O = serde_json::from_str(r#"{"release_noise_k":1}"#).unwrap();
        assert_eq!(ok.release_noise_k.get(), 1.0);
        let p: ReleasePrecision = serde_json::from_str(r#""int8""#).unwrap();
        assert_eq!(p, ReleasePrecision::Int8);
        assert!(serde_json::from_str::<ReleasePrecision>(r#""fp8""#).is_err());
    }

    proptest::proptest! {
        #[test]
        fn effective_bits_are_monotone_in_k_and_never_above_the_dtype(
            d in 0usize..12,
            p in 0usize..4,
            k1 in 0.0f64..100.0,
            k2 in 0.0f64..100.0,
        ) {
            let (d, p) = (TensorDtype::ALL[d], ReleasePrecision::ALL[p]);
            let (lo, hi) = if k1 <= k2 { (k1, k2) } else { (k2, k1) };
            let at_lo = effective_bits(d, p, lo);
            let at_hi = effective_bits(d, p, hi);
            proptest::prop_assert!(at_hi <= at_lo);
            #[allow(clippy::cast_precision_loss)]
            let dtype_bits = d.bits() as f64;
            proptest::prop_assert!(at_lo <= dtype_bits);
            proptest::prop_assert!(at_hi >= 0.0);
            // k = 0: the precision's bits (the dtype's, for integers and Declared).
            #[allow(clippy::cast_precision_loss)]
            let precision = if d.is_float() {
                p.bits().map_or(dtype_bits, |b| dtype_bits.min(b as f64))
            } else {
                dtype_bits
            };
            proptest::prop_assert_eq!(effective_bits(d, p, 0.0), precision);
        }
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
            transform: ReleaseTransform::DECLARED,
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
                // 25 reason codes.
                outcome: 5,
                // 30 minutes of run, ended on one of 31 whole minutes.
                run_length: 5,
                total: 190_496 + 2 + 524_288 + 61 + 5 + 5,
            }
        );
        assert_eq!(b.total, 714_857);
        assert_eq!(b.per_patient(40), Some(17_872));
        assert_eq!(b.per_patient(0), None);
        // Released at bf16 the tensors carry half the bits; the other terms are unchanged.
        let bf16 = release_bound(&BoundInput {
            outputs: &outputs,
            wall_seconds: 1800,
            run_quantum_secs: 60,
            transform: ReleaseTransform {
                precision: ReleasePrecision::Bf16,
                noise_k: NoiseK::NONE,
            },
        })
        .unwrap();
        assert_eq!(bf16.tensors, 5_953 * 16);
        assert_eq!(bf16.total, 714_857 - 5_953 * 16);
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
            transform: ReleaseTransform::DECLARED,
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
            transform: ReleaseTransform::DECLARED,
        })
        .unwrap_err();
        assert!(err.contains("overflows"), "{err}");
    }
}
