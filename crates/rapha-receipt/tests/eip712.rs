//! EIP-712 digests and signatures against eth-account, plus the key file rules.

use std::os::unix::fs::PermissionsExt;

use rapha_core::{Digest, JobId, Outcome};
use rapha_receipt::eip712::{tree_head_digest, Settlement, SettlementDomain};
use rapha_receipt::{
    parse_address, recover_signer, settlement_digest, NodeKey, ReceiptError, Signature, B256,
};
use serde_json::json;

use crate::common::{self, addr};

fn settlement(i: u64) -> (SettlementDomain, Settlement) {
    let outcome = [Outcome::Completed, Outcome::Refused, Outcome::Failed][(i % 3) as usize];
    (
        SettlementDomain {
            chain_id: [137, 80002, 31337][(i % 3) as usize],
            verifying_contract: addr("0x5FbDB2315678afecb367f032d93F642f64180aa3"),
        },
        Settlement {
            jobId: B256::from(JobId::from_bytes([i as u8; 16]).to_bytes32()),
            outcome: outcome.code(),
            receiptDigest: B256::from(*Digest::of(format!("body-{i}").as_bytes()).as_bytes()),
            payout: addr("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            fee: rapha_eth::U256::from([0, 1, 120_000_000, u64::MAX][(i % 4) as usize]),
            token: addr("0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359"),
            logSize: i + 1,
            logRoot: B256::from(*Digest::of(format!("root-{i}").as_bytes()).as_bytes()),
        },
    )
}

#[test]
fn settlement_and_tree_head_digests_and_signatures_match_eth_account() {
    let Some(py) = common::python() else { return };
    let mut cases = vec![];
    let mut ours = vec![];
    for i in 0..12u64 {
        let secret = *Digest::of(format!("key-{i}").as_bytes()).as_bytes();
        let key = NodeKey::from_secret_bytes(&secret).unwrap();
        let (domain, s) = settlement(i);
        let sd = settlement_digest(&domain, &s);
        let ssig = key.sign(&sd).unwrap();
        let root = Digest::of(format!("head-{i}").as_bytes());
        let hd = tree_head_digest(
            1000 + i,
            B256::from(*root.as_bytes()),
            1_764_000_000_000 + i,
        );
        let hsig = key.sign(&hd).unwrap();
        cases.push(json!({
            "secret": hex::encode(secret),
            "chain_id": domain.chain_id,
            "escrow": domain.verifying_contract.to_string(),
            "job_id": hex::encode(s.jobId),
            "outcome": s.outcome,
            "receipt_digest": hex::encode(s.receiptDigest),
            "payout": s.payout.to_string(),
            "fee": s.fee.to::<u64>(),
            "token": s.token.to_string(),
            "log_size": s.logSize,
            "log_root": hex::encode(s.logRoot),
            "tree_size": 1000 + i,
            "root_hash": root.to_hex(),
            "timestamp": 1_764_000_000_000 + i,
            "rust_settlement_signature": hex::encode(ssig.0),
            "rust_head_signature": hex::encode(hsig.0),
        }));
        ours.push((key.address(), sd, ssig, hd, hsig));
    }
    let reference = common::run_python(&py, "eip712_ref.py", &serde_json::Value::Array(cases));
    for ((address, sd, ssig, hd, hsig), r) in ours.iter().zip(reference.as_array().unwrap()) {
        let strip = |v: &serde_json::Value| v.as_str().unwrap().trim_start_matches("0x").to_owned();
        assert_eq!(
            r["address"].as_str().unwrap(),
            address.to_string(),
            "EIP-55 address"
        );
        assert_eq!(strip(&r["settlement_digest"]), hex::encode(sd));
        assert_eq!(strip(&r["head_digest"]), hex::encode(hd));
        // Both sides use RFC 6979 nonces and low s: the signatures are byte-identical.
        assert_eq!(strip(&r["settlement_signature"]), hex::encode(ssig.0));
        assert_eq!(strip(&r["head_signature"]), hex::encode(hsig.0));
        assert_eq!(
            r["settlement_recovered"].as_str().unwrap(),
            address.to_string()
        );
        assert_eq!(r["head_recovered"].as_str().unwrap(), address.to_string());
        assert_eq!(recover_signer(sd, ssig).unwrap(), *address);
    }
}

#[test]
fn signatures_are_low_s_with_v_27_or_28_and_high_s_twins_are_refused() {
    let key = common::node_key();
    let n =
        hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141").unwrap();
    for i in 0..32u64 {
        let (domain, s) = settlement(i);
        let d = settlement_digest(&domain, &s);
        let sig = key.sign(&d).unwrap();
        assert!(sig.0[64] == 27 || sig.0[64] == 28);
        assert!(sig.0[32] < 0x80, "s must be in the lower half");
        // The malleable twin (n - s, flipped v) recovers the same key but is refused.
        let mut twin = sig;
        let mut borrow = 0i32;
        for j in (0..32).rev() {
            let v = i32::from(n[j]) - i32::from(sig.0[32 + j]) - borrow;
            twin.0[32 + j] = v.rem_euclid(256) as u8;
            borrow = i32::from(v < 0);
        }
        twin.0[64] = if sig.0[64] == 27 { 28 } else { 27 };
        assert!(
            matches!(recover_signer(&d, &twin).map_err(ReceiptError::from), Err(ReceiptError::BadSignature(m)) if m.contains("upper half"))
        );
        let mut bad_v = sig;
        bad_v.0[64] = 29;
        assert!(
            matches!(recover_signer(&d, &bad_v).map_err(ReceiptError::from), Err(ReceiptError::BadSignature(m)) if m.contains("27 or 28"))
        );
    }
    let zero = Signature([0; 65]);
    assert!(matches!(
        recover_signer(&B256::repeat_byte(1), &zero).map_err(ReceiptError::from),
        Err(ReceiptError::BadSignature(_))
    ));
}

#[test]
fn node_key_file_is_hex_and_refused_when_group_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let key = NodeKey::generate();
    key.write_new(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(NodeKey::load(&path).unwrap().address(), key.address());
    assert!(
        matches!(key.write_new(&path), Err(ReceiptError::KeyIo { .. })),
        "never overwrites"
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(matches!(
        NodeKey::load(&path),
        Err(ReceiptError::KeyPermissions { mode: 0o640, .. })
    ));

    for (bad, why) in [
        ("abcd\n", "wrong length"),
        (&"zz".repeat(32)[..], "not hex"),
        (&"00".repeat(32)[..], "not a valid"),
    ] {
        let p = dir.path().join(format!("bad-{}", why.len()));
        std::fs::write(&p, bad).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            matches!(NodeKey::load(&p), Err(ReceiptError::KeyFormat { reason, .. }) if reason.starts_with(why)),
            "{why}"
        );
    }
}

#[test]
fn mixed_case_address_with_wrong_checksum_is_refused() {
    assert!(parse_address("0x5FbDB2315678afecb367f032d93F642f64180aa3").is_ok());
    assert!(parse_address("0x5fbdb2315678afecb367f032d93f642f64180aa3").is_ok());
    assert!(parse_address("0x5FBDB2315678afecb367f032d93F642f64180aa3").is_err());
    assert!(parse_address("5fbdb2315678afecb367f032d93f642f64180aa3").is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

    /// The fast recovery (no redundant re-verification) agrees with k256's own
    /// `recover_from_prehash` on honest signatures and on random 65-byte strings.
    #[test]
    fn fast_recovery_agrees_with_k256(digest in proptest::prelude::any::<[u8; 32]>(),
                                      junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 65),
                                      secret in proptest::prelude::any::<[u8; 32]>()) {
        use k256::ecdsa::{RecoveryId, Signature as Ec, VerifyingKey};
        let reference = |sig: &Signature| -> Option<rapha_receipt::Address> {
            let v = sig.0[64];
            if v != 27 && v != 28 { return None; }
            let ec = Ec::from_slice(&sig.0[..64]).ok()?;
            if ec.normalize_s().is_some() { return None; }
            let key = VerifyingKey::recover_from_prehash(&digest, &ec, RecoveryId::new(v == 28, false)).ok()?;
            Some(rapha_receipt::address_of(&key))
        };
        let mut junk_sig = Signature([0; 65]);
        junk_sig.0.copy_from_slice(&junk);
        junk_sig.0[64] = 27 + (junk[64] & 1);
        let d = B256::from(digest);
        proptest::prop_assert_eq!(recover_signer(&d, &junk_sig).ok(), reference(&junk_sig));
        if let Ok(key) = NodeKey::from_secret_bytes(&secret) {
            let sig = key.sign(&d).unwrap();
            proptest::prop_assert_eq!(recover_signer(&d, &sig).ok(), Some(key.address()));
            proptest::prop_assert_eq!(reference(&sig), Some(key.address()));
        }
    }
}
