//! Hospital TLS: the client trusts a PACS certificate issued by the hospital's own CA when given
//! that CA, and refuses the same PACS without it (no silent fallback to plain trust-all).

use rapha_dicom::{ClientOptions, DicomError, DicomWebClient, ScopeLimits, ScopedQuery};
use rapha_testkit::services::Orthanc;
use rapha_testkit::tls::{hospital_pki, openssl_available};

#[test]
fn custom_ca_is_trusted_and_required() {
    if !openssl_available() {
        eprintln!("SKIPPED: openssl CLI not installed (needed to make a test CA)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = hospital_pki(dir.path());
    let Some(orthanc) = rapha_testkit::require!(Orthanc::start_tls(&pki.cert, &pki.key)) else {
        return;
    };
    let url = orthanc.dicomweb_url();
    assert!(url.starts_with("https://"), "{url}");
    let q = ScopedQuery::parse("AccessionNumber=A1&limit=5", &ScopeLimits::default()).unwrap();

    let mut opts = ClientOptions::new(url.clone());
    opts.ca_pem = Some(pki.ca.clone());
    let trusted = DicomWebClient::new(opts).unwrap();
    assert_eq!(
        trusted.search_studies(&q).unwrap().len(),
        0,
        "TLS handshake with the hospital CA works"
    );

    let untrusted = DicomWebClient::new(ClientOptions::new(url)).unwrap();
    let err = untrusted.search_studies(&q).unwrap_err();
    assert!(matches!(err, DicomError::Http { .. }), "{err}");

    let mut bad = ClientOptions::new("https://127.0.0.1:1/dicom-web");
    bad.ca_pem = Some(dir.path().join("ext.cnf"));
    assert!(matches!(
        DicomWebClient::new(bad).unwrap_err(),
        DicomError::ClientConfig(_)
    ));
}
