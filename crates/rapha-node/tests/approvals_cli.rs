//! The DPO's `approve` and `approvals list|revoke`, honest and attacked.

use std::io::Write as _;
use std::process::{Command, Stdio};

use rapha_core::demographics::{Demographics, SexBin};
use rapha_core::{CohortQuery, Digest, JobId, JobRequest};
use rapha_policy::{write_secret_hex, ApprovalStore, CohortSummary, DpoSigningKey, ReviewRequest};

use crate::node_common::*;

struct Setup {
    _dir: tempfile::TempDir,
    config: String,
    dpo: String,
    store: ApprovalStore,
    digest: Digest,
}

fn review() -> ReviewRequest {
    ReviewRequest {
        job: JobRequest {
            job_id: JobId::from_bytes([3; 16]),
            publisher: "acme-ai".into(),
            trainer: "chest-xray-classifier".into(),
            bundle_manifest: Digest::of(b"manifest"),
            query: CohortQuery {
                study_date: Some("20240101-20241231".into()),
                modalities: vec!["CR".into()],
                limit: Some(300),
                ..CohortQuery::default()
            },
            requested_fields: vec![],
            validation_percent: 20,
            fee: "150".parse().unwrap(),
            chain_id: 137,
            depositor: "0x0000000000000000000000000000000000000002".into(),
            linkage: None,
        },
        cohort: CohortSummary {
            commitment: Digest::of(b"cohort"),
            patients: 80,
            train_patients: 64,
            validation_patients: 16,
            studies: 90,
            instances: 240,
            modalities: [("CR".to_owned(), 240)].into(),
            exclusions: [("burned-in-annotation".to_owned(), 4)].into(),
            demographics: Some({
                let mut d = Demographics::default();
                for _ in 0..41 {
                    d.add(SexBin::Female, Some(4));
                }
                for _ in 0..36 {
                    d.add(SexBin::Male, Some(6));
                }
                for _ in 0..3 {
                    d.add(SexBin::Unknown, None);
                }
                d
            }),
        },
        digest_version: rapha_policy::JobDigestVersion::CURRENT,
        resources: None,
        linkage_jobs: vec![],
        image: None,
        release: None,
    }
}

fn setup_with(key: DpoSigningKey, trusted: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let dpo_path = dir.path().join("dpo.key");
    write_secret_hex(&dpo_path, &key.expose_seed()).unwrap();
    let mut spec = ConfigSpec::under(dir.path());
    spec.dpo_keys = vec![if trusted {
        key.public().to_hex()
    } else {
        DpoSigningKey::generate().public().to_hex()
    }];
    let config = spec.write(&dir.path().join("node.toml"));
    let store = ApprovalStore::open(&spec.state_dir.join("approvals")).unwrap();
    let digest = store.submit(&review()).unwrap();
    Setup {
        config: config.to_str().unwrap().to_owned(),
        dpo: dpo_path.to_str().unwrap().to_owned(),
        store,
        digest,
        _dir: dir,
    }
}

fn setup() -> Setup {
    setup_with(DpoSigningKey::generate(), true)
}

#[test]
fn approve_shows_the_summary_signs_and_list_shows_it() {
    let s = setup();
    let d = s.digest.to_hex();
    let out = node(&[
        "approve",
        &d,
        "--key",
        &s.dpo,
        "--config",
        &s.config,
        "--expires",
        "72h",
        "--yes",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "publisher:         acme-ai",
        "80 (64 train, 16 validation)",
        "excluded (burned-in-annotation): 4",
        "150.000000 USDC",
        "patients by sex:   female (F) 41, male (M) 36, other (O) <5, unknown <5 \
         (counts below 5 shown as <5)",
        "patients by age:   0-9 <5, 10-19 <5, 20-29 <5, 30-39 <5, 40-49 41, 50-59 <5, \
         60-69 36, 70-79 <5, 80-89 <5, 90+ <5, unknown <5",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let record = s.store.get(&s.digest).unwrap().unwrap();
    record.approval.verify().unwrap();
    let lifetime = record.approval.expires_at - record.approval.issued_at;
    assert!(
        (72 * 3600 - 5..=72 * 3600).contains(&lifetime),
        "{lifetime}"
    );
    let list = node(&["approvals", "list", "--config", &s.config]);
    assert!(
        stdout(&list).contains(&format!(
            "{d}  acme-ai / chest-xray-classifier, 80 patients  approved by"
        )),
        "{}",
        stdout(&list)
    );
}

#[test]
fn approve_asks_and_a_no_signs_nothing() {
    let s = setup();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rapha-node"))
        .args([
            "approve",
            &s.digest.to_hex(),
            "--key",
            &s.dpo,
            "--config",
            &s.config,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"no\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stdout(&out).contains("Approve this job?"));
    assert!(
        stderr(&out).contains("not approved (nothing was signed)"),
        "{}",
        stderr(&out)
    );
    assert!(s.store.get(&s.digest).unwrap().is_none());
}

#[test]
fn revoke_before_start_blocks_the_job_and_cannot_be_undone() {
    let s = setup();
    let d = s.digest.to_hex();
    assert!(
        node(&["approve", &d, "--key", &s.dpo, "--config", &s.config, "--yes"])
            .status
            .success()
    );
    let out = node(&["approvals", "revoke", &d, "--config", &s.config]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&node(&["approvals", "list", "--config", &s.config])).contains("REVOKED"));
    assert!(matches!(
        s.store.mark_started(&s.digest, 1),
        Err(rapha_policy::PolicyError::Revoked(_))
    ));
    let again = node(&[
        "approve", &d, "--key", &s.dpo, "--config", &s.config, "--yes",
    ]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("was revoked"), "{}", stderr(&again));
}

#[test]
fn revoke_after_start_is_refused() {
    let s = setup();
    let d = s.digest.to_hex();
    assert!(
        node(&["approve", &d, "--key", &s.dpo, "--config", &s.config, "--yes"])
            .status
            .success()
    );
    s.store.mark_started(&s.digest, 1).unwrap();
    let out = node(&["approvals", "revoke", &d, "--config", &s.config]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("has already started"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn key_that_is_not_a_configured_dpo_key_is_refused() {
    let s = setup_with(DpoSigningKey::generate(), false);
    let out = node(&[
        "approve",
        &s.digest.to_hex(),
        "--key",
        &s.dpo,
        "--config",
        &s.config,
        "--yes",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not in keys.dpo_public_keys"),
        "{}",
        stderr(&out)
    );
    assert!(s.store.get(&s.digest).unwrap().is_none());
}

#[test]
fn development_dpo_key_is_refused_in_production() {
    let s = setup_with(DpoSigningKey::generate_dev(), true);
    let out = node(&[
        "approve",
        &s.digest.to_hex(),
        "--key",
        &s.dpo,
        "--config",
        &s.config,
        "--yes",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("development key"), "{}", stderr(&out));
    assert!(s.store.get(&s.digest).unwrap().is_none());
}

#[test]
fn unknown_job_digest_is_refused() {
    let s = setup();
    let out = node(&[
        "approve",
        &Digest::of(b"other").to_hex(),
        "--key",
        &s.dpo,
        "--config",
        &s.config,
        "--yes",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is waiting for review"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn expiry_parses_durations_and_rfc3339_and_refuses_the_past() {
    use rapha_node::approvals::parse_expiry;
    assert_eq!(parse_expiry("7d", 1000).unwrap(), 1000 + 7 * 86_400);
    assert_eq!(parse_expiry("2h", 1000).unwrap(), 1000 + 7200);
    assert_eq!(parse_expiry("30m", 1000).unwrap(), 1000 + 1800);
    assert_eq!(
        parse_expiry("2030-01-01T00:00:00Z", 1000).unwrap(),
        1_893_456_000
    );
    for bad in [
        "0h",
        "1970-01-01T00:00:00Z",
        "soon",
        "-5d",
        "99999999999999999999d",
    ] {
        assert!(parse_expiry(bad, 1000).is_err(), "{bad:?}");
    }
}

/// Review finding 8: a publisher-chosen string (here a trainer name carrying a newline and
/// ANSI escapes that erase the line above and print a forged one) reaches the DPO's approval
/// prompt. The bundle step refuses such names at verification (rapha-bundle's
/// `a_trainer_name_with_a_newline_and_an_ansi_escape_is_refused_at_verification`); a review
/// made by hand, or recorded before that check, is still shown with every control character
/// escaped, one line per field.
#[test]
fn the_approval_summary_shows_control_characters_in_publisher_strings_escaped() {
    let forged = "chest-xray\n  fee:               0.000001 USDC (chain 137)\x1b[1A\x1b[2K";
    let mut r = review();
    r.job.trainer = forged.into();
    r.job.publisher = "acme-ai\x1b]0;title\x07".into();
    r.job.requested_fields = vec!["BodyPartExamined\r\u{202e}".into()];
    r.job.query.modalities = vec!["CR\x1b[31m".into()];
    r.job.query.study_date = Some("20240101-20241231\x08\x08".into());
    r.cohort.modalities = [("CR\x1b[8m".to_owned(), 240)].into();
    let honest_lines = rapha_node::approvals::summary(&review()).lines().count();
    let text = rapha_node::approvals::summary(&r);
    let raw: Vec<char> = text
        .chars()
        .filter(|c| *c != '\n' && (c.is_control() || *c == '\u{202e}'))
        .collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in:\n{text}");
    assert_eq!(text.lines().count(), honest_lines, "{text}");
    assert!(
        text.contains(
            r"trainer:           chest-xray\n  fee:               0.000001 USDC (chain 137)\u{1b}[1A\u{1b}[2K (bundle"
        ),
        "{text}"
    );
    for want in [
        r"publisher:         acme-ai\u{1b}]0;title\u{7}",
        r"BodyPartExamined\r\u{202e}",
        r"modalities [CR\u{1b}[31m]",
        r"dates 20240101-20241231\u{8}\u{8}",
        r"modality CR\u{1b}[8m",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

/// The DPO sees what the trainer image holds and what unpacking changes in it (issue 16,
/// item 1), and a GPU job's resources with the warning that its GPU memory is outside any
/// enclave (item 5): counts only, and none of it in the job digest.
#[test]
fn the_approval_summary_shows_the_image_contents_and_a_gpu_request() {
    let mut r = review();
    let digest = r.job_digest().unwrap();
    r.image = Some(rapha_policy::ImageReview {
        layers: 3,
        entries: 41_207,
        bytes: 912_345_678,
        files: 35_001,
        directories: 4_100,
        symlinks: 2_090,
        absolute_symlinks: 77,
        hard_links: 12,
        whiteouts: 4,
        setuid_setgid_cleared: 9,
    });
    let bounds = rapha_core::ResourceBounds {
        gpus: Some(rapha_core::Bound::new(0, 1)),
        ..rapha_core::ResourceBounds::default()
    };
    r.resources = Some(rapha_policy::ResourceReview {
        requested: rapha_core::ResourceLimits {
            gpus: 1,
            ..rapha_core::ResourceLimits::default()
        },
        bounds,
    });
    assert_eq!(r.job_digest().unwrap(), digest);
    let text = rapha_node::approvals::summary(&r);
    for want in [
        "  gpus:              1 (0..=1); GPU memory is outside any enclave",
        "  layers:            3 (912345678 bytes, 41207 entries)\n",
        "  entries:           35001 files, 4100 directories, 2090 symlinks (77 absolute), 12 hard links, 4 whiteouts\n",
        "  setuid/setgid:     9 cleared when unpacked",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // A review recorded before either was shown reads as before, with neither.
    let before = review();
    let json = serde_json::to_string(&before).unwrap();
    assert!(!json.contains("image") && !json.contains("gpus"), "{json}");
    let text = rapha_node::approvals::summary(&before);
    assert!(
        !text.contains("trainer image") && !text.contains("gpus"),
        "{text}"
    );
}

#[test]
fn the_approval_summary_shows_the_declared_parameters_and_bits() {
    let mut r = review();
    let digest = r.job_digest().unwrap();
    r.release = Some(rapha_policy::ReleaseReview {
        parameters: 5953,
        bits: 190_496,
        max_bits: Some(1_000_000),
        ..Default::default()
    });
    assert_eq!(r.job_digest().unwrap(), digest);
    let text = rapha_node::approvals::summary(&r);
    let want = "  model tensors:     5953 parameters, 190496 bits at their declared dtypes \
                (this hospital's cap: 1000000 bits)\n";
    assert!(text.contains(want), "missing {want:?} in:\n{text}");
    let json = serde_json::to_string(&review()).unwrap();
    assert!(!json.contains("release"), "{json}");
}

/// `rapha-node dpo enrol-code` prints a code that enrols the first DPO passkey once, and
/// refuses to print one while a DPO passkey is enrolled; `dpo list` shows what the log holds.
#[test]
fn dpo_enrol_code_admits_the_first_passkey_once_and_is_refused_after() {
    use rapha_node::passkeys::{Authority, Passkeys, Purpose, Registration};
    use rapha_testkit::passkey::{Alg, Format, SoftAuthenticator};

    let dir = tempfile::tempdir().unwrap();
    let spec = ConfigSpec::under(dir.path());
    std::fs::create_dir_all(&spec.state_dir).unwrap();
    let config = spec.write(&dir.path().join("node.toml"));
    let config = config.to_str().unwrap().to_owned();
    // Without [approval]: nothing to enrol into.
    let out = node(&["dpo", "enrol-code", "--config", &config]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not configured"), "{}", stderr(&out));
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str("\n[approval]\nrp_id = \"localhost\"\norigins = [\"http://localhost:8443\"]\n");
    std::fs::write(&config, toml).unwrap();

    let out = node(&["dpo", "enrol-code", "--config", &config]);
    assert!(out.status.success(), "{}", stderr(&out));
    let code = stdout(&out).trim().rsplit(' ').next().unwrap().to_owned();
    assert_eq!(code.len(), 24, "{}", stdout(&out));
    let list = node(&["dpo", "list", "--config", &config]);
    assert!(
        stdout(&list).contains("0 DPO credential(s)"),
        "{}",
        stdout(&list)
    );

    // The printed code enrols the first DPO (as the console does), once.
    let mut log = rapha_receipt::ReceiptLog::open(&spec.state_dir.join("receipts")).unwrap();
    let mut keys = Passkeys::open(
        &spec.state_dir.join("passkeys.sqlite"),
        "localhost",
        vec!["http://localhost:8443".into()],
        &log,
    )
    .unwrap();
    let mut dpo = SoftAuthenticator::new(Alg::Es256, 5, "localhost", "http://localhost:8443");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let c = keys.challenge(&Purpose::Register, now).unwrap();
    let (obj, client) = dpo.register(&c.challenge.0.clone().try_into().unwrap(), Format::None);
    let reg = Registration {
        attestation_object: obj,
        client_data_json: client,
        nonce: c.nonce,
        issued_at: c.issued_at,
        label: "caldicott guardian".into(),
    };
    keys.enrol(&mut log, &reg, Authority::Code(code), now)
        .unwrap();
    drop((keys, log));

    let list = node(&["dpo", "list", "--config", &config]);
    let text = stdout(&list);
    assert!(
        text.contains("1 DPO credential(s)") && text.contains(&dpo.id().to_string()),
        "{text}"
    );
    assert!(text.contains("caldicott guardian"), "{text}");
    let out = node(&["dpo", "enrol-code", "--config", &config]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("1 DPO credential(s) are enrolled"),
        "{}",
        stderr(&out)
    );
}

/// A review stored before the node counted sex and age loads, and its summary says they were
/// not counted; one with them prints no count below five.
#[test]
fn the_approval_summary_shows_sex_and_age_only_where_counted() {
    let mut before = review();
    before.cohort.demographics = None;
    let json = serde_json::to_string(&before).unwrap();
    assert!(!json.contains("demographics"), "{json}");
    let loaded: ReviewRequest = serde_json::from_str(&json).unwrap();
    let text = rapha_node::approvals::summary(&loaded);
    assert!(
        text.contains("patients by sex/age: not counted (summarised before the node counted them)"),
        "{text}"
    );
    let text = rapha_node::approvals::summary(&review());
    let sex = text
        .lines()
        .find(|l| l.contains("patients by sex:"))
        .unwrap();
    let age = text
        .lines()
        .find(|l| l.contains("patients by age:"))
        .unwrap();
    for line in [sex, age] {
        for small in [" 0,", " 1,", " 2,", " 3,", " 4,", " 3 "] {
            assert!(!line.contains(small), "{line}");
        }
    }
}
