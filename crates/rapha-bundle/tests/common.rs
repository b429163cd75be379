//! Shared builders: rootfs trees, raw tar layers, hand-made layouts, signed bundles.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use rapha_bundle::oci::{Descriptor, MEDIA_CONFIG, MEDIA_LAYER_TAR, MEDIA_MANIFEST};
use rapha_bundle::{build_image, sign_bundle, BuildSpec, SigningKey, TrainerSpec, TrustStore};
use rapha_core::Digest;

pub const PREDICATE: &str = r#"
publisher = "acme-ai"
name = "lesion-classifier"
version = "1.2.0"
requested_fields = ["BodyPartExamined"]

[resources]
memory_mb = 1024
cpus = 1
pids = 32
wall_seconds = 600

[[outputs]]
name = "model.safetensors"
kind = "safetensors"
max_bytes = 52428800

[[outputs]]
name = "metrics.json"
kind = "metrics-json"
max_bytes = 65536
"#;

pub fn spec() -> TrainerSpec {
    TrainerSpec::from_toml(PREDICATE).unwrap()
}

pub fn spec_named(name: &str) -> TrainerSpec {
    let mut s = spec();
    s.name = name.into();
    s
}

/// A small rootfs: an executable, nested dirs, a read-only file, a relative symlink, an
/// empty file and a binary blob.
pub fn make_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("etc/trainer")).unwrap();
    std::fs::create_dir_all(dir.join("data/empty")).unwrap();
    write_mode(&dir.join("trainer"), b"#!/bin/sh\necho training\n", 0o755);
    write_mode(&dir.join("etc/trainer/config.toml"), b"epochs = 3\n", 0o444);
    write_mode(&dir.join("etc/empty"), b"", 0o600);
    let blob: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write_mode(&dir.join("data/weights.bin"), &blob, 0o644);
    std::os::unix::fs::symlink("../trainer", dir.join("etc/run")).unwrap();
    std::fs::set_permissions(
        dir.join("data/empty"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
}

pub fn write_mode(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn build(rootfs: &Path, out: &Path) -> Digest {
    build_image(
        &BuildSpec {
            rootfs: rootfs.to_owned(),
            entrypoint: vec!["/trainer".into()],
            env: vec!["EPOCHS=3".into()],
        },
        out,
    )
    .unwrap()
}

pub fn key(seed: u8) -> SigningKey {
    SigningKey::ed25519_from_seed(&[seed; 32])
}

/// A temp workspace with a built image, a signed bundle and a trust store trusting `acme-ai`.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub key: SigningKey,
    pub manifest: Digest,
}

impl Fixture {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        make_rootfs(&rootfs);
        build(&rootfs, &tmp.path().join("layout"));
        let key = key(7);
        let manifest = sign_bundle(
            &key,
            &tmp.path().join("layout"),
            &spec(),
            &tmp.path().join("bundle"),
        )
        .unwrap();
        TrustStore::add(
            &tmp.path().join("store"),
            "acme-ai",
            &key.public_key(),
            &["lesion-classifier".into()],
            None,
        )
        .unwrap();
        Self { tmp, key, manifest }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
    pub fn bundle(&self) -> PathBuf {
        self.path("bundle")
    }
    pub fn store(&self) -> TrustStore {
        TrustStore::open(&self.path("store")).unwrap()
    }
}

/// One raw tar entry; names and link names are written as given (the tar crate's safe
/// setters would refuse the attacks we need to build).
pub struct RawEntry {
    pub name: Vec<u8>,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
}

pub fn file(name: &str, data: &[u8], mode: u32) -> RawEntry {
    RawEntry {
        name: name.into(),
        kind: tar::EntryType::Regular,
        mode,
        link: vec![],
        data: data.into(),
    }
}
pub fn dir(name: &str, mode: u32) -> RawEntry {
    RawEntry {
        name: name.into(),
        kind: tar::EntryType::Directory,
        mode,
        link: vec![],
        data: vec![],
    }
}
pub fn symlink(name: &str, target: &str) -> RawEntry {
    RawEntry {
        name: name.into(),
        kind: tar::EntryType::Symlink,
        mode: 0o777,
        link: target.into(),
        data: vec![],
    }
}
pub fn hardlink(name: &str, target: &str) -> RawEntry {
    RawEntry {
        name: name.into(),
        kind: tar::EntryType::Link,
        mode: 0o644,
        link: target.into(),
        data: vec![],
    }
}
pub fn special(name: &str, kind: tar::EntryType) -> RawEntry {
    RawEntry {
        name: name.into(),
        kind,
        mode: 0o644,
        link: vec![],
        data: vec![],
    }
}

pub fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(&e.name);
            old.linkname[..e.link.len()].copy_from_slice(&e.link);
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_size(e.data.len() as u64);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// Writes an OCI layout whose layers are the given (media type, blob, uncompressed tar).
pub fn layout_from_layers(out: &Path, layers: &[(&str, Vec<u8>, Vec<u8>)]) -> Digest {
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8], media: &str| {
        let d = Digest::of(bytes);
        std::fs::write(blobs.join(d.to_hex()), bytes).unwrap();
        Descriptor {
            media_type: media.into(),
            digest: d.to_oci(),
            size: bytes.len() as u64,
            annotations: None,
        }
    };
    let mut descs = vec![];
    let mut diff_ids = vec![];
    for (media, blob, tar) in layers {
        descs.push(put(blob, media));
        diff_ids.push(Digest::of(tar).to_oci());
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/trainer"], "Env": ["EPOCHS=3"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_desc = put(&serde_json::to_vec(&config).unwrap(), MEDIA_CONFIG);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
        "config": config_desc, "layers": descs,
    });
    let m = put(&serde_json::to_vec(&manifest).unwrap(), MEDIA_MANIFEST);
    std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [m]});
    std::fs::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    m.sha256().unwrap()
}

/// Signs a layout made of uncompressed tar layers with a trusted key; returns the verified
/// bundle and the temp dir holding it.
pub fn signed_from_tars(tars: &[Vec<u8>]) -> (tempfile::TempDir, rapha_bundle::VerifiedBundle) {
    let layers: Vec<(&str, Vec<u8>, Vec<u8>)> = tars
        .iter()
        .map(|t| (MEDIA_LAYER_TAR, t.clone(), t.clone()))
        .collect();
    signed_from_layers(&layers)
}

pub fn signed_from_layers(
    layers: &[(&str, Vec<u8>, Vec<u8>)],
) -> (tempfile::TempDir, rapha_bundle::VerifiedBundle) {
    let tmp = tempfile::tempdir().unwrap();
    layout_from_layers(&tmp.path().join("layout"), layers);
    let k = key(9);
    sign_bundle(
        &k,
        &tmp.path().join("layout"),
        &spec(),
        &tmp.path().join("bundle"),
    )
    .unwrap();
    TrustStore::add(
        &tmp.path().join("store"),
        "acme-ai",
        &k.public_key(),
        &[],
        None,
    )
    .unwrap();
    let store = TrustStore::open(&tmp.path().join("store")).unwrap();
    let vb = rapha_bundle::verify_bundle(&tmp.path().join("bundle"), &store).unwrap();
    (tmp, vb)
}

/// Every path under `root` with its type, permission bits, and content or link target.
pub fn snapshot(root: &Path) -> Vec<(String, &'static str, u32, Vec<u8>)> {
    let mut out = vec![];
    walk(root, Path::new(""), &mut out);
    out.sort();
    out
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<(String, &'static str, u32, Vec<u8>)>) {
    for e in std::fs::read_dir(root.join(rel)).unwrap() {
        let e = e.unwrap();
        let r = rel.join(e.file_name());
        let p = root.join(&r);
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o7777;
        let name = r.display().to_string();
        if m.file_type().is_symlink() {
            out.push((
                name,
                "symlink",
                0,
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_encoded_bytes()
                    .to_vec(),
            ));
        } else if m.is_dir() {
            out.push((name, "dir", mode, vec![]));
            walk(root, &r, out);
        } else {
            out.push((name, "file", mode, std::fs::read(&p).unwrap()));
        }
    }
}
