//! Bundle verification: every attack from the issue fails closed with its own error, next to
//! the honest path (build from a directory, sign, verify, unpack, byte-identical rootfs).

use rapha_bundle::dsse::Envelope;
use rapha_bundle::oci::MEDIA_LAYER_TAR;
use rapha_bundle::{
    sign_bundle, trust::parse_time, verify_bundle, verify_bundle_at, BundleError, Limits,
    TrustStore,
};
use rapha_core::{OutputKind, ResourceLimits};

use crate::common::*;

fn envelope(f: &Fixture) -> Envelope {
    Envelope::parse(&std::fs::read(f.bundle().join("signature.dsse.json")).unwrap()).unwrap()
}

fn write_envelope(f: &Fixture, env: &Envelope) {
    std::fs::write(
        f.bundle().join("signature.dsse.json"),
        serde_json::to_vec(env).unwrap(),
    )
    .unwrap();
}

#[test]
fn honest_bundle_verifies_and_unpacks_to_an_identical_rootfs() {
    let f = Fixture::new();
    let vb = verify_bundle(&f.bundle(), &f.store()).unwrap();
    assert_eq!(vb.publisher(), "acme-ai");
    assert_eq!(vb.trainer_name(), "lesion-classifier");
    assert_eq!(vb.trainer_version(), "1.2.0");
    assert_eq!(vb.manifest_digest(), f.manifest);
    assert_eq!(vb.entrypoint(), ["/trainer"]);
    assert_eq!(vb.env(), ["EPOCHS=3"]);
    assert_eq!(vb.working_dir(), "/");
    assert_eq!(vb.requested_fields(), ["BodyPartExamined"]);
    assert_eq!(
        vb.resources(),
        &ResourceLimits {
            memory_mb: 1024,
            cpus: 1,
            pids: 32,
            wall_seconds: 600,
            tmp_mb: rapha_core::DEFAULT_TMP_MB,
            gpus: 0,
        }
    );
    assert_eq!(vb.outputs().len(), 2);
    assert_eq!(vb.outputs()[0].kind, OutputKind::Safetensors);
    assert_eq!(vb.outputs()[1].max_bytes, 65536);
    assert_eq!(vb.keyid(), f.key.public_key().keyid());

    let out = vb.unpack_rootfs(&f.path("unpacked")).unwrap();
    assert_eq!(out.path, f.path("unpacked"));
    assert_eq!(snapshot(&f.path("rootfs")), snapshot(&f.path("unpacked")));
    assert!(out.entries >= 8 && out.bytes > 200_000);
}

#[test]
fn same_rootfs_builds_the_same_digest() {
    let f = Fixture::new();
    let again = build(&f.path("rootfs"), &f.path("layout2"));
    let (_, _, _) = rapha_bundle::oci::OciLayout::open(&f.path("layout2"))
        .unwrap()
        .image()
        .unwrap();
    assert_eq!(again, f.manifest);
    // Touching mtimes does not change it either.
    let p = f.path("rootfs/trainer");
    let file = std::fs::File::options().write(true).open(&p).unwrap();
    file.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(999_999))
        .unwrap();
    assert_eq!(build(&f.path("rootfs"), &f.path("layout3")), f.manifest);
}

#[test]
fn unsigned_bundle_is_refused() {
    let f = Fixture::new();
    std::fs::remove_file(f.bundle().join("signature.dsse.json")).unwrap();
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::Unsigned(_)), "{err}");
}

#[test]
fn envelope_without_signatures_is_refused() {
    let f = Fixture::new();
    let mut env = envelope(&f);
    env.signatures.clear();
    write_envelope(&f, &env);
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::NoSignatures), "{err}");
}

#[test]
fn signature_by_an_unknown_key_is_refused() {
    let f = Fixture::new();
    let other = tempfile::tempdir().unwrap();
    TrustStore::add(
        other.path(),
        "someone-else",
        &key(42).public_key(),
        &[],
        None,
    )
    .unwrap();
    let err = verify_bundle(&f.bundle(), &TrustStore::open(other.path()).unwrap()).unwrap_err();
    assert!(matches!(err, BundleError::UnknownKey { .. }), "{err}");
}

#[test]
fn removed_publisher_becomes_an_unknown_key() {
    let f = Fixture::new();
    TrustStore::remove(&f.path("store"), "acme-ai").unwrap();
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::UnknownKey { .. }), "{err}");
}

#[test]
fn trusted_key_signing_a_trainer_it_may_not_sign_is_refused() {
    let f = Fixture::new();
    let out = f.path("bundle-other");
    sign_bundle(
        &f.key,
        &f.path("layout"),
        &spec_named("chest-xray-exfil"),
        &out,
    )
    .unwrap();
    let err = verify_bundle(&out, &f.store()).unwrap_err();
    match err {
        BundleError::TrainerNotAllowed {
            publisher,
            trainer,
            allowed,
        } => {
            assert_eq!(
                (publisher.as_str(), trainer.as_str()),
                ("acme-ai", "chest-xray-exfil")
            );
            assert_eq!(allowed, ["lesion-classifier"]);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn expired_key_is_refused_and_valid_before_expiry() {
    let f = Fixture::new();
    let store = tempfile::tempdir().unwrap();
    let exp = parse_time("2026-01-01T00:00:00Z").unwrap();
    TrustStore::add(store.path(), "acme-ai", &f.key.public_key(), &[], Some(exp)).unwrap();
    let store = TrustStore::open(store.path()).unwrap();
    let before = parse_time("2025-12-31T23:59:59Z").unwrap();
    verify_bundle_at(&f.bundle(), &store, before, &Limits::default()).unwrap();
    let err = verify_bundle_at(&f.bundle(), &store, exp, &Limits::default()).unwrap_err();
    assert!(matches!(err, BundleError::KeyExpired { .. }), "{err}");
}

#[test]
fn revoked_key_is_refused() {
    let f = Fixture::new();
    TrustStore::revoke(&f.path("store"), "acme-ai", time::OffsetDateTime::now_utc()).unwrap();
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::KeyRevoked { .. }), "{err}");
}

#[test]
fn predicate_claiming_another_publisher_is_refused() {
    let f = Fixture::new();
    let mut s = spec();
    s.publisher = "trusted-hospital-vendor".into();
    sign_bundle(&f.key, &f.path("layout"), &s, &f.path("b2")).unwrap();
    let err = verify_bundle(&f.path("b2"), &f.store()).unwrap_err();
    assert!(
        matches!(err, BundleError::PublisherMismatch { .. }),
        "{err}"
    );
}

#[test]
fn layer_byte_flipped_after_signing_is_refused() {
    let f = Fixture::new();
    let layout = rapha_bundle::oci::OciLayout::open(&f.bundle()).unwrap();
    let (_, manifest, _) = layout.image().unwrap();
    let path = layout.blob_path(&manifest.layers[0].sha256().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(
        matches!(err, BundleError::BlobDigestMismatch { .. }),
        "{err}"
    );
}

#[test]
fn layer_changed_between_verification_and_unpacking_is_refused_and_nothing_is_left() {
    let f = Fixture::new();
    let vb = verify_bundle(&f.bundle(), &f.store()).unwrap();
    let layout = rapha_bundle::oci::OciLayout::open(&f.bundle()).unwrap();
    let (_, manifest, _) = layout.image().unwrap();
    let path = layout.blob_path(&manifest.layers[0].sha256().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 0x80;
    std::fs::write(&path, bytes).unwrap();
    let err = vb.unpack_rootfs(&f.path("rootfs-out")).unwrap_err();
    assert!(
        matches!(err, BundleError::BlobDigestMismatch { .. }),
        "{err}"
    );
    assert!(
        !f.path("rootfs-out").exists(),
        "a partial rootfs was left behind"
    );
}

#[test]
fn manifest_swapped_for_another_signed_manifest_is_refused() {
    let f = Fixture::new();
    // A second, honestly signed image by the same trusted publisher.
    write_mode(&f.path("rootfs/trainer"), b"#!/bin/sh\nexfiltrate\n", 0o755);
    build(&f.path("rootfs"), &f.path("layout-b"));
    sign_bundle(&f.key, &f.path("layout-b"), &spec(), &f.path("bundle-b")).unwrap();
    verify_bundle(&f.path("bundle-b"), &f.store()).unwrap();

    // Attack 1: bundle A's envelope, bundle B's image (blobs and index).
    for name in std::fs::read_dir(f.path("bundle-b/blobs/sha256")).unwrap() {
        let name = name.unwrap().file_name();
        std::fs::copy(
            f.path("bundle-b/blobs/sha256").join(&name),
            f.bundle().join("blobs/sha256").join(&name),
        )
        .unwrap();
    }
    std::fs::copy(f.path("bundle-b/index.json"), f.bundle().join("index.json")).unwrap();
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(
        matches!(err, BundleError::SubjectMismatch { signed, .. } if signed == f.manifest),
        "{err}"
    );

    // Attack 2: bundle B's image with bundle A's envelope copied over.
    std::fs::copy(
        f.bundle().join("signature.dsse.json"),
        f.path("bundle-b/signature.dsse.json"),
    )
    .unwrap();
    let err = verify_bundle(&f.path("bundle-b"), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::SubjectMismatch { .. }), "{err}");
}

#[test]
fn payload_type_changed_outside_the_pae_is_refused() {
    let f = Fixture::new();
    let mut env = envelope(&f);
    env.payload_type = "application/vnd.in-toto+json; charset=latin1".into();
    write_envelope(&f, &env);
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(
        matches!(err, BundleError::BadSignature { ref publisher } if publisher == "acme-ai"),
        "{err}"
    );
}

#[test]
fn statement_signed_under_another_type_and_relabelled_is_refused() {
    let f = Fixture::new();
    let env = envelope(&f);
    let body = env.payload_bytes().unwrap();
    // The publisher signed these bytes as something else; the attacker relabels them.
    let mut other = Envelope::sign("application/vnd.acme.notes+json", &body, &f.key);
    write_envelope(&f, &other);
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(
        matches!(err, BundleError::UnsupportedPayloadType(_)),
        "{err}"
    );
    other.payload_type = rapha_bundle::dsse::IN_TOTO_PAYLOAD_TYPE.into();
    write_envelope(&f, &other);
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
}

#[test]
fn payload_edited_after_signing_is_refused() {
    let f = Fixture::new();
    let mut env = envelope(&f);
    let body = String::from_utf8(env.payload_bytes().unwrap()).unwrap();
    let edited = body.replace("\"memory_mb\":1024", "\"memory_mb\":65536");
    assert_ne!(body, edited);
    use base64::Engine as _;
    env.payload = base64::engine::general_purpose::STANDARD.encode(edited);
    write_envelope(&f, &env);
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
}

#[test]
fn truncated_envelope_is_refused() {
    let f = Fixture::new();
    let path = f.bundle().join("signature.dsse.json");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::EnvelopeMalformed(_)), "{err}");
}

#[test]
fn missing_blob_is_refused() {
    let f = Fixture::new();
    let layout = rapha_bundle::oci::OciLayout::open(&f.bundle()).unwrap();
    let (_, manifest, _) = layout.image().unwrap();
    std::fs::remove_file(layout.blob_path(&manifest.layers[0].sha256().unwrap())).unwrap();
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::MissingBlob { .. }), "{err}");
}

#[test]
fn index_with_two_manifests_is_refused() {
    let f = Fixture::new();
    let path = f.bundle().join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let m = index["manifests"][0].clone();
    index["manifests"].as_array_mut().unwrap().push(m);
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::AmbiguousIndex(2)), "{err}");
}

#[test]
fn unknown_layer_media_type_is_refused_at_signing() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = raw_tar(&[file("trainer", b"x", 0o755)]);
    layout_from_layers(
        &tmp.path().join("l"),
        &[(
            "application/vnd.example.layer.v1.squashfs",
            tar.clone(),
            tar,
        )],
    );
    let err = sign_bundle(
        &key(1),
        &tmp.path().join("l"),
        &spec(),
        &tmp.path().join("b"),
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::UnknownMediaType { .. }), "{err}");
}

#[test]
fn predicate_entrypoint_other_than_the_image_is_refused_at_signing() {
    let f = Fixture::new();
    let mut s = spec();
    s.entrypoint = Some(vec!["/bin/sh".into(), "-c".into(), "curl evil".into()]);
    let err = sign_bundle(&f.key, &f.path("layout"), &s, &f.path("b3")).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::ConfigMismatch {
                field: "entrypoint",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn wrong_diff_id_is_refused_at_unpacking() {
    let tar = raw_tar(&[file("trainer", b"x", 0o755)]);
    let other = raw_tar(&[file("trainer", b"y", 0o755)]);
    let (tmp, vb) = signed_from_layers(&[(MEDIA_LAYER_TAR, tar, other)]);
    let err = vb.unpack_rootfs(&tmp.path().join("root")).unwrap_err();
    assert!(
        matches!(err, BundleError::DiffIdMismatch { index: 0, .. }),
        "{err}"
    );
    assert!(!tmp.path().join("root").exists());
}

#[test]
fn oci_archive_is_accepted_as_the_image() {
    let f = Fixture::new();
    // An oci-archive is a tar of the layout directory.
    let archive = f.path("image.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    b.append_dir_all(".", f.path("layout")).unwrap();
    b.finish().unwrap();
    drop(b);
    let digest = sign_bundle(&f.key, &archive, &spec(), &f.path("from-archive")).unwrap();
    assert_eq!(digest, f.manifest);
    let vb = verify_bundle(&f.path("from-archive"), &f.store()).unwrap();
    vb.unpack_rootfs(&f.path("r2")).unwrap();
    assert_eq!(snapshot(&f.path("rootfs")), snapshot(&f.path("r2")));
    assert!(!f.path("from-archive/.import").exists());
}

#[test]
fn oci_archive_with_a_corrupt_blob_is_refused() {
    let f = Fixture::new();
    let archive = f.path("image.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    let layout = rapha_bundle::oci::OciLayout::open(&f.path("layout")).unwrap();
    let (_, manifest, _) = layout.image().unwrap();
    let layer = layout.blob_path(&manifest.layers[0].sha256().unwrap());
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&layer, bytes).unwrap();
    b.append_dir_all(".", f.path("layout")).unwrap();
    b.finish().unwrap();
    drop(b);
    let err = sign_bundle(&f.key, &archive, &spec(), &f.path("bad")).unwrap_err();
    assert!(
        matches!(err, BundleError::BlobDigestMismatch { .. }),
        "{err}"
    );
}

#[test]
fn index_descriptor_with_a_wrong_size_is_refused() {
    let f = Fixture::new();
    let path = f.bundle().join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let size = index["manifests"][0]["size"].as_u64().unwrap();
    index["manifests"][0]["size"] = (size - 1).into();
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(
        matches!(err, BundleError::BlobSizeMismatch { expected, actual, .. } if expected + 1 == actual),
        "{err}"
    );
}

#[test]
fn nested_index_instead_of_a_manifest_is_refused() {
    let f = Fixture::new();
    let path = f.bundle().join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    index["manifests"][0]["mediaType"] = rapha_bundle::oci::MEDIA_INDEX.into();
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::UnknownMediaType { .. }), "{err}");
}

#[test]
fn envelope_that_is_a_symlink_or_fifo_is_refused_without_blocking() {
    let f = Fixture::new();
    let env = f.bundle().join("signature.dsse.json");
    std::fs::rename(&env, f.path("elsewhere.json")).unwrap();
    std::os::unix::fs::symlink(f.path("elsewhere.json"), &env).unwrap();
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(
        matches!(err, BundleError::Layout(ref m) if m.contains("not a regular file")),
        "{err}"
    );
    std::fs::remove_file(&env).unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(&env)
        .status()
        .unwrap();
    assert!(st.success());
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::Layout(_)), "{err}");
}
