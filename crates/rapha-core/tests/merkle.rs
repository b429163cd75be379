//! The Merkle code against an independent Python implementation of RFC 9162 §2.1, for every
//! tree size up to 64, plus attacks on proofs.

use proptest::prelude::*;
use rapha_core::merkle::{self, LeafHashes};
use rapha_core::Digest;

fn leaves(n: u64) -> Vec<Digest> {
    (0..n)
        .map(|i| merkle::leaf_hash(format!("leaf-{i}").as_bytes()))
        .collect()
}

fn hexes(v: &[Digest]) -> Vec<String> {
    v.iter().map(Digest::to_hex).collect()
}

#[test]
fn matches_independent_python_reference_for_every_size_up_to_64() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/merkle_ref.py");
    let reference = crate::python::run_json("python3", &[script, "64"], None);
    let sizes = reference.as_array().unwrap();
    assert_eq!(sizes.len(), 64);
    let all = leaves(64);
    for entry in sizes {
        let n = entry["size"].as_u64().unwrap();
        let l = &all[..n as usize];
        let root = merkle::root_of_leaf_hashes(l);
        assert_eq!(
            root.to_hex(),
            entry["root"].as_str().unwrap(),
            "root of {n}"
        );
        for i in 0..n {
            let path = merkle::inclusion_proof(i, n, &mut LeafHashes(l)).unwrap();
            let want: Vec<String> =
                serde_json::from_value(entry["paths"][i as usize].clone()).unwrap();
            assert_eq!(hexes(&path), want, "path of leaf {i} in {n}");
            merkle::verify_inclusion(&l[i as usize], i, n, &path, &root).unwrap();
        }
        for m in 1..n {
            let proof = merkle::consistency_proof(m, n, &mut LeafHashes(l)).unwrap();
            let want: Vec<String> =
                serde_json::from_value(entry["consistency"][(m - 1) as usize].clone()).unwrap();
            assert_eq!(hexes(&proof), want, "consistency {m} -> {n}");
            let old_root = merkle::root_of_leaf_hashes(&l[..m as usize]);
            merkle::verify_consistency(m, n, &old_root, &root, &proof).unwrap();
        }
    }
}

#[test]
fn root_uses_rfc_domain_separation() {
    // A one-leaf tree's root is the leaf hash, SHA-256(0x00 || d); an empty tree's is SHA-256("").
    assert_eq!(merkle::root(&[b"abc"]), merkle::leaf_hash(b"abc"));
    assert_eq!(
        merkle::root::<&[u8]>(&[]).to_hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_ne!(merkle::leaf_hash(b"abc"), Digest::of(b"abc"));
}

#[test]
fn index_out_of_range_is_refused() {
    let l = leaves(4);
    assert!(merkle::inclusion_proof(4, 4, &mut LeafHashes(&l)).is_err());
    let root = merkle::root_of_leaf_hashes(&l);
    assert!(merkle::verify_inclusion(&l[0], 4, 4, &[], &root).is_err());
    assert!(merkle::consistency_proof(0, 4, &mut LeafHashes(&l)).is_err());
    assert!(merkle::consistency_proof(5, 4, &mut LeafHashes(&l)).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn tampered_inclusion_proofs_fail(n in 2u64..300, seed in any::<u64>(), which in 0usize..4) {
        let l = leaves(n);
        let i = seed % n;
        let root = merkle::root_of_leaf_hashes(&l);
        let mut path = merkle::inclusion_proof(i, n, &mut LeafHashes(&l)).unwrap();
        prop_assert!(merkle::verify_inclusion(&l[i as usize], i, n, &path, &root).is_ok());
        match which {
            0 => { // another leaf
                let other = &l[((i + 1) % n) as usize];
                prop_assert!(merkle::verify_inclusion(other, i, n, &path, &root).is_err());
            }
            1 => { // a modified path element
                let j = (seed as usize / 7) % path.len();
                let mut b = *path[j].as_bytes();
                b[0] ^= 1;
                path[j] = Digest::from_bytes(b);
                prop_assert!(merkle::verify_inclusion(&l[i as usize], i, n, &path, &root).is_err());
            }
            2 => { // the same path claimed for another leaf position
                // (a changed tree size is caught by the signed tree head, which binds size and
                // root; the path alone cannot tell sizes with the same shape apart)
                let j = (i + 1 + seed / 5 % (n - 1)) % n;
                prop_assert!(merkle::verify_inclusion(&l[i as usize], j, n, &path, &root).is_err());
            }
            _ => { // a truncated path
                path.pop();
                prop_assert!(merkle::verify_inclusion(&l[i as usize], i, n, &path, &root).is_err());
            }
        }
    }

    #[test]
    fn tampered_consistency_proofs_fail(n in 2u64..200, seed in any::<u64>()) {
        let l = leaves(n);
        let m = 1 + seed % (n - 1);
        let old_root = merkle::root_of_leaf_hashes(&l[..m as usize]);
        let new_root = merkle::root_of_leaf_hashes(&l);
        let proof = merkle::consistency_proof(m, n, &mut LeafHashes(&l)).unwrap();
        prop_assert!(merkle::verify_consistency(m, n, &old_root, &new_root, &proof).is_ok());
        // Rewriting history: a different old leaf gives a different old root.
        let mut forged = l.clone();
        forged[0] = merkle::leaf_hash(b"rewritten");
        let forged_old = merkle::root_of_leaf_hashes(&forged[..m as usize]);
        prop_assert!(merkle::verify_consistency(m, n, &forged_old, &new_root, &proof).is_err());
        if !proof.is_empty() {
            let mut p = proof.clone();
            let j = (seed as usize / 3) % p.len();
            let mut b = *p[j].as_bytes();
            b[31] ^= 0x80;
            p[j] = Digest::from_bytes(b);
            prop_assert!(merkle::verify_consistency(m, n, &old_root, &new_root, &p).is_err());
        }
    }
}
