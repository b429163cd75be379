//! OCI trainer images, DSSE / in-toto signatures and the hospital trust store.
//!
//! Enforces **I5** (only signed code runs): a bundle runs only if its DSSE signature verifies
//! against the hospital's trust store and every image blob matches the digest that was signed.
//!
//! ```text
//!  AI company                                     hospital (rapha-node)
//!  ----------                                     ---------------------
//!  rootfs dir --build--> OCI layout               TrustStore (DIR/<publisher>.toml)
//!  trainer.toml + key --sign--> BUNDLE/ ---copy---> verify_bundle(BUNDLE, store)
//!     in-toto Statement v1                           1 DSSE signature over PAE, trusted key
//!       subject = sha256(manifest)                   2 payloadType, statement, predicate
//!       predicate = trainer/v1                       3 revoked? expired? trainer allowed?
//!     DSSE envelope (Ed25519)                        4 index -> signed manifest -> blobs
//!                                                    => VerifiedBundle (only way to get one)
//!                                                       .unpack_rootfs(dest) (re-hashes,
//!                                                        safe tar, diff_ids) -> runc
//! ```
//!
//! A bundle reaches a node as a bundle archive ([`archive`]): a plain ustar tar of the bundle
//! directory ([`pack_bundle`]), unpacked by the node with [`unpack_bundle_archive`], which
//! admits only the bundle layout, before [`verify_bundle`] decides whether it is trusted.
//!
//! [`VerifiedBundle`] has private fields and no constructor besides [`verify_bundle`], so an
//! unverified bundle cannot reach the enclave runtime. Keys are an enum ([`keys::PublicKey`])
//! stored as PEM SPKI / PKCS#8 with an algorithm-independent key id, so ECDSA P-256 can be
//! added without changing the envelope or the trust store.

pub mod archive;
mod build;
mod bundle;
mod cancel;
pub mod dsse;
mod error;
pub mod fuzzing;
pub mod keys;
pub mod oci;
pub mod statement;
pub mod trust;
pub mod unpack;

pub use archive::{
    pack_bundle, pack_bundle_to_vec, unpack_bundle_archive, ArchiveLimits, ArchiveSummary,
};
pub use build::{build_image, build_image_counted, BuildSpec, BuiltImage};
pub use bundle::{
    inspect_bundle, sign_bundle, survey_image, verify_bundle, verify_bundle_at,
    verify_bundle_cancellable, Inspection, UnpackedRootfs, VerifiedBundle, ENVELOPE_FILE,
};
pub use cancel::{Cancel, CancelOnDrop};
pub use error::{BundleError, Result};
pub use keys::{PublicKey, SigningKey};
pub use statement::{TrainerPredicate, TrainerSpec};
pub use trust::{TrustStore, TrustedPublisher};
pub use unpack::{ImageContents, Limits};
