//! Dev keys and the demo's trainer bundle: build an OCI image from the trainer rootfs, sign it
//! with a dev publisher key, register that key in a demo trust store and verify the bundle the
//! way the node does. Dev keys carry `rapha_policy::DEV_KEY_PREFIX`, so production refuses them.

use std::path::Path;

use anyhow::{Context, Result};
use rapha_bundle::{
    build_image, sign_bundle, verify_bundle, BuildSpec, SigningKey, TrainerSpec, TrustStore,
    VerifiedBundle,
};
use rapha_policy::DEV_KEY_PREFIX;

/// The reference trainer's predicate (what its publisher signs).
pub(crate) const REFERENCE_TRAINER_TOML: &str =
    include_str!("../../../trainers/lesion-classifier/trainer.toml");

/// A dev secret: `DEV_KEY_PREFIX` then a fixed role byte pattern.
pub fn dev_seed(role: u8) -> [u8; 32] {
    let mut seed = [role; 32];
    seed[..DEV_KEY_PREFIX.len()].copy_from_slice(DEV_KEY_PREFIX);
    seed
}

/// The demo publisher's dev signing key.
pub fn publisher_key() -> SigningKey {
    SigningKey::ed25519_from_seed(&dev_seed(0xa1))
}

/// Builds, signs and verifies the trainer bundle under `work`; returns the verified bundle.
/// `name` renames a trainer that is not the reference one (its outputs and resources stay
/// the reference trainer's declaration).
pub fn build_signed_bundle(
    rootfs: &Path,
    entrypoint: Vec<String>,
    name: Option<&str>,
    work: &Path,
) -> Result<(VerifiedBundle, String)> {
    let mut spec = TrainerSpec::from_toml(REFERENCE_TRAINER_TOML)
        .context("parsing the reference trainer's trainer.toml")?;
    if let Some(n) = name {
        n.clone_into(&mut spec.name);
    }
    spec.entrypoint = Some(entrypoint.clone());
    let image = work.join("image");
    build_image(
        &BuildSpec {
            rootfs: rootfs.to_owned(),
            entrypoint,
            env: Vec::new(),
        },
        &image,
    )
    .context("building the trainer image")?;
    sign_image(&image, &spec, work)
}

/// Signs the OCI image at `image` (a layout directory or an oci-archive tar) with `spec`
/// and the dev publisher key into `work/bundle`, registers the key in `work/trust` and
/// verifies the bundle as the node does.
pub fn sign_image(
    image: &Path,
    spec: &TrainerSpec,
    work: &Path,
) -> Result<(VerifiedBundle, String)> {
    let key = publisher_key();
    let bundle = work.join("bundle");
    sign_bundle(&key, image, spec, &bundle)
        .with_context(|| format!("signing the trainer image {}", image.display()))?;
    let trust = work.join("trust");
    TrustStore::add(
        &trust,
        &spec.publisher,
        &key.public_key(),
        std::slice::from_ref(&spec.name),
        None,
    )
    .context("registering the dev publisher key in the demo trust store")?;
    let store = TrustStore::open(&trust)?;
    let verified = verify_bundle(&bundle, &store).context("verifying the trainer bundle")?;
    let keyid = key.public_key().keyid();
    Ok((verified, keyid))
}
