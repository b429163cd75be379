//! The fuzz entry points (`crates/rapha-bundle/fuzz`) driven on stable by proptest over a seed
//! corpus: mutated tar layers, bundle archives and envelope / statement / OCI JSON never panic,
//! and an unpack, whatever it accepts, writes nothing outside its destination.

use proptest::prelude::*;
use rapha_bundle::fuzzing::{parse_all, unpack_bundle_archive_bytes, unpack_tar_bytes};

use crate::common::*;

fn tar_seeds() -> Vec<Vec<u8>> {
    vec![
        raw_tar(&[
            dir("etc", 0o755),
            file("etc/a", b"hello", 0o644),
            symlink("etc/l", "a"),
            hardlink("h", "etc/a"),
        ]),
        raw_tar(&[file("../x", b"x", 0o644)]),
        raw_tar(&[symlink("s", "../../etc"), file("s/x", b"", 0o644)]),
        raw_tar(&[
            file("a/.wh..wh..opq", b"", 0o644),
            file("a/.wh.b", b"", 0o644),
        ]),
        raw_tar(&[
            special("dev", tar::EntryType::Char),
            file("su", b"", 0o4755),
        ]),
    ]
}

fn json_seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(make_json_seeds)
}

fn make_json_seeds() -> Vec<Vec<u8>> {
    let f = Fixture::new();
    let mut out = vec![
        std::fs::read(f.bundle().join("signature.dsse.json")).unwrap(),
        std::fs::read(f.bundle().join("index.json")).unwrap(),
    ];
    let env = rapha_bundle::dsse::Envelope::parse(&out[0]).unwrap();
    out.push(env.payload_bytes().unwrap());
    for e in std::fs::read_dir(f.bundle().join("blobs/sha256")).unwrap() {
        let b = std::fs::read(e.unwrap().path()).unwrap();
        if b.first() == Some(&b'{') {
            out.push(b);
        }
    }
    out.push(PREDICATE.as_bytes().to_vec());
    out
}

/// Bundle archives: an honest packed bundle and hostile hand-made ones.
fn archive_seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        use crate::archive::{blob, ufile, ukind, ustar};
        let f = Fixture::new();
        vec![
            rapha_bundle::pack_bundle_to_vec(&f.bundle()).unwrap(),
            ustar(&[
                ufile("./oci-layout", b"{}"),
                ufile("index.json", b"{}"),
                blob(b"layer"),
            ]),
            ustar(&[
                ufile("../x", b"x"),
                ukind("index.json", tar::EntryType::Symlink, "/"),
            ]),
            ustar(&[
                ufile("oci-layout", b"{}"),
                ukind("index.json", tar::EntryType::Link, "oci-layout"),
                ukind("pax", tar::EntryType::XHeader, ""),
            ]),
        ]
    })
}

#[test]
fn fuzz_seed_archives_are_accepted_or_refused_as_their_names_say() {
    // The cargo-fuzz seeds (written by another tar implementation, Python's tarfile) start
    // the fuzzer from both sides of every rule.
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/unpack_bundle_archive");
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let result =
            unpack_bundle_archive_bytes(&std::fs::read(&path).unwrap(), &tmp.path().join(&name));
        match name.as_str() {
            "layout" => assert_eq!(result.unwrap().files, 4),
            "traversal" => assert!(matches!(
                result,
                Err(rapha_bundle::BundleError::ArchivePathTraversal(_))
            )),
            "links" => assert!(matches!(
                result,
                Err(rapha_bundle::BundleError::ArchiveSymlink(_))
            )),
            "duplicate" => assert!(matches!(
                result,
                Err(rapha_bundle::BundleError::ArchiveDuplicateEntry(_))
            )),
            other => panic!("seed {other} has no expectation here"),
        }
        seen.push(name);
    }
    assert_eq!(seen.len(), 4);
}

fn mutate(mut seed: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for (pos, byte) in edits {
        if !seed.is_empty() {
            let i = pos % seed.len();
            seed[i] = *byte;
        }
    }
    if let Some(c) = cut {
        seed.truncate(c % (seed.len() + 1));
    }
    seed
}

#[test]
fn seed_corpus_parses_as_expected() {
    // The honest seeds are accepted by their parser, so the mutations start from valid input.
    let seeds = json_seeds();
    assert!(
        seeds.iter().all(|s| parse_all(s) >= 1),
        "every JSON seed is valid for one parser"
    );
    // The honest archive seeds unpack; the hostile ones are refused.
    let tmp = tempfile::tempdir().unwrap();
    let ok: Vec<bool> = archive_seeds()
        .iter()
        .enumerate()
        .map(|(i, s)| unpack_bundle_archive_bytes(s, &tmp.path().join(i.to_string())).is_ok())
        .collect();
    assert_eq!(ok, [true, true, false, false]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn mutated_tar_never_panics_nor_writes_outside(
        which in 0usize..5,
        edits in proptest::collection::vec((0usize..4096, any::<u8>()), 0..8),
        cut in proptest::option::of(0usize..4096),
    ) {
        let bytes = mutate(tar_seeds()[which].clone(), &edits, cut);
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("root");
        std::fs::create_dir(&dest).unwrap();
        let _ = unpack_tar_bytes(&bytes, &dest);
        let beside: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        prop_assert_eq!(beside, vec![std::ffi::OsString::from("root")]);
        // A relative symlink never climbs above the rootfs (an absolute one is kept as data:
        // runc resolves it inside the container), and no setuid/setgid bit survives.
        for (path, kind, mode, target) in snapshot(&dest) {
            prop_assert_eq!(mode & 0o6000, 0, "setuid/setgid bit kept on {}", path);
            if kind == "symlink" {
                let t = String::from_utf8_lossy(&target).into_owned();
                if !t.starts_with('/') {
                    let depth = path.split('/').count() - 1;
                    let mut ups = 0usize;
                    let mut named = false;
                    for c in t.split('/') {
                        match c {
                            "" | "." => {}
                            ".." => {
                                prop_assert!(!named, "symlink {path} -> {t} climbs after a name");
                                ups += 1;
                            }
                            _ => named = true,
                        }
                    }
                    prop_assert!(ups <= depth, "symlink {path} -> {t} climbs out");
                }
            }
        }
    }

    #[test]
    fn mutated_json_never_panics(
        which in 0usize..6,
        edits in proptest::collection::vec((0usize..4096, any::<u8>()), 0..8),
        cut in proptest::option::of(0usize..4096),
    ) {
        let seeds = json_seeds();
        let bytes = mutate(seeds[which % seeds.len()].clone(), &edits, cut);
        let _ = parse_all(&bytes);
    }

    #[test]
    fn mutated_bundle_archive_never_panics_nor_writes_outside(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let seed = archive_seeds()[which].clone();
        let len = seed.len().max(1);
        let edits: Vec<(usize, u8)> = edits.into_iter().map(|(p, b)| (p % len, b)).collect();
        let bytes = mutate(seed, &edits, cut);
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("bundle");
        let result = unpack_bundle_archive_bytes(&bytes, &dest);
        let beside: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        match result {
            // Whatever it accepts stays inside and holds only the bundle layout.
            Ok(_) => {
                prop_assert_eq!(beside, vec![std::ffi::OsString::from("bundle")]);
                for (path, kind, _, _) in snapshot(&dest) {
                    prop_assert!(kind != "symlink", "{}", path);
                    prop_assert!(
                        ["oci-layout", "index.json", "signature.dsse.json", "blobs", "blobs/sha256"]
                            .contains(&path.as_str()) || path.starts_with("blobs/sha256/"),
                        "{}", path
                    );
                }
            }
            Err(_) => prop_assert!(beside.is_empty(), "a refused archive left {:?}", beside),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_all(&bytes);
        let tmp = tempfile::tempdir().unwrap();
        let _ = unpack_tar_bytes(&bytes, tmp.path());
        let _ = unpack_bundle_archive_bytes(&bytes, &tmp.path().join("bundle"));
    }
}
