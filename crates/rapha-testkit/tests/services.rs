//! The harness against the real services.

use std::process::Command;
use std::time::{Duration, Instant};

use dicom_dictionary_std::tags;
use rapha_testkit::require;
use rapha_testkit::services::{Anvil, AnvilOptions, HarnessError, Orthanc, Swtpm};
use serde_json::{json, Value};

use crate::support::{pydicom_corpus, tool};

/// A QIDO study answer's StudyInstanceUID (DICOM JSON: tag 0020000D).
fn qido_study_uid(study: &Value) -> &str {
    study["0020000D"]["Value"][0].as_str().unwrap()
}

#[test]
fn orthanc_stores_a_part10_file_and_qido_by_patient_id_finds_its_study() {
    let Some(corpus) = pydicom_corpus() else {
        return;
    };
    let Some(orthanc) = require!(Orthanc::start()) else {
        return;
    };
    let file = corpus.join("CT_small.dcm");
    let obj = dicom_object::open_file(&file).unwrap();
    let patient_id = obj
        .element(tags::PATIENT_ID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim()
        .to_owned();
    let study_uid = obj
        .element(tags::STUDY_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap();
    let study_uid = study_uid.trim_end_matches('\0').trim().to_owned();

    let id = orthanc.upload_file(&file).unwrap();
    assert!(!id.is_empty());
    assert!(
        std::fs::read_dir(orthanc.storage_dir())
            .unwrap()
            .next()
            .is_some(),
        "storage empty"
    );

    let found = orthanc
        .get_json(&format!("/dicom-web/studies?PatientID={patient_id}"))
        .unwrap();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(qido_study_uid(&found[0]), study_uid);

    let none = orthanc
        .get_json("/dicom-web/studies?PatientID=NOBODY-HERE")
        .unwrap();
    assert_eq!(none.as_array().unwrap().len(), 0);
}

#[test]
fn orthanc_rejects_a_file_that_is_not_dicom() {
    let Some(orthanc) = require!(Orthanc::start()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.dcm");
    std::fs::write(&junk, b"this is not a DICOM file").unwrap();
    match orthanc.upload_file(&junk) {
        Err(HarnessError::Rejected { status, .. }) => assert_eq!(status, 400),
        other => panic!("expected a rejection, got {other:?}"),
    }
    let (ok, bad) = orthanc.upload_dir(dir.path()).unwrap();
    assert_eq!((ok, bad), (0, 1));
}

#[test]
fn orthanc_serves_https_with_the_given_certificate() {
    if !tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let Some(orthanc) = require!(Orthanc::start_tls(&cert, &key)) else {
        return;
    };
    assert!(orthanc.base_url().starts_with("https://127.0.0.1:"));
    let system = orthanc.get_json("/system").unwrap();
    assert!(system["Version"].is_string(), "{system}");

    // The certificate Orthanc presents is the one we gave it.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", orthanc.http_port()),
        ])
        .arg("-showcerts")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let served = String::from_utf8_lossy(&out.stdout);
    let given = std::fs::read_to_string(&cert).unwrap();
    let body: String = given.lines().filter(|l| !l.starts_with("-----")).collect();
    let served_body: String = served.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        served_body.contains(&body),
        "served certificate differs:\n{served}"
    );
}

fn tpm2(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

#[test]
fn swtpm_answers_startup_and_getrandom() {
    if !tool("tpm2_getrandom") {
        return;
    }
    let Some(tpm) = require!(Swtpm::start()) else {
        return;
    };
    let tcti = tpm.tcti();
    assert_eq!(tcti, format!("swtpm:host=127.0.0.1,port={}", tpm.port()));
    let a = tpm2(&["tpm2_getrandom", "-T", &tcti, "--hex", "16"]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = tpm2(&["tpm2_getrandom", "-T", &tcti, "--hex", "16"]);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let (a, b) = (
        String::from_utf8(a.stdout).unwrap(),
        String::from_utf8(b.stdout).unwrap(),
    );
    assert_eq!(a.trim().len(), 32, "{a}");
    assert!(a.trim().chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b, "two TPM random draws were equal");
    assert!(tpm.ek_ca_cert_pem().is_none());
}

#[test]
fn provisioned_swtpm_holds_an_ek_certificate_signed_by_the_private_local_ca() {
    if !tool("tpm2_nvread") || !tool("openssl") {
        return;
    }
    let Some(tpm) = require!(Swtpm::start_provisioned()) else {
        return;
    };
    let ca = tpm.ek_ca_cert_pem().unwrap();
    assert!(
        ca.starts_with(tpm.state_dir().parent().unwrap()),
        "CA is not the harness's own"
    );
    let root = tpm.ek_root_ca_cert_pem().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ek = dir.path().join("ek.der");
    // 0x01c00002: the RSA EK certificate NV index (TCG EK Credential Profile).
    let out = tpm2(&[
        "tpm2_nvread",
        "-T",
        &tpm.tcti(),
        "-o",
        ek.to_str().unwrap(),
        "0x01c00002",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = dir.path().join("ek.pem");
    let conv = tpm2(&[
        "openssl",
        "x509",
        "-inform",
        "DER",
        "-in",
        ek.to_str().unwrap(),
        "-out",
        pem.to_str().unwrap(),
    ]);
    assert!(
        conv.status.success(),
        "{}",
        String::from_utf8_lossy(&conv.stderr)
    );
    let verify = tpm2(&[
        "openssl",
        "verify",
        "-CAfile",
        root.to_str().unwrap(),
        "-untrusted",
        ca.to_str().unwrap(),
        pem.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success(),
        "EK certificate does not chain to the local CA: {text}"
    );

    // Attacker's side: the same EK certificate does not verify against an unrelated CA.
    let other = dir.path().join("other.pem");
    let otherkey = dir.path().join("other.key");
    let mk = tpm2(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=not-the-tpm-ca",
        "-keyout",
        otherkey.to_str().unwrap(),
        "-out",
        other.to_str().unwrap(),
    ]);
    assert!(mk.status.success());
    let wrong = tpm2(&[
        "openssl",
        "verify",
        "-CAfile",
        other.to_str().unwrap(),
        pem.to_str().unwrap(),
    ]);
    assert!(
        !wrong.status.success(),
        "EK certificate verified against an unrelated CA"
    );
}

fn wait_for_receipt(anvil: &Anvil, tx: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = anvil.rpc("eth_getTransactionReceipt", json!([tx])).unwrap();
        if !r.is_null() {
            return r;
        }
        assert!(Instant::now() < deadline, "transaction {tx} not mined");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn anvil_answers_polygon_chain_id_and_lists_its_dev_accounts() {
    let Some(anvil) = require!(Anvil::start(AnvilOptions::default())) else {
        return;
    };
    assert_eq!(anvil.rpc("eth_chainId", json!([])).unwrap(), json!("0x89"));
    let accounts = anvil.dev_accounts();
    assert_eq!(accounts.len(), 10);
    let rpc_accounts = anvil.rpc("eth_accounts", json!([])).unwrap();
    let rpc_accounts: Vec<String> = rpc_accounts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_lowercase())
        .collect();
    for (addr, key) in &accounts {
        assert!(
            rpc_accounts.contains(&addr.to_lowercase()),
            "{addr} not served by anvil"
        );
        assert_eq!(key.len(), 66);
    }
}

#[test]
fn anvil_restart_keeps_port_and_a_sent_transactions_effect() {
    let Some(mut anvil) = require!(Anvil::start(AnvilOptions::default())) else {
        return;
    };
    let port = anvil.port();
    let from = anvil.dev_accounts()[0].0.clone();
    let to = "0x000000000000000000000000000000000000dEaD";
    let tx = anvil
        .rpc(
            "eth_sendTransaction",
            json!([{ "from": from, "to": to, "value": "0xde0b6b3a7640000" }]),
        )
        .unwrap();
    let receipt = wait_for_receipt(&anvil, tx.as_str().unwrap());
    assert_eq!(receipt["status"], json!("0x1"));
    let before = anvil.rpc("eth_getBalance", json!([to, "latest"])).unwrap();
    assert_eq!(before, json!("0xde0b6b3a7640000"));

    anvil.restart().unwrap();
    assert_eq!(anvil.port(), port);
    assert!(
        anvil.state_file().is_file(),
        "no state dumped at {}",
        anvil.state_file().display()
    );
    let after = anvil.rpc("eth_getBalance", json!([to, "latest"])).unwrap();
    assert_eq!(after, before);
    assert_eq!(anvil.rpc("eth_chainId", json!([])).unwrap(), json!("0x89"));
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn dropping_a_service_stops_it_and_frees_its_ports() {
    let Some(tpm) = require!(Swtpm::start()) else {
        return;
    };
    let (port, dir) = (tpm.port(), tpm.state_dir().parent().unwrap().to_owned());
    assert!(port_open(port + 1));
    drop(tpm);
    assert!(
        !port_open(port) && !port_open(port + 1),
        "swtpm still listening after drop"
    );
    assert!(
        !dir.exists(),
        "service directory left behind after a passing test"
    );
}

#[test]
fn a_panicking_test_still_stops_the_service_and_keeps_its_log() {
    if !tool("swtpm") {
        return;
    }
    {
        let handle = std::thread::spawn(|| {
            let tpm = Swtpm::start().unwrap().unwrap();
            let facts = (tpm.port(), tpm.log_path().to_owned());
            std::panic::panic_any(facts);
        });
        let payload = handle.join().unwrap_err();
        let (port, log) = payload
            .downcast_ref::<(u16, std::path::PathBuf)>()
            .unwrap()
            .clone();
        assert!(!port_open(port), "swtpm survived the panic");
        assert!(
            log.is_file(),
            "log {} not kept after a panic",
            log.display()
        );
        std::fs::remove_dir_all(log.parent().unwrap()).unwrap();
    }
}

/// A test binary killed outright runs no destructors; the wrapper's watchdog must still stop
/// the service once its parent is gone.
#[test]
fn a_service_dies_with_a_killed_test_process() {
    if !tool("swtpm") {
        return;
    }
    let mut holder = Command::new(env!("CARGO_BIN_EXE_rapha-testkit"))
        .args(["serve", "swtpm"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let info: Value = serde_json::from_str(&line).unwrap();
    let port = u16::try_from(info["port"].as_u64().unwrap()).unwrap();
    assert!(port_open(port + 1));
    holder.kill().unwrap(); // SIGKILL: no Drop runs in the holder
    holder.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while port_open(port + 1) {
        assert!(
            Instant::now() < deadline,
            "swtpm outlived its killed parent"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::path::PathBuf::from(info["log"].as_str().unwrap());
    let _ = std::fs::remove_dir_all(log.parent().unwrap());
}

#[test]
fn a_service_that_cannot_bind_its_port_fails_with_its_log_kept() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let opts = AnvilOptions {
        port: Some(port),
        ..AnvilOptions::default()
    };
    match Anvil::start(opts) {
        Ok(None) => {} // anvil not installed: start() already printed SKIPPED
        Ok(Some(a)) => panic!("anvil started on a taken port: {a:?}"),
        Err(HarnessError::Exited { service, log, .. }) => {
            assert_eq!(service, "anvil");
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(!text.is_empty(), "empty log kept at {}", log.display());
            std::fs::remove_dir_all(log.parent().unwrap()).unwrap();
        }
        Err(e) => panic!("expected Exited, got {e}"),
    }
}
