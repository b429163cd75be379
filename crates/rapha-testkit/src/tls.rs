//! A hospital's own PKI for TLS tests: a private CA and a server certificate for 127.0.0.1
//! signed by it, made with the `openssl` CLI (the PACS's certificate in the DICOMweb client's
//! and the node doctor's TLS tests).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files [`hospital_pki`] writes.
pub struct Pki {
    /// The CA certificate (PEM) the client is told to trust.
    pub ca: PathBuf,
    /// The server certificate for 127.0.0.1 (PEM), signed by the CA.
    pub cert: PathBuf,
    /// The server certificate's private key (PEM).
    pub key: PathBuf,
}

/// Whether the `openssl` CLI runs here.
pub fn openssl_available() -> bool {
    Command::new("openssl").arg("version").output().is_ok()
}

/// Runs `openssl` in `dir`.
///
/// # Panics
/// If it does not run or fails (with its stderr).
#[allow(clippy::expect_used, clippy::panic)] // test support: a failed step is a failed test
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA (P-256, CA:TRUE, keyCertSign) and a server certificate for 127.0.0.1 signed by
/// it (P-256, serverAuth), both valid two days, written under `dir` (`ca.pem`, `server.pem`,
/// `server.key`).
///
/// # Panics
/// If openssl fails or `dir` is not writable.
#[allow(clippy::expect_used)] // test support: a failed step is a failed test
pub fn hospital_pki(dir: &Path) -> Pki {
    // A new P-256 key (unencrypted) in `key` and a request for it, as `openssl req` makes them.
    let request = |extra: &[&str], key: &str, out: &str, subject: &str| {
        let mut args = vec!["req"];
        args.extend_from_slice(extra);
        args.extend([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
            "-out",
            out,
            "-subj",
            subject,
        ]);
        openssl(dir, &args);
    };
    request(
        &[
            "-x509",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        "ca.key",
        "ca.pem",
        "/CN=Rapha test PACS CA",
    );
    request(&[], "server.key", "server.csr", "/CN=127.0.0.1");
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("the openssl extension file is written");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}
