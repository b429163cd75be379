//! The escrow contract (v2) on anvil: exact split credited and withdrawn, refunds, the charged
//! outcomes, exactly-once, forged settlements, deadline refunds, log anchoring, pull payments
//! against frozen (blacklisted) addresses, and batch deposits.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::sol_types::SolStruct;
use rapha_core::{FeeSplit, JobId, Outcome, Usdc};
use rapha_settle::bindings::RaphaEscrow;
use rapha_settle::bindings::RaphaEscrow::RaphaEscrowErrors as E;
use rapha_settle::{BatchDeposit, JobStatus};

use crate::common::{refusal, sign_with, Fx};

fn u(v: u64) -> U256 {
    U256::from(v)
}

#[tokio::test]
async fn completed_job_credits_70_percent_rounded_down_and_treasury_the_rest_to_the_base_unit() {
    let Some(fx) = Fx::start().await else { return };
    let payout = fx.as_account(6);
    let treasury = fx.as_account(1);
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
        // Settlement credits; no token moves until each party withdraws.
        assert_eq!(fx.owed(fx.payout).await, u(expected_hospital));
        assert_eq!(fx.owed(fx.treasury).await, u(fee - expected_hospital));
        assert_eq!(fx.balance(fx.escrow()).await, u(fee));
        assert_eq!(
            fx.company.job(fx.company_addr, &job).await.unwrap().status,
            JobStatus::Paid
        );
        if expected_hospital > 0 {
            let w = payout.withdraw().await.unwrap();
            eprintln!("gas withdraw {}", w.gas_used);
        }
        treasury.withdraw().await.unwrap();
        assert_eq!(fx.balance(fx.payout).await - p0, u(expected_hospital));
        assert_eq!(
            fx.balance(fx.treasury).await - t0,
            u(fee - expected_hospital)
        );
        assert_eq!(c0 - fx.balance(fx.company_addr).await, u(fee));
        assert_eq!(
            (fx.owed(fx.payout).await, fx.owed(fx.treasury).await),
            (U256::ZERO, U256::ZERO)
        );
        assert_eq!(
            fx.balance(fx.escrow()).await,
            U256::ZERO,
            "nothing left in escrow"
        );
    }
}

#[tokio::test]
async fn violated_and_trainer_failed_outcomes_are_charged_like_a_completed_job() {
    let Some(fx) = Fx::start().await else { return };
    for (i, outcome) in [Outcome::Violated, Outcome::TrainerFailed]
        .into_iter()
        .enumerate()
    {
        let job = JobId::random();
        let fee = 120_000_007;
        let (p0, t0, c0) = (
            fx.owed(fx.payout).await,
            fx.owed(fx.treasury).await,
            fx.owed(fx.company_addr).await,
        );
        fx.deposit(&job, fee).await;
        let settled = fx
            .anyone
            .settle(&fx.sign(fx.fields(&job, outcome, fee, i as u64 + 1)))
            .await
            .unwrap();
        // The second settles onto credits not yet withdrawn (the steady state of an account
        // that withdraws now and then).
        eprintln!(
            "gas settle {outcome} (credits {}) {}",
            if i == 0 { "new" } else { "existing" },
            settled.gas_used
        );
        assert_eq!(
            fx.owed(fx.payout).await - p0,
            u(fee * 70 / 100),
            "{outcome}"
        );
        assert_eq!(
            fx.owed(fx.treasury).await - t0,
            u(fee - fee * 70 / 100),
            "{outcome}"
        );
        assert_eq!(fx.owed(fx.company_addr).await, c0, "{outcome}: no refund");
        assert_eq!(
            fx.company.job(fx.company_addr, &job).await.unwrap().status,
            JobStatus::Paid
        );
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
            fx.owed(fx.payout).await,
            fx.owed(fx.treasury).await,
        );
        fx.deposit(&job, fee).await;
        assert_eq!(c0 - fx.balance(fx.company_addr).await, u(fee));
        fx.anyone
            .settle(&fx.sign(fx.fields(&job, outcome, fee, i as u64 + 1)))
            .await
            .unwrap();
        assert_eq!(fx.owed(fx.company_addr).await, u(fee), "refund credited");
        assert_eq!(fx.owed(fx.payout).await, p0, "hospital paid nothing");
        assert_eq!(fx.owed(fx.treasury).await, t0, "treasury paid nothing");
        assert_eq!(
            fx.company.job(fx.company_addr, &job).await.unwrap().status,
            JobStatus::Refunded
        );
        fx.company.withdraw().await.unwrap();
        assert_eq!(
            fx.balance(fx.company_addr).await,
            c0,
            "depositor refunded to the base unit"
        );
        assert_eq!(fx.owed(fx.company_addr).await, U256::ZERO);
    }
    // Nothing is owed any more: a second withdrawal is refused and moves nothing.
    match refusal(fx.company.withdraw().await.unwrap_err()) {
        E::NothingOwed(e) => assert_eq!(e.account, fx.company_addr),
        other => panic!("{other:?}"),
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
        fx.owed(fx.payout).await,
        fx.owed(fx.treasury).await,
        fx.owed(fx.company_addr).await,
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
        fx.owed(fx.payout).await,
        fx.owed(fx.treasury).await,
        fx.owed(fx.company_addr).await,
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
        fx.owed(fx.payout).await,
        U256::ZERO,
        "no forged settlement paid anything"
    );
    assert_eq!(
        fx.company.job(fx.company_addr, &job).await.unwrap().status,
        JobStatus::Deposited
    );
    fx.anyone.settle(&fx.sign(honest)).await.unwrap();
    assert_eq!(fx.owed(fx.payout).await, u(fee * 70 / 100));
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

    match refusal(
        fx.anyone
            .refund_expired(fx.company_addr, &job)
            .await
            .unwrap_err(),
    ) {
        E::DeadlineNotReached(e) => assert_eq!(e.deadline, deadline),
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.balance(fx.escrow()).await, u(fee));

    fx.warp(601).await;
    let refunded = fx
        .anyone
        .refund_expired(fx.company_addr, &job)
        .await
        .unwrap();
    eprintln!("gas refundExpired {}", refunded.gas_used);
    assert_eq!(fx.owed(fx.company_addr).await, u(fee), "credited in full");
    assert_eq!(
        fx.company.job(fx.company_addr, &job).await.unwrap().status,
        JobStatus::Refunded
    );
    // Neither a second refund nor a late settlement moves money again.
    assert!(matches!(
        refusal(
            fx.anyone
                .refund_expired(fx.company_addr, &job)
                .await
                .unwrap_err()
        ),
        E::JobNotOpen(_)
    ));
    let late = fx.sign(fx.fields(&job, Outcome::Completed, fee, 1));
    assert!(matches!(
        refusal(fx.anyone.settle(&late).await.unwrap_err()),
        E::JobNotOpen(_)
    ));
    assert_eq!(fx.owed(fx.payout).await, U256::ZERO);
    fx.company.withdraw().await.unwrap();
    assert_eq!(fx.balance(fx.company_addr).await, c0, "refunded in full");
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

/// The attack: one party's address is (or becomes) frozen by the token's issuer. A settlement
/// that pushed USDC to it reverted as a whole, so nobody was paid and the depositor took the
/// fee back at expiry. Now each frozen address (payout, treasury, depositor in turn) only
/// freezes its own credit: the settlement lands and every other party withdraws.
#[tokio::test]
async fn a_blacklisted_payout_treasury_or_depositor_blocks_only_its_own_withdrawal() {
    let Some(fx) = Fx::start().await else { return };
    let fee = 1_000_000;
    let payout = fx.as_account(6);
    let treasury = fx.as_account(1);

    // 1. The payout is frozen: the completed job still settles; the treasury withdraws.
    let job = JobId::random();
    fx.deposit(&job, fee).await;
    fx.blacklist(fx.payout).await;
    let t0 = fx.balance(fx.treasury).await;
    fx.anyone
        .settle(&fx.sign(fx.fields(&job, Outcome::Completed, fee, 1)))
        .await
        .unwrap();
    assert_eq!(
        fx.company.job(fx.company_addr, &job).await.unwrap().status,
        JobStatus::Paid
    );
    treasury.withdraw().await.unwrap();
    assert_eq!(fx.balance(fx.treasury).await - t0, u(fee - fee * 70 / 100));
    // The frozen payout's own withdrawal is the only thing that fails, and it keeps its credit.
    let err = payout.withdraw().await.unwrap_err();
    assert!(err.to_string().contains("execution reverted"), "{err}");
    assert_eq!(fx.owed(fx.payout).await, u(fee * 70 / 100));

    // 2. The treasury is frozen: the next job settles; the payout (unfrozen again) withdraws.
    fx.unblacklist(fx.payout).await;
    let job = JobId::random();
    fx.deposit(&job, fee).await;
    fx.blacklist(fx.treasury).await;
    let p0 = fx.balance(fx.payout).await;
    fx.anyone
        .settle(&fx.sign(fx.fields(&job, Outcome::Violated, fee, 2)))
        .await
        .unwrap();
    payout.withdraw().await.unwrap();
    assert_eq!(fx.balance(fx.payout).await - p0, u(2 * (fee * 70 / 100)));
    assert!(treasury.withdraw().await.is_err());
    assert_eq!(fx.owed(fx.treasury).await, u(fee - fee * 70 / 100));
    fx.unblacklist(fx.treasury).await;

    // 3. The depositor is frozen after depositing: a refund outcome still settles; another
    //    job's settlement and the hospital's withdrawal go through.
    let (refunded, paid) = (JobId::random(), JobId::random());
    fx.deposit(&refunded, fee).await;
    fx.deposit(&paid, fee).await;
    fx.blacklist(fx.company_addr).await;
    fx.anyone
        .settle(&fx.sign(fx.fields(&refunded, Outcome::Refused, fee, 3)))
        .await
        .unwrap();
    fx.anyone
        .settle(&fx.sign(fx.fields(&paid, Outcome::Completed, fee, 4)))
        .await
        .unwrap();
    assert_eq!(fx.owed(fx.company_addr).await, u(fee));
    assert!(fx.company.withdraw().await.is_err());
    let p0 = fx.balance(fx.payout).await;
    payout.withdraw().await.unwrap();
    assert_eq!(fx.balance(fx.payout).await - p0, u(fee * 70 / 100));
    treasury.withdraw().await.unwrap();
    assert_eq!(
        fx.balance(fx.escrow()).await,
        u(fee),
        "the escrow still holds exactly the frozen depositor's refund"
    );
}

/// One `transferFrom` funds several jobs (the rounds of a federated run, each round at each
/// site its own job id), each with its own hospital, amount and deadline; each then settles
/// on its own. A batch with a repeated or existing job id deposits nothing at all.
#[tokio::test]
async fn batch_deposit_funds_each_job_with_one_transfer_all_or_nothing() {
    let Some(fx) = Fx::start().await else { return };
    // A second hospital (dev account 8 registers itself with the same node key, payout 9).
    let second = fx.as_account(8);
    second
        .register_hospital(fx.node.address(), fx.key(9).address())
        .await
        .unwrap();
    let now = fx.now().await;
    let jobs: Vec<BatchDeposit> = (0..4u64)
        .map(|i| BatchDeposit {
            job: JobId::random(),
            hospital: if i % 2 == 0 {
                fx.hospital
            } else {
                fx.key(8).address()
            },
            fee: Usdc::from_base_units(1_000_000 + i),
            deadline: now + 3600 * (i + 1),
        })
        .collect();
    let total: u64 = jobs.iter().map(|j| j.fee.base_units()).sum();
    let c0 = fx.balance(fx.company_addr).await;
    let (_, mined) = fx.company.approve_and_deposit_batch(&jobs).await.unwrap();
    let single = {
        let j = JobId::random();
        let deadline = fx.now().await + 3600;
        let (_, d) = fx
            .company
            .approve_and_deposit(&j, fx.hospital, Usdc::from_base_units(1_000_000), deadline)
            .await
            .unwrap();
        d.gas_used
    };
    eprintln!(
        "gas depositBatch of {}: {} ({} per job; single deposit {single})",
        jobs.len(),
        mined.gas_used,
        mined.gas_used / jobs.len() as u64
    );
    assert_eq!(c0 - fx.balance(fx.company_addr).await, u(total + 1_000_000));
    // One Transfer event into the escrow for the whole batch.
    let receipt = fx
        .read
        .get_transaction_receipt(mined.tx)
        .await
        .unwrap()
        .unwrap();
    let transfers = receipt
        .inner
        .logs()
        .iter()
        .filter(|l| l.address() == fx.usdc)
        .count();
    assert_eq!(transfers, 1, "one token transfer for the batch");
    for j in &jobs {
        let onchain = fx.company.job(fx.company_addr, &j.job).await.unwrap();
        assert_eq!(
            (
                onchain.status,
                onchain.hospital,
                onchain.amount,
                onchain.deadline,
                onchain.depositor
            ),
            (
                JobStatus::Deposited,
                j.hospital,
                j.fee,
                j.deadline,
                fx.company_addr
            )
        );
    }
    // Each settles on its own, at its own hospital.
    for (i, j) in jobs.iter().enumerate() {
        let mut f = fx.fields(
            &j.job,
            Outcome::Completed,
            j.fee.base_units(),
            10 + i as u64,
        );
        if j.hospital != fx.hospital {
            f.payout = fx.key(9).address();
        }
        fx.anyone.settle(&fx.sign(f)).await.unwrap();
    }
    assert_eq!(
        fx.owed(fx.key(9).address()).await,
        u((1_000_001u64 * 70 / 100) + (1_000_003u64 * 70 / 100))
    );

    // All or nothing: a batch that repeats a job id, or names one already deposited.
    let fresh = JobId::random();
    let now = fx.now().await;
    let item = |job| BatchDeposit {
        job,
        hospital: fx.hospital,
        fee: Usdc::from_base_units(5),
        deadline: now + 3600,
    };
    let escrow_before = fx.balance(fx.escrow()).await;
    for bad in [
        vec![item(fresh), item(fresh)],
        vec![item(fresh), item(jobs[0].job)],
    ] {
        let err = fx
            .company
            .approve_and_deposit_batch(&bad)
            .await
            .unwrap_err();
        assert!(matches!(refusal(err), E::JobExists(_)));
    }
    assert_eq!(
        fx.company
            .job(fx.company_addr, &fresh)
            .await
            .unwrap()
            .status,
        JobStatus::None
    );
    assert_eq!(fx.balance(fx.escrow()).await, escrow_before);
    let err = fx.company.approve_and_deposit_batch(&[]).await.unwrap_err();
    assert!(matches!(refusal(err), E::EmptyBatch(_)));
}

/// Outcome codes outside 1..5, correctly signed by the node key, are refused.
#[tokio::test]
async fn an_outcome_code_outside_one_to_five_is_refused() {
    let Some(fx) = Fx::start().await else { return };
    let job = JobId::random();
    fx.deposit(&job, 10).await;
    for code in [0u8, 6, 255] {
        let mut s = fx.fields(&job, Outcome::Completed, 10, 1).to_sol();
        s.outcome = code;
        let digest =
            s.eip712_signing_hash(&rapha_settle::settlement::domain(fx.chain_id, fx.escrow()));
        let sig = fx.node.signer().sign_hash_sync(&digest).unwrap();
        let err = RaphaEscrow::new(fx.escrow(), fx.anyone.provider().clone())
            .settle(s, sig.as_bytes().to_vec().into())
            .call()
            .await
            .unwrap_err();
        let refusal = err
            .as_decoded_interface_error::<E>()
            .unwrap_or_else(|| panic!("{err}"));
        assert!(
            matches!(refusal, E::BadOutcome(ref e) if e.outcome == code),
            "{refusal:?}"
        );
    }
    assert_eq!(
        fx.company.job(fx.company_addr, &job).await.unwrap().status,
        JobStatus::Deposited
    );
}

/// The griefing attack of the publisher review (finding 2) at the contract: an attacker sees the
/// company's `deposit(J, H, F, d)` in the mempool and front-runs it with
/// `deposit(J, H, F + 1, now + 5)`. The escrow keeps each account's deposit for a job id apart:
/// the company's deposit still goes through, its settlement (naming the company) pays from the
/// company's deposit only, the attacker's comes back to the attacker alone, and a settlement
/// naming the attacker's deposit under the company's terms is refused.
#[tokio::test]
async fn a_front_run_deposit_for_the_same_job_id_is_the_attackers_own_and_blocks_nothing() {
    let Some(fx) = Fx::start().await else { return };
    let attacker_key = fx.key(8);
    let attacker = fx.as_account(8);
    rapha_settle::Escrow::mint_mock_usdc(
        rapha_settle::wallet_provider(&fx.url, &fx.key(0)).unwrap(),
        fx.usdc,
        attacker_key.address(),
        Usdc::from_base_units(10_000_000),
    )
    .await
    .unwrap();
    let job = JobId::random();
    let fee = 5_000_000;
    let now = fx.now().await;
    let (_, front) = attacker
        .approve_and_deposit(&job, fx.hospital, Usdc::from_base_units(fee + 1), now + 5)
        .await
        .unwrap();
    eprintln!("gas deposit (front-run, same job id) {}", front.gas_used);

    // The victim's deposit is not blocked.
    fx.deposit(&job, fee).await;
    let mine = fx.company.job(fx.company_addr, &job).await.unwrap();
    let theirs = fx.company.job(attacker_key.address(), &job).await.unwrap();
    assert_eq!(
        (mine.status, mine.depositor, mine.amount.base_units()),
        (JobStatus::Deposited, fx.company_addr, fee)
    );
    assert_eq!(
        (theirs.status, theirs.depositor, theirs.amount.base_units()),
        (JobStatus::Deposited, attacker_key.address(), fee + 1)
    );
    // A second deposit by the same account for the same id is still refused.
    match refusal(
        attacker
            .approve_and_deposit(&job, fx.hospital, Usdc::from_base_units(1), now + 3600)
            .await
            .unwrap_err(),
    ) {
        E::JobExists(e) => assert_eq!(
            (e.depositor, e.jobId),
            (attacker_key.address(), B256::from(job.to_bytes32()))
        ),
        other => panic!("{other:?}"),
    }

    // The node's settlement of the company's job, pointed at the attacker's deposit: refused.
    let mut wrong = fx.fields(&job, Outcome::Completed, fee, 1);
    wrong.depositor = attacker_key.address();
    assert!(matches!(
        refusal(fx.anyone.settle(&fx.sign(wrong)).await.unwrap_err()),
        E::FeeMismatch(_)
    ));
    // The company's own settlement pays from the company's deposit.
    let p0 = fx.owed(fx.payout).await;
    fx.anyone
        .settle(&fx.sign(fx.fields(&job, Outcome::Completed, fee, 1)))
        .await
        .unwrap();
    assert_eq!(fx.owed(fx.payout).await - p0, U256::from(fee * 70 / 100));
    assert_eq!(
        fx.company.job(fx.company_addr, &job).await.unwrap().status,
        JobStatus::Paid
    );
    // The attacker's deposit comes back only to the attacker, by expiry.
    fx.warp(10).await;
    let c0 = fx.owed(fx.company_addr).await;
    fx.anyone
        .refund_expired(attacker_key.address(), &job)
        .await
        .unwrap();
    assert_eq!(fx.owed(attacker_key.address()).await, U256::from(fee + 1));
    assert_eq!(fx.owed(fx.company_addr).await, c0);
}
