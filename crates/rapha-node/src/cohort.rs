//! `rapha-node cohort preview`: shows the DPO exactly what a trainer would see.
//!
//! One JSON record per kept instance on stdout (pixel shape from the header; pixels are never
//! decoded here), exclusion counts by reason on stderr. Pseudonyms are in the `preview` scope:
//! the same shape a trainer sees, never the values any job's trainer sees. A query the scope guard refuses, or a
//! key that is not a 32-byte mode-0600 file, ends with a non-zero exit naming the rule or the
//! problem, before anything is sent to the PACS.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rapha_core::PseudonymScope;
use rapha_dicom::cohort::CohortBuilder;
use rapha_dicom::exclusion::{LabelTable, OptOuts};
use rapha_dicom::{ClientOptions, DicomConfig, DicomWebClient, Pseudonymizer, ScopedQuery};

/// `rapha-node cohort …`
#[derive(Debug, Subcommand)]
pub enum CohortCommand {
    /// Print the records a trainer would receive (stdout) and the exclusion counts (stderr).
    Preview(PreviewArgs),
}

/// Arguments of `cohort preview`.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The 32-byte PHI HMAC key file (mode 0600).
    #[arg(long)]
    pub key: PathBuf,
    /// A directory of DICOM Part 10 files.
    #[arg(long, conflicts_with_all = ["dicomweb", "query"], required_unless_present = "dicomweb")]
    pub dicom_dir: Option<PathBuf>,
    /// DICOMweb root of the PACS, e.g. https://pacs.example/dicom-web.
    #[arg(long, requires = "query")]
    pub dicomweb: Option<String>,
    /// QIDO-RS study search parameters, e.g. 'StudyDate=20240101-20240131&ModalitiesInStudy=CT&limit=100'.
    #[arg(long)]
    pub query: Option<String>,
    /// Opt-out list: one PatientID per line.
    #[arg(long)]
    pub optouts: Option<PathBuf>,
    /// Label table: AccessionNumber,label lines.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Node config (TOML); its [dicom] section sets scope limits, fields and exclusions.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// PEM CA certificate(s) for the PACS's TLS certificate.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// File holding a bearer token for the PACS (mode 0600).
    #[arg(long)]
    pub bearer_token_file: Option<PathBuf>,
}

/// Runs a cohort subcommand.
///
/// # Errors
/// Refused queries, bad keys, unreadable files and PACS failures.
pub fn run(cmd: CohortCommand) -> anyhow::Result<()> {
    match cmd {
        CohortCommand::Preview(args) => preview(&args),
    }
}

fn dicom_config(path: Option<&Path>) -> anyhow::Result<DicomConfig> {
    let Some(path) = path else {
        return Ok(DicomConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("config {} is not valid TOML", path.display()))?;
    let cfg = match table.get("dicom") {
        None => DicomConfig::default(),
        Some(v) => v
            .clone()
            .try_into()
            .with_context(|| format!("[dicom] section of {}", path.display()))?,
    };
    cfg.validate()?;
    Ok(cfg)
}

fn preview(args: &PreviewArgs) -> anyhow::Result<()> {
    // The preview's own scope: its pseudonyms join no job's records, so a preview printed for
    // the DPO can never be matched against what a trainer received.
    let pseudo = Pseudonymizer::load(&args.key)
        .context("refusing to run: bad HMAC key")?
        .scoped(PseudonymScope::Preview);
    let config = dicom_config(args.config.as_deref())?;
    let optouts = match &args.optouts {
        Some(p) => OptOuts::load(p)?,
        None => OptOuts::none(),
    };
    let labels = args.labels.as_deref().map(LabelTable::load).transpose()?;
    let mut builder = CohortBuilder::new(&pseudo, &config, &optouts);
    if let Some(l) = &labels {
        builder = builder.with_labels(l);
    }
    let cohort = match (&args.dicom_dir, &args.dicomweb, &args.query) {
        (Some(dir), None, None) => builder.from_dir(dir)?,
        (None, Some(url), Some(q)) => {
            // The scope guard runs before the client exists: a refused query sends nothing.
            let scoped = ScopedQuery::parse(q, &config.scope)?;
            let mut opts = ClientOptions::new(url.clone());
            opts.ca_pem = args.ca_file.clone();
            opts.timeout = std::time::Duration::from_secs(config.pacs.connect_timeout_seconds);
            if let Some(f) = &args.bearer_token_file {
                // The node's own credential reader: what preview accepts, a job reads alike.
                let bearer = rapha_node::config::DicomWebAuth::Bearer {
                    token_file: f.clone(),
                };
                opts.auth = bearer.load().map_err(|(path, e)| {
                    anyhow::anyhow!("bearer token file {}: {e}", path.display())
                })?;
            }
            let client = DicomWebClient::new(opts)?.with_limits(config.pacs.clone());
            builder.from_dicomweb(&client, &scoped)?
        }
        _ => bail!("give either --dicom-dir DIR, or --dicomweb URL with --query 'QIDO params'"),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for e in &cohort.entries {
        serde_json::to_writer(&mut out, &e.record)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let summary = serde_json::json!({
        "kept": cohort.entries.len(),
        "excluded": cohort.exclusions.counts(),
    });
    eprintln!("{summary}");
    Ok(())
}
