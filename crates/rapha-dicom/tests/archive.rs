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

/// Multi-frame projection images (`rapha-testkit cohort --multiframe`) stored in Orthanc in
/// JPEG 2000 and HTJ2K (study by study), read as the node reads them: QIDO-RS and metadata
/// give records with the whole object's shape (a CR series' views, a DX study's images, an XA
/// cine run's frames) and, for the cine run, its nominal frame time at top level and each
/// frame's time increment (the only value that differs between its frames); WADO-RS
/// retrieval decodes every frame to the pixels the single-frame images had (the cine frames
/// to the first image panned a pixel a frame).
#[test]
fn multiframe_cr_dx_and_xa_objects_from_orthanc_give_per_frame_records_and_decode_each_frame() {
    use std::collections::BTreeMap;

    use rapha_dicom::client::Wanted;
    use rapha_dicom::cohort::{CohortBuilder, InstanceSource};
    use rapha_dicom::exclusion::OptOuts;
    use rapha_dicom::{ClientOptions, DicomWebClient, ScopedQuery};
    use rapha_testkit::cohort::{
        multiframe_cohort, transcode_mixed, CINE_FRAMES, CINE_FRAME_TIME_MS,
        CINE_FRAME_TIME_VECTOR, XA,
    };
    use rapha_testkit::services::Orthanc;

    let Some(orthanc) = rapha_testkit::require!(Orthanc::start()) else {
        return;
    };
    let (studies, seed) = (24, 5);
    let native = tempfile::tempdir().unwrap();
    let single = generate(&CohortSpec::new(studies, seed, native.path())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    generate(&CohortSpec::new(studies, seed, dir.path())).unwrap();
    let merged = multiframe_cohort(dir.path()).unwrap();
    assert!(merged.multiframe && merged.instance_count < single.instance_count);
    let manifest = match transcode_mixed(
        dir.path(),
        &["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201"],
    ) {
        Err(e @ CohortError::Tool { .. }) if !services_required() => {
            eprintln!("SKIPPED: {e}");
            return;
        }
        r => r.unwrap(),
    };
    let (ok, rejected) = orthanc.upload_dir(&dir.path().join("dicom")).unwrap();
    assert_eq!((ok, rejected), (manifest.instance_count, 0));

    let config = crate::orthanc::config(100);
    let query = ScopedQuery::parse(
        "StudyDate=20160101-20261231&ModalitiesInStudy=CR,DX,XA&limit=1000",
        &config.scope,
    )
    .unwrap();
    let client = DicomWebClient::new(ClientOptions::new(orthanc.dicomweb_url())).unwrap();
    let pseudo = rapha_dicom::Pseudonymizer::new(rapha_core::HmacKey::from_bytes([0x17; 32]));
    let cohort = CohortBuilder::new(&pseudo, &config, &OptOuts::none())
        .from_dicomweb(&client, &query)
        .unwrap();

    // The single-frame images of each series, in order, by the merged object's UID.
    let series_of = |uid: &str| -> Vec<&rapha_testkit::cohort::InstanceEntry> {
        let study = single
            .studies
            .iter()
            .find(|s| s.instances.iter().any(|i| i.sop_instance_uid == uid))
            .unwrap();
        let first = study
            .instances
            .iter()
            .find(|i| i.sop_instance_uid == uid)
            .unwrap();
        let same_series: Vec<_> = study
            .instances
            .iter()
            .filter(|i| i.series_instance_uid == first.series_instance_uid)
            .collect();
        if study.modality == "DX" {
            study.instances.iter().collect()
        } else {
            same_series
        }
    };
    let samples = |path: &std::path::Path| -> Vec<f64> {
        let px = decode(&std::fs::read(path).unwrap(), Output::Stored).unwrap();
        (0..px.data.len())
            .map(|i| px.data.get_f64(i).unwrap())
            .collect()
    };
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &cohort.entries {
        let InstanceSource::DicomWeb {
            study_uid,
            series_uid,
            instance_uid,
        } = &e.source
        else {
            panic!("{:?}", e.source)
        };
        let r = &e.record;
        let kind = match (r.modality.as_str(), r.sop_class_uid.as_deref()) {
            ("XA", Some(XA)) => "XA cine",
            ("CR", _) => "CR",
            ("DX", _) => "DX",
            _ => continue,
        };
        if r.number_of_frames.is_none() {
            continue; // a series with burned-in text stays as it was
        }
        *seen.entry(kind).or_default() += 1;
        let originals = series_of(instance_uid);
        let bytes = client
            .retrieve_instance_bytes(study_uid, series_uid, instance_uid, &Wanted::as_stored())
            .unwrap();
        let px = decode(&bytes, Output::Stored).unwrap();
        let frame_len = (px.rows * px.columns) as usize;
        let got: Vec<f64> = (0..px.data.len())
            .map(|i| px.data.get_f64(i).unwrap())
            .collect();
        if kind == "XA cine" {
            assert_eq!(r.number_of_frames, Some(CINE_FRAMES as u32));
            assert_eq!(r.pixel_shape.frames, CINE_FRAMES as u32);
            assert_eq!(r.frame_time, Some(CINE_FRAME_TIME_MS));
            let increments: Vec<Option<f64>> =
                r.frames.iter().map(|f| f.frame_time_increment).collect();
            assert_eq!(
                increments,
                CINE_FRAME_TIME_VECTOR.map(Some).to_vec(),
                "{r:?}"
            );
            let image = samples(&native.path().join(&originals[0].path));
            let cols = px.columns as usize;
            for (k, frame) in got.chunks_exact(frame_len).enumerate() {
                let want: Vec<f64> = image
                    .chunks_exact(cols)
                    .flat_map(|row| (0..cols).map(move |c| row[(c + k).min(cols - 1)]))
                    .collect();
                assert_eq!(frame, want.as_slice(), "XA frame {k}");
            }
        } else {
            let n = originals.len() as u32;
            assert!(n > 1, "a {kind} object of one image");
            assert_eq!((r.number_of_frames, r.pixel_shape.frames), (Some(n), n));
            assert!(r.frames.is_empty() && r.frame_time.is_none(), "{r:?}");
            for (k, (frame, o)) in got.chunks_exact(frame_len).zip(&originals).enumerate() {
                let want = samples(&native.path().join(&o.path));
                assert_eq!(frame, want.as_slice(), "{kind} frame {k}");
            }
        }
    }
    assert!(
        ["CR", "DX", "XA cine"].iter().all(|k| seen.contains_key(k)),
        "{seen:?}"
    );
    eprintln!("FIGURES multi-frame projection objects through Orthanc: {seen:?}");
}

/// The archive variants refuse what they cannot do faithfully: no syntax, an unknown one, a
/// second multi-frame pass, a multi-frame pass after re-encoding.
#[test]
fn archive_variants_refuse_an_empty_or_unknown_syntax_list_and_a_second_pass() {
    use rapha_testkit::cohort::{multiframe_cohort, transcode_mixed};

    let refused = |r: Result<_, CohortError>| match r {
        Err(CohortError::InvalidSpec(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let dir = tempfile::tempdir().unwrap();
    generate(&CohortSpec::new(2, 3, dir.path())).unwrap();
    assert!(refused(transcode_mixed(dir.path(), &[])).contains("at least one"));
    assert!(refused(transcode_mixed(dir.path(), &["1.2.3"])).contains("cannot write"));
    multiframe_cohort(dir.path()).unwrap();
    assert!(refused(multiframe_cohort(dir.path())).contains("before --enhanced"));
    transcode_mixed(dir.path(), &["1.2.840.10008.1.2.1"]).unwrap();
    assert!(refused(transcode_cohort(dir.path(), "1.2.840.10008.1.2.1")).contains("re-encode"));
}
