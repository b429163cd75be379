//! TPM 2.0 against swtpm manufactured by `swtpm_setup --create-ek-cert`, its local CA acting
//! as the TPM vendor root. Every attack is refused with its own error.

use std::collections::BTreeSet;
use std::path::Path;

use rapha_attest::tpm::{
    connect, enroll_ak, quote_with_key, record_pcr_policy, CertifiedAk, TpmAttester, TpmEvidence,
    TpmVerifier, VendorRoots,
};
use rapha_attest::{tpm_readiness, AttestError};
use rapha_core::Digest;
use rapha_testkit::services::Swtpm;
use tss_esapi::abstraction::{ak, ek, AsymmetricAlgorithmSelection};
use tss_esapi::handles::PcrHandle;
use tss_esapi::interface_types::algorithm::{
    AsymmetricAlgorithm, HashingAlgorithm, SignatureSchemeAlgorithm,
};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::{Digest as TpmDigest, DigestValues};
use tss_esapi::traits::Marshall;

/// PCRs quoted in these tests: firmware and boot (0-7, unchanged on swtpm) and 14, which the
/// test that models a platform change extends.
pub fn selection() -> BTreeSet<u8> {
    [0, 1, 2, 3, 4, 7, 14].into_iter().collect()
}

pub struct Enrolled {
    pub tpm: Swtpm,
    pub certified: CertifiedAk,
    pub verifier: TpmVerifier,
}

pub fn roots_of(tpm: &Swtpm) -> VendorRoots {
    VendorRoots::from_pem_file(tpm.ek_ca_cert_pem().expect("provisioned swtpm has a CA")).unwrap()
}

/// A manufactured swtpm with an enrolled AK, the PCR policy recorded now, and a verifier that
/// trusts the AK. None when swtpm is not installed (and not required).
pub fn enrolled() -> Option<Enrolled> {
    let tpm = rapha_testkit::require!(Swtpm::start_provisioned())?;
    let roots = roots_of(&tpm);
    let mut ctx = connect(&tpm.tcti()).unwrap();
    let certified = enroll_ak(&mut ctx, &roots).unwrap();
    let policy = record_pcr_policy(&mut ctx, &selection()).unwrap();
    drop(ctx);
    let mut verifier = TpmVerifier::new(roots, policy);
    verifier.trust_ak(certified.record()).unwrap();
    Some(Enrolled {
        tpm,
        certified,
        verifier,
    })
}

pub fn quote(e: &Enrolled, binding: &Digest) -> TpmEvidence {
    TpmAttester::open(&e.tpm.tcti(), e.certified.clone())
        .unwrap()
        .quote(&selection(), binding)
        .unwrap()
}

#[test]
fn honest_quote_from_a_certified_ak_is_accepted() {
    let Some(e) = enrolled() else { return };
    let binding = Digest::of(b"job 1");
    let ev = quote(&e, &binding);
    let ok = e.verifier.verify(&ev, &binding).unwrap();
    assert_eq!(ok.ak_name, hex::encode(e.certified.ak_name()));
    assert_eq!(ok.quote_digest, Digest::of(&ev.attest));
    assert_eq!(
        ev.pcrs.keys().copied().collect::<BTreeSet<_>>(),
        selection()
    );
}

#[test]
fn quote_for_another_binding_is_refused_as_wrong_nonce() {
    let Some(e) = enrolled() else { return };
    let ev = quote(&e, &Digest::of(b"job 1"));
    let err = e.verifier.verify(&ev, &Digest::of(b"job 2")).unwrap_err();
    assert!(matches!(err, AttestError::QuoteWrongNonce { .. }), "{err}");
}

#[test]
fn pcr_extended_after_the_policy_was_recorded_is_refused() {
    let Some(e) = enrolled() else { return };
    let mut attester = TpmAttester::open(&e.tpm.tcti(), e.certified.clone()).unwrap();
    let mut values = DigestValues::new();
    values.set(
        HashingAlgorithm::Sha256,
        TpmDigest::try_from(vec![0xAB; 32]).unwrap(),
    );
    attester
        .context()
        .execute_with_nullauth_session(|c| c.pcr_extend(PcrHandle::Pcr14, values))
        .unwrap();
    let binding = Digest::of(b"job 1");
    let ev = attester.quote(&selection(), &binding).unwrap();
    let err = e.verifier.verify(&ev, &binding).unwrap_err();
    assert!(
        matches!(err, AttestError::PcrPolicyViolation { pcr: 14, .. }),
        "{err}"
    );
}

#[test]
fn pcr_values_rewritten_to_match_the_policy_are_refused() {
    let Some(e) = enrolled() else { return };
    let binding = Digest::of(b"job 1");
    let mut ev = quote(&e, &binding);
    ev.pcrs.insert(
        14,
        Digest::of(b"what the attacker wants the verifier to see"),
    );
    let err = e.verifier.verify(&ev, &binding).unwrap_err();
    assert!(matches!(err, AttestError::PcrDigestMismatch), "{err}");
}

#[test]
fn quote_from_an_uncertified_ak_is_refused() {
    let Some(e) = enrolled() else { return };
    // An AK made under the same, genuine EK but never put through MakeCredential /
    // ActivateCredential with the verifier.
    let mut ctx = connect(&e.tpm.tcti()).unwrap();
    let ek = ek::create_ek_object(&mut ctx, AsymmetricAlgorithm::Rsa, None).unwrap();
    let rogue = ak::create_ak_2(
        &mut ctx,
        ek,
        HashingAlgorithm::Sha256,
        AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
        SignatureSchemeAlgorithm::EcDsa,
        None,
        None,
    )
    .unwrap();
    let rogue_public = rogue.out_public.marshall().unwrap();
    let handle = ak::load_ak(&mut ctx, ek, None, rogue.out_private, rogue.out_public).unwrap();
    let binding = Digest::of(b"job 1");
    let ev = quote_with_key(
        &mut ctx,
        handle,
        &rogue_public,
        &e.certified.ek_cert,
        &selection(),
        binding.as_bytes(),
    )
    .unwrap();
    let err = e.verifier.verify(&ev, &binding).unwrap_err();
    assert!(matches!(err, AttestError::AkNotCertified { .. }), "{err}");
}

#[test]
fn ek_certificate_from_another_ca_is_refused() {
    let Some(e) = enrolled() else { return };
    let Some(other) = rapha_testkit::require!(Swtpm::start_provisioned()) else {
        return;
    };
    let other_roots = roots_of(&other);

    // Enrolment on TPM A with only B's CA as vendor root.
    let mut ctx = connect(&e.tpm.tcti()).unwrap();
    let err = enroll_ak(&mut ctx, &other_roots).unwrap_err();
    assert!(matches!(err, AttestError::EkCertUntrusted { .. }), "{err}");
    drop(ctx);

    // A verifier trusting only B's CA neither trusts A's AK nor accepts A's quote.
    let mut ctx = connect(&other.tcti()).unwrap();
    let policy = record_pcr_policy(&mut ctx, &selection()).unwrap();
    drop(ctx);
    let mut verifier = TpmVerifier::new(other_roots, policy);
    let err = verifier.trust_ak(e.certified.record()).unwrap_err();
    assert!(matches!(err, AttestError::EkCertUntrusted { .. }), "{err}");
    let binding = Digest::of(b"job 1");
    let err = verifier.verify(&quote(&e, &binding), &binding).unwrap_err();
    assert!(matches!(err, AttestError::EkCertUntrusted { .. }), "{err}");
}

#[test]
fn replayed_quote_is_refused() {
    let Some(e) = enrolled() else { return };
    let binding = Digest::of(b"job 1");
    let first = quote(&e, &binding);
    let second = quote(&e, &binding);
    e.verifier.verify(&second, &binding).unwrap();
    // The same quote again, and an older one after a newer one.
    for replay in [&second, &first] {
        let err = e.verifier.verify(replay, &binding).unwrap_err();
        assert!(matches!(err, AttestError::QuoteReplayed { .. }), "{err}");
    }
}

#[test]
fn tampered_quote_or_signature_is_refused() {
    let Some(e) = enrolled() else { return };
    let binding = Digest::of(b"job 1");
    let ev = quote(&e, &binding);
    let mut bad = ev.clone();
    let n = bad.attest.len();
    bad.attest[n - 1] ^= 1; // the PCR digest's last byte
    let err = e.verifier.verify(&bad, &binding).unwrap_err();
    assert!(matches!(err, AttestError::QuoteSignatureInvalid), "{err}");
    let mut bad = ev.clone();
    let n = bad.signature.len();
    bad.signature[n - 1] ^= 1;
    let err = e.verifier.verify(&bad, &binding).unwrap_err();
    assert!(matches!(err, AttestError::QuoteSignatureInvalid), "{err}");
    // The untouched quote still verifies (the checks above failed for the tampering only).
    e.verifier.verify(&ev, &binding).unwrap();
}

#[test]
fn readiness_reports_a_certified_ak_on_a_manufactured_tpm() {
    let Some(tpm) = rapha_testkit::require!(Swtpm::start_provisioned()) else {
        return;
    };
    let r = tpm_readiness(&tpm.tcti(), tpm.ek_ca_cert_pem().unwrap()).unwrap();
    assert_eq!(r.ak_name.len(), 68); // 0x000b || SHA-256
    assert!(
        r.ek_cert_issuer.contains("swtpm-localca"),
        "{}",
        r.ek_cert_issuer
    );
}

#[test]
fn readiness_fails_on_a_tpm_without_ek_certificate() {
    let Some(provisioned) = rapha_testkit::require!(Swtpm::start_provisioned()) else {
        return;
    };
    let Some(blank) = rapha_testkit::require!(Swtpm::start()) else {
        return;
    };
    let err = tpm_readiness(&blank.tcti(), provisioned.ek_ca_cert_pem().unwrap()).unwrap_err();
    assert!(matches!(err, AttestError::EkCertMissing { .. }), "{err}");
}

#[test]
fn readiness_fails_when_no_tpm_answers_or_the_root_file_is_missing() {
    let Some(tpm) = rapha_testkit::require!(Swtpm::start_provisioned()) else {
        return;
    };
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::copy(tpm.ek_ca_cert_pem().unwrap(), ca.path()).unwrap();
    let err = tpm_readiness(&tpm.tcti(), Path::new("/nonexistent/vendor-root.pem")).unwrap_err();
    assert!(
        matches!(err, AttestError::VendorRootUnreadable { .. }),
        "{err}"
    );
    let port = tpm.port();
    drop(tpm);
    let err = tpm_readiness(&format!("swtpm:host=127.0.0.1,port={port}"), ca.path()).unwrap_err();
    assert!(matches!(err, AttestError::TpmUnreachable { .. }), "{err}");
}
