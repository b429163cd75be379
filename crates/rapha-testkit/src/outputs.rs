//! Checks of what the PyTorch reference trainer releases, shared by the node's and the demo's
//! end-to-end tests.

// An assertion helper: a failed read or a malformed file is a test failure, reported at once.
#![allow(clippy::unwrap_used)]

use std::path::Path;

/// Asserts that `dir` holds the reference trainer's models: `model.onnx` an ONNX ModelProto
/// (`ir_version`, field 1, first) and `model.safetensors` with the CNN's tensor shapes
/// (`c1.weight` 8×1×3×3, `fc.weight` 1×64) in its header.
pub fn assert_pytorch_models(dir: &Path) {
    let onnx = std::fs::read(dir.join("model.onnx")).unwrap();
    assert_eq!(
        onnx.first(),
        Some(&0x08),
        "an ONNX ModelProto (ir_version first)"
    );
    let st = std::fs::read(dir.join("model.safetensors")).unwrap();
    let n = usize::try_from(u64::from_le_bytes(st[..8].try_into().unwrap())).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&st[8..8 + n]).unwrap();
    assert_eq!(
        header["c1.weight"]["shape"],
        serde_json::json!([8, 1, 3, 3])
    );
    assert_eq!(header["fc.weight"]["shape"], serde_json::json!([1, 64]));
}
