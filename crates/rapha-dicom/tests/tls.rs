//! Hospital TLS: the client trusts a PACS certificate issued by the hospital's own CA when given
//! that CA, and refuses the same PACS without it (no silent fallback to plain trust-all).

use std::path::Path;
use std::process::Command;

use rapha_dicom::{ClientOptions, DicomError, DicomWebClient, ScopeLimits, ScopedQuery};
use rapha_testkit::services::Orthanc;

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        st.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// A private CA and a server certificate for 127.0.0.1 signed by it.
fn hospital_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Hospital Test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "pacs.key",
            "-out",
            "pacs.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "pacs.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "pacs.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[test]
fn custom_ca_is_trusted_and_required() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl CLI not installed (needed to make a test CA)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    hospital_pki(dir.path());
    let Some(orthanc) = rapha_testkit::require!(Orthanc::start_tls(
        &dir.path().join("pacs.pem"),
        &dir.path().join("pacs.key")
    )) else {
        return;
    };
    let url = orthanc.dicomweb_url();
    assert!(url.starts_with("https://"), "{url}");
    let q = ScopedQuery::parse("AccessionNumber=A1&limit=5", &ScopeLimits::default()).unwrap();

    let mut opts = ClientOptions::new(url.clone());
    opts.ca_pem = Some(dir.path().join("ca.pem"));
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
