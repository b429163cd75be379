//! The SQLite log against the independent Python RFC 9162 reference (rapha-core's
//! `tests/merkle_ref.py`) and bounded property tests.

use proptest::prelude::*;
use rapha_core::merkle::{self, LeafHashes};
use rapha_core::Digest;
use rapha_receipt::{ReceiptError, ReceiptLog};

use crate::common;

fn leaf(i: u64) -> Vec<u8> {
    format!("leaf-{i}").into_bytes()
}

fn log_with(n: u64) -> (tempfile::TempDir, ReceiptLog) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ReceiptLog::open(&dir.path().join("log.sqlite")).unwrap();
    let items: Vec<Vec<u8>> = (0..n).map(leaf).collect();
    log.append_batch(&items).unwrap();
    (dir, log)
}

#[test]
fn stored_proofs_match_independent_python_reference_for_every_size_up_to_40() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rapha-core/tests/merkle_ref.py"
    );
    let reference = crate::python::run_json("python3", &[script, "40"], None);
    // Append one at a time, so each size's subtree hashes are the ones the appends stored.
    let dir = tempfile::tempdir().unwrap();
    let mut log = ReceiptLog::open(&dir.path().join("log.sqlite")).unwrap();
    for entry in reference.as_array().unwrap() {
        let n = entry["size"].as_u64().unwrap();
        let a = log.append(&leaf(n - 1)).unwrap();
        assert_eq!((a.index, a.tree_size), (n - 1, n));
        assert_eq!(
            a.root.to_hex(),
            entry["root"].as_str().unwrap(),
            "root of {n}"
        );
    }
    for entry in reference.as_array().unwrap() {
        let n = entry["size"].as_u64().unwrap();
        assert_eq!(
            log.root_at(n).unwrap().to_hex(),
            entry["root"].as_str().unwrap()
        );
        for i in 0..n {
            let hex: Vec<String> = log
                .inclusion_proof(i, n)
                .unwrap()
                .iter()
                .map(Digest::to_hex)
                .collect();
            let want: Vec<String> =
                serde_json::from_value(entry["paths"][i as usize].clone()).unwrap();
            assert_eq!(hex, want, "path of {i} in {n}");
        }
        for m in 1..n {
            let hex: Vec<String> = log
                .consistency_proof(m, n)
                .unwrap()
                .iter()
                .map(Digest::to_hex)
                .collect();
            let want: Vec<String> =
                serde_json::from_value(entry["consistency"][(m - 1) as usize].clone()).unwrap();
            assert_eq!(hex, want, "consistency {m} -> {n}");
        }
    }
}

#[test]
fn every_leaf_proof_verifies_for_every_size_up_to_300() {
    let (_dir, log) = log_with(300);
    let hashes: Vec<Digest> = (0..300).map(|i| merkle::leaf_hash(&leaf(i))).collect();
    for n in 1..=300u64 {
        let root = log.root_at(n).unwrap();
        assert_eq!(
            root,
            merkle::root_of_leaf_hashes(&hashes[..n as usize]),
            "root {n}"
        );
        for i in 0..n {
            let path = log.inclusion_proof(i, n).unwrap();
            merkle::verify_inclusion(&hashes[i as usize], i, n, &path, &root).unwrap();
        }
    }
}

#[test]
fn reopening_keeps_leaves_heads_and_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sqlite");
    let key = common::node_key();
    let head = {
        let mut log = ReceiptLog::open(&path).unwrap();
        for i in 0..21 {
            log.append(&leaf(i)).unwrap();
        }
        log.sign_head(&key, 5).unwrap()
    };
    let mut log = ReceiptLog::open(&path).unwrap();
    assert_eq!(log.size(), 21);
    assert_eq!(log.latest_head().unwrap(), Some(head));
    head.verify(&key.address()).unwrap();
    assert_eq!(log.leaf(20).unwrap(), leaf(20));
    let a = log.append(&leaf(21)).unwrap();
    assert_eq!(a.index, 21);
    let p = log.consistency_proof(21, 22).unwrap();
    merkle::verify_consistency(21, 22, &head.root_hash, &log.root(), &p).unwrap();
}

#[test]
fn appending_the_same_bytes_again_returns_the_original_position() {
    let (_dir, mut log) = log_with(5);
    let first = log.append(b"receipt-x").unwrap();
    log.append(b"receipt-y").unwrap();
    let again = log.append(b"receipt-x").unwrap();
    assert!(first.new && !again.new);
    assert_eq!(
        (again.index, again.tree_size, again.root),
        (first.index, first.tree_size, first.root)
    );
    assert_eq!(log.size(), 7);
}

#[test]
fn requests_past_the_end_are_refused() {
    let (_dir, log) = log_with(10);
    assert!(matches!(
        log.inclusion_proof(10, 10),
        Err(ReceiptError::LogRequest(_))
    ));
    assert!(matches!(
        log.inclusion_proof(3, 11),
        Err(ReceiptError::LogRequest(_))
    ));
    assert!(matches!(
        log.consistency_proof(0, 5),
        Err(ReceiptError::LogRequest(_))
    ));
    assert!(matches!(
        log.consistency_proof(6, 5),
        Err(ReceiptError::LogRequest(_))
    ));
    assert!(matches!(log.leaf(10), Err(ReceiptError::LogRequest(_))));
}

#[test]
fn a_log_whose_tree_was_rewritten_under_its_signed_head_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sqlite");
    {
        let mut log = ReceiptLog::open(&path).unwrap();
        log.append_batch(&(0..8).map(leaf).collect::<Vec<_>>())
            .unwrap();
        log.sign_head(&common::node_key(), 1).unwrap();
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE leaves SET hash = zeroblob(32) WHERE idx = 7", [])
        .unwrap();
    conn.execute("DELETE FROM nodes WHERE level = 3", [])
        .unwrap();
    drop(conn);
    assert!(matches!(
        ReceiptLog::open(&path),
        Err(ReceiptError::Corrupt { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A modified leaf, path element or index never verifies. (The tree size alone is bound by
    /// the signed head, not by the path: the receipt tamper tests cover it.)
    #[test]
    fn tampered_inclusion_proofs_fail(n in 2u64..=200, i_seed in any::<u64>(), which in 0u8..3, flip in any::<u8>()) {
        let hashes: Vec<Digest> = (0..n).map(|i| merkle::leaf_hash(&leaf(i))).collect();
        let i = i_seed % n;
        let root = merkle::root_of_leaf_hashes(&hashes);
        let mut path = merkle::inclusion_proof(i, n, &mut LeafHashes(&hashes)).unwrap();
        let mut leaf_h = hashes[i as usize];
        let mut idx = i;
        match which {
            0 => leaf_h = merkle::leaf_hash(format!("forged-{flip}").as_bytes()),
            1 => {
                let k = flip as usize % path.len();
                let mut b = *path[k].as_bytes();
                b[flip as usize % 32] ^= 1 | flip;
                path[k] = Digest::from_bytes(b);
            }
            _ => idx = (i + 1 + u64::from(flip)) % n,
        }
        prop_assume!(idx != i || which != 2);
        prop_assert!(merkle::verify_inclusion(&leaf_h, idx, n, &path, &root).is_err());
    }
}

#[test]
fn a_read_only_handle_beside_the_writer_sees_each_committed_append_and_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sqlite");
    let key = common::node_key();
    // A missing log is an error for a reader, never created by it.
    assert!(matches!(
        ReceiptLog::open_read_only(&path).unwrap_err(),
        ReceiptError::Store { .. }
    ));
    let mut writer = ReceiptLog::open(&path).unwrap();
    for i in 0..7 {
        writer.append(&leaf(i)).unwrap();
    }
    let head7 = writer.sign_head(&key, 1).unwrap();
    let mut reader = ReceiptLog::open_read_only(&path).unwrap();
    assert_eq!(reader.path(), path.as_path());
    assert_eq!((reader.size(), reader.root()), (7, writer.root()));
    assert_eq!(reader.latest_head().unwrap(), Some(head7));
    let p = reader.inclusion_proof(3, 7).unwrap();
    merkle::verify_inclusion(&merkle::leaf_hash(&leaf(3)), 3, 7, &p, &head7.root_hash).unwrap();

    // The writer keeps going; a reader opened now sees the new size and proves consistency.
    for i in 7..12 {
        writer.append(&leaf(i)).unwrap();
    }
    let head12 = writer.sign_head(&key, 2).unwrap();
    let fresh = ReceiptLog::open_read_only(&path).unwrap();
    assert_eq!(fresh.size(), 12);
    let p = fresh.consistency_proof(7, 12).unwrap();
    merkle::verify_consistency(7, 12, &head7.root_hash, &head12.root_hash, &p).unwrap();

    // Reads only: appends and heads through the reader are refused, the log unchanged.
    assert!(matches!(
        reader.append(b"forged").unwrap_err(),
        ReceiptError::Store { .. }
    ));
    writer.append(&leaf(12)).unwrap();
    let unsigned = ReceiptLog::open_read_only(&path).unwrap();
    assert!(matches!(
        unsigned.sign_head(&key, 3).unwrap_err(),
        ReceiptError::Store { .. }
    ));
    let log = ReceiptLog::open(&path).unwrap();
    assert_eq!((log.size(), log.latest_head().unwrap()), (13, Some(head12)));
}
