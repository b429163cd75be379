//! The PCK CRL issuer chain check (`rapha_attest::x509::verify_chain_to_pinned`), attacked
//! with chains made by the `openssl` CLI: a correctly signed chain is not enough. Each
//! certificate must be valid at the verification time, each issuer a CA (basicConstraints
//! CA:TRUE) allowed to sign certificates (keyUsage keyCertSign), within its path length, and
//! the first certificate, which signs the CRL, allowed to sign CRLs.

use std::path::Path;

use rapha_attest::x509::verify_chain_to_pinned;
use rapha_testkit::tls::openssl;

const DAY: u64 = 86_400;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A P-256 key `name.key`.
fn key(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ],
    );
}

/// A self-signed root `name.pem` with the given extensions (one `-addext` per line), valid
/// `days` days from now.
fn root(dir: &Path, name: &str, ext: &str, days: u32) {
    key(dir, name);
    let (key, subject, days, out) = (
        format!("{name}.key"),
        format!("/CN={name}"),
        days.to_string(),
        format!("{name}.pem"),
    );
    let mut args = vec![
        "req", "-x509", "-new", "-key", &key, "-subj", &subject, "-days", &days, "-out", &out,
    ];
    for line in ext.lines().filter(|l| !l.trim().is_empty()) {
        args.extend(["-addext", line.trim()]);
    }
    openssl(dir, &args);
}

/// A certificate `name.pem` for a new key, signed by `issuer`, with the given extensions.
fn issue(dir: &Path, name: &str, issuer: &str, ext: &str, days: u32) {
    key(dir, name);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={name}"),
            "-config",
            "/dev/null",
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-CAcreateserial",
            "-days",
            &days.to_string(),
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

const CA: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
const CA_PATHLEN_0: &str =
    "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n";
const NOT_CA: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n";
const CA_CRL_ONLY: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,cRLSign\n";
const CA_CERT_ONLY: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n";

fn pem(dir: &Path, names: &[&str]) -> Vec<u8> {
    names
        .iter()
        .flat_map(|n| std::fs::read(dir.join(format!("{n}.pem"))).unwrap())
        .collect()
}

fn der(dir: &Path, name: &str) -> Vec<u8> {
    use x509_cert::der::Encode as _;
    let text = std::fs::read(dir.join(format!("{name}.pem"))).unwrap();
    x509_cert::Certificate::load_pem_chain(&text).unwrap()[0]
        .to_der()
        .unwrap()
}

/// root → intermediate → crl signer, the shape of Intel's chain (Root CA → PCK Platform CA).
fn pki(root_ext: &str, mid_ext: &str, signer_ext: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    root(d, "root", root_ext, 30);
    issue(d, "mid", "root", mid_ext, 30);
    issue(d, "signer", "mid", signer_ext, 30);
    dir
}

fn check(dir: &Path, chain: &[&str], at: u64) -> Result<(), String> {
    verify_chain_to_pinned(&pem(dir, chain), &der(dir, "root"), at)
}

#[test]
fn a_chain_of_cas_valid_now_passes_and_ending_at_the_root_itself_too() {
    let pki = pki(CA, CA, CA);
    let d = pki.path();
    check(d, &["signer", "mid"], now()).unwrap();
    check(d, &["signer", "mid", "root"], now()).unwrap();
}

#[test]
fn a_certificate_outside_its_validity_is_refused_at_either_end() {
    let pki = pki(CA, CA, CA);
    let d = pki.path();
    let err = check(d, &["signer", "mid"], now() + 60 * DAY).unwrap_err();
    assert!(err.contains("not valid at"), "expired: {err}");
    let err = check(d, &["signer", "mid"], now() - 2 * DAY).unwrap_err();
    assert!(err.contains("not valid at"), "not yet valid: {err}");
}

#[test]
fn an_issuer_that_is_not_a_ca_is_refused_though_its_signature_is_good() {
    let pki = pki(CA, NOT_CA, CA);
    let err = check(pki.path(), &["signer", "mid"], now()).unwrap_err();
    assert!(err.contains("CN=mid") && err.contains("not a CA"), "{err}");
}

#[test]
fn an_issuer_without_keycertsign_is_refused() {
    let pki = pki(CA, CA_CRL_ONLY, CA);
    let err = check(pki.path(), &["signer", "mid"], now()).unwrap_err();
    assert!(
        err.contains("CN=mid") && err.contains("keyCertSign"),
        "{err}"
    );
}

#[test]
fn a_crl_signer_without_crlsign_is_refused() {
    let pki = pki(CA, CA, CA_CERT_ONLY);
    let err = check(pki.path(), &["signer", "mid"], now()).unwrap_err();
    assert!(
        err.contains("CN=signer") && err.contains("cRLSign"),
        "{err}"
    );
}

#[test]
fn a_root_limited_to_no_intermediate_refuses_one() {
    let pki = pki(CA_PATHLEN_0, CA, CA);
    let err = check(pki.path(), &["signer", "mid"], now()).unwrap_err();
    assert!(err.contains("path length"), "{err}");
}
