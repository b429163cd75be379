//! Issue 16: an ordinary PyTorch trainer image runs through the node on Orthanc + runc.
//!
//! The image is the PyTorch example's (trainers/pytorch-lesion): a Debian bookworm base made
//! by mmdebstrap with Debian's python3-torch, then a `buildah build` of its Containerfile,
//! pushed as an oci-archive. $RAPHA_DEMO_PYTORCH_IMAGE names it (scripts/test builds it);
//! otherwise trainers/pytorch-lesion/build.sh builds it here, from its cache when warm.

use std::path::{Path, PathBuf};

use rapha_bundle::{TrainerSpec, TrustStore};
use rapha_core::Outcome;
use rapha_node::store::JobState;

use crate::pipeline_e2e::{all_files, world_with_policy, PUBLISHER, TRAINER};

/// Every path under `dir` with its metadata (no link followed), for before/after comparisons.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, (u64, i64, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p, (m.ino(), m.mtime(), m.mode()));
        }
    }
    out
}

/// The first number under `key` anywhere in `v`.
fn find_number(v: &serde_json::Value, key: &str) -> Option<f64> {
    match v {
        serde_json::Value::Object(m) => m
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .or_else(|| m.values().find_map(|x| find_number(x, key))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_number(x, key)),
        _ => None,
    }
}

/// A real multi-layer Debian image (absolute symlinks, setuid files) is signed as it is,
/// verified and unpacked (each absolute link kept as a link, every setuid/setgid bit cleared
/// and counted, nothing written outside the rootfs), then run by the node through the whole
/// path on Orthanc's DICOMweb and runc: the job is released with a receipt that verifies under
/// the node key, a node-computed AUC of at least 0.75, and the node's re-serialisation of
/// the declared safetensors tensors (ONNX is not released).
#[test]
fn pytorch_debian_image_unpacks_safely_and_its_job_is_released_with_auc_at_least_0_75() {
    let Some(mut w) = world_with_policy(100, 1, |p| {
        p.outputs.max_file_bytes = 50 << 20;
        p.outputs.max_total_bytes = 150 << 20;
    }) else {
        return;
    };
    let image = rapha_testkit::pytorch::image();
    let mut spec = TrainerSpec::from_toml(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../trainers/pytorch-lesion/trainer.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    // The world's trust store and policy know this publisher and trainer name.
    PUBLISHER.clone_into(&mut spec.publisher);
    TRAINER.clone_into(&mut spec.name);

    // The image as the node sees it: signed as it is, verified, surveyed and unpacked.
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let manifest = rapha_bundle::sign_bundle(&w.publisher_key, &image, &spec, &bundle)
        .expect("the oci-archive signs");
    let verified = rapha_bundle::verify_bundle(
        &bundle,
        &TrustStore::open(&w.tmp.path().join("trust")).unwrap(),
    )
    .expect("the image verifies");
    assert_eq!(
        verified.entrypoint().last().map(String::as_str),
        Some("/app/train.py"),
        "the entrypoint is the Containerfile's"
    );
    let contents = verified.contents().unwrap();
    eprintln!("image contents: {contents:?}");
    assert!(contents.layers >= 2, "base + app layers: {contents:?}");
    assert!(contents.absolute_symlinks > 0, "{contents:?}");
    assert!(contents.setuid_setgid > 0, "{contents:?}");
    assert_eq!(contents.special_files, 0, "{contents:?}");

    let unpack_parent = dir.path().join("unpack");
    std::fs::create_dir(&unpack_parent).unwrap();
    let before_parent = snapshot(&unpack_parent);
    let rootfs_dir = unpack_parent.join("rootfs");
    let unpack_start = std::time::SystemTime::now();
    let unpacked = verified
        .unpack_rootfs(&rootfs_dir)
        .expect("the image unpacks");
    assert_eq!(unpacked.setuid_cleared, contents.setuid_setgid);
    // Nothing beside the rootfs in its parent, which was empty before.
    let outside: Vec<PathBuf> = snapshot(&unpack_parent)
        .into_keys()
        .filter(|p| !p.starts_with(&rootfs_dir))
        .collect();
    assert_eq!(outside, Vec::<PathBuf>::new(), "written outside the rootfs");
    assert!(before_parent.is_empty());
    // Absolute symlinks are links in the rootfs, pointing where the image said; the host
    // paths they name were not written through them.
    let mut absolute = 0;
    let mut setuid_left = 0;
    for (p, (_, _, mode)) in snapshot(&rootfs_dir) {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            let target = std::fs::read_link(&p).unwrap();
            if target.is_absolute() {
                absolute += 1;
                if let Ok(host) = std::fs::symlink_metadata(&target) {
                    use std::os::unix::fs::MetadataExt;
                    let changed = std::time::UNIX_EPOCH
                        + std::time::Duration::new(
                            u64::try_from(host.ctime()).unwrap(),
                            u32::try_from(host.ctime_nsec()).unwrap(),
                        );
                    assert!(
                        changed < unpack_start,
                        "{} (the target of {}) was changed during the unpack",
                        target.display(),
                        p.display()
                    );
                }
            }
        } else if mode & 0o6000 != 0 {
            setuid_left += 1;
        }
    }
    assert_eq!(
        absolute, contents.absolute_symlinks,
        "every absolute link kept"
    );
    assert_eq!(setuid_left, 0, "no setuid/setgid bit left in the rootfs");
    assert!(
        std::fs::symlink_metadata(rootfs_dir.join("usr/bin/python3"))
            .is_ok_and(|m| m.file_type().is_symlink()),
        "python3 is a link in the Debian base"
    );
    std::fs::remove_dir_all(&rootfs_dir).unwrap();

    // The job, end to end.
    let mut request = w.request(manifest, w.scoped_query());
    // Most patients train (the world's default is half), as a hospital's job would have it.
    request.validation_percent = 30;
    let job = w.node.submit(&bundle, request).unwrap();
    assert_eq!(w.drive(job), JobState::Released);
    let row = w.node.store().get(job).unwrap();
    assert_eq!(row.outcome, Some(Outcome::Completed), "{:?}", row.reason);
    let mut names: Vec<String> = all_files(&w.node.release_path(job))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["metrics.json", "model.safetensors", "receipt.json"]);
    let released = w.node.release_path(job);
    rapha_testkit::pytorch::assert_models(&released);

    let receipt_bytes = w
        .node
        .store()
        .artifact(job, rapha_node::pipeline::artifact::RECEIPT)
        .unwrap()
        .unwrap();
    let node_addr = rapha_receipt::NodeKey::from_secret_bytes(&w.chain.node_secret)
        .unwrap()
        .address();
    rapha_receipt::verify(
        &receipt_bytes,
        &rapha_receipt::VerifyOptions {
            node_address: Some(node_addr),
            sth: None,
            consistency_from: None,
        },
    )
    .expect("the receipt verifies under the node key");
    let receipt = w.node.receipt(job).unwrap().unwrap();
    assert_eq!(receipt.body["outcome"], "completed");
    let auc = find_number(&receipt.body, "auc").expect("the receipt has the node's AUC");
    eprintln!("FIGURES PyTorch example through the node on Orthanc: node AUC {auc}");
    assert!(
        auc >= 0.75,
        "node-computed AUC {auc} < 0.75: {}",
        receipt.body
    );
}
