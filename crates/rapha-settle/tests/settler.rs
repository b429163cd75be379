//! The node's settlement path on anvil: exactly once across repeats, replacement of a stuck
//! transaction, a SIGKILLed node, a restarted chain, and settlements the escrow refuses.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use rapha_core::{JobId, Outcome};
use rapha_settle::network::connect_http;
use rapha_settle::{Finality, Ledger, LedgerState, Progress, Settler, SettlerConfig};

use crate::common::{sign_with, Fx};

fn cfg() -> SettlerConfig {
    SettlerConfig {
        confirmations: 2,
        poll_interval: Duration::from_millis(200),
        stuck_after: Duration::from_secs(60),
        fee_bump_percent: 25,
    }
}

async fn settler(fx: &Fx, db: &Path) -> Settler {
    Settler::new(
        Ledger::open(db).unwrap(),
        connect_http(&fx.url).unwrap(),
        fx.escrow(),
        &fx.node_wallet,
        cfg(),
    )
    .await
    .unwrap()
}

async fn node_nonce(fx: &Fx) -> u64 {
    fx.read
        .get_transaction_count(fx.node_wallet.address())
        .await
        .unwrap()
}

async fn timeout<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("settlement did not finish within 60 s")
}

#[tokio::test]
async fn node_settles_once_and_settling_again_sends_nothing() {
    let Some(fx) = Fx::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = JobId::random();
    fx.deposit(&job, 999_999_999).await;
    let signed = fx.sign(fx.fields(&job, Outcome::Completed, 999_999_999, 1));
    let mut s = settler(&fx, &dir.path().join("l.db")).await;

    let state = timeout(s.settle(&job, &signed)).await.unwrap();
    let LedgerState::Confirmed {
        tx, confirmations, ..
    } = state
    else {
        panic!("{state:?}")
    };
    assert!(confirmations >= 2);
    assert_eq!(s.ledger().attempts(&job).unwrap().len(), 1);
    assert_eq!(
        s.ledger().attempts(&job).unwrap()[0].tx,
        tx,
        "the recorded hash is the mined one"
    );
    assert_eq!(fx.owed(fx.payout).await, U256::from(699_999_999u64));
    assert_eq!(node_nonce(&fx).await, 1);

    let again = timeout(s.settle(&job, &signed)).await.unwrap();
    assert!(matches!(again, LedgerState::Confirmed { tx: t, .. } if t == tx));
    assert!(s.reconcile().await.unwrap().is_empty(), "nothing left open");
    assert_eq!(node_nonce(&fx).await, 1, "no second transaction");
    assert_eq!(fx.owed(fx.payout).await, U256::from(699_999_999u64));
}

#[tokio::test]
async fn settlement_already_on_chain_from_anyone_is_recorded_without_sending() {
    let Some(fx) = Fx::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = JobId::random();
    fx.deposit(&job, 10_000_000).await;
    let signed = fx.sign(fx.fields(&job, Outcome::Completed, 10_000_000, 1));
    let theirs = fx.anyone.settle(&signed).await.unwrap();

    let mut s = settler(&fx, &dir.path().join("l.db")).await;
    let state = timeout(s.settle(&job, &signed)).await.unwrap();
    assert!(
        matches!(state, LedgerState::Confirmed { tx, .. } if tx == theirs.tx),
        "{state:?}"
    );
    assert_eq!(node_nonce(&fx).await, 0, "the node sent nothing");
    assert_eq!(fx.owed(fx.payout).await, U256::from(7_000_000u64));
}

#[tokio::test]
async fn settlement_the_escrow_refuses_is_marked_failed_with_its_reason_and_nothing_is_sent() {
    let Some(fx) = Fx::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = JobId::random();
    fx.deposit(&job, 10).await;
    let forged = sign_with(
        &fx.key(7),
        fx.fields(&job, Outcome::Completed, 10, 1),
        fx.chain_id,
        fx.escrow(),
    );
    let mut s = settler(&fx, &dir.path().join("l.db")).await;
    let state = timeout(s.settle(&job, &forged)).await.unwrap();
    let LedgerState::Failed { reason } = state else {
        panic!("{state:?}")
    };
    assert!(reason.contains("registered node signer"), "{reason}");
    assert_eq!(node_nonce(&fx).await, 0);
}

#[tokio::test]
async fn stuck_transaction_is_replaced_at_the_same_nonce_with_a_higher_fee() {
    let Some(fx) = Fx::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = JobId::random();
    fx.deposit(&job, 1_000_000).await;
    let signed = fx.sign(fx.fields(&job, Outcome::Completed, 1_000_000, 1));
    let mut s = settler(&fx, &dir.path().join("l.db")).await;
    s.ledger().enqueue(&job, &signed).unwrap();

    // Stop block production so the first transaction stays in the pool: stuck.
    let _: serde_json::Value = fx
        .read
        .raw_request("evm_setIntervalMining".into(), (0,))
        .await
        .unwrap();
    let first = s.prepare(&job).await.unwrap().unwrap();
    s.broadcast(&job).await.unwrap();
    assert!(s.check(&job).await.unwrap(), "in flight");
    let second_hash = s.bump(&job).await.unwrap();
    let attempts = s.ledger().attempts(&job).unwrap();
    assert_eq!(attempts.len(), 2);
    let second = &attempts[1];
    assert_eq!(second.tx, second_hash);
    assert_ne!(second.tx, first.tx);
    assert_eq!(second.nonce, first.nonce, "replacement uses the same nonce");
    assert!(second.max_fee_per_gas > first.max_fee_per_gas);
    assert!(second.max_priority_fee_per_gas > first.max_priority_fee_per_gas);

    let _: serde_json::Value = fx
        .read
        .raw_request("evm_setIntervalMining".into(), (1,))
        .await
        .unwrap();
    let state = timeout(s.settle(&job, &signed)).await.unwrap();
    assert!(
        matches!(state, LedgerState::Confirmed { tx, .. } if tx == second.tx),
        "{state:?}"
    );
    assert!(
        fx.read
            .get_transaction_receipt(first.tx)
            .await
            .unwrap()
            .is_none(),
        "the stuck one never mined"
    );
    assert_eq!(node_nonce(&fx).await, 1);
    assert_eq!(fx.owed(fx.payout).await, U256::from(700_000u64));
}

#[tokio::test]
async fn node_sigkilled_after_broadcast_reconciles_on_restart_and_pays_nothing_twice() {
    let Some(fx) = Fx::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let job = JobId::random();
    fx.deposit(&job, 7).await;
    let signed = fx.sign(fx.fields(&job, Outcome::Completed, 7, 1));
    let file = dir.path().join("settlement.json");
    std::fs::write(&file, serde_json::to_vec(&signed).unwrap()).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_rapha-settle-worker"))
        .args(["settle", "--ledger"])
        .arg(&db)
        .args([
            "--rpc",
            &fx.url,
            "--escrow",
            &fx.escrow().to_string(),
            "--key-env",
            "NODE_WALLET_KEY",
        ])
        .arg("--settlement")
        .arg(&file)
        // Deep enough that the child is still waiting when it is killed.
        .args(["--confirmations", "30"])
        .env("NODE_WALLET_KEY", &fx.keys[5])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let recorded = lines.next().unwrap().unwrap();
    let broadcast = lines.next().unwrap().unwrap();
    child.kill().unwrap(); // SIGKILL: no destructor, no flush, no goodbye
    child.wait().unwrap();
    let tx: B256 = broadcast
        .strip_prefix("broadcast ")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        recorded,
        format!("recorded {tx}"),
        "recorded before broadcast"
    );

    // The ledger the dead node left: submitted, not confirmed.
    let left = Ledger::open(&db).unwrap().get(&job).unwrap().unwrap().state;
    assert!(
        matches!(left, LedgerState::Submitted { tx: t, nonce: 0 } if t == tx),
        "{left:?}"
    );

    // Restart: reconcile from the chain, then finish.
    let mut s = settler(&fx, &db).await;
    s.reconcile().await.unwrap();
    let state = timeout(s.settle(&job, &signed)).await.unwrap();
    assert!(
        matches!(state, LedgerState::Confirmed { tx: t, .. } if t == tx),
        "{state:?}"
    );
    assert_eq!(
        s.ledger().attempts(&job).unwrap().len(),
        1,
        "no new transaction signed"
    );
    assert_eq!(
        node_nonce(&fx).await,
        1,
        "exactly one transaction from the node"
    );
    assert_eq!(fx.owed(fx.payout).await, U256::from(4u64));
    assert_eq!(fx.owed(fx.treasury).await, U256::from(3u64));
}

#[tokio::test]
async fn node_crashed_between_recording_and_broadcast_sends_the_recorded_transaction_on_restart() {
    let Some(fx) = Fx::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let job = JobId::random();
    fx.deposit(&job, 1_000).await;
    let signed = fx.sign(fx.fields(&job, Outcome::Refused, 1_000, 1));
    let recorded = {
        let mut s = settler(&fx, &db).await;
        s.ledger().enqueue(&job, &signed).unwrap();
        s.prepare(&job).await.unwrap().unwrap()
    }; // the process dies here: recorded, never sent
    assert!(fx
        .read
        .get_transaction_by_hash(recorded.tx)
        .await
        .unwrap()
        .is_none());

    let mut s = settler(&fx, &db).await;
    s.reconcile().await.unwrap();
    let state = timeout(s.settle(&job, &signed)).await.unwrap();
    assert!(
        matches!(state, LedgerState::Confirmed { tx, .. } if tx == recorded.tx),
        "{state:?}"
    );
    assert_eq!(node_nonce(&fx).await, 1);
}

#[tokio::test]
async fn anvil_restarted_from_its_state_file_mid_job_keeps_the_deposit_and_settles_once() {
    let Some(mut fx) = Fx::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let job = JobId::random();
    fx.deposit(&job, 999_999_999).await;
    let signed = fx.sign(fx.fields(&job, Outcome::Completed, 999_999_999, 3));
    let tx = {
        let mut s = settler(&fx, &db).await;
        s.ledger().enqueue(&job, &signed).unwrap();
        s.prepare(&job).await.unwrap().unwrap();
        s.broadcast(&job).await.unwrap()
    };

    crate::anvil::restart(&mut fx.anvil);
    fx.reconnect();

    let job_after = fx.company.job(fx.company_addr, &job).await.unwrap();
    assert_eq!(
        job_after.amount.base_units(),
        999_999_999,
        "deposit survived the restart"
    );
    let mut s = settler(&fx, &db).await;
    s.reconcile().await.unwrap();
    let state = timeout(s.settle(&job, &signed)).await.unwrap();
    assert!(matches!(state, LedgerState::Confirmed { .. }), "{state:?}");
    let LedgerState::Confirmed { tx: mined, .. } = state else {
        unreachable!()
    };
    assert_eq!(mined, tx, "the recorded transaction, not a new one");
    assert_eq!(node_nonce(&fx).await, 1);
    assert_eq!(fx.owed(fx.payout).await, U256::from(699_999_999u64));
    assert_eq!(fx.owed(fx.treasury).await, U256::from(300_000_000u64));
}

#[tokio::test]
async fn settle_replaces_a_transaction_unmined_past_stuck_after_on_its_own() {
    let Some(fx) = Fx::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = JobId::random();
    fx.deposit(&job, 3_000_000).await;
    let signed = fx.sign(fx.fields(&job, Outcome::Failed, 3_000_000, 1));
    let c0 = fx.owed(fx.company_addr).await;
    let mut s = Settler::new(
        Ledger::open(&dir.path().join("l.db")).unwrap(),
        connect_http(&fx.url).unwrap(),
        fx.escrow(),
        &fx.node_wallet,
        SettlerConfig {
            stuck_after: Duration::from_secs(2),
            ..cfg()
        },
    )
    .await
    .unwrap();

    let _: serde_json::Value = fx
        .read
        .raw_request("evm_setIntervalMining".into(), (0,))
        .await
        .unwrap();
    let resume = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let _: serde_json::Value = fx
            .read
            .raw_request("evm_setIntervalMining".into(), (1,))
            .await
            .unwrap();
    };
    let (state, ()) = tokio::join!(timeout(s.settle(&job, &signed)), resume);
    let LedgerState::Confirmed { tx, .. } = state.unwrap() else {
        panic!("not confirmed")
    };
    let attempts = s.ledger().attempts(&job).unwrap();
    assert!(attempts.len() >= 2, "no replacement was sent");
    assert!(
        attempts.iter().all(|a| a.nonce == attempts[0].nonce),
        "replacements share the nonce"
    );
    assert!(attempts
        .windows(2)
        .all(|w| w[1].max_fee_per_gas > w[0].max_fee_per_gas));
    assert!(
        attempts.iter().any(|a| a.tx == tx),
        "the mined transaction is a recorded one"
    );
    assert_eq!(node_nonce(&fx).await, 1, "only one of them mined");
    assert_eq!(
        fx.owed(fx.company_addr).await - c0,
        U256::from(3_000_000u64),
        "refunded once"
    );
}

/// `poll` never waits: it reports the settlement pending while its transaction is unmined or
/// not deep enough, and final (with the escrow's status) once it is.
#[tokio::test]
async fn poll_reports_pending_until_confirmed_then_final_with_the_escrow_status() {
    let Some(fx) = Fx::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = JobId::random();
    fx.deposit(&job, 5_000_000).await;
    let signed = fx.sign(fx.fields(&job, Outcome::TrainerFailed, 5_000_000, 1));
    let mut s = settler(&fx, &dir.path().join("l.db")).await;
    let first = s.poll(&job, &signed).await.unwrap();
    assert!(
        matches!(first, Progress::Pending(LedgerState::Submitted { .. })),
        "{first:?}"
    );
    let last = timeout(async {
        loop {
            match s.poll(&job, &signed).await.unwrap() {
                Progress::Final(f) => break f,
                Progress::Pending(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await;
    match last {
        Finality::Settled {
            status,
            confirmations,
            ..
        } => {
            assert_eq!(status, rapha_settle::JobStatus::Paid);
            assert!(confirmations >= 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.owed(fx.payout).await, U256::from(3_500_000u64));
    assert_eq!(node_nonce(&fx).await, 1);

    // A settlement the escrow refuses for good is an error for the operator, not a retry.
    let other = JobId::random();
    fx.deposit(&other, 10).await;
    let forged = sign_with(
        &fx.key(7),
        fx.fields(&other, Outcome::Completed, 10, 2),
        fx.chain_id,
        fx.escrow(),
    );
    let err = s.poll(&other, &forged).await.unwrap_err();
    assert!(
        matches!(err, rapha_settle::SettleError::SettlementFailed { ref reason, .. } if reason.contains("registered node signer")),
        "{err}"
    );
}

/// The attack's last step: the depositor lets the deadline pass and refunds itself before the
/// node's settlement lands. The settler reports this once, as final and unpaid, instead of
/// retrying forever; nothing is sent.
#[tokio::test]
async fn settlement_after_an_expiry_refund_is_final_and_unpaid() {
    let Some(fx) = Fx::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = JobId::random();
    let deadline = fx.now().await + 600;
    fx.company
        .approve_and_deposit(
            &job,
            fx.hospital,
            rapha_core::Usdc::from_base_units(9),
            deadline,
        )
        .await
        .unwrap();
    fx.warp(601).await;
    let refund = fx
        .company
        .refund_expired(fx.company_addr, &job)
        .await
        .unwrap();
    let signed = fx.sign(fx.fields(&job, Outcome::Completed, 9, 1));
    let mut s = settler(&fx, &dir.path().join("l.db")).await;
    for _ in 0..2 {
        let p = timeout(s.poll(&job, &signed)).await.unwrap();
        assert_eq!(
            p,
            Progress::Final(Finality::RefundedByExpiry { tx: refund.tx })
        );
    }
    assert!(matches!(
        s.ledger().get(&job).unwrap().unwrap().state,
        LedgerState::Failed { .. }
    ));
    assert_eq!(node_nonce(&fx).await, 0, "nothing sent");
    assert_eq!(fx.owed(fx.payout).await, U256::ZERO);
}
