//! Node benchmark (bench/node.sh; never run in CI): cold start of `rapha-node serve` over a
//! seeded job store, and `wrk` against `GET /v1/jobs/{id}` with `/healthz` as the peer (the
//! floor of the HTTP stack), idle and while a job holds the pipeline in its run step.
//!
//! Everything is the real thing: anvil with the escrow, Orthanc + DICOMweb with a synthetic
//! cohort, the release `rapha-node` binary started from a demo-mode configuration, jobs
//! submitted, rejected and approved through its HTTP API, a trainer under runc.
//!
//! Usage: node_bench RAPHA_NODE_BINARY [JOBS] [WRK_SECONDS]

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a bench: a panic is a failed run

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use rapha_bundle::{pack_bundle_to_vec, SigningKey, TrustStore};
use rapha_core::{CohortQuery, Digest, JobId, JobRequest, Usdc};
use rapha_policy::DpoSigningKey;
use rapha_receipt::NodeKey;
use rapha_settle::{deposit_for_job, DepositOrder, Escrow, TestMarketPlan, WalletKey};
use rapha_testkit::bundle::{sign_rootfs, trainer_spec, SpecLimits};
use rapha_testkit::cohort::{generate, CohortSpec};
use rapha_testkit::job::job_request;
use rapha_testkit::node_config::NodeConfig;
use rapha_testkit::services::{Anvil, AnvilOptions, Orthanc};
use serde_json::{json, Value};

const PUBLISHER: &str = "bench-ai";
const TRAINER: &str = "bench-trainer";
const FEE: u64 = 120_000_000;
const PUBLISHER_TOKEN: &str = "pub-bench-0123456789abcdef0123456789abcdef";
const DPO_TOKEN: &str = "dpo-bench-0123456789abcdef0123456789abcdef";
const ADMIN_TOKEN: &str = "adm-bench-0123456789abcdef0123456789abcdef";
const STARTS: usize = 10;
/// Load runs per target, interleaved.
const REPEATS: usize = 3;
/// Jobs that reach a DPO review (a cohort built from Orthanc); the rest are broad queries the
/// scope guard refuses.
const REVIEWED: usize = 120;
/// Of the reviewed jobs, how many the DPO rejects (the others stay awaiting approval, so the
/// node's start-up has work).
const REJECTED: usize = 20;

fn main() {
    let mut args = std::env::args().skip(1);
    let node_bin = PathBuf::from(
        args.next()
            .expect("usage: node_bench RAPHA_NODE [JOBS] [SECS]"),
    );
    let jobs: usize = args.next().map_or(1000, |s| s.parse().unwrap());
    let secs: u64 = args.next().map_or(20, |s| s.parse().unwrap());
    assert!(jobs > REVIEWED, "JOBS must exceed {REVIEWED}");

    let Some(anvil) = Anvil::start(AnvilOptions::default()).unwrap() else {
        panic!("anvil is required (scripts/test installs it; RAPHA_ANVIL)");
    };
    let Some(orthanc) = Orthanc::start().unwrap() else {
        panic!("Orthanc + DICOMweb are required (/usr/sbin/Orthanc)");
    };
    // Short: runc's state and the enclave's sockets live under it (SUN_LEN).
    let tmp = tempfile::Builder::new()
        .prefix("rnb")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = tmp.path();
    let world = World::new(dir, &anvil, &orthanc);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Seed the store through the real API.
    let mut server = world.serve(&node_bin, addr);
    wait_ready(addr, Duration::from_secs(60)).expect("node did not start");
    let t = Instant::now();
    let ids = world.seed(addr, jobs);
    let counts = metrics(addr);
    println!(
        "seeded {jobs} jobs in {:.1} s through the API: {}",
        t.elapsed().as_secs_f64(),
        counts
    );
    stop(&mut server);

    // Cold start: exec to first /healthz 200 and to first authenticated status 200.
    let probe = ids[0];
    let mut to_health = Vec::new();
    let mut to_status = Vec::new();
    for _ in 0..STARTS {
        let t = Instant::now();
        let mut child = world.serve(&node_bin, addr);
        let h = wait_for(addr, "/healthz", None, t, Duration::from_secs(60));
        let s = wait_for(
            addr,
            &format!("/v1/jobs/{probe}"),
            Some(PUBLISHER_TOKEN),
            t,
            Duration::from_secs(60),
        );
        stop(&mut child);
        to_health.push(h.expect("no /healthz 200 within 60 s"));
        to_status.push(s.expect("no status 200 within 60 s"));
    }
    let unfinished = counts["awaiting-approval"].as_u64().unwrap_or(0);
    println!(
        "cold start ({STARTS} starts, {unfinished} unfinished jobs resumed each time): \
         exec->/healthz 200 median {:.0} ms (min {:.0}, max {:.0}); \
         exec->GET /v1/jobs/{{id}} 200 median {:.0} ms (min {:.0}, max {:.0})",
        ms(median(&to_health)),
        ms(min(&to_health)),
        ms(max(&to_health)),
        ms(median(&to_status)),
        ms(min(&to_status)),
        ms(max(&to_status)),
    );

    // Load: /healthz (peer) and status polls over every seeded job.
    let mut server = world.serve(&node_bin, addr);
    wait_ready(addr, Duration::from_secs(60)).expect("node did not start");
    let lua = dir.join("status.lua");
    write_status_script(&lua, &ids);
    // Interleaved repeats: the machine is shared, so each figure is the median of REPEATS
    // runs, with every run and the load average printed.
    let mut healths = Vec::new();
    let mut statuses = Vec::new();
    for r in 1..=REPEATS {
        let h = wrk(addr, "/healthz", None, secs);
        h.print(&format!(
            "[{r}/{REPEATS}] GET /healthz (peer: the HTTP stack's floor)"
        ));
        healths.push(h);
        let st = wrk(addr, "/", Some(&lua), secs);
        st.print(&format!(
            "[{r}/{REPEATS}] GET /v1/jobs/{{id}} (publisher token, {} seeded ids rotated)",
            ids.len()
        ));
        statuses.push(st);
    }
    let health = Load::median(&healths);
    let status = Load::median(&statuses);
    health.print("median GET /healthz");
    status.print("median GET /v1/jobs/{id}");
    println!(
        "ratio status/healthz (medians): throughput {:.2}, p99 {:.2}; status p99 over the \
         {REPEATS} runs: {}",
        status.rps / health.rps,
        status.p99_ms / health.p99_ms,
        statuses
            .iter()
            .map(|l| format!("{:.1} ms", l.p99_ms))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // While a job holds the pipeline in its run step.
    match world.trainer_binary() {
        None => {
            println!("SKIPPED: status polls while a job runs (needs gcc -static, runc and root)")
        }
        Some(trainer) => {
            let job = world.start_running_job(addr, &trainer, secs * REPEATS as u64 + 60);
            let mut busy = Vec::new();
            for r in 1..=REPEATS {
                let b = wrk(addr, "/", Some(&lua), secs);
                let after = job_state(addr, job);
                b.print(&format!(
                    "[{r}/{REPEATS}] GET /v1/jobs/{{id}} while a job is `running` (trainer under \
                     runc); job state after the run: {after}"
                ));
                assert_eq!(
                    after, "running",
                    "the job left `running` during the load run"
                );
                busy.push(b);
            }
            let busy = Load::median(&busy);
            busy.print("median GET /v1/jobs/{id} while a job runs");
            println!(
                "ratio running/idle (medians): throughput {:.2}, p99 {:.2}",
                busy.rps / status.rps,
                busy.p99_ms / status.p99_ms
            );
        }
    }
    stop(&mut server);
}

/// The chain, the PACS, the keys and the configuration of one bench node.
struct World {
    dir: PathBuf,
    config: PathBuf,
    tokens: PathBuf,
    settler: PathBuf,
    hospital: Address,
    payout: Address,
    company: WalletKey,
    rpc: String,
    chain_id: u64,
    escrow: Address,
    publisher: SigningKey,
    dpo: DpoSigningKey,
    accessions: Vec<String>,
    seed_bundle: (PathBuf, Digest),
}

impl World {
    fn new(dir: &Path, anvil: &Anvil, orthanc: &Orthanc) -> Self {
        let rpc = anvil.rpc_url();
        let accounts = anvil.dev_accounts();
        let key = |i: usize| WalletKey::from_hex(&accounts[i].1).unwrap();
        let node_key = NodeKey::generate();
        let node_key_file = dir.join("node.key");
        node_key.write_new(&node_key_file).unwrap();
        let node_signer: Address = node_key.address().to_string().parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (deployer, hospital, company) = (key(0), key(1), key(2));
        let market = rt
            .block_on(Escrow::deploy_test_market(&TestMarketPlan {
                rpc_url: &rpc,
                deployer: &deployer,
                treasury: key(3).address(),
                funded: company.address(),
                funds: Usdc::from_base_units(FEE * 10),
                hospital: &hospital,
                node_signer,
                payout: hospital.address(),
            }))
            .unwrap();
        let settler = dir.join("settler.key");
        write_private(&settler, accounts[5].1.as_bytes());

        let cohort = dir.join("cohort");
        generate(&CohortSpec::new(20, 12, &cohort)).unwrap();
        let (ok, rejected) = orthanc.upload_dir(&cohort.join("dicom")).unwrap();
        assert!(
            ok > 0 && rejected == 0,
            "Orthanc took {ok}, rejected {rejected}"
        );
        let accessions: Vec<String> = std::fs::read_to_string(cohort.join("labels.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').next().map(str::to_owned))
            .collect();

        let publisher = SigningKey::ed25519_from_seed(&[7; 32]);
        TrustStore::add(
            &dir.join("trust"),
            PUBLISHER,
            &publisher.public_key(),
            &[TRAINER.into()],
            None,
        )
        .unwrap();
        let dpo = DpoSigningKey::from_seed(&[9; 32]);
        write_private(&dir.join("hmac.key"), &[0x5a; 32]);
        let tokens = dir.join("tokens");
        write_private(
            &tokens,
            format!(
                "publisher {PUBLISHER_TOKEN} {PUBLISHER}\ndpo {DPO_TOKEN}\nadmin {ADMIN_TOKEN}\n"
            )
            .as_bytes(),
        );
        let config = dir.join("node.toml");
        let toml = NodeConfig {
            dpo_keys: vec![dpo.public().to_string()],
            opt_out: cohort.join("optouts.csv"),
            labels: Some(cohort.join("labels.csv")),
            commit_quantum_secs: Some(1),
            max_jobs: 100_000,
            chain_id: anvil.chain_id(),
            ..NodeConfig::demo(
                dir,
                &orthanc.dicomweb_url(),
                &rpc,
                &market.token.to_string(),
                &market.escrow.to_string(),
            )
        }
        .to_toml();
        std::fs::write(&config, toml).unwrap();

        // The seeded jobs' bundle: a tiny rootfs (these jobs never run; each submission
        // copies the bundle into the job's directory).
        let rootfs = dir.join("seed-rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::write(rootfs.join("trainer"), b"#!/bin/sh\nexit 0\n").unwrap();
        let seed_bundle = bundle(dir, &publisher, "seed", &rootfs, &["/trainer"], 120);
        Self {
            dir: dir.to_owned(),
            config,
            tokens,
            settler,
            hospital: hospital.address(),
            payout: hospital.address(),
            company,
            rpc,
            chain_id: anvil.chain_id(),
            escrow: market.escrow,
            publisher,
            dpo,
            accessions,
            seed_bundle,
        }
    }

    fn serve(&self, bin: &Path, addr: SocketAddr) -> Child {
        Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--tokens")
            .arg(&self.tokens)
            .arg("--hospital")
            .arg(self.hospital.to_string())
            .arg("--payout")
            .arg(self.payout.to_string())
            .arg("--settler-key-file")
            .arg(&self.settler)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("serve.log"))
                    .unwrap(),
            ))
            .spawn()
            .unwrap()
    }

    fn request(&self, manifest: Digest, query: CohortQuery) -> JobRequest {
        JobRequest {
            chain_id: self.chain_id,
            ..job_request(
                PUBLISHER,
                TRAINER,
                manifest,
                query,
                FEE,
                &self.company.address().to_string(),
            )
        }
    }

    fn scoped_query(&self) -> CohortQuery {
        CohortQuery {
            limit: Some(u32::try_from(self.accessions.len()).unwrap()),
            accession_numbers: self.accessions.clone(),
            ..CohortQuery::default()
        }
    }

    /// Uploads a bundle (`POST /v1/bundles`, a bundle archive).
    fn upload(&self, http: &reqwest::blocking::Client, addr: SocketAddr, bundle: &Path) {
        let resp = http
            .post(format!("http://{addr}/v1/bundles"))
            .bearer_auth(PUBLISHER_TOKEN)
            .header("content-type", "application/x-tar")
            .body(pack_bundle_to_vec(bundle).unwrap())
            .send()
            .unwrap();
        let code = resp.status().as_u16();
        assert!(code == 200 || code == 201, "{}", resp.text().unwrap());
    }

    fn submit(&self, http: &reqwest::blocking::Client, addr: SocketAddr, req: &JobRequest) {
        let resp = http
            .post(format!("http://{addr}/v1/jobs"))
            .bearer_auth(PUBLISHER_TOKEN)
            .json(&json!({ "request": req }))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{}", resp.text().unwrap());
    }

    /// `jobs` jobs through the API: REVIEWED with a scoped query (cohort built from Orthanc,
    /// then a DPO review; REJECTED of them rejected), the rest broad queries the scope guard
    /// refuses (receipt and settlement follow). Returns every job id.
    fn seed(&self, addr: SocketAddr, jobs: usize) -> Vec<JobId> {
        let http = reqwest::blocking::Client::new();
        let (bundle, manifest) = &self.seed_bundle;
        let mut ids = Vec::with_capacity(jobs);
        let mut reviewed = Vec::new();
        self.upload(&http, addr, bundle);
        for i in 0..jobs {
            let query = if i % (jobs / REVIEWED) == 0 && reviewed.len() < REVIEWED {
                self.scoped_query()
            } else {
                CohortQuery {
                    modalities: vec!["CT".into()],
                    ..CohortQuery::default()
                }
            };
            let scoped = !query.accession_numbers.is_empty();
            let req = self.request(*manifest, query);
            self.submit(&http, addr, &req);
            ids.push(req.job_id);
            if scoped {
                reviewed.push(req.job_id);
            }
        }
        let settled_target = (jobs - reviewed.len()) as u64;
        wait_counts(addr, |c| {
            c["settled"].as_u64() == Some(settled_target)
                && c["awaiting-approval"].as_u64() == Some(reviewed.len() as u64)
        });
        for job in reviewed.iter().take(REJECTED) {
            let resp = http
                .post(format!("http://{addr}/v1/jobs/{job}/reject"))
                .bearer_auth(DPO_TOKEN)
                .json(&json!({ "reason": "bench: cohort not needed" }))
                .send()
                .unwrap();
            assert_eq!(resp.status().as_u16(), 202, "{}", resp.text().unwrap());
        }
        wait_counts(addr, |c| {
            c["settled"].as_u64() == Some(settled_target + REJECTED as u64)
        });
        ids
    }

    /// The enclave suite's static test trainer, if gcc -static, runc and root are here.
    fn trainer_binary(&self) -> Option<PathBuf> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let runc = Path::new("/usr/sbin/runc").exists();
        let out = self.dir.join("trainer-bin");
        let built = rapha_testkit::trainer::compile_test_trainer(&out);
        (root && runc && built).then_some(out)
    }

    /// Submits a job whose trainer stays up until the bundle's wall limit, deposits for it,
    /// approves it through the API and waits until the node reports it `running`.
    fn start_running_job(&self, addr: SocketAddr, trainer: &Path, wall_seconds: u64) -> JobId {
        let rootfs = self.dir.join("run-rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::copy(trainer, rootfs.join("trainer")).unwrap();
        let (bundle_dir, manifest) = bundle(
            &self.dir,
            &self.publisher,
            "run",
            &rootfs,
            &["/trainer", "never-exit"],
            wall_seconds,
        );
        let http = reqwest::blocking::Client::new();
        let req = self.request(manifest, self.scoped_query());
        let job = req.job_id;
        self.upload(&http, addr, &bundle_dir);
        self.submit(&http, addr, &req);
        wait_state(addr, job, "awaiting-approval", Duration::from_secs(60));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(deposit_for_job(
            &self.rpc,
            self.escrow,
            &self.company,
            &DepositOrder {
                job,
                fee: Usdc::from_base_units(FEE),
                hospital: self.hospital,
                deadline_after_secs: 24 * 3600,
                expected_chain_id: Some(self.chain_id),
                test_token: true,
            },
        ))
        .unwrap();
        let pending: Value = http
            .get(format!("http://{addr}/v1/approvals/pending"))
            .bearer_auth(DPO_TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let entry = pending["pending"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["job_id"] == job.to_string())
            .expect("the job is pending review");
        let digest: Digest = serde_json::from_value(entry["job_digest"].clone()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let approval = self.dpo.approve(digest, now, now + 3600).unwrap();
        let resp = http
            .post(format!("http://{addr}/v1/jobs/{job}/approve"))
            .bearer_auth(DPO_TOKEN)
            .json(&approval)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{}", resp.text().unwrap());
        wait_state(addr, job, "running", Duration::from_secs(60));
        job
    }
}

/// Builds and signs a bundle of `rootfs` with `entrypoint`.
fn bundle(
    dir: &Path,
    key: &SigningKey,
    name: &str,
    rootfs: &Path,
    entrypoint: &[&str],
    wall_seconds: u64,
) -> (PathBuf, Digest) {
    let limits = SpecLimits {
        wall_seconds,
        ..SpecLimits::SMALL
    };
    let spec = trainer_spec(PUBLISHER, TRAINER, &limits).unwrap();
    sign_rootfs(dir, name, rootfs, entrypoint, &spec, key).unwrap()
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One HTTP/1.1 GET on a fresh connection; the status code, or None if nothing answers.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((code, body))
}

/// Time from `since` to the first 200 on `path`, polling every millisecond.
fn wait_for(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    while since.elapsed() < limit {
        if get(addr, path, token).is_some_and(|(c, _)| c == 200) {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn wait_ready(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    wait_for(addr, "/healthz", None, Instant::now(), limit)
}

fn metrics(addr: SocketAddr) -> Value {
    let (code, text) = get(addr, "/metrics", Some(ADMIN_TOKEN)).expect("metrics");
    assert_eq!(code, 200, "{text}");
    let mut out = serde_json::Map::new();
    for line in text.lines().filter(|l| l.starts_with("rapha_jobs{")) {
        let (name, n) = line.rsplit_once(' ').unwrap();
        let state = name
            .trim_start_matches("rapha_jobs{state=\"")
            .trim_end_matches("\"}");
        let n: u64 = n.parse().unwrap();
        if n > 0 {
            out.insert(state.to_owned(), n.into());
        }
    }
    Value::Object(out)
}

fn wait_counts(addr: SocketAddr, done: impl Fn(&Value) -> bool) {
    let t = Instant::now();
    loop {
        let c = metrics(addr);
        if done(&c) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1800),
            "seeding stalled: {c}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn job_state(addr: SocketAddr, job: JobId) -> String {
    let (code, body) = get(addr, &format!("/v1/jobs/{job}"), Some(ADMIN_TOKEN)).expect("status");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["state"].as_str().unwrap().to_owned()
}

fn wait_state(addr: SocketAddr, job: JobId, want: &str, limit: Duration) {
    let t = Instant::now();
    loop {
        let s = job_state(addr, job);
        if s == want {
            return;
        }
        assert!(
            t.elapsed() < limit,
            "job {job} is {s}, never reached {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_status_script(path: &Path, ids: &[JobId]) {
    let list: Vec<String> = ids.iter().map(|i| format!("\"{i}\"")).collect();
    std::fs::write(
        path,
        format!(
            "wrk.headers[\"Authorization\"] = \"Bearer {PUBLISHER_TOKEN}\"\n\
             local ids = {{ {} }}\n\
             local n = 0\n\
             request = function()\n  n = n + 1\n  \
             return wrk.format(\"GET\", \"/v1/jobs/\" .. ids[(n % #ids) + 1])\nend\n",
            list.join(", ")
        ),
    )
    .unwrap();
}

/// What one wrk run reported.
#[derive(Clone)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: String,
    /// 1-minute load average when the run ended.
    load: String,
}

impl Load {
    /// The run with the median p99 (its other figures with it), throughput the median of all.
    fn median(runs: &[Load]) -> Load {
        let mut by_p99 = runs.to_vec();
        by_p99.sort_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
        let mut rps: Vec<f64> = runs.iter().map(|l| l.rps).collect();
        rps.sort_by(f64::total_cmp);
        Load {
            rps: rps[rps.len() / 2],
            ..by_p99[by_p99.len() / 2].clone()
        }
    }

    fn print(&self, what: &str) {
        println!(
            "{what}: {:.0} req/s, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms ({} requests, \
             {} non-2xx, socket errors: {}; load average {})",
            self.rps,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.requests,
            self.non_2xx,
            self.socket_errors,
            self.load
        );
    }
}

fn wrk(addr: SocketAddr, path: &str, script: Option<&Path>, secs: u64) -> Load {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        "-c200",
        &format!("-d{secs}s"),
        "--latency",
        "--timeout",
        "10s",
    ]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {text}");
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .map(|l| l[prefix.len()..].trim())
    };
    let pct = |p: &str| parse_latency(field(p).unwrap_or_else(|| panic!("no {p} in: {text}")));
    Load {
        rps: field("Requests/sec:").unwrap().parse().unwrap(),
        p50_ms: pct("50%"),
        p90_ms: pct("90%"),
        p99_ms: pct("99%"),
        requests: text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        non_2xx: field("Non-2xx or 3xx responses:").map_or(0, |n| n.parse().unwrap()),
        socket_errors: field("Socket errors:").unwrap_or("none").to_owned(),
        load: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default(),
    }
}

/// wrk's latency figure (`812.00us`, `1.20ms`, `2.01s`) in milliseconds.
fn parse_latency(s: &str) -> f64 {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().unwrap();
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        other => panic!("unknown latency unit {other:?} in {s:?}"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2
    }
}

fn min(v: &[Duration]) -> Duration {
    v.iter().copied().min().unwrap()
}

fn max(v: &[Duration]) -> Duration {
    v.iter().copied().max().unwrap()
}
