//! `rapha-testkit`: test-data tools.
//!
//! `rapha-testkit cohort --studies N --seed S --out DIR [--rle-fraction F] [--shuffle-labels]`

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use rapha_testkit::cohort::{generate, CohortSpec};

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
    }
    Ok(())
}
