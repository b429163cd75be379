//! The fuzz entry points (`crates/rapha-bundle/fuzz`) driven on stable by proptest over a seed
//! corpus: mutated tar layers and mutated envelope / statement / OCI JSON never panic, and an
//! unpack, whatever it accepts, writes nothing outside its destination.

use proptest::prelude::*;
use rapha_bundle::fuzzing::{parse_all, unpack_tar_bytes};

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
        // Any symlink that was created stays inside by the unpacker's own rule.
        for (path, kind, _, target) in snapshot(&dest) {
            if kind == "symlink" {
                let t = String::from_utf8_lossy(&target).into_owned();
                prop_assert!(!t.starts_with('/'), "absolute symlink {path} -> {t}");
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
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_all(&bytes);
        let tmp = tempfile::tempdir().unwrap();
        let _ = unpack_tar_bytes(&bytes, tmp.path());
    }
}
