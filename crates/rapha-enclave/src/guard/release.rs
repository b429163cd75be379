//! Re-serialisation by the node (**I4**, the release channel): after the guard accepts the
//! set, each released file is parsed and written afresh, and what leaves is the node's file.
//!
//! - **safetensors**: exactly the declared tensors (no missing, no extra, dtype and shape
//!   equal), no NaN or infinity; written with a canonical header (the declared tensors sorted
//!   by name, keys `dtype`, `shape`, `data_offsets`, no spaces, no `__metadata__`) padded with
//!   spaces to a multiple of 8 bytes (the alignment the format's reference writer keeps, so
//!   every reader maps the data aligned), then the tensors' data contiguous in the same order.
//!   What the trainer chose beyond the declared values (metadata, key order, spacing,
//!   padding, tensor names) is not in it: the file is a function of the declared tensors'
//!   values alone.
//! - **metrics.json**: the keys of the protocol's schema (an unknown key was refused by the
//!   guard), sorted, each value rounded to an IEEE single (32 bits) and written in the
//!   shortest form that reads back to it; repeated keys leave once (the last value).
//! - **pytorch-zip, onnx**: not released ([`rapha_core::release::release_refusal`]).
//!
//! **Precision and noise the DPO chose** (`[policy.outputs] release_precision`,
//! `release_noise_k`; [`ReleaseTransform`]) are applied here to every declared float tensor,
//! so the file's digest, which the receipt signs, is that of the rounded and noised values:
//! noise σ = k × RMS of the tensor, Gaussian, drawn from a ChaCha20 generator the node seeds
//! from the operating system for each release (the trainer neither sees nor seeds it); then
//! the values are rounded to nearest, ties to even, and saturated to the released dtype's
//! finite range ([`transform_tensor`]). A tensor wider than the precision is written in the
//! reduced dtype (`BF16`, `F16`, or `I8` with an `F32` scalar `<name>:scale` next to it), so
//! the header says what was released; integer tensors leave as declared.
//!
//! Refusals are [`Rejection`]s of the guard's vocabulary; a tensor is named only by its
//! declared name, never by a name the trainer wrote.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use rapha_core::release::{int8_scale_name, ReleaseTransform, TensorDecl, TensorDtype};
use rapha_core::{Digest, OutputDecl, OutputKind};

use super::{OutputFile, Rejection, Verdict};
use crate::formats;

/// The node's file for one accepted output of kind `decl.kind`, from the trainer's `bytes`.
///
/// # Errors
/// The rejections that refuse it.
pub fn reserialise(decl: &OutputDecl, bytes: &[u8]) -> Result<Vec<u8>, Vec<Rejection>> {
    reserialise_at(decl, bytes, ReleaseTransform::DECLARED, &mut NoRng)
}

/// The node's file for one accepted output at the hospital's `transform`: [`reserialise_at`]
/// with a fresh ChaCha20 generator seeded from the operating system, so nothing of the job
/// seeds the noise. Without a seed nothing is released (fail closed).
///
/// # Errors
/// The rejections that refuse it.
pub fn reserialise_released(
    decl: &OutputDecl,
    bytes: &[u8],
    transform: ReleaseTransform,
) -> Result<Vec<u8>, Vec<Rejection>> {
    if transform.is_identity() {
        return reserialise(decl, bytes);
    }
    let mut seed = [0u8; 32];
    if let Err(e) = rand_core::OsRng.try_fill_bytes(&mut seed) {
        return Err(vec![Rejection::Unreadable {
            name: decl.name.clone(),
            detail: format!("the node's random source failed: {e}"),
        }]);
    }
    reserialise_at(decl, bytes, transform, &mut ChaCha20Rng::from_seed(seed))
}

/// [`reserialise`] with the declared float tensors transformed by `transform`, the noise
/// drawn from `rng` ([`transform_tensor`]).
///
/// # Errors
/// The rejections that refuse it.
pub fn reserialise_at<R: RngCore + CryptoRng>(
    decl: &OutputDecl,
    bytes: &[u8],
    transform: ReleaseTransform,
    rng: &mut R,
) -> Result<Vec<u8>, Vec<Rejection>> {
    let out = match decl.kind {
        OutputKind::Safetensors if !decl.tensors.is_empty() => {
            safetensors(decl, bytes, transform, rng)?
        }
        OutputKind::MetricsJson => metrics(&decl.name, bytes).map_err(|r| vec![r])?,
        kind => {
            return Err(vec![Rejection::NotReleasable {
                name: decl.name.clone(),
                kind,
            }])
        }
    };
    if out.len() as u64 > decl.max_bytes {
        return Err(vec![Rejection::TooLarge {
            name: decl.name.clone(),
            size: out.len() as u64,
            cap: decl.max_bytes,
        }]);
    }
    Ok(out)
}

fn safetensors<R: RngCore + CryptoRng>(
    decl: &OutputDecl,
    bytes: &[u8],
    transform: ReleaseTransform,
    rng: &mut R,
) -> Result<Vec<u8>, Vec<Rejection>> {
    let name = || decl.name.clone();
    let parsed = formats::parse_safetensors(bytes).map_err(|detail| {
        vec![Rejection::BadFormat {
            name: name(),
            kind: OutputKind::Safetensors,
            detail,
        }]
    })?;
    let data = &bytes[formats::safetensors_data_start(bytes)..];
    let mut found: BTreeMap<&str, &formats::SafetensorsTensor> =
        parsed.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut rejections = Vec::new();
    let mut declared: Vec<&TensorDecl> = decl.tensors.iter().collect();
    declared.sort_by(|a, b| a.name.cmp(&b.name));
    let mut chosen = Vec::new();
    for d in declared {
        let Some(t) = found.remove(d.name.as_str()) else {
            rejections.push(Rejection::MissingTensor {
                name: name(),
                tensor: d.name.clone(),
            });
            continue;
        };
        if TensorDtype::from_name(&t.dtype) != Some(d.dtype) || t.shape != d.shape {
            rejections.push(Rejection::TensorMismatch {
                name: name(),
                tensor: d.name.clone(),
            });
            continue;
        }
        // In bounds and of the declared size: `parse_safetensors` checked the offsets
        // against the data region, the shape and the dtype.
        let Some(values) = usize::try_from(t.start)
            .ok()
            .zip(usize::try_from(t.end).ok())
            .and_then(|(s, e)| data.get(s..e))
        else {
            rejections.push(Rejection::TensorMismatch {
                name: name(),
                tensor: d.name.clone(),
            });
            continue;
        };
        if !finite(d.dtype, values) {
            rejections.push(Rejection::NonFinite {
                name: name(),
                tensor: Some(d.name.clone()),
            });
            continue;
        }
        chosen.push((d, values));
    }
    // What is left was not declared; counted, never named.
    if !found.is_empty() {
        rejections.push(Rejection::UndeclaredTensor {
            name: name(),
            count: found.len(),
        });
    }
    if !rejections.is_empty() {
        return Err(rejections);
    }
    if transform.is_identity() {
        return Ok(write_safetensors(&chosen));
    }
    let mut released: Vec<(TensorDecl, Vec<u8>)> = Vec::new();
    for (d, values) in chosen {
        let t = transform_tensor(d.dtype, values, transform, rng);
        let dtype = t.dtype;
        if !finite(dtype, &t.bytes) {
            // Impossible by construction (saturating rounding); refused if it ever happens.
            rejections.push(Rejection::NonFinite {
                name: name(),
                tensor: Some(d.name.clone()),
            });
            continue;
        }
        released.push((
            TensorDecl {
                name: d.name.clone(),
                dtype,
                shape: d.shape.clone(),
            },
            t.bytes,
        ));
        if let Some(scale) = t.scale {
            released.push((
                TensorDecl {
                    name: int8_scale_name(&d.name),
                    dtype: TensorDtype::F32,
                    shape: Vec::new(),
                },
                scale.to_le_bytes().to_vec(),
            ));
        }
    }
    if !rejections.is_empty() {
        return Err(rejections);
    }
    released.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let refs: Vec<(&TensorDecl, &[u8])> = released.iter().map(|(d, v)| (d, v.as_slice())).collect();
    Ok(write_safetensors(&refs))
}

/// A random source for the declared precision without noise, which draws nothing.
struct NoRng;

impl RngCore for NoRng {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        dest.fill(0);
        Ok(())
    }
}

// Only ever passed with `ReleaseTransform::DECLARED`, which draws no noise.
impl CryptoRng for NoRng {}

/// One declared tensor as released: its dtype, its little-endian values, and for int8 the
/// scale (`value = q × scale`).
#[derive(Clone, Debug, PartialEq)]
pub struct Transformed {
    pub dtype: TensorDtype,
    pub bytes: Vec<u8>,
    pub scale: Option<f32>,
}

/// The node's transformation of one declared tensor's `values` (little endian, of `dtype`):
/// for a float tensor, Gaussian noise σ = `noise_k` × RMS drawn from `rng` (none when k is 0
/// or the tensor is all zeros), then rounding to nearest, ties to even, saturated to the
/// released dtype's largest finite value ([`ReleasePrecision::released_dtype`]); int8 is
/// symmetric with `scale = max|x| / 127` (as an F32) and `q = round(x / scale)` in -127..=127,
/// all zeros with a scale of 0 for an all-zero tensor. Integer tensors are returned as they
/// are. No value of the result is NaN or infinite.
pub fn transform_tensor<R: RngCore + CryptoRng>(
    dtype: TensorDtype,
    values: &[u8],
    transform: ReleaseTransform,
    rng: &mut R,
) -> Transformed {
    let released = transform.precision.released_dtype(dtype);
    let Some(mut x) = decode_float(dtype, values) else {
        return Transformed {
            dtype,
            bytes: values.to_vec(),
            scale: None,
        };
    };
    let k = transform.noise_k.get();
    if k > 0.0 {
        let sigma = k * rms(&x);
        // A σ past f64's range stays finite: the sums saturate below, never NaN.
        let sigma = if sigma.is_finite() { sigma } else { f64::MAX };
        if sigma > 0.0 {
            for v in &mut x {
                *v += sigma * gaussian(rng);
            }
        }
    }
    if released == TensorDtype::I8 {
        let (bytes, scale) = int8(&x);
        return Transformed {
            dtype: released,
            bytes,
            scale: Some(scale),
        };
    }
    let mut bytes = Vec::with_capacity(x.len() * released.bytes() as usize);
    for v in x {
        match released {
            TensorDtype::F64 => bytes.extend_from_slice(&saturate(v, f64::MAX).to_le_bytes()),
            TensorDtype::F32 => bytes.extend_from_slice(&to_f32(round_to(v, &F32)).to_le_bytes()),
            TensorDtype::BF16 => {
                let bits = to_f32(round_to(v, &BF16)).to_bits() >> 16;
                bytes.extend_from_slice(&(bits as u16).to_le_bytes());
            }
            _ => bytes.extend_from_slice(&f16_bits(round_to(v, &F16)).to_le_bytes()),
        }
    }
    Transformed {
        dtype: released,
        bytes,
        scale: None,
    }
}

/// A binary floating-point format: significand bits after the point, the smallest normal
/// exponent, the largest finite value.
struct Format {
    mantissa: i32,
    min_exp: i32,
    max: f64,
}

const F32: Format = Format {
    mantissa: 23,
    min_exp: -126,
    max: f32::MAX as f64,
};
const BF16: Format = Format {
    mantissa: 7,
    min_exp: -126,
    // (2 - 2^-7) × 2^127
    max: 3.389_531_389_251_535_5e38,
};
const F16: Format = Format {
    mantissa: 10,
    min_exp: -14,
    max: 65504.0,
};

/// `v` clamped to ±`max` (an infinity to the largest finite value).
fn saturate(v: f64, max: f64) -> f64 {
    v.clamp(-max, max)
}

/// `v` rounded to the nearest value of `f` (ties to even; subnormals included), saturated to
/// its largest finite value. Scaling by a power of two is exact, so there is one rounding.
fn round_to(v: f64, f: &Format) -> f64 {
    let v = saturate(v, f64::MAX);
    let biased = ((v.to_bits() >> 52) & 0x7ff) as i32;
    let exp = (biased - 1023).max(f.min_exp);
    let ulp = pow2(exp - f.mantissa);
    saturate((v / ulp).round_ties_even() * ulp, f.max)
}

/// 2^`e` for `e` in f64's normal range, exactly.
fn pow2(e: i32) -> f64 {
    #[allow(clippy::cast_sign_loss)] // e + 1023 is in 1..=2046
    let biased = (e + 1023) as u64;
    f64::from_bits(biased << 52)
}

/// A value already representable as an `f32` (the cast is exact).
#[allow(clippy::cast_possible_truncation)]
fn to_f32(v: f64) -> f32 {
    v as f32
}

/// The IEEE half bits of `v`, a value representable in it ([`round_to`] with [`F16`]).
fn f16_bits(v: f64) -> u16 {
    let sign: u16 = if v.is_sign_negative() { 0x8000 } else { 0 };
    let a = v.abs();
    if a == 0.0 {
        return sign;
    }
    let biased = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    if biased < -14 {
        // Subnormal: a multiple of 2^-24.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let m = (a * pow2(24)) as u16;
        return sign | m;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let e = (biased + 15) as u16;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let m = ((a / pow2(biased) - 1.0) * 1024.0) as u16;
    sign | (e << 10) | m
}

/// The symmetric int8 values of `x` and their scale.
fn int8(x: &[f64]) -> (Vec<u8>, f32) {
    let max = x.iter().fold(0f64, |m, v| m.max(v.abs()));
    // An F32 scale, rounded once and saturated; q is computed against the scale released.
    let scale = to_f32(round_to(max / 127.0, &F32));
    let q = x
        .iter()
        .map(|v| {
            if scale == 0.0 {
                return 0u8;
            }
            let q = (v / f64::from(scale))
                .round_ties_even()
                .clamp(-127.0, 127.0);
            #[allow(clippy::cast_possible_truncation)]
            let q = q as i8;
            q.to_le_bytes()[0]
        })
        .collect();
    (q, scale)
}

/// The root mean square of `x`, without overflow (scaled by the largest magnitude).
fn rms(x: &[f64]) -> f64 {
    let max = x.iter().fold(0f64, |m, v| m.max(v.abs()));
    if max == 0.0 || x.is_empty() {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let n = x.len() as f64;
    let mean_square = x.iter().map(|v| (v / max) * (v / max)).sum::<f64>() / n;
    max * mean_square.sqrt()
}

/// A standard normal draw (Box–Muller, from two uniform 53-bit draws of `rng`).
fn gaussian<R: RngCore + CryptoRng>(rng: &mut R) -> f64 {
    let unit = |r: &mut R| {
        #[allow(clippy::cast_precision_loss)] // 53 bits, exact
        let u = (r.next_u64() >> 11) as f64;
        u * pow2(-53)
    };
    // In (0, 1]: the logarithm is finite, |z| < 39.
    let u1 = 1.0 - unit(rng);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The values of a released tensor (little endian, of `dtype`) as a publisher reads them:
/// float dtypes exactly, an `I8` tensor with its `<name>:scale` as `q × scale`. `None` for
/// other integer dtypes and for `I8` without a scale.
pub fn released_values(dtype: TensorDtype, values: &[u8], scale: Option<f32>) -> Option<Vec<f64>> {
    match (dtype, scale) {
        (TensorDtype::I8, Some(scale)) => Some(
            values
                .iter()
                .map(|&q| f64::from(i8::from_le_bytes([q])) * f64::from(scale))
                .collect(),
        ),
        _ => decode_float(dtype, values),
    }
}

/// The values of a float tensor (`None` for an integer dtype), each exact in an f64.
fn decode_float(dtype: TensorDtype, values: &[u8]) -> Option<Vec<f64>> {
    let v = match dtype {
        TensorDtype::F64 => values
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        TensorDtype::F32 => values
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        TensorDtype::BF16 => values
            .chunks_exact(2)
            .map(|c| {
                f64::from(f32::from_bits(
                    u32::from(u16::from_le_bytes([c[0], c[1]])) << 16,
                ))
            })
            .collect(),
        TensorDtype::F16 => values
            .chunks_exact(2)
            .map(|c| f16_value(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        _ => return None,
    };
    Some(v)
}

/// The value of IEEE half bits `h` (finite: the guard refused the others).
fn f16_value(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = i32::from((h >> 10) & 0x1f);
    let m = f64::from(h & 0x3ff);
    if e == 0 {
        sign * m * pow2(-24)
    } else {
        sign * (1.0 + m / 1024.0) * pow2(e - 15)
    }
}

/// The canonical file of `tensors` (already in order, names from the declaration).
pub fn write_safetensors(tensors: &[(&TensorDecl, &[u8])]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut at = 0usize;
    for (i, (d, values)) in tensors.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        let shape: Vec<String> = d.shape.iter().map(u64::to_string).collect();
        // Declared names are of a fixed alphabet (`rapha_core::release::TENSOR_NAME`), which
        // JSON quotes as they are.
        header.push_str(&format!(
            "\"{}\":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{at},{}]}}",
            d.name,
            d.dtype.as_str(),
            shape.join(","),
            at + values.len()
        ));
        at += values.len();
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + at);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for (_, values) in tensors {
        out.extend_from_slice(values);
    }
    out
}

/// Whether every element of `values` (little endian, of `dtype`) is finite.
fn finite(dtype: TensorDtype, values: &[u8]) -> bool {
    // Exponent all ones is an infinity or a NaN.
    let ones = |chunk: &[u8], mask: u64| -> bool {
        let mut v = 0u64;
        for (i, b) in chunk.iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        v & mask == mask
    };
    let (size, mask) = match dtype {
        TensorDtype::F64 => (8, 0x7ff0_0000_0000_0000),
        TensorDtype::F32 => (4, 0x7f80_0000),
        TensorDtype::F16 => (2, 0x7c00),
        TensorDtype::BF16 => (2, 0x7f80),
        _ => return true,
    };
    !values.chunks_exact(size).any(|c| ones(c, mask))
}

/// `metrics.json` re-emitted from its numbers (see the module docs).
fn metrics(name: &str, bytes: &[u8]) -> Result<Vec<u8>, Rejection> {
    let bad = |detail: String| Rejection::BadFormat {
        name: name.into(),
        kind: OutputKind::MetricsJson,
        detail,
    };
    formats::check_metrics_json(bytes).map_err(bad)?;
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON (line {})", e.line())))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let one = |x: &serde_json::Value| -> Result<String, Rejection> {
        #[allow(clippy::cast_possible_truncation)] // the rounding to 32 bits is the point
        let r = x.as_f64().map(|f| f as f32).filter(|f| f.is_finite());
        let r = r.ok_or_else(|| Rejection::NonFinite {
            name: name.into(),
            tensor: None,
        })?;
        serde_json::to_string(&r).map_err(|e| bad(e.to_string()))
    };
    let sorted: BTreeMap<&String, &serde_json::Value> = obj.iter().collect();
    let mut out = String::from("{");
    for (i, (k, val)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Keys are the protocol's fixed names (checked above), quoted as they are.
        out.push_str(&format!("\"{k}\":"));
        match val.as_array() {
            Some(a) => {
                let items: Result<Vec<String>, Rejection> = a.iter().map(one).collect();
                out.push_str(&format!("[{}]", items?.join(",")));
            }
            None => out.push_str(&one(val)?),
        }
    }
    out.push('}');
    Ok(out.into_bytes())
}

/// The accepted set re-written: each file of `verdict` read again from `out_dir` (it must be
/// the file the guard checked), re-serialised, its size and digest now those of the node's
/// bytes. Returns the new verdict, and the node's bytes in the order of its files; an
/// unaccepted verdict is returned as it is.
pub(super) fn release(
    outputs: &[OutputDecl],
    out_dir: &Path,
    verdict: Verdict,
    transform: ReleaseTransform,
) -> (Verdict, Vec<Vec<u8>>) {
    if !verdict.accepted {
        return (verdict, Vec::new());
    }
    let mut files = Vec::new();
    let mut bytes_out = Vec::new();
    let mut rejections = Vec::new();
    for f in &verdict.files {
        let Some(decl) = outputs.iter().find(|d| d.name == f.name) else {
            rejections.push(Rejection::Undeclared {
                name: f.name.clone(),
            });
            continue;
        };
        let mut bytes = Vec::new();
        let read = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .open(out_dir.join(&f.name))
            .and_then(|file| {
                file.take(decl.max_bytes.saturating_add(1))
                    .read_to_end(&mut bytes)
            });
        if let Err(e) = read {
            rejections.push(Rejection::Unreadable {
                name: f.name.clone(),
                detail: e.to_string(),
            });
            continue;
        }
        if Digest::of(&bytes) != f.digest {
            rejections.push(Rejection::Unreadable {
                name: f.name.clone(),
                detail: "changed after the guard checked it".into(),
            });
            continue;
        }
        match reserialise_released(decl, &bytes, transform) {
            Ok(out) => {
                files.push(OutputFile {
                    name: f.name.clone(),
                    kind: f.kind,
                    size: out.len() as u64,
                    digest: Digest::of(&out),
                });
                bytes_out.push(out);
            }
            Err(r) => rejections.extend(r),
        }
    }
    if rejections.is_empty() {
        (
            Verdict {
                accepted: true,
                files,
                rejections,
            },
            bytes_out,
        )
    } else {
        (
            Verdict {
                accepted: false,
                files: Vec::new(),
                rejections,
            },
            Vec::new(),
        )
    }
}
