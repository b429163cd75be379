//! `rapha-node backup` / `restore`: the node's state, without its keys.
//!
//! A backup is a directory: the three SQLite stores (`jobs.sqlite`, `settlement-ledger.sqlite`,
//! `receipts`) as consistent snapshots taken with `VACUUM INTO` (the node may be running),
//! the audit trail (current and rotated files), DPO approvals, the TPM attestation key record
//! (loadable only by the TPM that made it), stored bundles, released outputs and each job's
//! cohort file, and a
//! `MANIFEST.json` listing every file with its size and SHA-256. It is written under
//! `<out>.partial` and renamed into place when complete, so a crash leaves no half backup
//! under the name asked for.
//!
//! Keys are never copied: the HMAC key, the node, settler and DPO keys, the API tokens and
//! PACS credentials are what the files under `[keys]`, `[settlement]`, `[api]` and
//! `[[dicomweb.endpoints]]` name; a configured key file that lies inside a backed-up
//! directory is left out and reported. Back them up by the hospital's key procedure
//! (docs/keys.md). A job's working directory (the trainer's rootfs and raw outputs) is not
//! backed up: a job that was running resumes or fails as after a crash.
//!
//! `restore` checks every file of the manifest against its digest before writing anything,
//! refuses a state or data directory that already holds any of the backed-up names, copies,
//! and then opens the job store, which refuses a store from a newer node with its own error.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use rapha_core::Digest;
use serde::{Deserialize, Serialize};

use crate::config::{Config, DicomWebAuth};

/// The manifest's format name.
pub const FORMAT: &str = "rapha-node-backup/1";

/// Where each backed-up entry lives: under `[paths] state_dir` or `[paths] data_dir`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Root {
    State,
    Data,
}

/// SQLite stores, snapshotted with `VACUUM INTO`.
const DATABASES: [&str; 3] = ["jobs.sqlite", "settlement-ledger.sqlite", "receipts"];
/// Directories copied whole (less any key file inside). `cohorts` holds each job's cohort file (the entries the DPO approved, committed by digest), which a job awaiting
/// approval or deposit needs to run.
const DIRS: [(Root, &str); 6] = [
    (Root::State, "approvals"),
    (Root::State, "cohorts"),
    (Root::State, "attestation"),
    (Root::State, "bundles"),
    (Root::Data, "bundles"),
    (Root::Data, "released"),
];
/// The audit trail: `audit.jsonl` and its rotated files `audit.jsonl.*`.
const AUDIT: &str = "audit.jsonl";

/// One file of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub root: Root,
    /// Relative to its root, `/`-separated, no `..`.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `MANIFEST.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// `rapha-node --version` of the node that wrote it.
    pub node_version: String,
    /// UTC, RFC 3339.
    pub created: String,
    pub files: Vec<Entry>,
    /// Configured key files found inside a backed-up directory and left out.
    pub keys_left_out: Vec<String>,
}

/// Arguments of `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Node configuration file (its `[paths]` say what to back up).
    #[arg(long, env = "RAPHA_NODE_CONFIG")]
    pub config: PathBuf,
    /// Directory to create for the backup (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

/// Arguments of `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Node configuration file of the node to restore into (its `[paths]` receive the state).
    #[arg(long, env = "RAPHA_NODE_CONFIG")]
    pub config: PathBuf,
    /// A directory written by `rapha-node backup`.
    #[arg(long)]
    pub from: PathBuf,
}

/// Every key or credential file the configuration names.
fn key_files(config: &Config) -> BTreeSet<PathBuf> {
    let mut keys: BTreeSet<PathBuf> = [
        config.keys.hmac_key_file.clone(),
        config.keys.node_key_file.clone(),
    ]
    .into_iter()
    .collect();
    if let Some(s) = &config.settlement {
        keys.insert(s.settler_key_file.clone());
    }
    if let Some(a) = &config.api {
        keys.insert(a.tokens_file.clone());
    }
    for e in &config.dicomweb.endpoints {
        match &e.auth {
            DicomWebAuth::None => {}
            DicomWebAuth::Bearer { token_file } => {
                keys.insert(token_file.clone());
            }
            DicomWebAuth::Header { value_file, .. } => {
                keys.insert(value_file.clone());
            }
        }
    }
    keys.into_iter()
        .map(|k| std::fs::canonicalize(&k).unwrap_or(k))
        .collect()
}

fn root_dir(config: &Config, root: Root) -> &Path {
    match root {
        Root::State => &config.paths.state_dir,
        Root::Data => &config.paths.data_dir,
    }
}

/// Size and SHA-256 of the file at `path`, streamed (a bundle may be gigabytes).
fn sha256_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let reading = || format!("reading {}", path.display());
    let mut file = std::fs::File::open(path).with_context(reading)?;
    let mut hasher = Digest::hasher();
    let bytes = std::io::copy(&mut file, &mut hasher).with_context(reading)?;
    Ok((bytes, hasher.finish().to_hex()))
}

/// The files under `dir`, relative to it, sorted; symbolic links are refused (a backup
/// follows nothing out of the node's directories).
fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        for entry in
            std::fs::read_dir(&here).with_context(|| format!("listing {}", here.display()))?
        {
            let entry = entry?;
            let kind = entry.file_type()?;
            let child = rel.join(entry.file_name());
            if kind.is_symlink() {
                bail!(
                    "{} is a symbolic link; a backup follows none",
                    dir.join(&child).display()
                );
            } else if kind.is_dir() {
                stack.push(child);
            } else if kind.is_file() {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn rel_text(rel: &Path) -> anyhow::Result<String> {
    rel.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{} is not UTF-8", rel.display()))
}

/// Writes a backup of `config`'s state into `out` (created; must not exist).
///
/// # Errors
/// `out` exists, a store cannot be snapshotted, a file cannot be read or written, a symbolic
/// link inside a backed-up directory.
pub fn backup(config: &Config, out: &Path) -> anyhow::Result<Manifest> {
    if out.exists() {
        bail!(
            "{} exists; name a new directory for the backup",
            out.display()
        );
    }
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing the unfinished backup {}", partial.display()))?;
    }
    let keys = key_files(config);
    let mut files = Vec::new();
    let mut keys_left_out = Vec::new();
    let add = |root: Root, rel: &Path, files: &mut Vec<Entry>| -> anyhow::Result<()> {
        let dest = partial.join(root_name(root)).join(rel);
        let (bytes, sha256) = sha256_file(&dest)?;
        files.push(Entry {
            root,
            path: rel_text(rel)?,
            bytes,
            sha256,
        });
        Ok(())
    };
    for name in DATABASES {
        let src = config.paths.state_dir.join(name);
        if !src.is_file() {
            continue;
        }
        let dest_dir = partial.join(root_name(Root::State));
        std::fs::create_dir_all(&dest_dir)?;
        let dest = dest_dir.join(name);
        let conn = rusqlite::Connection::open_with_flags(
            &src,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {}", src.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        let target = dest
            .to_str()
            .ok_or_else(|| anyhow!("{} is not UTF-8", dest.display()))?;
        conn.execute("VACUUM INTO ?1", [target])
            .with_context(|| format!("snapshotting {}", src.display()))?;
        add(Root::State, Path::new(name), &mut files)?;
    }
    // Copies `item` (a file or a directory, relative to its root) into the backup.
    let mut copy_item = |root: Root, item: &Path| -> anyhow::Result<()> {
        let base = root_dir(config, root);
        let src_item = base.join(item);
        let listed = if src_item.is_file() {
            vec![item.to_path_buf()]
        } else if src_item.is_dir() {
            walk(&src_item)?.into_iter().map(|r| item.join(r)).collect()
        } else {
            return Ok(());
        };
        for rel in listed {
            let src = base.join(&rel);
            let canon = std::fs::canonicalize(&src).unwrap_or_else(|_| src.clone());
            if keys.contains(&canon) {
                keys_left_out.push(src.display().to_string());
                continue;
            }
            let dest = partial.join(root_name(root)).join(&rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&src, &dest).with_context(|| format!("copying {}", src.display()))?;
            add(root, &rel, &mut files)?;
        }
        Ok(())
    };
    // The audit trail: files at the top of the state directory only.
    let mut audit_files: Vec<String> = std::fs::read_dir(&config.paths.state_dir)
        .with_context(|| format!("listing {}", config.paths.state_dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n == AUDIT || n.starts_with(&format!("{AUDIT}.")))
        .collect();
    audit_files.sort();
    for name in audit_files {
        copy_item(Root::State, Path::new(&name))?;
    }
    for (root, dir) in DIRS {
        copy_item(root, Path::new(dir))?;
    }
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        node_version: env!("CARGO_PKG_VERSION").to_owned() + " " + env!("RAPHA_SOURCE_COMMIT"),
        created: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        files,
        keys_left_out,
    };
    std::fs::create_dir_all(&partial)?;
    std::fs::write(
        partial.join("MANIFEST.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    std::fs::rename(&partial, out)
        .with_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
    Ok(manifest)
}

const fn root_name(root: Root) -> &'static str {
    match root {
        Root::State => "state",
        Root::Data => "data",
    }
}

/// A manifest path that stays inside its root.
fn safe_rel(path: &str) -> anyhow::Result<PathBuf> {
    let rel = PathBuf::from(path);
    if path.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("MANIFEST.json names {path:?}, which is not a plain relative path");
    }
    Ok(rel)
}

/// Restores the backup in `from` into `config`'s state and data directories.
///
/// # Errors
/// An unreadable or unknown manifest, a file missing or not matching its digest (nothing is
/// written then), a target that already holds a backed-up name, a store the node refuses.
pub fn restore(config: &Config, from: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read(from.join("MANIFEST.json"))
        .with_context(|| format!("reading {}/MANIFEST.json", from.display()))?;
    let manifest: Manifest = serde_json::from_slice(&text).context("parsing MANIFEST.json")?;
    if manifest.format != FORMAT {
        bail!(
            "{} is a {:?} backup; this node restores {FORMAT}",
            from.display(),
            manifest.format
        );
    }
    // Every file checked before anything is written.
    for e in &manifest.files {
        let rel = safe_rel(&e.path)?;
        let src = from.join(root_name(e.root)).join(&rel);
        let (bytes, sha256) = sha256_file(&src)?;
        if bytes != e.bytes || sha256 != e.sha256 {
            bail!(
                "{} does not match MANIFEST.json (size or SHA-256 differ): the backup is damaged or was edited; nothing was restored",
                src.display()
            );
        }
        let dest = root_dir(config, e.root).join(item_of(e.root, &rel));
        if dest.exists() {
            bail!(
                "{} already exists; restore into an empty state and data directory (move the current one aside first); nothing was restored",
                dest.display()
            );
        }
    }
    for e in &manifest.files {
        let rel = safe_rel(&e.path)?;
        let dest = root_dir(config, e.root).join(&rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from.join(root_name(e.root)).join(&rel), &dest)
            .with_context(|| format!("writing {}", dest.display()))?;
        // The state holds job records and receipts: private to the node's user.
        std::fs::set_permissions(
            &dest,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )?;
    }
    let jobs = config.paths.state_dir.join("jobs.sqlite");
    if jobs.exists() {
        crate::store::JobStore::open(&jobs)
            .with_context(|| format!("opening the restored job store {}", jobs.display()))?;
    }
    Ok(manifest)
}

/// What a restored file belongs to: its directory of [`DIRS`], or the file itself (a store,
/// an audit file). A restore refuses a target that already has it.
fn item_of(root: Root, rel: &Path) -> PathBuf {
    DIRS.iter()
        .filter(|(r, _)| *r == root)
        .map(|(_, dir)| Path::new(dir))
        .find(|dir| rel.starts_with(dir))
        .map_or_else(|| rel.to_path_buf(), Path::to_path_buf)
}

/// Runs `backup`.
///
/// # Errors
/// As [`backup`], and an unreadable configuration.
pub fn run_backup(args: &BackupArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let m = backup(&config, &args.out)?;
    let bytes: u64 = m.files.iter().map(|e| e.bytes).sum();
    println!(
        "backed up {} file(s), {bytes} bytes, to {}",
        m.files.len(),
        args.out.display()
    );
    for k in &m.keys_left_out {
        println!("left out (a key file): {k}");
    }
    println!("keys are not in a backup: back them up by your key procedure (docs/keys.md)");
    Ok(())
}

/// Runs `restore`.
///
/// # Errors
/// As [`restore`], and an unreadable configuration.
pub fn run_restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let m = restore(&config, &args.from)?;
    println!(
        "restored {} file(s) from {} (written by rapha-node {}, {})",
        m.files.len(),
        args.from.display(),
        m.node_version,
        m.created
    );
    println!("put the node's keys back in place before starting it (they are not in a backup)");
    Ok(())
}
