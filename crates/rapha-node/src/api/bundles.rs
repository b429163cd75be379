//! Uploaded bundles (`POST /v1/bundles`), stored by publisher and manifest digest.
//!
//! ```text
//! <state dir>/bundles/
//!   .upload-<random>/archive.tar, bundle/    one upload in progress (removed when it ends)
//!   <publisher>/sha256-<hex>/                a verified bundle, moved in by one rename
//! ```
//!
//! An upload is unpacked strictly ([`rapha_bundle::unpack_bundle_archive`]), verified against
//! the trust store as it is on disk now, and only then renamed into place, so the store holds
//! only bundles that verified. The pipeline verifies the job's own copy again (I5); the store
//! just spares the AI company from putting files on the node. A publisher's bundles live in its
//! own directory, so no publisher can replace or shadow another's.
//!
//! An upload under way holds a [`Reservation`] of the publisher's quota for the bytes it may
//! stage (its declared length, or all that is left), so that uploads in parallel cannot stage
//! more than the quota; and a [`Cancel`] its request drops when its time runs out, which stops
//! the unpacking or the verification and removes the staging directory.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rapha_bundle::{
    verify_bundle_cancellable, ArchiveLimits, BundleError, Cancel, TrustStore, VerifiedBundle,
    ENVELOPE_FILE,
};
use rapha_core::Digest;

/// What a stored upload was.
#[derive(Debug)]
pub struct Stored {
    pub manifest: Digest,
    pub publisher: String,
    pub trainer: String,
    pub trainer_version: String,
    /// False when the same bundle (same envelope) was already stored.
    pub created: bool,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    #[error("{0}")]
    Archive(rapha_bundle::BundleError),
    #[error("{0}")]
    Refused(rapha_bundle::BundleError),
    #[error("the bundle is signed by publisher {signer:?}; this token speaks for {token:?}")]
    OtherPublisher { signer: String, token: String },
    #[error("bundle store: {0}")]
    Io(String),
    #[error("the upload's time ran out or its client went away; nothing was stored")]
    Cancelled,
}

/// Why an upload may not start: the publisher's quota is used up.
#[derive(Debug, thiserror::Error)]
#[error(
    "this publisher's stored bundles hold {stored} bytes and its uploads under way {staging} \
     bytes of its quota of {quota}; nothing was stored"
)]
pub struct QuotaFull {
    pub stored: u64,
    pub staging: u64,
    pub quota: u64,
}

/// Bytes of a publisher's quota held by one upload under way, given back when it is dropped
/// (after its staging directory is gone).
#[derive(Debug)]
pub struct Reservation {
    store: Arc<BundleStore>,
    publisher: String,
    bytes: u64,
}

impl Reservation {
    /// The bytes held: the most this upload may stage.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut staging = self
            .store
            .staging_bytes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = staging.get_mut(&self.publisher) {
            *held = held.saturating_sub(self.bytes);
            if *held == 0 {
                staging.remove(&self.publisher);
            }
        }
    }
}

/// A reader that fails once `cancel` is set: the archive being unpacked, for an upload whose
/// time may run out.
struct Cancellable<'a, R> {
    inner: R,
    cancel: &'a Cancel,
}

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other("the upload was cancelled"));
        }
        self.inner.read(buf)
    }
}

/// The node's store of uploaded bundles.
#[derive(Debug)]
pub struct BundleStore {
    root: PathBuf,
    trust_dir: PathBuf,
    /// Serialises the final rename-into-place of uploads.
    commit: Mutex<()>,
    /// Bytes reserved by each publisher's uploads under way ([`Reservation`]).
    staging_bytes: Mutex<HashMap<String, u64>>,
}

/// An upload's working directory, removed however the upload ends.
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// Where the body is streamed to.
    pub fn archive(&self) -> PathBuf {
        self.dir.join("archive.tar")
    }
    fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.dir.display(), error = %e, "cannot remove an upload's staging directory");
            }
        }
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> UploadError {
    let path = path.to_owned();
    move |e| UploadError::Io(format!("{what} {}: {e}", path.display()))
}

fn random_hex() -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    hex::encode(b)
}

impl BundleStore {
    /// The store under `root`, verifying against the trust store in `trust_dir`. Leftovers of
    /// uploads a crash interrupted are removed.
    pub fn new(root: PathBuf, trust_dir: PathBuf) -> Self {
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".upload-") || name.starts_with(".old-") {
                    if let Err(err) = std::fs::remove_dir_all(e.path()) {
                        tracing::warn!(path = %e.path().display(), error = %err, "cannot remove an interrupted upload");
                    }
                }
            }
        }
        Self {
            root,
            trust_dir,
            commit: Mutex::new(()),
            staging_bytes: Mutex::default(),
        }
    }

    /// The trust store directory uploads are verified against.
    pub fn trust_dir(&self) -> &Path {
        &self.trust_dir
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A fresh staging directory for one upload.
    ///
    /// # Errors
    /// [`UploadError::Io`].
    pub fn staging(&self) -> Result<Staging, UploadError> {
        std::fs::create_dir_all(&self.root).map_err(io_err("cannot create", &self.root))?;
        let dir = self.root.join(format!(".upload-{}", random_hex()));
        std::fs::create_dir(&dir).map_err(io_err("cannot create", &dir))?;
        Ok(Staging { dir })
    }

    /// Where the bundle `manifest` of `publisher` is stored, if it is.
    pub fn find(&self, publisher: &str, manifest: &Digest) -> Option<PathBuf> {
        rapha_bundle::trust::check_name(publisher).ok()?;
        let dir = self.bundle_dir(publisher, manifest);
        dir.join(ENVELOPE_FILE).is_file().then_some(dir)
    }

    /// Bytes of every bundle `publisher` has stored (its quota's use).
    pub fn publisher_bytes(&self, publisher: &str) -> u64 {
        if rapha_bundle::trust::check_name(publisher).is_err() {
            return 0;
        }
        tree_bytes(&self.root.join(publisher))
    }

    /// Reserves quota for one upload of `publisher`: `declared` bytes, or when the length is
    /// not declared as much of what is left of `quota` (stored bundles and other uploads under
    /// way counted) as an upload may carry (`upload_limit`).
    ///
    /// # Errors
    /// [`QuotaFull`] when nothing is left, or less than `declared`.
    pub fn reserve(
        self: &Arc<Self>,
        publisher: &str,
        declared: Option<u64>,
        upload_limit: u64,
        quota: u64,
    ) -> Result<Reservation, QuotaFull> {
        let mut staging = self
            .staging_bytes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stored = self.publisher_bytes(publisher);
        let held = staging.get(publisher).copied().unwrap_or(0);
        let left = quota.saturating_sub(stored).saturating_sub(held);
        let bytes = declared.unwrap_or(left.min(upload_limit));
        if left == 0 || bytes > left {
            return Err(QuotaFull {
                stored,
                staging: held,
                quota,
            });
        }
        *staging.entry(publisher.to_owned()).or_insert(0) += bytes;
        Ok(Reservation {
            store: Arc::clone(self),
            publisher: publisher.to_owned(),
            bytes,
        })
    }

    fn bundle_dir(&self, publisher: &str, manifest: &Digest) -> PathBuf {
        self.root
            .join(publisher)
            .join(format!("sha256-{}", manifest.to_hex()))
    }

    /// Unpacks the archive the body was streamed to, verifies it, checks it is signed by
    /// `token_publisher` (when the caller is a publisher) and stores it; stopped, storing
    /// nothing, as soon as `cancel` is set.
    ///
    /// # Errors
    /// [`UploadError::Archive`] for an archive that breaks the format's rules,
    /// [`UploadError::Refused`] for a bundle that does not verify,
    /// [`UploadError::OtherPublisher`], [`UploadError::Io`], [`UploadError::Cancelled`].
    pub fn accept(
        &self,
        staging: &Staging,
        limits: &ArchiveLimits,
        token_publisher: Option<&str>,
        cancel: &Cancel,
    ) -> Result<Stored, UploadError> {
        let stopped = |e: BundleError| {
            if cancel.is_cancelled() || matches!(e, BundleError::Cancelled) {
                UploadError::Cancelled
            } else {
                e.into()
            }
        };
        let archive = staging.archive();
        let bundle = staging.bundle();
        {
            let file = std::fs::File::open(&archive).map_err(io_err("cannot open", &archive))?;
            let mut input = Cancellable {
                inner: std::io::BufReader::new(file),
                cancel,
            };
            rapha_bundle::unpack_bundle_archive(&mut input, &bundle, limits).map_err(|e| {
                match stopped(e) {
                    UploadError::Refused(e) => UploadError::Archive(e),
                    other => other,
                }
            })?;
        }
        std::fs::remove_file(&archive).map_err(io_err("cannot remove", &archive))?;
        let trust = TrustStore::open(&self.trust_dir).map_err(UploadError::Refused)?;
        let vb = verify_bundle_cancellable(&bundle, &trust, cancel).map_err(stopped)?;
        if let Some(token) = token_publisher {
            if token != vb.publisher() {
                return Err(UploadError::OtherPublisher {
                    signer: vb.publisher().to_owned(),
                    token: token.to_owned(),
                });
            }
        }
        let created = self.commit(&bundle, &vb, cancel)?;
        Ok(Stored {
            manifest: vb.manifest_digest(),
            publisher: vb.publisher().to_owned(),
            trainer: vb.trainer_name().to_owned(),
            trainer_version: vb.trainer_version().to_owned(),
            created,
        })
    }

    /// Moves the verified bundle into place; false if the same bundle was already there.
    fn commit(
        &self,
        bundle: &Path,
        vb: &VerifiedBundle,
        cancel: &Cancel,
    ) -> Result<bool, UploadError> {
        // A trust-store name is a safe path component; checked again since it becomes one.
        rapha_bundle::trust::check_name(vb.publisher()).map_err(UploadError::Refused)?;
        let target = self.bundle_dir(vb.publisher(), &vb.manifest_digest());
        let parent = self.root.join(vb.publisher());
        let _guard = self
            .commit
            .lock()
            .map_err(|_| UploadError::Io("bundle store lock poisoned".into()))?;
        // An upload whose time ran out is answered 503: it must not be stored after all.
        if cancel.is_cancelled() {
            return Err(UploadError::Cancelled);
        }
        std::fs::create_dir_all(&parent).map_err(io_err("cannot create", &parent))?;
        sync_dir(&self.root)?;
        if target.exists() {
            let old = std::fs::read(target.join(ENVELOPE_FILE)).ok();
            let new =
                std::fs::read(bundle.join(ENVELOPE_FILE)).map_err(io_err("cannot read", bundle))?;
            if old.as_deref() == Some(new.as_slice()) {
                return Ok(false);
            }
            // The same image re-signed by the same publisher: the new signature replaces the
            // old one. Jobs already submitted keep their own copy.
            let aside = self.root.join(format!(".old-{}", random_hex()));
            std::fs::rename(&target, &aside).map_err(io_err("cannot move aside", &target))?;
            std::fs::rename(bundle, &target).map_err(io_err("cannot store", &target))?;
            sync_dir(&parent)?;
            if let Err(e) = std::fs::remove_dir_all(&aside) {
                tracing::warn!(path = %aside.display(), error = %e, "cannot remove a replaced bundle");
            }
            return Ok(true);
        }
        std::fs::rename(bundle, &target).map_err(io_err("cannot store", &target))?;
        sync_dir(&parent)?;
        Ok(true)
    }
}

impl From<BundleError> for UploadError {
    fn from(e: BundleError) -> Self {
        UploadError::Refused(e)
    }
}

/// Bytes of the regular files under `dir` (links not followed).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), UploadError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync", dir))
}
