//! Bad configurations are refused with an error naming the key; bad key files fail their
//! doctor check naming the key and the file.

use std::os::unix::fs::PermissionsExt;

use rapha_node::config::Config;
use rapha_node::doctor::{run_doctor, Status};

use crate::node_common::*;

fn parse_err(text: &str) -> (String, String) {
    Config::parse(text).expect_err("config should be refused")
}

fn base() -> String {
    ConfigSpec::under(std::path::Path::new("/nonexistent")).to_toml()
}

#[test]
fn the_test_config_itself_parses() {
    Config::parse(&base()).unwrap();
}

#[test]
fn unknown_key_is_refused_naming_it() {
    let text = base().replace("chain_id = 137", "chain_id = 137\nchain_idd = 137");
    let (field, msg) = parse_err(&text);
    assert_eq!(field, "chain.chain_idd");
    assert!(msg.contains("unknown field `chain_idd`"), "{msg}");

    let text = base().replace(
        "mode = \"production\"",
        "mode = \"production\"\nsimulate_attestation = true",
    );
    let (field, msg) = parse_err(&text);
    assert_eq!(field, "simulate_attestation");
    assert!(
        msg.contains("unknown field `simulate_attestation`"),
        "{msg}"
    );

    // Unknown keys deep inside nested tables too.
    let text = base().replace("max_jobs = 5", "max_jobs = 5\nwindow_days = 30");
    let (field, msg) = parse_err(&text);
    assert_eq!(field, "policy.budget.window_days");
    assert!(msg.contains("unknown field `window_days`"), "{msg}");
}

#[test]
fn wrong_type_is_refused_naming_the_key() {
    let (field, msg) = parse_err(&base().replace("chain_id = 137", "chain_id = \"137\""));
    assert_eq!(field, "chain.chain_id");
    assert!(msg.contains("invalid type"), "{msg}");
    let (field, _) = parse_err(&base().replace("test_token = false", "test_token = \"no\""));
    assert_eq!(field, "chain.test_token");
    let (field, _) = parse_err(&base().replace("mode = \"production\"", "mode = \"prod\""));
    assert_eq!(field, "mode");
    let (field, _) = parse_err(&base().replace("max_limit = 1000", "max_limit = -1"));
    assert_eq!(field, "dicom.scope.max_limit");
}

#[test]
fn missing_required_key_is_refused_naming_it() {
    let (field, msg) = parse_err(&base().replace("escrow_address = ", "# escrow_address = "));
    assert_eq!(field, "chain");
    assert!(msg.contains("missing field `escrow_address`"), "{msg}");
}

#[test]
fn cli_prints_the_field_and_exits_nonzero_on_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        base().replace("chain_id = 137", "chain_id = \"137\""),
    )
    .unwrap();
    let out = node(&["doctor", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("key `chain.chain_id`") && err.contains("invalid type"),
        "{err}"
    );
}

fn hmac_check(dir: &std::path::Path, write: impl FnOnce(&std::path::Path)) -> (Status, String) {
    let spec = ConfigSpec::under(dir);
    write(&spec.hmac);
    let config = Config::load(&spec.write(&dir.join("node.toml"))).unwrap();
    let report = run_doctor(&config);
    let c = report
        .checks
        .iter()
        .find(|c| c.name == "HMAC key (keys.hmac_key_file)")
        .unwrap();
    (
        c.status,
        format!("{} / {}", c.detail, c.fix.clone().unwrap_or_default()),
    )
}

fn private_file(path: &std::path::Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn hmac_key_of_31_or_33_bytes_fails_naming_the_length() {
    for len in [31usize, 33] {
        let dir = tempfile::tempdir().unwrap();
        let (status, text) = hmac_check(dir.path(), |p| private_file(p, &vec![7u8; len]));
        assert_eq!(status, Status::Fail);
        assert!(
            text.contains(&format!("expected exactly 32 bytes, found {len}")),
            "{text}"
        );
        assert!(text.contains("hmac.key"), "{text}");
    }
}

#[test]
fn world_readable_hmac_key_fails_naming_the_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (status, text) = hmac_check(dir.path(), |p| {
        std::fs::write(p, [7u8; 32]).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    });
    assert_eq!(status, Status::Fail);
    assert!(
        text.contains("mode 644") && text.contains("chmod 600"),
        "{text}"
    );
}

#[test]
fn development_hmac_key_is_refused_and_a_real_one_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (status, text) = hmac_check(dir.path(), |p| {
        let mut key = [9u8; 32];
        key[..10].copy_from_slice(rapha_policy::DEV_KEY_PREFIX);
        private_file(p, &key);
    });
    assert_eq!(status, Status::Fail);
    assert!(text.contains("development key"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let (status, text) = hmac_check(dir.path(), |p| rapha_node::keygen::write_hmac(p).unwrap());
    assert_eq!(status, Status::Pass, "{text}");
}

#[test]
fn world_readable_node_key_fails_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ConfigSpec::under(dir.path());
    rapha_node::keygen::write_node_key(&spec.node_key).unwrap();
    std::fs::set_permissions(&spec.node_key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let config = Config::load(&spec.write(&dir.path().join("node.toml"))).unwrap();
    let report = run_doctor(&config);
    let c = report
        .checks
        .iter()
        .find(|c| c.name == "node key (keys.node_key_file)")
        .unwrap();
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("mode 640"), "{}", c.detail);
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let text = base().replace("\"/nonexistent/hmac.key\"", "\"keys/hmac.key\"");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.keys.hmac_key_file, dir.path().join("keys/hmac.key"));
}

mod fuzz {
    //! Stable-toolchain drive of the config parser's fuzz entry point (`fuzz/`): it never
    //! panics on edited configs, and every refusal names a key path.
    use proptest::prelude::*;

    fn seeds() -> Vec<String> {
        vec![
            super::base(),
            rapha_node::init::PRODUCTION_TEMPLATE.to_owned(),
            rapha_node::init::DEMO_TEMPLATE.to_owned(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn config_parser_never_panics_and_names_a_key(
            seed in 0usize..3,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = seeds()[seed].clone().into_bytes();
            for (at, b) in edits {
                let i = at % bytes.len();
                bytes[i] = b;
            }
            if let Ok(text) = String::from_utf8(bytes) {
                if let Err((field, message)) = rapha_node::config::Config::parse(&text) {
                    prop_assert!(!field.is_empty());
                    prop_assert!(!message.is_empty());
                }
            }
        }
    }
}

#[test]
fn malformed_pcr_policy_is_refused_on_load_naming_the_entry() {
    let zero = format!("\"0\" = \"{}\"", "00".repeat(32));
    let (field, msg) = parse_err(&base().replace(&zero, "\"7\" = \"abc\""));
    assert_eq!(field, "attestation.tpm.expected_pcrs.7");
    assert!(msg.contains("tpm2_pcrread sha256:7"), "{msg}");
    let (field, msg) = parse_err(&base().replace(&zero, &zero.replace("\"0\"", "\"24\"")));
    assert_eq!(field, "attestation.tpm.expected_pcrs.24");
    assert!(msg.contains("not a PCR index 0-23"), "{msg}");
    let (field, msg) = parse_err(&base().replace(
        "[attestation.tpm]",
        "[attestation.tpm]\npcr_bank = \"sha1\"",
    ));
    assert_eq!(field, "attestation.tpm.pcr_bank");
    assert!(msg.contains("pcr_bank = \"sha256\""), "{msg}");
}

/// Each value's shape is checked on load, with the key and what to write instead.
#[test]
fn malformed_settlement_attestation_and_chain_values_are_refused_naming_the_key() {
    let b = base();
    let zeros = "00".repeat(32);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            b.replace(
                "hospital_address = \"0x00000000000000000000000000000000000000a1\"",
                "hospital_address = \"0xa1\"",
            ),
            "settlement.hospital_address",
            "0x followed by 40 hex digits",
        ),
        (
            b.replace(
                "payout_address = \"0x00000000000000000000000000000000000000b2\"",
                "payout_address = \"hospital-payout\"",
            ),
            "settlement.payout_address",
            "is not an account address",
        ),
        (
            b.replace("[settlement]", "[settlement]\nsettle_margin_secs = 0"),
            "settlement.settle_margin_secs",
            "take the fee back before the settlement lands",
        ),
        (
            b.replace(
                "test_token = false",
                "test_token = false\nconfirmations = 0",
            ),
            "chain.confirmations",
            "at least 1",
        ),
        (
            b.replace(
                "escrow_address = \"0x0000000000000000000000000000000000000001\"",
                "escrow_address = \"0x00000000000000000000000000000000000000zz\"",
            ),
            "chain.escrow_address",
            "40 hex digits",
        ),
        (
            // A mistyped address: mixed case whose EIP-55 checksum does not match.
            b.replace(
                "escrow_address = \"0x0000000000000000000000000000000000000001\"",
                "escrow_address = \"0x5FBDB2315678afecb367f032d93F642f64180aa3\"",
            ),
            "chain.escrow_address",
            "mixed-case address with a wrong EIP-55 checksum",
        ),
        (
            b.replace(
                "tcti = \"swtpm:host=127.0.0.1,port=9\"",
                "tcti = \"/dev/tpm0\"",
            ),
            "attestation.tpm.tcti",
            "device:/dev/tpmrm0",
        ),
        (
            b.replace(
                &format!("mrenclave = [\"{zeros}\"]"),
                "mrenclave = [\"abc\"]",
            ),
            "attestation.sgx.mrenclave[0]",
            "not 64 hex digits",
        ),
        (
            b.replace(
                "[attestation.sgx]",
                "[attestation.sgx]\naccepted_advisories = [\"SA-615\"]",
            ),
            "attestation.sgx.accepted_advisories[0]",
            "INTEL-SA-00615",
        ),
        (
            b.replace("[api]", "[api]\nlisten = \"localhost\""),
            "api.listen",
            "invalid",
        ),
        (
            b.replace("[api]", "[api]\nmax_bundle_bytes = 0"),
            "api.max_bundle_bytes",
            "outside 1 MiB",
        ),
        (
            b.replace("[api]", "[api]\nmax_bundle_bytes = 1048575"),
            "api.max_bundle_bytes",
            "outside 1 MiB",
        ),
        (
            // 2 TB: a typo for 2 GB.
            b.replace("[api]", "[api]\nmax_bundle_bytes = 2000000000000"),
            "api.max_bundle_bytes",
            "outside 1 MiB",
        ),
        (
            b.replace("[api]", "[api]\nmax_bundle_bytes = -1"),
            "api.max_bundle_bytes",
            "invalid value",
        ),
        (
            b.replace("[api]", "[api]\nmax_bundle_bytes = \"2 GiB\""),
            "api.max_bundle_bytes",
            "invalid type",
        ),
    ];
    for (text, want_field, want_msg) in cases {
        assert_ne!(text, b, "edit for {want_field} did not apply");
        let (field, msg) = parse_err(&text);
        assert_eq!(field, want_field, "{msg}");
        assert!(msg.contains(want_msg), "{want_field}: {msg}");
    }
}

#[test]
fn settlement_and_api_sections_are_optional_to_parse_and_resolve_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    let text = base()
        .replace("\"/nonexistent/settler.key\"", "\"keys/settler.key\"")
        .replace("\"/nonexistent/tokens\"", "\"tokens\"");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let s = config.settlement.unwrap();
    assert_eq!(s.settler_key_file, dir.path().join("keys/settler.key"));
    assert_eq!(
        s.settle_margin_secs, 3600,
        "default: an hour after the wall time"
    );
    // The key's name before the wall time counted separately is read as the margin.
    let old = Config::parse(&base().replace("[settlement]", "[settlement]\nrun_window_secs = 900"))
        .unwrap()
        .settlement
        .unwrap();
    assert_eq!(old.settle_margin_secs, 900);
    let api = config.api.unwrap();
    assert_eq!(api.tokens_file, dir.path().join("tokens"));
    assert_eq!(api.listen.to_string(), "127.0.0.1:8420");
    assert_eq!(api.max_bundle_bytes, 2 << 30, "default 2 GiB");
    let set = Config::parse(&base().replace("[api]", "[api]\nmax_bundle_bytes = 1048576"))
        .unwrap()
        .api
        .unwrap();
    assert_eq!(set.max_bundle_bytes, 1 << 20);

    let mut without = String::new();
    let mut skip = false;
    for line in base().lines() {
        if line.starts_with('[') {
            skip = line == "[settlement]" || line == "[api]";
        }
        if !skip {
            without.push_str(line);
            without.push('\n');
        }
    }
    let config = Config::parse(&without).unwrap();
    assert!(config.settlement.is_none() && config.api.is_none());
}

/// GPUs (issue 16, item 5): a malformed CDI name, a GPU bound with no device to give, or a
/// relative spec directory is refused at load naming the key; naming devices admits one GPU
/// per job unless the bound says otherwise.
#[test]
fn gpu_settings_are_checked_on_load() {
    let with = |extra: &str| base().replace("[trainer]\n", &format!("[trainer]\n{extra}\n"));
    let (field, msg) = parse_err(&with("gpus = [\"nvidia.com/gpu\"]"));
    assert_eq!(field, "trainer.gpus[0]");
    assert!(msg.contains("is not a CDI device name"), "{msg}");
    let (field, _) = parse_err(&with(
        "gpus = [\"nvidia.com/gpu=0\"]\ncdi_spec_dirs = [\"etc/cdi\"]",
    ));
    assert_eq!(field, "trainer.cdi_spec_dirs[0]");
    let (field, msg) = parse_err(&format!(
        "{}\n[trainer.limits]\ngpus = {{ min = 0, max = 1 }}\n",
        base()
    ));
    assert_eq!(field, "trainer.limits.gpus.max");
    assert!(msg.contains("trainer.gpus names none"), "{msg}");

    let c = Config::parse(&with("gpus = [\"nvidia.com/gpu=all\"]")).unwrap();
    assert_eq!(c.trainer.limits.gpu_bound(), rapha_core::Bound::new(0, 1));
    assert_eq!(
        c.trainer.cdi_dirs(),
        [
            std::path::PathBuf::from("/etc/cdi"),
            std::path::PathBuf::from("/var/run/cdi")
        ]
    );
    assert_eq!(
        Config::parse(&base()).unwrap().trainer.limits.gpu_bound(),
        rapha_core::Bound::new(0, 0)
    );
}

/// Issue 19 item 3: the release precision and noise are checked when the configuration is
/// loaded, naming the key; good values are taken.
#[test]
fn a_release_precision_or_noise_out_of_range_is_refused_naming_the_key() {
    for (line, want) in [
        (
            "release_noise_k = -0.5",
            "release_noise_k -0.5 is not a number from 0 to 100",
        ),
        (
            "release_noise_k = 1000",
            "release_noise_k 1000 is not a number from 0 to 100",
        ),
        ("release_noise_k = \"nan\"", "invalid type"),
        ("release_precision = \"fp8\"", "unknown variant `fp8`"),
    ] {
        let text = base().replace("[policy.outputs]\n", &format!("[policy.outputs]\n{line}\n"));
        assert_ne!(text, base());
        let (field, msg) = parse_err(&text);
        assert!(field.starts_with("policy.outputs"), "{line}: {field}");
        assert!(msg.contains(want), "{line}: {msg}");
    }
    let text = base().replace(
        "[policy.outputs]\n",
        "[policy.outputs]\nrelease_precision = \"int8\"\nrelease_noise_k = 0.1\n",
    );
    let c = Config::parse(&text).unwrap();
    let t = c.policy.outputs.release_transform();
    assert_eq!(t.precision, rapha_core::release::ReleasePrecision::Int8);
    assert_eq!(t.noise_k.get(), 0.1);
    assert!(Config::parse(&base())
        .unwrap()
        .policy
        .outputs
        .release_transform()
        .is_identity());
}

#[test]
fn the_privacy_audit_settings_are_bounded_and_default_to_report_only() {
    let c = Config::parse(&base()).unwrap();
    assert!(c.audit.is_none());
    assert_eq!(c.policy.audit.holdout_fraction, 0.15);
    assert_eq!(c.policy.audit.min_patients, 10);
    assert_eq!(c.policy.audit.max_attack_auc, None);
    for (section, field, want) in [
        (
            "holdout_fraction = 0.6",
            "policy.audit.holdout_fraction",
            "outside 0.05 to 0.5",
        ),
        (
            "holdout_fraction = 0.01",
            "policy.audit.holdout_fraction",
            "outside 0.05 to 0.5",
        ),
        ("min_patients = 1", "policy.audit.min_patients", "below 2"),
        (
            "max_attack_auc = 0.4",
            "policy.audit.max_attack_auc",
            "outside 0.5 to 1",
        ),
        (
            "max_attack_auc = 1.01",
            "policy.audit.max_attack_auc",
            "outside 0.5 to 1",
        ),
        (
            "max_attack_auc = \"nan\"",
            "policy.audit.max_attack_auc",
            "invalid type",
        ),
        ("holdout = 0.2", "policy.audit.holdout", "unknown field"),
    ] {
        let text = base().replace(
            "[policy.outputs]\n",
            &format!("[policy.audit]\n{section}\n\n[policy.outputs]\n"),
        );
        assert_ne!(text, base());
        let (f, msg) = parse_err(&text);
        assert_eq!(f, field, "{section}: {msg}");
        assert!(msg.contains(want), "{section}: {msg}");
    }
    let text = base().replace(
        "[policy.outputs]\n",
        "[policy.audit]\nholdout_fraction = 0.2\nmin_patients = 4\nmax_attack_auc = 0.75\n\n\
         [policy.outputs]\n",
    );
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.policy.audit.max_attack_auc, Some(0.75));
    // The runner: an absolute path, and limits the OCI runtime does not read as "none".
    let with_runner = |s: &str| format!("{}\n[audit]\n{s}\n", base());
    let c = Config::parse(&with_runner("runner = \"/usr/lib/rapha/audit-runner\"")).unwrap();
    let a = c.audit.unwrap();
    assert_eq!(a.limits().memory_mb, 2048);
    assert_eq!(a.limits().gpus, 0);
    let (f, msg) = parse_err(&with_runner("runner = \"audit-runner\""));
    assert_eq!(f, "audit.runner", "{msg}");
    let (f, msg) = parse_err(&with_runner("runner = \"/r\"\nmemory_mb = 0"));
    assert_eq!(f, "audit", "{msg}");
}
