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

/// Expected sha256-bank PCR values; the PCR selection quoted is exactly these indices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrPolicy {
    pub expected: BTreeMap<u8, Digest>,
}

impl PcrPolicy {
    /// The PCR indices the policy covers (the selection to quote).
    pub fn selection(&self) -> BTreeSet<u8> {
        self.expected.keys().copied().collect()
    }
}

/// What a verified quote said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedQuote {
    pub ak_name: String,
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub quote_digest: Digest,
}

/// The newest quote accepted from one AK: a later quote must be strictly newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreshnessMark {
    pub reset_count: u32,
    pub restart_count: u32,
    pub clock: u64,
}

/// Verifies TPM evidence without a TPM: trusted vendor roots, certified AKs, the PCR policy,
/// and the last quote seen per AK (replay protection).
#[derive(Debug)]
pub struct TpmVerifier {
    roots: VendorRoots,
    policy: PcrPolicy,
    certified: HashMap<Vec<u8>, AkRecord>,
    last_seen: Mutex<HashMap<Vec<u8>, (u32, u32, u64)>>,
}

impl TpmVerifier {
    pub fn new(roots: VendorRoots, policy: PcrPolicy) -> Self {
        Self {
            roots,
            policy,
            certified: HashMap::new(),
            last_seen: Mutex::new(HashMap::new()),
        }
    }

    /// The freshness mark per AK (hex TPM name), for the node to persist across restarts.
    pub fn freshness_marks(&self) -> std::collections::BTreeMap<String, FreshnessMark> {
        self.last_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, (reset_count, restart_count, clock))| {
                (
                    hex::encode(name),
                    FreshnessMark {
                        reset_count: *reset_count,
                        restart_count: *restart_count,
                        clock: *clock,
                    },
                )
            })
            .collect()
    }

    /// Restores marks saved by [`TpmVerifier::freshness_marks`], so a quote accepted before a
    /// restart is still a replay after it. Names that are not hex are ignored.
    pub fn restore_freshness_marks(
        &mut self,
        marks: &std::collections::BTreeMap<String, FreshnessMark>,
    ) {
        let seen = self
            .last_seen
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, m) in marks {
            if let Ok(name) = hex::decode(name) {
                let mark = (m.reset_count, m.restart_count, m.clock);
                let entry = seen.entry(name).or_insert(mark);
                *entry = (*entry).max(mark);
            }
        }
    }

    /// Trusts an AK that enrolment certified. Its EK certificate must chain to the roots.
    pub fn trust_ak(&mut self, record: AkRecord) -> Result<()> {
        self.roots.verify_ek_cert(&record.ek_cert)?;
        check_ak_attributes(&record.ak_public)?;
        self.certified.insert(ak_name(&record.ak_public), record);
        Ok(())
    }

    /// Verifies one quote against `binding`. A quote that verifies moves this AK's freshness
    /// mark forward, so the same quote verifies once.
    ///
    /// # Errors
    /// In order of checking: [`AttestError::EkCertUntrusted`], [`AttestError::AkNotCertified`],
    /// [`AttestError::QuoteSignatureInvalid`], [`AttestError::QuoteMalformed`],
    /// [`AttestError::QuoteWrongNonce`], [`AttestError::PcrSelectionMismatch`],
    /// [`AttestError::PcrDigestMismatch`], [`AttestError::PcrPolicyViolation`],
    /// [`AttestError::QuoteReplayed`].
    pub fn verify(&self, ev: &TpmEvidence, binding: &Digest) -> Result<VerifiedQuote> {
        self.roots.verify_ek_cert(&ev.ek_cert)?;
        let name = ak_name(&ev.ak_public);
        let not_certified = || AttestError::AkNotCertified {
            ak_name: hex::encode(&name),
        };
        let record = self.certified.get(&name).ok_or_else(not_certified)?;
        if record.ek_cert != ev.ek_cert {
            return Err(not_certified());
        }
        verify_signature(&record.ak_public, &ev.attest, &ev.signature)?;

        let attest = Attest::unmarshall(&ev.attest)
            .map_err(|e| AttestError::QuoteMalformed(e.to_string()))?;
        if attest.marshall().ok().as_deref() != Some(ev.attest.as_slice()) {
            return Err(AttestError::QuoteMalformed(
                "trailing or non-canonical bytes".into(),
            ));
        }
        let AttestInfo::Quote { info } = attest.attested() else {
            return Err(AttestError::QuoteMalformed(
                "the signed structure is not a quote".into(),
            ));
        };
        if attest.extra_data().value() != binding.as_bytes().as_slice() {
            return Err(AttestError::QuoteWrongNonce {
                expected: binding.to_hex(),
                found: hex::encode(attest.extra_data().value()),
            });
        }

        let quoted = quoted_selection(info.pcr_selection())?;
        let wanted = self.policy.selection();
        let supplied: BTreeSet<u8> = ev.pcrs.keys().copied().collect();
        if quoted != wanted || supplied != wanted {
            return Err(AttestError::PcrSelectionMismatch {
                expected: format!("sha256:{wanted:?}"),
                found: format!("sha256:{quoted:?}"),
            });
        }
        if info.pcr_digest().value() != pcr_composite_digest(&ev.pcrs).as_slice() {
            return Err(AttestError::PcrDigestMismatch);
        }
        for (pcr, expected) in &self.policy.expected {
            let found = ev.pcrs.get(pcr).ok_or(AttestError::PcrDigestMismatch)?;
            if found != expected {
                return Err(AttestError::PcrPolicyViolation {
                    pcr: *pcr,
                    expected: expected.to_hex(),
                    found: found.to_hex(),
                });
            }
        }

        let clock = attest.clock_info();
        let mark = (clock.reset_count(), clock.restart_count(), clock.clock());
        {
            // A poisoned lock only means another verification panicked mid-way; the map itself
            // is still a valid set of marks.
            let mut seen = self
                .last_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(prev) = seen.get(&name) {
                if mark <= *prev {
                    return Err(AttestError::QuoteReplayed {
                        reset_count: mark.0,
                        restart_count: mark.1,
                        clock: mark.2,
                    });
                }
            }
            seen.insert(name.clone(), mark);
        }
        Ok(VerifiedQuote {
            ak_name: hex::encode(&name),
            clock: mark.2,
            reset_count: mark.0,
            restart_count: mark.1,
            quote_digest: ev.quote_digest(),
        })
    }
}

fn quoted_selection(list: &PcrSelectionList) -> Result<BTreeSet<u8>> {
    let mut out = BTreeSet::new();
    for sel in list.get_selections() {
        if sel.hashing_algorithm() != HashingAlgorithm::Sha256 {
            return Err(AttestError::PcrSelectionMismatch {
                expected: "sha256 bank only".into(),
                found: format!("{:?} bank", sel.hashing_algorithm()),
            });
        }
        for slot in sel.selected() {
            let bit = u32::from(slot);
            // A PcrSlot is a single bit, so its index fits a u8 (at most 31).
            out.insert(u8::try_from(bit.trailing_zeros()).unwrap_or(u8::MAX));
        }
    }
    Ok(out)
}

/// ECDSA P-256 / SHA-256 verification of the quote with the AK's public point.
fn verify_signature(ak_public: &[u8], attest: &[u8], signature: &[u8]) -> Result<()> {
    use p256::ecdsa::signature::Verifier;
    let public = Public::unmarshall(ak_public)
        .map_err(|e| AttestError::QuoteMalformed(format!("AK public area: {e}")))?;
    let Public::Ecc { unique, .. } = public else {
        return Err(AttestError::QuoteMalformed("AK is not an ECC key".into()));
    };
    let mut sec1 = vec![0x04];
    sec1.extend_from_slice(&left_pad32(unique.x().value())?);
    sec1.extend_from_slice(&left_pad32(unique.y().value())?);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
        .map_err(|_| AttestError::QuoteMalformed("AK is not a P-256 point".into()))?;
    let sig = Signature::unmarshall(signature).map_err(|_| AttestError::QuoteSignatureInvalid)?;
    let Signature::EcDsa(ecc) = sig else {
        return Err(AttestError::QuoteSignatureInvalid);
    };
    if ecc.hashing_algorithm() != HashingAlgorithm::Sha256 {
        return Err(AttestError::QuoteSignatureInvalid);
    }
    let mut rs = left_pad32(ecc.signature_r().value())
        .map_err(|_| AttestError::QuoteSignatureInvalid)?
        .to_vec();
    rs.extend_from_slice(
        &left_pad32(ecc.signature_s().value()).map_err(|_| AttestError::QuoteSignatureInvalid)?,
    );
    let sig =
        p256::ecdsa::Signature::from_slice(&rs).map_err(|_| AttestError::QuoteSignatureInvalid)?;
    key.verify(attest, &sig)
        .map_err(|_| AttestError::QuoteSignatureInvalid)
}

fn left_pad32(v: &[u8]) -> Result<[u8; 32]> {
    let v = strip_zeros(v);
    let mut out = [0u8; 32];
    let start = 32usize
        .checked_sub(v.len())
        .ok_or_else(|| AttestError::QuoteMalformed("ECC value longer than 32 bytes".into()))?;
    out.get_mut(start..)
        .ok_or_else(|| AttestError::QuoteMalformed("ECC value".into()))?
        .copy_from_slice(v);
    Ok(out)
}
