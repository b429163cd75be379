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

/// Enhanced CT and MR (`rapha-testkit cohort --enhanced`): one object per series, its slices
/// the frames. The record carries the shape of the whole volume, the values every frame shares
/// at top level (spacing, thickness, orientation from the shared group; rescale from the
/// shared group; window common to every frame's own group), and per frame only what differs
/// (the position); the pixels decode to the slices' pixels in order.
#[test]
fn enhanced_objects_give_records_with_per_frame_positions_and_shared_values() {
    use rapha_core::HmacKey;
    use rapha_dicom::cohort::CohortBuilder;
    use rapha_dicom::exclusion::OptOuts;
    use rapha_dicom::{DicomConfig, Pseudonymizer};
    use rapha_testkit::cohort::{enhance_cohort, ENHANCED_CT};

    let native = tempfile::tempdir().unwrap();
    let single = generate(&CohortSpec::new(3, 4, native.path())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    generate(&CohortSpec::new(3, 4, dir.path())).unwrap();
    let manifest = enhance_cohort(dir.path()).unwrap();
    assert!(manifest.enhanced);
    assert!(manifest.instance_count < single.instance_count);
    let pseudo = Pseudonymizer::new(HmacKey::from_bytes([0x21; 32]));
    let config = DicomConfig::default();
    let build = |d: &std::path::Path| {
        CohortBuilder::new(&pseudo, &config, &OptOuts::none())
            .from_dir(&d.join("dicom"))
            .unwrap()
    };
    let (cohort, slices) = (build(dir.path()), build(native.path()));
    let ct = cohort
        .entries
        .iter()
        .find(|e| e.record.sop_class_uid.as_deref() == Some(ENHANCED_CT))
        .expect("an enhanced CT record");
    let r = &ct.record;
    let series: Vec<_> = slices
        .entries
        .iter()
        .filter(|e| e.record.series == r.series)
        .collect();
    let n = series.len();
    assert!(n > 1, "a CT series of one slice");
    assert_eq!(r.pixel_shape.frames, u32::try_from(n).unwrap());
    assert_eq!(r.number_of_frames, Some(u32::try_from(n).unwrap()));
    let one = &series[0].record;
    assert_eq!(
        (
            r.rescale_slope,
            r.rescale_intercept,
            r.rescale_type.as_deref()
        ),
        (one.rescale_slope, one.rescale_intercept, Some("HU"))
    );
    assert_eq!(
        (&r.window_center, &r.window_width),
        (&one.window_center, &one.window_width)
    );
    assert_eq!(
        (
            r.pixel_spacing,
            r.slice_thickness,
            r.image_orientation_patient
        ),
        (
            one.pixel_spacing,
            one.slice_thickness,
            one.image_orientation_patient
        )
    );
    assert_eq!(r.image_position_patient, None);
    assert_eq!(r.frames.len(), n);
    for (f, s) in r.frames.iter().zip(&series) {
        assert_eq!(f.image_position_patient, s.record.image_position_patient);
        assert_eq!(
            (f.rescale_slope, &f.window_center, f.pixel_spacing),
            (None, &None, None)
        );
    }
    // The volume decodes to the slices, in order.
    let path = |root: &std::path::Path, e: &rapha_dicom::cohort::CohortEntry| match &e.source {
        rapha_dicom::cohort::InstanceSource::File(p) => root.join(p),
        other => panic!("{other:?}"),
    };
    let volume = decode(
        &std::fs::read(path(dir.path(), ct)).unwrap(),
        Output::Stored,
    )
    .unwrap();
    let mut expected = Vec::new();
    for s in &series {
        let px = decode(
            &std::fs::read(path(native.path(), s)).unwrap(),
            Output::Stored,
        )
        .unwrap();
        expected.extend((0..px.data.len()).map(|i| px.data.get_f64(i).unwrap()));
    }
    let got: Vec<f64> = (0..volume.data.len())
        .map(|i| volume.data.get_f64(i).unwrap())
        .collect();
    assert_eq!(got, expected);
}
