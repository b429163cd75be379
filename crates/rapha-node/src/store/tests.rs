use super::*;
use rapha_core::{CohortQuery, Digest};

fn request() -> JobRequest {
    JobRequest {
        validation_percent: 20,
        ..rapha_testkit::job::job_request(
            "acme",
            "lesion-classifier",
            Digest::of(b"manifest"),
            CohortQuery {
                modalities: vec!["CT".into()],
                ..CohortQuery::default()
            },
            120_000_000,
            "0x0000000000000000000000000000000000000001",
        )
    }
}

#[test]
fn admitted_since_lists_only_this_publishers_admitted_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = JobStore::open(&dir.path().join("jobs.db")).unwrap();
    let admit = |s: &mut JobStore, req: &JobRequest| {
        s.insert(req).unwrap();
        s.advance(
            req.job_id,
            JobState::Received,
            JobState::BundleVerified,
            &[],
            None,
        )
        .unwrap();
        s.advance(
            req.job_id,
            JobState::BundleVerified,
            JobState::Admitted,
            &[],
            None,
        )
        .unwrap();
    };
    let (a, b) = (request(), request());
    admit(&mut s, &a);
    admit(&mut s, &b);
    let mut other = request();
    other.publisher = "other-co".into();
    admit(&mut s, &other);
    // Received only: never admitted, so not counted.
    s.insert(&request()).unwrap();
    let jobs: Vec<JobId> = s
        .admitted_since("acme", 0)
        .unwrap()
        .iter()
        .map(|(row, _)| row.id)
        .collect();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.contains(&a.job_id) && jobs.contains(&b.job_id));
    assert!(s.admitted_since("acme", now() + 60).unwrap().is_empty());
}

#[test]
fn happy_path_is_recorded_in_order_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let req = request();
    let id = req.job_id;
    {
        let mut s = JobStore::open(&path).unwrap();
        s.insert(&req).unwrap();
        let path = [
            JobState::Received,
            JobState::BundleVerified,
            JobState::Admitted,
            JobState::CohortBuilt,
            JobState::AwaitingApproval,
            JobState::Approved,
            JobState::AwaitingDeposit,
            JobState::DepositConfirmed,
            JobState::Attested,
            JobState::FinalGatePassed,
            JobState::Running,
            JobState::OutputsGuarded,
            JobState::Receipted,
            JobState::Settled,
            JobState::Released,
        ];
        for w in path.windows(2) {
            let ending =
                (w[1] == JobState::OutputsGuarded).then_some((Outcome::Completed, "completed"));
            s.advance(id, w[0], w[1], &[(w[1].as_str(), b"x")], ending)
                .unwrap();
        }
    }
    let s = JobStore::open(&path).unwrap();
    assert_eq!(s.get(id).unwrap().state, JobState::Released);
    assert_eq!(s.transitions(id).unwrap().len(), 15);
    assert_eq!(
        s.artifact(id, "released").unwrap().as_deref(),
        Some(&b"x"[..])
    );
}

/// Money before outputs: a completed job is released only from `settled`; a settled job is
/// finished unless it is a completed one whose release (or withholding) is not recorded; a
/// v1 job released before settling still has its settlement to do.
#[test]
fn a_settled_completed_job_is_unfinished_until_released_or_withheld() {
    assert!(!JobState::Receipted.may_advance_to(JobState::Released));
    assert!(JobState::Receipted.may_advance_to(JobState::Settled));
    assert!(JobState::Settled.may_advance_to(JobState::Released));
    assert!(JobState::Released.may_advance_to(JobState::Settled));
    assert!(JobState::Settled.is_terminal() && JobState::Released.is_terminal());

    let dir = tempfile::tempdir().unwrap();
    let mut s = JobStore::open(&dir.path().join("jobs.db")).unwrap();
    let to_receipted = |s: &mut JobStore, outcome: Outcome| {
        let req = request();
        let id = req.job_id;
        s.insert(&req).unwrap();
        s.advance(
            id,
            JobState::Received,
            JobState::Failed,
            &[],
            Some((outcome, "x")),
        )
        .unwrap();
        s.advance(id, JobState::Failed, JobState::Receipted, &[], None)
            .unwrap();
        id
    };
    let unfinished = |s: &JobStore| -> Vec<JobId> {
        s.unfinished().unwrap().into_iter().map(|r| r.id).collect()
    };

    let done = to_receipted(&mut s, Outcome::Failed);
    s.advance(
        done,
        JobState::Receipted,
        JobState::Settled,
        &[("settlement", b"{}")],
        None,
    )
    .unwrap();
    assert!(s.finished(done).unwrap(), "a settled refund is finished");

    let paid = to_receipted(&mut s, Outcome::Completed);
    s.advance(
        paid,
        JobState::Receipted,
        JobState::Settled,
        &[("settlement", b"{}")],
        None,
    )
    .unwrap();
    assert!(!s.finished(paid).unwrap());
    assert_eq!(unfinished(&s), [paid], "a paid job awaits its release");
    s.advance(
        paid,
        JobState::Settled,
        JobState::Released,
        &[("release", b"[]")],
        None,
    )
    .unwrap();
    assert!(s.finished(paid).unwrap());

    let unpaid = to_receipted(&mut s, Outcome::Completed);
    s.advance(
        unpaid,
        JobState::Receipted,
        JobState::Settled,
        &[("settlement", b"{}"), ("withheld", b"{}")],
        None,
    )
    .unwrap();
    assert!(s.finished(unpaid).unwrap(), "withheld for good");

    // A v1 store: released first, settled after.
    let v1 = to_receipted(&mut s, Outcome::Completed);
    s.conn
        .execute(
            "UPDATE jobs SET state = 'released' WHERE id = ?1",
            [v1.to_string()],
        )
        .unwrap();
    s.put_artifact(v1, "release", b"[]").unwrap();
    assert_eq!(unfinished(&s), [v1], "released, not yet settled");
    s.advance(
        v1,
        JobState::Released,
        JobState::Settled,
        &[("settlement", b"{}")],
        None,
    )
    .unwrap();
    assert!(s.finished(v1).unwrap() && unfinished(&s).is_empty());
    assert!(matches!(
        s.finished(JobId::random()).unwrap_err(),
        StoreError::NotFound(_)
    ));
}

#[test]
fn stale_worker_cannot_move_a_job_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = JobStore::open(&dir.path().join("jobs.db")).unwrap();
    let req = request();
    s.insert(&req).unwrap();
    s.advance(
        req.job_id,
        JobState::Received,
        JobState::BundleVerified,
        &[],
        None,
    )
    .unwrap();
    let err = s
        .advance(
            req.job_id,
            JobState::Received,
            JobState::BundleVerified,
            &[],
            None,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Conflict {
            actual: JobState::BundleVerified,
            ..
        }
    ));
    assert!(matches!(
        s.insert(&req).unwrap_err(),
        StoreError::Duplicate(_)
    ));
}

#[test]
fn skipping_a_gate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = JobStore::open(&dir.path().join("jobs.db")).unwrap();
    let req = request();
    s.insert(&req).unwrap();
    // Straight from received to running would skip verification, policy, approval, deposit.
    let err = s
        .advance(req.job_id, JobState::Received, JobState::Running, &[], None)
        .unwrap_err();
    assert!(matches!(err, StoreError::IllegalTransition { .. }));
    // A settled job cannot be refused after the fact, nor released without a receipt and
    // its settlement.
    assert!(!JobState::Settled.may_advance_to(JobState::Refused));
    assert!(!JobState::OutputsGuarded.may_advance_to(JobState::Released));
    assert!(!JobState::Refused.may_advance_to(JobState::Released));
    assert!(!JobState::Receipted.may_advance_to(JobState::Released));
}

#[test]
fn refusal_records_outcome_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = JobStore::open(&dir.path().join("jobs.db")).unwrap();
    let req = request();
    s.insert(&req).unwrap();
    s.advance(
        req.job_id,
        JobState::Received,
        JobState::Refused,
        &[],
        Some((Outcome::Refused, "bundle signed by an unknown key")),
    )
    .unwrap();
    let row = s.get(req.job_id).unwrap();
    assert_eq!(row.outcome, Some(Outcome::Refused));
    assert_eq!(
        row.reason.as_deref(),
        Some("bundle signed by an unknown key")
    );
    assert_eq!(
        s.unfinished().unwrap().len(),
        1,
        "a refused job still needs its receipt"
    );
}

/// Issue 19: the publisher's running total is the store's, durable across a restart; a job
/// charged again (its admission step re-run after a crash) keeps its first charge; a charge
/// past the cap records nothing and says what is spent.
#[test]
fn release_charges_add_up_per_publisher_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let (a, b, c) = (request(), request(), request());
    let mut other = request();
    other.publisher = "other".into();
    {
        let mut s = JobStore::open(&path).unwrap();
        for r in [&a, &b, &c, &other] {
            s.insert(r).unwrap();
        }
        let first = s.charge_release(a.job_id, "acme", 400, 1000).unwrap();
        assert_eq!(
            first,
            Ok(Charge {
                bits: 400,
                publisher_bits: 400,
                cap: 1000
            })
        );
        // Re-run after a crash: the same charge, not a second one.
        assert_eq!(
            s.charge_release(a.job_id, "acme", 400, 1000).unwrap(),
            first
        );
        assert_eq!(s.publisher_bits("acme").unwrap(), 400);
        // Another publisher's jobs are its own.
        s.charge_release(other.job_id, "other", 900, 1000)
            .unwrap()
            .unwrap();
    }
    // The node restarts.
    let mut s = JobStore::open(&path).unwrap();
    assert_eq!(s.publisher_bits("acme").unwrap(), 400);
    assert_eq!(
        s.charge_release(b.job_id, "acme", 600, 1000).unwrap(),
        Ok(Charge {
            bits: 600,
            publisher_bits: 1000,
            cap: 1000
        })
    );
    assert_eq!(
        s.charge_release(c.job_id, "acme", 1, 1000).unwrap(),
        Err(OverCap {
            spent: 1000,
            cap: 1000
        })
    );
    assert_eq!(s.release_charge(c.job_id).unwrap(), None);
    assert_eq!(s.publisher_bits("acme").unwrap(), 1000);
    assert_eq!(
        s.release_charge(a.job_id).unwrap().map(|c| c.bits),
        Some(400)
    );
}
