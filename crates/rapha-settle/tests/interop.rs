//! Cross-checks with the rest of Rapha: a rapha-receipt node signature settles on chain, the
//! contract's digest equals both Rust implementations, and the company's deposit path checks
//! the chain and token.

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
        node.address().0,
        fx.node.address().0 .0,
        "same registered node key"
    );
    let domain = SettlementDomain {
        chain_id: fx.chain_id,
        verifying_contract: rapha_receipt::Address(fx.escrow().0 .0),
    };
    let msg = rapha_receipt::EscrowSettlement {
        job_id: job.to_bytes32(),
        depositor: rapha_receipt::Address(fields.depositor.0 .0),
        outcome: Outcome::Completed.code(),
        receipt_digest: fields.receipt_digest.0,
        payout: rapha_receipt::Address(fields.payout.0 .0),
        fee,
        token: rapha_receipt::Address(fields.token.0 .0),
        log_size: fields.log_size,
        log_root: fields.log_root.0,
    };
    let receipt_digest = rapha_receipt::escrow_settlement_digest(&domain, &msg);
    let alloy_digest = fields.signing_digest(fx.chain_id, fx.escrow());
    let onchain: B256 = RaphaEscrow::new(fx.escrow(), fx.read.clone())
        .settlementDigest(fields.to_sol())
        .call()
        .await
        .unwrap();
    assert_eq!(
        B256::from(receipt_digest),
        alloy_digest,
        "rapha-receipt and alloy digests differ"
    );
    assert_eq!(
        onchain, alloy_digest,
        "the contract computes another digest"
    );

    // A receipt's own signature (domain version "1", no depositor) over the same terms proves
    // the receipt and settles nothing.
    let receipt_msg = rapha_receipt::Settlement {
        job_id: msg.job_id,
        outcome: msg.outcome,
        receipt_digest: msg.receipt_digest,
        payout: msg.payout,
        fee,
        token: msg.token,
        log_size: msg.log_size,
        log_root: msg.log_root,
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
