//! SGX DCAP on the real sample quote and collateral shipped by dcap-qvl (testdata/README.md).
//! Layer (a) is attacked by flipping bytes; layer (b) by varying Rapha's policy against the
//! one real report, never by making a quote.

use std::collections::BTreeSet;

use dcap_qvl::QuoteCollateralV3;
use rapha_attest::sgx::{verify_quote, AllowedEnclave, SgxEvidence, SgxPolicy, SgxVerifier};
use rapha_attest::AttestError;
use rapha_core::Digest;

/// 2025-07-01T00:00:00Z: inside every validity window of the sample collateral (TCB info and
/// QE identity 2025-06-19..2025-07-19, PCK CRL 2025-06-19..2025-07-19, root CRL to 2026-04-03).
pub const SAMPLE_TIME: u64 = 1_751_328_000;

pub const SAMPLE_MR_ENCLAVE: &str =
    "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb";
pub const SAMPLE_MR_SIGNER: &str =
    "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6";

pub fn sample() -> SgxEvidence {
    let quote = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/sgx_quote")).unwrap();
    let collateral: QuoteCollateralV3 = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/sgx_quote_collateral.json"
        ))
        .unwrap(),
    )
    .unwrap();
    SgxEvidence { quote, collateral }
}

/// The sample enclave put "Hello, world!" (zero padded) in its report data; in these tests
/// that is the job binding the policy expects.
pub fn sample_binding() -> Digest {
    let mut b = [0u8; 32];
    b[..13].copy_from_slice(b"Hello, world!");
    Digest::from_bytes(b)
}

/// The policy under which the real sample passes: its MRENCLAVE, and the two advisories its
/// ConfigurationAndSWHardeningNeeded platform carries, listed explicitly.
pub fn sample_policy() -> SgxPolicy {
    SgxPolicy {
        accepted_advisories: ["INTEL-SA-00289", "INTEL-SA-00615"]
            .into_iter()
            .map(String::from)
            .collect(),
        allowed_enclaves: vec![AllowedEnclave::MrEnclave {
            mr_enclave: SAMPLE_MR_ENCLAVE.parse().unwrap(),
        }],
    }
}

fn verify_with(policy: SgxPolicy, binding: &Digest) -> Result<(), AttestError> {
    SgxVerifier::new(policy)
        .at_time(SAMPLE_TIME)
        .verify(&sample(), binding)
        .map(|_| ())
}

#[test]
fn real_sample_quote_verifies_offline() {
    let report = SgxVerifier::new(sample_policy())
        .at_time(SAMPLE_TIME)
        .verify(&sample(), &sample_binding())
        .unwrap();
    assert_eq!(report.tcb_status(), "ConfigurationAndSWHardeningNeeded");
    assert_eq!(report.advisory_ids(), ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert_eq!(hex::encode(report.mr_enclave()), SAMPLE_MR_ENCLAVE);
    assert_eq!(hex::encode(report.mr_signer()), SAMPLE_MR_SIGNER);
    assert!(!report.is_debug());
}

#[test]
fn evidence_with_collateral_round_trips_through_json() {
    let ev = sample();
    let json = serde_json::to_vec(&ev).unwrap();
    let back: SgxEvidence = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, ev);
    verify_quote(&back, SAMPLE_TIME).unwrap();
}

#[test]
fn flipped_bytes_anywhere_in_the_quote_are_rejected() {
    let ev = sample();
    // Header, report body (MRENCLAVE, report data), quote signature, attestation key, QE
    // report, QE report signature, and the base64 of the PCK leaf certificate. (Bytes of the
    // embedded copy of Intel's root certificate and PEM line breaks carry no meaning: the
    // chain is checked against the pinned Intel root, so changing them changes nothing.)
    for offset in [10, 48 + 70, 48 + 330, 440, 520, 700, 960, 1100, 2000] {
        let mut bad = ev.clone();
        bad.quote[offset] ^= 0x01;
        let err = verify_quote(&bad, SAMPLE_TIME).unwrap_err();
        assert!(
            matches!(err, AttestError::SgxQuoteRejected(_)),
            "offset {offset}: {err}"
        );
    }
}

/// Flips a base64 character inside the first certificate of a PEM chain (the issuing
/// intermediate; the chain's copy of Intel's root is not used, the pinned root is).
fn flip_middle(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    let mut i = 200;
    // Stay on a base64/JSON/hex character so the change is a content change, not a framing one.
    while !b[i].is_ascii_alphanumeric() {
        i += 1;
    }
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

#[test]
fn tampering_with_each_collateral_part_is_rejected() {
    let ev = sample();
    type Tamper = fn(&mut QuoteCollateralV3);
    let parts: [(&str, Tamper); 9] = [
        ("pck_crl_issuer_chain", |c| {
            c.pck_crl_issuer_chain = flip_middle(&c.pck_crl_issuer_chain)
        }),
        ("root_ca_crl", |c| {
            let n = c.root_ca_crl.len();
            c.root_ca_crl[n - 20] ^= 1
        }),
        ("pck_crl", |c| {
            let n = c.pck_crl.len();
            c.pck_crl[n - 20] ^= 1
        }),
        ("tcb_info_issuer_chain", |c| {
            c.tcb_info_issuer_chain = flip_middle(&c.tcb_info_issuer_chain)
        }),
        ("tcb_info", |c| {
            c.tcb_info = c.tcb_info.replacen("\"pcesvn\":13", "\"pcesvn\":14", 1)
        }),
        ("tcb_info_signature", |c| c.tcb_info_signature[5] ^= 1),
        ("qe_identity_issuer_chain", |c| {
            c.qe_identity_issuer_chain = flip_middle(&c.qe_identity_issuer_chain)
        }),
        ("qe_identity", |c| {
            c.qe_identity = c
                .qe_identity
                .replacen("\"isvprodid\":1", "\"isvprodid\":2", 1)
        }),
        ("qe_identity_signature", |c| c.qe_identity_signature[5] ^= 1),
    ];
    for (name, tamper) in parts {
        let mut bad = ev.clone();
        tamper(&mut bad.collateral);
        assert_ne!(
            bad.collateral, ev.collateral,
            "{name}: tamper changed nothing"
        );
        match verify_quote(&bad, SAMPLE_TIME) {
            Err(AttestError::SgxQuoteRejected(_)) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn collateral_past_its_next_update_is_rejected() {
    // 2025-08-01: TCB info, QE identity and the PCK CRL have expired.
    let err = verify_quote(&sample(), 1_754_006_400).unwrap_err();
    assert!(matches!(err, AttestError::SgxQuoteRejected(_)), "{err}");
}

#[test]
fn platform_not_up_to_date_is_refused_without_accepted_advisories() {
    // dcap-qvl itself returns Ok for this platform; Rapha's policy does not.
    let mut policy = sample_policy();
    policy.accepted_advisories = BTreeSet::new();
    let err = verify_with(policy, &sample_binding()).unwrap_err();
    assert!(
        matches!(&err, AttestError::SgxTcbNotUpToDate { status } if status == "ConfigurationAndSWHardeningNeeded"),
        "{err}"
    );
}

#[test]
fn advisory_missing_from_the_accepted_list_is_refused() {
    let mut policy = sample_policy();
    policy.accepted_advisories.remove("INTEL-SA-00615");
    let err = verify_with(policy, &sample_binding()).unwrap_err();
    assert!(
        matches!(&err, AttestError::SgxAdvisoryNotAccepted { advisory, .. } if advisory == "INTEL-SA-00615"),
        "{err}"
    );
}

#[test]
fn enclave_not_on_the_allow_list_is_refused() {
    let mut policy = sample_policy();
    policy.allowed_enclaves = vec![AllowedEnclave::MrEnclave {
        mr_enclave: Digest::of(b"another build"),
    }];
    let err = verify_with(policy, &sample_binding()).unwrap_err();
    assert!(
        matches!(err, AttestError::SgxMeasurementNotAllowed { .. }),
        "{err}"
    );

    let err = verify_with(
        SgxPolicy {
            allowed_enclaves: vec![],
            ..sample_policy()
        },
        &sample_binding(),
    )
    .unwrap_err();
    assert!(
        matches!(err, AttestError::SgxMeasurementNotAllowed { .. }),
        "{err}"
    );
}

#[test]
fn mrsigner_rule_checks_product_id_and_minimum_svn() {
    let signer: Digest = SAMPLE_MR_SIGNER.parse().unwrap();
    let with = |isv_prod_id, min_isv_svn| SgxPolicy {
        allowed_enclaves: vec![AllowedEnclave::MrSigner {
            mr_signer: signer,
            isv_prod_id,
            min_isv_svn,
        }],
        ..sample_policy()
    };
    verify_with(with(0, 0), &sample_binding()).unwrap();
    for (prod, svn) in [(1, 0), (0, 1)] {
        let err = verify_with(with(prod, svn), &sample_binding()).unwrap_err();
        assert!(
            matches!(err, AttestError::SgxMeasurementNotAllowed { .. }),
            "{prod}/{svn}: {err}"
        );
    }
}

#[test]
fn report_data_for_another_job_is_refused() {
    let err = verify_with(sample_policy(), &Digest::of(b"another job")).unwrap_err();
    assert!(
        matches!(err, AttestError::SgxReportDataMismatch { .. }),
        "{err}"
    );
}

#[test]
fn tdx_quote_is_not_an_sgx_enclave_quote() {
    let quote = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tdx_quote")).unwrap();
    let collateral: QuoteCollateralV3 = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/tdx_quote_collateral.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let err = verify_quote(&SgxEvidence { quote, collateral }, SAMPLE_TIME).unwrap_err();
    assert!(matches!(err, AttestError::SgxNotEnclaveQuote(_)), "{err}");
}
