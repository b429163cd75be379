//! Writing the outputs a bundle may declare: safetensors weights and a numeric `metrics.json`.
//!
//! The node's output guard checks both formats; writing them through these functions keeps a
//! trainer inside what the guard accepts (no strings in metrics, a well-formed safetensors
//! header).

use std::io::Write;
use std::path::{Path, PathBuf};

use rapha_protocol::{MAX_CURVE, OUT_DIR_IN_CONTAINER, OUT_ENV};
use serde_json::{json, Map, Value};

use crate::SdkError;

/// The output directory: `$RAPHA_OUT`, or `/out` inside the container.
pub fn out_dir() -> PathBuf {
    std::env::var_os(OUT_ENV).map_or_else(|| PathBuf::from(OUT_DIR_IN_CONTAINER), PathBuf::from)
}

/// Keys `metrics.json` may contain (the protocol's fixed set, which the node's output guard
/// enforces).
pub use rapha_protocol::METRICS_KEYS as METRIC_KEYS;

/// Writes `metrics.json` from scalar metrics. Keys outside [`METRIC_KEYS`] and non-finite
/// values are refused, so the guard will not reject the job for them.
///
/// # Errors
/// [`SdkError::Output`] naming the bad key, or an I/O error.
pub fn write_metrics(path: &Path, metrics: &[(&str, f64)]) -> Result<(), SdkError> {
    write_metrics_with_curves(path, metrics, &[])
}

/// Like [`write_metrics`], with `*_curve` arrays (at most 10,000 values each).
///
/// # Errors
/// As [`write_metrics`].
pub fn write_metrics_with_curves(
    path: &Path,
    metrics: &[(&str, f64)],
    curves: &[(&str, &[f64])],
) -> Result<(), SdkError> {
    let bad = |k: &str, why: &str| SdkError::Output("metrics.json".into(), format!("{k}: {why}"));
    let mut map = Map::new();
    for (k, v) in metrics {
        if !METRIC_KEYS.contains(k) || k.ends_with("_curve") {
            return Err(bad(k, "not a scalar key of the metrics schema"));
        }
        if !v.is_finite() {
            return Err(bad(k, "not a finite number"));
        }
        map.insert((*k).to_owned(), json!(v));
    }
    for (k, vs) in curves {
        if !METRIC_KEYS.contains(k) || !k.ends_with("_curve") {
            return Err(bad(k, "not a curve key of the metrics schema"));
        }
        if vs.len() > MAX_CURVE || vs.iter().any(|v| !v.is_finite()) {
            return Err(bad(k, "curves hold at most 10,000 finite numbers"));
        }
        map.insert((*k).to_owned(), json!(vs));
    }
    let bytes =
        serde_json::to_vec(&Value::Object(map)).map_err(|e| bad("metrics", &e.to_string()))?;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// A tensor to write: name, shape and `f32` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<'a> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

/// Writes `f32` tensors in the safetensors format (8-byte little-endian header length, JSON
/// header, then the raw little-endian data).
///
/// # Errors
/// [`SdkError::Output`] if a shape does not match its data, or an I/O error.
pub fn write_safetensors(path: &Path, tensors: &[Tensor<'_>]) -> Result<(), SdkError> {
    let mut header = Map::new();
    let mut offset = 0usize;
    for t in tensors {
        if t.shape.iter().product::<usize>() != t.data.len() || t.name.starts_with("__") {
            return Err(SdkError::Output(
                path.display().to_string(),
                format!(
                    "tensor {:?}: shape {:?} does not hold {} values",
                    t.name,
                    t.shape,
                    t.data.len()
                ),
            ));
        }
        let end = offset + t.data.len() * 4;
        header.insert(
            t.name.to_owned(),
            json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut h = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| SdkError::Output(path.display().to_string(), e.to_string()))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(&(h.len() as u64).to_le_bytes())?;
    f.write_all(&h)?;
    for t in tensors {
        for v in t.data {
            f.write_all(&v.to_le_bytes())?;
        }
    }
    f.flush()?;
    Ok(())
}

/// A tensor read back: name, shape, values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Reads `f32` tensors written by [`write_safetensors`] (predict mode loads weights with it).
///
/// # Errors
/// [`SdkError::Output`] for anything that is not a well-formed F32 safetensors file.
pub fn read_safetensors(path: &Path) -> Result<Vec<NamedTensor>, SdkError> {
    let bad = |why: String| SdkError::Output(path.display().to_string(), why);
    let bytes = std::fs::read(path)?;
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as usize)
        .ok_or_else(|| bad("shorter than the 8-byte header length".into()))?;
    let header = bytes
        .get(8..8usize.saturating_add(n))
        .ok_or_else(|| bad("header runs past the end".into()))?;
    let data = &bytes[8 + n..];
    let h: Map<String, Value> = serde_json::from_slice(header)
        .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
    let mut out = Vec::new();
    for (name, v) in h {
        if name == "__metadata__" {
            continue;
        }
        if v.get("dtype").and_then(Value::as_str) != Some("F32") {
            return Err(bad(format!("tensor {name:?} is not F32")));
        }
        let shape: Vec<usize> = v
            .get("shape")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_u64)
                    .map(|x| x as usize)
                    .collect()
            })
            .ok_or_else(|| bad(format!("tensor {name:?} has no shape")))?;
        let offs = v
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()? as usize, a[1].as_u64()? as usize)))
            .ok_or_else(|| bad(format!("tensor {name:?} has no data_offsets")))?;
        let raw = data
            .get(offs.0..offs.1)
            .filter(|r| r.len() == shape.iter().product::<usize>() * 4)
            .ok_or_else(|| bad(format!("tensor {name:?} data does not match its shape")))?;
        let vals = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.push((name, shape, vals));
    }
    Ok(out)
}
