//! WebAuthn (Level 2) verification for DPO passkeys: registration, assertions, and the
//! challenges that bind an assertion to one job, one enrolment or one revocation.
//!
//! The node verifies each ceremony when it happens; `rapha verify` verifies the same bytes
//! again offline from a receipt (the approval) and from the credential entries of the log
//! (enrolments and revocations), so the code is here, in the crate the verifier links.
//!
//! ```text
//!  authenticator: sign(authenticatorData ‖ SHA-256(clientDataJSON))
//!  clientDataJSON: {"type":"webauthn.get","challenge":b64url(C),"origin":…}
//!  C (approval)  = SHA-256("rapha-dpo-passkey-approval-v1" 0x00 ‖ job digest v2 ‖ nonce ‖ time)
//!  C (enrolment) = SHA-256("rapha-dpo-enrol-v1" 0x00 ‖ SHA-256(id) ‖ SHA-256(COSE key) ‖ nonce ‖ time)
//!  C (revocation)= SHA-256("rapha-dpo-revoke-v1" 0x00 ‖ SHA-256(id) ‖ nonce ‖ time)
//! ```
//!
//! What is required of every ceremony: the type (`webauthn.create` / `webauthn.get`), the
//! challenge exactly, the origin in the relying party's set and not cross-origin, rpIdHash =
//! SHA-256(rp id), user presence (UP) and user verification (UV: a PIN or biometric, not just
//! a touch). Keys: ES256 (P-256) and EdDSA (Ed25519); any other COSE algorithm is refused by
//! name. Attestation: `none`, and `packed` self-attestation (signed by the credential's own
//! key). Attestation of the authenticator's make and model (`packed` with an x5c chain, `tpm`,
//! `android-key`, …) is refused: the node has no trust store of authenticator vendors, and an
//! enterprise that wants to restrict DPOs to certain authenticators needs one (out of scope
//! here). What a DPO credential proves is who approved, which the enrolment chain in the log
//! establishes, not which device they held.

pub mod cbor;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rapha_core::Digest;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use cbor::Value;

/// Flags of authenticatorData.
const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_AT: u8 = 0x40;
const FLAG_ED: u8 = 0x80;

/// COSE algorithm ids.
const COSE_ES256: i64 = -7;
const COSE_EDDSA: i64 = -8;

/// Longest credential id accepted (WebAuthn allows up to 1023 bytes).
pub const MAX_CREDENTIAL_ID: usize = 1023;
/// Longest clientDataJSON accepted.
const MAX_CLIENT_DATA: usize = 4096;

/// Domain tags of the three challenges.
const APPROVAL_TAG: &[u8] = b"rapha-dpo-passkey-approval-v1\0";
const ENROL_TAG: &[u8] = b"rapha-dpo-enrol-v1\0";
const REVOKE_TAG: &[u8] = b"rapha-dpo-revoke-v1\0";

/// Everything a WebAuthn ceremony can be refused for; each its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebauthnError {
    #[error("authenticator data is malformed: {0}")]
    AuthData(&'static str),
    #[error(
        "the authenticator signed for another relying party (rpIdHash is not SHA-256 of {rp_id:?})"
    )]
    RpIdMismatch { rp_id: String },
    #[error("user presence flag not set: the authenticator was not touched")]
    UserNotPresent,
    #[error(
        "user verification flag not set: the authenticator did not check a PIN or biometric, \
         which DPO credentials require"
    )]
    UserNotVerified,
    #[error("malformed CBOR: {0}")]
    Cbor(String),
    #[error("clientDataJSON is malformed: {0}")]
    ClientData(String),
    #[error("clientDataJSON type is {found:?}, expected {expected:?}")]
    WrongType {
        found: String,
        expected: &'static str,
    },
    #[error("the assertion's challenge is not the one issued for this operation")]
    ChallengeMismatch,
    #[error("origin {0:?} is not an origin of this relying party")]
    OriginNotAllowed(String),
    #[error("the ceremony ran in a cross-origin frame, which is refused")]
    CrossOrigin,
    #[error(
        "COSE algorithm {0} is not accepted: DPO credentials must be ES256 (P-256) or EdDSA \
         (Ed25519)"
    )]
    UnsupportedAlgorithm(String),
    #[error("the credential public key is malformed: {0}")]
    PublicKey(&'static str),
    #[error(
        "attestation format {0:?} is not accepted: only \"none\" and \"packed\" self-attestation"
    )]
    UnsupportedAttestation(String),
    #[error("the attestation statement is malformed: {0}")]
    Attestation(&'static str),
    #[error("the self-attestation signature does not verify under the new credential's key")]
    AttestationSignature,
    #[error("the assertion signature does not verify under the credential's public key")]
    Signature,
    #[error("the credential id is {0} bytes; at most 1023 are accepted")]
    CredentialIdLength(usize),
    #[error("the encoding of {field} is invalid: {why}")]
    Encoding { field: &'static str, why: String },
}

type Result<T, E = WebauthnError> = std::result::Result<T, E>;

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Bytes that travel as base64url without padding (as WebAuthn's JSON forms carry them).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct B64u(pub Vec<u8>);

impl B64u {
    /// The base64url text.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.0)
    }

    /// Parses base64url without padding, strictly.
    ///
    /// # Errors
    /// [`WebauthnError::Encoding`].
    pub fn decode(field: &'static str, s: &str) -> Result<Self> {
        URL_SAFE_NO_PAD
            .decode(s.as_bytes())
            .map(Self)
            .map_err(|e| WebauthnError::Encoding {
                field,
                why: e.to_string(),
            })
    }
}

impl std::fmt::Debug for B64u {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

impl std::fmt::Display for B64u {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

impl Serialize for B64u {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for B64u {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::decode("base64url", &s).map_err(serde::de::Error::custom)
    }
}

/// A credential public key (COSE), parsed; the COSE bytes are what the log records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoseKey {
    Es256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl CoseKey {
    /// Parses a COSE_Key (RFC 9052/9053): EC2 P-256 with alg ES256, or OKP Ed25519 with alg
    /// EdDSA. The key's `alg` must be present and name its curve's algorithm.
    ///
    /// # Errors
    /// [`WebauthnError::UnsupportedAlgorithm`] for another algorithm (named),
    /// [`WebauthnError::PublicKey`] for a malformed key.
    pub fn from_cose(bytes: &[u8]) -> Result<Self> {
        Self::from_value(&cbor::decode(bytes)?)
    }

    fn from_value(v: &Value) -> Result<Self> {
        let int = |label| v.label(label).and_then(Value::as_int);
        let bytes = |label| match v.label(label) {
            Some(Value::Bytes(b)) => Some(b.as_slice()),
            _ => None,
        };
        let alg = int(3).ok_or(WebauthnError::PublicKey("no alg (3)"))?;
        let kty = int(1).ok_or(WebauthnError::PublicKey("no kty (1)"))?;
        match alg {
            COSE_ES256 => {
                if kty != 2 || int(-1) != Some(1) {
                    return Err(WebauthnError::PublicKey(
                        "ES256 needs kty EC2 (2) and crv P-256 (1)",
                    ));
                }
                let (x, y) = bytes(-2)
                    .zip(bytes(-3))
                    .filter(|(x, y)| x.len() == 32 && y.len() == 32)
                    .ok_or(WebauthnError::PublicKey(
                        "P-256 x and y must be 32 bytes each",
                    ))?;
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(4);
                sec1.extend_from_slice(x);
                sec1.extend_from_slice(y);
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .map(Self::Es256)
                    .map_err(|_| WebauthnError::PublicKey("not a point on P-256"))
            }
            COSE_EDDSA => {
                if kty != 1 || int(-1) != Some(6) {
                    return Err(WebauthnError::PublicKey(
                        "EdDSA needs kty OKP (1) and crv Ed25519 (6)",
                    ));
                }
                let x: [u8; 32] = bytes(-2)
                    .and_then(|x| x.try_into().ok())
                    .ok_or(WebauthnError::PublicKey("Ed25519 x must be 32 bytes"))?;
                ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map(Self::Ed25519)
                    .map_err(|_| WebauthnError::PublicKey("not an Ed25519 point"))
            }
            other => Err(WebauthnError::UnsupportedAlgorithm(algorithm_name(other))),
        }
    }

    /// The COSE_Key encoding of this key (canonical CBOR, as authenticators write it).
    pub fn to_cose(&self) -> Vec<u8> {
        let i = |n: i64| {
            if n >= 0 {
                Value::Uint(n.unsigned_abs())
            } else {
                Value::Nint(n.unsigned_abs() - 1)
            }
        };
        let v = match self {
            Self::Es256(k) => {
                let p = k.to_sec1_bytes();
                Value::Map(vec![
                    (i(1), i(2)),
                    (i(3), i(COSE_ES256)),
                    (i(-1), i(1)),
                    (
                        i(-2),
                        Value::Bytes(p.get(1..33).unwrap_or_default().to_vec()),
                    ),
                    (
                        i(-3),
                        Value::Bytes(p.get(33..65).unwrap_or_default().to_vec()),
                    ),
                ])
            }
            Self::Ed25519(k) => Value::Map(vec![
                (i(1), i(1)),
                (i(3), i(COSE_EDDSA)),
                (i(-1), i(6)),
                (i(-2), Value::Bytes(k.to_bytes().to_vec())),
            ]),
        };
        cbor::encode(&v)
    }

    /// `ES256` or `EdDSA`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::Es256(_) => "ES256",
            Self::Ed25519(_) => "EdDSA",
        }
    }

    /// Verifies a WebAuthn signature over `message` (authenticatorData ‖ SHA-256(clientData)):
    /// ES256 as ASN.1 DER, EdDSA as 64 raw bytes.
    ///
    /// # Errors
    /// [`WebauthnError::Signature`].
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        match self {
            Self::Es256(k) => {
                use p256::ecdsa::signature::Verifier as _;
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| WebauthnError::Signature)?;
                k.verify(message, &sig)
                    .map_err(|_| WebauthnError::Signature)
            }
            Self::Ed25519(k) => {
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| WebauthnError::Signature)?;
                k.verify_strict(message, &sig)
                    .map_err(|_| WebauthnError::Signature)
            }
        }
    }
}

fn algorithm_name(alg: i64) -> String {
    let name = match alg {
        -257 => "RS256",
        -37 => "PS256",
        -35 => "ES384",
        -36 => "ES512",
        -47 => "ES256K",
        -65535 => "RS1",
        _ => "unknown",
    };
    format!("{alg} ({name})")
}

/// A credential created at registration (attested credential data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestedCredential {
    pub aaguid: [u8; 16],
    pub credential_id: Vec<u8>,
    /// The COSE_Key bytes exactly as the authenticator wrote them.
    pub public_key_cose: Vec<u8>,
    pub public_key: CoseKey,
}

/// Parsed authenticatorData.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatorData {
    pub rp_id_hash: [u8; 32],
    pub flags: u8,
    pub sign_count: u32,
    pub attested: Option<AttestedCredential>,
}

impl AuthenticatorData {
    /// Parses authenticatorData: rpIdHash (32), flags (1), signCount (4, big endian), then
    /// attested credential data when AT is set and extensions when ED is set; nothing after.
    ///
    /// # Errors
    /// [`WebauthnError::AuthData`], [`WebauthnError::CredentialIdLength`], and the COSE key's
    /// errors.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 37 {
            return Err(WebauthnError::AuthData("shorter than 37 bytes"));
        }
        let mut rp_id_hash = [0u8; 32];
        rp_id_hash.copy_from_slice(&bytes[..32]);
        let flags = bytes[32];
        let sign_count = u32::from_be_bytes([bytes[33], bytes[34], bytes[35], bytes[36]]);
        let mut rest = &bytes[37..];
        let attested = if flags & FLAG_AT != 0 {
            if rest.len() < 18 {
                return Err(WebauthnError::AuthData(
                    "attested credential data truncated",
                ));
            }
            let mut aaguid = [0u8; 16];
            aaguid.copy_from_slice(&rest[..16]);
            let id_len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
            if id_len == 0 || id_len > MAX_CREDENTIAL_ID {
                return Err(WebauthnError::CredentialIdLength(id_len));
            }
            rest = &rest[18..];
            let credential_id = rest
                .get(..id_len)
                .ok_or(WebauthnError::AuthData("credential id truncated"))?
                .to_vec();
            rest = &rest[id_len..];
            let (key, used) = cbor::decode_prefix(rest)?;
            let public_key = CoseKey::from_value(&key)?;
            let public_key_cose = rest[..used].to_vec();
            rest = &rest[used..];
            Some(AttestedCredential {
                aaguid,
                credential_id,
                public_key_cose,
                public_key,
            })
        } else {
            None
        };
        if flags & FLAG_ED != 0 {
            let (ext, used) = cbor::decode_prefix(rest)?;
            if !matches!(ext, Value::Map(_)) {
                return Err(WebauthnError::AuthData("extensions are not a map"));
            }
            rest = &rest[used..];
        }
        if !rest.is_empty() {
            return Err(WebauthnError::AuthData("trailing bytes"));
        }
        Ok(Self {
            rp_id_hash,
            flags,
            sign_count,
            attested,
        })
    }

    fn check_rp_and_flags(&self, rp: &RelyingParty) -> Result<()> {
        if self.rp_id_hash != sha256(&[rp.rp_id.as_bytes()]) {
            return Err(WebauthnError::RpIdMismatch {
                rp_id: rp.rp_id.clone(),
            });
        }
        if self.flags & FLAG_UP == 0 {
            return Err(WebauthnError::UserNotPresent);
        }
        if self.flags & FLAG_UV == 0 {
            return Err(WebauthnError::UserNotVerified);
        }
        Ok(())
    }
}

/// The members of clientDataJSON that are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientData {
    pub kind: String,
    pub challenge: Vec<u8>,
    pub origin: String,
    pub cross_origin: bool,
}

impl ClientData {
    /// Parses clientDataJSON (other members, such as `tokenBinding` or the browser's notes,
    /// are ignored as WebAuthn requires).
    ///
    /// # Errors
    /// [`WebauthnError::ClientData`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(rename = "type")]
            kind: String,
            challenge: String,
            origin: String,
            #[serde(default, rename = "crossOrigin")]
            cross_origin: bool,
        }
        if bytes.len() > MAX_CLIENT_DATA {
            return Err(WebauthnError::ClientData("longer than 4096 bytes".into()));
        }
        let raw: Raw =
            serde_json::from_slice(bytes).map_err(|e| WebauthnError::ClientData(e.to_string()))?;
        let challenge = URL_SAFE_NO_PAD
            .decode(raw.challenge.as_bytes())
            .map_err(|e| WebauthnError::ClientData(format!("challenge: {e}")))?;
        Ok(Self {
            kind: raw.kind,
            challenge,
            origin: raw.origin,
            cross_origin: raw.cross_origin,
        })
    }

    fn check(&self, kind: &'static str, challenge: &[u8; 32], rp: &RelyingParty) -> Result<()> {
        if self.kind != kind {
            return Err(WebauthnError::WrongType {
                found: self.kind.chars().take(40).collect(),
                expected: kind,
            });
        }
        if self.challenge.as_slice() != challenge.as_slice() {
            return Err(WebauthnError::ChallengeMismatch);
        }
        if self.cross_origin {
            return Err(WebauthnError::CrossOrigin);
        }
        if !rp.origin_allowed(&self.origin) {
            return Err(WebauthnError::OriginNotAllowed(
                self.origin.chars().take(100).collect(),
            ));
        }
        Ok(())
    }
}

/// Which origins a relying party accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origins {
    /// Exactly these (the node's configuration).
    Exact(Vec<String>),
    /// Any `https` origin whose host is the rp id (and `http://localhost[:port]` when the rp id
    /// is `localhost`, which browsers treat as secure): what an offline verifier, who does not
    /// hold the node's configuration, can check from the rp id alone.
    OfRpId,
}

/// The relying party: the rp id (a domain) and its origins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelyingParty {
    pub rp_id: String,
    pub origins: Origins,
}

impl RelyingParty {
    fn origin_allowed(&self, origin: &str) -> bool {
        match &self.origins {
            Origins::Exact(list) => list.iter().any(|o| o == origin),
            Origins::OfRpId => {
                let (scheme, rest) = match origin.split_once("://") {
                    Some(x) => x,
                    None => return false,
                };
                let host = match rest.rsplit_once(':') {
                    Some((h, port))
                        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        h
                    }
                    _ => rest,
                };
                host == self.rp_id
                    && (scheme == "https" || (scheme == "http" && self.rp_id == "localhost"))
            }
        }
    }

    /// Verifies a registration (`navigator.credentials.create`): the client data (type
    /// `webauthn.create`, `challenge`, origin), the authenticator data (rp id, UP, UV, an
    /// attested credential with an accepted key) and the attestation statement (`none`, or
    /// `packed` self-attestation whose signature verifies under the new key).
    ///
    /// # Errors
    /// One [`WebauthnError`] per failed check.
    pub fn verify_registration(
        &self,
        attestation_object: &[u8],
        client_data_json: &[u8],
        challenge: &[u8; 32],
    ) -> Result<AttestedCredential> {
        ClientData::parse(client_data_json)?.check("webauthn.create", challenge, self)?;
        let obj = cbor::decode(attestation_object)?;
        let fmt = match obj.text_key("fmt") {
            Some(Value::Text(s)) => s.clone(),
            _ => return Err(WebauthnError::Attestation("no fmt")),
        };
        let auth_data = match obj.text_key("authData") {
            Some(Value::Bytes(b)) => b.as_slice(),
            _ => return Err(WebauthnError::Attestation("no authData")),
        };
        let att_stmt = obj
            .text_key("attStmt")
            .filter(|v| matches!(v, Value::Map(_)))
            .ok_or(WebauthnError::Attestation("no attStmt map"))?;
        let data = AuthenticatorData::parse(auth_data)?;
        data.check_rp_and_flags(self)?;
        let cred = data.attested.ok_or(WebauthnError::AuthData(
            "no attested credential data (AT flag)",
        ))?;
        match fmt.as_str() {
            "none" => {
                if *att_stmt != Value::Map(vec![]) {
                    return Err(WebauthnError::Attestation("\"none\" with a statement"));
                }
            }
            "packed" => {
                if att_stmt.text_key("x5c").is_some() || att_stmt.text_key("ecdaaKeyId").is_some() {
                    return Err(WebauthnError::UnsupportedAttestation(
                        "packed with a certificate chain (x5c)".into(),
                    ));
                }
                let alg = att_stmt
                    .text_key("alg")
                    .and_then(Value::as_int)
                    .ok_or(WebauthnError::Attestation("packed without alg"))?;
                let expected = match cred.public_key {
                    CoseKey::Es256(_) => COSE_ES256,
                    CoseKey::Ed25519(_) => COSE_EDDSA,
                };
                if alg != expected {
                    return Err(WebauthnError::Attestation(
                        "packed self-attestation alg is not the credential's",
                    ));
                }
                let sig = match att_stmt.text_key("sig") {
                    Some(Value::Bytes(b)) => b,
                    _ => return Err(WebauthnError::Attestation("packed without sig")),
                };
                let msg = [auth_data, &sha256(&[client_data_json])].concat();
                cred.public_key
                    .verify(&msg, sig)
                    .map_err(|_| WebauthnError::AttestationSignature)?;
            }
            other => {
                return Err(WebauthnError::UnsupportedAttestation(
                    other.chars().take(40).collect(),
                ))
            }
        }
        Ok(cred)
    }

    /// Verifies an assertion (`navigator.credentials.get`) under `key` for `challenge`: the
    /// client data (type `webauthn.get`, challenge, origin), the authenticator data (rp id,
    /// UP, UV) and the signature over authenticatorData ‖ SHA-256(clientDataJSON). Returns the
    /// parsed authenticator data (its sign count is for the caller to compare).
    ///
    /// # Errors
    /// One [`WebauthnError`] per failed check. The signature is checked first, so bytes
    /// edited after signing are [`WebauthnError::Signature`] whatever they were edited to.
    pub fn verify_assertion(
        &self,
        key: &CoseKey,
        authenticator_data: &[u8],
        client_data_json: &[u8],
        signature: &[u8],
        challenge: &[u8; 32],
    ) -> Result<AuthenticatorData> {
        let msg = [authenticator_data, &sha256(&[client_data_json])].concat();
        key.verify(&msg, signature)?;
        let data = AuthenticatorData::parse(authenticator_data)?;
        if data.attested.is_some() {
            return Err(WebauthnError::AuthData(
                "an assertion carries no attested credential",
            ));
        }
        data.check_rp_and_flags(self)?;
        ClientData::parse(client_data_json)?.check("webauthn.get", challenge, self)?;
        Ok(data)
    }
}

/// The approval challenge: SHA-256(tag ‖ job digest v2 ‖ nonce ‖ issue time, u64 big endian).
pub fn approval_challenge(job_digest: &Digest, nonce: &[u8; 32], issued_at: u64) -> [u8; 32] {
    sha256(&[
        APPROVAL_TAG,
        job_digest.as_bytes(),
        nonce,
        &issued_at.to_be_bytes(),
    ])
}

/// The enrolment challenge an existing DPO signs to admit a new credential: bound to the new
/// credential's id and public key (COSE bytes), so the assertion admits that key only.
pub fn enrolment_challenge(
    credential_id: &[u8],
    public_key_cose: &[u8],
    nonce: &[u8; 32],
    issued_at: u64,
) -> [u8; 32] {
    sha256(&[
        ENROL_TAG,
        &sha256(&[credential_id]),
        &sha256(&[public_key_cose]),
        nonce,
        &issued_at.to_be_bytes(),
    ])
}

/// The revocation challenge a DPO signs to revoke a credential.
pub fn revocation_challenge(credential_id: &[u8], nonce: &[u8; 32], issued_at: u64) -> [u8; 32] {
    sha256(&[
        REVOKE_TAG,
        &sha256(&[credential_id]),
        nonce,
        &issued_at.to_be_bytes(),
    ])
}

/// One WebAuthn assertion as records carry it (receipt approvals, credential log entries,
/// the node's approval request): the credential, the three signed pieces, and the nonce and
/// time its challenge was built from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    pub credential_id: B64u,
    pub authenticator_data: B64u,
    pub client_data_json: B64u,
    pub signature: B64u,
    /// 32 random bytes, hex; single use on the node.
    #[serde(with = "hex::serde")]
    pub nonce: [u8; 32],
    /// When the node issued the challenge (Unix seconds).
    pub issued_at: u64,
}

impl Assertion {
    /// Verifies the assertion under `key` for the challenge `challenge`.
    ///
    /// # Errors
    /// As [`RelyingParty::verify_assertion`].
    pub fn verify(
        &self,
        rp: &RelyingParty,
        key: &CoseKey,
        challenge: &[u8; 32],
    ) -> Result<AuthenticatorData> {
        rp.verify_assertion(
            key,
            &self.authenticator_data.0,
            &self.client_data_json.0,
            &self.signature.0,
            challenge,
        )
    }
}

/// The fuzz entry point (`fuzz/fuzz_targets/webauthn.rs`, and `tests/fuzz.rs` on stable): every
/// parser of outside WebAuthn bytes on `data`, and a registration and an assertion with `data`
/// split in two as their parts. Must never panic.
#[doc(hidden)]
pub fn fuzz_entry(data: &[u8]) {
    let _ = cbor::decode(data);
    let _ = AuthenticatorData::parse(data);
    let _ = ClientData::parse(data);
    let _ = CoseKey::from_cose(data);
    let rp = RelyingParty {
        rp_id: "localhost".to_owned(),
        origins: Origins::OfRpId,
    };
    let (a, b) = data.split_at(data.len() / 2);
    let _ = rp.verify_registration(a, b, &[0; 32]);
    if let Ok(key) = CoseKey::from_cose(a) {
        let _ = rp.verify_assertion(&key, b, a, b, &[0; 32]);
    }
}
