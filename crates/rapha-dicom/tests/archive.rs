//! The synthetic cohort as an archive that compresses on ingest stores it
//! (`rapha-testkit cohort --transfer-syntax`, encoded by DCMTK, OpenJPEG and OpenJPH, none of
//! them the decoders here): in every lossless syntax the node asks a PACS for, each instance
//! decodes to exactly the pixels of the same instance generated uncompressed.

use rapha_dicom::pixels::{decode, Output, LOSSLESS_TRANSFER_SYNTAXES};
use rapha_testkit::cohort::{generate, transcode_cohort, CohortError, CohortSpec};
use rapha_testkit::services::services_required;

#[test]
fn a_cohort_stored_in_each_lossless_syntax_decodes_to_the_uncompressed_pixels() {
    let native = tempfile::tempdir().unwrap();
    let reference = generate(&CohortSpec::new(2, 9, native.path())).unwrap();
    let mut checked = 0;
    for ts in LOSSLESS_TRANSFER_SYNTAXES {
        let dir = tempfile::tempdir().unwrap();
        generate(&CohortSpec::new(2, 9, dir.path())).unwrap();
        let manifest = match transcode_cohort(dir.path(), ts) {
            Err(e @ CohortError::Tool { .. }) if !services_required() => {
                eprintln!("SKIPPED {ts}: {e}");
                continue;
            }
            r => r.unwrap(),
        };
        assert_eq!(manifest.transfer_syntax.as_deref(), Some(ts));
        assert_eq!(manifest.studies, {
            let mut r = reference.studies.clone();
            r.iter_mut()
                .flat_map(|s| &mut s.instances)
                .for_each(|i| i.transfer_syntax = ts.to_owned());
            r
        });
        for inst in manifest.studies.iter().flat_map(|s| &s.instances) {
            let bytes = std::fs::read(dir.path().join(&inst.path)).unwrap();
            let stored = dicom_object::from_reader(&bytes[128..]).unwrap();
            assert_eq!(stored.meta().transfer_syntax().trim_end_matches('\0'), ts);
            let original = std::fs::read(native.path().join(&inst.path)).unwrap();
            assert_eq!(
                decode(&bytes, Output::Stored).unwrap(),
                decode(&original, Output::Stored).unwrap(),
                "{ts} {}",
                inst.path
            );
            checked += 1;
        }
    }
    assert!(checked > 0 || !services_required());
    eprintln!(
        "FIGURES archive: {checked} instances checked in {} syntaxes",
        LOSSLESS_TRANSFER_SYNTAXES.len()
    );
}
