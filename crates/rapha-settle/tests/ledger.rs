//! The settlement ledger's state machine, on its own (SQLite, no chain).

use alloy::primitives::{Address, Bytes, B256};
use rapha_core::{JobId, Outcome, Usdc};
use rapha_settle::{Attempt, Ledger, LedgerState, SettleError, SettlementFields, SignedSettlement};

fn signed(job: JobId) -> SignedSettlement {
    SignedSettlement {
        fields: SettlementFields {
            job_id: job,
            depositor: Address::repeat_byte(6),
            outcome: Outcome::Completed,
            receipt_digest: B256::repeat_byte(1),
            payout: Address::repeat_byte(2),
            fee: Usdc::from_base_units(7),
            token: Address::repeat_byte(3),
            log_size: 1,
            log_root: B256::repeat_byte(4),
        },
        signature: Bytes::from(vec![5u8; 65]),
    }
}

fn attempt(n: u8, nonce: u64) -> Attempt {
    Attempt {
        tx: B256::repeat_byte(n),
        nonce,
        max_fee_per_gas: 1_000 * u128::from(n),
        max_priority_fee_per_gas: 10 * u128::from(n),
        raw: Bytes::from(vec![n; 10]),
    }
}

#[test]
fn rows_and_recorded_attempts_survive_reopening_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settle.db");
    let job = JobId::random();
    {
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(
            l.enqueue(&job, &signed(job)).unwrap().state,
            LedgerState::Pending
        );
        l.record_attempt(&job, &attempt(1, 4)).unwrap();
        l.record_attempt(&job, &attempt(2, 4)).unwrap();
    } // dropped without any shutdown step, as a crash would
    let l = Ledger::open(&path).unwrap();
    let row = l.get(&job).unwrap().unwrap();
    assert_eq!(
        row.state,
        LedgerState::Submitted {
            tx: B256::repeat_byte(2),
            nonce: 4
        }
    );
    assert_eq!(row.settlement, signed(job));
    assert_eq!(
        l.attempts(&job).unwrap(),
        vec![attempt(1, 4), attempt(2, 4)]
    );
    assert_eq!(l.open_rows().unwrap().len(), 1);
    assert_eq!(l.max_open_nonce().unwrap(), Some(4));
}

#[test]
fn enqueue_is_idempotent_and_keeps_progress() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::open(&dir.path().join("l.db")).unwrap();
    let job = JobId::random();
    l.enqueue(&job, &signed(job)).unwrap();
    l.record_attempt(&job, &attempt(9, 0)).unwrap();
    let again = l.enqueue(&job, &signed(job)).unwrap();
    assert_eq!(
        again.state,
        LedgerState::Submitted {
            tx: B256::repeat_byte(9),
            nonce: 0
        },
        "re-enqueue must not reset"
    );
}

#[test]
fn a_settlement_signed_for_another_job_is_not_enqueued() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(&dir.path().join("l.db")).unwrap();
    let (job, other) = (JobId::random(), JobId::random());
    let err = l.enqueue(&job, &signed(other)).unwrap_err();
    assert!(
        matches!(err, SettleError::SettlementForOtherJob { job: j, signed: s } if j == job && s == other)
    );
    assert!(l.get(&job).unwrap().is_none());
}

#[test]
fn final_states_do_not_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::open(&dir.path().join("l.db")).unwrap();
    let (paid, refused) = (JobId::random(), JobId::random());
    l.enqueue(&paid, &signed(paid)).unwrap();
    l.record_attempt(&paid, &attempt(1, 0)).unwrap();
    l.mark_confirmed(&paid, B256::repeat_byte(1), 10, 3)
        .unwrap();
    assert!(matches!(
        l.record_attempt(&paid, &attempt(2, 1)),
        Err(SettleError::BadTransition { .. })
    ));
    assert!(matches!(
        l.mark_failed(&paid, "x"),
        Err(SettleError::BadTransition { .. })
    ));
    assert!(matches!(
        l.mark_dropped(&paid),
        Err(SettleError::BadTransition { .. })
    ));

    l.enqueue(&refused, &signed(refused)).unwrap();
    l.mark_failed(&refused, "escrow refused").unwrap();
    assert!(matches!(
        l.mark_confirmed(&refused, B256::ZERO, 1, 1),
        Err(SettleError::BadTransition { .. })
    ));
    assert!(matches!(
        l.record_attempt(&refused, &attempt(3, 2)),
        Err(SettleError::BadTransition { .. })
    ));
    assert_eq!(
        l.get(&refused).unwrap().unwrap().state,
        LedgerState::Failed {
            reason: "escrow refused".into()
        }
    );
    assert!(l.open_rows().unwrap().is_empty());
    assert!(matches!(
        l.mark_failed(&JobId::random(), "x"),
        Err(SettleError::NotInLedger(_))
    ));
}
