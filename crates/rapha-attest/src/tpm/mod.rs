//! TPM 2.0: attestation key enrolment, job-bound quotes, and their verification.
//!
//! ```text
//!  enrol (first run)                         quote (every job)              verify (final gate)
//!  EK cert (NV 0x01c00002) -> vendor root    read PCRs                      AK certified? EK cert chains?
//!  EK public == EK cert key                  Quote(AK, binding, PCRs)       signature (AK, P-256)
//!  AK = restricted ECDSA P-256 under EK      read PCRs again, retry if      qualifying data == binding
//!  MakeCredential(EK pub, AK name, secret)     they moved                   PCR digest == supplied PCRs
//!  ActivateCredential(AK, EK) == secret                                     PCRs == recorded policy
//!                                                                           clock/reset/restart moved on
//! ```
//!
//! The verifier needs no TPM: it checks the quote in software with the certified AK's public
//! area. Enrolment runs MakeCredential on the same TPM with the EK whose public key was first
//! matched against the EK certificate, so only the TPM holding that certified EK can recover
//! the secret and prove it owns the AK.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use rapha_core::Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tss_esapi::abstraction::{ak, ek, pcr, AsymmetricAlgorithmSelection};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{
    AsymmetricAlgorithm, HashingAlgorithm, SignatureSchemeAlgorithm,
};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::PolicySession;
use tss_esapi::structures::{
    Attest, AttestInfo, Data, Digest as TpmDigest, PcrSelectionList, PcrSelectionListBuilder,
    PcrSlot, Private, Public, Signature, SignatureScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;

use crate::error::{AttestError, Result};
pub use crate::x509::VendorRoots;
use crate::x509::{rsa_modulus, strip_zeros};

mod seal;
mod verify;

pub use seal::{seal, unseal, SealedSecret, SEALED_FORMAT};

pub use verify::{FreshnessMark, PcrPolicy, TpmVerifier, VerifiedQuote};

/// NV index of the RSA 2048 EK certificate (TCG EK Credential Profile).
pub const RSA_EK_CERT_NV_INDEX: u32 = 0x01c0_0002;

/// How often a quote is retaken when the PCRs moved while it was taken.
const QUOTE_ATTEMPTS: u32 = 3;

/// `TPM_ALG_SHA256`, the name algorithm of the AK; it prefixes the AK's TPM name.
const TPM_ALG_SHA256: [u8; 2] = [0x00, 0x0b];

fn cmd(command: &'static str) -> impl FnOnce(tss_esapi::Error) -> AttestError {
    move |e| AttestError::TpmCommand {
        command,
        reason: e.to_string(),
    }
}

/// Opens an ESAPI context on `tcti` (e.g. `swtpm:host=127.0.0.1,port=2321` or `device:/dev/tpmrm0`).
pub fn connect(tcti: &str) -> Result<Context> {
    let unreachable = |reason: String| AttestError::TpmUnreachable {
        tcti: tcti.to_owned(),
        reason,
    };
    let conf = TctiNameConf::from_str(tcti).map_err(|e| unreachable(e.to_string()))?;
    Context::new(conf).map_err(|e| unreachable(e.to_string()))
}

/// An attestation key certified against the TPM's EK, as the appliance keeps it between
/// runs. `ak_private` is the TPM-wrapped private blob: only the TPM that made it can load it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedAk {
    /// Marshalled `TPMT_PUBLIC` of the AK.
    #[serde(with = "hex")]
    pub ak_public: Vec<u8>,
    /// TPM-wrapped `TPM2B_PRIVATE` contents of the AK.
    #[serde(with = "hex")]
    pub ak_private: Vec<u8>,
    /// DER EK certificate the AK was certified against.
    #[serde(with = "hex")]
    pub ek_cert: Vec<u8>,
}

impl CertifiedAk {
    /// The TPM name of the AK (`0x000b || SHA-256(TPMT_PUBLIC)`).
    pub fn ak_name(&self) -> Vec<u8> {
        ak_name(&self.ak_public)
    }

    /// What a verifier keeps about this AK.
    pub fn record(&self) -> AkRecord {
        AkRecord {
            ak_public: self.ak_public.clone(),
            ek_cert: self.ek_cert.clone(),
        }
    }
}

/// The verifier's record of a certified AK: its public area and the EK certificate it was
/// activated against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AkRecord {
    #[serde(with = "hex")]
    pub ak_public: Vec<u8>,
    #[serde(with = "hex")]
    pub ek_cert: Vec<u8>,
}

/// What `rapha-node doctor` reports about the TPM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TpmReadiness {
    pub tcti: String,
    /// Subject and issuer of the EK certificate that chained to the vendor root.
    pub ek_cert_subject: String,
    pub ek_cert_issuer: String,
    /// Hex TPM name of the AK that was just certified against the EK.
    pub ak_name: String,
}

/// Checks that the TPM at `tcti` answers, holds an EK certificate that chains to a
/// certificate in `vendor_root_pem`, that its EK matches that certificate, and that an AK can
/// be created and certified against the EK with MakeCredential/ActivateCredential.
///
/// # Errors
/// The first check that failed, e.g. [`AttestError::TpmUnreachable`],
/// [`AttestError::EkCertMissing`], [`AttestError::EkCertUntrusted`],
/// [`AttestError::EkKeyMismatch`] or [`AttestError::AkActivationFailed`].
pub fn tpm_readiness(tcti: &str, vendor_root_pem: &Path) -> Result<TpmReadiness> {
    let roots = VendorRoots::from_pem_file(vendor_root_pem)?;
    let mut ctx = connect(tcti)?;
    ctx.get_random(8).map_err(cmd("GetRandom"))?;
    let certified = enroll_ak(&mut ctx, &roots)?;
    let cert = crate::x509::parse_cert(&certified.ek_cert)?;
    Ok(TpmReadiness {
        tcti: tcti.to_owned(),
        ek_cert_subject: cert.tbs_certificate().subject().to_string(),
        ek_cert_issuer: cert.tbs_certificate().issuer().to_string(),
        ak_name: hex::encode(certified.ak_name()),
    })
}

/// Reads the RSA EK certificate from its NV index.
pub fn read_ek_cert(ctx: &mut Context) -> Result<Vec<u8>> {
    ek::retrieve_ek_pubcert(ctx, AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048)).map_err(
        |_| AttestError::EkCertMissing {
            nv_index: RSA_EK_CERT_NV_INDEX,
        },
    )
}

/// Creates the EK from the standard template and checks it is the key in `ek_cert`.
fn load_ek(ctx: &mut Context, ek_cert: &x509_cert::Certificate) -> Result<KeyHandle> {
    let handle = ek::create_ek_object(ctx, AsymmetricAlgorithm::Rsa, None)
        .map_err(cmd("CreatePrimary(EK)"))?;
    let (public, _, _) = ctx.read_public(handle).map_err(cmd("ReadPublic(EK)"))?;
    let matches = match &public {
        Public::Rsa { unique, .. } => {
            strip_zeros(unique.value()) == rsa_modulus(ek_cert)?.as_slice()
        }
        _ => false,
    };
    if !matches {
        let _ = ctx.flush_context(handle.into());
        return Err(AttestError::EkKeyMismatch);
    }
    Ok(handle)
}

/// Enrols a new AK: EK certificate read and chained to `roots`, EK matched against it, AK
/// created under the EK and certified by MakeCredential/ActivateCredential.
///
/// # Errors
/// [`AttestError::EkCertMissing`], [`AttestError::EkCertUntrusted`],
/// [`AttestError::EkKeyMismatch`], [`AttestError::AkActivationFailed`], or a TPM command error.
pub fn enroll_ak(ctx: &mut Context, roots: &VendorRoots) -> Result<CertifiedAk> {
    let ek_cert_der = read_ek_cert(ctx)?;
    let ek_cert = roots.verify_ek_cert(&ek_cert_der)?;
    let ek_handle = load_ek(ctx, &ek_cert)?;
    let result = enroll_under(ctx, ek_handle, &ek_cert_der);
    let _ = ctx.flush_context(ek_handle.into());
    result
}

fn enroll_under(
    ctx: &mut Context,
    ek_handle: KeyHandle,
    ek_cert_der: &[u8],
) -> Result<CertifiedAk> {
    let created = ak::create_ak_2(
        ctx,
        ek_handle,
        HashingAlgorithm::Sha256,
        AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
        SignatureSchemeAlgorithm::EcDsa,
        None,
        None,
    )
    .map_err(cmd("Create(AK)"))?;
    let ak_public = created
        .out_public
        .marshall()
        .map_err(cmd("marshal AK public"))?;
    let ak_private = created.out_private.value().to_vec();
    let ak_handle = ak::load_ak(
        ctx,
        ek_handle,
        None,
        created.out_private,
        created.out_public,
    )
    .map_err(cmd("Load(AK)"))?;
    let activated = certify_by_credential(ctx, ek_handle, ak_handle);
    let _ = ctx.flush_context(ak_handle.into());
    activated?;
    check_ak_attributes(&ak_public)?;
    Ok(CertifiedAk {
        ak_public,
        ak_private,
        ek_cert: ek_cert_der.to_vec(),
    })
}

/// Verifier side: MakeCredential to the EK for the AK's name with a fresh secret. Attester
/// side: ActivateCredential with the AK and the EK (under the EK's PolicySecret(endorsement)
/// policy). Only a TPM holding both keys recovers the secret.
fn certify_by_credential(
    ctx: &mut Context,
    ek_handle: KeyHandle,
    ak_handle: KeyHandle,
) -> Result<()> {
    let (_, ak_name, _) = ctx.read_public(ak_handle).map_err(cmd("ReadPublic(AK)"))?;
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
    let credential = TpmDigest::try_from(secret.to_vec()).map_err(cmd("credential"))?;
    let (blob, encrypted_secret) = ctx
        .execute_without_session(|c| c.make_credential(ek_handle, credential, ak_name))
        .map_err(cmd("MakeCredential"))?;

    let (attrs, mask) = SessionAttributesBuilder::new().build();
    let hmac_session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Hmac,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(cmd("StartAuthSession"))?
        .ok_or(AttestError::TpmCommand {
            command: "StartAuthSession",
            reason: "no session returned".into(),
        })?;
    ctx.tr_sess_set_attributes(hmac_session, attrs, mask)
        .map_err(cmd("SessionAttributes"))?;
    let policy_session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(cmd("StartAuthSession"))?
        .ok_or(AttestError::TpmCommand {
            command: "StartAuthSession",
            reason: "no session returned".into(),
        })?;
    ctx.tr_sess_set_attributes(policy_session, attrs, mask)
        .map_err(cmd("SessionAttributes"))?;
    let policy = PolicySession::try_from(policy_session).map_err(cmd("PolicySession"))?;
    let outcome = ctx
        .execute_with_session(Some(hmac_session), |c| {
            c.policy_secret(
                policy,
                AuthHandle::Endorsement,
                Default::default(),
                Default::default(),
                Default::default(),
                None,
            )
        })
        .map_err(cmd("PolicySecret(endorsement)"))
        .and_then(|_| {
            ctx.set_sessions((Some(hmac_session), Some(policy_session), None));
            let r = ctx.activate_credential(ak_handle, ek_handle, blob, encrypted_secret);
            ctx.clear_sessions();
            r.map_err(|e| AttestError::AkActivationFailed(e.to_string()))
        });
    let _ = ctx.flush_context(SessionHandle::from(hmac_session).into());
    let _ = ctx.flush_context(SessionHandle::from(policy_session).into());
    let recovered = outcome?;
    if recovered.value() != secret.as_slice() {
        return Err(AttestError::AkActivationFailed(
            "the recovered credential differs from the one sent".into(),
        ));
    }
    Ok(())
}

/// The AK must be a TPM-resident restricted signing key: then it only signs structures the TPM
/// itself generated, so a signature over something that looks like a quote is a quote.
fn check_ak_attributes(ak_public: &[u8]) -> Result<()> {
    let public = Public::unmarshall(ak_public)
        .map_err(|e| AttestError::QuoteMalformed(format!("AK public area: {e}")))?;
    let a = public.object_attributes();
    if !(a.restricted() && a.sign_encrypt() && a.fixed_tpm() && a.fixed_parent() && !a.decrypt())
        || public.name_hashing_algorithm() != HashingAlgorithm::Sha256
    {
        return Err(AttestError::AkNotCertified {
            ak_name: hex::encode(ak_name(ak_public)),
        });
    }
    Ok(())
}

/// TPM name of an object with a SHA-256 name algorithm.
pub fn ak_name(ak_public: &[u8]) -> Vec<u8> {
    let mut name = TPM_ALG_SHA256.to_vec();
    name.extend_from_slice(&Sha256::digest(ak_public));
    name
}

/// One TPM quote with everything a verifier needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmEvidence {
    /// Marshalled `TPMT_PUBLIC` of the AK that signed.
    #[serde(with = "hex")]
    pub ak_public: Vec<u8>,
    /// DER EK certificate the AK was certified against.
    #[serde(with = "hex")]
    pub ek_cert: Vec<u8>,
    /// Marshalled `TPMS_ATTEST` (the signed bytes).
    #[serde(with = "hex")]
    pub attest: Vec<u8>,
    /// Marshalled `TPMT_SIGNATURE`.
    #[serde(with = "hex")]
    pub signature: Vec<u8>,
    /// The sha256-bank PCR values the quote covers, by PCR index.
    pub pcrs: BTreeMap<u8, Digest>,
}

impl TpmEvidence {
    /// Digest of the signed quote bytes (for the receipt).
    pub fn quote_digest(&self) -> Digest {
        Digest::of(&self.attest)
    }
}

fn selection_list(pcrs: &BTreeSet<u8>) -> Result<PcrSelectionList> {
    let slots = pcrs
        .iter()
        .map(|i| pcr_slot(*i))
        .collect::<Result<Vec<_>>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(cmd("PCR selection"))
}

fn pcr_slot(index: u8) -> Result<PcrSlot> {
    let bit = 1u32.checked_shl(u32::from(index)).unwrap_or(0);
    PcrSlot::try_from(bit).map_err(|_| AttestError::PcrSelectionMismatch {
        expected: "PCR 0..23".into(),
        found: index.to_string(),
    })
}

/// Reads the sha256-bank values of `pcrs`.
pub fn read_pcrs(ctx: &mut Context, pcrs: &BTreeSet<u8>) -> Result<BTreeMap<u8, Digest>> {
    let list = selection_list(pcrs)?;
    let data = ctx
        .execute_without_session(|c| pcr::read_all(c, list))
        .map_err(cmd("PCR_Read"))?;
    let bank = data
        .pcr_bank(HashingAlgorithm::Sha256)
        .ok_or(AttestError::TpmCommand {
            command: "PCR_Read",
            reason: "the TPM has no active sha256 PCR bank".into(),
        })?;
    let mut out = BTreeMap::new();
    for i in pcrs {
        let d = bank
            .get_digest(pcr_slot(*i)?)
            .ok_or(AttestError::TpmCommand {
                command: "PCR_Read",
                reason: format!("PCR {i} missing from the answer"),
            })?;
        let bytes: [u8; 32] = d.value().try_into().map_err(|_| AttestError::TpmCommand {
            command: "PCR_Read",
            reason: format!("PCR {i} is not a SHA-256 value"),
        })?;
        out.insert(*i, Digest::from_bytes(bytes));
    }
    Ok(out)
}

/// Reads the current values of `pcrs` as the expected-value policy (done when the appliance
/// is provisioned, on a known-good platform).
pub fn record_pcr_policy(ctx: &mut Context, pcrs: &BTreeSet<u8>) -> Result<PcrPolicy> {
    Ok(PcrPolicy {
        expected: read_pcrs(ctx, pcrs)?,
    })
}

/// SHA-256 over the concatenated PCR values in ascending index order: what `TPMS_QUOTE_INFO`
/// carries as `pcrDigest` for a single sha256 selection.
fn pcr_composite_digest(pcrs: &BTreeMap<u8, Digest>) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in pcrs.values() {
        h.update(v.as_bytes());
    }
    h.finalize().into()
}

/// Quotes `pcrs` with the (already loaded) AK, with `qualifying` as qualifying data. The PCRs
/// are read before and after; when they moved in between, or the quoted digest does not match
/// them, the quote is retaken.
pub fn quote_with_key(
    ctx: &mut Context,
    ak_handle: KeyHandle,
    ak_public: &[u8],
    ek_cert: &[u8],
    pcrs: &BTreeSet<u8>,
    qualifying: &[u8],
) -> Result<TpmEvidence> {
    for _ in 0..QUOTE_ATTEMPTS {
        let before = read_pcrs(ctx, pcrs)?;
        let data = Data::try_from(qualifying.to_vec()).map_err(cmd("qualifying data"))?;
        let list = selection_list(pcrs)?;
        let (attest, signature) = ctx
            .execute_with_nullauth_session(|c| {
                c.quote(ak_handle, data, SignatureScheme::Null, list)
            })
            .map_err(cmd("Quote"))?;
        let after = read_pcrs(ctx, pcrs)?;
        let quoted_digest = match attest.attested() {
            AttestInfo::Quote { info } => info.pcr_digest().value().to_vec(),
            _ => {
                return Err(AttestError::QuoteMalformed(
                    "the TPM returned no quote".into(),
                ))
            }
        };
        if before != after || quoted_digest != pcr_composite_digest(&before) {
            tracing::warn!("PCRs changed while quoting; retaking the quote");
            continue;
        }
        return Ok(TpmEvidence {
            ak_public: ak_public.to_vec(),
            ek_cert: ek_cert.to_vec(),
            attest: attest.marshall().map_err(cmd("marshal attest"))?,
            signature: signature.marshall().map_err(cmd("marshal signature"))?,
            pcrs: before,
        });
    }
    Err(AttestError::PcrsUnstable {
        attempts: QUOTE_ATTEMPTS,
    })
}

/// The appliance side: a TPM context with the EK and the certified AK loaded.
pub struct TpmAttester {
    ctx: Context,
    ek: KeyHandle,
    ak: KeyHandle,
    certified: CertifiedAk,
}

impl std::fmt::Debug for TpmAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmAttester")
            .field("ak_name", &hex::encode(self.certified.ak_name()))
            .finish_non_exhaustive()
    }
}

impl TpmAttester {
    /// Connects to `tcti`, recreates the EK (checked against the certified AK's EK
    /// certificate) and loads the AK.
    pub fn open(tcti: &str, certified: CertifiedAk) -> Result<Self> {
        let mut ctx = connect(tcti)?;
        let cert = crate::x509::parse_cert(&certified.ek_cert)?;
        let ek = load_ek(&mut ctx, &cert)?;
        let private = Private::try_from(certified.ak_private.clone()).map_err(cmd("AK private"))?;
        let public = Public::unmarshall(&certified.ak_public).map_err(cmd("AK public"))?;
        let ak = match ak::load_ak(&mut ctx, ek, None, private, public) {
            Ok(ak) => ak,
            Err(e) => {
                let _ = ctx.flush_context(ek.into());
                return Err(cmd("Load(AK)")(e));
            }
        };
        Ok(Self {
            ctx,
            ek,
            ak,
            certified,
        })
    }

    /// Quotes `pcrs` (sha256 bank) with the job's binding as qualifying data.
    pub fn quote(&mut self, pcrs: &BTreeSet<u8>, binding: &Digest) -> Result<TpmEvidence> {
        quote_with_key(
            &mut self.ctx,
            self.ak,
            &self.certified.ak_public,
            &self.certified.ek_cert,
            pcrs,
            binding.as_bytes(),
        )
    }

    /// The context, for reading PCRs and similar.
    pub fn context(&mut self) -> &mut Context {
        &mut self.ctx
    }
}

impl Drop for TpmAttester {
    fn drop(&mut self) {
        let _ = self.ctx.flush_context(self.ak.into());
        let _ = self.ctx.flush_context(self.ek.into());
    }
}
