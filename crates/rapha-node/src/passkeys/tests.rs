//! The node's passkey ceremonies with a software authenticator, attacker's side first: an
//! admin without the code or a DPO's assertion enrols nobody; a captured assertion approves
//! nothing twice; and every approval the node accepts verifies offline in a receipt.

use rapha_receipt::webauthn::B64u;
use rapha_receipt::ReceiptLog;
use rapha_testkit::passkey::{Alg, Format, SoftAuthenticator};

use super::*;

const RP: &str = "localhost";
const ORIGIN: &str = "http://localhost:8443";
const NOW: u64 = 1_764_000_000;

struct World {
    _dir: tempfile::TempDir,
    log: ReceiptLog,
    keys: Passkeys,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let log = ReceiptLog::open(&dir.path().join("receipts")).unwrap();
    let keys = Passkeys::open(
        &dir.path().join("passkeys.sqlite"),
        RP,
        vec![ORIGIN.into()],
        &log,
    )
    .unwrap();
    World {
        _dir: dir,
        log,
        keys,
    }
}

fn authenticator(alg: Alg, seed: u64) -> SoftAuthenticator {
    SoftAuthenticator::new(alg, seed, RP, ORIGIN)
}

fn registration(w: &World, a: &mut SoftAuthenticator) -> Registration {
    let c = w.keys.challenge(&Purpose::Register, NOW).unwrap();
    let challenge: [u8; 32] = c.challenge.0.clone().try_into().unwrap();
    let (attestation_object, client_data_json) = a.register(&challenge, Format::None);
    Registration {
        attestation_object,
        client_data_json,
        nonce: c.nonce,
        issued_at: c.issued_at,
        label: "dpo".into(),
    }
}

fn assertion(w: &World, by: &mut SoftAuthenticator, purpose: &Purpose) -> Assertion {
    let c = w.keys.challenge(purpose, NOW).unwrap();
    let challenge: [u8; 32] = c.challenge.0.clone().try_into().unwrap();
    by.assertion(&challenge, c.nonce, c.issued_at)
}

fn enrol_purpose(a: &SoftAuthenticator) -> Purpose {
    Purpose::Enrol {
        credential_id: a.id(),
        public_key: B64u(a.public_key_cose()),
    }
}

/// The first DPO by the code, the second by the first.
fn two_dpos() -> (World, SoftAuthenticator, SoftAuthenticator) {
    let mut w = world();
    let mut first = authenticator(Alg::Es256, 1);
    let mut second = authenticator(Alg::EdDsa, 2);
    let code = w.keys.new_enrolment_code(NOW).unwrap();
    let reg = registration(&w, &mut first);
    w.keys
        .enrol(&mut w.log, &reg, Authority::Code(code), NOW)
        .unwrap();
    let reg = registration(&w, &mut second);
    let by = assertion(&w, &mut first, &enrol_purpose(&second));
    w.keys
        .enrol(&mut w.log, &reg, Authority::Dpo(by), NOW)
        .unwrap();
    (w, first, second)
}

#[test]
fn first_dpo_enrols_with_the_code_and_the_second_with_the_firsts_assertion() {
    let (w, first, second) = two_dpos();
    assert_eq!(w.keys.credentials().len(), 2);
    assert!(w.keys.credentials().get(&first.id()).is_some());
    assert!(w.keys.credentials().get(&second.id()).is_some());
    assert_eq!(w.keys.last_entry(), Some(1));
    // Reopened from the log alone (the store forgot its pointer): the same set.
    let dir = tempfile::tempdir().unwrap();
    let again = Passkeys::open(
        &dir.path().join("p.sqlite"),
        RP,
        vec![ORIGIN.into()],
        &w.log,
    )
    .unwrap();
    assert_eq!(again.credentials(), w.keys.credentials());
    assert_eq!(again.last_entry(), Some(1));
}

#[test]
fn an_admin_without_the_code_or_a_dpo_assertion_enrols_nobody() {
    let (mut w, _first, _second) = two_dpos();
    let mut admin = authenticator(Alg::Es256, 66);
    // A fresh code (the admin runs `dpo enrol-code`): refused, DPOs are enrolled.
    let code = w.keys.new_enrolment_code(NOW).unwrap();
    let reg = registration(&w, &mut admin);
    let e = w
        .keys
        .enrol(&mut w.log, &reg, Authority::Code(code), NOW)
        .unwrap_err();
    assert!(
        matches!(
            e,
            PasskeyError::Credential(CredentialError::CodeNotFirst(2))
        ),
        "{e}"
    );
    // Its own passkey vouching for itself.
    let reg = registration(&w, &mut admin);
    let by = assertion(&w, &mut admin.clone(), &enrol_purpose(&admin));
    let e = w
        .keys
        .enrol(&mut w.log, &reg, Authority::Dpo(by), NOW)
        .unwrap_err();
    assert!(matches!(e, PasskeyError::NotEnrolled(_)), "{e}");
    assert_eq!(w.keys.credentials().len(), 2);
    assert_eq!(w.log.size(), 2, "nothing was appended");
}

#[test]
fn a_wrong_used_or_expired_code_is_refused() {
    let mut w = world();
    let mut a = authenticator(Alg::Es256, 3);
    let code = w.keys.new_enrolment_code(NOW).unwrap();
    let reg = registration(&w, &mut a);
    let e = w
        .keys
        .enrol(&mut w.log, &reg, Authority::Code("WRONG".into()), NOW)
        .unwrap_err();
    assert!(matches!(e, PasskeyError::BadCode), "{e}");
    let reg = registration(&w, &mut a);
    let e = w
        .keys
        .enrol(
            &mut w.log,
            &reg,
            Authority::Code(code.clone()),
            NOW + CODE_TTL + 1,
        )
        .unwrap_err();
    assert!(
        matches!(e, PasskeyError::BadCode | PasskeyError::Expired),
        "{e}"
    );
    let code = w.keys.new_enrolment_code(NOW).unwrap();
    let reg = registration(&w, &mut a);
    w.keys
        .enrol(&mut w.log, &reg, Authority::Code(code.clone()), NOW)
        .unwrap();
    assert_eq!(w.keys.credentials().len(), 1);
}

#[test]
fn an_approval_is_verified_once_and_its_replay_is_refused() {
    let (w, _first, mut second) = two_dpos();
    let digest = Digest::of(b"job digest v2");
    let purpose = Purpose::Approve { job_digest: digest };
    let a = assertion(&w, &mut second, &purpose);
    let approval = w.keys.approve(&digest, a.clone(), NOW + 10).unwrap();
    assert_eq!(approval.credentials_at, 1);
    let e = w.keys.approve(&digest, a.clone(), NOW + 11).unwrap_err();
    assert!(matches!(e, PasskeyError::NonceUsed), "{e}");
    assert_eq!(e.code(), "challenge-replayed");
    // The same assertion offered for another job: its nonce was issued for this one.
    let e = w
        .keys
        .approve(&Digest::of(b"other"), a, NOW + 12)
        .unwrap_err();
    assert!(matches!(e, PasskeyError::UnknownNonce), "{e}");
    // Expired.
    let a = assertion(&w, &mut second, &purpose);
    let e = w
        .keys
        .approve(&digest, a, NOW + CHALLENGE_TTL + 1)
        .unwrap_err();
    assert!(matches!(e, PasskeyError::Expired), "{e}");
    // A cloned authenticator replaying an old counter.
    let mut clone = second.clone();
    clone.sign_count = 0;
    let a = assertion(&w, &mut clone, &purpose);
    let e = w.keys.approve(&digest, a, NOW + 13).unwrap_err();
    assert!(matches!(e, PasskeyError::SignCount { .. }), "{e}");
}

#[test]
fn revocation_takes_a_dpo_assertion_and_a_revoked_credential_approves_nothing() {
    let (mut w, mut first, mut second) = two_dpos();
    let purpose = Purpose::Revoke {
        credential_id: second.id(),
    };
    let mut stranger = authenticator(Alg::Es256, 77);
    let a = assertion(&w, &mut stranger, &purpose);
    let e = w.keys.revoke(&mut w.log, &second.id(), a, NOW).unwrap_err();
    assert!(matches!(e, PasskeyError::NotEnrolled(_)), "{e}");
    let a = assertion(&w, &mut first, &purpose);
    assert_eq!(w.keys.revoke(&mut w.log, &second.id(), a, NOW).unwrap(), 2);
    let digest = Digest::of(b"job");
    let a = assertion(&w, &mut second, &Purpose::Approve { job_digest: digest });
    let e = w.keys.approve(&digest, a, NOW).unwrap_err();
    assert!(matches!(e, PasskeyError::NotEnrolled(_)), "{e}");
    // The last credential revokes itself.
    let purpose = Purpose::Revoke {
        credential_id: first.id(),
    };
    let a = assertion(&w, &mut first, &purpose);
    w.keys.revoke(&mut w.log, &first.id(), a, NOW).unwrap();
    assert!(w.keys.credentials().is_empty());
}
