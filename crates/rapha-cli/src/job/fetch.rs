//! `rapha job fetch`: the receipt, verified offline, then every released output, checked
//! against the digest the receipt commits to, staged and renamed into `--out`.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use rapha_core::{Digest, JobId, Outcome};
use rapha_receipt::{Address, VerifyOptions};
use serde_json::{json, Value};

use crate::client::{NodeArgs, NodeClient};
use crate::exit::{self, Failure, OutputMismatch};

use super::{sync_dir, Printed};

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

pub(super) fn fetch(args: &FetchArgs) -> anyhow::Result<Printed> {
    let node_address = args
        .node_address
        .as_deref()
        .map(|a| {
            a.parse::<Address>()
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
        "signer": verified.signer,
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
