//! Signing and verifying bundles: one directory holding an OCI layout and its DSSE envelope.
//!
//! ```text
//! BUNDLE/
//!   oci-layout  index.json  blobs/sha256/…   the image (exactly one manifest)
//!   signature.dsse.json                       DSSE over the in-toto statement
//! ```

use std::io::BufReader;
use std::path::{Path, PathBuf};

use rapha_core::{Digest, OutputDecl, ResourceLimits};
use serde::Serialize;
use time::OffsetDateTime;

use crate::cancel::Cancel;
use crate::dsse::{
    decode_b64, pae, Envelope, Signature, IN_TOTO_PAYLOAD_TYPE, MAX_ENVELOPE_BYTES, MAX_SIGNATURES,
};
use crate::error::{BundleError, Result};
use crate::keys::SigningKey;
use crate::oci::{
    copy_image, extract_archive, fresh_dir, read_capped, Compression, Descriptor, ImageConfig,
    Manifest, OciLayout, VerifyingReader,
};
use crate::statement::{Statement, TrainerPredicate, TrainerSpec};
use crate::trust::{TrustStore, TrustedPublisher};
use crate::unpack::{survey_tar_stream, unpack_tar_stream, ImageContents, Limits, UnpackState};

/// File name of the envelope inside a bundle.
pub const ENVELOPE_FILE: &str = "signature.dsse.json";

/// Signs the image at `image` (an OCI layout directory or an `oci-archive` tar) with the
/// predicate `spec`, writing the self-contained bundle to the fresh directory `out`.
/// Returns the signed manifest digest.
///
/// # Errors
/// Layout and digest errors of the image, [`BundleError::ConfigMismatch`] if `spec` states an
/// entrypoint or env other than the image's, [`BundleError::OutputExists`].
pub fn sign_bundle(
    key: &SigningKey,
    image: &Path,
    spec: &TrainerSpec,
    out: &Path,
) -> Result<Digest> {
    fresh_dir(out)?;
    let result = sign_into(key, image, spec, out);
    if result.is_err() {
        // Leave no half-written bundle that could be mistaken for a finished one.
        if let Err(e) = std::fs::remove_dir_all(out) {
            tracing::warn!(path = %out.display(), error = %e, "cannot remove a partial bundle");
        }
    }
    result
}

fn sign_into(key: &SigningKey, image: &Path, spec: &TrainerSpec, out: &Path) -> Result<Digest> {
    let meta = std::fs::metadata(image).map_err(BundleError::io(image))?;
    let layout = if meta.is_dir() {
        copy_image(&OciLayout::open(image)?, out)?
    } else {
        let staging = out.join(".import");
        extract_archive(image, &staging)?;
        let result = copy_image(&OciLayout::open(&staging)?, out);
        std::fs::remove_dir_all(&staging).map_err(BundleError::io(&staging))?;
        result?
    };
    let (desc, _manifest, config) = layout.image()?;
    let manifest_digest = desc.sha256()?;
    let entrypoint = config.argv();
    let env = config.env();
    if let Some(e) = &spec.entrypoint {
        if *e != entrypoint {
            return Err(BundleError::ConfigMismatch {
                field: "entrypoint",
                signed: e.clone(),
                found: entrypoint,
            });
        }
    }
    if let Some(e) = &spec.env {
        if *e != env {
            return Err(BundleError::ConfigMismatch {
                field: "env",
                signed: e.clone(),
                found: env,
            });
        }
    }
    if entrypoint.is_empty() {
        return Err(BundleError::Predicate(
            "the image config has no Entrypoint or Cmd".into(),
        ));
    }
    let predicate = TrainerPredicate {
        publisher: spec.publisher.clone(),
        trainer: crate::statement::TrainerId {
            name: spec.name.clone(),
            version: spec.version.clone(),
        },
        entrypoint,
        env,
        outputs: spec.outputs.clone(),
        resources: spec.resources.clone(),
        requested_fields: spec.requested_fields.clone(),
        audit: spec.audit.clone(),
    };
    predicate.check_names()?;
    let statement = Statement::new(manifest_digest, &predicate)?;
    let body = serde_json::to_vec(&statement)
        .map_err(|e| BundleError::Predicate(format!("cannot serialise the statement: {e}")))?;
    let envelope = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &body, key);
    crate::oci::write_json(&out.join(ENVELOPE_FILE), &envelope)?;
    tracing::info!(manifest = %manifest_digest, trainer = %spec.name, "bundle signed");
    Ok(manifest_digest)
}

/// A bundle whose signature, trust decision and every blob digest were checked. Only
/// [`verify_bundle`] makes one (**I5**): the fields are private and there is no constructor,
/// `Default` or `Deserialize`.
///
/// ```compile_fail
/// fn forge(manifest: rapha_core::Digest) -> rapha_bundle::VerifiedBundle {
///     rapha_bundle::VerifiedBundle { manifest_digest: manifest }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    dir: PathBuf,
    publisher: String,
    keyid: String,
    manifest_digest: Digest,
    predicate: TrainerPredicate,
    manifest: Manifest,
    config: ImageConfig,
    limits: Limits,
}

/// A rootfs unpacked from a verified bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedRootfs {
    /// The rootfs directory.
    pub path: PathBuf,
    /// Tar entries processed over all layers.
    pub entries: u64,
    /// Uncompressed layer bytes.
    pub bytes: u64,
    /// Entries whose setuid or setgid bit was cleared.
    pub setuid_cleared: u64,
}

/// Checks the bundle at `dir` against the trust store, now.
///
/// # Errors
/// See [`verify_bundle_at`].
pub fn verify_bundle(dir: &Path, store: &TrustStore) -> Result<VerifiedBundle> {
    verify_bundle_at(dir, store, OffsetDateTime::now_utc(), &Limits::default())
}

/// [`verify_bundle`], stopped with [`BundleError::Cancelled`] as soon as `cancel` is set (it
/// is checked between blocks of every blob hashed): for a verification that serves a request
/// which may go away, such as an upload whose time runs out.
///
/// # Errors
/// See [`verify_bundle_at`]; [`BundleError::Cancelled`].
pub fn verify_bundle_cancellable(
    dir: &Path,
    store: &TrustStore,
    cancel: &Cancel,
) -> Result<VerifiedBundle> {
    verify(
        dir,
        store,
        OffsetDateTime::now_utc(),
        &Limits::default(),
        Some(cancel),
    )
}

/// Checks the bundle at `dir` against the trust store at time `now`:
///
/// 1. the envelope exists and parses, carries at most [`MAX_SIGNATURES`] signatures, and one
///    of them verifies over the PAE under the trusted key its keyid names;
/// 2. the payload type is in-toto, the statement and predicate parse, and the names the
///    predicate gives (trainer, version, outputs, requested fields) are plain text;
/// 3. the key is neither revoked nor expired, may sign this trainer, and its name is the
///    predicate's publisher;
/// 4. the index names exactly the signed manifest, which lists at most
///    [`crate::oci::MAX_LAYERS`] layers, none twice; manifest, config and every layer hash to
///    their descriptors; the config's entrypoint and env are the signed ones.
///
/// What a verification costs is bounded by the bundle's bytes: each blob is hashed once, and
/// each of at most [`MAX_SIGNATURES`] signatures is checked against one key.
///
/// # Errors
/// One [`BundleError`] variant per refusal (see the variants' docs).
pub fn verify_bundle_at(
    dir: &Path,
    store: &TrustStore,
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<VerifiedBundle> {
    verify(dir, store, now, limits, None)
}

fn verify(
    dir: &Path,
    store: &TrustStore,
    now: OffsetDateTime,
    limits: &Limits,
    cancel: Option<&Cancel>,
) -> Result<VerifiedBundle> {
    let env_path = dir.join(ENVELOPE_FILE);
    if !env_path.exists() {
        return Err(BundleError::Unsigned(dir.to_owned()));
    }
    let envelope = Envelope::parse(&read_capped(&env_path, MAX_ENVELOPE_BYTES)?)?;
    let (signer, body) = check_signatures(&envelope, store)?;
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(BundleError::UnsupportedPayloadType(envelope.payload_type));
    }
    let (signed_manifest, predicate) = Statement::parse_trainer(&body)?;

    if signer.revoked {
        return Err(BundleError::KeyRevoked {
            publisher: signer.name.clone(),
        });
    }
    if let Some(exp) = signer.expires {
        if now >= exp {
            return Err(BundleError::KeyExpired {
                publisher: signer.name.clone(),
                expired_at: crate::trust::fmt_time(exp),
            });
        }
    }
    if !signer.allows(&predicate.trainer.name) {
        return Err(BundleError::TrainerNotAllowed {
            publisher: signer.name.clone(),
            trainer: predicate.trainer.name.clone(),
            allowed: signer.trainers.clone(),
        });
    }
    if predicate.publisher != signer.name {
        return Err(BundleError::PublisherMismatch {
            claimed: predicate.publisher.clone(),
            signer: signer.name.clone(),
        });
    }

    let layout = OciLayout::open(dir)?;
    let desc = layout.manifest_descriptor()?;
    let found = desc.sha256()?;
    if found != signed_manifest {
        return Err(BundleError::SubjectMismatch {
            signed: signed_manifest,
            found,
        });
    }
    let (_, manifest, config) = layout.image()?;
    for layer in &manifest.layers {
        layout.verify_blob_cancellable(layer, limits.max_blob_bytes, cancel)?;
    }
    if config.argv() != predicate.entrypoint {
        return Err(BundleError::ConfigMismatch {
            field: "entrypoint",
            signed: predicate.entrypoint.clone(),
            found: config.argv(),
        });
    }
    if config.env() != predicate.env {
        return Err(BundleError::ConfigMismatch {
            field: "env",
            signed: predicate.env.clone(),
            found: config.env(),
        });
    }
    tracing::info!(publisher = %signer.name, trainer = %predicate.trainer.name,
        manifest = %signed_manifest, "bundle verified");
    Ok(VerifiedBundle {
        dir: dir.to_owned(),
        publisher: signer.name.clone(),
        keyid: signer.keyid(),
        manifest_digest: signed_manifest,
        predicate,
        manifest,
        config,
        limits: limits.clone(),
    })
}

/// Finds the trusted key whose signature verifies. Each signature is checked against the one
/// trusted key its keyid names, never against the others: a signature with no keyid, or one
/// naming no trusted key, is not checked at all. With at most [`MAX_SIGNATURES`] signatures,
/// that is at most as many checks, each over one PAE built once.
fn check_signatures<'s>(
    envelope: &Envelope,
    store: &'s TrustStore,
) -> Result<(&'s TrustedPublisher, Vec<u8>)> {
    let sigs = &envelope.signatures;
    if sigs.is_empty() {
        return Err(BundleError::NoSignatures);
    }
    if sigs.len() > MAX_SIGNATURES {
        return Err(BundleError::TooManySignatures {
            signatures: sigs.len(),
            limit: MAX_SIGNATURES,
        });
    }
    if sigs.iter().all(|s| s.keyid.is_empty()) {
        return Err(BundleError::MissingKeyId);
    }
    let named: Vec<(&Signature, &TrustedPublisher)> = sigs
        .iter()
        .filter_map(|s| store.by_keyid(&s.keyid).map(|p| (s, p)))
        .collect();
    let Some(&(_, claimed)) = named.first() else {
        return Err(BundleError::UnknownKey {
            keyids: sigs.iter().map(|s| s.keyid.clone()).collect(),
        });
    };
    let body = envelope.payload_bytes()?;
    let signed = pae(envelope.payload_type.as_bytes(), &body);
    // Prefer a usable key (not revoked) when several verify.
    let mut verified: Vec<&TrustedPublisher> = Vec::new();
    for (sig, p) in named {
        let ok = decode_b64(&sig.sig).is_some_and(|raw| p.key.verify(&signed, &raw));
        if ok && !verified.iter().any(|q| q.name == p.name) {
            verified.push(p);
        }
    }
    match verified.iter().find(|p| !p.revoked).or(verified.first()) {
        Some(p) => Ok((p, body)),
        None => Err(BundleError::BadSignature {
            publisher: claimed.name.clone(),
        }),
    }
}

impl VerifiedBundle {
    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The publisher, as named in the hospital's trust store.
    pub fn publisher(&self) -> &str {
        &self.publisher
    }
    /// The key id that signed.
    pub fn keyid(&self) -> &str {
        &self.keyid
    }
    /// Trainer name.
    pub fn trainer_name(&self) -> &str {
        &self.predicate.trainer.name
    }
    /// Trainer version.
    pub fn trainer_version(&self) -> &str {
        &self.predicate.trainer.version
    }
    /// Digest of the image manifest that was signed (goes into the receipt).
    pub fn manifest_digest(&self) -> Digest {
        self.manifest_digest
    }
    /// The whole signed predicate.
    pub fn predicate(&self) -> &TrainerPredicate {
        &self.predicate
    }
    /// argv of the trainer (the image config's Entrypoint + Cmd, equal to the signed one).
    pub fn entrypoint(&self) -> &[String] {
        &self.predicate.entrypoint
    }
    /// Environment `K=V` (the image config's Env, equal to the signed one).
    pub fn env(&self) -> &[String] {
        &self.predicate.env
    }
    /// Working directory from the image config, `/` if unset.
    pub fn working_dir(&self) -> &str {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.as_deref())
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
    }
    /// Declared outputs.
    pub fn outputs(&self) -> &[OutputDecl] {
        &self.predicate.outputs
    }
    /// Resource needs.
    pub fn resources(&self) -> &ResourceLimits {
        &self.predicate.resources
    }
    /// Metadata fields requested beyond the default allow-list.
    pub fn requested_fields(&self) -> &[String] {
        &self.predicate.requested_fields
    }

    /// Unpacks the image's layers into `dest`, which must not exist or be empty. Every layer
    /// is hashed again while it streams (the bundle may have changed on disk since
    /// verification) and its uncompressed digest compared with the config's diff_id. On any
    /// error `dest` is removed, so no partial rootfs is left to run.
    ///
    /// # Errors
    /// Every unpacking refusal (see [`crate::unpack`]), digest errors.
    pub fn unpack_rootfs(&self, dest: &Path) -> Result<UnpackedRootfs> {
        fresh_dir(dest)?;
        let result = self.unpack_into(dest);
        if result.is_err() {
            if let Err(e) = std::fs::remove_dir_all(dest) {
                tracing::warn!(path = %dest.display(), error = %e, "cannot remove a partial rootfs");
            }
        }
        result
    }

    fn unpack_into(&self, dest: &Path) -> Result<UnpackedRootfs> {
        let layout = OciLayout::open(&self.dir)?;
        let mut st = UnpackState {
            root: dest.to_owned(),
            limits: self.limits.clone(),
            total_bytes: 0,
            entries: 0,
            setuid_cleared: 0,
        };
        stream_layers(
            &layout,
            &self.manifest,
            &self.config,
            &mut st,
            &mut |r, i, st| unpack_tar_stream(r, i, st),
        )?;
        Ok(UnpackedRootfs {
            path: dest.to_owned(),
            entries: st.entries,
            bytes: st.total_bytes,
            setuid_cleared: st.setuid_cleared,
        })
    }

    /// What the verified image's layers hold (see [`survey_image`]), for the reviewer.
    ///
    /// # Errors
    /// As [`survey_image`].
    pub fn contents(&self) -> Result<ImageContents> {
        survey_image(&self.dir, &self.limits)
    }
}

type LayerFn<'f> =
    dyn FnMut(&mut dyn std::io::Read, usize, &mut UnpackState) -> Result<Digest> + 'f;

/// Streams every layer of the image through `f`, each blob hashed again on the way and each
/// uncompressed stream's digest compared with the config's diff_id.
fn stream_layers(
    layout: &OciLayout,
    manifest: &Manifest,
    config: &ImageConfig,
    st: &mut UnpackState,
    f: &mut LayerFn<'_>,
) -> Result<()> {
    for (i, layer) in manifest.layers.iter().enumerate() {
        let expected = crate::oci::parse_oci_digest(&config.rootfs.diff_ids[i])?;
        let diff_id = match stream_layer(layout, layer, i, st, f) {
            Ok(d) => d,
            Err(e) => {
                // A corrupt blob shows up as a decompression or tar error first; report
                // the cause that matters.
                layout.verify_blob(layer, st.limits.max_blob_bytes)?;
                return Err(e);
            }
        };
        if diff_id != expected {
            return Err(BundleError::DiffIdMismatch {
                index: i,
                expected: expected.to_oci(),
                actual: diff_id,
            });
        }
    }
    Ok(())
}

/// Counts what the layers of the image at `dir` (a bundle or an OCI layout) hold, from their
/// tar headers, writing nothing: files, directories, symlinks (absolute ones apart), hard
/// links, whiteouts, setuid/setgid entries (which unpacking clears) and device nodes or FIFOs
/// (for which it refuses the image). Every blob is hashed against its digest and every layer
/// against its diff_id on the way, under `limits`; the signature is NOT checked.
///
/// # Errors
/// Layout, digest and diff_id errors, [`BundleError::LayerFormat`], the size limits.
pub fn survey_image(dir: &Path, limits: &Limits) -> Result<ImageContents> {
    let layout = OciLayout::open(dir)?;
    let (_, manifest, config) = layout.image()?;
    let mut st = UnpackState {
        root: dir.to_owned(),
        limits: limits.clone(),
        total_bytes: 0,
        entries: 0,
        setuid_cleared: 0,
    };
    let mut out = ImageContents::default();
    stream_layers(&layout, &manifest, &config, &mut st, &mut |r, i, st| {
        survey_tar_stream(r, i, st, &mut out)
    })?;
    out.layers = manifest.layers.len();
    out.bytes = st.total_bytes;
    Ok(out)
}

fn stream_layer(
    layout: &OciLayout,
    desc: &Descriptor,
    index: usize,
    st: &mut UnpackState,
    f: &mut LayerFn<'_>,
) -> Result<Digest> {
    let file = BufReader::with_capacity(crate::oci::BUF_BYTES, layout.open_blob(desc)?);
    let mut vr = VerifyingReader::new(file, desc)?;
    let diff_id = match Compression::from_media_type(&desc.media_type)? {
        Compression::None => f(&mut vr, index, st)?,
        Compression::Gzip => {
            let mut dec = flate2::read::MultiGzDecoder::new(vr);
            let d = f(&mut dec, index, st)?;
            vr = dec.into_inner();
            d
        }
        Compression::Zstd => {
            let mut dec =
                zstd::stream::read::Decoder::new(vr).map_err(|e| BundleError::LayerFormat {
                    index,
                    reason: e.to_string(),
                })?;
            let d = f(&mut dec, index, st)?;
            vr = dec.finish().into_inner();
            d
        }
    };
    vr.finish()?;
    Ok(diff_id)
}

/// What `rapha bundle inspect` shows: the bundle's claims, NOT verified.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub verified: bool,
    pub signed: bool,
    pub manifest_digest: Option<String>,
    pub layers: Vec<Descriptor>,
    pub keyids: Vec<String>,
    pub payload_type: Option<String>,
    pub signed_manifest: Option<String>,
    pub predicate: Option<TrainerPredicate>,
}

/// Reads a bundle's claims without trusting them (for display only).
///
/// # Errors
/// Layout and parse errors.
pub fn inspect_bundle(dir: &Path) -> Result<Inspection> {
    let layout = OciLayout::open(dir)?;
    let desc = layout.manifest_descriptor()?;
    let manifest: Manifest = crate::oci::parse_json(
        "image manifest",
        &layout.read_blob(&desc, crate::oci::MAX_JSON_BYTES)?,
    )?;
    let env_path = dir.join(ENVELOPE_FILE);
    let mut out = Inspection {
        verified: false,
        signed: false,
        manifest_digest: Some(desc.digest.clone()),
        layers: manifest.layers,
        keyids: vec![],
        payload_type: None,
        signed_manifest: None,
        predicate: None,
    };
    if env_path.exists() {
        let envelope = Envelope::parse(&read_capped(&env_path, MAX_ENVELOPE_BYTES)?)?;
        out.signed = !envelope.signatures.is_empty();
        out.keyids = envelope
            .signatures
            .iter()
            .map(|s| s.keyid.clone())
            .collect();
        out.payload_type = Some(envelope.payload_type.clone());
        if let Ok((d, p)) = Statement::parse_trainer(&envelope.payload_bytes()?) {
            out.signed_manifest = Some(d.to_oci());
            out.predicate = Some(p);
        }
    }
    Ok(out)
}
