//! `rapha job submit`: upload the signed bundle, then the job request that names it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use rapha_core::{CohortQuery, Digest, JobId, JobRequest, Usdc};
use rapha_receipt::{parse_address, Address};
use serde_json::json;

use crate::client::{NodeArgs, NodeClient};
use crate::exit::Failure;

use super::{sync_dir, Printed};

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
    /// A file of AccessionNumbers (added to --accession): one per line, or a spreadsheet's CSV
    /// export with a column headed AccessionNumber; UTF-8 with or without a byte-order mark,
    /// `,`, `;` or tab separated. An unreadable line is refused with its number, never skipped.
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
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let rows = rapha_core::lists::read_column(
                &bytes,
                "AccessionNumber",
                rapha_core::lists::is_accession_header,
            )
            .with_context(|| format!("accessions file {}", file.display()))?;
            accession_numbers.extend(rows.into_iter().map(|(_, accession)| accession));
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

pub(super) fn submit(args: &SubmitArgs) -> anyhow::Result<Printed> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn query_from_file(bytes: &[u8]) -> anyhow::Result<CohortQuery> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("cohort.csv");
        std::fs::write(&path, bytes)?;
        QueryArgs {
            study_uids: vec![],
            accessions: vec!["ACC0".into()],
            accessions_file: Some(path),
            study_date: None,
            modalities: vec![],
            limit: None,
        }
        .to_query()
    }

    #[test]
    fn an_accessions_file_saved_by_a_spreadsheet_keeps_every_study() {
        let q = query_from_file(b"\xEF\xBB\xBFName;Accession Number\r\nA;\"ACC1\"\r\nB; ACC2 \r\n")
            .unwrap();
        assert_eq!(q.accession_numbers, ["ACC0", "ACC1", "ACC2"]);
        let e = format!("{:#}", query_from_file(b"ACC1\nACC2,ACC3\n").unwrap_err());
        assert!(e.contains("line 2"), "{e}");
    }
}
