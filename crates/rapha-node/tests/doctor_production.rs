//! The production preflight against the real things: Orthanc behind TLS with a CA made here,
//! swtpm provisioned with an EK certificate from its local CA, runc, anvil with the escrow
//! deployed. Everything that can pass here passes; exactly SGX (no hardware) and the test
//! token (flagged non-production) fail. A doctor that fails everything fails this test, and
//! so does one that passes what it should not.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rapha_node::config::Config;
use rapha_node::doctor::{run_doctor, Report, Status};
use rapha_testkit::services::{Anvil, AnvilOptions, Orthanc, Swtpm};
use rapha_testkit::tls::{hospital_pki, Pki};
use serde_json::{json, Value};

use crate::node_common::*;

/// Deploys a contract from anvil's first dev account with plain JSON-RPC; returns its address.
fn deploy(anvil: &Anvil, from: &str, data: String) -> String {
    let tx = anvil
        .rpc(
            "eth_sendTransaction",
            json!([{"from": from, "data": data, "gas": "0x989680"}]),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let receipt = anvil.rpc("eth_getTransactionReceipt", json!([tx])).unwrap();
        if let Some(addr) = receipt.get("contractAddress").and_then(Value::as_str) {
            assert_eq!(receipt["status"], "0x1", "deployment reverted: {receipt}");
            return addr.to_owned();
        }
        assert!(Instant::now() < deadline, "no receipt for {tx}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn artifact_bytecode(name: &str) -> Option<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../contracts/artifacts/{name}.json"));
    let text = std::fs::read_to_string(&path).ok()?;
    let v: Value = serde_json::from_str(&text).unwrap();
    Some(v["bytecode"].as_str().unwrap().to_owned())
}

fn pad_address(addr: &str) -> String {
    format!(
        "{:0>64}",
        addr.trim_start_matches("0x").to_ascii_lowercase()
    )
}

fn status<'a>(report: &'a Report, prefix: &str) -> &'a rapha_node::doctor::Check {
    report
        .checks
        .iter()
        .find(|c| c.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no check {prefix:?} in {report}"))
}

#[test]
fn real_production_setup_fails_exactly_sgx_and_the_test_token() {
    let Some(runc) = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        assert!(
            !rapha_testkit::services::services_required(),
            "runc is required"
        );
        eprintln!("SKIPPED: runc not installed");
        return;
    };
    let (Some(escrow_code), Some(usdc_code)) = (
        artifact_bytecode("RaphaEscrow"),
        artifact_bytecode("MockUSDC"),
    ) else {
        assert!(
            !rapha_testkit::services::services_required(),
            "contracts/artifacts are required"
        );
        eprintln!("SKIPPED: contracts/artifacts/*.json not built");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Pki { ca, cert, key } = hospital_pki(d);
    let Some(orthanc) = rapha_testkit::require!(Orthanc::start_tls(&cert, &key)) else {
        return;
    };
    let Some(tpm) = rapha_testkit::require!(Swtpm::start_provisioned()) else {
        return;
    };
    let Some(anvil) = rapha_testkit::require!(Anvil::start(AnvilOptions::default())) else {
        return;
    };

    let (from, _) = anvil.dev_accounts()[0].clone();
    let (treasury, _) = anvil.dev_accounts()[1].clone();
    let token = deploy(&anvil, &from, usdc_code);
    let escrow = deploy(
        &anvil,
        &from,
        format!(
            "{escrow_code}{}{}",
            pad_address(&token),
            pad_address(&treasury)
        ),
    );

    let mut spec = ConfigSpec::under(d);
    spec.dicomweb_url = orthanc.dicomweb_url();
    spec.ca_file = Some(ca.clone());
    rapha_node::keygen::write_hmac(&spec.hmac).unwrap();
    rapha_node::keygen::write_node_key(&spec.node_key).unwrap();
    spec.dpo_keys = vec![rapha_policy::DpoSigningKey::generate().public().to_hex()];
    std::fs::write(&spec.opt_out, "PatientID\nP-OPTED-OUT-1\n").unwrap();
    let publisher = rapha_bundle::SigningKey::generate_ed25519().public_key();
    rapha_bundle::TrustStore::add(
        &spec.trust,
        "acme-ai",
        &publisher,
        &["chest-xray-classifier".into()],
        None,
    )
    .unwrap();
    spec.tcti = tpm.tcti();
    spec.vendor_root = tpm
        .ek_ca_cert_pem()
        .expect("provisioned swtpm has a local CA")
        .to_owned();
    spec.expected_pcrs = {
        let mut ctx = rapha_attest::tpm::connect(&tpm.tcti()).unwrap();
        let set = [0u8, 7].into_iter().collect();
        rapha_attest::tpm::read_pcrs(&mut ctx, &set)
            .unwrap()
            .into_iter()
            .map(|(i, d)| (i, d.to_hex()))
            .collect()
    };
    rapha_node::keygen::write_node_key(&spec.settler_key).unwrap();
    std::fs::write(
        &spec.tokens,
        "admin adm-0123456789abcdef0123456789abcdef0123\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &spec.tokens,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    spec.runtime = runc;
    spec.rpc_url = anvil.rpc_url();
    spec.chain_id = anvil.chain_id();
    spec.usdc = token.clone();
    spec.escrow = escrow.clone();
    spec.test_token = true;
    std::fs::create_dir_all(&spec.data_dir).unwrap();
    std::fs::create_dir_all(&spec.state_dir).unwrap();
    let config_path = spec.write(&d.join("node.toml"));

    let report = run_doctor(&Config::load(&config_path).unwrap());
    let failed: Vec<&str> = report.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(
        failed,
        vec![
            "attestation: SGX ([attestation.sgx])",
            "USDC token (chain.usdc_address)"
        ],
        "report:\n{report}"
    );
    assert!(
        status(&report, "USDC token")
            .detail
            .starts_with("test token: non-production"),
        "{report}"
    );
    assert!(report.checks.len() >= 17, "{report}");
    for name in [
        "DICOMweb endpoint",
        "HMAC key",
        "attestation: TPM",
        "trainer command",
        "chain RPC",
        "escrow contract",
        "policy",
        "trust store",
        "depositor accounts",
        "settlement",
        "API tokens",
    ] {
        assert_eq!(status(&report, name).status, Status::Pass, "{report}");
    }
    // No SGX here: the check names the missing Gramine quote source.
    assert!(
        status(&report, "attestation: SGX")
            .detail
            .starts_with("no SGX quote source"),
        "{report}"
    );
    // The AK is enrolled at first start, not by doctor.
    assert!(
        status(&report, "attestation: TPM attestation key")
            .detail
            .contains("not enrolled yet"),
        "{report}"
    );

    // The binary prints the same and exits 1.
    let out = node(&["doctor", "--config", config_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("2 of "), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("PASS  attestation: TPM"),
        "{}",
        stdout(&out)
    );

    // From the attacker's side: each real component swapped for a wrong one fails its check.
    let check_with = |edit: &dyn Fn(&mut ConfigSpec), name: &str, want: &str| {
        let mut s = ConfigSpec::under(d);
        s.dicomweb_url = spec.dicomweb_url.clone();
        s.ca_file = spec.ca_file.clone();
        s.dpo_keys = spec.dpo_keys.clone();
        s.tcti = spec.tcti.clone();
        s.vendor_root = spec.vendor_root.clone();
        s.expected_pcrs = spec.expected_pcrs.clone();
        s.runtime = spec.runtime.clone();
        s.rpc_url = spec.rpc_url.clone();
        s.usdc = spec.usdc.clone();
        s.escrow = spec.escrow.clone();
        s.test_token = true;
        edit(&mut s);
        let path = s.write(&d.join("variant.toml"));
        let report = run_doctor(&Config::load(&path).unwrap());
        let c = status(&report, name);
        assert_eq!(c.status, Status::Fail, "{name} should fail:\n{report}");
        assert!(
            c.detail.contains(want),
            "{name}: expected {want:?} in {:?}",
            c.detail
        );
    };
    // A trusted publisher with no account to pay from: every job of it would be refused at the
    // deposit step, after the DPO's review.
    check_with(
        &|s| s.depositors.clear(),
        "depositor accounts",
        "no depositor account for trusted publisher(s) acme-ai",
    );
    // PACS certificate not from the configured CA (no ca_file: the web PKI does not know it).
    check_with(&|s| s.ca_file = None, "DICOMweb endpoint", "did not answer");
    // Plain HTTP to the PACS.
    check_with(
        &|s| s.dicomweb_url = format!("http://127.0.0.1:{}/dicom-web", orthanc.plain_http_port()),
        "DICOMweb endpoint",
        "not HTTPS",
    );
    // An EK root that did not sign the TPM's EK certificate.
    check_with(&|s| s.vendor_root = ca.clone(), "attestation: TPM", "");
    // A PCR that is not what the hospital recorded (the platform booted differently).
    check_with(
        &|s| s.expected_pcrs = vec![(7, "11".repeat(32))],
        "attestation: TPM",
        "PCR 7 is",
    );
    // A settlement key others can read.
    std::fs::set_permissions(
        &spec.settler_key,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .unwrap();
    check_with(&|_| {}, "settlement", "mode 644");
    // A chain whose id is not the configured one.
    check_with(&|s| s.chain_id = 80002, "chain RPC", "serves chain id 137");
    // An escrow address with no contract (an account).
    let eoa = treasury.clone();
    check_with(
        &move |s| s.escrow = eoa.clone(),
        "escrow contract",
        "no contract deployed",
    );
    // The mock token without the test-token switch is not official USDC.
    check_with(
        &|s| s.test_token = false,
        "USDC token",
        "is not official USDC on Polygon PoS",
    );
}

/// An `http://` PACS is never a PASS, but doctor still probes it, so the admin learns whether
/// it is reachable and speaks DICOMweb: the plain Orthanc here answers, a closed port does not.
#[test]
fn an_http_pacs_fails_for_want_of_tls_saying_whether_it_answered() {
    let Some(orthanc) = rapha_testkit::require!(Orthanc::start()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ConfigSpec::under(dir.path());
    spec.dicomweb_url = orthanc.dicomweb_url();
    assert!(
        spec.dicomweb_url.starts_with("http://"),
        "{}",
        spec.dicomweb_url
    );
    // The DICOMweb check of doctor run on `spec`: it fails, and says `answer`.
    let fails_saying = |spec: &ConfigSpec, answer: &str| {
        let report = run_doctor(&Config::load(&spec.write(&dir.path().join("node.toml"))).unwrap());
        let check = status(&report, "DICOMweb endpoint");
        assert_eq!(check.status, Status::Fail, "{report}");
        assert!(
            check.detail.contains("is not HTTPS; over HTTP, ") && check.detail.contains(answer),
            "{report}"
        );
    };
    fails_saying(&spec, "answered a scoped QIDO-RS study search");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    spec.dicomweb_url = format!("http://{}/dicom-web", closed.local_addr().unwrap());
    drop(closed);
    fails_saying(&spec, "did not answer a scoped QIDO-RS search");
}
