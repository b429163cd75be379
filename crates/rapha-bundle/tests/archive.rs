//! The bundle archive (how a bundle is uploaded to a node): an honest bundle survives
//! pack -> unpack -> verify unchanged; every hostile archive is refused with its own error and
//! leaves nothing behind.

use std::path::Path;

use rapha_bundle::{
    pack_bundle_to_vec, unpack_bundle_archive, verify_bundle, ArchiveLimits, BundleError,
};
use rapha_core::Digest;

use crate::common::*;

/// One ustar entry with its name written as given (no safety checks: we build attacks).
pub struct Ustar {
    pub name: String,
    pub kind: tar::EntryType,
    pub link: String,
    pub data: Vec<u8>,
    /// Declared size when it differs from the data (an oversized header without the bytes).
    pub size: Option<u64>,
}

pub fn ufile(name: &str, data: &[u8]) -> Ustar {
    Ustar {
        name: name.into(),
        kind: tar::EntryType::Regular,
        link: String::new(),
        data: data.into(),
        size: None,
    }
}

pub fn ukind(name: &str, kind: tar::EntryType, link: &str) -> Ustar {
    Ustar {
        name: name.into(),
        kind,
        link: link.into(),
        data: vec![],
        size: None,
    }
}

pub fn blob(data: &[u8]) -> Ustar {
    ufile(&format!("blobs/sha256/{}", Digest::of(data).to_hex()), data)
}

pub fn ustar_header(e: &Ustar) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().unwrap();
        u.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        u.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
    }
    h.set_entry_type(e.kind);
    h.set_mode(0o644);
    h.set_size(e.size.unwrap_or(e.data.len() as u64));
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

pub fn ustar(entries: &[Ustar]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(ustar_header(e).as_bytes());
        out.extend_from_slice(&e.data);
        out.extend(std::iter::repeat_n(0u8, (512 - e.data.len() % 512) % 512));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn unpack(bytes: &[u8], limits: &ArchiveLimits) -> (tempfile::TempDir, Result<u64, BundleError>) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("bundle");
    let mut r = bytes;
    let result = unpack_bundle_archive(&mut r, &dest, limits).map(|s| s.entries);
    (tmp, result)
}

/// Unpacks `bytes` with default limits, expecting a refusal; checks nothing was left behind.
fn refused(bytes: &[u8]) -> BundleError {
    refused_with(bytes, &ArchiveLimits::default())
}

fn refused_with(bytes: &[u8], limits: &ArchiveLimits) -> BundleError {
    let (tmp, result) = unpack(bytes, limits);
    let err = result.expect_err("the archive must be refused");
    assert!(
        !tmp.path().join("bundle").exists(),
        "a refused archive leaves no partial bundle ({err})"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    err
}

fn files(root: &Path) -> Vec<(String, &'static str, u32, Vec<u8>)> {
    snapshot(root)
        .into_iter()
        .map(|(p, k, _mode, data)| (p, k, 0, data))
        .collect()
}

#[test]
fn packed_bundle_unpacks_to_the_same_files_and_still_verifies() {
    let f = Fixture::new();
    let bytes = pack_bundle_to_vec(&f.bundle()).unwrap();
    assert_eq!(
        bytes,
        pack_bundle_to_vec(&f.bundle()).unwrap(),
        "packing is deterministic"
    );
    // Plain POSIX ustar: every header says so (tar's reader agrees).
    let mut archive = tar::Archive::new(bytes.as_slice());
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        assert!(e.header().as_ustar().is_some(), "{:?}", e.path());
        assert_eq!(e.header().mtime().unwrap(), 0);
    }
    let (tmp, result) = unpack(&bytes, &ArchiveLimits::default());
    let entries = result.unwrap();
    let dest = tmp.path().join("bundle");
    assert_eq!(files(&dest), files(&f.bundle()), "same files, same bytes");
    // 3 top files + 2 directories + manifest, config and one layer.
    assert_eq!(entries, 8);
    let vb = verify_bundle(&dest, &f.store()).unwrap();
    assert_eq!(vb.manifest_digest(), f.manifest);
}

#[test]
fn a_hand_written_archive_with_dot_slash_names_and_no_directory_entries_is_accepted() {
    let layer = b"layer bytes".to_vec();
    let bytes = ustar(&[
        ufile("./oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ufile("./index.json", b"{}"),
        ufile("signature.dsse.json", b"{}"),
        blob(&layer),
    ]);
    let (tmp, result) = unpack(&bytes, &ArchiveLimits::default());
    assert_eq!(result.unwrap(), 4);
    let blob_path = tmp
        .path()
        .join("bundle/blobs/sha256")
        .join(Digest::of(&layer).to_hex());
    assert_eq!(std::fs::read(blob_path).unwrap(), layer);
}

#[test]
fn path_traversal_is_refused() {
    for name in ["../index.json", "blobs/sha256/../../../etc/passwd", "./.."] {
        let err = refused(&ustar(&[ufile(name, b"x")]));
        assert!(
            matches!(&err, BundleError::ArchivePathTraversal(p) if p == name),
            "{name}: {err}"
        );
    }
}

#[test]
fn absolute_paths_are_refused() {
    let err = refused(&ustar(&[ufile("/index.json", b"{}")]));
    assert!(
        matches!(&err, BundleError::ArchiveAbsolutePath(p) if p == "/index.json"),
        "{err}"
    );
}

#[test]
fn a_symlink_is_refused() {
    let err = refused(&ustar(&[ukind(
        "index.json",
        tar::EntryType::Symlink,
        "/etc/shadow",
    )]));
    assert!(
        matches!(&err, BundleError::ArchiveSymlink(p) if p == "index.json"),
        "{err}"
    );
}

#[test]
fn a_hard_link_is_refused() {
    let err = refused(&ustar(&[
        ufile("oci-layout", b"{}"),
        ukind("index.json", tar::EntryType::Link, "oci-layout"),
    ]));
    assert!(
        matches!(&err, BundleError::ArchiveHardLink(p) if p == "index.json"),
        "{err}"
    );
}

#[test]
fn devices_and_fifos_are_refused() {
    for (kind, word) in [
        (tar::EntryType::Char, "character device"),
        (tar::EntryType::Block, "block device"),
        (tar::EntryType::Fifo, "FIFO"),
    ] {
        let err = refused(&ustar(&[ukind("index.json", kind, "")]));
        assert!(
            matches!(&err, BundleError::ArchiveSpecialFile { kind, .. } if *kind == word),
            "{err}"
        );
    }
}

#[test]
fn extension_headers_are_refused() {
    // A PAX header could rename the next entry behind the checks' back.
    let err = refused(&ustar(&[
        ukind("pax", tar::EntryType::XHeader, ""),
        ufile("index.json", b"{}"),
    ]));
    assert!(
        matches!(&err, BundleError::ArchiveUnsupportedType { kind: 'x', .. }),
        "{err}"
    );
    let err = refused(&ustar(&[ukind("long", tar::EntryType::GNULongName, "")]));
    assert!(
        matches!(&err, BundleError::ArchiveUnsupportedType { kind: 'L', .. }),
        "{err}"
    );
}

#[test]
fn names_outside_the_bundle_layout_are_refused() {
    for name in [
        "trainer.sh",
        "blobs/sha512/abcd",
        "blobs/sha256/ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
        "blobs/sha256/short",
        "index.json/x",
    ] {
        let err = refused(&ustar(&[ufile(name, b"x")]));
        assert!(
            matches!(&err, BundleError::ArchiveUnexpectedEntry { path, .. } if path == name),
            "{name}: {err}"
        );
    }
    // A layout name with the wrong type: a directory called index.json.
    let err = refused(&ustar(&[ukind(
        "index.json",
        tar::EntryType::Directory,
        "",
    )]));
    assert!(
        matches!(&err, BundleError::ArchiveUnexpectedEntry { .. }),
        "{err}"
    );
}

#[test]
fn a_duplicate_entry_is_refused() {
    let err = refused(&ustar(&[
        ufile("index.json", b"{}"),
        ufile("./index.json", b"{\"other\":1}"),
    ]));
    assert!(
        matches!(&err, BundleError::ArchiveDuplicateEntry(p) if p == "./index.json"),
        "{err}"
    );
}

#[test]
fn an_oversized_file_is_refused_before_its_bytes_are_read() {
    let limits = ArchiveLimits {
        max_entries: 16,
        max_file_bytes: 1000,
        max_total_bytes: 1500,
    };
    // The header claims 1 TiB; the bytes are not even there.
    let mut big = ufile("index.json", b"");
    big.size = Some(1 << 40);
    let mut bytes = ustar_header(&big).as_bytes().to_vec();
    bytes.extend(std::iter::repeat_n(0u8, 1024));
    let err = refused_with(&bytes, &limits);
    assert!(
        matches!(&err, BundleError::ArchiveFileTooLarge { path, limit: 1000 } if path == "index.json"),
        "{err}"
    );
    // Each file under the per-file limit, together over the total.
    let err = refused_with(
        &ustar(&[
            ufile("index.json", &[b' '; 900]),
            ufile("oci-layout", &[b' '; 900]),
        ]),
        &limits,
    );
    assert!(
        matches!(err, BundleError::ArchiveTooLarge { limit: 1500 }),
        "{err}"
    );
}

#[test]
fn too_many_entries_are_refused() {
    let limits = ArchiveLimits {
        max_entries: 4,
        ..ArchiveLimits::default()
    };
    let entries: Vec<Ustar> = (0..5u8).map(|i| blob(&[i])).collect();
    let err = refused_with(&ustar(&entries), &limits);
    assert!(
        matches!(err, BundleError::ArchiveTooManyEntries { limit: 4 }),
        "{err}"
    );
}

#[test]
fn a_truncated_archive_is_refused_wherever_it_is_cut() {
    let f = Fixture::new();
    let bytes = pack_bundle_to_vec(&f.bundle()).unwrap();
    let len = bytes.len();
    // Mid-header, mid-file, at a block boundary inside a file, at the end of the last entry
    // (no end marker), and between the two end blocks.
    for cut in [100, 512 + 7, 4096, len - 1024, len - 512] {
        let err = refused(&bytes[..cut]);
        assert!(
            matches!(err, BundleError::ArchiveTruncated),
            "cut at {cut}: {err}"
        );
    }
    assert!(matches!(refused(&[]), BundleError::ArchiveTruncated));
}

#[test]
fn a_blob_whose_content_does_not_match_its_name_is_refused() {
    let name = format!("blobs/sha256/{}", Digest::of(b"honest").to_hex());
    let err = refused(&ustar(&[ufile(&name, b"altered")]));
    assert!(
        matches!(&err, BundleError::BlobDigestMismatch { actual, .. } if *actual == Digest::of(b"altered")),
        "{err}"
    );
}

#[test]
fn a_bad_checksum_a_non_ustar_header_and_trailing_data_are_refused() {
    let mut bytes = ustar(&[ufile("index.json", b"{}")]);
    bytes[0] = b'j'; // name now "jndex.json", checksum no longer matches
    assert!(matches!(refused(&bytes), BundleError::ArchiveBadHeader(m) if m.contains("checksum")),);
    // An old (pre-POSIX) header: the tar crate's "old" format.
    let old = raw_tar(&[file("index.json", b"{}", 0o644)]);
    assert!(matches!(refused(&old), BundleError::ArchiveBadHeader(m) if m.contains("ustar")));
    let mut trailing = ustar(&[ufile("index.json", b"{}")]);
    trailing.extend_from_slice(&[0u8; 512]); // zero padding is fine...
    let (_tmp, ok) = unpack(&trailing, &ArchiveLimits::default());
    assert!(ok.is_ok(), "{ok:?}");
    trailing.extend_from_slice(b"smuggled"); // ...anything else is not
    assert!(matches!(
        refused(&trailing),
        BundleError::ArchiveTrailingData
    ));
}

#[test]
fn unpacking_into_a_non_empty_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("keep"), b"x").unwrap();
    let bytes = ustar(&[ufile("index.json", b"{}")]);
    let mut r = bytes.as_slice();
    let err = unpack_bundle_archive(&mut r, tmp.path(), &ArchiveLimits::default()).unwrap_err();
    assert!(matches!(err, BundleError::OutputExists(_)), "{err}");
    assert_eq!(std::fs::read(tmp.path().join("keep")).unwrap(), b"x");
}

#[test]
fn pack_refuses_a_bundle_directory_with_a_stray_file_or_a_link() {
    let f = Fixture::new();
    std::fs::write(f.bundle().join("notes.txt"), b"x").unwrap();
    let err = pack_bundle_to_vec(&f.bundle()).unwrap_err();
    assert!(
        matches!(&err, BundleError::ArchiveUnexpectedEntry { path, .. } if path == "notes.txt"),
        "{err}"
    );
    std::fs::remove_file(f.bundle().join("notes.txt")).unwrap();
    std::fs::remove_file(f.bundle().join("index.json")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", f.bundle().join("index.json")).unwrap();
    let err = pack_bundle_to_vec(&f.bundle()).unwrap_err();
    assert!(
        matches!(err, BundleError::UnsupportedSource { .. }),
        "{err}"
    );
}

#[test]
fn a_bundle_altered_after_signing_unpacks_but_does_not_verify() {
    // The archive carries no trust: a re-signed-by-nobody change to the envelope passes the
    // archive rules and is caught by verification.
    let f = Fixture::new();
    let env_path = f.bundle().join("signature.dsse.json");
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&env_path).unwrap()).unwrap();
    env["payloadType"] = "application/json".into();
    std::fs::write(&env_path, serde_json::to_vec(&env).unwrap()).unwrap();
    let bytes = pack_bundle_to_vec(&f.bundle()).unwrap();
    let (tmp, result) = unpack(&bytes, &ArchiveLimits::default());
    result.unwrap();
    let err = verify_bundle(&tmp.path().join("bundle"), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
}

#[test]
fn an_archive_written_by_gnu_tar_in_ustar_format_unpacks_and_verifies() {
    // Interop: what a user can make by hand (`tar --format=ustar -C BUNDLE -cf out.tar .`) is
    // accepted; GNU tar's default format (not POSIX ustar) is refused with a hint.
    let f = Fixture::new();
    let run = |format: &str| {
        let out = std::process::Command::new("tar")
            .arg(format!("--format={format}"))
            .arg("-C")
            .arg(f.bundle())
            .args(["-cf", "-", "."])
            .output();
        match out {
            Ok(o) if o.status.success() => Some(o.stdout),
            _ => None,
        }
    };
    let Some(ustar_bytes) = run("ustar") else {
        eprintln!("SKIPPED: no GNU tar on this machine; tar interop not checked");
        return;
    };
    let (tmp, result) = unpack(&ustar_bytes, &ArchiveLimits::default());
    result.unwrap();
    let vb = verify_bundle(&tmp.path().join("bundle"), &f.store()).unwrap();
    assert_eq!(vb.manifest_digest(), f.manifest);
    let gnu = run("gnu").unwrap();
    let err = refused(&gnu);
    assert!(
        matches!(&err, BundleError::ArchiveBadHeader(m) if m.contains("--format=ustar")),
        "{err}"
    );
}
