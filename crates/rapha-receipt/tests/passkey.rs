//! Passkey (WebAuthn) DPO approvals, from the attacker's side first: the verification core
//! refuses every altered ceremony with its own error; only a DPO's assertion (or the node's
//! one-time code, for the first credential) changes the credential set; and `verify` refuses a
//! receipt whose passkey approval was tampered with, made by a credential not enrolled, made
//! for another job, or replayed, each with its own error and class.

use rapha_core::Digest;
use rapha_receipt::body::{DpoApproval, PasskeyApproval};
use rapha_receipt::credentials::{Authorisation, CredentialEntry, CredentialError, CredentialSet};
use rapha_receipt::webauthn::{cbor, B64u, CoseKey, Origins, RelyingParty, WebauthnError};
use rapha_receipt::{
    check_passkey_replay, issue, verify_file, ErrorClass, ReceiptError, ReceiptFile, ReceiptLog,
    VerifiedReceipt, VerifyOptions,
};

use crate::common::{self, sample_body};
use crate::softauth::{Alg, Format, SoftAuthenticator};

const RP: &str = "dpo.st-elsewhere.nhs.uk";
const ORIGIN: &str = "https://dpo.st-elsewhere.nhs.uk";

fn rp() -> RelyingParty {
    RelyingParty {
        rp_id: RP.to_owned(),
        origins: Origins::Exact(vec![ORIGIN.to_owned()]),
    }
}

fn dpo(alg: Alg, seed: u64) -> SoftAuthenticator {
    SoftAuthenticator::new(alg, seed, RP, ORIGIN)
}

const CHALLENGE: [u8; 32] = [7; 32];

// ---- registration ------------------------------------------------------------------------

#[test]
fn registration_with_none_and_packed_self_attestation_is_accepted_for_both_algorithms() {
    for (alg, format) in [
        (Alg::Es256, Format::None),
        (Alg::Es256, Format::PackedSelf),
        (Alg::EdDsa, Format::None),
        (Alg::EdDsa, Format::PackedSelf),
    ] {
        let mut a = dpo(alg, 1);
        let (obj, client) = a.register(&CHALLENGE, format);
        let cred = rp().verify_registration(&obj, &client, &CHALLENGE).unwrap();
        assert_eq!(cred.credential_id, a.credential_id);
        assert_eq!(cred.public_key, a.public_key());
        assert_eq!(cred.public_key_cose, a.public_key_cose());
        assert_eq!(
            CoseKey::from_cose(&cred.public_key_cose).unwrap(),
            a.public_key()
        );
    }
}

fn registration_error(edit: impl FnOnce(&mut SoftAuthenticator), format: Format) -> WebauthnError {
    let mut a = dpo(Alg::Es256, 2);
    edit(&mut a);
    let (obj, client) = a.register(&CHALLENGE, format);
    rp().verify_registration(&obj, &client, &CHALLENGE)
        .unwrap_err()
}

#[test]
fn registration_without_user_verification_presence_or_for_another_rp_is_refused() {
    assert_eq!(
        registration_error(|a| a.user_verified = false, Format::None),
        WebauthnError::UserNotVerified
    );
    assert_eq!(
        registration_error(|a| a.user_present = false, Format::None),
        WebauthnError::UserNotPresent
    );
    // A phishing page's own rp id and origin: the origin is refused first.
    assert_eq!(
        registration_error(|a| a.origin = "https://evil.example".into(), Format::None),
        WebauthnError::OriginNotAllowed("https://evil.example".into())
    );
    assert_eq!(
        registration_error(|a| a.rp_id = "evil.example".into(), Format::None),
        WebauthnError::RpIdMismatch { rp_id: RP.into() }
    );
}

#[test]
fn registration_for_another_challenge_or_of_the_wrong_type_is_refused() {
    let mut a = dpo(Alg::EdDsa, 3);
    let (obj, client) = a.register(&[8; 32], Format::None);
    assert_eq!(
        rp().verify_registration(&obj, &client, &CHALLENGE)
            .unwrap_err(),
        WebauthnError::ChallengeMismatch
    );
    // An assertion's client data presented as a registration's.
    let client = a.client_data("webauthn.get", &CHALLENGE);
    assert!(matches!(
        rp().verify_registration(&obj, &client, &CHALLENGE)
            .unwrap_err(),
        WebauthnError::WrongType {
            expected: "webauthn.create",
            ..
        }
    ));
}

fn att_obj(fmt: &str, stmt: cbor::Value, auth: Vec<u8>) -> Vec<u8> {
    let t = |s: &str| cbor::Value::Text(s.to_owned());
    cbor::encode(&cbor::Value::Map(vec![
        (t("fmt"), t(fmt)),
        (t("attStmt"), stmt),
        (t("authData"), cbor::Value::Bytes(auth)),
    ]))
}

fn auth_data_of(obj: &[u8]) -> Vec<u8> {
    match cbor::decode(obj).unwrap().text_key("authData") {
        Some(cbor::Value::Bytes(b)) => b.clone(),
        _ => panic!("no authData"),
    }
}

#[test]
fn attestation_other_than_none_or_packed_self_and_forged_self_attestation_are_refused() {
    let mut a = dpo(Alg::Es256, 4);
    let (obj, client) = a.register(&CHALLENGE, Format::PackedSelf);
    let auth = auth_data_of(&obj);
    let t = |s: &str| cbor::Value::Text(s.to_owned());
    let tpm = att_obj("tpm", cbor::Value::Map(vec![]), auth.clone());
    assert_eq!(
        rp().verify_registration(&tpm, &client, &CHALLENGE)
            .unwrap_err(),
        WebauthnError::UnsupportedAttestation("tpm".into())
    );
    let x5c = att_obj(
        "packed",
        cbor::Value::Map(vec![
            (t("alg"), cbor::Value::Nint(6)),
            (t("sig"), cbor::Value::Bytes(vec![0; 70])),
            (
                t("x5c"),
                cbor::Value::Array(vec![cbor::Value::Bytes(vec![0x30])]),
            ),
        ]),
        auth.clone(),
    );
    assert!(matches!(
        rp().verify_registration(&x5c, &client, &CHALLENGE)
            .unwrap_err(),
        WebauthnError::UnsupportedAttestation(_)
    ));
    // Self-attestation signed by another key than the credential's.
    let other = dpo(Alg::Es256, 5);
    let forged_sig = other.sign(&[auth.as_slice(), &sha(&client)].concat());
    let forged = att_obj(
        "packed",
        cbor::Value::Map(vec![
            (t("alg"), cbor::Value::Nint(6)),
            (t("sig"), cbor::Value::Bytes(forged_sig)),
        ]),
        auth,
    );
    assert_eq!(
        rp().verify_registration(&forged, &client, &CHALLENGE)
            .unwrap_err(),
        WebauthnError::AttestationSignature
    );
}

fn sha(b: &[u8]) -> [u8; 32] {
    *Digest::of(b).as_bytes()
}

#[test]
fn other_cose_algorithms_are_refused_by_name() {
    let cose = |alg: u64| {
        cbor::encode(&cbor::Value::Map(vec![
            (cbor::Value::Uint(1), cbor::Value::Uint(3)),
            (cbor::Value::Uint(3), cbor::Value::Nint(alg)),
            (cbor::Value::Nint(0), cbor::Value::Bytes(vec![1; 256])),
            (cbor::Value::Nint(1), cbor::Value::Bytes(vec![1, 0, 1])),
        ]))
    };
    assert_eq!(
        CoseKey::from_cose(&cose(256)).unwrap_err(),
        WebauthnError::UnsupportedAlgorithm("-257 (RS256)".into())
    );
    assert_eq!(
        CoseKey::from_cose(&cose(34)).unwrap_err(),
        WebauthnError::UnsupportedAlgorithm("-35 (ES384)".into())
    );
}

#[test]
fn cbor_outside_the_bounded_subset_is_refused() {
    // Indefinite-length map, trailing bytes, a tag, a float, a repeated key, a length past the end.
    for bytes in [
        &[0xbf, 0xff][..],
        &[0xa0, 0x00][..],
        &[0xc2, 0x40][..],
        &[0xf9, 0x3c, 0x00][..],
        &[0xa2, 0x01, 0x01, 0x01, 0x02][..],
        &[0x5a, 0xff, 0xff, 0xff, 0xff][..],
    ] {
        assert!(
            matches!(cbor::decode(bytes), Err(WebauthnError::Cbor(_))),
            "{bytes:02x?}"
        );
    }
    let mut deep = vec![0x81; 10];
    deep.push(0x00);
    assert!(matches!(cbor::decode(&deep), Err(WebauthnError::Cbor(_))));
}

// ---- assertions ---------------------------------------------------------------------------

#[test]
fn an_honest_assertion_verifies_for_both_algorithms() {
    for alg in [Alg::Es256, Alg::EdDsa] {
        let mut a = dpo(alg, 10);
        let (auth, client, sig) = a.assert(&CHALLENGE);
        let data = rp()
            .verify_assertion(&a.public_key(), &auth, &client, &sig, &CHALLENGE)
            .unwrap();
        assert_eq!(data.sign_count, 1);
    }
}

#[test]
fn an_altered_assertion_or_another_key_fails_the_signature() {
    let mut a = dpo(Alg::Es256, 11);
    let (auth, client, sig) = a.assert(&CHALLENGE);
    let key = a.public_key();
    let mut flipped = auth.clone();
    flipped[33] ^= 1; // the sign count
    assert_eq!(
        rp().verify_assertion(&key, &flipped, &client, &sig, &CHALLENGE)
            .unwrap_err(),
        WebauthnError::Signature
    );
    let edited = String::from_utf8(client.clone())
        .unwrap()
        .replace(ORIGIN, "https://evil.example");
    assert_eq!(
        rp().verify_assertion(&key, &auth, edited.as_bytes(), &sig, &CHALLENGE)
            .unwrap_err(),
        WebauthnError::Signature
    );
    let other = dpo(Alg::Es256, 12).public_key();
    assert_eq!(
        rp().verify_assertion(&other, &auth, &client, &sig, &CHALLENGE)
            .unwrap_err(),
        WebauthnError::Signature
    );
}

#[test]
fn an_assertion_without_user_verification_for_another_challenge_or_origin_is_refused() {
    let mut a = dpo(Alg::EdDsa, 13);
    a.user_verified = false;
    let (auth, client, sig) = a.assert(&CHALLENGE);
    assert_eq!(
        rp().verify_assertion(&a.public_key(), &auth, &client, &sig, &CHALLENGE)
            .unwrap_err(),
        WebauthnError::UserNotVerified
    );
    a.user_verified = true;
    let (auth, client, sig) = a.assert(&[9; 32]);
    assert_eq!(
        rp().verify_assertion(&a.public_key(), &auth, &client, &sig, &CHALLENGE)
            .unwrap_err(),
        WebauthnError::ChallengeMismatch
    );
    a.origin = "https://dpo.st-elsewhere.nhs.uk:8443".into();
    let (auth, client, sig) = a.assert(&CHALLENGE);
    assert!(matches!(
        rp().verify_assertion(&a.public_key(), &auth, &client, &sig, &CHALLENGE)
            .unwrap_err(),
        WebauthnError::OriginNotAllowed(_)
    ));
    // Offline, any https origin on the rp id is the rp id's own.
    let offline = RelyingParty {
        rp_id: RP.into(),
        origins: Origins::OfRpId,
    };
    offline
        .verify_assertion(&a.public_key(), &auth, &client, &sig, &CHALLENGE)
        .unwrap();
}

// ---- the credential set ---------------------------------------------------------------------

const T0: u64 = 1_764_000_000;

fn enrol_entry(
    new: &SoftAuthenticator,
    by: Option<&mut SoftAuthenticator>,
    previous: Option<u64>,
) -> CredentialEntry {
    new.enrolment(by, previous, [previous.map_or(1, |p| p as u8 + 2); 32], T0)
}

fn revoke_entry(
    target: &SoftAuthenticator,
    by: &mut SoftAuthenticator,
    previous: Option<u64>,
) -> CredentialEntry {
    target.revocation(by, previous, [0xee; 32], T0)
}

fn exact() -> Origins {
    Origins::Exact(vec![ORIGIN.to_owned()])
}

#[test]
fn the_first_credential_takes_the_code_and_every_other_an_enrolled_dpos_assertion() {
    let mut first = dpo(Alg::Es256, 20);
    let second = dpo(Alg::EdDsa, 21);
    let mut set = CredentialSet::default();
    set.apply(&enrol_entry(&first, None, None), 0, &exact())
        .unwrap();
    // The admin (token, console, and the one-time code already used): a second code is refused.
    assert_eq!(
        set.apply(&enrol_entry(&second, None, Some(0)), 1, &exact())
            .unwrap_err(),
        CredentialError::CodeNotFirst(1)
    );
    // The admin's own passkey authorising its own enrolment: not enrolled, refused.
    let mut admin = dpo(Alg::Es256, 22);
    let self_made = enrol_entry(&admin.clone(), Some(&mut admin), Some(0));
    assert!(matches!(
        set.apply(&self_made, 1, &exact()).unwrap_err(),
        CredentialError::AuthoriserNotEnrolled(_)
    ));
    // A DPO's assertion for one key does not admit another: the challenge names the key.
    let mut for_second = enrol_entry(&second, Some(&mut first), Some(0));
    for_second.public_key = B64u(admin.public_key_cose());
    assert_eq!(
        set.apply(&for_second, 1, &exact()).unwrap_err(),
        CredentialError::Assertion(WebauthnError::ChallengeMismatch)
    );
    set.apply(
        &enrol_entry(&second, Some(&mut first), Some(0)),
        1,
        &exact(),
    )
    .unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.get(&second.id()).unwrap().enrolled_at, 1);
}

#[test]
fn revocation_takes_a_dpo_assertion_and_the_last_credential_may_revoke_itself() {
    let mut first = dpo(Alg::Es256, 30);
    let mut set = CredentialSet::default();
    set.apply(&enrol_entry(&first, None, None), 0, &exact())
        .unwrap();
    let mut by_code = revoke_entry(&first.clone(), &mut first, Some(0));
    by_code.authorised_by = Authorisation::EnrolmentCode;
    assert_eq!(
        set.apply(&by_code, 1, &exact()).unwrap_err(),
        CredentialError::RevocationByCode
    );
    let mut stranger = dpo(Alg::EdDsa, 31);
    assert!(matches!(
        set.apply(
            &revoke_entry(&first.clone(), &mut stranger, Some(0)),
            1,
            &exact()
        )
        .unwrap_err(),
        CredentialError::AuthoriserNotEnrolled(_)
    ));
    set.apply(
        &revoke_entry(&first.clone(), &mut first, Some(0)),
        1,
        &exact(),
    )
    .unwrap();
    assert!(set.is_empty());
    // With none enrolled, a new code admits a credential again.
    set.apply(&enrol_entry(&stranger, None, Some(1)), 2, &exact())
        .unwrap();
    assert_eq!(set.len(), 1);
}

// ---- receipts ---------------------------------------------------------------------------------

struct Node {
    _dir: tempfile::TempDir,
    log: ReceiptLog,
    key: rapha_receipt::NodeKey,
    /// Index of the last credential entry.
    last: Option<u64>,
    now: u64,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = ReceiptLog::open(&dir.path().join("log.sqlite")).unwrap();
        let mut n = Self {
            _dir: dir,
            log,
            key: common::node_key(),
            last: None,
            now: 1_000,
        };
        // Receipts before any credential (old Ed25519 approvals).
        n.issue_plain(90);
        n
    }

    fn append(&mut self, entry: &CredentialEntry) -> u64 {
        let at = self.log.append(&entry.canonical_bytes().unwrap()).unwrap();
        self.last = Some(at.index);
        at.index
    }

    fn issue_plain(&mut self, job: u8) -> ReceiptFile {
        self.now += 1;
        issue(
            &sample_body(self.key.address(), job),
            &self.key,
            &mut self.log,
            self.now,
        )
        .unwrap()
    }

    fn issue_passkey(&mut self, job: u8, approval: PasskeyApproval) -> ReceiptFile {
        let mut body = sample_body(self.key.address(), job);
        body.dpo_approval = Some(DpoApproval {
            signer: DpoApproval::passkey_signer(&approval.assertion.credential_id),
            signature: approval.assertion.signature.encode(),
            passkey: Some(approval),
        });
        self.now += 1;
        issue(&body, &self.key, &mut self.log, self.now).unwrap()
    }

    fn opts(&self) -> VerifyOptions {
        VerifyOptions {
            node_address: Some(self.key.address()),
            ..VerifyOptions::default()
        }
    }
}

fn job_digest(job: u8) -> Digest {
    Digest::of(&[b"job digest v2 of job ".as_slice(), &[job]].concat())
}

fn approve(
    a: &mut SoftAuthenticator,
    digest: &Digest,
    nonce: u8,
    at: &Option<u64>,
) -> PasskeyApproval {
    a.approve(digest, [nonce; 32], T0 + 60, at.unwrap())
}

/// A node with two DPOs: the first enrolled by code, the second by the first.
fn node_with_dpos() -> (Node, SoftAuthenticator, SoftAuthenticator) {
    let mut n = Node::new();
    let mut first = dpo(Alg::Es256, 40);
    let second = dpo(Alg::EdDsa, 41);
    let e = enrol_entry(&first, None, None);
    n.append(&e);
    n.issue_plain(91);
    let e = enrol_entry(&second, Some(&mut first), n.last);
    n.append(&e);
    (n, first, second)
}

fn class_of(e: &ReceiptError) -> ErrorClass {
    e.class()
}

#[test]
fn a_passkey_approval_verifies_offline_and_old_receipts_still_do() {
    let (mut n, mut first, mut second) = node_with_dpos();
    let old = n.issue_plain(92);
    let d = job_digest(1);
    let a = approve(&mut second, &d, 1, &n.last);
    let file = n.issue_passkey(1, a);
    assert_eq!(file.credential_log.len(), 2);
    let v = verify_file(&file, &n.opts()).unwrap();
    assert!(v.body.dpo_approval.unwrap().passkey.is_some());
    // Through JSON, as `rapha verify` reads it.
    let parsed = ReceiptFile::from_json(&file.to_json().unwrap()).unwrap();
    verify_file(&parsed, &n.opts()).unwrap();
    // Re-proved at a later head: the chain is proven in the signed position, unchanged.
    let a = approve(&mut first, &job_digest(2), 2, &n.last);
    n.issue_passkey(2, a);
    let mut later = file.clone();
    later
        .prove_at(&n.log, n.log.latest_head().unwrap().unwrap(), &[])
        .unwrap();
    verify_file(&later, &n.opts()).unwrap();
    // An Ed25519 approval (no passkey member) verifies as before, without a chain.
    assert!(old.credential_log.is_empty());
    verify_file(&old, &n.opts()).unwrap();
}

#[test]
fn a_tampered_assertion_is_refused_as_tampered() {
    let (mut n, _first, mut second) = node_with_dpos();
    let mut a = approve(&mut second, &job_digest(1), 1, &n.last);
    a.assertion.authenticator_data.0[33] ^= 0x01;
    let file = n.issue_passkey(1, a);
    let e = verify_file(&file, &n.opts()).unwrap_err();
    assert!(
        matches!(e, ReceiptError::PasskeyTampered(WebauthnError::Signature)),
        "{e}"
    );
    assert_eq!(class_of(&e), ErrorClass::PasskeyTampered);
    // Client data edited to another challenge: still the signature that fails first.
    let mut a = approve(&mut second, &job_digest(1), 3, &n.last);
    let text = String::from_utf8(a.assertion.client_data_json.0.clone()).unwrap();
    a.assertion.client_data_json = B64u(text.replace("webauthn.get", "webauthn.gex").into_bytes());
    let e = verify_file(&n.issue_passkey(3, a), &n.opts()).unwrap_err();
    assert_eq!(class_of(&e), ErrorClass::PasskeyTampered);
}

#[test]
fn an_approval_by_a_credential_never_enrolled_or_revoked_is_refused_as_not_enrolled() {
    let (mut n, mut first, mut second) = node_with_dpos();
    // The admin's own passkey, never enrolled (its assertion is honest).
    let mut admin = dpo(Alg::Es256, 50);
    let a = approve(&mut admin, &job_digest(1), 1, &n.last);
    let e = verify_file(&n.issue_passkey(1, a), &n.opts()).unwrap_err();
    assert!(matches!(e, ReceiptError::PasskeyNotEnrolled { .. }), "{e}");
    assert_eq!(class_of(&e), ErrorClass::PasskeyNotEnrolled);
    // The second DPO's credential revoked by the first, then used.
    let r = revoke_entry(&second.clone(), &mut first, n.last);
    n.append(&r);
    let a = approve(&mut second, &job_digest(2), 2, &n.last);
    let e = verify_file(&n.issue_passkey(2, a), &n.opts()).unwrap_err();
    assert_eq!(class_of(&e), ErrorClass::PasskeyNotEnrolled, "{e}");
    // An approval naming the second's credential but signed by the first: altered, not enrolled.
    let mut a = approve(&mut first, &job_digest(3), 3, &n.last);
    a.assertion.credential_id = second.id();
    let e = verify_file(&n.issue_passkey(3, a), &n.opts()).unwrap_err();
    assert_eq!(class_of(&e), ErrorClass::PasskeyNotEnrolled, "{e}");
}

#[test]
fn an_assertion_made_for_another_job_is_refused_as_another_jobs() {
    let (mut n, _first, mut second) = node_with_dpos();
    let mut a = approve(&mut second, &job_digest(1), 1, &n.last);
    a.job_digest = job_digest(2); // put in job 2's receipt, with job 2's digest
    let e = verify_file(&n.issue_passkey(2, a), &n.opts()).unwrap_err();
    assert!(matches!(e, ReceiptError::PasskeyOtherJob { .. }), "{e}");
    assert_eq!(class_of(&e), ErrorClass::PasskeyOtherJob);
}

#[test]
fn a_replayed_assertion_is_refused_as_a_replay_given_the_other_receipt() {
    let (mut n, _first, mut second) = node_with_dpos();
    let a = approve(&mut second, &job_digest(1), 1, &n.last);
    let honest = n.issue_passkey(1, a.clone());
    // The same captured assertion (and digest) in another job's receipt: each verifies alone.
    let replayed = n.issue_passkey(2, a);
    let v1: VerifiedReceipt = verify_file(&honest, &n.opts()).unwrap();
    let v2 = verify_file(&replayed, &n.opts()).unwrap();
    let e = check_passkey_replay(&v2, &[v1.clone(), v2.clone()]).unwrap_err();
    assert!(matches!(e, ReceiptError::PasskeyReplayed { .. }), "{e}");
    assert_eq!(class_of(&e), ErrorClass::PasskeyReplayed);
    // Distinct approvals, or the receipt given with itself, are no replay.
    check_passkey_replay(&v1, std::slice::from_ref(&v1)).unwrap();
    let b = approve(&mut second, &job_digest(3), 2, &n.last);
    let v3 = verify_file(&n.issue_passkey(3, b), &n.opts()).unwrap();
    check_passkey_replay(&v3, &[v1]).unwrap();
}

#[test]
fn a_credential_chain_with_an_entry_left_out_is_refused() {
    let (mut n, _first, mut second) = node_with_dpos();
    let a = approve(&mut second, &job_digest(1), 1, &n.last);
    let mut file = n.issue_passkey(1, a);
    file.credential_log.remove(0);
    let e = verify_file(&file, &n.opts()).unwrap_err();
    assert!(matches!(e, ReceiptError::CredentialChain { .. }), "{e}");
}
