//! Interoperability with a real OCI tool: skopeo reads the layouts `build_image` writes, and
//! the oci-archives skopeo writes (gzip as built, or recompressed to zstd) sign, verify and
//! unpack to the same rootfs. Skips loudly without skopeo unless RAPHA_REQUIRE_SERVICES=1.

use std::path::Path;
use std::process::Command;

use rapha_bundle::{sign_bundle, verify_bundle};

use crate::common::*;

fn skopeo(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("skopeo").args(args).output() {
        Ok(o) => {
            assert!(
                o.status.success(),
                "skopeo {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            Some(o)
        }
        Err(e) => {
            assert!(
                std::env::var("RAPHA_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "skopeo is required (Debian package skopeo): {e}"
            );
            eprintln!("SKIPPED: skopeo not installed ({e}); OCI interop not checked");
            None
        }
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn skopeo_reads_our_layout_with_the_same_manifest_digest() {
    let f = Fixture::new();
    let Some(out) = skopeo(&["inspect", &format!("oci:{}", s(&f.path("layout")))]) else {
        return;
    };
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Digest"], f.manifest.to_oci());
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Env"][0], "EPOCHS=3");
}

#[test]
fn skopeo_oci_archives_gzip_and_zstd_sign_verify_and_unpack_identically() {
    let f = Fixture::new();
    for (name, extra) in [
        ("gzip", &[][..]),
        (
            "zstd",
            &["--dest-compress", "--dest-compress-format", "zstd"][..],
        ),
    ] {
        let archive = f.path(&format!("{name}.tar"));
        let mut args = vec!["copy"];
        args.extend_from_slice(extra);
        let src = format!("oci:{}", s(&f.path("layout")));
        let dst = format!("oci-archive:{}", s(&archive));
        args.push(&src);
        args.push(&dst);
        if skopeo(&args).is_none() {
            return;
        }
        let bundle = f.path(&format!("bundle-{name}"));
        let digest = sign_bundle(&f.key, &archive, &spec(), &bundle).unwrap();
        if name == "gzip" {
            assert_eq!(digest, f.manifest, "skopeo kept the blobs as built");
        }
        let vb = verify_bundle(&bundle, &f.store()).unwrap();
        assert_eq!(vb.manifest_digest(), digest);
        let root = f.path(&format!("root-{name}"));
        vb.unpack_rootfs(&root).unwrap();
        assert_eq!(snapshot(&f.path("rootfs")), snapshot(&root), "{name}");
    }
}
