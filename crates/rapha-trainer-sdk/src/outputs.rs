//! Writing the outputs a bundle may declare: safetensors weights and a numeric `metrics.json`.
//!
//! The node's output guard checks both formats; writing them through these functions keeps a
//! trainer inside what the guard accepts (no strings in metrics, a well-formed safetensors
//! header).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use rapha_protocol::{MAX_CURVE, OUT_DIR_IN_CONTAINER, OUT_ENV};
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors};
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

impl safetensors::View for &Tensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        // safetensors stores little-endian values.
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(self.data))
        } else {
            Cow::Owned(self.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
    }

    fn data_len(&self) -> usize {
        std::mem::size_of_val(self.data)
    }
}

/// Writes `f32` tensors in the safetensors format, through the `safetensors` crate (the
/// format's reference implementation; the node's output guard reads the result with its own
/// strict reader).
///
/// # Errors
/// [`SdkError::Output`] if a shape does not match its data, a name is reserved (`__…`) or
/// given twice, or an I/O error.
pub fn write_safetensors(path: &Path, tensors: &[Tensor<'_>]) -> Result<(), SdkError> {
    let bad = |why: String| SdkError::Output(path.display().to_string(), why);
    let mut names = std::collections::BTreeSet::new();
    for t in tensors {
        if t.shape.iter().product::<usize>() != t.data.len() || t.name.starts_with("__") {
            return Err(bad(format!(
                "tensor {:?}: shape {:?} does not hold {} values",
                t.name,
                t.shape,
                t.data.len()
            )));
        }
        if !names.insert(t.name) {
            return Err(bad(format!("tensor {:?} is given twice", t.name)));
        }
    }
    safetensors::serialize_to_file(tensors.iter().map(|t| (t.name, t)), None, path).map_err(|e| {
        match e {
            SafeTensorError::IoError(io) => SdkError::Io(io),
            other => bad(other.to_string()),
        }
    })
}

/// A tensor read back: name, shape, values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Reads `f32` tensors written by [`write_safetensors`] (predict mode loads weights with it),
/// sorted by name.
///
/// # Errors
/// [`SdkError::Output`] for anything that is not a well-formed F32 safetensors file.
pub fn read_safetensors(path: &Path) -> Result<Vec<NamedTensor>, SdkError> {
    let bad = |why: String| SdkError::Output(path.display().to_string(), why);
    let bytes = std::fs::read(path)?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for (name, view) in file.iter() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("tensor {name:?} is not F32")));
        }
        let vals = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.push((name.to_owned(), view.shape().to_vec(), vals));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
