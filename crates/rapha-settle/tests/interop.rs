//! Cross-checks with the rest of Rapha: a rapha-receipt node signature settles on chain, the
//! contract's digest equals rapha-eth's (reached from a receipt's terms and from the ledger's
//! settlement fields), and the company's deposit path checks the chain and token.

use alloy::primitives::{B256, U256};
use rapha_core::{JobId, Outcome, Usdc};
use rapha_receipt::{NodeKey, SettlementDomain};
use rapha_settle::bindings::RaphaEscrow;
use rapha_settle::{deposit_for_job, DepositOrder, SettleError, SignedSettlement, TokenKind};

use crate::common::Fx;

#[tokio::test]
async fn the_escrow_settlement_rapha_receipt_signs_settles_the_three_digests_agree_and_a_receipt_signature_is_refused(
) {
    let Some(fx) = Fx::start().await else { return };
    let job = JobId::random();
    let fee = 120_000_000;
    fx.deposit(&job, fee).await;
    let fields = fx.fields(&job, Outcome::Completed, fee, 11);

    let mut secret = [0u8; 32];
    hex::decode_to_slice(fx.keys[4].trim_start_matches("0x"), &mut secret).unwrap();
    let node = NodeKey::from_secret_bytes(&secret).unwrap();
    assert_eq!(
        node.address(),
        fx.node.address(),
        "same registered node key"
    );
    let domain = SettlementDomain {
        chain_id: fx.chain_id,
        verifying_contract: fx.escrow(),
    };
    let msg = rapha_receipt::EscrowSettlement {
        jobId: B256::from(job.to_bytes32()),
        depositor: fields.depositor,
        outcome: Outcome::Completed.code(),
        receiptDigest: fields.receipt_digest,
        payout: fields.payout,
        fee: U256::from(fee),
        token: fields.token,
        logSize: fields.log_size,
        logRoot: fields.log_root,
    };
    assert_eq!(
        msg,
        fields.to_eip712(),
        "the ledger's fields are the signed message"
    );
    let receipt_digest = rapha_receipt::escrow_settlement_digest(&domain, &msg);
    let fields_digest = fields.signing_digest(fx.chain_id, fx.escrow());
    let onchain: B256 = RaphaEscrow::new(fx.escrow(), fx.read.clone())
        .settlementDigest(fields.to_sol())
        .call()
        .await
        .unwrap();
    assert_eq!(
        receipt_digest, fields_digest,
        "a receipt's terms and the ledger's fields give other digests"
    );
    assert_eq!(
        onchain, fields_digest,
        "the contract computes another digest"
    );

    // A receipt's own signature (domain version "1", no depositor) over the same terms proves
    // the receipt and settles nothing.
    let receipt_msg = rapha_receipt::Settlement {
        jobId: msg.jobId,
        outcome: msg.outcome,
        receiptDigest: msg.receiptDigest,
        payout: msg.payout,
        fee: msg.fee,
        token: msg.token,
        logSize: msg.logSize,
        logRoot: msg.logRoot,
    };
    let receipt_sig = node
        .sign(&rapha_receipt::settlement_digest(&domain, &receipt_msg))
        .unwrap();
    let as_receipt = SignedSettlement {
        fields: fields.clone(),
        signature: receipt_sig.0.to_vec().into(),
    };
    match crate::common::refusal(fx.anyone.settle(&as_receipt).await.unwrap_err()) {
        RaphaEscrow::RaphaEscrowErrors::UnauthorizedSigner(_) => {}
        other => panic!("a receipt's signature was taken as a settlement: {other:?}"),
    }

    let sig = node.sign(&receipt_digest).unwrap();
    let signed = SignedSettlement {
        fields,
        signature: sig.0.to_vec().into(),
    };
    fx.anyone.settle(&signed).await.unwrap();
    assert_eq!(fx.owed(fx.payout).await, U256::from(84_000_000u64));
    assert_eq!(fx.owed(fx.treasury).await, U256::from(36_000_000u64));
}

#[tokio::test]
async fn company_deposit_checks_chain_and_token_before_paying() {
    let Some(fx) = Fx::start().await else { return };
    let company = fx.key(2);
    let job = JobId::random();
    let mut order = DepositOrder {
        job,
        fee: "120.00".parse::<Usdc>().unwrap(),
        hospital: fx.hospital,
        deadline_after_secs: 3600,
        expected_chain_id: Some(137),
        test_token: false,
    };
    // The mock token is not Polygon's official USDC: refused unless declared a test token.
    let err = deposit_for_job(&fx.url, fx.escrow(), &company, &order)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SettleError::UnofficialToken { chain_id: 137, configured, .. } if configured == fx.usdc),
        "{err}"
    );
    order.expected_chain_id = Some(80002);
    order.test_token = true;
    let err = deposit_for_job(&fx.url, fx.escrow(), &company, &order)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SettleError::ChainIdMismatch {
                expected: 80002,
                actual: 137
            }
        ),
        "{err}"
    );
    assert_eq!(fx.balance(fx.escrow()).await, U256::ZERO, "nothing moved");

    order.expected_chain_id = Some(137);
    let done = deposit_for_job(&fx.url, fx.escrow(), &company, &order)
        .await
        .unwrap();
    assert_eq!(done.token_kind, TokenKind::Test);
    assert_eq!(fx.balance(fx.escrow()).await, U256::from(120_000_000u64));
    let onchain = fx.company.job(fx.company_addr, &job).await.unwrap();
    assert_eq!(
        (
            onchain.hospital,
            onchain.amount.base_units(),
            onchain.deadline
        ),
        (fx.hospital, 120_000_000, done.deadline)
    );
    eprintln!(
        "gas: approve {} deposit {}",
        done.approve.gas_used, done.deposit.gas_used
    );
}
