//! The hostile example trainer (`rapha-demo run --hostile-example`): a trainer whose source
//! ships in `crates/rapha-demo/hostile-trainer/`, that speaks the feed honestly and then tries
//! to smuggle fed images out in its outputs, so a user can watch the output guard refuse the
//! job, release nothing and refund the deposit.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// What the hostile example tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    /// Hide the raw pixel bytes of fed records in a tensor of `model.safetensors`.
    PixelsInWeights,
    /// Write a fed record as a DICOM Part 10 file renamed `model.safetensors`.
    RenamedDicom,
}

impl Attack {
    /// The hostile trainer's argument for this attack.
    pub fn arg(self) -> &'static str {
        match self {
            Self::PixelsInWeights => "pixels-in-weights",
            Self::RenamedDicom => "renamed-dicom",
        }
    }

    /// One line for the demo's output.
    pub fn describe(self) -> &'static str {
        match self {
            Self::PixelsInWeights => {
                "copies the raw pixel bytes of fed records into a tensor of model.safetensors"
            }
            Self::RenamedDicom => "writes a fed record as a DICOM file renamed model.safetensors",
        }
    }
}

/// Where the hostile trainer's source and build script live (this checkout).
fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hostile-trainer")
}

/// The hostile trainer's rootfs: `$RAPHA_DEMO_HOSTILE_TRAINER` when it holds `/trainer`, else
/// built from the source in this checkout with its `build.sh` (a static binary; cargo's cache
/// makes a rebuild a no-op) into `into`, a directory of this run's own (two demo runs at once
/// must not replace each other's binary).
///
/// # Errors
/// Neither is available, or the build fails.
pub fn rootfs(into: &Path) -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("RAPHA_DEMO_HOSTILE_TRAINER").map(PathBuf::from) {
        if d.join("trainer").is_file() {
            return Ok(d);
        }
        bail!(
            "RAPHA_DEMO_HOSTILE_TRAINER={} has no trainer binary; build it with \
             crates/rapha-demo/hostile-trainer/build.sh DIR",
            d.display()
        );
    }
    let build = source_dir().join("build.sh");
    if !build.is_file() {
        bail!(
            "the hostile example's source is not at {} (run rapha-demo from a Rapha checkout, \
             or build it there with crates/rapha-demo/hostile-trainer/build.sh DIR and set \
             RAPHA_DEMO_HOSTILE_TRAINER=DIR)",
            source_dir().display()
        );
    }
    let out = into.to_path_buf();
    let status = Command::new(&build)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}", build.display()))?;
    if !status.success() || !out.join("trainer").is_file() {
        bail!(
            "building the hostile example with {} failed ({status})",
            build.display()
        );
    }
    Ok(out)
}
