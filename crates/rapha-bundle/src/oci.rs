//! OCI image layout (image-spec v1.1): reading with digest checks, copying, importing an
//! `oci-archive` tar, and the JSON documents.
//!
//! Every blob is hashed while it is read and compared with the digest and size of the
//! descriptor that named it; small JSON blobs are read whole, layers stream through a fixed
//! buffer so memory stays flat whatever the image size.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use rapha_core::{Digest, DigestWriter};
use serde::{Deserialize, Serialize};

use crate::error::{BundleError, Result};

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Cap on JSON documents (index, manifest, config): real ones are a few KiB.
pub const MAX_JSON_BYTES: u64 = 4 << 20;
/// Most layers an image may list. Real images have a few dozen at most (overlay file systems
/// stop at about 128); the cap, with no layer blob listed twice, keeps what one verification
/// hashes to the bytes the bundle actually holds.
pub const MAX_LAYERS: usize = 128;
/// The `oci-layout` file's content.
pub const LAYOUT_VERSION: &str = "1.0.0";
/// Read buffer for streaming blobs.
pub(crate) const BUF_BYTES: usize = 1 << 20;

/// Compression of a layer blob, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The layer compression named by `media_type`.
    ///
    /// # Errors
    /// [`BundleError::UnknownMediaType`] for anything but the three OCI layer types.
    pub fn from_media_type(media_type: &str) -> Result<Self> {
        match media_type {
            MEDIA_LAYER_TAR => Ok(Self::None),
            MEDIA_LAYER_GZIP => Ok(Self::Gzip),
            MEDIA_LAYER_ZSTD => Ok(Self::Zstd),
            other => Err(BundleError::UnknownMediaType {
                what: "layer".into(),
                media_type: other.into(),
            }),
        }
    }
}

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    /// The descriptor's digest, which must be `sha256:` and 64 lowercase hex digits.
    ///
    /// # Errors
    /// [`BundleError::InvalidDigest`].
    pub fn sha256(&self) -> Result<Digest> {
        parse_oci_digest(&self.digest)
    }
}

/// Parses `sha256:<64 lowercase hex>`; the strict form keeps one blob one file name.
///
/// # Errors
/// [`BundleError::InvalidDigest`].
pub fn parse_oci_digest(s: &str) -> Result<Digest> {
    let bad = || BundleError::InvalidDigest(s.chars().take(100).collect());
    let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
    if hex.len() != 64 || hex.bytes().any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    hex.parse().map_err(|_| bad())
}

/// `index.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config Rapha uses; other fields are kept out of the way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ExecConfig>,
    pub rootfs: RootFs,
}

/// How the trainer is started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// `rootfs` of an image config: the uncompressed digests of the layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub type_: String,
    pub diff_ids: Vec<String>,
}

impl ImageConfig {
    /// argv: Entrypoint followed by Cmd.
    pub fn argv(&self) -> Vec<String> {
        let c = self.config.clone().unwrap_or_default();
        c.entrypoint
            .unwrap_or_default()
            .into_iter()
            .chain(c.cmd.unwrap_or_default())
            .collect()
    }

    /// Env, `K=V`.
    pub fn env(&self) -> Vec<String> {
        self.config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    }
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| BundleError::OciJson {
        what: what.into(),
        reason: e.to_string(),
    })
}

/// A reader that hashes and counts what passes through and, at the end, checks the result
/// against a descriptor. Reading past the declared size fails at once.
pub(crate) struct VerifyingReader<R> {
    inner: R,
    hasher: DigestWriter,
    count: u64,
    expected: Digest,
    expected_text: String,
    size: u64,
}

impl<R: Read> VerifyingReader<R> {
    pub(crate) fn new(inner: R, desc: &Descriptor) -> Result<Self> {
        Ok(Self {
            inner,
            hasher: DigestWriter::default(),
            count: 0,
            expected: desc.sha256()?,
            expected_text: desc.digest.clone(),
            size: desc.size,
        })
    }

    /// Reads to the end and checks size and digest.
    pub(crate) fn finish(mut self) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(into_bundle_error(e, &self.expected_text)),
            }
        }
        if self.count != self.size {
            return Err(BundleError::BlobSizeMismatch {
                digest: self.expected_text,
                expected: self.size,
                actual: self.count,
            });
        }
        let actual = self.hasher.finish();
        if actual != self.expected {
            return Err(BundleError::BlobDigestMismatch {
                expected: self.expected_text,
                actual,
            });
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.size {
            return Err(std::io::Error::other(BundleError::BlobSizeMismatch {
                digest: self.expected_text.clone(),
                expected: self.size,
                actual: self.count,
            }));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unwraps a [`BundleError`] that travelled through `std::io::Error`.
pub(crate) fn into_bundle_error(e: std::io::Error, path: &str) -> BundleError {
    if e.get_ref().is_some_and(|i| i.is::<BundleError>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(b) = inner.downcast::<BundleError>() {
                return *b;
            }
        }
        return BundleError::Layout(format!("{path}: internal error"));
    }
    BundleError::Io {
        path: PathBuf::from(path),
        source: e,
    }
}

/// An OCI image layout directory.
#[derive(Clone, Debug)]
pub struct OciLayout {
    root: PathBuf,
}

impl OciLayout {
    /// Opens a layout, checking its `oci-layout` marker.
    ///
    /// # Errors
    /// [`BundleError::Layout`] if the marker is missing or names another version.
    pub fn open(root: &Path) -> Result<Self> {
        let marker = root.join("oci-layout");
        let bytes = read_capped(&marker, 4096).map_err(|e| match e {
            BundleError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                BundleError::Layout(format!("{} has no oci-layout file", root.display()))
            }
            other => other,
        })?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Marker {
            image_layout_version: String,
        }
        let m: Marker = parse_json("oci-layout", &bytes)?;
        if m.image_layout_version != LAYOUT_VERSION {
            return Err(BundleError::Layout(format!(
                "imageLayoutVersion {:?} is not {LAYOUT_VERSION}",
                m.image_layout_version
            )));
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the blob with `digest`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.to_hex())
    }

    /// `index.json`.
    ///
    /// # Errors
    /// [`BundleError::Layout`], [`BundleError::OciJson`], [`BundleError::TooLarge`].
    pub fn index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        let bytes = read_capped(&path, MAX_JSON_BYTES)?;
        let index: Index = parse_json("index.json", &bytes)?;
        if index.schema_version != 2 {
            return Err(BundleError::Layout(format!(
                "index.json schemaVersion {} is not 2",
                index.schema_version
            )));
        }
        if let Some(mt) = &index.media_type {
            if mt != MEDIA_INDEX {
                return Err(BundleError::UnknownMediaType {
                    what: "index.json".into(),
                    media_type: mt.clone(),
                });
            }
        }
        Ok(index)
    }

    /// The single image manifest of the index.
    ///
    /// # Errors
    /// [`BundleError::AmbiguousIndex`] unless there is exactly one;
    /// [`BundleError::UnknownMediaType`] if it is not an image manifest (e.g. a nested index).
    pub fn manifest_descriptor(&self) -> Result<Descriptor> {
        let index = self.index()?;
        let [desc] = index.manifests.as_slice() else {
            return Err(BundleError::AmbiguousIndex(index.manifests.len()));
        };
        if desc.media_type != MEDIA_MANIFEST {
            return Err(BundleError::UnknownMediaType {
                what: "manifest".into(),
                media_type: desc.media_type.clone(),
            });
        }
        desc.sha256()?;
        Ok(desc.clone())
    }

    /// Reads a small blob whole, verified against `desc`.
    ///
    /// # Errors
    /// [`BundleError::MissingBlob`], [`BundleError::TooLarge`],
    /// [`BundleError::BlobSizeMismatch`], [`BundleError::BlobDigestMismatch`].
    pub fn read_blob(&self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        if desc.size > limit {
            return Err(BundleError::TooLarge {
                what: format!("blob {}", desc.digest),
                limit,
            });
        }
        let mut r = VerifyingReader::new(self.open_blob(desc)?, desc)?;
        let mut out = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0));
        r.by_ref()
            .read_to_end(&mut out)
            .map_err(|e| into_bundle_error(e, &desc.digest))?;
        r.finish()?;
        Ok(out)
    }

    /// Streams a blob through its digest check without keeping it.
    ///
    /// # Errors
    /// As [`OciLayout::read_blob`].
    pub fn verify_blob(&self, desc: &Descriptor, limit: u64) -> Result<()> {
        self.verify_blob_cancellable(desc, limit, None)
    }

    /// [`OciLayout::verify_blob`], stopped with [`BundleError::Cancelled`] between two blocks
    /// once `cancel` is set.
    ///
    /// # Errors
    /// As [`OciLayout::read_blob`]; [`BundleError::Cancelled`].
    pub fn verify_blob_cancellable(
        &self,
        desc: &Descriptor,
        limit: u64,
        cancel: Option<&crate::Cancel>,
    ) -> Result<()> {
        if desc.size > limit {
            return Err(BundleError::TooLarge {
                what: format!("blob {}", desc.digest),
                limit,
            });
        }
        let expected = desc.sha256()?;
        let path = self.blob_path(&expected);
        let mut file = self.open_blob(desc)?;
        let mut hasher = DigestWriter::default();
        let mut buf = vec![0u8; BUF_BYTES];
        let mut count = 0u64;
        loop {
            if cancel.is_some_and(crate::Cancel::is_cancelled) {
                return Err(BundleError::Cancelled);
            }
            let n = file.read(&mut buf).map_err(BundleError::io(&path))?;
            if n == 0 {
                break;
            }
            count += n as u64;
            if count > desc.size {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if count != desc.size {
            return Err(BundleError::BlobSizeMismatch {
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: count,
            });
        }
        let actual = hasher.finish();
        if actual != expected {
            return Err(BundleError::BlobDigestMismatch {
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Opens a blob for reading (the caller verifies).
    ///
    /// # Errors
    /// [`BundleError::MissingBlob`], [`BundleError::InvalidDigest`].
    pub(crate) fn open_blob(&self, desc: &Descriptor) -> Result<File> {
        let path = self.blob_path(&desc.sha256()?);
        // A blob must be a regular file in the layout, not a symlink to somewhere else.
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => {
                return Err(BundleError::Layout(format!(
                    "blob {} is not a regular file",
                    desc.digest
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BundleError::MissingBlob {
                    digest: desc.digest.clone(),
                })
            }
            Err(e) => return Err(BundleError::Io { path, source: e }),
        }
        File::open(&path).map_err(BundleError::io(&path))
    }

    /// Manifest and config of the single image, both verified.
    ///
    /// # Errors
    /// Any layout, digest or JSON error.
    pub fn image(&self) -> Result<(Descriptor, Manifest, ImageConfig)> {
        let desc = self.manifest_descriptor()?;
        let manifest: Manifest =
            parse_json("image manifest", &self.read_blob(&desc, MAX_JSON_BYTES)?)?;
        if manifest.schema_version != 2 {
            return Err(BundleError::Layout(
                "manifest schemaVersion is not 2".into(),
            ));
        }
        if let Some(mt) = &manifest.media_type {
            if mt != MEDIA_MANIFEST {
                return Err(BundleError::UnknownMediaType {
                    what: "manifest".into(),
                    media_type: mt.clone(),
                });
            }
        }
        if manifest.config.media_type != MEDIA_CONFIG {
            return Err(BundleError::UnknownMediaType {
                what: "image config".into(),
                media_type: manifest.config.media_type.clone(),
            });
        }
        if manifest.layers.len() > MAX_LAYERS {
            return Err(BundleError::TooManyLayers {
                layers: manifest.layers.len(),
                limit: MAX_LAYERS,
            });
        }
        // A blob listed twice would be hashed (and unpacked) once per listing: refused, so the
        // work of verifying is bounded by the bytes in the bundle, not by what the manifest
        // repeats.
        let mut seen: BTreeMap<Digest, usize> = BTreeMap::new();
        for (i, layer) in manifest.layers.iter().enumerate() {
            Compression::from_media_type(&layer.media_type)?;
            if let Some(first) = seen.insert(layer.sha256()?, i) {
                return Err(BundleError::DuplicateLayer {
                    digest: layer.digest.clone(),
                    first,
                    second: i,
                });
            }
        }
        let config: ImageConfig = parse_json(
            "image config",
            &self.read_blob(&manifest.config, MAX_JSON_BYTES)?,
        )?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(BundleError::LayerCountMismatch {
                layers: manifest.layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        for d in &config.rootfs.diff_ids {
            parse_oci_digest(d)?;
        }
        Ok((desc, manifest, config))
    }
}

/// Reads a whole file, refusing one longer than `limit`.
pub(crate) fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>> {
    // A bundle's files must be regular files: a symlink could point at host files, a FIFO
    // would block verification forever.
    let meta = std::fs::symlink_metadata(path).map_err(BundleError::io(path))?;
    if !meta.file_type().is_file() {
        return Err(BundleError::Layout(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let file = File::open(path).map_err(BundleError::io(path))?;
    let mut out = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(BundleError::io(path))?;
    if out.len() as u64 > limit {
        return Err(BundleError::TooLarge {
            what: path.display().to_string(),
            limit,
        });
    }
    Ok(out)
}

/// Makes `out` a fresh directory: it may not exist yet, or be empty.
pub(crate) fn fresh_dir(out: &Path) -> Result<()> {
    match std::fs::read_dir(out) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(BundleError::OutputExists(out.to_owned()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(BundleError::io(out))
        }
        Err(_) => Err(BundleError::OutputExists(out.to_owned())),
    }
}

/// Writes `oci-layout`, an `index.json` naming only `manifest`, and creates `blobs/sha256`.
pub(crate) fn write_layout_skeleton(out: &Path, manifest: &Descriptor) -> Result<()> {
    let blobs = out.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(BundleError::io(&blobs))?;
    let marker = out.join("oci-layout");
    std::fs::write(
        &marker,
        format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}"),
    )
    .map_err(BundleError::io(&marker))?;
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_INDEX.into()),
        manifests: vec![manifest.clone()],
    };
    write_json(&out.join("index.json"), &index)
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| BundleError::Layout(format!("cannot serialise {}: {e}", path.display())))?;
    std::fs::write(path, bytes).map_err(BundleError::io(path))
}

/// Copies one verified blob from `src` into `dst`.
fn copy_blob(src: &OciLayout, dst: &Path, desc: &Descriptor) -> Result<()> {
    let digest = desc.sha256()?;
    let to = dst.join("blobs").join("sha256").join(digest.to_hex());
    if to.exists() {
        return Ok(());
    }
    let tmp = dst
        .join("blobs")
        .join("sha256")
        .join(format!(".tmp-{}", digest.to_hex()));
    let mut r = VerifyingReader::new(src.open_blob(desc)?, desc)?;
    let mut w = File::create(&tmp).map_err(BundleError::io(&tmp))?;
    std::io::copy(&mut r, &mut w).map_err(|e| into_bundle_error(e, &desc.digest))?;
    r.finish()?;
    w.sync_all().map_err(BundleError::io(&tmp))?;
    std::fs::rename(&tmp, &to).map_err(BundleError::io(&to))
}

/// Copies the single image of `src` (manifest, config, layers: each verified) into the fresh
/// layout `out`, with an index naming only that manifest.
///
/// # Errors
/// Any layout or digest error of `src`; I/O errors on `out`.
pub fn copy_image(src: &OciLayout, out: &Path) -> Result<OciLayout> {
    let (desc, manifest, _config) = src.image()?;
    let desc = Descriptor {
        media_type: MEDIA_MANIFEST.into(),
        ..desc
    };
    write_layout_skeleton(out, &desc)?;
    copy_blob(src, out, &desc)?;
    copy_blob(src, out, &manifest.config)?;
    for layer in &manifest.layers {
        copy_blob(src, out, layer)?;
    }
    OciLayout::open(out)
}

/// Unpacks an `oci-archive` tar (a tar of an OCI layout, as `podman save --format oci-archive`
/// writes) into the directory `out`. Only `oci-layout`, `index.json` and
/// `blobs/sha256/<hex>` regular files are taken; each blob must hash to its file name.
///
/// # Errors
/// [`BundleError::Layout`] for a malformed archive, digest errors for a corrupt blob.
pub fn extract_archive(archive: &Path, out: &Path) -> Result<()> {
    let file = File::open(archive).map_err(BundleError::io(archive))?;
    let mut tar = tar::Archive::new(BufReader::new(file));
    let blobs = out.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(BundleError::io(&blobs))?;
    let bad = |m: String| BundleError::Layout(format!("{}: {m}", archive.display()));
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = raw.trim_start_matches("./");
        let kind = entry.header().entry_type();
        if kind.is_dir() || name.is_empty() {
            continue;
        }
        let target = match name {
            "oci-layout" | "index.json" => out.join(name),
            _ => match name.strip_prefix("blobs/sha256/") {
                Some(hex) if parse_oci_digest(&format!("sha256:{hex}")).is_ok() => blobs.join(hex),
                _ => {
                    tracing::debug!(entry = %raw, "oci-archive entry ignored");
                    continue;
                }
            },
        };
        if !kind.is_file() {
            return Err(bad(format!("entry {raw:?} is not a regular file")));
        }
        let mut w = File::create(&target).map_err(BundleError::io(&target))?;
        let mut hasher = DigestWriter::default();
        let mut buf = vec![0u8; BUF_BYTES];
        loop {
            let n = entry.read(&mut buf).map_err(|e| bad(e.to_string()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            w.write_all(&buf[..n]).map_err(BundleError::io(&target))?;
        }
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let actual = hasher.finish();
            if actual.to_hex() != hex {
                return Err(BundleError::BlobDigestMismatch {
                    expected: format!("sha256:{hex}"),
                    actual,
                });
            }
        }
    }
    Ok(())
}
