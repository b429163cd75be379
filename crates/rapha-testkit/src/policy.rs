//! The hospital policy the node's and the CLI's job tests run under, written once; a suite
//! that needs a tighter or looser policy changes the fields it is about.

use std::collections::BTreeMap;

use rapha_core::{OutputKind, ResourceBounds, Usdc};
use rapha_policy::{HospitalPolicy, JobBudget, Mode, OutputLimits, PublisherTrust, ScopeLimits};

/// Demo mode; `publisher` trusted for `trainer` alone; up to 100 studies over a year of the
/// six modalities the synthetic cohort has (CT, MR, CR, DX, US, SC); safetensors and metrics
/// outputs up to 1 MiB a file and 2 MiB in all; a 1 USDC minimum fee; 100 jobs a day; at
/// least 5 patients and 2 validation patients; default resource bounds; no linkage.
pub fn test_hospital(publisher: &str, trainer: &str) -> HospitalPolicy {
    HospitalPolicy {
        mode: Mode::Demo,
        publishers: BTreeMap::from([(
            publisher.to_owned(),
            PublisherTrust {
                trainers: vec![trainer.to_owned()],
            },
        )]),
        scope: ScopeLimits {
            max_studies: 100,
            max_date_range_days: 366,
            modalities: ["CT", "MR", "CR", "DX", "US", "SC"]
                .map(str::to_owned)
                .to_vec(),
        },
        outputs: OutputLimits {
            kinds: vec![OutputKind::Safetensors, OutputKind::MetricsJson],
            max_file_bytes: 1 << 20,
            max_total_bytes: 2 << 20,
            max_release_bits: None,
            max_publisher_bits: None,
            release_precision: Default::default(),
            release_noise_k: Default::default(),
        },
        allowed_metadata_fields: vec![],
        min_fee: Usdc::from_base_units(1_000_000),
        budget: JobBudget {
            max_jobs: 100,
            window_hours: 24,
        },
        min_patients: 5,
        min_validation_patients: 2,
        resources: ResourceBounds::default(),
        linkage_publishers: vec![],
    }
}
