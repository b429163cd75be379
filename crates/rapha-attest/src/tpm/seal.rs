//! The hospital's HMAC key sealed to the node's TPM under a PCR policy: the TPM releases it
//! only to a session that proves the selected PCRs hold the values they held at sealing (the
//! measured boot state), and only this TPM can load the sealed object (it is wrapped by the
//! TPM's storage primary key, derived from its owner seed). A disk moved to another machine,
//! or a changed boot chain, cannot unseal it.
//!
//! The storage primary is an ECC P-256 restricted decryption key created from the owner
//! hierarchy's fixed template each time (the same seed and template give the same key), so
//! nothing has to be persisted in the TPM. The sealed blob (the object's public and private
//! areas) lives in a file; it is useless without the TPM.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest as TpmDigest, EccPoint, KeyedHashScheme, Private, Public, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;
use zeroize::Zeroizing;

use super::{cmd, selection_list};
use crate::error::{AttestError, Result};

/// The file format's name, checked on load.
pub const SEALED_FORMAT: &str = "rapha-tpm-sealed/1";

/// A secret sealed to one TPM and a set of PCRs (what `keygen --hmac --seal-to-tpm` writes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSecret {
    pub format: String,
    /// The PCRs (sha256 bank) whose values at sealing time the TPM requires.
    pub pcrs: BTreeSet<u8>,
    /// TPM2B_PUBLIC of the sealed object, hex.
    pub public: String,
    /// TPM2B_PRIVATE of the sealed object (encrypted by the TPM's storage key), hex.
    pub private: String,
}

fn session(ctx: &mut Context, kind: SessionType) -> Result<AuthSession> {
    let s = ctx
        .start_auth_session(
            None,
            None,
            None,
            kind,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(cmd("StartAuthSession"))?
        .ok_or(AttestError::TpmCommand {
            command: "StartAuthSession",
            reason: "no session returned".into(),
        })?;
    let (attrs, mask) = SessionAttributesBuilder::new()
        .with_decrypt(true)
        .with_encrypt(true)
        .build();
    ctx.tr_sess_set_attributes(s, attrs, mask)
        .map_err(cmd("SessionAttributes"))?;
    Ok(s)
}

fn flush_session(ctx: &mut Context, s: AuthSession) {
    let _ = ctx.flush_context(SessionHandle::from(s).into());
}

/// The owner hierarchy's storage primary key (ECC P-256, AES-128-CFB), created afresh.
fn storage_primary(ctx: &mut Context) -> Result<KeyHandle> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_decrypt(true)
        .with_no_da(true)
        .build()
        .map_err(cmd("storage key attributes"))?;
    let ecc = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(cmd("storage key parameters"))?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(ecc)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(cmd("storage key template"))?;
    ctx.execute_with_nullauth_session(|c| {
        c.create_primary(Hierarchy::Owner, public, None, None, None, None)
    })
    .map(|r| r.key_handle)
    .map_err(cmd("CreatePrimary(storage)"))
}

/// The policy digest of PolicyPCR over `pcrs` at their current values (a trial session).
fn pcr_policy_digest(ctx: &mut Context, pcrs: &BTreeSet<u8>) -> Result<TpmDigest> {
    let selection = selection_list(pcrs)?;
    let trial = session(ctx, SessionType::Trial)?;
    let out = PolicySession::try_from(trial)
        .map_err(cmd("trial session"))
        .and_then(|p| {
            ctx.policy_pcr(p, TpmDigest::default(), selection)
                .map_err(cmd("PolicyPCR(trial)"))?;
            ctx.policy_get_digest(p).map_err(cmd("PolicyGetDigest"))
        });
    flush_session(ctx, trial);
    out
}

/// Seals `secret` to this TPM and the current values of `pcrs` (sha256 bank).
///
/// # Errors
/// A TPM command failed, or `pcrs` is empty or names a PCR outside 0..23.
pub fn seal(ctx: &mut Context, secret: &[u8], pcrs: &BTreeSet<u8>) -> Result<SealedSecret> {
    if pcrs.is_empty() {
        return Err(AttestError::PcrSelectionMismatch {
            expected: "at least one PCR to seal to".into(),
            found: "none".into(),
        });
    }
    let policy = pcr_policy_digest(ctx, pcrs)?;
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        // Only the policy (PCR values) authorises use: no password.
        .with_user_with_auth(false)
        .build()
        .map_err(cmd("sealed object attributes"))?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_auth_policy(policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(TpmDigest::default())
        .build()
        .map_err(cmd("sealed object template"))?;
    let data = SensitiveData::try_from(secret.to_vec()).map_err(cmd("sealed data"))?;
    let parent = storage_primary(ctx)?;
    let created = ctx
        .execute_with_nullauth_session(|c| c.create(parent, public, None, Some(data), None, None))
        .map_err(cmd("Create(sealed object)"));
    let _ = ctx.flush_context(parent.into());
    let created = created?;
    Ok(SealedSecret {
        format: SEALED_FORMAT.to_owned(),
        pcrs: pcrs.clone(),
        public: hex::encode(
            created
                .out_public
                .marshall()
                .map_err(cmd("marshal sealed public"))?,
        ),
        private: hex::encode(created.out_private.value()),
    })
}

/// Unseals a secret sealed by [`seal`]: only this TPM, with the PCRs at their sealing values.
///
/// # Errors
/// [`AttestError::SealedKeyRefused`] when the TPM refuses (another TPM, or the PCRs changed);
/// [`AttestError::SealedFileMalformed`] for a file that is not a sealed secret; a TPM command
/// error otherwise.
pub fn unseal(ctx: &mut Context, sealed: &SealedSecret) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.format != SEALED_FORMAT {
        return Err(AttestError::SealedFileMalformed(format!(
            "format {:?}, expected {SEALED_FORMAT:?}",
            sealed.format
        )));
    }
    let public_bytes = hex::decode(&sealed.public)
        .map_err(|e| AttestError::SealedFileMalformed(format!("public: {e}")))?;
    let private_bytes = hex::decode(&sealed.private)
        .map_err(|e| AttestError::SealedFileMalformed(format!("private: {e}")))?;
    let public = Public::unmarshall(&public_bytes)
        .map_err(|e| AttestError::SealedFileMalformed(format!("public area: {e}")))?;
    let private = Private::try_from(private_bytes)
        .map_err(|e| AttestError::SealedFileMalformed(format!("private area: {e}")))?;
    let selection = selection_list(&sealed.pcrs)?;
    let parent = storage_primary(ctx)?;
    // Another TPM's storage key cannot decrypt (integrity-check) the private area.
    let loaded = ctx.execute_with_nullauth_session(|c| c.load(parent, private, public));
    let _ = ctx.flush_context(parent.into());
    let object = loaded.map_err(|e| {
        AttestError::SealedKeyRefused(format!(
        "this TPM cannot load the sealed key (sealed on another TPM, or the file was altered): {e}"
    ))
    })?;
    let policy = session(ctx, SessionType::Policy)?;
    let out = PolicySession::try_from(policy)
        .map_err(cmd("policy session"))
        .and_then(|p| {
            ctx.policy_pcr(p, TpmDigest::default(), selection)
                .map_err(cmd("PolicyPCR"))
        })
        .and_then(|()| {
            ctx.execute_with_session(Some(policy), |c| c.unseal(ObjectHandle::from(object)))
                .map_err(|e| {
                    AttestError::SealedKeyRefused(format!(
                        "the TPM refused to unseal: PCRs {:?} differ from their values at sealing \
                         (the measured boot state changed): {e}",
                        sealed.pcrs
                    ))
                })
        });
    flush_session(ctx, policy);
    let _ = ctx.flush_context(object.into());
    let data = out?;
    Ok(Zeroizing::new(data.value().to_vec()))
}
