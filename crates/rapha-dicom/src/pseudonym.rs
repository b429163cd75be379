//! The pseudonymizer (**I1**): every identifier leaves as
//! `HMAC-SHA256(key, domain || 0x00 || value)` ([`rapha_core::HashedId::derive`]) with a domain
//! per role, so one string used as a patient id and as an accession number gives unrelated
//! pseudonyms. UIDs map by role whatever attribute carries them: a `ReferencedSOPInstanceUID`
//! inside a sequence hashes exactly like the `SOPInstanceUID` it points at.

use std::path::Path;

use rapha_core::{HashedId, HmacKey, IdDomain};

use crate::attrs::{tag, TagU32};

/// Holds the hospital's HMAC key; the key never leaves this value.
pub struct Pseudonymizer {
    key: HmacKey,
}

impl Pseudonymizer {
    /// Wraps a key.
    pub fn new(key: HmacKey) -> Self {
        Self { key }
    }

    /// Loads the key file (exactly 32 bytes, mode 0600 or stricter).
    ///
    /// # Errors
    /// The [`rapha_core::CoreError`] of [`HmacKey::load`], wrapped.
    pub fn load(path: &Path) -> crate::Result<Self> {
        Ok(Self::new(HmacKey::load(path)?))
    }

    /// The pseudonym of `value` (trimmed of DICOM padding) in `domain`.
    pub fn hash(&self, domain: IdDomain, value: &str) -> HashedId {
        HashedId::derive(&self.key, domain, crate::attrs::trim_dicom(value))
    }

    /// The pseudonym as a `2.25.` UID (PS3.5 B.2), for places a UID is required.
    pub fn uid(&self, domain: IdDomain, value: &str) -> String {
        self.hash(domain, value).to_uid()
    }

    /// The domain for a UID-valued attribute, so references and the objects they point at map
    /// alike.
    pub fn domain_of_uid_attr(t: TagU32) -> IdDomain {
        match t {
            tag::STUDY_INSTANCE_UID | 0x0008_1110 /* ReferencedStudySequence holds StudyInstanceUID */ => IdDomain::Study,
            tag::SERIES_INSTANCE_UID => IdDomain::Series,
            tag::SOP_INSTANCE_UID | tag::REFERENCED_SOP_INSTANCE_UID | 0x0002_0003 /* MediaStorageSOPInstanceUID */ => {
                IdDomain::Instance
            }
            tag::FRAME_OF_REFERENCE_UID | 0x3006_0024 /* ReferencedFrameOfReferenceUID */ => IdDomain::FrameOfReference,
            _ => IdDomain::Uid,
        }
    }
}
