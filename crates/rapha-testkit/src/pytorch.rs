//! The PyTorch example trainer (trainers/pytorch-lesion) for the node's and the demo's
//! end-to-end tests: its image, and the check of the models it releases.

// Test fixtures: a failed build, read or parse is a test failure, reported at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The example's image: $RAPHA_DEMO_PYTORCH_IMAGE (scripts/test builds it), else built here by
/// trainers/pytorch-lesion/build.sh, which reuses its cache under $RAPHA_CACHE/pytorch-lesion
/// when the inputs did not change.
pub fn image() -> PathBuf {
    if let Some(p) = std::env::var_os("RAPHA_DEMO_PYTORCH_IMAGE").map(PathBuf::from) {
        if p.is_file() {
            return p;
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let o = Command::new(root.join("trainers/pytorch-lesion/build.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("trainers/pytorch-lesion/build.sh runs");
    assert!(o.status.success(), "the PyTorch example image builds");
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

/// The example's image signed with a throwaway key as trainers/pytorch-lesion/trainer.toml
/// declares it, verified against a trust store holding only that key, and unpacked the way the
/// node unpacks a bundle, under `dir`. Returns the rootfs and the image's entrypoint, for tests
/// that run the example directly in the enclave runtime (e.g. its predict mode).
pub fn unpacked(dir: &Path) -> (PathBuf, Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let spec = rapha_bundle::TrainerSpec::from_toml(
        &std::fs::read_to_string(root.join("trainers/pytorch-lesion/trainer.toml")).unwrap(),
    )
    .unwrap();
    let key = rapha_bundle::SigningKey::generate_ed25519();
    let bundle = dir.join("pytorch-bundle");
    rapha_bundle::sign_bundle(&key, &image(), &spec, &bundle).unwrap();
    let trust = dir.join("pytorch-trust");
    rapha_bundle::TrustStore::add(
        &trust,
        &spec.publisher,
        &key.public_key(),
        std::slice::from_ref(&spec.name),
        None,
    )
    .unwrap();
    let verified =
        rapha_bundle::verify_bundle(&bundle, &rapha_bundle::TrustStore::open(&trust).unwrap())
            .unwrap();
    let rootfs = dir.join("pytorch-rootfs");
    verified.unpack_rootfs(&rootfs).unwrap();
    (rootfs, verified.entrypoint().to_vec())
}

/// Asserts that `dir` holds the reference trainer's released model: `model.safetensors` with
/// the CNN's tensor shapes (`c1.weight` 8×1×3×3, `fc.weight` 1×64) in its header, and no
/// `__metadata__` (the node's re-serialisation has none).
pub fn assert_models(dir: &Path) {
    assert!(!dir.join("model.onnx").exists(), "ONNX is not released");
    let st = std::fs::read(dir.join("model.safetensors")).unwrap();
    let n = usize::try_from(u64::from_le_bytes(st[..8].try_into().unwrap())).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&st[8..8 + n]).unwrap();
    assert_eq!(
        header["c1.weight"]["shape"],
        serde_json::json!([8, 1, 3, 3])
    );
    assert_eq!(header["fc.weight"]["shape"], serde_json::json!([1, 64]));
    assert!(header.get("__metadata__").is_none());
}
