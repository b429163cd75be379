//! The small slice of X.509 the attestation checks need: parse certificates, check validity,
//! verify an EK certificate's chain up to a configured TPM vendor certificate, and validate the
//! SGX collateral's PCK CRL issuer chain up to Intel's pinned root
//! ([`verify_chain_to_pinned`]: signatures, validity, CA constraints, key usage, path length).
//!
//! Every certificate in the vendor file is a trust anchor (the file holds a vendor's root and
//! the EK-issuing intermediates the administrator chose to trust).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

use crate::error::{AttestError, Result};

const OID_SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
const OID_SHA384_WITH_RSA: &str = "1.2.840.113549.1.1.12";
const OID_ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";

/// Trusted TPM vendor certificates.
#[derive(Debug, Clone)]
pub struct VendorRoots {
    anchors: Vec<Certificate>,
}

impl VendorRoots {
    pub fn from_pem_file(path: &Path) -> Result<Self> {
        let pem = std::fs::read(path).map_err(|e| AttestError::VendorRootUnreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_pem(&pem).map_err(|reason| AttestError::VendorRootUnreadable {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn from_pem(pem: &[u8]) -> std::result::Result<Self, String> {
        let anchors = Certificate::load_pem_chain(pem).map_err(|e| e.to_string())?;
        if anchors.is_empty() {
            return Err("no certificate in the file".into());
        }
        Ok(Self { anchors })
    }

    /// Verifies that `leaf_der` chains to one of the anchors, every certificate on the way
    /// valid now and correctly signed. Returns the parsed leaf.
    pub(crate) fn verify_ek_cert(&self, leaf_der: &[u8]) -> Result<Certificate> {
        let leaf = parse_cert(leaf_der)?;
        check_validity(&leaf)?;
        for anchor in &self.anchors {
            if anchor.tbs_certificate().subject() != leaf.tbs_certificate().issuer() {
                continue;
            }
            match verify_signed_by(&leaf, anchor) {
                Ok(()) => {
                    // Every certificate in the vendor file is trusted: reaching one ends the
                    // walk.
                    check_validity(anchor)?;
                    return Ok(leaf);
                }
                Err(e @ AttestError::UnsupportedCertAlgorithm(_)) => return Err(e),
                Err(_) => continue,
            }
        }
        Err(AttestError::EkCertUntrusted {
            issuer: leaf.tbs_certificate().issuer().to_string(),
        })
    }
}

pub(crate) fn parse_cert(der: &[u8]) -> Result<Certificate> {
    // Some TPMs pad the NV index after the DER structure: decode exactly one certificate.
    let len = der_outer_len(der).ok_or_else(|| AttestError::EkCertMalformed("not DER".into()))?;
    let exact = der
        .get(..len)
        .ok_or_else(|| AttestError::EkCertMalformed("truncated".into()))?;
    Certificate::from_der(exact).map_err(|e| AttestError::EkCertMalformed(e.to_string()))
}

/// Length of the outer DER TLV (tag 0x30) at the start of `der`.
fn der_outer_len(der: &[u8]) -> Option<usize> {
    if *der.first()? != 0x30 {
        return None;
    }
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | usize::from(*der.get(2 + i)?);
    }
    len.checked_add(2 + n)
}

fn check_validity(cert: &Certificate) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let v = cert.tbs_certificate().validity();
    let nb = v.not_before.to_unix_duration().as_secs();
    let na = v.not_after.to_unix_duration().as_secs();
    if now < nb || now > na {
        return Err(AttestError::CertNotValidNow {
            subject: cert.tbs_certificate().subject().to_string(),
        });
    }
    Ok(())
}

/// Checks `cert`'s signature with `issuer`'s public key.
fn verify_signed_by(cert: &Certificate, issuer: &Certificate) -> Result<()> {
    let tbs = cert
        .tbs_certificate()
        .to_der()
        .map_err(|e| AttestError::EkCertMalformed(e.to_string()))?;
    let sig = cert
        .signature()
        .as_bytes()
        .ok_or_else(|| AttestError::EkCertMalformed("signature has unused bits".into()))?;
    let spki = issuer.tbs_certificate().subject_public_key_info();
    let alg = cert.signature_algorithm().oid.to_string();
    let key_alg = spki.algorithm.oid.to_string();
    let bad = || AttestError::EkCertUntrusted {
        issuer: cert.tbs_certificate().issuer().to_string(),
    };
    match (alg.as_str(), key_alg.as_str()) {
        (OID_SHA256_WITH_RSA | OID_SHA384_WITH_RSA, OID_RSA_ENCRYPTION) => {
            use rsa::pkcs8::DecodePublicKey;
            use rsa::signature::Verifier;
            let spki_der = spki
                .to_der()
                .map_err(|e| AttestError::EkCertMalformed(e.to_string()))?;
            let key = rsa::PublicKey::from_public_key_der(&spki_der).map_err(|_| bad())?;
            let signature = rsa::pkcs1v15::Signature::try_from(sig).map_err(|_| bad())?;
            if alg == OID_SHA256_WITH_RSA {
                rsa::pkcs1v15::VerifyingKey::<sha2_v011::Sha256>::new(key)
                    .verify(&tbs, &signature)
                    .map_err(|_| bad())
            } else {
                rsa::pkcs1v15::VerifyingKey::<sha2_v011::Sha384>::new(key)
                    .verify(&tbs, &signature)
                    .map_err(|_| bad())
            }
        }
        (OID_ECDSA_WITH_SHA256, OID_EC_PUBLIC_KEY) => {
            use p256::ecdsa::signature::Verifier;
            let key =
                p256::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
                    .map_err(|_| {
                        AttestError::UnsupportedCertAlgorithm(
                            "ECDSA on a curve other than P-256".into(),
                        )
                    })?;
            let signature = p256::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
            key.verify(&tbs, &signature).map_err(|_| bad())
        }
        _ => Err(AttestError::UnsupportedCertAlgorithm(alg)),
    }
}

/// The RSA modulus (big-endian, no leading zeros) of a certificate's public key, if RSA.
pub(crate) fn rsa_modulus(cert: &Certificate) -> Result<Vec<u8>> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid.to_string() != OID_RSA_ENCRYPTION {
        return Err(AttestError::EkCertMalformed(
            "the EK certificate key is not RSA".into(),
        ));
    }
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    let spki_der = spki
        .to_der()
        .map_err(|e| AttestError::EkCertMalformed(e.to_string()))?;
    let key = rsa::PublicKey::from_public_key_der(&spki_der)
        .map_err(|e| AttestError::EkCertMalformed(e.to_string()))?;
    Ok(strip_zeros(&key.n_bytes()).to_vec())
}

pub(crate) fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(first..).unwrap_or_default()
}

/// Checks a PEM certificate chain (leaf first) up to the pinned root `root_der`, at
/// `now_secs` (Unix seconds), as RFC 5280's path validation does for what the chain is used
/// for here (the issuer of a CRL): each certificate signed by the next, the last one the root
/// itself or signed by it; every certificate on the path, the root included, valid at
/// `now_secs`; every issuer a CA (basicConstraints CA:TRUE) whose keyUsage, when present,
/// allows signing certificates (keyCertSign) and whose path length constraint, when present,
/// covers the intermediates below it; and the first certificate, the CRL's signer, allowed to
/// sign CRLs (cRLSign) when it has a keyUsage.
///
/// # Errors
/// A sentence naming the certificate (by subject) and the rule it broke.
pub fn verify_chain_to_pinned(
    chain_pem: &[u8],
    root_der: &[u8],
    now_secs: u64,
) -> std::result::Result<(), String> {
    use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
    let certs = Certificate::load_pem_chain(chain_pem).map_err(|e| e.to_string())?;
    let root = Certificate::from_der(root_der).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("empty certificate chain".into());
    }
    // The path: the chain's certificates up to (not including) a copy of the root, then the
    // pinned root.
    let mut path: Vec<&Certificate> = Vec::with_capacity(certs.len() + 1);
    for cert in &certs {
        if cert.to_der().map_err(|e| e.to_string())? == root_der {
            break;
        }
        path.push(cert);
    }
    path.push(&root);
    let subject = |c: &Certificate| c.tbs_certificate().subject().to_string();
    let key_usage = |c: &Certificate| {
        c.tbs_certificate()
            .get_extension::<KeyUsage>()
            .map(|found| found.map(|(_, ku)| ku))
            .map_err(|e| format!("{}: unreadable keyUsage: {e}", subject(c)))
    };
    for (i, cert) in path.iter().enumerate() {
        let v = cert.tbs_certificate().validity();
        let (nb, na) = (
            v.not_before.to_unix_duration().as_secs(),
            v.not_after.to_unix_duration().as_secs(),
        );
        if now_secs < nb || now_secs > na {
            return Err(format!(
                "{} is not valid at {now_secs} (valid from {nb} to {na}, Unix seconds)",
                subject(cert)
            ));
        }
        let Some(issuer) = path.get(i + 1) else {
            continue;
        };
        verify_signed_by(cert, issuer)
            .map_err(|_| format!("{} is not signed by {}", subject(cert), subject(issuer)))?;
        let constraints = issuer
            .tbs_certificate()
            .get_extension::<BasicConstraints>()
            .map_err(|e| format!("{}: unreadable basicConstraints: {e}", subject(issuer)))?;
        let Some((_, bc)) = constraints.filter(|(_, bc)| bc.ca) else {
            return Err(format!(
                "{} signs {} but is not a CA (no basicConstraints CA:TRUE)",
                subject(issuer),
                subject(cert)
            ));
        };
        if key_usage(issuer)?.is_some_and(|ku| !ku.key_cert_sign()) {
            return Err(format!(
                "{} signs {} but its keyUsage lacks keyCertSign",
                subject(issuer),
                subject(cert)
            ));
        }
        // Intermediate CAs between this issuer and the first certificate.
        let below = i;
        if let Some(max) = bc.path_len_constraint {
            if below > usize::from(max) {
                return Err(format!(
                    "{} allows {max} intermediate CA(s) below it (path length), the chain has {below}",
                    subject(issuer)
                ));
            }
        }
    }
    let signer = path[0];
    if key_usage(signer)?.is_some_and(|ku| !ku.crl_sign()) {
        return Err(format!(
            "{} signs the CRL but its keyUsage lacks cRLSign",
            subject(signer)
        ));
    }
    Ok(())
}
