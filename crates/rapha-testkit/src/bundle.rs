//! Signed trainer bundles for the node, CLI and bench tests: one trainer spec template and one
//! build-and-sign sequence, so that every suite submits the same kind of bundle the same way.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rapha_bundle::{build_image, sign_bundle, BuildSpec, SigningKey, TrainerSpec};
use rapha_core::release::{TensorDecl, TensorDtype};
use rapha_core::Digest;

/// What a test trainer's spec asks for: its resources and the size limit of each output.
#[derive(Debug, Clone, Copy)]
pub struct SpecLimits {
    pub memory_mb: u64,
    pub cpus: u32,
    pub pids: u32,
    pub wall_seconds: u64,
    /// `max_bytes` of `model.safetensors`.
    pub model_max_bytes: u64,
    /// `max_bytes` of `metrics.json`.
    pub metrics_max_bytes: u64,
}

impl SpecLimits {
    /// The small static test trainer: 256 MB, one CPU, 32 pids, two minutes, a 64 KiB model
    /// and 4 KiB of metrics.
    pub const SMALL: Self = Self {
        memory_mb: 256,
        cpus: 1,
        pids: 32,
        wall_seconds: 120,
        model_max_bytes: 65536,
        metrics_max_bytes: 4096,
    };
}

/// The spec of trainer `name` by `publisher` with `limits`, declaring the two outputs every
/// test trainer writes (`model.safetensors`, `metrics.json`), parsed as a publisher's
/// `trainer.toml` is. The model declares the static test trainers' one tensor, `w` (16 bytes
/// as U8); a bundle of the reference trainer declares [`reference_tensors`] instead.
///
/// # Errors
/// The spec does not parse (a name the bundle format refuses, a zero limit).
pub fn trainer_spec(
    publisher: &str,
    name: &str,
    limits: &SpecLimits,
) -> anyhow::Result<TrainerSpec> {
    let SpecLimits {
        memory_mb,
        cpus,
        pids,
        wall_seconds,
        model_max_bytes,
        metrics_max_bytes,
    } = *limits;
    TrainerSpec::from_toml(&format!(
        r#"
publisher = "{publisher}"
name = "{name}"
version = "0.1.0"

[resources]
memory_mb = {memory_mb}
cpus = {cpus}
pids = {pids}
wall_seconds = {wall_seconds}

[[outputs]]
name = "model.safetensors"
kind = "safetensors"
max_bytes = {model_max_bytes}

[[outputs.tensors]]
name = "w"
dtype = "U8"
shape = [16]

[[outputs]]
name = "metrics.json"
kind = "metrics-json"
max_bytes = {metrics_max_bytes}
"#
    ))
    .context("test trainer spec")
}

/// The tensors of the reference trainer's model (trainers/lesion-classifier) and of the
/// PyTorch example's (trainers/pytorch-lesion), the same network: three 3×3 convolutions of 8,
/// 16 and 32 channels and a linear layer over 64 pooled features, F32.
pub fn reference_tensors() -> Vec<TensorDecl> {
    [
        ("c1.weight", vec![8, 1, 3, 3]),
        ("c1.bias", vec![8]),
        ("c2.weight", vec![16, 8, 3, 3]),
        ("c2.bias", vec![16]),
        ("c3.weight", vec![32, 16, 3, 3]),
        ("c3.bias", vec![32]),
        ("fc.weight", vec![1, 64]),
        ("fc.bias", vec![1]),
    ]
    .into_iter()
    .map(|(name, shape)| TensorDecl {
        name: name.into(),
        dtype: TensorDtype::F32,
        shape,
    })
    .collect()
}

/// `spec` with its model declaring [`reference_tensors`]: a bundle of the reference trainer.
pub fn with_reference_tensors(mut spec: TrainerSpec) -> TrainerSpec {
    for o in &mut spec.outputs {
        if o.name == "model.safetensors" {
            o.tensors = reference_tensors();
        }
    }
    spec
}

/// Builds `rootfs` into an image at `<dir>/<stem>-layout` that runs `entrypoint`, and signs it
/// with `spec` and `key` into `<dir>/<stem>-bundle`. Returns the bundle and its manifest digest.
///
/// # Errors
/// The image or the bundle cannot be written, or the bundle format refuses the input.
pub fn sign_rootfs(
    dir: &Path,
    stem: &str,
    rootfs: &Path,
    entrypoint: &[&str],
    spec: &TrainerSpec,
    key: &SigningKey,
) -> anyhow::Result<(PathBuf, Digest)> {
    let layout = dir.join(format!("{stem}-layout"));
    build_image(
        &BuildSpec {
            rootfs: rootfs.to_owned(),
            entrypoint: entrypoint.iter().map(|s| (*s).to_owned()).collect(),
            env: vec![],
        },
        &layout,
    )
    .context("building the test image")?;
    let out = dir.join(format!("{stem}-bundle"));
    let manifest = sign_bundle(key, &layout, spec, &out).context("signing the test bundle")?;
    Ok((out, manifest))
}

/// Copies the static binary `trainer` to `/trainer` of a fresh rootfs at `<dir>/<stem>-rootfs`
/// and signs a bundle of it that runs `/trainer args…` (see [`sign_rootfs`]).
///
/// # Errors
/// As [`sign_rootfs`], or the trainer cannot be copied.
pub fn sign_trainer(
    dir: &Path,
    stem: &str,
    trainer: &Path,
    args: &[&str],
    spec: &TrainerSpec,
    key: &SigningKey,
) -> anyhow::Result<(PathBuf, Digest)> {
    let rootfs = dir.join(format!("{stem}-rootfs"));
    std::fs::create_dir_all(&rootfs).context("creating the test rootfs")?;
    std::fs::copy(trainer, rootfs.join("trainer")).context("copying the test trainer")?;
    let entrypoint: Vec<&str> = std::iter::once("/trainer")
        .chain(args.iter().copied())
        .collect();
    sign_rootfs(dir, stem, &rootfs, &entrypoint, spec, key)
}
