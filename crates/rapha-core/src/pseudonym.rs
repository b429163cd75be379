use std::fmt;
use std::path::Path;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::CoreError;

/// Length of the hospital's PHI HMAC key in bytes.
pub const HMAC_KEY_LEN: usize = 32;

/// The hospital-held 32-byte key that turns identifiers into pseudonyms.
///
/// No `Debug`, `Display` or `Clone`: the key is never printed and never copied by accident.
/// Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct HmacKey([u8; HMAC_KEY_LEN]);

impl HmacKey {
    /// Wraps key bytes.
    pub fn from_bytes(bytes: [u8; HMAC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut b = [0u8; HMAC_KEY_LEN];
        OsRng.fill_bytes(&mut b);
        Self(b)
    }

    /// The key bytes, for writing the key file. Callers must not log them.
    pub fn expose_bytes(&self) -> &[u8; HMAC_KEY_LEN] {
        &self.0
    }

    /// Reads a key file: exactly 32 raw bytes, not readable by group or others, owned by the
    /// reader, not a link ([`crate::fs::read_secret`]).
    ///
    /// # Errors
    /// [`CoreError::HmacKeyPermissions`] for a mode looser than 0600,
    /// [`CoreError::HmacKeyLength`] for any other length, [`CoreError::HmacKeyIo`] when the file
    /// cannot be read or is refused otherwise (a link, not a regular file, another owner).
    pub fn load(path: &Path) -> Result<Self, CoreError> {
        // Larger than a key, so that a wrong file is reported with its length.
        const MAX: usize = 4096;
        let bytes = crate::fs::read_secret(path, MAX).map_err(|e| match e {
            crate::fs::SecretFileError::Loose(mode) => CoreError::HmacKeyPermissions {
                path: path.to_owned(),
                mode,
            },
            e => CoreError::HmacKeyIo {
                path: path.to_owned(),
                source: e.into(),
            },
        })?;
        let key: [u8; HMAC_KEY_LEN] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| CoreError::HmacKeyLength {
                    path: path.to_owned(),
                    len: bytes.len(),
                })?;
        Ok(Self(key))
    }
}

/// The role an identifier plays. Part of the HMAC input, so the same string hashed as a
/// patient id and as an accession number gives unrelated pseudonyms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum IdDomain {
    Patient,
    Study,
    Series,
    Instance,
    Accession,
    FrameOfReference,
    /// Any other UID (referenced SOP class instances, private UIDs…).
    Uid,
}

impl IdDomain {
    /// The domain string fed to the HMAC. Fixed forever: changing it changes every pseudonym.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::Study => "study",
            Self::Series => "series",
            Self::Instance => "instance",
            Self::Accession => "accession",
            Self::FrameOfReference => "frame-of-reference",
            Self::Uid => "uid",
        }
    }
}

/// Whose pseudonyms: the HMAC's outer domain separation, so the same identifier hashed for two
/// scopes gives unrelated pseudonyms and two jobs' records cannot be joined.
///
/// The scope enters the HMAC as its label ([`PseudonymScope::label`]): `job/<job id>`,
/// `linkage/<publisher>/<group>` or `preview`. No label contains a NUL byte and a group holds no
/// `/`, so each label names exactly one scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PseudonymScope {
    /// One job's own pseudonyms (the default).
    Job(crate::JobId),
    /// Jobs of one publisher that name the same linkage group (allowed by the hospital's
    /// policy and approved by its DPO, e.g. the rounds of one federated run).
    Linkage {
        publisher: String,
        group: crate::LinkageGroup,
    },
    /// `rapha-node cohort preview`: the DPO's view, joining no job's records.
    Preview,
}

impl PseudonymScope {
    /// A linkage group's scope under `publisher`.
    ///
    /// # Errors
    /// [`CoreError::InvalidPublisherName`] unless the name is 1 to 64 of `a-z 0-9 . _ -` (the
    /// trust store's rule): a `/` or NUL in it could make two scopes' labels collide.
    pub fn linkage(publisher: &str, group: crate::LinkageGroup) -> Result<Self, CoreError> {
        let ok = (1..=64).contains(&publisher.len())
            && publisher
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
        if !ok {
            return Err(CoreError::InvalidPublisherName(
                publisher.chars().take(80).collect(),
            ));
        }
        Ok(Self::Linkage {
            publisher: publisher.to_owned(),
            group,
        })
    }

    /// The label fed to the HMAC.
    pub fn label(&self) -> String {
        match self {
            Self::Job(job) => format!("job/{job}"),
            Self::Linkage { publisher, group } => format!("linkage/{publisher}/{group}"),
            Self::Preview => "preview".to_owned(),
        }
    }
}

impl fmt::Display for PseudonymScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// Tag of the scoped pseudonym form: the first field of every scoped HMAC message, never a
/// role label, so a scoped message cannot equal an unscoped one.
const SCOPED_TAG: &[u8] = b"rapha-pseudonym-v2";

/// A pseudonym: `HMAC-SHA256(key, domain || 0x00 || value)` (unscoped, [`HashedId::derive`]) or
/// `HMAC-SHA256(key, "rapha-pseudonym-v2" || 0x00 || scope || 0x00 || domain || 0x00 || value)`
/// ([`HashedId::derive_in`], what jobs use).
///
/// Made by [`HashedId::derive`]; parsing from hex exists for pseudonyms that were already
/// derived (records, receipts), never for raw identifiers, which are not 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashedId([u8; 32]);

impl HashedId {
    /// Derives the pseudonym of `value` in `domain` under `key`.
    pub fn derive(key: &HmacKey, domain: IdDomain, value: &str) -> Self {
        // HMAC-SHA256 accepts keys of any length, so `new_from_slice` cannot fail for 32 bytes.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&key.0) {
            Ok(mac) => mac,
            Err(_) => unreachable_hmac(),
        };
        mac.update(domain.label().as_bytes());
        mac.update(&[0u8]);
        mac.update(value.as_bytes());
        Self(mac.finalize().into_bytes().into())
    }

    /// Derives the pseudonym of `value` in `domain` within `scope`: unrelated to the same
    /// value's pseudonym in any other scope, and to its unscoped one.
    pub fn derive_in(key: &HmacKey, scope: &PseudonymScope, domain: IdDomain, value: &str) -> Self {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&key.0) {
            Ok(mac) => mac,
            Err(_) => unreachable_hmac(),
        };
        mac.update(SCOPED_TAG);
        mac.update(&[0u8]);
        mac.update(scope.label().as_bytes());
        mac.update(&[0u8]);
        mac.update(domain.label().as_bytes());
        mac.update(&[0u8]);
        mac.update(value.as_bytes());
        Self(mac.finalize().into_bytes().into())
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A DICOM UID derived from the pseudonym (PS3.5 B.2: `2.25.` and the decimal value of a
    /// 128-bit number, here the first 16 bytes of the HMAC). At most 44 characters.
    pub fn to_uid(&self) -> String {
        let mut first = [0u8; 16];
        first.copy_from_slice(&self.0[..16]);
        format!("2.25.{}", u128::from_be_bytes(first))
    }

    /// Constant-time equality, for comparisons an attacker might time.
    pub fn ct_eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // Invariant: HMAC is defined for every key length; RustCrypto only errors for MACs with a
    // fixed key size, which HMAC is not.
    #[allow(clippy::panic)] // see invariant above
    {
        panic!("HMAC-SHA256 rejected a 32-byte key")
    }
}

impl FromStr for HashedId {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(CoreError::InvalidHashedId(s.chars().take(80).collect()));
        }
        Ok(Self(out))
    }
}

impl fmt::Display for HashedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for HashedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashedId({})", self.to_hex())
    }
}

impl Serialize for HashedId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for HashedId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate_equal_strings() {
        let key = HmacKey::from_bytes([7; 32]);
        let a = HashedId::derive(&key, IdDomain::Patient, "12345");
        let b = HashedId::derive(&key, IdDomain::Accession, "12345");
        assert_ne!(a, b);
        assert_eq!(a, HashedId::derive(&key, IdDomain::Patient, "12345"));
    }

    #[test]
    fn hmac_matches_independent_vector() {
        // Computed independently with Python's hmac module:
        // hmac.new(bytes([7])*32, b"patient\x00P1", "sha256").hexdigest()
        let key = HmacKey::from_bytes([7; 32]);
        let id = HashedId::derive(&key, IdDomain::Patient, "P1");
        assert_eq!(
            id.to_hex(),
            "5a10570ba53efd7a46d9a05ce6896460828a0330711c60b1b8e838f19f5d08b1"
        );
    }

    #[test]
    fn scoped_pseudonyms_match_an_independent_vector() {
        // hmac.new(bytes([7])*32,
        //   b"rapha-pseudonym-v2\x00job/11111111111111111111111111111111\x00patient\x00P1",
        //   "sha256").hexdigest()
        let key = HmacKey::from_bytes([7; 32]);
        let job = crate::JobId::from_bytes([0x11; 16]);
        let id = HashedId::derive_in(&key, &PseudonymScope::Job(job), IdDomain::Patient, "P1");
        assert_eq!(id.to_hex(), SCOPED_VECTOR);
    }

    const SCOPED_VECTOR: &str = "fb68592e70a9a41a022dcb67cb08b114d3ee6a6f75a4fe3ac3391925caa2fff4";

    #[test]
    fn scopes_separate_equal_values() {
        let key = HmacKey::from_bytes([7; 32]);
        let group = crate::LinkageGroup::new("fed-1").unwrap();
        let scopes = [
            PseudonymScope::Job(crate::JobId::from_bytes([1; 16])),
            PseudonymScope::Job(crate::JobId::from_bytes([2; 16])),
            PseudonymScope::linkage("acme-ai", group.clone()).unwrap(),
            PseudonymScope::linkage("other-co", group).unwrap(),
            PseudonymScope::Preview,
        ];
        let mut seen: Vec<HashedId> = scopes
            .iter()
            .map(|s| HashedId::derive_in(&key, s, IdDomain::Patient, "P1"))
            .collect();
        seen.push(HashedId::derive(&key, IdDomain::Patient, "P1"));
        let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), seen.len());
        // Same scope, same value: the same pseudonym (records of one job join).
        assert_eq!(
            HashedId::derive_in(&key, &scopes[0], IdDomain::Patient, "P1"),
            seen[0]
        );
    }

    #[test]
    fn a_publisher_name_that_could_blur_a_scope_is_refused() {
        let group = crate::LinkageGroup::new("g").unwrap();
        for bad in ["", "a/b", "a\0b", "Acme", &"x".repeat(65)] {
            assert!(
                PseudonymScope::linkage(bad, group.clone()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn uid_form_is_valid_dicom_uid() {
        let key = HmacKey::from_bytes([1; 32]);
        let uid = HashedId::derive(&key, IdDomain::Study, "1.2.3").to_uid();
        assert!(uid.starts_with("2.25."));
        assert!(uid.len() <= 64);
        assert!(uid[5..].chars().all(|c| c.is_ascii_digit()));
        assert!(!uid[5..].starts_with('0') || uid.len() == 6);
    }
}
