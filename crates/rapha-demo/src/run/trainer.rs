//! Which trainer `rapha-demo run` runs: the reference trainer, a custom rootfs, the hostile
//! example, or an OCI image with its predicate.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{Example, RunArgs, Steps};
use crate::hostile::Attack;

/// The PyTorch example's predicate.
const PYTORCH_TRAINER_TOML: &str = include_str!("../../../../trainers/pytorch-lesion/trainer.toml");

/// Which trainer runs.
pub(super) enum Trainer {
    Reference,
    Custom,
    Hostile(Attack),
    /// An OCI image (layout or oci-archive), signed with this predicate.
    Image(rapha_bundle::TrainerSpec),
}

/// The trainer image of `--trainer-image` or `--example` and its predicate, if one was asked.
fn trainer_image(args: &RunArgs) -> Result<Option<(PathBuf, Trainer)>> {
    let (path, toml, source) = if let Some(p) = &args.trainer_image {
        let (toml, source) = match &args.predicate {
            Some(f) => (
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading the predicate {}", f.display()))?,
                f.display().to_string(),
            ),
            None => (
                crate::signing::REFERENCE_TRAINER_TOML.to_owned(),
                "the reference trainer's".to_owned(),
            ),
        };
        (p.clone(), toml, source)
    } else if let Some(Example::Pytorch) = args.example {
        let Some(p) = std::env::var_os("RAPHA_DEMO_PYTORCH_IMAGE") else {
            bail!(
                "no PyTorch example image: build it with `trainers/pytorch-lesion/build.sh` \
                 (it prints the image's path) and set RAPHA_DEMO_PYTORCH_IMAGE to that path, \
                 or run `./scripts/demo --example pytorch`, which does both"
            );
        };
        (
            PathBuf::from(p),
            PYTORCH_TRAINER_TOML.to_owned(),
            "trainers/pytorch-lesion/trainer.toml".to_owned(),
        )
    } else {
        return Ok(None);
    };
    if !path.exists() {
        bail!("the trainer image {} does not exist", path.display());
    }
    let mut predicate = rapha_bundle::TrainerSpec::from_toml(&toml)
        .with_context(|| format!("parsing the predicate ({source})"))?;
    if args.trainer_image.is_some() && args.predicate.is_none() {
        "custom-trainer".clone_into(&mut predicate.name);
        // The reference trainer's entrypoint is not this image's: take the image config's.
        predicate.entrypoint = None;
    }
    Ok(Some((path, Trainer::Image(predicate))))
}

/// The trainer rootfs and which trainer it is.
pub(super) fn trainer_rootfs(
    args: &RunArgs,
    out: &Path,
    steps: &mut Steps,
) -> Result<(PathBuf, Trainer)> {
    if let Some(image) = trainer_image(args)? {
        return Ok(image);
    }
    let (dir, which) = if let Some(attack) = args.hostile_example {
        steps.start("building the hostile example trainer (static binary, first use only)");
        let dir = crate::hostile::rootfs(&out.join("hostile-example"))?;
        steps.ok(
            "hostile example",
            format!("{}/trainer: it {}", dir.display(), attack.describe()),
        );
        (dir, Trainer::Hostile(attack))
    } else if let Some(d) = &args.trainer_rootfs {
        (d.clone(), Trainer::Custom)
    } else if let Some(d) = std::env::var_os("RAPHA_DEMO_REFERENCE_TRAINER") {
        (PathBuf::from(d), Trainer::Reference)
    } else {
        bail!(
            "no trainer: build the reference trainer with \
             `trainers/lesion-classifier/build.sh DIR` and pass --trainer-rootfs DIR \
             (scripts/demo builds it and sets RAPHA_DEMO_REFERENCE_TRAINER)"
        );
    };
    let entrypoint = if matches!(which, Trainer::Hostile(_)) {
        "/trainer"
    } else {
        &args.entrypoint
    };
    let entry = dir.join(entrypoint.trim_start_matches('/'));
    if !entry.is_file() {
        bail!(
            "the trainer rootfs {} has no entrypoint {}",
            dir.display(),
            entrypoint
        );
    }
    Ok((dir, which))
}
