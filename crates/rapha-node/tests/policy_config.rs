//! The node configuration feeds the Rego gates: trusted publishers from the trust store,
//! scope limits and opt-in fields from `[dicom]`, the rest from `[policy]`.

use rapha_core::{CohortQuery, Digest, JobId, JobRequest, OutputDecl, OutputKind};
use rapha_node::config::Config;
use rapha_policy::{AdmissionInput, Policy};

use crate::node_common::*;

fn request(publisher: &str, trainer: &str, fields: &[&str]) -> JobRequest {
    JobRequest {
        job_id: JobId::from_bytes([5; 16]),
        publisher: publisher.into(),
        trainer: trainer.into(),
        bundle_manifest: Digest::of(b"m"),
        query: CohortQuery {
            study_date: Some("20240101-20240630".into()),
            modalities: vec!["CR".into()],
            limit: Some(200),
            ..CohortQuery::default()
        },
        requested_fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        validation_percent: 20,
        fee: "150".parse().unwrap(),
        chain_id: 137,
        depositor: "0x0000000000000000000000000000000000000003".into(),
        linkage: None,
    }
}

#[test]
fn configured_hospital_admits_its_trusted_publisher_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ConfigSpec::under(dir.path());
    let acme = rapha_bundle::SigningKey::generate_ed25519().public_key();
    rapha_bundle::TrustStore::add(
        &spec.trust,
        "acme-ai",
        &acme,
        &["chest-xray-classifier".into()],
        None,
    )
    .unwrap();
    let revoked = rapha_bundle::SigningKey::generate_ed25519().public_key();
    rapha_bundle::TrustStore::add(&spec.trust, "old-vendor", &revoked, &[], None).unwrap();
    let text = spec.to_toml().replace(
        "[keys]",
        "[dicom.fields]\nsex = true\nmanufacturer_model = false\nfree_text = []\n\n[keys]",
    );
    let path = dir.path().join("node.toml");
    std::fs::write(&path, text).unwrap();
    // Revoke one publisher in its trust-store file, as `rapha-node trust remove --revoke` does.
    let entry = spec.trust.join("old-vendor.toml");
    let revoked_text = std::fs::read_to_string(&entry)
        .unwrap()
        .replace("revoked = false", "revoked = true");
    std::fs::write(&entry, revoked_text).unwrap();

    let config = Config::load(&path).unwrap();
    let trust = rapha_bundle::TrustStore::open(&config.trust.store).unwrap();
    let hospital = config.hospital_policy(&trust).unwrap();
    assert_eq!(
        hospital.publishers.keys().collect::<Vec<_>>(),
        vec!["acme-ai"]
    );
    assert_eq!(
        hospital.allowed_metadata_fields,
        vec!["PatientSex".to_owned()]
    );
    assert_eq!(hospital.scope.max_studies, 1000);
    assert_eq!(hospital.min_patients, 50);

    let policy = Policy::load(&config.policy.path).unwrap();
    let outputs = vec![OutputDecl {
        name: "model.safetensors".into(),
        kind: OutputKind::Safetensors,
        max_bytes: 1 << 20,
        tensors: vec![],
    }];
    let admit = |req: &JobRequest| {
        policy
            .admission(
                &AdmissionInput::new(
                    req,
                    rapha_policy::Declared {
                        outputs: &outputs,
                        resources: &rapha_core::ResourceLimits::default(),
                    },
                    1_800_000_000,
                    vec![],
                )
                .unwrap(),
                &hospital,
            )
            .unwrap()
    };
    let ok = admit(&request(
        "acme-ai",
        "chest-xray-classifier",
        &["PatientSex"],
    ));
    assert!(ok.allow, "{:?}", ok.reasons);
    let d = admit(&request("old-vendor", "anything", &[]));
    assert_eq!(
        d.reasons,
        vec!["The publisher 'old-vendor' is not on this hospital's list of trusted publishers."]
    );
    let d = admit(&request(
        "acme-ai",
        "chest-xray-classifier",
        &["PatientAge"],
    ));
    assert_eq!(
        d.reasons,
        vec!["The trainer asks for the metadata field 'PatientAge', which this hospital does not share."]
    );
}

#[test]
fn production_template_is_refused_by_the_serve_preflight() {
    let config = Config::parse(rapha_node::init::PRODUCTION_TEMPLATE).unwrap();
    let report = rapha_node::doctor::preflight(&config).unwrap_err();
    assert!(report.failures().count() >= 7, "{report}");
}
