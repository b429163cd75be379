//! The node runs a job only once its deposit is confirmed with the escrow's own rules: right
//! hospital, exactly the fee, a refund deadline no earlier than chain time + wall time +
//! settlement margin (checked again before the trainer starts), enough blocks.

use alloy::primitives::Address;
use rapha_core::{JobId, Usdc};
use rapha_settle::bindings::RaphaEscrow::RaphaEscrowErrors as E;
use rapha_settle::{
    check_deposit, recheck_deposit, Awaiting, DepositCheck, DepositRequirement, Escrow, SettleError,
};

use crate::common::{refusal, Fx};

/// A trainer wall time of 20 minutes and a 10-minute settlement margin: `Fx::deposit`'s
/// one-hour deadline satisfies it.
fn req(fx: &Fx, fee: u64, confirmations: u64) -> DepositRequirement {
    DepositRequirement {
        depositor: fx.company_addr,
        hospital: fx.hospital,
        fee: Usdc::from_base_units(fee),
        confirmations,
        wall_secs: 1200,
        settle_margin_secs: 600,
    }
}

#[tokio::test]
async fn job_awaits_its_deposit_until_enough_blocks_bury_it() {
    let Some(fx) = Fx::start().await else { return };
    let node_view = Escrow::at(fx.read.clone(), fx.escrow());
    let job = JobId::random();
    let want = req(&fx, 120_000_000, 3);

    assert_eq!(
        check_deposit(&node_view, &job, &want).await.unwrap(),
        DepositCheck::Awaiting(Awaiting::NoDeposit)
    );
    fx.deposit(&job, 120_000_000).await;
    match check_deposit(&node_view, &job, &want).await.unwrap() {
        DepositCheck::Awaiting(Awaiting::Confirmations { have, need: 3 }) => {
            assert!(have < 3, "{have}")
        }
        DepositCheck::Confirmed(c) => panic!("confirmed too early at {} blocks", c.confirmations),
        other => panic!("{other:?}"),
    }
    let confirmed = loop {
        match check_deposit(&node_view, &job, &want).await.unwrap() {
            DepositCheck::Confirmed(c) => break c,
            DepositCheck::Awaiting(Awaiting::Confirmations { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(confirmed.confirmations >= 3);
    assert_eq!(confirmed.amount, Usdc::from_base_units(120_000_000));
    assert_eq!(confirmed.depositor, fx.company_addr);
}

#[tokio::test]
async fn deposit_for_another_hospital_or_expiring_too_soon_is_refused() {
    let Some(fx) = Fx::start().await else { return };
    let node_view = Escrow::at(fx.read.clone(), fx.escrow());
    let job = JobId::random();
    fx.deposit(&job, 1_000_000).await;

    let mut other = req(&fx, 1_000_000, 1);
    other.hospital = Address::repeat_byte(0x31);
    let err = check_deposit(&node_view, &job, &other).await.unwrap_err();
    assert!(
        matches!(err, SettleError::DepositWrongHospital { actual, .. } if actual == fx.hospital),
        "{err}"
    );

    // The deposit's deadline is an hour ahead; a two-hour trainer cannot run and settle.
    let deadline = fx
        .company
        .job(fx.company_addr, &job)
        .await
        .unwrap()
        .deadline;
    let mut long = req(&fx, 1_000_000, 1);
    long.wall_secs = 7200;
    let err = check_deposit(&node_view, &job, &long).await.unwrap_err();
    match err {
        SettleError::DepositDeadlineTooSoon {
            deadline: d,
            needed,
            wall: 7200,
            margin: 600,
            ..
        } => {
            assert_eq!(d, deadline);
            assert!(needed >= deadline - 3600 + 7800, "{needed}");
        }
        other => panic!("{other}"),
    }

    // The honest requirement passes.
    assert!(matches!(
        check_deposit(&node_view, &job, &req(&fx, 1_000_000, 1))
            .await
            .unwrap(),
        DepositCheck::Confirmed(_)
    ));
}

/// The attack: deposit one base unit more (or less) than the fee. The escrow settles only
/// `fee == amount`, so every settlement of this job reverts; the depositor waits for the
/// deadline, takes the whole deposit back with `refundExpired`, and keeps whatever the node
/// released. The node refuses such a deposit before the run; the depositor's only way back to
/// its money is the ordinary expiry.
#[tokio::test]
async fn deposit_of_fee_plus_one_is_refused_before_the_run() {
    let Some(fx) = Fx::start().await else { return };
    let node_view = Escrow::at(fx.read.clone(), fx.escrow());
    let fee = 120_000_000;
    let mut jobs = vec![];
    for deposited in [fee + 1, fee - 1] {
        let job = JobId::random();
        jobs.push(job);
        fx.deposit(&job, deposited).await;
        let err = check_deposit(&node_view, &job, &req(&fx, fee, 1))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SettleError::DepositAmountMismatch { deposited: d, fee: f, .. } if d == deposited && f == fee
            ),
            "{err}"
        );
        // What the node would have signed after running the job can never land.
        let signed = fx.sign(fx.fields(&job, rapha_core::Outcome::Completed, fee, 1));
        assert!(matches!(
            refusal(fx.anyone.settle(&signed).await.unwrap_err()),
            E::FeeMismatch(_)
        ));
    }
    // Recoverable through expiry, in full.
    fx.warp(3601).await;
    for job in &jobs {
        fx.anyone
            .refund_expired(fx.company_addr, job)
            .await
            .unwrap();
    }
    assert_eq!(
        fx.owed(fx.company_addr).await,
        alloy::primitives::U256::from(2 * fee)
    );
}

/// The deadline rule holds when the deposit is confirmed but time passes before the trainer
/// would start (attestation, the final gate, a busy node): the check right before the start
/// refuses it.
#[tokio::test]
async fn recheck_before_start_refuses_a_deadline_that_would_pass_during_the_run() {
    let Some(fx) = Fx::start().await else { return };
    let node_view = Escrow::at(fx.read.clone(), fx.escrow());
    let job = JobId::random();
    let want = req(&fx, 1_000_000, 1);
    let deadline = fx.now().await + want.wall_secs + want.settle_margin_secs + 30;
    fx.company
        .approve_and_deposit(
            &job,
            fx.hospital,
            Usdc::from_base_units(1_000_000),
            deadline,
        )
        .await
        .unwrap();
    assert!(matches!(
        check_deposit(&node_view, &job, &want).await.unwrap(),
        DepositCheck::Confirmed(_)
    ));
    assert_eq!(
        recheck_deposit(&node_view, &job, &want)
            .await
            .unwrap()
            .deadline,
        deadline
    );
    fx.warp(60).await;
    let err = recheck_deposit(&node_view, &job, &want).await.unwrap_err();
    assert!(
        matches!(err, SettleError::DepositDeadlineTooSoon { deadline: d, .. } if d == deadline),
        "{err}"
    );
    // A job without any deposit is refused at start too (never reached in the pipeline).
    let err = recheck_deposit(&node_view, &JobId::random(), &want)
        .await
        .unwrap_err();
    assert!(matches!(err, SettleError::NoDeposit(_)), "{err}");
}
