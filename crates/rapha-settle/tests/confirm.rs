//! The node runs a job only once its deposit is confirmed: right hospital, enough money,
//! enough time, enough blocks.

use alloy::primitives::Address;
use rapha_core::{JobId, Usdc};
use rapha_settle::{
    check_deposit, Awaiting, DepositCheck, DepositRequirement, Escrow, SettleError,
};

use crate::common::Fx;

fn req(fx: &Fx, fee: u64, confirmations: u64, now: u64) -> DepositRequirement {
    DepositRequirement {
        hospital: fx.hospital,
        fee: Usdc::from_base_units(fee),
        confirmations,
        not_refundable_before: now + 1800,
    }
}

#[tokio::test]
async fn job_awaits_its_deposit_until_enough_blocks_bury_it() {
    let Some(fx) = Fx::start().await else { return };
    let node_view = Escrow::at(fx.read.clone(), fx.escrow());
    let job = JobId::random();
    let now = fx.now().await;
    let want = req(&fx, 120_000_000, 3, now);

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
async fn deposit_for_another_hospital_too_small_or_expiring_too_soon_is_refused() {
    let Some(fx) = Fx::start().await else { return };
    let node_view = Escrow::at(fx.read.clone(), fx.escrow());
    let job = JobId::random();
    fx.deposit(&job, 119_999_999).await;
    let now = fx.now().await;

    let err = check_deposit(&node_view, &job, &req(&fx, 120_000_000, 1, now))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SettleError::DepositTooSmall {
                deposited: 119_999_999,
                fee: 120_000_000,
                ..
            }
        ),
        "{err}"
    );

    let mut other = req(&fx, 1, 1, now);
    other.hospital = Address::repeat_byte(0x31);
    let err = check_deposit(&node_view, &job, &other).await.unwrap_err();
    assert!(
        matches!(err, SettleError::DepositWrongHospital { actual, .. } if actual == fx.hospital),
        "{err}"
    );

    let mut late = req(&fx, 1, 1, now);
    late.not_refundable_before = now + 7200; // deposit's deadline is now + 3600
    let err = check_deposit(&node_view, &job, &late).await.unwrap_err();
    assert!(
        matches!(err, SettleError::DepositDeadlineTooSoon { .. }),
        "{err}"
    );

    // The honest requirement passes.
    assert!(matches!(
        check_deposit(&node_view, &job, &req(&fx, 119_999_999, 1, now))
            .await
            .unwrap(),
        DepositCheck::Confirmed(_)
    ));
}
