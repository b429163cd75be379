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

/// PEM armour around `der`, as a key file holds it.
fn armour(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
}

/// The DER inside a PEM this crate wrote.
fn der_of(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn key_format_reason(err: BundleError) -> String {
    match err {
        BundleError::KeyFormat { reason, .. } => reason,
        other => panic!("expected KeyFormat, got {other}"),
    }
}

fn unsupported(err: BundleError) -> String {
    match err {
        BundleError::UnsupportedAlgorithm(why) => why,
        other => panic!("expected UnsupportedAlgorithm, got {other}"),
    }
}

/// An uncompressed P-256 point (the generator) for hand-built SPKIs.
const P256_G: [u8; 65] = {
    let x = [
        0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40,
        0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98,
        0xc2, 0x96,
    ];
    let y = [
        0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e,
        0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf,
        0x51, 0xf5,
    ];
    let mut p = [0u8; 65];
    p[0] = 0x04;
    let mut i = 0;
    while i < 32 {
        p[1 + i] = x[i];
        p[33 + i] = y[i];
        i += 1;
    }
    p
};

/// SEQUENCE { SEQUENCE { id-ecPublicKey, curve }, BIT STRING (0 unused bits) point }.
fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let ec_public_key = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let mut alg = ec_public_key.to_vec();
    alg.extend_from_slice(curve_oid);
    let mut body = vec![0x30, alg.len() as u8];
    body.extend_from_slice(&alg);
    body.extend_from_slice(&[0x03, point.len() as u8 + 1, 0x00]);
    body.extend_from_slice(point);
    let mut der = vec![0x30, body.len() as u8];
    der.extend_from_slice(&body);
    der
}

#[test]
fn key_files_are_written_as_the_signature_crates_encode_them() {
    use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, KeypairBytes};
    let seed = [7u8; 32];
    let key = SigningKey::ed25519_from_seed(&seed);
    // PKCS#8 v1 (no public key inside), as OpenSSL writes it.
    let v1 = KeypairBytes {
        secret_key: seed,
        public_key: None,
    }
    .to_pkcs8_der()
    .unwrap();
    assert_eq!(der_of(&key.to_pem()), v1.as_bytes());
    let public = key.public_key();
    let dalek = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    assert_eq!(
        public.spki_der(),
        dalek.to_public_key_der().unwrap().as_bytes()
    );
    assert_eq!(der_of(&public.to_pem()), public.spki_der());

    // P-256: the SPKI this crate writes (and hashes into the key id) is p256's.
    let p = PublicKey::ecdsa_p256_from_sec1(&P256_G).unwrap();
    let PublicKey::EcdsaP256 { key: vk, .. } = &p else {
        panic!("not P-256")
    };
    use p256::pkcs8::EncodePublicKey as _;
    assert_eq!(p.spki_der(), vk.to_public_key_der().unwrap().as_bytes());
    assert_eq!(
        PublicKey::from_pem(&p.to_pem(), std::path::Path::new("p.pub")).unwrap(),
        p
    );
}

#[test]
fn pkcs8_v2_is_read_when_its_public_key_matches_the_seed() {
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    let dalek = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let v2 = dalek.to_pkcs8_der().unwrap();
    let path = std::path::Path::new("v2.key");
    let key = SigningKey::from_pem(&armour("PRIVATE KEY", v2.as_bytes()), path).unwrap();
    assert_eq!(
        key.public_key(),
        SigningKey::ed25519_from_seed(&[9; 32]).public_key()
    );

    // The same document with another key's public half is refused.
    let mut bytes = v2.as_bytes().to_vec();
    let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]).verifying_key();
    let n = bytes.len();
    bytes[n - 32..].copy_from_slice(other.as_bytes());
    let err = SigningKey::from_pem(&armour("PRIVATE KEY", &bytes), path)
        .err()
        .unwrap();
    assert!(
        key_format_reason(err).starts_with("Ed25519 PKCS#8 key:"),
        "mismatched public key"
    );
}

#[test]
fn key_files_with_trailing_bytes_are_refused() {
    let path = std::path::Path::new("k");
    let key = SigningKey::ed25519_from_seed(&[4; 32]);
    let mut der = der_of(&key.to_pem());
    der.push(0);
    let err = SigningKey::from_pem(&armour("PRIVATE KEY", &der), path)
        .err()
        .unwrap();
    let why = key_format_reason(err);
    assert!(why.starts_with("not a PKCS#8 private key:"), "{why}");

    let mut der = key.public_key().spki_der();
    der.extend_from_slice(&[0x05, 0x00]);
    let err = PublicKey::from_pem(&armour("PUBLIC KEY", &der), path).unwrap_err();
    let why = key_format_reason(err);
    assert!(
        why.starts_with("not a SubjectPublicKeyInfo public key:"),
        "{why}"
    );

    // A length that claims more than the document holds.
    let mut der = key.public_key().spki_der();
    der[1] += 1;
    let err = PublicKey::from_pem(&armour("PUBLIC KEY", &der), path).unwrap_err();
    assert!(matches!(err, BundleError::KeyFormat { .. }), "{err}");
}

#[test]
fn key_files_of_another_algorithm_or_curve_are_refused() {
    let path = std::path::Path::new("k");
    // X25519 (1.3.101.110) in place of Ed25519 (1.3.101.112): a key-agreement key.
    let key = SigningKey::ed25519_from_seed(&[5; 32]);
    let mut der = der_of(&key.to_pem());
    let at = der
        .windows(3)
        .position(|w| w == [0x2b, 0x65, 0x70])
        .unwrap();
    der[at + 2] = 0x6e;
    let why = unsupported(
        SigningKey::from_pem(&armour("PRIVATE KEY", &der), path)
            .err()
            .unwrap(),
    );
    assert!(why.contains("1.3.101.110"), "{why}");
    let mut der = key.public_key().spki_der();
    let at = der
        .windows(3)
        .position(|w| w == [0x2b, 0x65, 0x70])
        .unwrap();
    der[at + 2] = 0x6e;
    let why = unsupported(PublicKey::from_pem(&armour("PUBLIC KEY", &der), path).unwrap_err());
    assert!(why.contains("1.3.101.110"), "{why}");

    // An EC key on secp256k1 (1.3.132.0.10) or P-384 (1.3.132.0.34): only P-256 is taken.
    for (curve, name) in [
        (
            &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a][..],
            "1.3.132.0.10",
        ),
        (
            &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22][..],
            "1.3.132.0.34",
        ),
    ] {
        let der = ec_spki(curve, &P256_G);
        let why = unsupported(PublicKey::from_pem(&armour("PUBLIC KEY", &der), path).unwrap_err());
        assert!(why.contains(name), "{why}");
    }
    let prime256v1 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let honest = ec_spki(&prime256v1, &P256_G);
    assert_eq!(
        PublicKey::from_pem(&armour("PUBLIC KEY", &honest), path).unwrap(),
        PublicKey::ecdsa_p256_from_sec1(&P256_G).unwrap()
    );
    // A point that is not on the curve, and a compressed point (the key id is over the
    // uncompressed form), are refused.
    let mut off = P256_G;
    off[64] ^= 1;
    let err =
        PublicKey::from_pem(&armour("PUBLIC KEY", &ec_spki(&prime256v1, &off)), path).unwrap_err();
    assert!(key_format_reason(err).starts_with("P-256 public key:"));
    let mut compressed = vec![0x02 | (P256_G[64] & 1)];
    compressed.extend_from_slice(&P256_G[1..33]);
    let err = PublicKey::from_pem(
        &armour("PUBLIC KEY", &ec_spki(&prime256v1, &compressed)),
        path,
    )
    .unwrap_err();
    assert_eq!(key_format_reason(err), "P-256 key is not 65 bytes");
}
