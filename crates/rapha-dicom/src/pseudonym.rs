//! The pseudonymizer (**I1**): every identifier leaves as an HMAC-SHA256 under the hospital's
//! key with a domain per role, so one string used as a patient id and as an accession number
//! gives unrelated pseudonyms, and, for a job, within the job's [`PseudonymScope`]:
//! `HMAC(key, "rapha-pseudonym-v2" || 0x00 || scope || 0x00 || domain || 0x00 || value)`
//! ([`rapha_core::HashedId::derive_in`]), so no two jobs' records join unless the DPO approved
//! a linkage group. UIDs map by role whatever attribute carries them: a
//! `ReferencedSOPInstanceUID` inside a sequence hashes exactly like the `SOPInstanceUID` it
//! points at.

use std::path::Path;
use std::sync::Arc;

use rapha_core::{HashedId, HmacKey, IdDomain, PseudonymScope};

use crate::attrs::{tag, TagU32};

/// Holds the hospital's HMAC key (shared by the scoped copies made from it, never copied out)
/// and the scope its pseudonyms are for.
pub struct Pseudonymizer {
    key: Arc<HmacKey>,
    scope: Option<PseudonymScope>,
}

impl Pseudonymizer {
    /// Wraps a key, unscoped: `HMAC(key, domain || 0x00 || value)`, the form before pseudonyms
    /// were per job (tools and tests). The node hashes a job's cohort only through
    /// [`Pseudonymizer::scoped`].
    pub fn new(key: HmacKey) -> Self {
        Self {
            key: Arc::new(key),
            scope: None,
        }
    }

    /// Loads the key file (exactly 32 bytes, mode 0600 or stricter).
    ///
    /// # Errors
    /// The [`rapha_core::CoreError`] of [`HmacKey::load`], wrapped.
    pub fn load(path: &Path) -> crate::Result<Self> {
        Ok(Self::new(HmacKey::load(path)?))
    }

    /// The same key, hashing within `scope`.
    pub fn scoped(&self, scope: PseudonymScope) -> Self {
        Self {
            key: Arc::clone(&self.key),
            scope: Some(scope),
        }
    }

    /// The scope pseudonyms are made in (`None`: unscoped).
    pub fn scope(&self) -> Option<&PseudonymScope> {
        self.scope.as_ref()
    }

    /// The pseudonym of `value` (trimmed of DICOM padding) in `domain`.
    pub fn hash(&self, domain: IdDomain, value: &str) -> HashedId {
        let value = crate::attrs::trim_dicom(value);
        match &self.scope {
            Some(scope) => HashedId::derive_in(&self.key, scope, domain, value),
            None => HashedId::derive(&self.key, domain, value),
        }
    }

    /// The pseudonym as a `2.25.` UID (PS3.5 B.2), for places a UID is required.
    pub fn uid(&self, domain: IdDomain, value: &str) -> String {
        self.hash(domain, value).to_uid()
    }

    /// The domain for a UID-valued attribute, so references and the objects they point at map
    /// alike.
    pub fn domain_of_uid_attr(t: TagU32) -> IdDomain {
        match t {
            // ReferencedStudySequence holds StudyInstanceUID.
            tag::STUDY_INSTANCE_UID | tag::REFERENCED_STUDY_SEQUENCE => IdDomain::Study,
            tag::SERIES_INSTANCE_UID => IdDomain::Series,
            tag::SOP_INSTANCE_UID
            | tag::REFERENCED_SOP_INSTANCE_UID
            | tag::MEDIA_STORAGE_SOP_INSTANCE_UID => IdDomain::Instance,
            tag::FRAME_OF_REFERENCE_UID | tag::REFERENCED_FRAME_OF_REFERENCE_UID => {
                IdDomain::FrameOfReference
            }
            _ => IdDomain::Uid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_copies_share_the_key_and_separate_the_pseudonyms() {
        let base = Pseudonymizer::new(HmacKey::from_bytes([3; 32]));
        let a = base.scoped(PseudonymScope::Job(rapha_core::JobId::from_bytes([1; 16])));
        let b = base.scoped(PseudonymScope::Job(rapha_core::JobId::from_bytes([2; 16])));
        let preview = base.scoped(PseudonymScope::Preview);
        let hashed = [&base, &a, &b, &preview].map(|p| p.hash(IdDomain::Patient, "P1 "));
        for (i, x) in hashed.iter().enumerate() {
            for y in &hashed[i + 1..] {
                assert_ne!(x, y);
            }
        }
        // Padding is trimmed in every scope, and a scope is stable.
        assert_eq!(a.hash(IdDomain::Patient, "P1"), hashed[1]);
        assert_eq!(
            a.hash(IdDomain::Patient, "P1"),
            HashedId::derive_in(
                &HmacKey::from_bytes([3; 32]),
                a.scope().unwrap(),
                IdDomain::Patient,
                "P1"
            )
        );
    }
}
