//! The synthetic cohort the feed and run benches decode (bench/enclave.sh, bench/pytorch.sh;
//! never run in CI): written once here and included with `#[path]` by the examples
//! `enclave_bench` (rapha-enclave), `feed_bench` (rapha-trainer-sdk) and `pytorch_bench`
//! (rapha-demo), so that each measures the same cohort.

use std::path::PathBuf;

use rapha_core::HmacKey;
use rapha_dicom::cohort::{Cohort, CohortBuilder};
use rapha_dicom::exclusion::{LabelTable, OptOuts};
use rapha_dicom::{DicomConfig, Pseudonymizer};

/// A generated cohort and what a cohort builder over it needs.
pub struct BenchCohort {
    /// The cohort's directory (`dicom/`, `labels.csv`, `optouts.csv`), removed on drop.
    pub dir: tempfile::TempDir,
    pub labels: LabelTable,
    pub optouts: OptOuts,
    pub pseudo: Pseudonymizer,
}

/// The number of studies from the first command-line argument, 40 without one.
#[allow(dead_code)] // pytorch_bench reads its arguments otherwise
pub fn studies_arg() -> usize {
    std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

/// Generates `studies` studies (seed 99, a quarter of them RLE-compressed) into a temp dir
/// and loads its labels and opt-outs, with a fixed pseudonymization key.
pub fn bench_cohort(studies: usize) -> BenchCohort {
    let dir = tempfile::tempdir().unwrap();
    rapha_testkit::cohort::generate(&rapha_testkit::cohort::CohortSpec {
        rle_fraction: 0.25,
        ..rapha_testkit::cohort::CohortSpec::new(studies, 99, dir.path().to_path_buf())
    })
    .unwrap();
    BenchCohort {
        labels: LabelTable::load(&dir.path().join("labels.csv")).unwrap(),
        optouts: OptOuts::load(&dir.path().join("optouts.csv")).unwrap(),
        pseudo: Pseudonymizer::new(HmacKey::from_bytes([1; 32])),
        dir,
    }
}

impl BenchCohort {
    /// Its DICOM files' directory.
    pub fn dicom_dir(&self) -> PathBuf {
        self.dir.path().join("dicom")
    }

    /// A cohort builder over it under `config`, with its labels.
    pub fn builder<'a>(&'a self, config: &'a DicomConfig) -> CohortBuilder<'a> {
        CohortBuilder::new(&self.pseudo, config, &self.optouts).with_labels(&self.labels)
    }

    /// The cohort built from its files under `config`.
    #[allow(dead_code)] // feed_bench builds from files or from a PACS
    pub fn cohort(&self, config: &DicomConfig) -> Cohort {
        self.builder(config).from_dir(&self.dicom_dir()).unwrap()
    }
}
