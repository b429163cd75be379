//! `rapha-node approve` and `rapha-node approvals list|revoke`: the DPO's sign-off (step 4).
//!
//! `approve` shows the job and its cohort summary, asks for confirmation, and signs an
//! approval bound to the job digest (which covers the job request and the cohort commitment).
//! An approval can be revoked until the job starts, never after.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use rapha_core::demographics::{shown_count, SMALL_CELL};
use rapha_core::Digest;
use rapha_policy::{ApprovalStore, DpoPublicKey, DpoSigningKey, Mode, ReviewRequest};

use crate::config::Config;

/// Arguments of `approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// Digest of the job to approve (from `rapha-node approvals list`).
    pub job_digest: Digest,
    /// The DPO's Ed25519 key file (`rapha-node keygen --dpo`).
    #[arg(long)]
    pub key: PathBuf,
    /// Validity: a duration (`72h`, `7d`, `30m`) or an RFC 3339 time. Default 7d.
    #[arg(long, default_value = "7d")]
    pub expires: String,
    /// Node configuration file.
    #[arg(long, env = "RAPHA_NODE_CONFIG")]
    pub config: PathBuf,
    /// Sign without asking for confirmation (the summary is still printed).
    #[arg(long)]
    pub yes: bool,
}

/// Arguments of `approvals`.
#[derive(Debug, Args)]
pub struct ApprovalsArgs {
    /// Node configuration file.
    #[arg(long, env = "RAPHA_NODE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ApprovalsCommand,
}

/// `approvals` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Every job waiting for review or approved, with its state.
    List,
    /// Revokes the approval of a job that has not started.
    Revoke {
        /// Digest of the job.
        job_digest: Digest,
    },
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses `--expires` relative to `now`: `Nd`, `Nh`, `Nm` or an RFC 3339 time.
///
/// # Errors
/// For anything else, or a time not after `now`.
pub fn parse_expiry(s: &str, now: u64) -> anyhow::Result<u64> {
    let unit = |suffix: char, secs: u64| -> Option<u64> {
        let n: u64 = s.strip_suffix(suffix)?.parse().ok()?;
        now.checked_add(n.checked_mul(secs)?)
    };
    let at = unit('d', 86_400)
        .or_else(|| unit('h', 3_600))
        .or_else(|| unit('m', 60));
    let at = match at {
        Some(t) => t,
        None => {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .with_context(|| {
                    format!("--expires {s:?}: expected e.g. 72h, 7d, 30m or an RFC 3339 time")
                })?;
            u64::try_from(t.unix_timestamp()).context("--expires is before 1970")?
        }
    };
    if at <= now {
        bail!("--expires {s:?} is not in the future");
    }
    Ok(at)
}

/// Unix seconds as RFC 3339 (the number itself if it is out of range).
pub(crate) fn format_time(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// `text` as the DPO's terminal may show it: printable ASCII as it is, every other character
/// (newlines, escape sequences, bidirectional overrides, a backslash) escaped as Rust writes it
/// (`\n`, `\u{1b}`), so that a string a publisher chose cannot move the cursor, erase a line
/// or print a forged one.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == ' ' || (c.is_ascii_graphic() && c != '\\') {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// The summary the DPO reads before signing. Counts and scope only; no identifier. Every
/// string in it that a publisher (or the PACS) chose is [`shown`] escaped: the bundle step
/// refuses such names, but a review is also read from the approval store as it was written.
pub fn summary(review: &ReviewRequest) -> String {
    let j = &review.job;
    let c = &review.cohort;
    let mut s = String::new();
    s.push_str(&format!("job {}\n", j.job_id));
    s.push_str(&format!("  publisher:         {}\n", shown(&j.publisher)));
    s.push_str(&format!(
        "  trainer:           {} (bundle {})\n",
        shown(&j.trainer),
        j.bundle_manifest
    ));
    s.push_str(&format!(
        "  fee:               {} USDC (chain {})\n",
        j.fee, j.chain_id
    ));
    let q = &j.query;
    s.push_str(&format!(
        "  query:             {} named studies, {} accession numbers, dates {}, modalities [{}], limit {}\n",
        q.study_uids.len(),
        q.accession_numbers.len(),
        shown(q.study_date.as_deref().unwrap_or("(none)")),
        shown(&q.modalities.join(", ")),
        q.limit.map_or("(none)".to_owned(), |l| l.to_string()),
    ));
    s.push_str(&format!(
        "  extra fields:      {}\n",
        if j.requested_fields.is_empty() {
            "(none)".to_owned()
        } else {
            shown(&j.requested_fields.join(", "))
        }
    ));
    s.push_str(&format!("  validation split:  {}%\n", j.validation_percent));
    s.push_str(&format!(
        "  pseudonyms:        {}\n",
        j.linkage.as_ref().map_or_else(
            || "this job's own (join no other job)".to_owned(),
            |g| format!(
                "shared with every job of linkage group '{}' of {}",
                shown(g.as_str()),
                shown(&j.publisher)
            )
        )
    ));
    for l in &review.linkage_jobs {
        s.push_str(&format!(
            "  linked job:        {} ({}), {}\n",
            l.job_id,
            l.state,
            if l.same_query {
                "the same query".to_owned()
            } else {
                format!("ANOTHER QUERY (digest {})", l.query_digest)
            }
        ));
    }
    if let Some(r) = &review.resources {
        let (q, b) = (&r.requested, &r.bounds);
        s.push_str("resources (requested, node's range)\n");
        s.push_str(&format!(
            "  memory:            {} MiB ({})\n",
            q.memory_mb, b.memory_mb
        ));
        s.push_str(&format!("  cpus:              {} ({})\n", q.cpus, b.cpus));
        s.push_str(&format!("  pids:              {} ({})\n", q.pids, b.pids));
        s.push_str(&format!(
            "  wall time:         {} s ({})\n",
            q.wall_seconds, b.wall_seconds
        ));
        s.push_str(&format!(
            "  /tmp:              {} MiB ({})\n",
            q.tmp_mb, b.tmp_mb
        ));
        s.push_str(&format!(
            "  gpus:              {} ({}){}\n",
            q.gpus,
            b.gpu_bound(),
            if q.gpus > 0 {
                "; GPU memory is outside any enclave: the pixels the trainer copies there leave \
                 the runtime's locked memory"
            } else {
                ""
            }
        ));
    }
    if let Some(i) = &review.image {
        s.push_str("trainer image (what the node unpacks)\n");
        s.push_str(&format!(
            "  layers:            {} ({} bytes, {} entries)\n",
            i.layers, i.bytes, i.entries
        ));
        s.push_str(&format!(
            "  entries:           {} files, {} directories, {} symlinks ({} absolute), \
             {} hard links, {} whiteouts\n",
            i.files, i.directories, i.symlinks, i.absolute_symlinks, i.hard_links, i.whiteouts
        ));
        s.push_str(&format!(
            "  setuid/setgid:     {} cleared when unpacked (the trainer runs with no \
             capabilities and noNewPrivileges)\n",
            i.setuid_setgid_cleared
        ));
    }
    if let Some(r) = &review.release {
        s.push_str("release (declared tensors, re-written by the node)\n");
        let cap = r
            .max_bits
            .map_or_else(String::new, |m| format!(" (this hospital's cap: {m} bits)"));
        match r.released_bits {
            None => s.push_str(&format!(
                "  model tensors:     {} parameters, {} bits at their declared dtypes{cap}\n",
                r.parameters, r.bits,
            )),
            Some(released) => {
                s.push_str(&format!(
                    "  model tensors:     {} parameters, {} bits at their declared dtypes\n",
                    r.parameters, r.bits,
                ));
                s.push_str(&format!(
                    "  released at:       precision {}, node noise k = {} (σ = k × RMS per \
                     tensor): at most {released} bits{cap}\n",
                    r.precision.as_str(),
                    r.noise_k.get()
                ));
            }
        }
        if let Some(b) = &r.bound {
            s.push_str(&format!(
                "  leakage bound:     {} bits per job, every field the publisher sees: \
                 tensors {}, files written {}, metrics.json {}, node metrics {}, outcome {}, \
                 run length {}\n",
                b.total,
                b.tensors,
                b.files,
                b.metrics_file,
                b.node_metrics,
                b.outcome,
                b.run_length
            ));
            if let Some(n) = b.per_patient(c.patients) {
                s.push_str(&format!(
                    "  per patient:       {n} bits ({} patients)\n",
                    c.patients
                ));
            }
        }
        if let Some(p) = &r.publisher {
            s.push_str(&format!(
                "  publisher total:   {} of {} bits with this job ([policy.outputs] \
                 max_publisher_bits)\n",
                p.bits, p.cap
            ));
        }
    }
    s.push_str("cohort\n");
    s.push_str(&format!("  commitment:        {}\n", c.commitment));
    s.push_str(&format!(
        "  patients:          {} ({} train, {} validation)\n",
        c.patients, c.train_patients, c.validation_patients
    ));
    s.push_str(&format!(
        "  studies/instances: {} / {}\n",
        c.studies, c.instances
    ));
    for (m, n) in &c.modalities {
        s.push_str(&format!("  modality {:<8} {n} instances\n", shown(m)));
    }
    for (reason, n) in &c.exclusions {
        s.push_str(&format!("  excluded ({}): {n}\n", shown(reason)));
    }
    match &c.demographics {
        Some(d) => {
            let line = |rows: Vec<(String, u64)>| {
                rows.into_iter()
                    .map(|(label, n)| format!("{label} {}", shown_count(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            s.push_str(&format!(
                "  patients by sex:   {} (counts below {SMALL_CELL} shown as <{SMALL_CELL})\n",
                line(d.sex.rows())
            ));
            s.push_str(&format!(
                "  patients by age:   {} (age at the first study, years)\n",
                line(d.age.rows())
            ));
        }
        None => s.push_str(
            "  patients by sex/age: not counted (summarised before the node counted them)\n",
        ),
    }
    s
}

/// Runs `approve`.
///
/// # Errors
/// Unknown job, a key that is not a configured DPO key, a dev key in production, a refusal
/// at the prompt, or a store error.
pub fn approve(args: &ApproveArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let store = ApprovalStore::open(&config.approvals_dir())?;
    let review = store.review(&args.job_digest)?;
    let key = DpoSigningKey::load(&args.key)?;
    if config.mode == Mode::Production && key.is_dev() {
        bail!("{} is a development key; production refuses it (make one with `rapha-node keygen --dpo`)", args.key.display());
    }
    let trusted: Vec<DpoPublicKey> = config
        .keys
        .dpo_public_keys
        .iter()
        .map(|k| k.parse())
        .collect::<Result<_, _>>()
        .context("keys.dpo_public_keys")?;
    if !trusted.contains(&key.public()) {
        bail!(
            "the key {} (public key {}) is not in keys.dpo_public_keys; the final gate would refuse its approval",
            args.key.display(),
            key.public()
        );
    }
    let now = now();
    let expires_at = parse_expiry(&args.expires, now)?;
    print!("{}", summary(&review));
    println!("approval valid until {}", format_time(expires_at));
    if !args.yes {
        print!("Approve this job? Type 'yes' to sign: ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if line.trim() != "yes" {
            bail!("not approved (nothing was signed)");
        }
    }
    let approval = key.approve(args.job_digest, now, expires_at)?;
    store.record(&approval)?;
    tracing::info!(job_digest = %args.job_digest, expires_at, "DPO approval recorded");
    println!(
        "approved job {} until {}",
        args.job_digest,
        format_time(expires_at)
    );
    Ok(())
}

/// Runs `approvals list|revoke`.
///
/// # Errors
/// Missing `--config`, store errors, or a refused revocation (no approval, already started).
pub fn approvals(args: &ApprovalsArgs) -> anyhow::Result<()> {
    let Some(path) = &args.config else {
        bail!("--config FILE is required (or set RAPHA_NODE_CONFIG)")
    };
    let config = Config::load(path)?;
    let store = ApprovalStore::open(&config.approvals_dir())?;
    match &args.command {
        ApprovalsCommand::List => {
            let entries = store.list()?;
            if entries.is_empty() {
                println!("no jobs waiting for review or approved");
            }
            for e in entries {
                let state = match &e.record {
                    None => "waiting for review".to_owned(),
                    Some(r) => match (r.revoked_at, r.started_at) {
                        (Some(t), _) => format!("REVOKED at {}", format_time(t)),
                        (_, Some(t)) => format!("started at {}", format_time(t)),
                        _ if r.approval.expires_at <= now() => {
                            format!("approval EXPIRED at {}", format_time(r.approval.expires_at))
                        }
                        _ => format!(
                            "approved by {} until {}",
                            r.approval.dpo_key,
                            format_time(r.approval.expires_at)
                        ),
                    },
                };
                let who = e
                    .review
                    .as_ref()
                    .map_or("(review missing)".to_owned(), |r| {
                        format!(
                            "{} / {}, {} patients",
                            shown(&r.job.publisher),
                            shown(&r.job.trainer),
                            r.cohort.patients
                        )
                    });
                println!("{}  {who}  {state}", e.job_digest);
            }
        }
        ApprovalsCommand::Revoke { job_digest } => {
            store.revoke(job_digest, now())?;
            tracing::info!(job_digest = %job_digest, "DPO approval revoked");
            println!("revoked the approval of job {job_digest}; it will not start");
        }
    }
    Ok(())
}
