//! `rapha-testkit`: test-data tools.
//!
//! `rapha-testkit cohort --studies N --seed S --out DIR [--rle-fraction F] [--shuffle-labels]
//!  [--enhanced] [--transfer-syntax UID]`
//! `rapha-testkit serve orthanc|swtpm|anvil` — start one harness service by hand (prints its
//! address as a JSON line, runs until stdin closes).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use rapha_testkit::cohort::{
    enhance_cohort, generate, multiframe_cohort, transcode_mixed, CohortSpec,
};
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
        /// Store every instance in this transfer syntax, as an archive that compresses on
        /// ingest does (needs Debian's dcmtk, libopenjp2-tools or openjph-tools, by syntax):
        /// 1.2.840.10008.1.2.5 RLE; 1.2.840.10008.1.2.4.51 JPEG 12-bit; .4.57, .4.70 JPEG
        /// Lossless; .4.80, .4.81 JPEG-LS; .4.90, .4.91 JPEG 2000; .4.201, .4.202, .4.203 HTJ2K.
        /// Several UIDs, comma-separated, mix them: study i in the i-th (modulo their count).
        #[arg(long, value_name = "UID[,UID...]")]
        transfer_syntax: Option<String>,
        /// Write each CT and MR series as one Enhanced CT / Enhanced MR multi-frame object
        /// (functional groups per frame), as modern scanners do; applied before
        /// --transfer-syntax.
        #[arg(long)]
        enhanced: bool,
        /// Write each CR series as one multi-frame CR object, and each DX study as one
        /// multi-frame DX object or (every second one) an XA cine run of 8 frames with a
        /// per-frame FrameTimeVector; applied before --enhanced and --transfer-syntax.
        #[arg(long)]
        multiframe: bool,
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
            transfer_syntax,
            enhanced,
            multiframe,
        } => {
            let spec = CohortSpec {
                studies,
                seed,
                out: out.clone(),
                rle_fraction,
                label_shuffle: shuffle_labels,
            };
            let mut m = generate(&spec)?;
            if multiframe {
                m = multiframe_cohort(&out)?;
                println!("merged CR and DX images into multi-frame CR, DX and XA cine objects");
            }
            if enhanced {
                m = enhance_cohort(&out)?;
                println!("merged CT and MR series into enhanced multi-frame objects");
            }
            if let Some(ts) = transfer_syntax {
                let syntaxes: Vec<&str> = ts.split(',').map(str::trim).collect();
                m = transcode_mixed(&out, &syntaxes)?;
                println!("re-encoded the instances in transfer syntax {ts} (mixed by study when several)");
            }
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
