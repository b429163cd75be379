//! Status polls read the job store through kept read-only connections: they answer while a
//! pipeline step holds the node lock and the store's write lock, and they see only committed
//! state. (The figures are bench/node.sh's; this proves the behaviour, not a speed.)

use std::sync::mpsc;

use rapha_core::{CohortQuery, Digest, JobId, JobRequest, Usdc};
use rapha_node::api::ApiState;
use reqwest::StatusCode;
use rusqlite::{Connection, TransactionBehavior};

use crate::api::{
    error_code, node, serve_state, tokens, ADMIN_TOKEN, OTHER_TOKEN, PUBLISHER_TOKEN,
};
use crate::pipeline_e2e::{Chain, FEE, PUBLISHER, TRAINER};

#[test]
fn status_polls_answer_while_a_step_holds_the_node_lock_and_the_store_write_lock() {
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("jobs.sqlite");
    let state = ApiState::new(node(tmp.path(), &chain), db.clone(), tokens());
    let s = serve_state(state.clone());

    // A job in the store, received and not yet driven.
    let bundle = tmp.path().join("received-bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("placeholder"), b"x").unwrap();
    let request = JobRequest {
        job_id: JobId::random(),
        publisher: PUBLISHER.into(),
        trainer: TRAINER.into(),
        bundle_manifest: Digest::of(b"not verified in this test"),
        query: CohortQuery::default(),
        requested_fields: vec![],
        validation_percent: 50,
        fee: Usdc::from_base_units(FEE),
        chain_id: 137,
        depositor: chain.company.address().to_string(),
        linkage: None,
    };
    let job = request.job_id;

    // A long step: the node lock held, and inside it the store's write lock with an
    // uncommitted transition, until the test lets go. The job is submitted under the same
    // hold of the node lock, so the server's re-drive loop (which takes that lock every
    // REDRIVE_INTERVAL) cannot run it between submission and the held transaction.
    let (held, wait_held) = mpsc::channel();
    let (release, wait_release) = mpsc::channel::<()>();
    let step_state = state.clone();
    let step = std::thread::spawn(move || {
        step_state
            .with_node_locked(|node| {
                node.submit(&bundle, request).unwrap();
                let mut conn = Connection::open(&db).unwrap();
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .unwrap();
                tx.execute(
                    "UPDATE jobs SET state = 'running' WHERE id = ?1",
                    [job.to_string()],
                )
                .unwrap();
                held.send(()).unwrap();
                wait_release.recv().unwrap();
                // Dropped uncommitted: rolled back.
            })
            .expect("node lock");
    });
    wait_held.recv().unwrap();

    // Meanwhile the job's own publisher and the admin get its committed state; another
    // publisher still learns nothing of it.
    for token in [PUBLISHER_TOKEN, ADMIN_TOKEN] {
        let (st, text) = s.call("get", &format!("/v1/jobs/{job}"), Some(token), None);
        assert_eq!(st, StatusCode::OK, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["job_id"], job.to_string(), "{text}");
        assert_eq!(
            v["state"], "received",
            "an uncommitted write was read: {text}"
        );
    }
    let (st, text) = s.call("get", &format!("/v1/jobs/{job}"), Some(OTHER_TOKEN), None);
    assert_eq!(
        (st, error_code(&text).as_str()),
        (StatusCode::NOT_FOUND, "unknown-job")
    );
    // The polls above were answered with both locks still held.
    assert!(!step.is_finished(), "the step let go before the polls");
    release.send(()).unwrap();
    step.join().unwrap();
}
