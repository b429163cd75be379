//! DPO passkey credentials as the transparency log records them: each enrolment and each
//! revocation is a leaf (`rapha-dpo-credential/1`, canonical JSON) beside the receipts, and
//! each names the log index of the credential entry before it, so the entries form a chain a
//! verifier walks back from any point to the first enrolment.
//!
//! Who may change the set (**I5**, the DPO's sign-off is the DPO's alone):
//!
//! - the first credential, and only while no credential is enrolled, is admitted by the
//!   one-time enrolment code the node prints on its own console (`rapha-node init`,
//!   `rapha-node dpo enrol-code`); the code is not in the entry (it is secret until used),
//!   the entry says only that a code admitted it;
//! - every further credential needs an assertion by an enrolled credential over a challenge
//!   bound to the new credential's id and public key ([`enrolment_challenge`]): an admin
//!   holding the admin token but no DPO passkey cannot enrol anyone;
//! - a revocation needs an assertion by an enrolled credential over the revoked credential's
//!   id ([`revocation_challenge`]); a credential may revoke itself, the last one included
//!   (a DPO who leaves must be able to), after which only a new enrolment code admits a
//!   credential again.
//!
//! [`CredentialSet::apply`] is that rule. The node applies it before it appends an entry;
//! `rapha verify` applies it again to the chain a receipt carries, offline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ReceiptError, Result};
use crate::webauthn::{
    enrolment_challenge, revocation_challenge, Assertion, B64u, CoseKey, Origins, RelyingParty,
    WebauthnError,
};

/// The schema of credential entries.
pub const CREDENTIAL_SCHEMA: &str = "rapha-dpo-credential/1";

/// What an entry does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialAction {
    Enrol,
    Revoke,
}

/// Who authorised an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Authorisation {
    /// The node's one-time enrolment code (first credential only).
    EnrolmentCode,
    /// An enrolled DPO credential's assertion over the entry's challenge.
    DpoAssertion { assertion: Assertion },
}

/// One enrolment or revocation, a leaf of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialEntry {
    /// Always [`CREDENTIAL_SCHEMA`].
    pub schema: String,
    pub action: CredentialAction,
    pub credential_id: B64u,
    /// The credential's COSE public key (ES256 or EdDSA).
    pub public_key: B64u,
    /// The WebAuthn relying-party id the credential is scoped to.
    pub rp_id: String,
    /// The DPO's name for the credential (free text they chose, shown in lists; never PHI).
    pub label: String,
    /// When the node appended the entry (Unix seconds).
    pub at: u64,
    /// Log index of the previous credential entry; `None` for the first.
    pub previous: Option<u64>,
    pub authorised_by: Authorisation,
}

impl CredentialEntry {
    /// The entry's canonical bytes (the log leaf).
    ///
    /// # Errors
    /// [`ReceiptError::Canonicalize`].
    pub fn canonical_bytes(&self) -> Result<Vec<u8>> {
        crate::jcs::to_vec_of(self)
    }

    /// Parses a log leaf as a credential entry; `None` when the leaf is something else (a
    /// receipt body).
    ///
    /// # Errors
    /// [`ReceiptError::Malformed`] for a leaf that claims the credential schema but does not
    /// parse, or whose bytes are not canonical.
    pub fn from_leaf(bytes: &[u8]) -> Result<Option<Self>> {
        #[derive(Deserialize)]
        struct Probe {
            schema: Option<String>,
        }
        match serde_json::from_slice::<Probe>(bytes) {
            Ok(Probe { schema: Some(s) }) if s == CREDENTIAL_SCHEMA => {}
            _ => return Ok(None),
        }
        let entry: Self = serde_json::from_slice(bytes)
            .map_err(|e| ReceiptError::Malformed(format!("credential entry: {e}")))?;
        if entry.canonical_bytes()? != bytes {
            return Err(ReceiptError::NotCanonical);
        }
        Ok(Some(entry))
    }

    /// The challenge the authorising assertion signs.
    pub fn challenge(&self, nonce: &[u8; 32], issued_at: u64) -> [u8; 32] {
        match self.action {
            CredentialAction::Enrol => {
                enrolment_challenge(&self.credential_id.0, &self.public_key.0, nonce, issued_at)
            }
            CredentialAction::Revoke => {
                revocation_challenge(&self.credential_id.0, nonce, issued_at)
            }
        }
    }
}

/// Why a credential entry is not a valid change of the set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error("an enrolment code may admit the first DPO credential only; {0} are enrolled")]
    CodeNotFirst(usize),
    #[error("a revocation must be authorised by a DPO assertion, not an enrolment code")]
    RevocationByCode,
    #[error("credential {0} is already enrolled")]
    AlreadyEnrolled(B64u),
    #[error("credential {0} is not enrolled")]
    NotEnrolled(B64u),
    #[error("the authorising credential {0} is not an enrolled DPO credential")]
    AuthoriserNotEnrolled(B64u),
    #[error("the authorising assertion is refused: {0}")]
    Assertion(WebauthnError),
    #[error("the new credential's key is refused: {0}")]
    Key(WebauthnError),
    #[error("entry schema {0:?} is not {CREDENTIAL_SCHEMA:?}")]
    Schema(String),
}

/// One enrolled credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolled {
    pub public_key: CoseKey,
    pub public_key_cose: Vec<u8>,
    pub rp_id: String,
    pub label: String,
    /// Log index of its enrolment entry.
    pub enrolled_at: u64,
}

/// The enrolled credentials at one point of the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialSet {
    enrolled: BTreeMap<B64u, Enrolled>,
}

impl CredentialSet {
    /// The enrolled credential `id`, if any.
    pub fn get(&self, id: &B64u) -> Option<&Enrolled> {
        self.enrolled.get(id)
    }

    /// How many are enrolled.
    pub fn len(&self) -> usize {
        self.enrolled.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.enrolled.is_empty()
    }

    /// The enrolled credentials by id.
    pub fn iter(&self) -> impl Iterator<Item = (&B64u, &Enrolled)> {
        self.enrolled.iter()
    }

    /// Applies `entry` (at log index `index`) if the rule in the module docs allows it. The
    /// authorising assertion is checked against `origins` of the entry's rp id: the node passes
    /// its configured origins, an offline verifier [`Origins::OfRpId`].
    ///
    /// # Errors
    /// [`CredentialError`]; the set is unchanged then.
    pub fn apply(
        &mut self,
        entry: &CredentialEntry,
        index: u64,
        origins: &Origins,
    ) -> Result<(), CredentialError> {
        if entry.schema != CREDENTIAL_SCHEMA {
            return Err(CredentialError::Schema(
                entry.schema.chars().take(60).collect(),
            ));
        }
        match &entry.authorised_by {
            Authorisation::EnrolmentCode => {
                if entry.action == CredentialAction::Revoke {
                    return Err(CredentialError::RevocationByCode);
                }
                if !self.enrolled.is_empty() {
                    return Err(CredentialError::CodeNotFirst(self.enrolled.len()));
                }
            }
            Authorisation::DpoAssertion { assertion } => {
                let by = self.enrolled.get(&assertion.credential_id).ok_or_else(|| {
                    CredentialError::AuthoriserNotEnrolled(assertion.credential_id.clone())
                })?;
                let rp = RelyingParty {
                    rp_id: by.rp_id.clone(),
                    origins: origins.clone(),
                };
                let challenge = entry.challenge(&assertion.nonce, assertion.issued_at);
                assertion
                    .verify(&rp, &by.public_key, &challenge)
                    .map_err(CredentialError::Assertion)?;
            }
        }
        match entry.action {
            CredentialAction::Enrol => {
                if self.enrolled.contains_key(&entry.credential_id) {
                    return Err(CredentialError::AlreadyEnrolled(
                        entry.credential_id.clone(),
                    ));
                }
                let public_key =
                    CoseKey::from_cose(&entry.public_key.0).map_err(CredentialError::Key)?;
                self.enrolled.insert(
                    entry.credential_id.clone(),
                    Enrolled {
                        public_key,
                        public_key_cose: entry.public_key.0.clone(),
                        rp_id: entry.rp_id.clone(),
                        label: entry.label.clone(),
                        enrolled_at: index,
                    },
                );
            }
            CredentialAction::Revoke => {
                if self.enrolled.remove(&entry.credential_id).is_none() {
                    return Err(CredentialError::NotEnrolled(entry.credential_id.clone()));
                }
            }
        }
        Ok(())
    }

    /// Replays a chain of entries, oldest first, each with its log index.
    ///
    /// # Errors
    /// The first entry's [`CredentialError`], with its index.
    pub fn replay<'a>(
        entries: impl IntoIterator<Item = (u64, &'a CredentialEntry)>,
        origins: &Origins,
    ) -> Result<Self, (u64, CredentialError)> {
        let mut set = Self::default();
        for (index, entry) in entries {
            set.apply(entry, index, origins).map_err(|e| (index, e))?;
        }
        Ok(set)
    }
}
