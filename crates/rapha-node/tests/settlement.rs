//! Payment before release (issue 18, item 2), tried from the depositor's side against the
//! real node, Orthanc, swtpm, runc and the escrow on anvil: a deposit whose deadline could pass
//! before the job is settled is refused (at the deposit check and again right before the
//! trainer starts), a completed job's outputs are not released, on disk or through the API,
//! until its settlement is confirmed on chain, and never if the depositor refunded itself
//! first.

use std::time::Duration;

use rapha_core::{JobId, Usdc};
use rapha_node::api::ApiState;
use rapha_node::pipeline::chain::{ChainPayments, ChainSettings};
use rapha_node::pipeline::{DepositStatus, Payments};
use rapha_node::store::JobState;
use rapha_settle::{wallet_provider, Escrow};
use reqwest::StatusCode;
use serde_json::json;

use crate::api::{serve_state, tokens, PUBLISHER_TOKEN};
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
            depositors: chain.depositors(),
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
        linkage: None,
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
        DepositStatus::Refused { code, reason } => assert!(
            code == rapha_core::ReasonCode::DepositExpiresTooSoon
                && reason.contains("before the job could run and settle")
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
    let job = w.submit_to_review("late");
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
    // The publisher sees the code; the hospital the words.
    assert_eq!(row.reason.as_deref(), Some("deposit-expires-too-soon"));
    let detail = w.node.ending(job).unwrap().unwrap().detail;
    assert!(
        detail.starts_with("deposit refused at start: ") && detail.contains("becomes refundable"),
        "{detail}"
    );
    // Receipted and refunded like any refusal before the run; nothing released.
    let payout_before = w.chain.funds(w.chain.payout);
    let company_before = w.chain.funds(w.chain.company.address());
    let mut state = row.state;
    for _ in 0..60 {
        state = w.node.run_until_blocked(job).unwrap();
        if w.node.store().finished(job).unwrap() {
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

/// The attack's last move, made possible if the node ever released before settling: the job
/// completes, the depositor lets the deadline pass before the settlement lands and takes the
/// fee back with `refundExpired`. The node records the settlement as final and unpaid and
/// never releases the outputs: nothing in `released/`, an audit event, `paid: false`.
#[test]
fn completed_job_whose_deposit_was_refunded_by_expiry_is_never_released() {
    let Some(mut w) = world() else { return };
    let job = w.submit_to_review("expired");
    approve(&w, job);
    assert_eq!(
        w.node.run_until_blocked(job).unwrap(),
        JobState::AwaitingDeposit
    );
    deposit_until(&w.chain, &job, FEE, WALL + MARGIN + 120);
    // One step at a time up to the receipt: the settlement has not been sent yet.
    let mut state = JobState::AwaitingDeposit;
    for _ in 0..80 {
        w.node.advance(job).unwrap();
        state = w.node.store().get(job).unwrap().state;
        if state == JobState::Receipted {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(state, JobState::Receipted);
    assert_eq!(
        w.node.store().get(job).unwrap().outcome,
        Some(rapha_core::Outcome::Completed)
    );
    // The depositor's move: past the deadline, the expiry refund.
    let company_before = w.chain.funds(w.chain.company.address());
    let payout_before = w.chain.funds(w.chain.payout);
    anvil(&w.chain, "evm_increaseTime", json!([WALL + MARGIN + 600]));
    anvil(&w.chain, "evm_mine", json!([]));
    w.chain.rt.block_on(async {
        Escrow::at(
            wallet_provider(&w.chain.url, &w.chain.company).unwrap(),
            w.chain.escrow,
        )
        .refund_expired(w.chain.company.address(), &job)
        .await
        .unwrap()
    });
    for _ in 0..20 {
        w.node.run_until_blocked(job).unwrap();
        if w.node.store().finished(job).unwrap() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let row = w.node.store().get(job).unwrap();
    assert_eq!(row.state, JobState::Settled, "{:?}", row.reason);
    assert!(w.node.store().finished(job).unwrap());
    assert!(
        !w.node.release_path(job).exists(),
        "outputs released for a job the depositor refunded"
    );
    let settlement: serde_json::Value = serde_json::from_slice(
        &w.node
            .store()
            .artifact(job, rapha_node::pipeline::artifact::SETTLEMENT)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(settlement["paid"], false, "{settlement}");
    assert!(settlement["refunded_by_expiry"].is_string(), "{settlement}");
    assert!(w
        .node
        .store()
        .artifact(job, rapha_node::pipeline::artifact::WITHHELD)
        .unwrap()
        .is_some());
    let audit = std::fs::read_to_string(w.node.audit_path()).unwrap();
    assert!(
        audit.contains("outputs are withheld and will never be released"),
        "no audit event"
    );
    assert_eq!(
        w.chain.funds(w.chain.company.address()) - company_before,
        alloy::primitives::U256::from(FEE)
    );
    assert_eq!(w.chain.funds(w.chain.payout), payout_before);
    // Driving the job again changes nothing.
    assert_eq!(w.node.run_until_blocked(job).unwrap(), JobState::Settled);
    assert!(!w.node.release_path(job).exists());
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

/// Polls the job's status as the publisher until `done(state)`; returns the state.
fn wait_state(s: &crate::api::Served, job: &str, secs: u64, done: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..secs * 4 {
        let (st, text) = s.call(
            "get",
            &format!("/v1/jobs/{job}"),
            Some(PUBLISHER_TOKEN),
            None,
        );
        assert_eq!(st, StatusCode::OK, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        last = v["state"].as_str().unwrap_or_default().to_owned();
        if done(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("job {job} stuck in {last}");
}

/// The attack: outputs released before the settlement is final. Whoever holds the released
/// weights has no reason to let the settlement land (a fee + 1 deposit, an expiring deadline,
/// a frozen address all kept it from landing before). While the settlement transaction sits
/// unmined, nothing may be on disk in `released/` and the outputs route must answer nothing.
#[test]
fn outputs_are_not_released_until_the_settlement_is_confirmed() {
    let Some(w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "pending", "honest", &w.publisher_key);
    let request = w.request(manifest, w.scoped_query());
    let job = request.job_id;
    let id = job.to_string();
    let release_dir = w.node.release_path(job);
    let (chain, node, dpo) = (w.chain, w.node, w.dpo);
    let s = serve_state(ApiState::new(node, tmp.join("jobs.sqlite"), tokens()));

    let (st, text) = s.upload(
        PUBLISHER_TOKEN,
        rapha_bundle::pack_bundle_to_vec(&dir).unwrap(),
    );
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let body = serde_json::to_vec(&json!({ "request": request })).unwrap();
    let (st, text) = s.call("post", "/v1/jobs", Some(PUBLISHER_TOKEN), Some(&body));
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    crate::api::wait_pending(&s, &id, 120);
    let (st, text) = s.call(
        "get",
        "/v1/approvals/pending",
        Some(crate::api::DPO_TOKEN),
        None,
    );
    assert_eq!(st, StatusCode::OK, "{text}");
    let pending: serde_json::Value = serde_json::from_str(&text).unwrap();
    let digest: rapha_core::Digest = pending["pending"][0]["job_digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let approval = dpo.approve(digest, now, now + 3600).unwrap();
    let (st, text) = s.call(
        "post",
        &format!("/v1/jobs/{id}/approve"),
        Some(crate::api::DPO_TOKEN),
        Some(&serde_json::to_vec(&approval).unwrap()),
    );
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    wait_state(&s, &id, 60, |st| st == "awaiting-deposit");

    // The deposit is mined (one confirmation is all the node asks here); then the chain stops
    // producing blocks, so the settlement transaction will sit unmined.
    chain.deposit(&job);
    anvil(&chain, "evm_setIntervalMining", json!([0]));
    let at = wait_state(&s, &id, 240, |st| {
        matches!(st, "receipted" | "released" | "settled")
    });
    // Give the node time to do whatever it would do before the settlement confirms.
    std::thread::sleep(Duration::from_secs(4));
    let (state_pending, _) = (
        {
            let (_, text) = s.call(
                "get",
                &format!("/v1/jobs/{id}"),
                Some(PUBLISHER_TOKEN),
                None,
            );
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            v["state"].as_str().unwrap_or_default().to_owned()
        },
        at,
    );
    let on_disk_pending: Vec<_> = std::fs::read_dir(&release_dir)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let (route_status, route_text) = s.call(
        "get",
        &format!("/v1/jobs/{id}/outputs"),
        Some(PUBLISHER_TOKEN),
        None,
    );
    let (file_status, _) = s.get_bytes(
        &format!("/v1/jobs/{id}/outputs/model.safetensors"),
        PUBLISHER_TOKEN,
    );

    // Blocks again: the settlement confirms and the outputs follow.
    anvil(&chain, "evm_setIntervalMining", json!([1]));
    let end = wait_state(&s, &id, 120, |st| st == "released" || st == "settled");

    assert!(
        on_disk_pending.is_empty(),
        "released/ holds {on_disk_pending:?} while the settlement is unmined"
    );
    assert_eq!(
        route_status,
        StatusCode::NOT_FOUND,
        "the outputs route answered while the settlement is unmined: {route_text}"
    );
    assert_eq!(file_status, StatusCode::NOT_FOUND);
    assert_eq!(state_pending, "receipted");
    assert_eq!(end, "released");
    let (st, text) = s.call(
        "get",
        &format!("/v1/jobs/{id}/outputs"),
        Some(PUBLISHER_TOKEN),
        None,
    );
    assert_eq!(st, StatusCode::OK, "{text}");
    assert!(text.contains("model.safetensors"), "{text}");
}

/// Advances `job` one step at a time (as the API's drive does) until it is in `target` or
/// `tries` steps have passed; returns the state it is in.
fn advance_until(w: &mut crate::pipeline_e2e::World, job: JobId, target: JobState) -> JobState {
    let mut state = w.node.store().get(job).unwrap().state;
    for _ in 0..120 {
        if state == target {
            break;
        }
        w.node.advance(job).unwrap();
        state = w.node.store().get(job).unwrap().state;
        if state != target {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    state
}

/// An honest job of the company's, approved, deposited (refundable after `deadline_in` s) and
/// run to its receipt; its settlement not yet sent.
fn receipted_job(w: &mut crate::pipeline_e2e::World, name: &str, deadline_in: u64) -> JobId {
    let job = w.submit_to_review(name);
    approve(w, job);
    assert_eq!(
        w.node.run_until_blocked(job).unwrap(),
        JobState::AwaitingDeposit
    );
    deposit_until(&w.chain, &job, FEE, deadline_in);
    assert_eq!(
        advance_until(w, job, JobState::Receipted),
        JobState::Receipted
    );
    job
}

/// Drives `job` until it is finished or `secs` pass; returns the state it ends in.
fn drive_to_end(w: &mut crate::pipeline_e2e::World, job: JobId, secs: u64) -> JobState {
    let mut state = w.node.store().get(job).unwrap().state;
    for _ in 0..secs * 2 {
        state = w.node.run_until_blocked(job).unwrap();
        if w.node.store().finished(job).unwrap() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    state
}

/// After the deposit's deadline: the escrow must refuse to refund `job` by expiry, because it
/// was settled. Returns the refusal in words (or panics naming the refund).
fn expiry_refund_refused(w: &crate::pipeline_e2e::World, job: JobId, why: &str) -> String {
    anvil(&w.chain, "evm_increaseTime", json!([WALL + MARGIN + 3600]));
    anvil(&w.chain, "evm_mine", json!([]));
    let refund = w.chain.rt.block_on(async {
        Escrow::at(
            wallet_provider(&w.chain.url, &w.chain.company).unwrap(),
            w.chain.escrow,
        )
        .refund_expired(w.chain.company.address(), &job)
        .await
    });
    match refund {
        Ok(mined) => panic!(
            "{why}: the depositor took the job's fee back by expiry in {} ({:?})",
            mined.tx,
            w.node.store().get(job).unwrap().state
        ),
        Err(e) => e.to_string(),
    }
}

/// The attack (publisher review, finding 1): the publisher lets its probe job P run and be
/// receipted, then at once submits a throwaway job Q that is refused for free (its trainer name
/// does not match the bundle), so Q is receipted at a larger log size. It deposits exactly Q's
/// fee for Q and settles Q itself with the node's signature from Q's receipt, before the node
/// settles P: the escrow anchors the node's log at Q's size, and P's settlement, signed once at
/// P's smaller size, would revert (`LogRewrite`) until P's deadline lets the publisher take
/// P's fee back. The node must still settle P, charged, and the expiry refund must find P paid.
#[test]
fn later_receipt_settled_first_cannot_make_an_earlier_charged_job_refundable() {
    let Some(mut w) = world() else { return };
    let p = receipted_job(&mut w, "probe", WALL + MARGIN + 120);
    let p_receipt = w.node.receipt(p).unwrap().unwrap();

    // Q: refused before anything runs, receipted later than P.
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "throwaway", "honest", &w.publisher_key);
    let mut q_request = w.request(manifest, w.scoped_query());
    q_request.trainer = "not-this-bundles-trainer".into();
    let q = w.node.submit(&dir, q_request).unwrap();
    assert_eq!(
        advance_until(&mut w, q, JobState::Receipted),
        JobState::Receipted
    );
    let q_receipt = w.node.receipt(q).unwrap().unwrap();
    assert!(q_receipt.log_at_signing.tree_size > p_receipt.log_at_signing.tree_size);

    // The publisher's move: deposit Q's fee for Q and settle Q with Q's receipt signature.
    deposit_until(&w.chain, &q, FEE, 86_400);
    let body: rapha_receipt::ReceiptBody = serde_json::from_value(q_receipt.body.clone()).unwrap();
    let pay = &body.payment;
    let q_settlement = rapha_settle::SignedSettlement {
        fields: rapha_settle::SettlementFields {
            job_id: q,
            depositor: w.chain.company.address(),
            outcome: body.outcome,
            receipt_digest: alloy::primitives::B256::from(*q_receipt.receipt_digest.as_bytes()),
            payout: alloy::primitives::Address::from(pay.payout.0),
            fee: pay.fee,
            token: alloy::primitives::Address::from(pay.token.0),
            log_size: q_receipt.log_at_signing.tree_size,
            log_root: alloy::primitives::B256::from(*q_receipt.log_at_signing.root_hash.as_bytes()),
        },
        signature: q_receipt.signature.0.to_vec().into(),
    };
    let front_run = w.chain.rt.block_on(async {
        Escrow::at(
            wallet_provider(&w.chain.url, &w.chain.company).unwrap(),
            w.chain.escrow,
        )
        .settle(&q_settlement)
        .await
    });
    eprintln!("the publisher's settlement of Q: {front_run:?}");
    // A receipt's signature proves the receipt and settles nothing.
    let refused = front_run.expect_err("Q settled with its receipt's signature");
    assert!(
        refused
            .to_string()
            .contains("but the hospital's registered node signer is"),
        "{refused}"
    );

    // The node settles P now.
    let payout_before = w.chain.funds(w.chain.payout);
    let end = drive_to_end(&mut w, p, 60);
    let row = w.node.store().get(p).unwrap();
    let refusal = expiry_refund_refused(&w, p, "P's settlement did not land");
    assert!(
        refusal.contains("not open for settlement (status paid)"),
        "{refusal}"
    );
    assert_eq!(end, JobState::Released, "{:?}", row.reason);
    assert_eq!(
        w.chain.funds(w.chain.payout) - payout_before,
        alloy::primitives::U256::from(FEE * 70 / 100)
    );
}

/// The same revert without an attacker: two deposited jobs receipted one after the other and
/// settled in the other order (each job is driven on its own). The earlier one must still
/// settle, charged.
#[test]
fn jobs_receipted_in_one_order_and_settled_in_the_other_are_both_paid() {
    let Some(mut w) = world() else { return };
    let first = receipted_job(&mut w, "first", 86_400);
    let second = receipted_job(&mut w, "second", 86_400);
    let payout_before = w.chain.funds(w.chain.payout);
    assert_eq!(drive_to_end(&mut w, second, 60), JobState::Released);
    let end = drive_to_end(&mut w, first, 60);
    let row = w.node.store().get(first).unwrap();
    assert_eq!(end, JobState::Released, "{:?}", row.reason);
    assert_eq!(
        w.chain.funds(w.chain.payout) - payout_before,
        alloy::primitives::U256::from(2 * (FEE * 70 / 100))
    );
}

/// Deposits `amount` for `job` from `from`'s account, refundable `deadline_in` s after the
/// latest block; the escrow's answer.
fn try_deposit(
    chain: &Chain,
    from: &rapha_settle::WalletKey,
    job: &JobId,
    amount: u64,
    deadline_in: u64,
) -> Result<(), String> {
    chain.rt.block_on(async {
        let escrow = Escrow::at(wallet_provider(&chain.url, from).unwrap(), chain.escrow);
        let deadline = escrow.chain_time().await.unwrap() + deadline_in;
        escrow
            .approve_and_deposit(job, chain.hospital, Usdc::from_base_units(amount), deadline)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

/// The world with [`crate::pipeline_e2e::OTHER_PUBLISHER`] trusted by the hospital's policy
/// too (same trainer name).
fn world_of_two() -> Option<crate::pipeline_e2e::World> {
    crate::pipeline_e2e::world_with_policy(20, 12, |h| {
        h.publishers.insert(
            crate::pipeline_e2e::OTHER_PUBLISHER.to_owned(),
            rapha_policy::PublisherTrust {
                trainers: vec![crate::pipeline_e2e::TRAINER.into()],
            },
        );
    })
}

/// The attack (publisher review, finding 2): company A pre-funds the rounds of a federated run
/// with `depositBatch`; the job ids are public in the escrow's `Deposited` events. Company B,
/// trusted by the same hospital, submits its own job under one of those ids and names A's
/// account as the depositor, so that the deposit the node finds is A's: right hospital, exact
/// fee, far deadline. The node must refuse B's job at the deposit step, and B naming its own
/// account finds no deposit of A's for it.
#[test]
fn job_naming_another_publishers_prefunded_job_id_is_refused_at_the_deposit_step() {
    use crate::pipeline_e2e::{bundle_of, OTHER_PUBLISHER};
    let Some(mut w) = world_of_two() else { return };
    let rounds = [JobId::random(), JobId::random()];
    w.chain.rt.block_on(async {
        let company = Escrow::at(
            wallet_provider(&w.chain.url, &w.chain.company).unwrap(),
            w.chain.escrow,
        );
        let deadline = company.chain_time().await.unwrap() + 86_400;
        let batch: Vec<rapha_settle::BatchDeposit> = rounds
            .iter()
            .map(|job| rapha_settle::BatchDeposit {
                job: *job,
                hospital: w.chain.hospital,
                fee: Usdc::from_base_units(FEE),
                deadline,
            })
            .collect();
        company.approve_and_deposit_batch(&batch).await.unwrap();
    });

    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle_of(
        OTHER_PUBLISHER,
        &tmp,
        &w.trainer,
        "beta",
        "honest",
        &w.other_publisher_key,
    );
    let b_account = w.chain.key(crate::pipeline_e2e::OTHER_COMPANY).address();
    let mut jobs = vec![];
    for (round, depositor) in [
        (rounds[0], w.chain.company.address()),
        (rounds[1], b_account),
    ] {
        let mut request = w.request(manifest, w.scoped_query());
        request.job_id = round;
        request.publisher = OTHER_PUBLISHER.into();
        request.depositor = depositor.to_string();
        let job = w.node.submit(&dir, request).unwrap();
        assert_eq!(
            w.node.run_until_blocked(job).unwrap(),
            JobState::AwaitingApproval
        );
        approve(&w, job);
        // Step by step: the deposit is already there, so the next step after this is the
        // deposit check.
        assert_eq!(
            advance_until(&mut w, job, JobState::AwaitingDeposit),
            JobState::AwaitingDeposit
        );
        jobs.push(job);
    }

    // Naming A's account: refused at the deposit step, with the code the publisher sees and
    // the words the hospital reads.
    let step = w.node.advance(jobs[0]).unwrap();
    let row = w.node.store().get(jobs[0]).unwrap();
    assert_eq!(
        row.state,
        JobState::Refused,
        "B's job ran on A's deposit ({step:?})"
    );
    assert_eq!(row.reason.as_deref(), Some("deposit-refused"));
    let detail = w.node.ending(jobs[0]).unwrap().unwrap().detail;
    assert!(
        detail.contains(&format!(
            "{} is not an account this hospital lets publisher {OTHER_PUBLISHER} pay from",
            w.chain.company.address()
        )),
        "{detail}"
    );
    // Naming its own account: A's deposit is not B's; B's job waits for B's own.
    let step = w.node.advance(jobs[1]).unwrap();
    assert_eq!(
        step,
        rapha_node::pipeline::Step::Blocked(rapha_node::pipeline::Blocked::Deposit(
            "no deposit in escrow for this job yet".into()
        ))
    );
    assert_eq!(
        w.node.store().get(jobs[1]).unwrap().state,
        JobState::AwaitingDeposit
    );
}

/// The attack (publisher review, finding 2, griefing): anyone watching the mempool sees the
/// victim's `deposit(J, H, F, d)` and front-runs it with `deposit(J, H, F + 1, now + 5)`. The
/// victim's deposit must still go through and its approved job run and be paid; the attacker's
/// deposit comes back to the attacker only.
#[test]
fn front_run_deposit_for_a_victims_job_id_does_not_block_the_victims_deposit() {
    let Some(mut w) = world() else { return };
    let job = w.submit_to_review("victim");
    approve(&w, job);
    assert_eq!(
        w.node.run_until_blocked(job).unwrap(),
        JobState::AwaitingDeposit
    );

    let attacker = w.chain.key(8);
    w.chain.mint(attacker.address(), FEE + 1);
    try_deposit(&w.chain, &attacker, &job, FEE + 1, 5).unwrap();
    let victim = try_deposit(&w.chain, &w.chain.company, &job, FEE, 86_400);
    assert_eq!(victim, Ok(()), "the victim's deposit was blocked");

    let payout_before = w.chain.funds(w.chain.payout);
    let end = drive_to_end(&mut w, job, 120);
    let row = w.node.store().get(job).unwrap();
    assert_eq!(end, JobState::Released, "{:?}", row.reason);
    assert_eq!(
        w.chain.funds(w.chain.payout) - payout_before,
        alloy::primitives::U256::from(FEE * 70 / 100)
    );
}
