//! `keygen`, `init` and `policy test` through the binary.

use std::os::unix::fs::PermissionsExt;

use rapha_node::config::Config;
use rapha_node::doctor::{run_doctor, Status};

use crate::node_common::*;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_hmac_writes_32_private_bytes_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hmac.key");
    let out = node(&["keygen", "--hmac", "--out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(mode(&path), 0o600);
    let text = stdout(&out);
    assert!(
        text.contains("WARNING") && text.contains("Back it up") && text.contains("Rotating"),
        "{text}"
    );
    // The key itself is never printed, in hex or otherwise.
    assert!(!text.contains(&hex::encode(&bytes)));
    // Two keys differ (fresh CSPRNG output), and an existing file is never overwritten.
    let again = node(&["keygen", "--hmac", "--out", path.to_str().unwrap()]);
    assert!(!again.status.success());
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let other = dir.path().join("hmac2.key");
    assert!(
        node(&["keygen", "--hmac", "--out", other.to_str().unwrap()])
            .status
            .success()
    );
    assert_ne!(std::fs::read(&other).unwrap(), bytes);
}

#[test]
fn keygen_node_writes_a_secp256k1_key_and_prints_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let out = node(&["keygen", "--node", "--out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&path), 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), 65);
    let secret = hex::decode(text.trim_end()).unwrap();
    let key = k256::SecretKey::from_slice(&secret).unwrap();
    let address = rapha_node::keygen::eth_address(&key.public_key());
    assert!(stdout(&out).contains(&address), "{}", stdout(&out));
    assert!(!stdout(&out).contains(text.trim_end()));
}

#[test]
fn eth_address_matches_a_known_vector() {
    // anvil's / hardhat's first dev account: private key 0xac09...ff80.
    let secret =
        hex::decode("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").unwrap();
    let key = k256::SecretKey::from_slice(&secret).unwrap();
    assert_eq!(
        rapha_node::keygen::eth_address(&key.public_key()),
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    );
}

#[test]
fn keygen_dpo_writes_the_seed_and_prints_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dpo.key");
    let out = node(&["keygen", "--dpo", "--out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&path), 0o600);
    let key = rapha_policy::DpoSigningKey::load(&path).unwrap();
    assert!(stdout(&out).contains(&key.public().to_hex()));
    assert_eq!(
        std::fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim(),
        key.public().to_hex()
    );
}

#[test]
fn keygen_needs_exactly_one_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    assert!(!node(&["keygen", "--out", path.to_str().unwrap()])
        .status
        .success());
    assert!(
        !node(&["keygen", "--hmac", "--dpo", "--out", path.to_str().unwrap()])
            .status
            .success()
    );
    assert!(!path.exists());
}

#[test]
fn production_template_fails_doctor_naming_every_missing_requirement() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    let out = node(&["init", "--production", "--out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = node(&["doctor", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    for name in [
        "FAIL  HMAC key",
        "FAIL  DICOMweb endpoint",
        "FAIL  attestation: TPM",
        "FAIL  attestation: SGX",
        "FAIL  trainer command",
        "FAIL  chain RPC",
        "FAIL  escrow contract",
        "FAIL  settlement",
        "FAIL  API tokens",
    ] {
        assert!(text.contains(name), "missing {name:?} in:\n{text}");
    }
    // Every FAIL says how to fix it.
    let fails = text.lines().filter(|l| l.starts_with("FAIL  ")).count();
    let fixes = text
        .lines()
        .filter(|l| l.starts_with("      fix: "))
        .count();
    assert!(fails >= 9);
    assert_eq!(fails, fixes, "{text}");
}

#[test]
fn demo_template_is_refused_as_demo() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.toml");
    assert!(node(&["init", "--demo", "--out", path.to_str().unwrap()])
        .status
        .success());
    let config = Config::load(&path).unwrap();
    let report = run_doctor(&config);
    let status = |n: &str| report.checks.iter().find(|c| c.name == n).unwrap().status;
    assert_eq!(status("mode"), Status::Fail);
    assert_eq!(status("no demo component"), Status::Fail);
    assert!(!report.passed());
}

#[test]
fn config_pointing_at_demo_tooling_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ConfigSpec::under(dir.path());
    spec.runtime = "/opt/rapha-demo/bin/fake-runtime".into();
    let config = Config::load(&spec.write(&dir.path().join("node.toml"))).unwrap();
    let report = run_doctor(&config);
    let c = report
        .checks
        .iter()
        .find(|c| c.name == "no demo component")
        .unwrap();
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("trainer.runtime"), "{}", c.detail);
}

#[test]
fn policy_test_runs_the_rego_unit_tests() {
    let out = node(&["policy", "test", "--dir", policy_dir().to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("PASS  rapha_test.test_good_job_is_admitted"),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");

    // A policy edit that breaks a rule makes `policy test` fail.
    let dir = tempfile::tempdir().unwrap();
    let broken = std::fs::read_to_string(policy_dir().join("rapha.rego"))
        .unwrap()
        .replace("input.fee >= data.hospital.min_fee", "input.fee >= 0");
    std::fs::write(dir.path().join("rapha.rego"), broken).unwrap();
    std::fs::copy(
        policy_dir().join("rapha_test.rego"),
        dir.path().join("rapha_test.rego"),
    )
    .unwrap();
    let out = node(&["policy", "test", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("FAIL  rapha_test.test_fee_below_minimum_is_refused"),
        "{}",
        stdout(&out)
    );
}

/// Every kind of secret file the node and its tools read goes through one reader
/// (`rapha_core::fs::read_secret`): each loader takes its own key file, and refuses a symbolic
/// link to that same file (a link can be re-pointed between a check and the read) and a copy
/// that others can read.
#[test]
fn every_secret_file_loader_refuses_a_link_and_a_loose_mode() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = |name: &str| d.join(name);
    rapha_node::keygen::write_hmac(&file("hmac")).unwrap();
    rapha_node::keygen::write_node_key(&file("node")).unwrap();
    rapha_node::keygen::write_node_key(&file("settler")).unwrap();
    let out = node(&["keygen", "--dpo", "--out", file("dpo").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    rapha_bundle::keys::write_keypair(
        &rapha_bundle::SigningKey::generate_ed25519(),
        &file("publisher"),
    )
    .unwrap();
    rapha_core::fs::write_new_secret(
        &file("tokens"),
        b"admin adm-0123456789abcdef0123456789abcdef0123\n",
    )
    .unwrap();

    type Loader = fn(&std::path::Path) -> Result<(), String>;
    let loaders: [(&str, Loader); 6] = [
        ("hmac", |p| {
            rapha_core::HmacKey::load(p)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        ("node", |p| {
            rapha_receipt::NodeKey::load(p)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        ("settler", |p| {
            rapha_node::node_build::read_settler_key(p)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        ("dpo", |p| {
            rapha_policy::DpoSigningKey::load(p)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        ("publisher", |p| {
            rapha_bundle::SigningKey::load(p)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        ("tokens", |p| {
            rapha_node::api::Tokens::load(p)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
    ];
    for (name, load) in loaders {
        let path = file(name);
        load(&path).unwrap_or_else(|e| panic!("{name}: its own key file is refused: {e}"));
        let link = file(&format!("{name}.link"));
        symlink(&path, &link).unwrap();
        let err = load(&link).expect_err(&format!("{name}: a link to the key was followed"));
        assert!(err.contains("symbolic link"), "{name}: {err}");
        let loose = file(&format!("{name}.loose"));
        std::fs::copy(&path, &loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load(&loose).expect_err(&format!("{name}: a key others can read was read"));
        assert!(
            err.contains("640"),
            "{name}: the mode found is named: {err}"
        );
    }
}

/// An installed node says what it was built from: the source commit (this checkout's HEAD,
/// unless the build set `RAPHA_SOURCE_COMMIT`) and the build profile.
#[test]
fn version_names_the_source_commit_and_the_build_profile() {
    let out = node(&["--version"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned());
    // Read now, not at compile time (the build stamps the same variable into this test).
    let expected = std::env::var("RAPHA_SOURCE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or(head)
        .expect("a git checkout or RAPHA_SOURCE_COMMIT");
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    assert_eq!(
        text.trim(),
        format!(
            "rapha-node {} (source {expected}, {profile} build)",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// Issue 22 item 2: the HMAC key sealed to the TPM. `keygen --hmac --seal-to-tpm --from` seals
/// an existing key (same pseudonyms), the node loads it through [attestation.tpm] tcti as the
/// same key, the sealed file carries no copy of it, and after the measured boot state changes
/// (a PCR extended) the node refuses to start with the reason, instead of pseudonymising with
/// another key.
#[test]
fn an_hmac_key_sealed_to_the_tpm_loads_as_the_same_key_until_the_boot_state_changes() {
    let Some(tpm) = rapha_testkit::require!(rapha_testkit::services::Swtpm::start()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.key");
    let sealed = dir.path().join("hmac.sealed");
    assert!(
        node(&["keygen", "--hmac", "--out", plain.to_str().unwrap()])
            .status
            .success()
    );
    let out = node(&[
        "keygen",
        "--hmac",
        "--seal-to-tpm",
        "--tcti",
        &tpm.tcti(),
        "--pcrs",
        "0,7,14",
        "--from",
        plain.to_str().unwrap(),
        "--out",
        sealed.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&sealed), 0o600);
    let key = std::fs::read(&plain).unwrap();
    let text = std::fs::read_to_string(&sealed).unwrap();
    assert!(
        !text.contains(&hex::encode(&key)),
        "the sealed file holds the key"
    );

    let mut spec = crate::node_common::ConfigSpec::under(dir.path());
    spec.hmac = sealed.clone();
    spec.tcti = tpm.tcti();
    let config =
        rapha_node::config::Config::load(&spec.write(&dir.path().join("node.toml"))).unwrap();
    let (loaded, source) = rapha_node::hmac_key::load(&config).unwrap();
    assert_eq!(loaded.expose_bytes().as_slice(), key.as_slice());
    assert!(matches!(
        source,
        rapha_node::hmac_key::HmacSource::Tpm { .. }
    ));

    // Without a TPM in the configuration the sealed file is refused, naming what is missing.
    let mut no_tpm = config.clone();
    no_tpm.attestation.tpm = None;
    let Err(err) = rapha_node::hmac_key::load(&no_tpm) else {
        panic!("a sealed key loaded without a TPM")
    };
    let err = format!("{err:#}");
    assert!(err.contains("[attestation.tpm]"), "{err}");

    // The boot state changes: PCR 14 extended. The key no longer unseals.
    let mut ctx = rapha_attest::tpm::connect(&tpm.tcti()).unwrap();
    let mut values = tss_esapi::structures::DigestValues::new();
    values.set(
        tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha256,
        tss_esapi::structures::Digest::try_from(vec![0x11; 32]).unwrap(),
    );
    ctx.execute_with_nullauth_session(|c| {
        c.pcr_extend(tss_esapi::handles::PcrHandle::Pcr14, values)
    })
    .unwrap();
    drop(ctx);
    let Err(err) = rapha_node::hmac_key::load(&config) else {
        panic!("the sealed key unsealed after the boot state changed")
    };
    let err = format!("{err:#}");
    assert!(err.contains("measured boot state changed"), "{err}");
}
