//! `rapha keygen` and `rapha bundle ...` run as the built binary: the publisher's whole flow
//! with the documented example predicate, then the hospital's refusals as exit codes.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RAPHA: &str = env!("CARGO_BIN_EXE_rapha");

fn rapha(args: &[&str]) -> Output {
    Command::new(RAPHA).args(args).output().expect("run rapha")
}

fn ok(args: &[&str]) -> String {
    let out = rapha(args);
    assert!(
        out.status.success(),
        "rapha {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = rapha(args);
    assert!(!out.status.success(), "rapha {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn example_predicate() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../trainers/lesion-classifier/trainer.toml")
}

struct Flow {
    tmp: tempfile::TempDir,
}

impl Flow {
    fn p(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// keygen, build, sign with the example predicate, trust the key (as `example-ai`).
fn publish() -> Flow {
    let f = Flow {
        tmp: tempfile::tempdir().unwrap(),
    };
    let out = ok(&["keygen", "--out", s(&f.p("pub.key"))]);
    assert!(out.contains("keyid:"), "{out}");
    let root = f.p("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("trainer"), b"#!/bin/sh\necho train\n").unwrap();
    std::fs::set_permissions(root.join("trainer"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("etc/labels.csv"), b"a,1\nb,0\n").unwrap();
    let out = ok(&[
        "bundle",
        "build",
        "--rootfs",
        s(&root),
        "--entrypoint",
        "/trainer",
        "--out",
        s(&f.p("layout")),
    ]);
    assert!(out.contains("manifest: sha256:"), "{out}");
    let out = ok(&[
        "bundle",
        "sign",
        "--key",
        s(&f.p("pub.key")),
        "--image",
        s(&f.p("layout")),
        "--predicate",
        s(&example_predicate()),
        "--out",
        s(&f.p("bundle")),
    ]);
    assert!(out.contains("lesion-classifier 0.1.0"), "{out}");
    let public = rapha_bundle::PublicKey::load(&f.p("pub.key.pub")).unwrap();
    rapha_bundle::TrustStore::add(
        &f.p("store"),
        "example-ai",
        &public,
        &["lesion-classifier".into()],
        None,
    )
    .unwrap();
    f
}

#[test]
fn keygen_writes_a_0600_key_and_a_public_key() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("k");
    ok(&["keygen", "--out", s(&key)]);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(tmp.path().join("k.pub"))
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    let err = fails(&["keygen", "--out", s(&key)]);
    assert!(err.contains("exists"), "{err}");
}

#[test]
fn publisher_flow_verifies_with_the_example_predicate() {
    let f = publish();
    let out = ok(&[
        "bundle",
        "verify",
        "--trust-store",
        s(&f.p("store")),
        s(&f.p("bundle")),
    ]);
    assert!(out.starts_with("verified\n"), "{out}");
    assert!(out.contains("publisher: example-ai"), "{out}");
    assert!(out.contains("trainer:   lesion-classifier 0.1.0"), "{out}");
    assert!(out.contains("manifest:  sha256:"), "{out}");

    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "bundle",
        "verify",
        "--json",
        "--trust-store",
        s(&f.p("store")),
        s(&f.p("bundle")),
    ]))
    .unwrap();
    assert_eq!(json["verified"], true);
    assert_eq!(json["predicate"]["outputs"][0]["name"], "model.safetensors");
    assert_eq!(json["predicate"]["outputs"][1]["max_bytes"], 65536);
}

#[test]
fn inspect_shows_claims_marked_unverified_in_text_and_json() {
    let f = publish();
    let text = ok(&["bundle", "inspect", s(&f.p("bundle"))]);
    assert!(text.starts_with("NOT VERIFIED"), "{text}");
    assert!(text.contains("model.safetensors"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["bundle", "inspect", "--json", s(&f.p("bundle"))])).unwrap();
    assert_eq!(json["verified"], false);
    assert_eq!(json["signed"], true);
    assert_eq!(json["predicate"]["trainer"]["name"], "lesion-classifier");
    assert_eq!(json["signed_manifest"], json["manifest_digest"]);
    // What the layers hold, counted without unpacking (issue 16).
    assert!(text.contains("setuid/setgid:   0"), "{text}");
    assert_eq!(json["contents"]["layers"], 1);
    assert_eq!(json["contents"]["setuid_setgid"], 0);
    assert_eq!(json["contents"]["special_files"], 0);
    assert!(json["contents"]["files"].as_u64().unwrap() >= 1);
}

#[test]
fn tampered_layer_fails_verification_with_a_clear_message() {
    let f = publish();
    let blobs = f.p("bundle/blobs/sha256");
    // The largest blob is the layer.
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[30] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let err = fails(&[
        "bundle",
        "verify",
        "--trust-store",
        s(&f.p("store")),
        s(&f.p("bundle")),
    ]);
    assert!(err.contains("altered after signing"), "{err}");
}

#[test]
fn unsigned_bundle_and_unknown_key_fail_verification() {
    let f = publish();
    let err = fails(&[
        "bundle",
        "verify",
        "--trust-store",
        s(&f.p("store")),
        s(&f.p("layout")),
    ]);
    assert!(err.contains("unsigned"), "{err}");
    std::fs::create_dir(f.p("empty-store")).unwrap();
    let err = fails(&[
        "bundle",
        "verify",
        "--trust-store",
        s(&f.p("empty-store")),
        s(&f.p("bundle")),
    ]);
    assert!(
        err.contains("no signature names a key in the trust store"),
        "{err}"
    );
}

#[test]
fn group_readable_key_is_refused_for_signing() {
    let f = publish();
    std::fs::set_permissions(f.p("pub.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = fails(&[
        "bundle",
        "sign",
        "--key",
        s(&f.p("pub.key")),
        "--image",
        s(&f.p("layout")),
        "--predicate",
        s(&example_predicate()),
        "--out",
        s(&f.p("bundle2")),
    ]);
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn keygen_build_and_sign_print_stable_json_with_json() {
    let f = Flow {
        tmp: tempfile::tempdir().unwrap(),
    };
    let key: serde_json::Value =
        serde_json::from_str(&ok(&["keygen", "--out", s(&f.p("k.key")), "--json"])).unwrap();
    assert_eq!(key["private_key"], s(&f.p("k.key")));
    assert_eq!(key["public_key"], s(&f.p("k.key.pub")));
    assert_eq!(key["algorithm"], "ed25519");
    assert!(key["keyid"].as_str().unwrap().len() >= 32, "{key}");
    let root = f.p("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("trainer"), b"#!/bin/sh\n").unwrap();
    let built: serde_json::Value = serde_json::from_str(&ok(&[
        "bundle",
        "build",
        "--rootfs",
        s(&root),
        "--entrypoint",
        "/trainer",
        "--out",
        s(&f.p("layout")),
        "--json",
    ]))
    .unwrap();
    assert_eq!(built["layout"], s(&f.p("layout")));
    let manifest = built["manifest"].as_str().unwrap().to_owned();
    assert!(manifest.starts_with("sha256:"), "{built}");
    let signed: serde_json::Value = serde_json::from_str(&ok(&[
        "bundle",
        "sign",
        "--key",
        s(&f.p("k.key")),
        "--image",
        s(&f.p("layout")),
        "--predicate",
        s(&example_predicate()),
        "--out",
        s(&f.p("bundle")),
        "--json",
    ]))
    .unwrap();
    assert_eq!(signed["manifest"], manifest.as_str());
    assert_eq!(signed["keyid"], key["keyid"]);
    assert_eq!(signed["bundle"], s(&f.p("bundle")));
    for field in ["publisher", "trainer", "version"] {
        assert!(signed[field].is_string(), "{field}: {signed}");
    }
}

#[test]
fn build_clears_setuid_bits_keeps_absolute_links_and_inspect_counts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("trainer"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("trainer"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("usr/bin/su"), b"su").unwrap();
    std::fs::set_permissions(
        root.join("usr/bin/su"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("/usr/bin/su", root.join("usr/bin/su-alt")).unwrap();
    let layout = tmp.path().join("layout");
    let out = ok(&[
        "bundle",
        "build",
        "--rootfs",
        s(&root),
        "--entrypoint",
        "/trainer",
        "--out",
        s(&layout),
    ]);
    assert!(
        out.contains("setuid/setgid bits cleared on 1 files or directories"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["bundle", "inspect", "--json", s(&layout)])).unwrap();
    assert_eq!(json["signed"], false);
    assert_eq!(json["contents"]["setuid_setgid"], 0, "cleared in the layer");
    assert_eq!(json["contents"]["absolute_symlinks"], 1);
    let text = ok(&["bundle", "inspect", s(&layout)]);
    assert!(text.contains("1 symlinks (1 absolute)"), "{text}");
}
