//! A production node built from its configuration alone (`node_build::node_from_config`):
//! TPM evidence from swtpm through the configured TCTI with an AK enrolled once and kept in
//! the AK file, SGX from Gramine's attestation interface, the production verifier. This
//! machine has no SGX, so a job on it is refused at the attestation step with a receipt naming
//! the missing SGX quote, and the depositor is refunded (fail closed). A production config can
//! never build the development verifier (I8).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rapha_attest::VerifyMode;
use rapha_core::{CohortQuery, JobId, JobRequest, Outcome, Usdc};
use rapha_node::config::Config;
use rapha_node::node_build::{attestation_from_config, node_from_config, BuildError};
use rapha_node::store::JobState;
use rapha_testkit::node_config::NodeConfig;
use rapha_testkit::services::{Orthanc, Swtpm};

use crate::node_common::{sgx_collateral, ConfigSpec};
use crate::pipeline_e2e::{
    sandbox_ready, secret_file, Chain, NodeFixture, FEE, PUBLISHER, TRAINER,
};

const PCRS: [u8; 6] = [0, 1, 2, 3, 4, 7];

/// The swtpm's current sha256 PCR values, as `expected_pcrs` entries.
fn current_pcrs(tcti: &str) -> Vec<(u8, String)> {
    let mut ctx = rapha_attest::tpm::connect(tcti).unwrap();
    let set: BTreeSet<u8> = PCRS.into_iter().collect();
    rapha_attest::tpm::read_pcrs(&mut ctx, &set)
        .unwrap()
        .into_iter()
        .map(|(i, d)| (i, d.to_hex()))
        .collect()
}

fn load(spec: &ConfigSpec, dir: &Path) -> Config {
    Config::load(&spec.write(&dir.join("node.toml"))).unwrap()
}

#[test]
fn production_config_never_builds_development_attestation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let spec = ConfigSpec::under(d);
    let text = spec.to_toml();

    // Each missing or empty piece of production attestation is an error, never a fallback.
    let no_enclave = text.replace(
        &format!("mrenclave = [\"{}\"]", "00".repeat(32)),
        "mrenclave = []",
    );
    let no_pcrs = text.replace(
        &format!("expected_pcrs = {{ \"0\" = \"{}\" }}", "00".repeat(32)),
        "expected_pcrs = {}",
    );
    for (what, edited, want) in [
        (
            "no accepted enclave",
            no_enclave,
            "attestation.sgx.mrenclave",
        ),
        ("no PCRs", no_pcrs, "attestation.tpm.expected_pcrs"),
    ] {
        assert_ne!(edited, text, "{what}: the edit did not apply");
        let cfg = Config::parse(&edited).unwrap();
        let err = attestation_from_config(&cfg).expect_err(what);
        assert!(
            matches!(err, BuildError::Invalid { .. }) && err.to_string().contains(want),
            "{what}: {err}"
        );
    }
    let mut cfg = Config::parse(&text).unwrap();
    cfg.attestation.tpm = None;
    let err = attestation_from_config(&cfg).unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::ProductionAttestationMissing {
                section: "attestation.tpm",
                ..
            }
        ),
        "{err}"
    );
    let mut cfg = Config::parse(&text).unwrap();
    cfg.attestation.sgx = None;
    let err = attestation_from_config(&cfg).unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::ProductionAttestationMissing {
                section: "attestation.sgx",
                ..
            }
        ),
        "{err}"
    );
    let mut cfg = Config::parse(&text).unwrap();
    cfg.attestation.sgx.as_mut().unwrap().collateral_file = None;
    let err = attestation_from_config(&cfg).unwrap_err();
    assert!(
        err.to_string().contains("attestation.sgx.collateral_file"),
        "{err}"
    );
    // An unreachable TPM is an error too (the spec's TCTI points at a closed port).
    let cfg = Config::parse(&text).unwrap();
    let err = attestation_from_config(&cfg).unwrap_err();
    assert!(matches!(err, BuildError::Tpm(_)), "{err}");

    // The same configuration in demo mode gets the development verifier, as before.
    let mut cfg = Config::parse(&text).unwrap();
    cfg.mode = rapha_policy::Mode::Demo;
    assert_eq!(
        attestation_from_config(&cfg).unwrap().verifier.mode(),
        VerifyMode::Development
    );
}

#[test]
fn attestation_key_is_enrolled_once_kept_private_and_reused() {
    let Some(tpm) = rapha_testkit::require!(Swtpm::start_provisioned()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut spec = ConfigSpec::under(d);
    spec.tcti = tpm.tcti();
    spec.vendor_root = tpm.ek_ca_cert_pem().unwrap().to_owned();
    spec.expected_pcrs = current_pcrs(&tpm.tcti());
    let cfg = load(&spec, d);

    assert!(!spec.ak_file.exists());
    let first = attestation_from_config(&cfg).unwrap();
    assert_eq!(first.verifier.mode(), VerifyMode::Production);
    assert!(first.tpm_verifier.is_none());
    drop(first);
    let mode = std::fs::metadata(&spec.ak_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the AK file must not be readable by others");
    let enrolled = std::fs::read(&spec.ak_file).unwrap();

    // A restart loads the same AK instead of enrolling another.
    let second = attestation_from_config(&cfg).unwrap();
    assert_eq!(second.verifier.mode(), VerifyMode::Production);
    drop(second);
    assert_eq!(std::fs::read(&spec.ak_file).unwrap(), enrolled);

    // doctor sees the enrolled AK and that this TPM loads it.
    let ak_check = |cfg: &Config| {
        rapha_node::doctor::run_doctor(cfg)
            .checks
            .into_iter()
            .find(|c| c.name.starts_with("attestation: TPM attestation key"))
            .unwrap()
    };
    let c = ak_check(&cfg);
    assert_eq!(c.status, rapha_node::doctor::Status::Pass, "{}", c.detail);
    assert!(
        c.detail.contains("enrolled, loads on this TPM"),
        "{}",
        c.detail
    );

    // An AK file others can read is refused, not used (by the node and by doctor).
    std::fs::set_permissions(&spec.ak_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = ak_check(&cfg);
    assert_eq!(c.status, rapha_node::doctor::Status::Fail, "{}", c.detail);
    assert!(c.detail.contains("mode 644"), "{}", c.detail);
    let err = attestation_from_config(&cfg).unwrap_err();
    assert!(
        matches!(err, BuildError::AkFile { .. }) && err.to_string().contains("chmod 600"),
        "{err}"
    );
    // A record that is not an AK is refused naming the file.
    secret_file(&spec.ak_file, b"{\"ak\": 1}");
    let err = attestation_from_config(&cfg).unwrap_err();
    assert!(
        err.to_string()
            .contains("not an enrolled attestation key record"),
        "{err}"
    );
}

/// Waits for `GET /healthz` on `port` to answer 200.
fn wait_healthy(port: u16, child: &mut std::process::Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let ok = reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz"))
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// The node's PACS wants an API key on every DICOMweb request, as a hospital's does: the
/// configured `auth` goes with each of the node's QIDO-RS and WADO-RS requests (the cohort is
/// built from it), and a request without it is refused (the control).
#[test]
fn production_node_without_sgx_refuses_the_job_at_attestation_and_refunds() {
    const PACS_KEY: &str = "pacs-key-0123456789abcdef";
    let Some(trainer) = sandbox_ready() else {
        return;
    };
    let Some(orthanc) =
        rapha_testkit::require!(Orthanc::start_requiring_header("X-Api-Key", PACS_KEY))
    else {
        return;
    };
    let Some(tpm) = rapha_testkit::require!(Swtpm::start_provisioned()) else {
        return;
    };
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fixture = NodeFixture::new(t, &orthanc, &chain, &trainer, 31);
    let (accessions, bundle_dir, manifest, dpo) = (
        &fixture.accessions,
        &fixture.bundle_dir,
        fixture.manifest,
        &fixture.dpo,
    );
    secret_file(
        &t.join("tokens"),
        b"admin adm-0123456789abcdef0123456789abcdef0123\n",
    );
    secret_file(&t.join("pacs-key"), format!("{PACS_KEY}\n").as_bytes());
    let unauthenticated = reqwest::blocking::get(format!("{}/studies", orthanc.dicomweb_url()))
        .unwrap()
        .status();
    assert_eq!(
        unauthenticated,
        reqwest::StatusCode::FORBIDDEN,
        "the PACS answers DICOMweb without its key"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let pcrs: Vec<String> = current_pcrs(&tpm.tcti())
        .into_iter()
        .map(|(i, d)| format!("\"{i}\" = \"{d}\""))
        .collect();
    let attestation = format!(
        r#"[attestation.tpm]
tcti = "{tcti}"
vendor_root_ca = {root}
expected_pcrs = {{ {pcrs} }}

[attestation.sgx]
quote_source = {quote_source}
collateral_file = {collateral}
mrenclave = ["{mrenclave}"]"#,
        tcti = tpm.tcti(),
        root = q(tpm.ek_ca_cert_pem().unwrap()),
        pcrs = pcrs.join(", "),
        quote_source = q(&t.join("no-gramine/attestation")),
        collateral = q(&sgx_collateral()),
        mrenclave = "ab".repeat(32),
    );
    let extra = format!(
        r#"[settlement]
settler_key_file = "settler.key"
hospital_address = "{hospital}"
payout_address = "{payout}"
settle_margin_secs = 600

[api]
listen = "127.0.0.1:{port}"
tokens_file = "tokens"
max_bundle_bytes = 1048576"#,
        hospital = chain.hospital,
        payout = chain.payout,
    );
    let config_path = t.join("node.toml");
    let toml = NodeConfig {
        mode: "production".into(),
        dicomweb_auth: Some(
            r#"{ kind = "header", name = "X-Api-Key", value_file = "pacs-key" }"#.into(),
        ),
        attestation,
        extra,
        data_dir: "data".into(),
        state_dir: "state".into(),
        ..fixture.config(&chain)
    }
    .to_toml();
    std::fs::write(&config_path, toml).unwrap();
    let cfg = Config::load(&config_path).unwrap();

    // 1. The node is built from the configuration alone, with production attestation.
    let mut node = node_from_config(&cfg).unwrap();
    let ak_file = t.join("state/attestation/tpm-ak.json");
    assert!(ak_file.is_file(), "the AK was not enrolled and kept");
    let enrolled = std::fs::read(&ak_file).unwrap();

    // 2. A job goes through admission, cohort, DPO approval and deposit, then is refused at
    //    the attestation step: the evidence has a TPM quote but no SGX quote.
    let new_request = || JobRequest {
        job_id: JobId::random(),
        publisher: PUBLISHER.into(),
        trainer: TRAINER.into(),
        bundle_manifest: manifest,
        query: CohortQuery {
            limit: Some(accessions.len() as u32),
            accession_numbers: accessions.clone(),
            ..CohortQuery::default()
        },
        requested_fields: vec![],
        validation_percent: 50,
        fee: Usdc::from_base_units(FEE),
        chain_id: 137,
        depositor: chain.company.address().to_string(),
        linkage: None,
    };
    // Drives a job to its end; checks it was refused at attestation, receipted, nothing
    // released, the depositor refunded in full; returns the reason.
    let mut refused_at_attestation = |request: JobRequest| -> String {
        let job = node.submit(bundle_dir, request).unwrap();
        assert_eq!(
            node.run_until_blocked(job).unwrap(),
            JobState::AwaitingApproval
        );
        let digest = node.review_digest(job).unwrap().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        node.approvals()
            .record(&dpo.approve(digest, now, now + 3600).unwrap())
            .unwrap();
        assert_eq!(
            node.run_until_blocked(job).unwrap(),
            JobState::AwaitingDeposit
        );
        let company_before = chain.funds(chain.company.address());
        let payout_before = chain.funds(chain.payout);
        chain.deposit(&job);
        let mut state = JobState::AwaitingDeposit;
        for _ in 0..60 {
            state = node.run_until_blocked(job).unwrap();
            if state == JobState::Settled {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(state, JobState::Settled);
        let row = node.store().get(job).unwrap();
        assert_eq!(row.outcome, Some(Outcome::Refused), "{:?}", row.reason);
        let reason = row.reason.unwrap();
        let to: Vec<JobState> = node
            .store()
            .transitions(job)
            .unwrap()
            .iter()
            .map(|t| t.to)
            .collect();
        assert!(to.contains(&JobState::DepositConfirmed), "{to:?}");
        for never in [JobState::Attested, JobState::Running, JobState::Released] {
            assert!(!to.contains(&never), "{never:?} reached: {to:?}");
        }
        let receipt = node
            .receipt(job)
            .unwrap()
            .expect("a refused job has a receipt");
        assert_eq!(receipt.body["outcome"], "refused", "{}", receipt.body);
        assert_eq!(receipt.body["reason"], reason.as_str());
        // The code is all the publisher sees; the words are the hospital's (issue 18).
        assert_eq!(reason, "attestation-refused");
        let detail = node
            .ending(job)
            .unwrap()
            .expect("an ending is stored")
            .detail;
        assert!(!node.release_path(job).exists());
        // The depositor has the whole fee back; the hospital got nothing.
        assert_eq!(chain.funds(chain.company.address()), company_before);
        assert_eq!(chain.funds(chain.payout), payout_before);
        detail
    };
    assert_eq!(
        refused_at_attestation(new_request()),
        "attestation refused: evidence carries no SGX quote, which production requires"
    );

    // 2b. With a quote source present (Gramine's file protocol played by plain files holding a
    //     real DCAP quote; no SGX here), the SGX quote reaches the production verifier, which
    //     refuses it (its collateral is long expired and it was made for no job of ours):
    //     the evidence is checked, not merely present.
    let dev = t.join("no-gramine/attestation");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("attestation_type"), "dcap\n").unwrap();
    std::fs::write(dev.join("user_report_data"), [0u8; 64]).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rapha-attest/testdata/sgx_quote"),
        dev.join("quote"),
    )
    .unwrap();
    let reason = refused_at_attestation(new_request());
    assert!(
        reason.starts_with(
            "attestation refused: SGX quote or its collateral failed DCAP verification"
        ),
        "{reason}"
    );
    std::fs::remove_dir_all(t.join("no-gramine")).unwrap();
    drop(node);

    // 3. `rapha-node serve --config FILE` alone starts the same production node (listen
    //    address, tokens, settlement all from the file) and reuses the enrolled AK.
    let mut child = Command::new(env!("CARGO_BIN_EXE_rapha-node"))
        .args(["serve", "--config", config_path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let healthy = wait_healthy(port, &mut child);
    // [api] max_bundle_bytes is the upload limit, and uploads are staged on the data disk.
    let upload = |bytes: usize| {
        let r = reqwest::blocking::Client::new()
            .post(format!("http://127.0.0.1:{port}/v1/bundles"))
            .bearer_auth("adm-0123456789abcdef0123456789abcdef0123")
            .header("content-type", "application/x-tar")
            .body(vec![0u8; bytes])
            .send()
            .ok()
            .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()));
        r
    };
    // Declared one byte over the limit (only the head is sent: the node answers on it).
    let over = healthy
        .then(|| {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            c.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
            write!(
                c,
                "POST /v1/bundles HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Authorization: Bearer adm-0123456789abcdef0123456789abcdef0123\r\n\
             Content-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
                (1 << 20) + 1
            )
            .ok()?;
            let mut answer = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&answer).into_owned();
            let status = text.split(' ').nth(1)?.parse::<u16>().ok()?;
            Some((status, text))
        })
        .flatten();
    let junk = healthy.then(|| upload(1024)).flatten();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        healthy,
        "serve --config did not come up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = over.expect("the over-limit upload was answered");
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("limited to 1048576 bytes"), "{body}");
    let (status, body) = junk.expect("the small upload was answered");
    // 1 KiB of zeros is an empty archive: read whole, unpacked, refused as unsigned.
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("bundle-refused"), "{body}");
    assert!(
        t.join("data/bundles").is_dir(),
        "uploads not staged under data_dir"
    );
    assert!(
        !t.join("state/bundles").exists(),
        "an upload reached the state directory"
    );
    assert_eq!(
        std::fs::read(&ak_file).unwrap(),
        enrolled,
        "serve enrolled a second AK instead of reusing the first"
    );
}

#[test]
fn settlement_flags_override_the_configuration_and_nothing_missing_goes_unnoticed() {
    use rapha_node::node_build::SettlementOverrides;
    let dir = tempfile::tempdir().unwrap();
    let spec = ConfigSpec::under(dir.path());
    let text = spec.to_toml();

    // The configuration is the default.
    let mut cfg = Config::parse(&text).unwrap();
    SettlementOverrides::default().apply(&mut cfg).unwrap();
    let s = cfg.settlement.as_ref().unwrap();
    assert_eq!(s.hospital_address, spec.hospital);
    assert_eq!(s.settler_key_file, spec.settler_key);

    // A flag replaces one value and leaves the rest.
    let mut cfg = Config::parse(&text).unwrap();
    SettlementOverrides {
        payout: Some("0x00000000000000000000000000000000000000c3".into()),
        settle_margin_secs: Some(900),
        ..SettlementOverrides::default()
    }
    .apply(&mut cfg)
    .unwrap();
    let s = cfg.settlement.as_ref().unwrap();
    assert_eq!(
        s.payout_address,
        "0x00000000000000000000000000000000000000c3"
    );
    assert_eq!(s.hospital_address, spec.hospital);
    assert_eq!(s.settle_margin_secs, 900);

    // A flag that is not an address is refused naming the flag.
    let mut cfg = Config::parse(&text).unwrap();
    let err = SettlementOverrides {
        hospital: Some("0x1234".into()),
        ..SettlementOverrides::default()
    }
    .apply(&mut cfg)
    .unwrap_err();
    assert!(err.to_string().contains("`--hospital`"), "{err}");

    // Without [settlement], the flags must give all three values; a missing one is named.
    let mut cfg = Config::parse(&text).unwrap();
    cfg.settlement = None;
    let err = SettlementOverrides {
        hospital: Some(spec.hospital.clone()),
        payout: Some(spec.payout.clone()),
        ..SettlementOverrides::default()
    }
    .apply(&mut cfg)
    .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::SettlementMissing {
                key: "settler_key_file",
                ..
            }
        ),
        "{err}"
    );
    let mut cfg = Config::parse(&text).unwrap();
    cfg.settlement = None;
    assert!(node_from_config(&cfg)
        .unwrap_err()
        .to_string()
        .contains("no [settlement] section"));
}

#[test]
fn serve_without_a_token_file_anywhere_says_where_to_set_one() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ConfigSpec::under(dir.path());
    let mut without = String::new();
    let mut skip = false;
    for line in spec.to_toml().lines() {
        if line.starts_with('[') {
            skip = line == "[api]";
        }
        if !skip {
            without.push_str(line);
            without.push('\n');
        }
    }
    let path = dir.path().join("node.toml");
    std::fs::write(&path, without).unwrap();
    let out = crate::node_common::node(&["serve", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = crate::node_common::stderr(&out);
    assert!(err.contains("set [api] tokens_file"), "{err}");
}

#[test]
fn keygen_settler_writes_a_private_key_the_node_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settler.key");
    let out = crate::node_common::node(&["keygen", "--settler", "--out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", crate::node_common::stderr(&out));
    let text = crate::node_common::stdout(&out);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key = rapha_node::node_build::read_settler_key(&path).unwrap();
    assert!(
        text.contains(&key.address().to_string()),
        "the printed address is not the key's: {text}"
    );
    // The same file made readable by others is refused.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let Err(err) = rapha_node::node_build::read_settler_key(&path) else {
        panic!("a world-readable settler key was accepted");
    };
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

/// Gramine's `/dev/attestation` cannot exist on a machine without SGX, so its file protocol is
/// played here by plain files holding the real DCAP quote and collateral that dcap-qvl ships
/// (rapha-attest/testdata): the node writes the binding into `user_report_data` (32 bytes,
/// then 32 zero bytes), reads `quote`, attaches the collateral, and the production SGX
/// verifier accepts what it made (at a time inside the collateral's validity) and refuses it
/// for another job's binding.
#[test]
fn gramine_quote_source_protocol_yields_evidence_the_sgx_verifier_checks() {
    use rapha_attest::sgx::{AllowedEnclave, SgxPolicy, SgxVerifier};
    use rapha_core::Digest;
    use rapha_node::node_build::{GramineQuoteSource, SgxSourceError};

    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rapha-attest/testdata");
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("attestation");
    let source = GramineQuoteSource {
        dir: dev.clone(),
        collateral: sgx_collateral(),
    };
    let binding = {
        let mut b = [0u8; 32];
        b[..13].copy_from_slice(b"Hello, world!");
        Digest::from_bytes(b)
    };

    // No interface: absent, and the error says so.
    assert!(!source.present());
    assert!(matches!(
        source.quote(&binding),
        Err(SgxSourceError::Absent(p)) if p == dev
    ));

    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("attestation_type"), "none\n").unwrap();
    std::fs::write(dev.join("user_report_data"), [0u8; 64]).unwrap();
    std::fs::copy(testdata.join("sgx_quote"), dev.join("quote")).unwrap();
    // Gramine without remote attestation offers no quotes: still absent.
    assert!(!source.present());

    std::fs::write(dev.join("attestation_type"), "dcap\n").unwrap();
    assert!(source.present());
    let ev = source.quote(&binding).unwrap();
    let written = std::fs::read(dev.join("user_report_data")).unwrap();
    assert_eq!(&written[..32], binding.as_bytes());
    assert_eq!(&written[32..], &[0u8; 32]);
    assert_eq!(ev.quote, std::fs::read(testdata.join("sgx_quote")).unwrap());

    // 2025-07-01: inside the sample collateral's validity window.
    let at = 1_751_328_000;
    let mr_enclave = *rapha_attest::sgx::verify_quote(&ev, at)
        .unwrap()
        .mr_enclave();
    let verifier = SgxVerifier::new(SgxPolicy {
        accepted_advisories: ["INTEL-SA-00289", "INTEL-SA-00615"]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        allowed_enclaves: vec![AllowedEnclave::MrEnclave {
            mr_enclave: Digest::from_bytes(mr_enclave),
        }],
    })
    .at_time(at);
    verifier.verify(&ev, &binding).unwrap();
    let other = Digest::of(b"another job");
    let err = verifier.verify(&ev, &other).unwrap_err();
    assert!(
        matches!(err, rapha_attest::AttestError::SgxReportDataMismatch { .. }),
        "{err}"
    );
    // Today the sample collateral is long expired: the same evidence is refused, never
    // accepted on stale collateral.
    let now = SgxVerifier::new(SgxPolicy {
        accepted_advisories: Default::default(),
        allowed_enclaves: vec![AllowedEnclave::MrEnclave {
            mr_enclave: Digest::from_bytes(mr_enclave),
        }],
    });
    assert!(now.verify(&ev, &binding).is_err());

    // A collateral file that is not DCAP collateral fails the quote with its path.
    let bad = GramineQuoteSource {
        dir: dev.clone(),
        collateral: dir.path().join("collateral.json"),
    };
    std::fs::write(&bad.collateral, "{}").unwrap();
    let Err(err) = bad.quote(&binding) else {
        panic!("an empty collateral file was accepted");
    };
    assert!(
        matches!(err, SgxSourceError::Collateral { .. })
            && err.to_string().contains("not DCAP collateral JSON"),
        "{err}"
    );
}
