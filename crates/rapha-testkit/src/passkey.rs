//! A software WebAuthn authenticator for tests: P-256 (ES256) and Ed25519 (EdDSA) credentials
//! producing authenticatorData, clientDataJSON, attestation objects and signatures byte for
//! byte as a browser and a platform authenticator do (clientDataJSON in Chromium's member
//! order, authenticatorData per WebAuthn Level 2 §6.1, packed self-attestation per §8.2). Keys
//! come from a seed, so a test's credentials are the same on every run.
//!
//! Test data only: the browser test with Chromium's virtual authenticator drives the console.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rapha_core::Digest;
use rapha_receipt::body::PasskeyApproval;
use rapha_receipt::credentials::{
    Authorisation, CredentialAction, CredentialEntry, CREDENTIAL_SCHEMA,
};
use rapha_receipt::webauthn::cbor::{self, Value};
use rapha_receipt::webauthn::{approval_challenge, Assertion, B64u, CoseKey};
use sha2::{Digest as _, Sha256};

/// The credential's algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Es256,
    EdDsa,
}

/// The attestation format a registration uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    None,
    PackedSelf,
}

#[derive(Clone)]
enum Key {
    Es256(p256::ecdsa::SigningKey),
    EdDsa(ed25519_dalek::SigningKey),
}

/// One credential on a software authenticator.
#[derive(Clone)]
pub struct SoftAuthenticator {
    pub rp_id: String,
    pub origin: String,
    pub credential_id: Vec<u8>,
    key: Key,
    pub sign_count: u32,
    /// The flags it sets: user present, user verified.
    pub user_present: bool,
    pub user_verified: bool,
}

impl std::fmt::Debug for SoftAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftAuthenticator")
            .field("credential_id", &B64u(self.credential_id.clone()))
            .finish_non_exhaustive()
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

impl SoftAuthenticator {
    /// A credential for `rp_id` used from `origin`, its key and id derived from `seed`.
    pub fn new(alg: Alg, seed: u64, rp_id: &str, origin: &str) -> Self {
        let secret =
            sha256(&[b"rapha-soft-authenticator".as_slice(), &seed.to_be_bytes()].concat());
        let key = match alg {
            #[allow(clippy::expect_used)]
            // a SHA-256 output is a valid P-256 scalar but with negligible probability
            Alg::Es256 => {
                Key::Es256(p256::ecdsa::SigningKey::from_slice(&secret).expect("scalar in range"))
            }
            Alg::EdDsa => Key::EdDsa(ed25519_dalek::SigningKey::from_bytes(&secret)),
        };
        Self {
            rp_id: rp_id.to_owned(),
            origin: origin.to_owned(),
            credential_id: sha256(&secret)[..16].to_vec(),
            key,
            sign_count: 0,
            user_present: true,
            user_verified: true,
        }
    }

    /// The credential id.
    pub fn id(&self) -> B64u {
        B64u(self.credential_id.clone())
    }

    /// The public key.
    pub fn public_key(&self) -> CoseKey {
        match &self.key {
            Key::Es256(k) => CoseKey::Es256(*k.verifying_key()),
            Key::EdDsa(k) => CoseKey::Ed25519(k.verifying_key()),
        }
    }

    /// The COSE_Key bytes.
    pub fn public_key_cose(&self) -> Vec<u8> {
        self.public_key().to_cose()
    }

    fn flags(&self, attested: bool) -> u8 {
        u8::from(self.user_present)
            | (u8::from(self.user_verified) << 2)
            | (u8::from(attested) << 6)
    }

    /// clientDataJSON as Chromium writes it.
    pub fn client_data(&self, kind: &str, challenge: &[u8; 32]) -> Vec<u8> {
        format!(
            r#"{{"type":"{kind}","challenge":"{}","origin":"{}","crossOrigin":false}}"#,
            URL_SAFE_NO_PAD.encode(challenge),
            self.origin
        )
        .into_bytes()
    }

    /// Signs `message` as the authenticator does (ES256 DER, EdDSA raw).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.key {
            Key::Es256(k) => {
                use p256::ecdsa::signature::Signer as _;
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            Key::EdDsa(k) => {
                use ed25519_dalek::Signer as _;
                k.sign(message).to_bytes().to_vec()
            }
        }
    }

    /// `navigator.credentials.create`: the attestation object and clientDataJSON.
    pub fn register(&mut self, challenge: &[u8; 32], format: Format) -> (Vec<u8>, Vec<u8>) {
        let client = self.client_data("webauthn.create", challenge);
        let mut auth = sha256(self.rp_id.as_bytes()).to_vec();
        auth.push(self.flags(true));
        auth.extend(self.sign_count.to_be_bytes());
        auth.extend([0u8; 16]); // aaguid: none, as with "none" attestation
        auth.extend(
            u16::try_from(self.credential_id.len())
                .unwrap_or(0)
                .to_be_bytes(),
        );
        auth.extend(&self.credential_id);
        auth.extend(self.public_key_cose());
        let text = |s: &str| Value::Text(s.to_owned());
        let stmt = match format {
            Format::None => Value::Map(vec![]),
            Format::PackedSelf => {
                let msg = [auth.as_slice(), &sha256(&client)].concat();
                let alg = match self.key {
                    Key::Es256(_) => Value::Nint(6),
                    Key::EdDsa(_) => Value::Nint(7),
                };
                Value::Map(vec![
                    (text("alg"), alg),
                    (text("sig"), Value::Bytes(self.sign(&msg))),
                ])
            }
        };
        let fmt = match format {
            Format::None => "none",
            Format::PackedSelf => "packed",
        };
        let obj = Value::Map(vec![
            (text("fmt"), text(fmt)),
            (text("attStmt"), stmt),
            (text("authData"), Value::Bytes(auth)),
        ]);
        (cbor::encode(&obj), client)
    }

    /// `navigator.credentials.get`: authenticatorData, clientDataJSON and the signature; the
    /// sign count goes up by one.
    pub fn assert(&mut self, challenge: &[u8; 32]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        self.sign_count += 1;
        let client = self.client_data("webauthn.get", challenge);
        let mut auth = sha256(self.rp_id.as_bytes()).to_vec();
        auth.push(self.flags(false));
        auth.extend(self.sign_count.to_be_bytes());
        let sig = self.sign(&[auth.as_slice(), &sha256(&client)].concat());
        (auth, client, sig)
    }

    /// An [`Assertion`] over `challenge`, recording the nonce and time it was built from.
    pub fn assertion(
        &mut self,
        challenge: &[u8; 32],
        nonce: [u8; 32],
        issued_at: u64,
    ) -> Assertion {
        let (auth, client, sig) = self.assert(challenge);
        Assertion {
            credential_id: self.id(),
            authenticator_data: B64u(auth),
            client_data_json: B64u(client),
            signature: B64u(sig),
            nonce,
            issued_at,
        }
    }

    /// The log entry enrolling this credential: by the one-time code (`by` = `None`) or by
    /// `by`'s assertion over the enrolment challenge built from `nonce` and `at`.
    pub fn enrolment(
        &self,
        by: Option<&mut SoftAuthenticator>,
        previous: Option<u64>,
        nonce: [u8; 32],
        at: u64,
    ) -> CredentialEntry {
        let mut entry = CredentialEntry {
            schema: CREDENTIAL_SCHEMA.to_owned(),
            action: CredentialAction::Enrol,
            credential_id: self.id(),
            public_key: B64u(self.public_key_cose()),
            rp_id: self.rp_id.clone(),
            label: "dpo".to_owned(),
            at,
            previous,
            authorised_by: Authorisation::EnrolmentCode,
        };
        if let Some(by) = by {
            let challenge = entry.challenge(&nonce, at);
            entry.authorised_by = Authorisation::DpoAssertion {
                assertion: by.assertion(&challenge, nonce, at),
            };
        }
        entry
    }

    /// The log entry revoking this credential, by `by`'s assertion.
    pub fn revocation(
        &self,
        by: &mut SoftAuthenticator,
        previous: Option<u64>,
        nonce: [u8; 32],
        at: u64,
    ) -> CredentialEntry {
        let mut entry = self.enrolment(None, previous, nonce, at);
        entry.action = CredentialAction::Revoke;
        let challenge = entry.challenge(&nonce, at);
        entry.authorised_by = Authorisation::DpoAssertion {
            assertion: by.assertion(&challenge, nonce, at),
        };
        entry
    }

    /// A passkey approval of `job_digest` with the challenge built from `nonce` and
    /// `issued_at`, checked against the credential set at log entry `credentials_at`.
    pub fn approve(
        &mut self,
        job_digest: &Digest,
        nonce: [u8; 32],
        issued_at: u64,
        credentials_at: u64,
    ) -> PasskeyApproval {
        let challenge = approval_challenge(job_digest, &nonce, issued_at);
        PasskeyApproval {
            job_digest: *job_digest,
            rp_id: self.rp_id.clone(),
            assertion: self.assertion(&challenge, nonce, issued_at),
            credentials_at,
        }
    }
}
