use std::path::PathBuf;

use rapha_core::Digest;

/// Everything a bundle can be refused for. Each refusal has its own variant so that callers
/// (and tests) can tell an attack from a mistake; messages say what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    // ---- files ---------------------------------------------------------------------------
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is larger than the {limit}-byte limit; the bundle is refused")]
    TooLarge { what: String, limit: u64 },
    #[error("output path {0} already exists and is not an empty directory; choose a new path")]
    OutputExists(PathBuf),

    // ---- keys ----------------------------------------------------------------------------
    // A deliberate duplicate (issue 23): rapha-core, rapha-bundle and rapha-receipt each have
    // this variant for the key file they read (the publisher's signing key here); the check is one
    // (`rapha_core::ModeError`), the variants stay in each crate's error type so that its
    // callers match their own key's refusal and its text names that key.
    #[error(
        "private key file {path} has mode {mode:o}: it must not be readable by group or others; \
         run `chmod 600 {path}`"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("key file {path} is not a Rapha key: {reason}")]
    KeyFormat { path: PathBuf, reason: String },
    #[error("unsupported key algorithm {0:?}; this version supports ed25519")]
    UnsupportedAlgorithm(String),

    // ---- trust store ---------------------------------------------------------------------
    #[error("invalid publisher name {0:?}: use 1-64 characters from a-z, 0-9, '.', '_' and '-'")]
    InvalidName(String),
    #[error("trust store entry {path} is malformed: {reason}")]
    TrustEntry { path: PathBuf, reason: String },
    #[error("publisher {0:?} is already in the trust store; remove it first")]
    PublisherExists(String),
    #[error("publisher {0:?} is not in the trust store")]
    PublisherNotFound(String),
    #[error("the same key is trusted under two names, {first:?} and {second:?}; remove one")]
    DuplicateKey { first: String, second: String },
    #[error("invalid expiry {0:?}: expected an RFC 3339 time such as 2027-01-31T00:00:00Z")]
    InvalidExpiry(String),

    // ---- envelope and signature (I5) -----------------------------------------------------
    #[error("bundle {0} is unsigned: it has no signature.dsse.json; only signed trainers run")]
    Unsigned(PathBuf),
    #[error("the DSSE envelope carries no signatures; only signed trainers run")]
    NoSignatures,
    #[error("the DSSE envelope is malformed: {0}")]
    EnvelopeMalformed(String),
    #[error(
        "the DSSE envelope carries {signatures} signatures; a bundle may carry at most {limit} \
         (sign it once with `rapha bundle sign`)"
    )]
    TooManySignatures { signatures: usize, limit: usize },
    #[error(
        "no signature of the DSSE envelope names its key (empty keyid); each signature must \
         name the key id of the key that made it, as `rapha bundle sign` writes it"
    )]
    MissingKeyId,
    #[error(
        "no signature names a key in the trust store (key ids {keyids:?}); \
         add the publisher with `rapha-node trust add` if you trust it"
    )]
    UnknownKey { keyids: Vec<String> },
    #[error(
        "the signature attributed to trusted publisher {publisher:?} does not verify: the \
         envelope was altered after signing (payload or payloadType)"
    )]
    BadSignature { publisher: String },
    #[error("payloadType {0:?} is not supported; expected application/vnd.in-toto+json")]
    UnsupportedPayloadType(String),
    #[error("the signed statement is malformed: {0}")]
    StatementMalformed(String),
    #[error("predicate type {0:?} is not supported; expected https://rapha.dev/trainer/v1")]
    UnsupportedPredicateType(String),

    // ---- trust decisions -----------------------------------------------------------------
    #[error("publisher {publisher:?}'s key was revoked; bundles it signed no longer run")]
    KeyRevoked { publisher: String },
    #[error("publisher {publisher:?}'s key expired at {expired_at}; renew it with `rapha-node trust add`")]
    KeyExpired {
        publisher: String,
        expired_at: String,
    },
    #[error(
        "publisher {publisher:?} is not allowed to sign trainer {trainer:?}; \
         the trust store allows {allowed:?}"
    )]
    TrainerNotAllowed {
        publisher: String,
        trainer: String,
        allowed: Vec<String>,
    },
    #[error("the predicate names publisher {claimed:?} but was signed by {signer:?}'s key")]
    PublisherMismatch { claimed: String, signer: String },

    // ---- OCI layout ----------------------------------------------------------------------
    #[error("not an OCI image layout: {0}")]
    Layout(String),
    #[error("{what} is not valid JSON for its type: {reason}")]
    OciJson { what: String, reason: String },
    #[error("unsupported media type {media_type:?} for {what}")]
    UnknownMediaType { what: String, media_type: String },
    #[error("blob {digest} referenced by the image is missing from the bundle")]
    MissingBlob { digest: String },
    #[error(
        "blob {expected} does not match its digest (content hashes to {actual}); \
         the image was altered after signing"
    )]
    BlobDigestMismatch { expected: String, actual: Digest },
    #[error("blob {digest} is {actual} bytes but its descriptor says {expected}")]
    BlobSizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("invalid digest {0:?}: only sha256 digests are accepted")]
    InvalidDigest(String),
    #[error("the image index lists {0} manifests; a bundle holds exactly one")]
    AmbiguousIndex(usize),
    #[error(
        "the image manifest {found} is not the one that was signed ({signed}); \
         the manifest was swapped"
    )]
    SubjectMismatch { signed: Digest, found: Digest },
    #[error(
        "the image manifest lists {layers} layers; a bundle may have at most {limit} \
         (squash the image's layers)"
    )]
    TooManyLayers { layers: usize, limit: usize },
    #[error(
        "the image manifest lists layer {digest} twice (layers {first} and {second}); each \
         layer blob may appear once (squash the image's layers)"
    )]
    DuplicateLayer {
        digest: String,
        first: usize,
        second: usize,
    },
    #[error("the image config has {diff_ids} diff_ids for {layers} layers")]
    LayerCountMismatch { layers: usize, diff_ids: usize },
    #[error("layer {index}: the uncompressed content hashes to {actual}, not the config's diff_id {expected}")]
    DiffIdMismatch {
        index: usize,
        expected: String,
        actual: Digest,
    },
    #[error("the signed {field} {signed:?} differs from the image config's {found:?}")]
    ConfigMismatch {
        field: &'static str,
        signed: Vec<String>,
        found: Vec<String>,
    },
    #[error("the trainer predicate is invalid: {0}")]
    Predicate(String),
    #[error("the signed {field} {value:?} is refused: use {allowed}")]
    UnsafeName {
        field: &'static str,
        value: String,
        allowed: &'static str,
    },

    #[error(
        "verification of the bundle was stopped before it finished (its upload timed out or \
         was abandoned); nothing was stored"
    )]
    Cancelled,

    // ---- unpacking -----------------------------------------------------------------------
    #[error("layer entry {0:?} is an absolute path; refused")]
    AbsolutePath(String),
    #[error("layer entry {0:?} contains '..'; path traversal refused")]
    PathTraversal(String),
    #[error("layer entry {0:?} has an empty or invalid path")]
    InvalidPath(String),
    #[error("layer entry {path:?} would be written through symlink {through:?}; refused")]
    PathThroughSymlink { path: String, through: String },
    #[error("symlink {path:?} -> {target:?} points outside the rootfs; refused")]
    SymlinkEscape { path: String, target: String },
    #[error(
        "hard link {path:?} -> {target:?} does not name a regular file inside the rootfs; refused"
    )]
    HardLinkEscape { path: String, target: String },
    #[error("layer entry {path:?} is a {kind}; device nodes, FIFOs and sockets are refused")]
    SpecialFile { path: String, kind: &'static str },
    #[error("layer {index} unpacks to more than the {limit}-byte layer limit; refused")]
    LayerTooLarge { index: usize, limit: u64 },
    #[error("the rootfs would exceed the {limit}-byte total limit; refused")]
    RootfsTooLarge { limit: u64 },
    #[error("the image has more than {limit} entries; refused")]
    TooManyEntries { limit: u64 },
    #[error("layer {index} is not a readable tar stream: {reason}")]
    LayerFormat { index: usize, reason: String },
    #[error("rootfs source {path} holds a {kind}; only regular files, directories and symlinks can be packaged")]
    UnsupportedSource { path: PathBuf, kind: &'static str },

    // ---- bundle archive (upload to a node) -----------------------------------------------
    #[error("bundle archive entry {0:?} is an absolute path; refused")]
    ArchiveAbsolutePath(String),
    #[error("bundle archive entry {0:?} contains '..'; path traversal refused")]
    ArchivePathTraversal(String),
    #[error("bundle archive entry {path:?} is refused: {reason}")]
    ArchiveUnexpectedEntry { path: String, reason: &'static str },
    #[error("bundle archive entry {0:?} is a symbolic link; a bundle archive holds only files and directories")]
    ArchiveSymlink(String),
    #[error("bundle archive entry {0:?} is a hard link; a bundle archive holds only files and directories")]
    ArchiveHardLink(String),
    #[error("bundle archive entry {path:?} is a {kind}; refused")]
    ArchiveSpecialFile { path: String, kind: &'static str },
    #[error(
        "bundle archive entry {path:?} has tar type {kind:?} (an extension header or another \
         type); write the archive with `rapha bundle` tools (plain ustar files and directories)"
    )]
    ArchiveUnsupportedType { path: String, kind: char },
    #[error("bundle archive entry {0:?} appears twice; refused")]
    ArchiveDuplicateEntry(String),
    #[error("the bundle archive is malformed: {0}")]
    ArchiveBadHeader(String),
    #[error("the bundle archive ends early (truncated upload?); send the whole archive again")]
    ArchiveTruncated,
    #[error("the bundle archive has data after its end marker; refused")]
    ArchiveTrailingData,
    #[error("the bundle archive has more than {limit} entries; refused")]
    ArchiveTooManyEntries { limit: u64 },
    #[error("bundle archive entry {path:?} is larger than the {limit}-byte file limit; refused")]
    ArchiveFileTooLarge { path: String, limit: u64 },
    #[error("the bundle archive's files add up to more than the {limit}-byte limit; refused")]
    ArchiveTooLarge { limit: u64 },
    #[error("cannot read the bundle archive: {0}")]
    ArchiveRead(String),
}

/// Result with [`BundleError`].
pub type Result<T, E = BundleError> = std::result::Result<T, E>;

impl BundleError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
