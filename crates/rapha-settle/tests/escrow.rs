//! The escrow contract on anvil: exact split, refunds, exactly-once, forged settlements,
//! deadline refunds and log anchoring.

use alloy::primitives::{Address, B256, U256};
use rapha_core::{FeeSplit, JobId, Outcome, Usdc};
use rapha_settle::bindings::RaphaEscrow::RaphaEscrowErrors as E;
use rapha_settle::JobStatus;

use crate::common::{refusal, sign_with, Fx};

fn u(v: u64) -> U256 {
    U256::from(v)
}

#[tokio::test]
async fn completed_job_pays_70_percent_rounded_down_and_treasury_the_rest_to_the_base_unit() {
    let Some(fx) = Fx::start().await else { return };
    let mut log_size = 0;
    for fee in [1u64, 7, 999_999_999] {
        let job = JobId::random();
        let (c0, p0, t0) = (
            fx.balance(fx.company_addr).await,
            fx.balance(fx.payout).await,
            fx.balance(fx.treasury).await,
        );
        let deadline = fx.now().await + 3600;
        let (_, dep) = fx
            .company
            .approve_and_deposit(&job, fx.hospital, Usdc::from_base_units(fee), deadline)
            .await
            .unwrap();
        assert_eq!(
            fx.balance(fx.escrow()).await,
            u(fee),
            "escrow holds exactly the fee"
        );
        log_size += 1;
        let signed = fx.sign(fx.fields(&job, Outcome::Completed, fee, log_size));
        let settled = fx.anyone.settle(&signed).await.unwrap();
        eprintln!(
            "gas fee={fee}: deposit {} settle {}",
            dep.gas_used, settled.gas_used
        );
        assert!(
            settled.gas_used < 120_000,
            "settle used {} gas",
            settled.gas_used
        );

        let split = FeeSplit::of(Usdc::from_base_units(fee));
        let expected_hospital = fee * 70 / 100;
        assert_eq!(split.hospital.base_units(), expected_hospital);
        assert_eq!(fx.balance(fx.payout).await - p0, u(expected_hospital));
        assert_eq!(
            fx.balance(fx.treasury).await - t0,
            u(fee - expected_hospital)
        );
        assert_eq!(c0 - fx.balance(fx.company_addr).await, u(fee));
        assert_eq!(
            fx.balance(fx.escrow()).await,
            U256::ZERO,
            "nothing left in escrow"
        );
        assert_eq!(fx.company.job(&job).await.unwrap().status, JobStatus::Paid);
    }
}

#[tokio::test]
async fn refused_and_failed_outcomes_refund_the_depositor_in_full_and_pay_the_hospital_nothing() {
    let Some(fx) = Fx::start().await else { return };
    for (i, outcome) in [Outcome::Refused, Outcome::Failed].into_iter().enumerate() {
        let job = JobId::random();
        let fee = 120_000_007;
        let (c0, p0, t0) = (
            fx.balance(fx.company_addr).await,
            fx.balance(fx.payout).await,
            fx.balance(fx.treasury).await,
        );
        fx.deposit(&job, fee).await;
        assert_eq!(c0 - fx.balance(fx.company_addr).await, u(fee));
        fx.anyone
            .settle(&fx.sign(fx.fields(&job, outcome, fee, i as u64 + 1)))
            .await
            .unwrap();
        assert_eq!(
            fx.balance(fx.company_addr).await,
            c0,
            "depositor refunded to the base unit"
        );
        assert_eq!(fx.balance(fx.payout).await, p0, "hospital paid nothing");
        assert_eq!(fx.balance(fx.treasury).await, t0, "treasury paid nothing");
        assert_eq!(
            fx.company.job(&job).await.unwrap().status,
            JobStatus::Refunded
        );
    }
}

#[tokio::test]
async fn a_second_settlement_of_the_same_job_is_refused_and_moves_no_money() {
    let Some(fx) = Fx::start().await else { return };
    let job = JobId::random();
    fx.deposit(&job, 1_000_000).await;
    let signed = fx.sign(fx.fields(&job, Outcome::Completed, 1_000_000, 1));
    fx.anyone.settle(&signed).await.unwrap();
    let before = (
        fx.balance(fx.payout).await,
        fx.balance(fx.treasury).await,
        fx.balance(fx.company_addr).await,
    );

    let again = refusal(fx.anyone.settle(&signed).await.unwrap_err());
    assert!(
        matches!(again, E::JobNotOpen(ref e) if e.jobId == B256::from(job.to_bytes32()) && e.status == 2),
        "{again:?}"
    );
    // A refund-outcome settlement for the paid job is refused the same way.
    let flip = fx.sign(fx.fields(&job, Outcome::Failed, 1_000_000, 1));
    assert!(matches!(
        refusal(fx.anyone.settle(&flip).await.unwrap_err()),
        E::JobNotOpen(_)
    ));
    let after = (
        fx.balance(fx.payout).await,
        fx.balance(fx.treasury).await,
        fx.balance(fx.company_addr).await,
    );
    assert_eq!(before, after);
}

#[tokio::test]
async fn forged_settlements_are_refused_and_the_honest_one_then_settles() {
    let Some(fx) = Fx::start().await else { return };
    let (job, other_job) = (JobId::random(), JobId::random());
    let fee = 50_000_000;
    fx.deposit(&job, fee).await;
    fx.deposit(&other_job, fee).await;
    let honest = fx.fields(&job, Outcome::Completed, fee, 1);
    let node = fx.node.address();

    // Signed by a key the hospital never registered.
    let stranger = fx.key(7);
    let forged = sign_with(&stranger, honest.clone(), fx.chain_id, fx.escrow());
    match refusal(fx.anyone.settle(&forged).await.unwrap_err()) {
        E::UnauthorizedSigner(e) => {
            assert_eq!(e.recovered, stranger.address());
            assert_eq!(e.registered, node);
        }
        other => panic!("{other:?}"),
    }

    // The node's signature for another job, replayed on this one.
    let mut replay = fx.sign(fx.fields(&other_job, Outcome::Completed, fee, 1));
    replay.fields.job_id = job;
    assert_unauthorized(&fx, &replay, node).await;

    // The node's signature, with another receipt digest put under it.
    let mut edited = fx.sign(honest.clone());
    edited.fields.receipt_digest = B256::repeat_byte(0xee);
    assert_unauthorized(&fx, &edited, node).await;

    // An outcome flipped from refused to completed after signing.
    let mut flipped = fx.sign(fx.fields(&job, Outcome::Refused, fee, 1));
    flipped.fields.outcome = Outcome::Completed;
    assert_unauthorized(&fx, &flipped, node).await;

    // Signed for another chain (Amoy's domain).
    let other_chain = sign_with(&fx.node, honest.clone(), 80002, fx.escrow());
    assert_unauthorized(&fx, &other_chain, node).await;

    // Signed for another escrow contract.
    let other_escrow = sign_with(
        &fx.node,
        honest.clone(),
        fx.chain_id,
        Address::repeat_byte(0x42),
    );
    assert_unauthorized(&fx, &other_escrow, node).await;

    // Payout redirected to the submitter.
    let mut redirected = fx.sign(honest.clone());
    redirected.fields.payout = fx.key(7).address();
    match refusal(fx.anyone.settle(&redirected).await.unwrap_err()) {
        E::PayoutMismatch(e) => {
            assert_eq!((e.signed, e.registered), (fx.key(7).address(), fx.payout))
        }
        other => panic!("{other:?}"),
    }
    // Fee other than the deposit, even correctly signed.
    let cheap = fx.sign(fx.fields(&job, Outcome::Completed, fee - 1, 1));
    match refusal(fx.anyone.settle(&cheap).await.unwrap_err()) {
        E::FeeMismatch(e) => assert_eq!((e.signed, e.deposited), (u(fee - 1), u(fee))),
        other => panic!("{other:?}"),
    }
    // Another token, even correctly signed.
    let mut fields = honest.clone();
    fields.token = Address::repeat_byte(0x77);
    let wrong_token = fx.sign(fields);
    assert!(
        matches!(refusal(fx.anyone.settle(&wrong_token).await.unwrap_err()), E::WrongToken(ref e) if e.token == Address::repeat_byte(0x77))
    );
    // A truncated signature.
    let mut short = fx.sign(honest.clone());
    short.signature = short.signature[..64].to_vec().into();
    assert!(matches!(
        refusal(fx.anyone.settle(&short).await.unwrap_err()),
        E::BadSignature(_)
    ));

    assert_eq!(
        fx.balance(fx.payout).await,
        U256::ZERO,
        "no forged settlement paid anything"
    );
    assert_eq!(
        fx.company.job(&job).await.unwrap().status,
        JobStatus::Deposited
    );
    fx.anyone.settle(&fx.sign(honest)).await.unwrap();
    assert_eq!(fx.balance(fx.payout).await, u(fee * 70 / 100));
}

async fn assert_unauthorized(fx: &Fx, s: &rapha_settle::SignedSettlement, node: Address) {
    match refusal(fx.anyone.settle(s).await.unwrap_err()) {
        E::UnauthorizedSigner(e) => {
            assert_ne!(
                e.recovered, node,
                "recovered the node key from an edited settlement"
            );
            assert_eq!(e.registered, node);
        }
        other => panic!("expected UnauthorizedSigner, got {other:?}"),
    }
}

#[tokio::test]
async fn expired_deposit_is_refundable_only_after_its_deadline() {
    let Some(fx) = Fx::start().await else { return };
    let job = JobId::random();
    let fee = 7_000_001;
    let c0 = fx.balance(fx.company_addr).await;
    let deadline = fx.now().await + 600;
    fx.company
        .approve_and_deposit(&job, fx.hospital, Usdc::from_base_units(fee), deadline)
        .await
        .unwrap();

    match refusal(fx.anyone.refund_expired(&job).await.unwrap_err()) {
        E::DeadlineNotReached(e) => assert_eq!(e.deadline, deadline),
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.balance(fx.escrow()).await, u(fee));

    fx.warp(601).await;
    fx.anyone.refund_expired(&job).await.unwrap();
    assert_eq!(fx.balance(fx.company_addr).await, c0, "refunded in full");
    assert_eq!(
        fx.company.job(&job).await.unwrap().status,
        JobStatus::Refunded
    );
    // Neither a second refund nor a late settlement moves money again.
    assert!(matches!(
        refusal(fx.anyone.refund_expired(&job).await.unwrap_err()),
        E::JobNotOpen(_)
    ));
    let late = fx.sign(fx.fields(&job, Outcome::Completed, fee, 1));
    assert!(matches!(
        refusal(fx.anyone.settle(&late).await.unwrap_err()),
        E::JobNotOpen(_)
    ));
    assert_eq!(fx.balance(fx.payout).await, U256::ZERO);
}

#[tokio::test]
async fn a_log_anchor_that_would_rewrite_history_is_refused() {
    let Some(fx) = Fx::start().await else { return };
    let jobs: Vec<JobId> = (0..3).map(|_| JobId::random()).collect();
    for j in &jobs {
        fx.deposit(j, 10).await;
    }
    fx.anyone
        .settle(&fx.sign(fx.fields(&jobs[0], Outcome::Completed, 10, 5)))
        .await
        .unwrap();

    match refusal(
        fx.anyone
            .settle(&fx.sign(fx.fields(&jobs[1], Outcome::Completed, 10, 4)))
            .await
            .unwrap_err(),
    ) {
        E::LogRewrite(e) => assert_eq!((e.node, e.anchoredSize, e.size), (fx.node.address(), 5, 4)),
        other => panic!("{other:?}"),
    }
    // Same size, another root: a forked history.
    let mut fork = fx.fields(&jobs[1], Outcome::Completed, 10, 5);
    fork.log_root = B256::repeat_byte(0xfa);
    assert!(matches!(
        refusal(fx.anyone.settle(&fx.sign(fork)).await.unwrap_err()),
        E::LogRewrite(_)
    ));
    // Same size and root (two receipts settled under one tree head) and a grown log are fine.
    fx.anyone
        .settle(&fx.sign(fx.fields(&jobs[1], Outcome::Completed, 10, 5)))
        .await
        .unwrap();
    fx.anyone
        .settle(&fx.sign(fx.fields(&jobs[2], Outcome::Refused, 10, 9)))
        .await
        .unwrap();
}

#[tokio::test]
async fn deposits_for_unregistered_hospitals_or_twice_for_one_job_are_refused() {
    let Some(fx) = Fx::start().await else { return };
    let job = JobId::random();
    let deadline = fx.now().await + 3600;
    let err = fx
        .company
        .approve_and_deposit(
            &job,
            Address::repeat_byte(0x99),
            Usdc::from_base_units(5),
            deadline,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refusal(err), E::HospitalNotRegistered(ref e) if e.hospital == Address::repeat_byte(0x99))
    );
    fx.deposit(&job, 5).await;
    let err = fx
        .company
        .approve_and_deposit(&job, fx.hospital, Usdc::from_base_units(5), deadline)
        .await
        .unwrap_err();
    assert!(matches!(refusal(err), E::JobExists(_)));
    assert_eq!(fx.balance(fx.escrow()).await, u(5));
}
