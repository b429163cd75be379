//! Layer unpacking from the attacker's side: every malicious tar is refused with its own
//! error, even when a trusted publisher signed it, and nothing is left outside (or inside)
//! the destination. Then the honest formats: gzip, zstd, plain tar, whiteouts.

use std::io::Write as _;

use rapha_bundle::oci::{MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD};
use rapha_bundle::unpack::unpack_layer_tar;
use rapha_bundle::{BundleError, Limits};

use crate::common::*;

/// Signs a one-layer image of `entries`, verifies it (the signature is fine), unpacks it and
/// returns the refusal; checks that neither the rootfs nor anything beside it remains.
fn refused(entries: &[RawEntry]) -> BundleError {
    let (tmp, vb) = signed_from_tars(&[raw_tar(entries)]);
    let root = tmp.path().join("jail/root");
    std::fs::create_dir_all(tmp.path().join("jail")).unwrap();
    let err = vb.unpack_rootfs(&root).unwrap_err();
    assert!(!root.exists(), "partial rootfs left behind");
    let beside: Vec<_> = std::fs::read_dir(tmp.path().join("jail"))
        .unwrap()
        .collect();
    assert!(
        beside.is_empty(),
        "something was written outside the rootfs"
    );
    err
}

#[test]
fn dot_dot_entry_is_refused() {
    let e = refused(&[
        file("trainer", b"x", 0o755),
        file("../escaped", b"pwn", 0o644),
    ]);
    assert!(
        matches!(e, BundleError::PathTraversal(ref p) if p == "../escaped"),
        "{e}"
    );
}

#[test]
fn dot_dot_in_the_middle_is_refused() {
    let e = refused(&[dir("a", 0o755), file("a/../../escaped", b"pwn", 0o644)]);
    assert!(matches!(e, BundleError::PathTraversal(_)), "{e}");
}

#[test]
fn absolute_path_is_refused() {
    let e = refused(&[file("/etc/cron.d/pwn", b"* * * * * root sh", 0o644)]);
    assert!(matches!(e, BundleError::AbsolutePath(_)), "{e}");
}

#[test]
fn escaping_symlink_is_refused() {
    let e = refused(&[dir("etc", 0o755), symlink("etc/host", "../../../../etc")]);
    assert!(matches!(e, BundleError::SymlinkEscape { .. }), "{e}");
}

#[test]
fn absolute_symlink_is_kept_as_written() {
    // Refused before issue 16; now kept as data (never followed while unpacking; runc
    // resolves it inside the container's root).
    let (tmp, vb) = signed_from_tars(&[raw_tar(&[symlink("shadow", "/etc/shadow")])]);
    let root = tmp.path().join("root");
    vb.unpack_rootfs(&root).unwrap();
    assert_eq!(
        std::fs::read_link(root.join("shadow")).unwrap(),
        std::path::Path::new("/etc/shadow")
    );
}

#[test]
fn symlink_climbing_through_another_symlink_is_refused() {
    // a/b -> .. is inside, but a/c -> b/.. would resolve above the root through it.
    let e = refused(&[
        dir("a", 0o755),
        symlink("a/b", ".."),
        symlink("a/c", "b/../.."),
    ]);
    assert!(
        matches!(e, BundleError::SymlinkEscape { ref path, .. } if path == "a/c"),
        "{e}"
    );
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let e = refused(&[
        dir("d", 0o755),
        symlink("link", "d"),
        file("link/x", b"x", 0o644),
    ]);
    assert!(
        matches!(e, BundleError::PathThroughSymlink { ref through, .. } if through == "link"),
        "{e}"
    );
}

#[test]
fn hard_link_to_outside_is_refused() {
    let e = refused(&[hardlink("passwd", "../../../../etc/passwd")]);
    assert!(matches!(e, BundleError::HardLinkEscape { .. }), "{e}");
    let e = refused(&[hardlink("passwd", "/etc/passwd")]);
    assert!(matches!(e, BundleError::HardLinkEscape { .. }), "{e}");
}

#[test]
fn hard_link_through_a_symlink_is_refused() {
    let e = refused(&[
        dir("d", 0o755),
        symlink("s", "d"),
        file("d/f", b"x", 0o644),
        hardlink("h", "s/f"),
    ]);
    assert!(matches!(e, BundleError::HardLinkEscape { .. }), "{e}");
}

#[test]
fn device_nodes_and_fifos_are_refused() {
    let e = refused(&[special("dev/sda", tar::EntryType::Block)]);
    assert!(
        matches!(
            e,
            BundleError::SpecialFile {
                kind: "block device",
                ..
            }
        ),
        "{e}"
    );
    let e = refused(&[special("mem", tar::EntryType::Char)]);
    assert!(
        matches!(
            e,
            BundleError::SpecialFile {
                kind: "character device",
                ..
            }
        ),
        "{e}"
    );
    let e = refused(&[special("pipe", tar::EntryType::Fifo)]);
    assert!(
        matches!(e, BundleError::SpecialFile { kind: "FIFO", .. }),
        "{e}"
    );
}

#[test]
fn setuid_and_setgid_bits_are_cleared_and_counted() {
    // Refused before issue 16; now cleared (the trainer has no capabilities and runs with
    // noNewPrivileges) and counted for the DPO's review.
    let (tmp, vb) = signed_from_tars(&[raw_tar(&[
        file("su", b"\x7fELF", 0o4755),
        dir("shared", 0o2775),
        hardlink("su2", "su"),
    ])]);
    let root = tmp.path().join("root");
    let out = vb.unpack_rootfs(&root).unwrap();
    assert_eq!(out.setuid_cleared, 2, "the hard link is not counted twice");
    let snap = snapshot(&root);
    assert_eq!(
        snap,
        vec![
            ("shared".to_string(), "dir", 0o775, vec![]),
            ("su".to_string(), "file", 0o755, b"\x7fELF".to_vec()),
            ("su2".to_string(), "file", 0o755, b"\x7fELF".to_vec()),
        ]
    );
}

#[test]
fn oversize_layer_and_rootfs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = raw_tar(&[file("big", &vec![7u8; 64 * 1024], 0o644)]);
    let small = Limits {
        max_layer_bytes: 32 * 1024,
        ..Limits::default()
    };
    let dest = tmp.path().join("a");
    std::fs::create_dir(&dest).unwrap();
    let e = unpack_layer_tar(&mut tar.as_slice(), &dest, &small).unwrap_err();
    assert!(
        matches!(e, BundleError::LayerTooLarge { limit: 32768, .. }),
        "{e}"
    );
    let small = Limits {
        max_rootfs_bytes: 16 * 1024,
        ..Limits::default()
    };
    let dest = tmp.path().join("b");
    std::fs::create_dir(&dest).unwrap();
    let e = unpack_layer_tar(&mut tar.as_slice(), &dest, &small).unwrap_err();
    assert!(
        matches!(e, BundleError::RootfsTooLarge { limit: 16384 }),
        "{e}"
    );
    let many: Vec<RawEntry> = (0..20)
        .map(|i| file(&format!("f{i}"), b"", 0o644))
        .collect();
    let small = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let dest = tmp.path().join("c");
    std::fs::create_dir(&dest).unwrap();
    let e = unpack_layer_tar(&mut raw_tar(&many).as_slice(), &dest, &small).unwrap_err();
    assert!(
        matches!(e, BundleError::TooManyEntries { limit: 10 }),
        "{e}"
    );
}

#[test]
fn gzip_bomb_is_stopped_at_the_layer_limit() {
    // 64 MiB of zeros compresses to ~64 KiB; the limit stops it after 1 MiB, not at the end.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let tar = {
        let mut h = tar::Header::new_gnu();
        h.set_path("zeros").unwrap();
        h.set_size(64 << 20);
        h.set_mode(0o644);
        h.set_cksum();
        h
    };
    gz.write_all(tar.as_bytes()).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&chunk).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    let blob = gz.finish().unwrap();
    assert!(blob.len() < 1 << 20);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("r");
    std::fs::create_dir(&dest).unwrap();
    let limits = Limits {
        max_layer_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut dec = flate2::read::GzDecoder::new(blob.as_slice());
    let e = unpack_layer_tar(&mut dec, &dest, &limits).unwrap_err();
    assert!(matches!(e, BundleError::LayerTooLarge { .. }), "{e}");
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b).unwrap();
    gz.finish().unwrap()
}

#[test]
fn gzip_zstd_and_plain_layers_unpack_with_whiteouts_applied() {
    let l1 = raw_tar(&[
        dir("etc", 0o755),
        file("etc/keep", b"keep", 0o644),
        file("etc/gone", b"gone", 0o644),
        dir("cache", 0o755),
        file("cache/a", b"a", 0o644),
        dir("cache/sub", 0o755),
        file("trainer", b"v1", 0o755),
    ]);
    let l2 = raw_tar(&[
        file("etc/.wh.gone", b"", 0o644),
        file("cache/.wh..wh..opq", b"", 0o644),
        file("cache/fresh", b"fresh", 0o600),
        file("trainer", b"v2", 0o755),
    ]);
    let l3 = raw_tar(&[
        hardlink("trainer-link", "trainer"),
        symlink("etc/run", "../trainer"),
    ]);
    let (tmp, vb) = signed_from_layers(&[
        (MEDIA_LAYER_GZIP, gzip(&l1), l1.clone()),
        (
            MEDIA_LAYER_ZSTD,
            zstd::encode_all(l2.as_slice(), 3).unwrap(),
            l2.clone(),
        ),
        (MEDIA_LAYER_TAR, l3.clone(), l3.clone()),
    ]);
    let root = tmp.path().join("root");
    let out = vb.unpack_rootfs(&root).unwrap();
    assert_eq!(out.entries, 7 + 4 + 2);
    let snap: Vec<(String, &str, u32, Vec<u8>)> = snapshot(&root);
    let expect: Vec<(String, &str, u32, Vec<u8>)> = vec![
        ("cache".into(), "dir", 0o755, vec![]),
        ("cache/fresh".into(), "file", 0o600, b"fresh".to_vec()),
        ("etc".into(), "dir", 0o755, vec![]),
        ("etc/keep".into(), "file", 0o644, b"keep".to_vec()),
        ("etc/run".into(), "symlink", 0, b"../trainer".to_vec()),
        ("trainer".into(), "file", 0o755, b"v2".to_vec()),
        ("trainer-link".into(), "file", 0o755, b"v2".to_vec()),
    ];
    assert_eq!(snap, expect);
    use std::os::unix::fs::MetadataExt as _;
    let a = std::fs::metadata(root.join("trainer")).unwrap();
    let b = std::fs::metadata(root.join("trainer-link")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link kept as a link");
}

#[test]
fn whiteout_through_a_symlink_is_refused() {
    let e = refused(&[
        dir("d", 0o755),
        symlink("s", "d"),
        file("s/.wh.x", b"", 0o644),
    ]);
    assert!(matches!(e, BundleError::PathThroughSymlink { .. }), "{e}");
}

#[test]
fn garbage_layer_is_a_format_error() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = vec![0x41u8; 4096];
    let e = unpack_layer_tar(&mut junk.as_slice(), tmp.path(), &Limits::default()).unwrap_err();
    assert!(matches!(e, BundleError::LayerFormat { .. }), "{e}");
}
