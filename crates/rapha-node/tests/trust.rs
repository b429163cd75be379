//! `rapha-node trust add|list|remove|verify` run as the built binary.

use std::path::Path;
use std::process::{Command, Output};

use rapha_bundle::keys::write_keypair;
use rapha_bundle::{build_image, sign_bundle, BuildSpec, SigningKey, TrainerSpec};

const NODE: &str = env!("CARGO_BIN_EXE_rapha-node");

fn node(args: &[&str]) -> Output {
    Command::new(NODE)
        .args(args)
        .output()
        .expect("run rapha-node")
}

fn ok(args: &[&str]) -> String {
    let out = node(args);
    assert!(
        out.status.success(),
        "rapha-node {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = node(args);
    assert!(!out.status.success(), "rapha-node {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A signed bundle of trainer `lesion-classifier` by publisher `acme-ai`, key at `dir/k`.
fn signed_bundle(dir: &Path) {
    let key = SigningKey::generate_ed25519();
    write_keypair(&key, &dir.join("k")).unwrap();
    std::fs::create_dir(dir.join("rootfs")).unwrap();
    std::fs::write(dir.join("rootfs/trainer"), b"x").unwrap();
    build_image(
        &BuildSpec {
            rootfs: dir.join("rootfs"),
            entrypoint: vec!["/trainer".into()],
            env: vec![],
        },
        &dir.join("layout"),
    )
    .unwrap();
    let spec = TrainerSpec::from_toml(
        r#"publisher = "acme-ai"
name = "lesion-classifier"
version = "1"
[[outputs]]
name = "metrics.json"
kind = "metrics-json"
max_bytes = 1024
"#,
    )
    .unwrap();
    sign_bundle(&key, &dir.join("layout"), &spec, &dir.join("bundle")).unwrap();
}

#[test]
fn trust_add_list_verify_revoke_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    signed_bundle(d);
    let store = d.join("store");
    let out = ok(&[
        "trust",
        "add",
        "--store",
        s(&store),
        "--key",
        s(&d.join("k.pub")),
        "--name",
        "acme-ai",
        "--trainers",
        "lesion-classifier,other",
        "--expires",
        "2099-01-01T00:00:00Z",
    ]);
    assert!(out.contains("trusted acme-ai"), "{out}");
    let list = ok(&["trust", "list", "--store", s(&store)]);
    assert!(list.contains("acme-ai\tactive"), "{list}");
    assert!(list.contains("trainers=lesion-classifier,other"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["trust", "list", "--json", "--store", s(&store)])).unwrap();
    assert_eq!(json[0]["status"], "active");

    let out = ok(&[
        "trust",
        "verify",
        "--store",
        s(&store),
        s(&d.join("bundle")),
    ]);
    assert!(out.contains("publisher: acme-ai"), "{out}");

    ok(&[
        "trust",
        "remove",
        "--store",
        s(&store),
        "--name",
        "acme-ai",
        "--revoke",
    ]);
    assert!(ok(&["trust", "list", "--store", s(&store)]).contains("acme-ai\trevoked"));
    let err = fails(&[
        "trust",
        "verify",
        "--store",
        s(&store),
        s(&d.join("bundle")),
    ]);
    assert!(err.contains("revoked"), "{err}");

    ok(&["trust", "remove", "--store", s(&store), "--name", "acme-ai"]);
    let err = fails(&[
        "trust",
        "verify",
        "--store",
        s(&store),
        s(&d.join("bundle")),
    ]);
    assert!(
        err.contains("no signature names a key in the trust store"),
        "{err}"
    );
}

#[test]
fn trust_add_refuses_a_bad_expiry_and_a_bad_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_keypair(&SigningKey::generate_ed25519(), &d.join("k")).unwrap();
    let store = d.join("store");
    let err = fails(&[
        "trust",
        "add",
        "--store",
        s(&store),
        "--key",
        s(&d.join("k.pub")),
        "--name",
        "acme",
        "--expires",
        "next year",
    ]);
    assert!(err.contains("RFC 3339"), "{err}");
    let err = fails(&[
        "trust",
        "add",
        "--store",
        s(&store),
        "--key",
        s(&d.join("k.pub")),
        "--name",
        "../../etc/x",
    ]);
    assert!(err.contains("invalid publisher name"), "{err}");
    let err = fails(&[
        "trust",
        "add",
        "--store",
        s(&store),
        "--key",
        s(&d.join("k")),
        "--name",
        "acme",
    ]);
    assert!(err.contains("PUBLIC KEY"), "{err}");
}
