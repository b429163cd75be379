//! Payment before release (issue 18, item 2), tried from the depositor's side against the
//! real node, Orthanc, swtpm, runc and the escrow on anvil: a deposit whose deadline could pass
//! before the job is settled is refused, at the deposit check and again right before the
//! trainer starts.

use std::time::Duration;

use rapha_core::{JobId, Usdc};
use rapha_node::pipeline::chain::{ChainPayments, ChainSettings};
use rapha_node::pipeline::{DepositStatus, Payments};
use rapha_node::store::JobState;
use rapha_settle::{wallet_provider, Escrow};
use serde_json::json;

use crate::pipeline_e2e::{bundle, world, Chain, FEE};

/// One JSON-RPC call to anvil (test-only methods: time warp, mining control).
fn anvil(chain: &Chain, method: &str, params: serde_json::Value) -> serde_json::Value {
    let v: serde_json::Value = reqwest::blocking::Client::new()
        .post(&chain.url)
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(v.get("error").is_none(), "{method}: {v}");
    v["result"].clone()
}

/// The company deposits `amount` for `job` with the refund deadline `deadline_in` seconds
/// after the chain's latest block.
fn deposit_until(chain: &Chain, job: &JobId, amount: u64, deadline_in: u64) {
    chain.rt.block_on(async {
        let company = Escrow::at(
            wallet_provider(&chain.url, &chain.company).unwrap(),
            chain.escrow,
        );
        let deadline = company.chain_time().await.unwrap() + deadline_in;
        company
            .approve_and_deposit(job, chain.hospital, Usdc::from_base_units(amount), deadline)
            .await
            .unwrap();
    });
}

const MARGIN: u64 = 600;
/// The test bundles' `wall_seconds`.
const WALL: u64 = 120;

fn payments(chain: &Chain, ledger: &std::path::Path) -> ChainPayments {
    ChainPayments::connect(
        &ChainSettings {
            rpc_url: chain.url.clone(),
            escrow: chain.escrow,
            hospital: chain.hospital,
            payout: chain.payout,
            confirmations: 1,
            settle_margin_secs: MARGIN,
            poll_interval: Duration::from_millis(250),
        },
        &chain.settler,
        ledger,
    )
    .unwrap()
}

fn request(chain: &Chain, job: JobId) -> rapha_core::JobRequest {
    rapha_core::JobRequest {
        job_id: job,
        publisher: crate::pipeline_e2e::PUBLISHER.into(),
        trainer: crate::pipeline_e2e::TRAINER.into(),
        bundle_manifest: rapha_core::Digest::of(b"bundle"),
        query: rapha_core::CohortQuery::default(),
        requested_fields: vec![],
        validation_percent: 50,
        fee: Usdc::from_base_units(FEE),
        chain_id: 137,
        depositor: chain.company.address().to_string(),
    }
}

/// The attack: a deposit whose refund deadline falls inside the trainer's wall time plus the
/// time settlement needs. The depositor calls `refundExpired` as soon as the deadline passes,
/// while (or right after) the trainer runs, and the node's settlement can no longer land.
#[test]
fn deposit_whose_deadline_falls_before_the_run_could_settle_is_refused() {
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut p = payments(&chain, &tmp.path().join("ledger.sqlite"));
    let job = JobId::random();
    // Past the old fixed run window, short of wall time + margin.
    deposit_until(&chain, &job, FEE, WALL + MARGIN - 10);
    let status = p.check_deposit(&request(&chain, job), WALL).unwrap();
    match status {
        DepositStatus::Refused(reason) => assert!(
            reason.contains("before the job could run and settle")
                && reason.contains(&format!(
                    "{WALL} s wall time + {MARGIN} s settlement margin"
                )),
            "{reason}"
        ),
        other => {
            panic!("the node accepted a deposit refundable before the run could settle: {other:?}")
        }
    }
    // With the deadline far enough out, the same check confirms it.
    let ok = JobId::random();
    deposit_until(&chain, &ok, FEE, WALL + MARGIN + 60);
    let status = p.check_deposit(&request(&chain, ok), WALL).unwrap();
    assert!(matches!(status, DepositStatus::Confirmed(_)), "{status:?}");
}

/// The attack: a deposit that satisfies the deadline rule when it is checked, but the job
/// then waits (attestation, a busy node) until the rule no longer holds when the trainer would
/// start. Started anyway, the run could end after the depositor may refund itself.
#[test]
fn deadline_that_would_pass_during_the_run_is_refused_at_start() {
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "late", "honest", &w.publisher_key);
    let job = w
        .node
        .submit(&dir, w.request(manifest, w.scoped_query()))
        .unwrap();
    assert_eq!(
        w.node.run_until_blocked(job).unwrap(),
        JobState::AwaitingApproval
    );
    approve(&w, job);
    assert_eq!(
        w.node.run_until_blocked(job).unwrap(),
        JobState::AwaitingDeposit
    );
    // The rule holds with two minutes to spare when the deposit is checked.
    deposit_until(&w.chain, &job, FEE, WALL + MARGIN + 120);
    let mut state = JobState::AwaitingDeposit;
    for _ in 0..40 {
        w.node.advance(job).unwrap();
        state = w.node.store().get(job).unwrap().state;
        if state == JobState::FinalGatePassed {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(state, JobState::FinalGatePassed);
    // Three minutes pass on chain before the trainer would start.
    anvil(&w.chain, "evm_increaseTime", json!([180]));
    anvil(&w.chain, "evm_mine", json!([]));
    w.node.advance(job).unwrap();
    let row = w.node.store().get(job).unwrap();
    assert_eq!(
        row.state,
        JobState::Refused,
        "the trainer started although the deposit could expire before settlement ({:?})",
        row.reason
    );
    let reason = row.reason.unwrap();
    assert!(
        reason.starts_with("deposit refused at start: ") && reason.contains("becomes refundable"),
        "{reason}"
    );
    // Receipted and refunded like any refusal before the run; nothing released.
    let payout_before = w.chain.funds(w.chain.payout);
    let company_before = w.chain.funds(w.chain.company.address());
    let mut state = row.state;
    for _ in 0..60 {
        state = w.node.run_until_blocked(job).unwrap();
        if state == JobState::Settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(state, JobState::Settled);
    let to: Vec<JobState> = w
        .node
        .store()
        .transitions(job)
        .unwrap()
        .iter()
        .map(|t| t.to)
        .collect();
    assert!(!to.contains(&JobState::Running), "{to:?}");
    assert!(!w.node.release_path(job).exists());
    assert_eq!(
        w.chain.funds(w.chain.company.address()) - company_before,
        alloy::primitives::U256::from(FEE)
    );
    assert_eq!(w.chain.funds(w.chain.payout), payout_before);
}

fn approve(w: &crate::pipeline_e2e::World, job: JobId) {
    let digest = w.node.review_digest(job).unwrap().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let a = w.dpo.approve(digest, now, now + 3600).unwrap();
    w.node.approvals().record(&a).unwrap();
}
