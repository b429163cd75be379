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
//! Refusals are [`Rejection`]s of the guard's vocabulary; a tensor is named only by its
//! declared name, never by a name the trainer wrote.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rapha_core::release::{TensorDecl, TensorDtype};
use rapha_core::{Digest, OutputDecl, OutputKind};

use super::{OutputFile, Rejection, Verdict};
use crate::formats;

/// The node's file for one accepted output of kind `decl.kind`, from the trainer's `bytes`.
///
/// # Errors
/// The rejections that refuse it.
pub fn reserialise(decl: &OutputDecl, bytes: &[u8]) -> Result<Vec<u8>, Vec<Rejection>> {
    let out = match decl.kind {
        OutputKind::Safetensors if !decl.tensors.is_empty() => safetensors(decl, bytes)?,
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

fn safetensors(decl: &OutputDecl, bytes: &[u8]) -> Result<Vec<u8>, Vec<Rejection>> {
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
    Ok(write_safetensors(&chosen))
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
        match reserialise(decl, &bytes) {
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
