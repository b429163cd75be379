//! `rapha-testkit`: test-data tools.
//!
//! `rapha-testkit cohort --studies N --seed S --out DIR [--rle-fraction F] [--shuffle-labels]`
//! `rapha-testkit serve orthanc|swtpm|anvil` — start one harness service by hand (prints its
//! address as a JSON line, runs until stdin closes).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use rapha_testkit::cohort::{generate, CohortSpec};
use rapha_testkit::services::{Anvil, AnvilOptions, Orthanc, Swtpm};

#[derive(Parser)]
#[command(
    name = "rapha-testkit",
    about = "Rapha test-data tools (never for production data)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a synthetic DICOM cohort with planted PHI, labels and opt-outs.
    Cohort {
        #[arg(long)]
        studies: usize,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        /// Fraction of instances written as RLE Lossless.
        #[arg(long, default_value_t = 0.0)]
        rle_fraction: f32,
        /// Permute labels among labelled studies (labels then carry no signal).
        #[arg(long)]
        shuffle_labels: bool,
    },
    /// Start one test service (as the tests do) and keep it until stdin closes.
    Serve {
        #[arg(value_enum)]
        service: Service,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Service {
    Orthanc,
    Swtpm,
    Anvil,
}

/// Prints `line`, then blocks until stdin reaches EOF (the service handle is held meanwhile).
fn hold(line: serde_json::Value) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut out = std::io::stdout();
    writeln!(out, "{line}")?;
    out.flush()?;
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Cohort {
            studies,
            seed,
            out,
            rle_fraction,
            shuffle_labels,
        } => {
            let spec = CohortSpec {
                studies,
                seed,
                out: out.clone(),
                rle_fraction,
                label_shuffle: shuffle_labels,
            };
            let m = generate(&spec)?;
            let positives = m.studies.iter().filter(|s| s.label == Some(1)).count();
            let labelled = m.studies.iter().filter(|s| s.label.is_some()).count();
            println!(
                "wrote {} studies, {} instances to {} ({positives}/{labelled} labelled positive, \
                 {} burned-in, {} patients opted out)",
                m.studies.len(),
                m.instance_count,
                out.display(),
                m.burned_in.len(),
                m.opted_out_patients.len()
            );
        }
        Command::Serve { service } => match service {
            Service::Orthanc => {
                let Some(o) = Orthanc::start()? else {
                    anyhow::bail!("Orthanc is not installed")
                };
                hold(
                    serde_json::json!({ "url": o.base_url(), "port": o.http_port(),
                    "dicomweb": o.dicomweb_url(), "log": o.log_path() }),
                )?;
            }
            Service::Swtpm => {
                let Some(t) = Swtpm::start()? else {
                    anyhow::bail!("swtpm is not installed")
                };
                hold(
                    serde_json::json!({ "tcti": t.tcti(), "port": t.port(), "log": t.log_path() }),
                )?;
            }
            Service::Anvil => {
                let Some(a) = Anvil::start(AnvilOptions::default())? else {
                    anyhow::bail!("anvil is not installed")
                };
                hold(
                    serde_json::json!({ "url": a.rpc_url(), "port": a.port(), "log": a.log_path() }),
                )?;
            }
        },
    }
    Ok(())
}
