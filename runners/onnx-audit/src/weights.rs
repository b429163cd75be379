//! The released weights: the node's re-serialisation (`model.safetensors`), each tensor widened
//! to the f32 the graph computes in. Released precisions: F32, F64, F16, BF16 as they are, and
//! int8 as `q x scale` with its F32 `<name>:scale` tensor (the node's int8 release).

use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensors};

use crate::{Refusal, MAX_ELEMENTS};

/// One released tensor, widened to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The suffix of an int8 tensor's scale (`rapha_core::release::int8_scale_name`).
const SCALE_SUFFIX: &str = ":scale";

/// Parses `bytes` (a safetensors file) into its tensors by name, widened to f32.
///
/// # Errors
/// Not a safetensors file, more than [`MAX_ELEMENTS`] values, a dtype that is not a released
/// precision, an int8 tensor without its scale or a scale without its tensor, a non-finite
/// value.
pub fn parse(bytes: &[u8]) -> Result<BTreeMap<String, Weight>, Refusal> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Refusal::model(format!("the weights are not a safetensors file: {e}")))?;
    let views: BTreeMap<String, _> = st.tensors().into_iter().collect();
    let mut total: u64 = 0;
    let mut out = BTreeMap::new();
    for (name, view) in &views {
        if let Some(base) = name.strip_suffix(SCALE_SUFFIX) {
            if views.get(base).map(|v| v.dtype()) == Some(Dtype::I8) {
                continue;
            }
            return Err(Refusal::model(format!(
                "weights tensor {name:?} is a scale without its int8 tensor"
            )));
        }
        let n: u64 = view.shape().iter().map(|&d| d as u64).product();
        total = total.saturating_add(n);
        if total > MAX_ELEMENTS {
            return Err(Refusal::model(format!(
                "the weights hold more than {MAX_ELEMENTS} values"
            )));
        }
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::I8 => {
                let scale = views
                    .get(&format!("{name}{SCALE_SUFFIX}"))
                    .filter(|s| s.dtype() == Dtype::F32 && s.data().len() == 4)
                    .map(|s| {
                        let d = s.data();
                        f32::from_le_bytes([d[0], d[1], d[2], d[3]])
                    })
                    .ok_or_else(|| {
                        Refusal::model(format!(
                            "int8 weights tensor {name:?} has no F32 scalar {name}{SCALE_SUFFIX}"
                        ))
                    })?;
                data.iter()
                    .map(|&q| f32::from(i8::from_le_bytes([q])) * scale)
                    .collect()
            }
            other => {
                return Err(Refusal::model(format!(
                    "weights tensor {name:?} is {other:?}, not a released precision \
                     (F32, F64, F16, BF16, I8 with scale)"
                )))
            }
        };
        if values.len() as u64 != n {
            return Err(Refusal::model(format!(
                "weights tensor {name:?} holds {} values for shape {:?}",
                values.len(),
                view.shape()
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Refusal::model(format!(
                "weights tensor {name:?} holds a non-finite value"
            )));
        }
        out.insert(
            name.clone(),
            Weight {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| ((*n).to_owned(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    #[test]
    fn released_precisions_widen_to_f32() {
        let f32s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bf16s: Vec<u8> = [half::bf16::from_f32(0.5), half::bf16::from_f32(-3.0)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f16s: Vec<u8> = [half::f16::from_f32(0.25)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let w = parse(&file(&[
            ("a", Dtype::F32, vec![2], f32s),
            ("b", Dtype::BF16, vec![1, 2], bf16s),
            ("c", Dtype::F16, vec![1], f16s),
            ("d", Dtype::I8, vec![2], vec![2u8, 0xfe]),
            ("d:scale", Dtype::F32, vec![], 0.5f32.to_le_bytes().to_vec()),
        ]))
        .unwrap();
        assert_eq!(w.keys().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        assert_eq!(w["a"].values, [1.5, -2.0]);
        assert_eq!(
            w["b"],
            Weight {
                shape: vec![1, 2],
                values: vec![0.5, -3.0]
            }
        );
        assert_eq!(w["c"].values, [0.25]);
        assert_eq!(w["d"].values, [1.0, -1.0]);
    }

    #[test]
    fn unreleased_dtypes_orphan_scales_and_non_finite_values_are_refused() {
        let nan: Vec<u8> = f32::NAN.to_le_bytes().to_vec();
        for (tensors, says) in [
            (
                vec![("a", Dtype::I32, vec![1], vec![0u8; 4])],
                "not a released precision",
            ),
            (
                vec![("a", Dtype::I8, vec![1], vec![1u8])],
                "has no F32 scalar a:scale",
            ),
            (
                vec![("a:scale", Dtype::F32, vec![], 1f32.to_le_bytes().to_vec())],
                "a scale without its int8 tensor",
            ),
            (vec![("a", Dtype::F32, vec![1], nan)], "non-finite"),
        ] {
            let e = parse(&file(&tensors)).unwrap_err();
            assert_eq!(e.code, 3);
            assert!(e.reason.contains(says), "{}", e.reason);
        }
        assert!(parse(b"not safetensors")
            .unwrap_err()
            .reason
            .contains("not a safetensors file"));
    }
}
