//! Publisher signing keys.
//!
//! Keys are stored in the standard PEM forms so other tools can read them: the private key as
//! PKCS#8 (`-----BEGIN PRIVATE KEY-----`), the public key as SubjectPublicKeyInfo
//! (`-----BEGIN PUBLIC KEY-----`), the forms cosign and OpenSSL use. The key id is the SHA-256
//! of the public key's SPKI DER, so it does not depend on the algorithm. Both key types are
//! enums. ECDSA P-256 public keys (cosign's kind) are already accepted for verification,
//! with DER or raw `r||s` signatures: adding P-256 signing changes neither the envelope, the
//! key id nor the trust store.
//!
//! Reading: the DER inside the PEM is parsed by the signature crates' PKCS#8 / SPKI support
//! (`ed25519_dalek::pkcs8`, `p256::pkcs8`): strict DER, no trailing bytes, the algorithm and
//! curve OIDs checked, a PKCS#8 v2 public key checked against the seed. The PEM armour is ours:
//! the key of a trust-store entry is a PEM indented inside TOML, which the crates' PEM readers
//! (RFC 7468, strict) refuse. Writing: a key of fixed size has one DER encoding, a constant
//! prefix and the key bytes; we write that (PKCS#8 v1, as OpenSSL does) so the bytes of key files
//! and key ids never depend on a crate's choice (ed25519-dalek's own encoder writes v2). A test
//! checks the prefixes against the crates' encoders.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use ed25519_dalek::Signer as _;
use p256::pkcs8::der::Decode as _;
use p256::pkcs8::{
    DecodePublicKey as _, ObjectIdentifier, PrivateKeyInfoRef, SubjectPublicKeyInfoRef,
};
use zeroize::Zeroizing;

use crate::error::{BundleError, Result};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (33 bytes) }; the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of a P-256 SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID id-ecPublicKey,
/// OID prime256v1 }, BIT STRING (66 bytes) }; the 65-byte uncompressed SEC1 point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// id-ecPublicKey (RFC 5480), the algorithm of every elliptic-curve SPKI.
const EC_PUBLIC_KEY_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// prime256v1 / secp256r1 (NIST P-256), the one curve accepted.
const P256_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410): version 0, algorithm, OCTET
/// STRING wrapping the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Signature algorithms. The envelope never names the algorithm: the trusted key decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    Ed25519,
    /// ECDSA over NIST P-256 with SHA-256 (verification only in this version).
    EcdsaP256,
}

impl Algorithm {
    /// Lowercase name, as shown to admins.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::EcdsaP256 => "ecdsa-p256",
        }
    }
}

/// A publisher's private signing key. Zeroized on drop (ed25519-dalek's `zeroize` feature);
/// deliberately no `Debug`.
#[non_exhaustive]
pub enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
}

/// A publisher's public key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    /// The key and its uncompressed SEC1 encoding (as it appears in the SPKI).
    EcdsaP256 {
        key: p256::ecdsa::VerifyingKey,
        sec1: [u8; 65],
    },
}

impl SigningKey {
    /// A fresh Ed25519 key from the operating system's RNG.
    pub fn generate_ed25519() -> Self {
        Self::Ed25519(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    /// An Ed25519 key from its 32-byte seed (RFC 8032 private key).
    pub fn ed25519_from_seed(seed: &[u8; 32]) -> Self {
        Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
        }
    }

    /// Signs `message` (for DSSE: the PAE bytes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Ed25519(k) => k.sign(message).to_bytes().to_vec(),
        }
    }

    /// PKCS#8 PEM.
    pub fn to_pem(&self) -> Zeroizing<String> {
        match self {
            Self::Ed25519(k) => {
                let mut der = Zeroizing::new(Vec::with_capacity(48));
                der.extend_from_slice(&ED25519_PKCS8_PREFIX);
                der.extend_from_slice(k.as_bytes());
                pem("PRIVATE KEY", &der)
            }
        }
    }

    /// Parses a PKCS#8 PEM private key.
    ///
    /// # Errors
    /// [`BundleError::KeyFormat`] or [`BundleError::UnsupportedAlgorithm`].
    pub fn from_pem(text: &str, path: &Path) -> Result<Self> {
        let der = Zeroizing::new(unpem("PRIVATE KEY", text, path)?);
        let bad = |what: &str, e: &dyn std::fmt::Display| BundleError::KeyFormat {
            path: path.into(),
            reason: format!("{what}: {e}"),
        };
        let info =
            PrivateKeyInfoRef::from_der(&der).map_err(|e| bad("not a PKCS#8 private key", &e))?;
        if !is_ed25519(info.algorithm.oid) {
            return Err(BundleError::UnsupportedAlgorithm(format!(
                "PKCS#8 key of algorithm {}; only Ed25519 keys sign",
                info.algorithm.oid
            )));
        }
        ed25519_dalek::SigningKey::from_pkcs8_der(&der)
            .map(Self::Ed25519)
            .map_err(|e| bad("Ed25519 PKCS#8 key", &e))
    }

    /// Loads a private key file, refusing one that group or others can read.
    ///
    /// # Errors
    /// [`BundleError::KeyPermissions`], [`BundleError::Io`], [`BundleError::KeyFormat`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = rapha_core::fs::read_secret_text(path, 64 * 1024).map_err(|e| match e {
            rapha_core::fs::SecretFileError::Loose(mode) => BundleError::KeyPermissions {
                path: path.into(),
                mode,
            },
            e => BundleError::Io {
                path: path.into(),
                source: e.into(),
            },
        })?;
        Self::from_pem(&text, path)
    }
}

impl PublicKey {
    /// The algorithm of this key.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed25519(_) => Algorithm::Ed25519,
            Self::EcdsaP256 { .. } => Algorithm::EcdsaP256,
        }
    }

    /// An Ed25519 public key from its 32 bytes.
    ///
    /// # Errors
    /// [`BundleError::KeyFormat`] if the bytes are not a valid curve point.
    pub fn ed25519_from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map(Self::Ed25519)
            .map_err(|e| BundleError::KeyFormat {
                path: PathBuf::new(),
                reason: format!("ed25519 key: {e}"),
            })
    }

    /// A P-256 public key from its 65-byte uncompressed SEC1 encoding (`04 || X || Y`).
    ///
    /// # Errors
    /// [`BundleError::KeyFormat`] if it is not an uncompressed point on the curve.
    pub fn ecdsa_p256_from_sec1(bytes: &[u8]) -> Result<Self> {
        let bad = |reason: &str| BundleError::KeyFormat {
            path: PathBuf::new(),
            reason: reason.into(),
        };
        let sec1: [u8; 65] = bytes
            .try_into()
            .map_err(|_| bad("P-256 key is not 65 bytes"))?;
        if sec1[0] != 0x04 {
            return Err(bad("P-256 key is not an uncompressed point"));
        }
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
            .map_err(|_| bad("P-256 key is not a point on the curve"))?;
        Ok(Self::EcdsaP256 { key, sec1 })
    }

    /// SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            Self::Ed25519(k) => {
                let mut der = ED25519_SPKI_PREFIX.to_vec();
                der.extend_from_slice(k.as_bytes());
                der
            }
            Self::EcdsaP256 { sec1, .. } => {
                let mut der = P256_SPKI_PREFIX.to_vec();
                der.extend_from_slice(sec1);
                der
            }
        }
    }

    /// The key id carried in envelopes: hex SHA-256 of the SPKI DER.
    pub fn keyid(&self) -> String {
        rapha_core::Digest::of(&self.spki_der()).to_hex()
    }

    /// SPKI PEM.
    pub fn to_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki_der()).to_string()
    }

    /// Parses an SPKI PEM public key.
    ///
    /// # Errors
    /// [`BundleError::KeyFormat`] or [`BundleError::UnsupportedAlgorithm`].
    pub fn from_pem(text: &str, path: &Path) -> Result<Self> {
        let der = unpem("PUBLIC KEY", text, path)?;
        let bad = |what: &str, e: &dyn std::fmt::Display| BundleError::KeyFormat {
            path: path.into(),
            reason: format!("{what}: {e}"),
        };
        let info = SubjectPublicKeyInfoRef::from_der(&der)
            .map_err(|e| bad("not a SubjectPublicKeyInfo public key", &e))?;
        let oid = info.algorithm.oid;
        if is_ed25519(oid) {
            return ed25519_dalek::VerifyingKey::from_public_key_der(&der)
                .map(Self::Ed25519)
                .map_err(|e| bad("Ed25519 public key", &e));
        }
        if oid != EC_PUBLIC_KEY_OID {
            return Err(BundleError::UnsupportedAlgorithm(format!(
                "SPKI key of algorithm {oid}; Ed25519 and ECDSA P-256 are supported"
            )));
        }
        let curve = info
            .algorithm
            .parameters_oid()
            .map_err(|e| bad("EC public key without a named curve", &e))?;
        if curve != P256_OID {
            return Err(BundleError::UnsupportedAlgorithm(format!(
                "EC public key on curve {curve}; only P-256 (1.2.840.10045.3.1.7) is supported"
            )));
        }
        p256::ecdsa::VerifyingKey::from_public_key_der(&der)
            .map_err(|e| bad("P-256 public key", &e))?;
        // The crate also takes compressed points; the key id is over the uncompressed SPKI.
        Self::ecdsa_p256_from_sec1(info.subject_public_key.raw_bytes()).map_err(|e| match e {
            BundleError::KeyFormat { reason, .. } => BundleError::KeyFormat {
                path: path.into(),
                reason,
            },
            other => other,
        })
    }

    /// Loads a public key file.
    ///
    /// # Errors
    /// [`BundleError::Io`], [`BundleError::KeyFormat`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(BundleError::io(path))?;
        Self::from_pem(&text, path)
    }

    /// Whether `sig` is this key's signature over `message`. Strict verification: Ed25519
    /// signatures with non-canonical encodings or small-order keys are refused.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Self::Ed25519(k) => {
                let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
                    return false;
                };
                k.verify_strict(message, &sig).is_ok()
            }
            Self::EcdsaP256 { key, .. } => {
                use p256::ecdsa::signature::Verifier as _;
                // cosign writes ASN.1 DER; the DSSE reference implementation raw r||s.
                let sig = if sig.len() == 64 {
                    p256::ecdsa::Signature::from_slice(sig)
                } else {
                    p256::ecdsa::Signature::from_der(sig)
                };
                sig.is_ok_and(|s| key.verify(message, &s).is_ok())
            }
        }
    }
}

/// Writes `KEY` (mode 0600, refusing to overwrite) and `KEY.pub`, returning the public key.
///
/// # Errors
/// [`BundleError::Io`] (including when `KEY` already exists).
pub fn write_keypair(key: &SigningKey, path: &Path) -> Result<PublicKey> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(BundleError::io(path))?;
    file.write_all(key.to_pem().as_bytes())
        .map_err(BundleError::io(path))?;
    file.sync_all().map_err(BundleError::io(path))?;
    let public = key.public_key();
    let pub_path = public_path(path);
    std::fs::write(&pub_path, public.to_pem()).map_err(BundleError::io(&pub_path))?;
    Ok(public)
}

/// `KEY.pub` beside `KEY`.
pub fn public_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Whether `oid` is id-Ed25519 (RFC 8410), as the ed25519 crate names it.
fn is_ed25519(oid: ObjectIdentifier) -> bool {
    oid.as_bytes() == ed25519_dalek::pkcs8::ALGORITHM_OID.as_bytes()
}

fn pem(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(format!("-----BEGIN {label}-----\n"));
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(label: &str, text: &str, path: &Path) -> Result<Vec<u8>> {
    let bad = |reason: &str| BundleError::KeyFormat {
        path: path.into(),
        reason: reason.into(),
    };
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| bad(&format!("no '{begin}' line")))?;
    let rest = &text[start + begin.len()..];
    let stop = rest
        .find(&end)
        .ok_or_else(|| bad(&format!("no '{end}' line")))?;
    let b64: Zeroizing<String> = Zeroizing::new(
        rest[..stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
    );
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| bad("bad base64"))
}
