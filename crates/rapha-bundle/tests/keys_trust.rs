//! Key files and the trust store.

use std::os::unix::fs::PermissionsExt as _;

use rapha_bundle::keys::{public_path, write_keypair};
use rapha_bundle::{BundleError, PublicKey, SigningKey, TrustStore};

#[test]
fn keygen_writes_a_private_key_with_mode_0600_and_a_public_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("acme.key");
    let public = write_keypair(&SigningKey::generate_ed25519(), &path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let loaded = SigningKey::load(&path).unwrap();
    assert_eq!(loaded.public_key(), public);
    assert_eq!(PublicKey::load(&public_path(&path)).unwrap(), public);
    assert_eq!(public.keyid().len(), 64);
    // Never overwrites an existing key.
    let err = write_keypair(&SigningKey::generate_ed25519(), &path).unwrap_err();
    assert!(matches!(err, BundleError::Io { .. }), "{err}");
}

#[test]
fn group_readable_private_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("k");
    write_keypair(&SigningKey::generate_ed25519(), &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = SigningKey::load(&path).err().unwrap();
    assert!(
        matches!(err, BundleError::KeyPermissions { mode: 0o640, .. }),
        "{err}"
    );
}

#[test]
fn key_files_are_standard_pkcs8_and_spki_that_openssl_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("k");
    let public = write_keypair(&SigningKey::ed25519_from_seed(&[3; 32]), &path).unwrap();
    let out = match std::process::Command::new("openssl")
        .arg("pkey")
        .arg("-in")
        .arg(&path)
        .arg("-pubout")
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            assert!(
                std::env::var("RAPHA_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "openssl missing: {e}"
            );
            eprintln!("SKIPPED: openssl not installed ({e}); PEM interop not checked");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), public.to_pem());
}

#[test]
fn trust_store_add_list_revoke_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let k1 = SigningKey::ed25519_from_seed(&[1; 32]).public_key();
    let k2 = SigningKey::ed25519_from_seed(&[2; 32]).public_key();
    let exp = rapha_bundle::trust::parse_time("2030-01-01T00:00:00Z").unwrap();
    TrustStore::add(
        &dir,
        "acme-ai",
        &k1,
        &["lesion-classifier".into()],
        Some(exp),
    )
    .unwrap();
    TrustStore::add(&dir, "beta-labs", &k2, &[], None).unwrap();
    let store = TrustStore::open(&dir).unwrap();
    let names: Vec<_> = store.publishers().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["acme-ai", "beta-labs"]);
    assert!(store.publishers()[0].allows("lesion-classifier"));
    assert!(!store.publishers()[0].allows("other"));
    assert!(
        store.publishers()[1].allows("anything"),
        "no --trainers means any trainer"
    );
    assert_eq!(store.publishers()[0].expires, Some(exp));

    let err = TrustStore::add(
        &dir,
        "acme-ai",
        &SigningKey::ed25519_from_seed(&[5; 32]).public_key(),
        &[],
        None,
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::PublisherExists(_)), "{err}");
    let err = TrustStore::add(&dir, "acme-two", &k1, &[], None).unwrap_err();
    assert!(matches!(err, BundleError::DuplicateKey { .. }), "{err}");
    let err = TrustStore::add(&dir, "../evil", &k1, &[], None).unwrap_err();
    assert!(matches!(err, BundleError::InvalidName(_)), "{err}");

    TrustStore::revoke(&dir, "beta-labs", time::OffsetDateTime::now_utc()).unwrap();
    assert!(TrustStore::open(&dir).unwrap().publishers()[1].revoked);
    TrustStore::remove(&dir, "acme-ai").unwrap();
    assert_eq!(TrustStore::open(&dir).unwrap().publishers().len(), 1);
    let err = TrustStore::remove(&dir, "acme-ai").unwrap_err();
    assert!(matches!(err, BundleError::PublisherNotFound(_)), "{err}");
}

#[test]
fn hand_edited_entry_with_a_wrong_keyid_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let k = SigningKey::ed25519_from_seed(&[1; 32]).public_key();
    TrustStore::add(tmp.path(), "acme-ai", &k, &[], None).unwrap();
    let path = tmp.path().join("acme-ai.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&k.keyid(), &"0".repeat(64));
    std::fs::write(&path, text).unwrap();
    let err = TrustStore::open(tmp.path()).unwrap_err();
    assert!(matches!(err, BundleError::TrustEntry { .. }), "{err}");
}

#[test]
fn p256_key_and_der_signature_made_by_openssl_verify_and_tampering_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
    };
    match run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "p.key",
    ]) {
        Ok(o) => assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            assert!(
                std::env::var("RAPHA_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "openssl missing: {e}"
            );
            eprintln!("SKIPPED: openssl not installed ({e}); P-256 interop not checked");
            return;
        }
    }
    assert!(run(&["ec", "-in", "p.key", "-pubout", "-out", "p.pub"])
        .unwrap()
        .status
        .success());
    let message = rapha_bundle::dsse::pae(b"application/vnd.in-toto+json", b"{}");
    std::fs::write(d.join("msg"), &message).unwrap();
    let o = run(&[
        "dgst", "-sha256", "-sign", "p.key", "-out", "sig.der", "msg",
    ])
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let key = PublicKey::load(&d.join("p.pub")).unwrap();
    assert_eq!(key.algorithm(), rapha_bundle::keys::Algorithm::EcdsaP256);
    assert_eq!(
        key.to_pem(),
        std::fs::read_to_string(d.join("p.pub")).unwrap()
    );
    let sig = std::fs::read(d.join("sig.der")).unwrap();
    assert!(key.verify(&message, &sig));
    let mut other = message.clone();
    other[7] = b'3';
    assert!(!key.verify(&other, &sig));
    // Such a key can sit in the trust store like an Ed25519 one.
    TrustStore::add(&d.join("store"), "cosign-user", &key, &[], None).unwrap();
    assert_eq!(
        TrustStore::open(&d.join("store")).unwrap().publishers()[0].key,
        key
    );
}
