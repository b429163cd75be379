//! `rapha job submit|status|fetch|deposit`: the AI company's side of a job at a hospital node.
//!
//! ```text
//!  submit ──► POST /v1/bundles (the signed bundle, as a strict tar) ──► POST /v1/jobs
//!  deposit ──► the escrow on chain (see deposit.rs)
//!  status [--watch] ──► GET /v1/jobs/{id} until finished
//!  fetch ──► GET receipt ──► verify offline (verify.rs) ──► GET every output, sha256 against
//!            the receipt ──► temp name, fsync, rename into --out
//! ```
//!
//! Nothing downloaded is trusted before the receipt verifies and every file matches the digest
//! the receipt commits to; a mismatch leaves nothing in the output directory.

use std::collections::BTreeSet;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use rapha_core::{CohortQuery, Digest, JobId, JobRequest, Outcome, Usdc};
use rapha_receipt::{parse_address, Address, VerifyOptions};
use serde_json::{json, Value};

use crate::client::{NodeArgs, NodeClient};
use crate::deposit::DepositArgs;
use crate::exit::{self, Failure, OutputMismatch};

/// Job commands.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Upload a signed bundle to a hospital node and submit a job request that names it.
    #[command(after_help = exit::help())]
    Submit(SubmitArgs),
    /// Approve and deposit a job's fee in USDC into the escrow, naming the hospital.
    #[command(after_help = exit::help())]
    Deposit(DepositArgs),
    /// Show a job's state and progress; with --watch, follow it until it is finished.
    #[command(after_help = exit::help())]
    Status(StatusArgs),
    /// Download a job's receipt and released outputs, verify them, write them to --out.
    #[command(after_help = exit::help())]
    Fetch(FetchArgs),
}

/// Runs a job command; with `--json` a failure is also printed as JSON on stdout.
pub fn run(cmd: JobCommand) -> anyhow::Result<()> {
    let (json, result) = match cmd {
        JobCommand::Submit(a) => (a.json, submit(&a)),
        JobCommand::Deposit(a) => (a.json, crate::deposit::deposit(&a)),
        JobCommand::Status(a) => (a.json, status(&a)),
        JobCommand::Fetch(a) => (a.json, fetch(&a)),
    };
    match result {
        Ok(out) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&out.json)?);
            } else {
                print!("{}", out.text);
            }
            out.then
        }
        Err(e) => {
            if json {
                exit::print_json_error(&e);
            }
            Err(e)
        }
    }
}

/// A command's result: what to print, and whether the command still fails (a job that ended
/// refused prints its status, then exits 3).
pub struct Printed {
    pub json: Value,
    pub text: String,
    pub then: anyhow::Result<()>,
}

impl Printed {
    pub fn ok(json: Value, text: String) -> Self {
        Self {
            json,
            text,
            then: Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// submit

/// What the trainer is to be trained on: the node's scope guard refuses broad queries; an
/// empty one is refused here.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// A StudyInstanceUID to include (repeatable).
    #[arg(long = "study-uid", value_name = "UID")]
    pub study_uids: Vec<String>,
    /// An AccessionNumber to include (repeatable).
    #[arg(long = "accession", value_name = "ACCESSION")]
    pub accessions: Vec<String>,
    /// A file of AccessionNumbers, one per line (added to --accession).
    #[arg(long, value_name = "FILE")]
    pub accessions_file: Option<PathBuf>,
    /// Study date range, YYYYMMDD-YYYYMMDD (inclusive).
    #[arg(long, value_name = "FROM-TO")]
    pub study_date: Option<String>,
    /// A modality in the study, e.g. CT (repeatable, or comma-separated).
    #[arg(long = "modality", value_name = "MODALITY", value_delimiter = ',')]
    pub modalities: Vec<String>,
    /// At most this many studies.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
}

impl QueryArgs {
    /// The query, or why it cannot be sent.
    ///
    /// # Errors
    /// An unreadable accessions file, a malformed date range, an empty query.
    pub fn to_query(&self) -> anyhow::Result<CohortQuery> {
        let mut accession_numbers = self.accessions.clone();
        if let Some(file) = &self.accessions_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            accession_numbers.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        if let Some(range) = &self.study_date {
            check_date_range(range)?;
        }
        let modalities: Vec<String> = self
            .modalities
            .iter()
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty())
            .collect();
        let query = CohortQuery {
            study_uids: self.study_uids.clone(),
            accession_numbers,
            study_date: self.study_date.clone(),
            modalities,
            limit: self.limit,
        };
        if query == CohortQuery::default() {
            anyhow::bail!(
                "empty query: name the studies (--study-uid, --accession, --accessions-file) or \
                 bound them (--study-date FROM-TO, --modality, --limit N); the node refuses \
                 broad queries, and an empty one is refused here"
            );
        }
        Ok(query)
    }
}

fn check_date_range(range: &str) -> anyhow::Result<()> {
    let bad = || anyhow::anyhow!("--study-date {range:?} is not YYYYMMDD-YYYYMMDD");
    let (from, to) = range.split_once('-').ok_or_else(bad)?;
    let date = |d: &str| -> Option<(u32, u32, u32)> {
        if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let y = d[..4].parse().ok()?;
        let m = d[4..6].parse().ok()?;
        let day = d[6..].parse().ok()?;
        ((1..=12).contains(&m) && (1..=31).contains(&day)).then_some((y, m, day))
    };
    let (from, to) = (date(from).ok_or_else(bad)?, date(to).ok_or_else(bad)?);
    if from > to {
        anyhow::bail!("--study-date {range:?} ends before it starts");
    }
    Ok(())
}

/// `rapha job submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The signed bundle directory (from `rapha bundle sign`).
    #[arg(value_name = "BUNDLE_DIR")]
    pub bundle: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub query: QueryArgs,
    /// The fee in USDC, e.g. 120.00 (at most 6 decimals; parsed exactly).
    #[arg(long)]
    pub fee: Usdc,
    /// Percent of patients the node holds out for validation.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(1..=99))]
    pub validation_percent: u8,
    /// Chain the fee is paid on (137 Polygon PoS, 80002 Amoy).
    #[arg(long, default_value_t = 137)]
    pub chain_id: u64,
    /// The address that deposits the fee (refunded for a refused or failed job).
    #[arg(long, value_name = "0x…", required_unless_present = "key")]
    pub depositor: Option<String>,
    /// Or: the wallet key file `rapha job deposit --key` will use; its address is the
    /// depositor.
    #[arg(long = "key", value_name = "WALLET_KEY", conflicts_with = "depositor")]
    pub key: Option<PathBuf>,
    /// Share pseudonyms with the other jobs of this group (e.g. the rounds of one federated
    /// run), if the hospital allows it for you; by default a job's pseudonyms are its own.
    #[arg(long, value_name = "GROUP", value_parser = parse_linkage)]
    pub linkage: Option<rapha_core::LinkageGroup>,
    /// Where to keep the job request sent (default: job-<id>.json in the current directory).
    #[arg(long, value_name = "FILE")]
    pub request_out: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_linkage(s: &str) -> Result<rapha_core::LinkageGroup, String> {
    rapha_core::LinkageGroup::new(s).map_err(|e| e.to_string())
}

fn depositor(args: &SubmitArgs) -> anyhow::Result<String> {
    if let Some(d) = &args.depositor {
        let a: Address = parse_address(d)
            .map_err(|e| anyhow::anyhow!("--depositor {d:?} is not an address: {e}"))?;
        return Ok(a.to_string());
    }
    let Some(path) = &args.key else {
        anyhow::bail!("name the depositor with --depositor 0x… or --key WALLET_KEY");
    };
    let key = crate::deposit::load_wallet_key(path)?;
    Ok(key.address().to_string())
}

/// What a signed bundle claims, read locally (the node verifies it).
struct BundleClaims {
    manifest: Digest,
    publisher: String,
    trainer: String,
    requested_fields: Vec<String>,
}

fn bundle_claims(dir: &Path) -> anyhow::Result<BundleClaims> {
    let ins = rapha_bundle::inspect_bundle(dir)
        .with_context(|| format!("reading the bundle {}", dir.display()))?;
    let (Some(manifest), Some(signed), Some(p)) =
        (&ins.manifest_digest, &ins.signed_manifest, &ins.predicate)
    else {
        anyhow::bail!(
            "{} is not a signed bundle; sign it with `rapha bundle sign` first",
            dir.display()
        );
    };
    if manifest != signed {
        anyhow::bail!(
            "the bundle's signature covers {signed}, not its manifest {manifest}; sign it again"
        );
    }
    Ok(BundleClaims {
        manifest: manifest
            .parse()
            .with_context(|| format!("bundle manifest digest {manifest:?}"))?,
        publisher: p.publisher.clone(),
        trainer: p.trainer.name.clone(),
        requested_fields: p.requested_fields.clone(),
    })
}

fn submit(args: &SubmitArgs) -> anyhow::Result<Printed> {
    let query = args.query.to_query()?;
    let depositor = depositor(args)?;
    let claims = bundle_claims(&args.bundle)?;
    let client = NodeClient::new(&args.node)?;
    let request = JobRequest {
        job_id: JobId::random(),
        publisher: claims.publisher,
        trainer: claims.trainer,
        bundle_manifest: claims.manifest,
        query,
        requested_fields: claims.requested_fields,
        validation_percent: args.validation_percent,
        fee: args.fee,
        chain_id: args.chain_id,
        depositor,
        linkage: args.linkage.clone(),
    };
    // Checked before anything is sent, so a submitted job always has its request kept.
    let path = args
        .request_out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("job-{}.json", request.job_id)));
    if path.exists() {
        anyhow::bail!(
            "{} exists; choose another --request-out (the request sent is kept there)",
            path.display()
        );
    }

    // Pack to a temporary file and stream it: a bundle can be large.
    let mut packed = tempfile::tempfile().context("creating a temporary file")?;
    let mut writer = std::io::BufWriter::new(&mut packed);
    let bytes = rapha_bundle::pack_bundle(&args.bundle, &mut writer)
        .with_context(|| format!("packing {}", args.bundle.display()))?;
    writer.flush().context("writing the packed bundle")?;
    drop(writer);
    std::io::Seek::rewind(&mut packed).context("rewinding the packed bundle")?;
    let uploaded = client.post_file("/v1/bundles", "application/x-tar", packed, bytes)?;
    let stored = uploaded["bundle_manifest"].as_str().unwrap_or_default();
    if stored.parse::<Digest>().ok() != Some(request.bundle_manifest) {
        return Err(Failure::NodeError {
            url: client.base().to_owned(),
            status: 201,
            code: "bad-response".into(),
            message: format!(
                "the node stored the bundle as {stored:?}, not its manifest {}; not submitting",
                request.bundle_manifest.to_oci()
            ),
        }
        .into());
    }

    let answer = client.post_json("/v1/jobs", &json!({ "request": request }))?;
    if answer["job_id"].as_str() != Some(request.job_id.to_string().as_str()) {
        return Err(Failure::NodeError {
            url: client.base().to_owned(),
            status: 202,
            code: "bad-response".into(),
            message: format!(
                "the node answered job id {} for request {}",
                answer["job_id"], request.job_id
            ),
        }
        .into());
    }
    let body = serde_json::to_vec_pretty(&request)?;
    write_new(&path, &body)?;
    let digest = request.digest();
    let out = json!({
        "job_id": request.job_id.to_string(),
        "node": client.base(),
        "bundle_manifest": request.bundle_manifest.to_oci(),
        "publisher": request.publisher,
        "trainer": request.trainer,
        "fee": request.fee.to_string(),
        "chain_id": request.chain_id,
        "depositor": request.depositor,
        "request_path": path.display().to_string(),
        "request_digest": digest.to_string(),
        "query": request.query,
    });
    let text = format!(
        "submitted job {id}\n  bundle   {manifest} ({publisher} / {trainer}) uploaded\n  \
         request  {path} (sha256 {digest})\n  next     rapha job deposit {id} --fee {fee} \
         --escrow ESCROW --rpc RPC --key WALLET_KEY --hospital HOSPITAL\n           rapha job \
         status {id} --node {node} --watch\n",
        id = request.job_id,
        manifest = request.bundle_manifest.to_oci(),
        publisher = request.publisher,
        trainer = request.trainer,
        path = path.display(),
        fee = request.fee,
        node = client.base(),
    );
    Ok(Printed::ok(out, text))
}

/// Writes `bytes` to a new file (refusing to replace a different one), through a temporary
/// name, fsynced, then renamed.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Ok(existing) = std::fs::read(path) {
        if existing == bytes {
            return Ok(());
        }
        anyhow::bail!(
            "{} exists and differs; move it away or choose another path",
            path.display()
        );
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".rapha-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {}", path.display(), e.error))?;
    sync_dir(dir);
    Ok(())
}

/// Makes renames in `dir` durable; best effort (not every filesystem allows it).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

// ---------------------------------------------------------------------------------------------
// status

fn poll_interval(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if (0.1..=3600.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "{text:?} is not a number of seconds from 0.1 to 3600"
        )),
    }
}

/// `rapha job status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job id (32 hex digits).
    pub job: JobId,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Poll until the job is finished; exit 3 if it ended refused or failed.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between polls with --watch (0.1 to 3600).
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = poll_interval)]
    pub interval: Duration,
    /// Give up watching after this many seconds (exit 1); default: watch until finished.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The job's status as the CLI reports it (stable field names).
#[derive(Clone, Debug, PartialEq)]
struct Status {
    job_id: String,
    state: String,
    step: u64,
    of: u64,
    outcome: Option<String>,
    reason: Option<String>,
    records: Value,
    finished: Option<bool>,
}

impl Status {
    fn from_api(v: &Value, node: &str) -> Result<Self, Failure> {
        let state = v["state"].as_str().ok_or_else(|| Failure::NodeError {
            url: node.to_owned(),
            status: 200,
            code: "bad-response".into(),
            message: "the job status has no state".into(),
        })?;
        Ok(Self {
            job_id: v["job_id"].as_str().unwrap_or_default().to_owned(),
            state: state.to_owned(),
            step: v["progress"]["step"].as_u64().unwrap_or(0),
            of: v["progress"]["of"].as_u64().unwrap_or(0),
            outcome: v["outcome"].as_str().map(str::to_owned),
            reason: v["reason"].as_str().map(str::to_owned),
            records: v.get("records").cloned().unwrap_or(Value::Null),
            finished: v["finished"].as_bool(),
        })
    }

    /// The node says whether the job is at its end (released when completed and paid,
    /// settled otherwise); a node from before that field ends every job at settled.
    fn terminal(&self) -> bool {
        self.finished.unwrap_or(self.state == "settled")
    }

    fn json(&self) -> Value {
        json!({
            "job_id": self.job_id,
            "state": self.state,
            "terminal": self.terminal(),
            "progress": { "step": self.step, "of": self.of },
            "outcome": self.outcome,
            "reason": self.reason,
            "records": self.records,
        })
    }

    fn line(&self) -> String {
        let mut s = format!(
            "job {}: {} (step {}/{})",
            self.job_id, self.state, self.step, self.of
        );
        if let Some(o) = &self.outcome {
            s.push_str(&format!(", outcome {o}"));
        }
        if let Some(r) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            s.push_str(&format!(": {r}"));
            if let Some(why) = explain(r) {
                s.push_str(&format!(" ({why})"));
            }
        }
        if let Some(hint) = self.hint() {
            s.push_str(&format!(" — {hint}"));
        }
        s
    }

    fn hint(&self) -> Option<&'static str> {
        match self.state.as_str() {
            // The node shows `admitted` from admission until its DPO decides (how long the
            // cohort took to build is the hospital's).
            "admitted" | "awaiting-approval" => {
                Some("the hospital builds the cohort and its DPO reviews the job")
            }
            "awaiting-deposit" => Some("waiting for your deposit (rapha job deposit)"),
            "running" => Some("the trainer is running (its end is shown on a whole minute)"),
            _ => None,
        }
    }

    /// One-line progress bar for a terminal.
    fn bar(&self) -> String {
        const WIDTH: u64 = 24;
        let filled = (self.step + 1)
            .min(self.of)
            .saturating_mul(WIDTH)
            .checked_div(self.of)
            .unwrap_or(0);
        let mut bar = "#".repeat(usize::try_from(filled).unwrap_or(0));
        bar.push_str(&"-".repeat(usize::try_from(WIDTH - filled).unwrap_or(0)));
        format!(
            "[{bar}] {}/{} {}{}",
            self.step + 1,
            self.of,
            self.state,
            self.hint().map(|h| format!(" — {h}")).unwrap_or_default()
        )
    }

    /// The outcome as a typed failure when the job is settled without completing.
    fn ended(&self) -> anyhow::Result<()> {
        match (self.terminal(), self.outcome.as_deref()) {
            (true, Some(o)) if o != "completed" => Err(Failure::JobNotCompleted {
                job: self.job_id.parse().unwrap_or(JobId::from_bytes([0; 16])),
                outcome: o.to_owned(),
                reason: self.reason.clone().unwrap_or_default(),
            }
            .into()),
            _ => Ok(()),
        }
    }
}

/// What a reason code means for the AI company, from the fixed vocabulary the node answers
/// with (`rapha_core::ReasonCode`): the node never sends more (no file names, exit statuses
/// or which rule of the guard fired), so neither does the CLI.
fn explain(code: &str) -> Option<&'static str> {
    use rapha_core::ReasonCode as R;
    let code = R::parse(code)?;
    Some(match code {
        R::Completed => "the outputs passed the output guard",
        R::OutputGuard => {
            "the hospital's output guard refused the outputs: nothing is released, the fee is \
             charged, and your publisher is suspended until the hospital's DPO reviews the job"
        }
        R::TrainerFailed => {
            "the trainer failed (exit status, memory or wall time): nothing is released, the \
             fee is charged"
        }
        R::PublisherSuspended => {
            "your publisher is suspended after an earlier output-guard violation; the hospital's \
             DPO lifts it after review (refunded)"
        }
        R::QuotaExceeded => "your publisher is at its quota on this node (refunded)",
        R::DpoRejected => "the hospital's DPO rejected the job (refunded)",
        _ => match code.outcome() {
            Outcome::Refused => "refused before the trainer ran (refunded)",
            Outcome::Failed => "the node failed, not the trainer (refunded)",
            _ => return None,
        },
    })
}

fn get_status(client: &NodeClient, job: JobId) -> Result<Status, Failure> {
    Status::from_api(&client.get_json(&format!("/v1/jobs/{job}"))?, client.base())
}

fn status(args: &StatusArgs) -> anyhow::Result<Printed> {
    let client = NodeClient::new(&args.node)?;
    let mut st = get_status(&client, args.job)?;
    if args.watch {
        let tty = std::io::stderr().is_terminal();
        let interval = args.interval;
        let started = Instant::now();
        let mut last: Option<(String, Instant)> = None;
        loop {
            let mut err = std::io::stderr().lock();
            if tty {
                let _ = write!(err, "\r\x1b[2K{}", st.bar());
            } else {
                // Plain lines: on every change of state, and once a minute while it holds.
                let due = last.as_ref().is_none_or(|(s, at)| {
                    *s != st.state || at.elapsed() >= Duration::from_secs(60)
                });
                if due {
                    let _ = writeln!(err, "{}", st.line());
                    last = Some((st.state.clone(), Instant::now()));
                }
            }
            let _ = err.flush();
            drop(err);
            if st.terminal() {
                break;
            }
            if let Some(limit) = args.timeout {
                if started.elapsed() >= Duration::from_secs(limit) {
                    if tty {
                        eprintln!();
                    }
                    anyhow::bail!(
                        "job {} is still {} after {limit} s; run `rapha job status --watch` \
                         again to keep following it",
                        args.job,
                        st.state
                    );
                }
            }
            std::thread::sleep(interval);
            st = get_status(&client, args.job)?;
        }
        if tty {
            eprintln!();
        }
    }
    let then = if args.watch { st.ended() } else { Ok(()) };
    Ok(Printed {
        json: st.json(),
        text: format!("{}\n", st.line()),
        then,
    })
}

// ---------------------------------------------------------------------------------------------
// fetch

/// `rapha job fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The job id (32 hex digits).
    pub job: JobId,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Directory to write the receipt and the released outputs to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The node address you trust (0x…); without it, the address the receipt names is used
    /// and the result says so.
    #[arg(long, value_name = "ADDR")]
    pub node_address: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The receipt's file name in the output directory.
pub const RECEIPT_FILE: &str = "receipt.json";

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// A downloaded file, checked, waiting in the staging directory.
struct Staged {
    name: String,
    staged: PathBuf,
    sha256: Digest,
    bytes: u64,
}

fn fetch(args: &FetchArgs) -> anyhow::Result<Printed> {
    let node_address = args
        .node_address
        .as_deref()
        .map(|a| {
            parse_address(a)
                .map_err(|e| anyhow::anyhow!("--node-address {a:?} is not an address: {e}"))
        })
        .transpose()?;
    let client = NodeClient::new(&args.node)?;
    let job = args.job;

    // The receipt first: nothing else is looked at unless it verifies.
    let receipt = client.get_bytes(&format!("/v1/jobs/{job}/receipt"))?;
    let verified = crate::verify::check(
        &receipt,
        &VerifyOptions {
            node_address,
            sth: None,
            consistency_from: None,
        },
    )?;
    if verified.body.job_id != job {
        return Err(Failure::Receipt {
            code: exit::VERIFICATION,
            class: "wrong-job",
            message: format!(
                "the node served the receipt of job {} for job {job}",
                verified.body.job_id
            ),
        }
        .into());
    }
    let declared = verified
        .body
        .outputs
        .as_ref()
        .map(|o| o.files.clone())
        .unwrap_or_default();
    let completed = verified.body.outcome == Outcome::Completed;

    // The node's listing must be exactly the receipt's files (plus the receipt itself).
    let names: BTreeSet<String> = declared.iter().map(|f| f.name.clone()).collect();
    for f in &declared {
        if !plain_name(&f.name) || f.name == RECEIPT_FILE {
            return Err(Failure::OutputSet(format!(
                "the receipt names an output {:?} that cannot be a plain file name here",
                f.name
            ))
            .into());
        }
    }
    if completed {
        let listing = client.get_json(&format!("/v1/jobs/{job}/outputs"))?;
        let served: BTreeSet<String> = listing["files"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["name"].as_str())
                    .filter(|n| *n != RECEIPT_FILE)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if served != names {
            return Err(Failure::OutputSet(format!(
                "the node released {:?} but the receipt commits to {:?}",
                served, names
            ))
            .into());
        }
    }

    let created = !args.out.exists();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let result = (|| {
        let staging = tempfile::Builder::new()
            .prefix(".rapha-fetch-")
            .tempdir_in(&args.out)
            .with_context(|| format!("creating a staging directory in {}", args.out.display()))?;
        let mut staged = Vec::new();
        if completed {
            for f in &declared {
                let path = staging.path().join(&f.name);
                let (sha256, bytes) = download(
                    &client,
                    &format!("/v1/jobs/{job}/outputs/{}", f.name),
                    &path,
                    f.bytes,
                )?;
                if sha256 != f.sha256 || bytes != f.bytes {
                    return Err(Failure::OutputDigest(Box::new(OutputMismatch {
                        name: f.name.clone(),
                        expected: f.sha256,
                        expected_bytes: f.bytes,
                        found: sha256,
                        found_bytes: bytes,
                        dir: args.out.clone(),
                    }))
                    .into());
                }
                staged.push(Staged {
                    name: f.name.clone(),
                    staged: path,
                    sha256,
                    bytes,
                });
            }
        }
        let path = staging.path().join(RECEIPT_FILE);
        write_synced(&path, &receipt)?;
        staged.push(Staged {
            name: RECEIPT_FILE.into(),
            staged: path,
            sha256: Digest::of(&receipt),
            bytes: receipt.len() as u64,
        });
        install(staged, &args.out)
    })();
    let written = match result {
        Ok(w) => w,
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir(&args.out);
            }
            return Err(e);
        }
    };

    let outcome = verified.body.outcome.as_str();
    let files: Vec<Value> = written
        .iter()
        .map(|(s, fresh)| {
            json!({
                "name": s.name,
                "bytes": s.bytes,
                "sha256": s.sha256.to_string(),
                "path": args.out.join(&s.name).display().to_string(),
                "written": fresh,
            })
        })
        .collect();
    let out = json!({
        "job_id": job.to_string(),
        "outcome": outcome,
        "reason": verified.body.reason,
        "verified": true,
        "signer": verified.signer.to_string(),
        "signer_pinned": verified.signer_pinned,
        "receipt_digest": verified.receipt_digest.to_string(),
        "out_dir": args.out.display().to_string(),
        "files": files,
    });
    let mut text = format!(
        "fetched job {job} ({outcome}) into {}\n  receipt  verified, signed by {} ({})\n",
        args.out.display(),
        verified.signer,
        if verified.signer_pinned {
            "matches --node-address"
        } else {
            "NOT pinned: pass --node-address to check it is your node"
        },
    );
    for (s, fresh) in &written {
        text.push_str(&format!(
            "  {:<8} {} ({} bytes) sha256 {}{}\n",
            if s.name == RECEIPT_FILE {
                "receipt"
            } else {
                "output"
            },
            s.name,
            s.bytes,
            s.sha256,
            if *fresh { "" } else { " (already there)" }
        ));
    }
    let then = if completed {
        Ok(())
    } else {
        Err(Failure::JobNotCompleted {
            job,
            outcome: outcome.to_owned(),
            reason: verified.body.reason.clone(),
        }
        .into())
    };
    Ok(Printed {
        json: out,
        text,
        then,
    })
}

/// Streams `path` of the node into `to`, hashing as it goes; fsynced. Reads at most one byte
/// more than `expected` (the receipt's size), so a node cannot fill the disk: a longer file
/// then fails the size check.
fn download(
    client: &NodeClient,
    url: &str,
    to: &Path,
    expected: u64,
) -> anyhow::Result<(Digest, u64)> {
    let mut resp = client.get_stream(url)?.take(expected.saturating_add(1));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .with_context(|| format!("creating {}", to.display()))?;
    let mut hasher = Digest::hasher();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = resp.read(&mut buf).map_err(|e| Failure::NodeError {
            url: client.base().to_owned(),
            status: 200,
            code: "bad-response".into(),
            message: format!("the download of {url} broke off: {e}"),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", to.display()))?;
        total += n as u64;
    }
    file.sync_all()
        .with_context(|| format!("syncing {}", to.display()))?;
    Ok((hasher.finish(), total))
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Moves checked files from staging into `dir`. A file already there with the same content
/// is kept; one with different content stops everything before any file is moved.
fn install(staged: Vec<Staged>, dir: &Path) -> anyhow::Result<Vec<(Staged, bool)>> {
    let mut plan = Vec::new();
    for s in staged {
        let target = dir.join(&s.name);
        match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => plan.push((s, true)),
            Err(e) => return Err(e).with_context(|| format!("checking {}", target.display())),
            Ok(meta) => {
                let same = meta.is_file()
                    && std::fs::read(&target).is_ok_and(|b| Digest::of(&b) == s.sha256);
                if !same {
                    anyhow::bail!(
                        "{} exists and is not the file the receipt commits to; move it away or \
                         fetch into another --out (nothing was written)",
                        target.display()
                    );
                }
                plan.push((s, false));
            }
        }
    }
    for (s, fresh) in &plan {
        if *fresh {
            let target = dir.join(&s.name);
            std::fs::rename(&s.staged, &target)
                .with_context(|| format!("moving {} into place", target.display()))?;
        }
    }
    sync_dir(dir);
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, step: u64) -> Status {
        Status {
            job_id: "00".repeat(16),
            state: state.into(),
            step,
            of: 17,
            outcome: None,
            reason: None,
            records: Value::Null,
            finished: None,
        }
    }

    #[test]
    fn the_progress_bar_fills_with_the_step_and_names_what_the_job_waits_for() {
        assert_eq!(
            status("received", 0).bar(),
            "[#-----------------------] 1/17 received"
        );
        assert_eq!(
            status("awaiting-deposit", 6).bar(),
            "[#########---------------] 7/17 awaiting-deposit — waiting for your deposit \
             (rapha job deposit)"
        );
        assert_eq!(
            status("settled", 16).bar(),
            "[########################] 17/17 settled"
        );
    }

    #[test]
    fn only_a_settled_job_that_did_not_complete_is_a_failure() {
        let mut st = status("settled", 16);
        st.outcome = Some("completed".into());
        assert!(st.ended().is_ok());
        st.outcome = Some("refused".into());
        st.reason = Some("query-refused".into());
        let err = st.ended().unwrap_err();
        assert_eq!(
            crate::exit::classify(&err).0,
            crate::exit::JOB_NOT_COMPLETED
        );
        assert!(err.to_string().ends_with("ended refused: query-refused"));
        st.outcome = Some("violated".into());
        st.reason = Some("output-guard".into());
        assert!(st.ended().is_err(), "a violated job is not a success");
        assert!(
            st.line()
                .contains("output-guard (the hospital's output guard refused the outputs"),
            "{}",
            st.line()
        );
        // A reason outside the vocabulary is printed as sent, never explained.
        st.reason = Some("something else".into());
        assert!(st.line().ends_with(": something else"), "{}", st.line());
        let mut running = status("refused", 12);
        running.outcome = Some("refused".into());
        assert!(running.ended().is_ok(), "not settled yet: still watched");
    }

    #[test]
    fn date_ranges_are_checked_before_sending() {
        assert!(check_date_range("20240101-20241231").is_ok());
        assert!(check_date_range("20240101-20240101").is_ok());
        for bad in [
            "2024-2025",
            "20240101",
            "20240101-2024123",
            "20240132-20240201",
        ] {
            assert!(check_date_range(bad).is_err(), "{bad}");
        }
        assert!(check_date_range("20240201-20240101").is_err());
    }
}
