//! The settlement the escrow takes, signed when the node settles: over the log's head then,
//! naming the depositor, with the receipt's own signature left as the receipt's proof.

use rapha_receipt::{
    escrow_settlement_digest, issue, recover_signer, settlement_for, sign_escrow_settlement,
    verify_file, ReceiptError, ReceiptLog, VerifyOptions,
};

use crate::common::{self, addr, sample_body};
use crate::tamper::fixture;

#[test]
fn escrow_settlement_is_signed_over_the_current_head_with_the_receipts_terms() {
    let mut f = fixture();
    let depositor = addr("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");
    let before = f.file.clone();
    let body = sample_body(f.key.address(), 7);
    let at = &f.file.log_at_signing;
    assert!(
        at.tree_size < f.log.size(),
        "receipts were issued after ours"
    );

    let (msg, sig) = sign_escrow_settlement(&f.file, depositor, &f.key, &f.log).unwrap();
    let (domain, receipt_msg) = settlement_for(&body, &f.file.receipt_digest, at);
    assert_eq!(
        (msg.logSize, msg.logRoot.0),
        (f.log.size(), *f.log.root().as_bytes()),
        "signed at the head, not at the receipt's position"
    );
    assert_eq!(
        (
            msg.jobId,
            msg.depositor,
            msg.outcome,
            msg.receiptDigest,
            msg.payout,
            msg.fee,
            msg.token
        ),
        (
            receipt_msg.jobId,
            depositor,
            receipt_msg.outcome,
            receipt_msg.receiptDigest,
            receipt_msg.payout,
            receipt_msg.fee,
            receipt_msg.token
        )
    );
    assert_eq!(
        recover_signer(&escrow_settlement_digest(&domain, &msg), &sig).unwrap(),
        f.key.address()
    );

    // Later receipts move the head; the next signature is at the new head, never below.
    issue(
        &sample_body(f.key.address(), 250),
        &f.key,
        &mut f.log,
        9_000,
    )
    .unwrap();
    let (later, _) = sign_escrow_settlement(&f.file, depositor, &f.key, &f.log).unwrap();
    assert_eq!(later.logSize, msg.logSize + 1);

    // The receipt and its proof are untouched and still verify.
    assert_eq!(f.file, before);
    let v = verify_file(
        &f.file,
        &VerifyOptions {
            node_address: Some(f.key.address()),
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(v.body, body);
}

#[test]
fn escrow_settlement_refuses_another_nodes_key_a_log_without_the_receipt_and_a_bad_digest() {
    let f = fixture();
    let depositor = addr("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");
    assert!(matches!(
        sign_escrow_settlement(&f.file, depositor, &common::other_key(), &f.log),
        Err(ReceiptError::InconsistentBody(_))
    ));

    let dir = tempfile::tempdir().unwrap();
    let empty = ReceiptLog::open(&dir.path().join("other.sqlite")).unwrap();
    assert!(matches!(
        sign_escrow_settlement(&f.file, depositor, &f.key, &empty),
        Err(ReceiptError::NotInLog(_))
    ));

    // A digest that is not the body's: nothing to sign a settlement for.
    let mut forged = f.file.clone();
    forged.receipt_digest = rapha_core::Digest::of(b"not the body");
    assert!(matches!(
        sign_escrow_settlement(&forged, depositor, &f.key, &f.log),
        Err(ReceiptError::Malformed(_))
    ));
}
