//! DSSE v1 envelopes.
//!
//! The signature covers `PAE(payloadType, payload)`, so the payload type is authenticated
//! together with the payload: an envelope whose `payloadType` was edited no longer verifies.
//! Verification checks the signature first and only then looks at the type and parses the
//! payload, as the DSSE protocol prescribes.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{BundleError, Result};
use crate::keys::{PublicKey, SigningKey};

/// The payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Upper bound on an envelope file; a real one is a few KiB.
pub const MAX_ENVELOPE_BYTES: u64 = 1 << 20;

/// Most signatures a bundle's envelope may carry. `rapha bundle sign` writes one; a key
/// rotation may want two. With each signature checked only against the key its `keyid` names,
/// verifying an envelope costs at most this many signature checks.
pub const MAX_SIGNATURES: usize = 4;

/// A DSSE JSON envelope, as stored in a bundle's `signature.dsse.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 of the serialized body.
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

/// One signature of an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Unauthenticated hint naming the key: a signature is checked against the trusted key it
    /// names and no other (one with no keyid, or naming no trusted key, is not checked).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
    /// Base64 of the signature bytes.
    pub sig: String,
}

/// DSSE v1 pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal bytes.
pub fn pae(payload_type: &[u8], body: &[u8]) -> Vec<u8> {
    let tl = payload_type.len().to_string();
    let bl = body.len().to_string();
    let mut out = Vec::with_capacity(10 + tl.len() + bl.len() + payload_type.len() + body.len());
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(tl.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type);
    out.push(b' ');
    out.extend_from_slice(bl.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out
}

/// Decodes standard or URL-safe base64, padded or not (verifiers must accept either).
pub fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let url = s.contains(['-', '_']);
    let padded = s.ends_with('=');
    let engine = match (url, padded) {
        (false, true) => &STANDARD,
        (false, false) => &STANDARD_NO_PAD,
        (true, true) => &URL_SAFE,
        (true, false) => &URL_SAFE_NO_PAD,
    };
    engine.decode(s).ok()
}

impl Envelope {
    /// Signs `body` as `payload_type` with `key`.
    pub fn sign(payload_type: &str, body: &[u8], key: &SigningKey) -> Self {
        let sig = key.sign(&pae(payload_type.as_bytes(), body));
        let b64 = &base64::engine::general_purpose::STANDARD;
        Self {
            payload: b64.encode(body),
            payload_type: payload_type.to_owned(),
            signatures: vec![Signature {
                keyid: key.public_key().keyid(),
                sig: b64.encode(sig),
            }],
        }
    }

    /// Parses an envelope's JSON.
    ///
    /// # Errors
    /// [`BundleError::EnvelopeMalformed`] on anything that is not a DSSE JSON envelope.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| BundleError::EnvelopeMalformed(e.to_string()))
    }

    /// The decoded payload.
    ///
    /// # Errors
    /// [`BundleError::EnvelopeMalformed`] if it is not base64.
    pub fn payload_bytes(&self) -> Result<Vec<u8>> {
        decode_b64(&self.payload)
            .ok_or_else(|| BundleError::EnvelopeMalformed("payload is not base64".into()))
    }

    /// Whether signature `sig` verifies under `key` over the PAE of this envelope's own type
    /// and payload.
    pub fn signature_verifies(&self, sig: &Signature, key: &PublicKey) -> bool {
        let (Some(body), Some(raw)) = (decode_b64(&self.payload), decode_b64(&sig.sig)) else {
            return false;
        };
        key.verify(&pae(self.payload_type.as_bytes(), &body), &raw)
    }
}
