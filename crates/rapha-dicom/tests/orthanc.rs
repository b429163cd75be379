//! Against a real Orthanc + DICOMweb loaded with the synthetic cohort and pydicom files:
//! paging, WADO-RS retrieval, PHI absence in every spelling, opt-outs, pseudonym consistency,
//! and the DICOM JSON path agreeing with the Part 10 path record for record.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;

use rapha_core::IdDomain;
use rapha_dicom::cohort::{Cohort, CohortBuilder, InstanceSource};
use rapha_dicom::exclusion::{reason, LabelTable, OptOuts};
use rapha_dicom::pixels::{decode, Output};
use rapha_dicom::record::{date_variants, name_variants, Record};
use rapha_dicom::{ClientOptions, DicomConfig, DicomWebClient, ScopeLimits, ScopedQuery};
use rapha_testkit::cohort::{generate, CohortManifest, CohortSpec};
use rapha_testkit::services::Orthanc;

use crate::common::{corpus, key};

const STUDIES: usize = 14;

struct Loaded {
    orthanc: Orthanc,
    manifest: CohortManifest,
    dir: tempfile::TempDir,
}

fn loaded() -> Option<Loaded> {
    let orthanc = rapha_testkit::require!(Orthanc::start())?;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = CohortSpec::new(STUDIES, 4242, dir.path());
    spec.rle_fraction = 0.3;
    let manifest = generate(&spec).unwrap();
    let (accepted, rejected) = orthanc.upload_dir(&dir.path().join("dicom")).unwrap();
    assert_eq!((accepted, rejected), (manifest.instance_count, 0));
    Some(Loaded {
        orthanc,
        manifest,
        dir,
    })
}

/// A configuration whose scope admits every generated study (dates 2016-2026) in pages of
/// `page_size`.
pub fn config(page_size: u32) -> DicomConfig {
    DicomConfig {
        scope: ScopeLimits {
            max_date_range_days: 4018,
            max_limit: 1000,
            max_list: 100,
            page_size,
        },
        ..DicomConfig::default()
    }
}

const ALL_YEARS: &str =
    "StudyDate=20160101-20261231&ModalitiesInStudy=CT,MR,CR,DX,US,SC,OT&limit=1000";

fn client(o: &Orthanc) -> DicomWebClient {
    DicomWebClient::new(ClientOptions::new(o.dicomweb_url())).unwrap()
}

fn build_web(l: &Loaded, page: u32) -> Cohort {
    let cfg = config(page);
    let q = ScopedQuery::parse(ALL_YEARS, &cfg.scope).unwrap();
    let optouts = OptOuts::load(&l.dir.path().join("optouts.csv")).unwrap();
    let labels = LabelTable::load(&l.dir.path().join("labels.csv")).unwrap();
    let pseudo = key(3);
    CohortBuilder::new(&pseudo, &cfg, &optouts)
        .with_labels(&labels)
        .from_dicomweb(&client(&l.orthanc), &q)
        .unwrap()
}

fn build_dir(l: &Loaded) -> Cohort {
    let cfg = config(100);
    let optouts = OptOuts::load(&l.dir.path().join("optouts.csv")).unwrap();
    let labels = LabelTable::load(&l.dir.path().join("labels.csv")).unwrap();
    let pseudo = key(3);
    CohortBuilder::new(&pseudo, &cfg, &optouts)
        .with_labels(&labels)
        .from_dir(&l.dir.path().join("dicom"))
        .unwrap()
}

/// What the exclusion rules should make of each manifest instance.
fn expected(m: &CohortManifest) -> (usize, BTreeMap<&'static str, u64>) {
    let mut kept = 0;
    let mut ex = BTreeMap::new();
    for s in &m.studies {
        for i in &s.instances {
            let r = if i.burned_in_annotation_flag.as_deref() == Some("YES") {
                Some(reason::BURNED_IN_ANNOTATION)
            } else if matches!(i.modality.as_str(), "US" | "SC" | "OT") {
                Some(reason::AT_RISK_MODALITY)
            } else if m.opted_out_patients.contains(&s.patient_id) {
                Some(reason::OPTED_OUT)
            } else {
                None
            };
            match r {
                Some(r) => *ex.entry(r).or_insert(0) += 1,
                None => kept += 1,
            }
        }
    }
    (kept, ex)
}

#[test]
fn qido_pages_past_one_page_and_finds_every_study() {
    let Some(l) = loaded() else { return };
    let c = client(&l.orthanc);
    let small = ScopedQuery::parse(ALL_YEARS, &config(3).scope).unwrap();
    let big = ScopedQuery::parse(ALL_YEARS, &config(1000).scope).unwrap();
    let paged: BTreeSet<String> = c
        .search_studies(&small)
        .unwrap()
        .iter()
        .map(|s| s.uid().to_owned())
        .collect();
    let whole: BTreeSet<String> = c
        .search_studies(&big)
        .unwrap()
        .iter()
        .map(|s| s.uid().to_owned())
        .collect();
    let manifest: BTreeSet<String> = l
        .manifest
        .studies
        .iter()
        .map(|s| s.study_instance_uid.clone())
        .collect();
    assert_eq!(
        paged, manifest,
        "paging with 3 per page finds all {STUDIES} studies"
    );
    assert_eq!(whole, manifest);
    // A modality subset across pages (the modality filter is applied to returned studies).
    let ct_q = ScopedQuery::parse(
        &ALL_YEARS.replace("CT,MR,CR,DX,US,SC,OT", "CT"),
        &config(2).scope,
    )
    .unwrap();
    let ct: BTreeSet<String> = c
        .search_studies(&ct_q)
        .unwrap()
        .iter()
        .map(|s| s.uid().to_owned())
        .collect();
    let ct_manifest: BTreeSet<String> = l
        .manifest
        .studies
        .iter()
        .filter(|s| s.modality == "CT")
        .map(|s| s.study_instance_uid.clone())
        .collect();
    assert!(ct_manifest.len() > 2, "more CT studies than one page");
    assert_eq!(ct, ct_manifest);
    // The limit caps the result even across pages.
    let capped = ScopedQuery::parse(
        &ALL_YEARS.replace("limit=1000", "limit=5"),
        &config(2).scope,
    )
    .unwrap();
    assert_eq!(c.search_studies(&capped).unwrap().len(), 5);
    // Explicit accession numbers find exactly their studies.
    let acc: Vec<&str> = l
        .manifest
        .studies
        .iter()
        .take(3)
        .map(|s| s.accession_number.as_str())
        .collect();
    let q = ScopedQuery::parse(
        &format!("AccessionNumber={}&limit=10", acc.join(",")),
        &config(10).scope,
    )
    .unwrap();
    let got: BTreeSet<String> = c
        .search_studies(&q)
        .unwrap()
        .iter()
        .map(|s| s.uid().to_owned())
        .collect();
    let want: BTreeSet<String> = l
        .manifest
        .studies
        .iter()
        .take(3)
        .map(|s| s.study_instance_uid.clone())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn dicomweb_cohort_matches_manifest_and_carries_no_phi() {
    let Some(l) = loaded() else { return };
    let web = build_web(&l, 4);
    let (kept, ex) = expected(&l.manifest);
    assert_eq!(web.entries.len(), kept);
    for (r, n) in &ex {
        assert_eq!(web.exclusions.get(r), *n, "{r}: {:?}", web.exclusions);
    }
    assert_eq!(web.exclusions.total(), ex.values().sum::<u64>());
    assert!(
        ex.get(reason::OPTED_OUT).is_some_and(|n| *n > 0),
        "the cohort has opted-out instances to exclude"
    );

    // Every planted PHI string, and its reformattings, is absent from every record.
    let mut phi: BTreeSet<String> = BTreeSet::new();
    for p in &l.manifest.phi {
        phi.insert(p.clone());
        if p.contains('^') {
            phi.extend(name_variants(p));
        }
        if p.len() == 8 && p.bytes().all(|b| b.is_ascii_digit()) {
            phi.extend(date_variants(p));
        }
    }
    for s in &l.manifest.studies {
        phi.extend(name_variants(&s.patient_name));
        phi.insert(s.accession_number.clone());
        phi.insert(s.study_instance_uid.clone());
        phi.insert(s.study_date.clone());
        phi.extend(date_variants(&s.study_date));
        for i in &s.instances {
            phi.insert(i.sop_instance_uid.clone());
            phi.insert(i.series_instance_uid.clone());
        }
    }
    phi.retain(|p| p.chars().count() >= 4);
    let mut checked = 0;
    for e in &web.entries {
        let json = serde_json::to_string(&e.record).unwrap().to_lowercase();
        for p in &phi {
            assert!(
                !json.contains(&p.to_lowercase()),
                "record carries PHI {p:?}: {json}"
            );
            checked += 1;
        }
    }
    assert!(checked > 1000);

    // Opted-out patients are absent; pseudonyms are consistent per patient.
    let pseudo = key(3);
    let hashed_out: BTreeSet<_> = l
        .manifest
        .opted_out_patients
        .iter()
        .map(|p| pseudo.hash(IdDomain::Patient, p))
        .collect();
    assert!(web
        .entries
        .iter()
        .all(|e| !hashed_out.contains(&e.record.patient)));
    let by_uid: HashMap<String, &str> = l
        .manifest
        .studies
        .iter()
        .flat_map(|s| {
            s.instances
                .iter()
                .map(move |i| (i.sop_instance_uid.clone(), s.patient_id.as_str()))
        })
        .collect();
    for e in &web.entries {
        let InstanceSource::DicomWeb { instance_uid, .. } = &e.source else {
            panic!("web source")
        };
        let pid = by_uid[instance_uid];
        assert_eq!(e.record.patient, pseudo.hash(IdDomain::Patient, pid));
        assert_eq!(
            e.record.instance,
            pseudo.hash(IdDomain::Instance, instance_uid)
        );
        assert!(
            e.raw_identifiers.iter().any(|r| r == pid),
            "raw identifiers keep the PatientID node-side"
        );
    }
    // Labels come from the table for labelled studies.
    assert!(web.entries.iter().any(|e| e.record.label.is_some()));
}

/// Fields compared between the Part 10 path and the DICOM JSON path.
fn comparable(r: &Record) -> Record {
    let mut r = r.clone();
    r.transfer_syntax_uid = None;
    r
}

#[test]
fn dicom_json_path_and_file_path_give_the_same_records() {
    let Some(l) = loaded() else { return };
    let web = build_web(&l, 50);
    let files = build_dir(&l);
    assert_eq!(web.exclusions, files.exclusions);
    let by_instance: HashMap<_, _> = files
        .entries
        .iter()
        .map(|e| (e.record.instance, &e.record))
        .collect();
    assert_eq!(web.entries.len(), files.entries.len());
    for e in &web.entries {
        let f = by_instance[&e.record.instance];
        assert_eq!(comparable(&e.record), comparable(f));
        // Every allow-listed field the generator writes is present.
        let r = &e.record;
        assert!(
            r.rows.is_some()
                && r.columns.is_some()
                && r.bits_allocated.is_some()
                && r.bits_stored.is_some()
        );
        assert!(
            r.photometric_interpretation.is_some()
                && r.samples_per_pixel.is_some()
                && r.pixel_representation.is_some()
        );
        assert!(r.age_years.is_some() && r.days_since_first_study.is_some());
    }
}

#[test]
fn wado_rs_streams_the_instance_and_its_pixels_decode() {
    let Some(l) = loaded() else { return };
    let web = build_web(&l, 50);
    let c = client(&l.orthanc);
    let mut decoded = 0;
    for e in web.entries.iter().take(4) {
        let InstanceSource::DicomWeb {
            study_uid,
            series_uid,
            instance_uid,
        } = &e.source
        else {
            panic!()
        };
        let mut bytes = Vec::new();
        c.retrieve_instance(study_uid, series_uid, instance_uid)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(&bytes[128..132], b"DICM");
        let px = decode(&bytes, Output::Stored).unwrap();
        let s = e.record.pixel_shape;
        assert_eq!(
            px.shape(),
            [
                s.frames as usize,
                usize::from(s.rows),
                usize::from(s.columns),
                usize::from(s.samples)
            ]
        );
        // Same pixels as the file the generator wrote.
        let path = l
            .manifest
            .studies
            .iter()
            .flat_map(|s| &s.instances)
            .find(|i| &i.sop_instance_uid == instance_uid)
            .unwrap();
        let original = decode(
            &std::fs::read(l.dir.path().join(&path.path)).unwrap(),
            Output::Stored,
        )
        .unwrap();
        assert_eq!(px.data, original.data);
        decoded += 1;
    }
    assert_eq!(decoded, 4);
    // A UID that is not a UID never becomes a request.
    assert!(c
        .retrieve_instance("1.2", "1.2.3", "../../instances")
        .is_err());
    // An unknown instance is an HTTP status error, not a panic or an empty stream.
    let err = c
        .retrieve_instance("1.2.3", "1.2.3.4", "1.2.3.4.5")
        .err()
        .unwrap();
    assert!(
        matches!(err, rapha_dicom::DicomError::HttpStatus { status: 404, .. }),
        "{err}"
    );
}

#[test]
fn pydicom_files_through_orthanc_match_the_file_path() {
    let Some(corpus) = corpus() else { return };
    let Some(orthanc) = rapha_testkit::require!(Orthanc::start()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut uids = Vec::new();
    for name in [
        "CT_small.dcm",
        "MR_small.dcm",
        "JPEG-lossy.dcm",
        "SC_rgb_rle.dcm",
        "rtdose.dcm",
    ] {
        std::fs::copy(corpus.join(name), dir.path().join(name)).unwrap();
        orthanc.upload_file(&corpus.join(name)).unwrap();
        let (attrs, _) = rapha_dicom::cohort::read_header(&corpus.join(name)).unwrap();
        uids.push(
            attrs
                .text(rapha_dicom::attrs::tag::STUDY_INSTANCE_UID)
                .unwrap()
                .to_owned(),
        );
    }
    uids.sort();
    uids.dedup();
    let cfg = DicomConfig::default();
    let q = ScopedQuery::parse(
        &format!("StudyInstanceUID={}&limit=10", uids.join(",")),
        &cfg.scope,
    )
    .unwrap();
    let pseudo = key(9);
    let none = OptOuts::none();
    let b = CohortBuilder::new(&pseudo, &cfg, &none);
    let web = b.from_dicomweb(&client(&orthanc), &q).unwrap();
    let files = b.from_dir(dir.path()).unwrap();
    assert!(!web.entries.is_empty());
    assert_eq!(web.exclusions, files.exclusions);
    let mut a: Vec<Record> = web.entries.iter().map(|e| comparable(&e.record)).collect();
    let mut f: Vec<Record> = files
        .entries
        .iter()
        .map(|e| comparable(&e.record))
        .collect();
    a.sort_by_key(|r| r.instance);
    f.sort_by_key(|r| r.instance);
    assert_eq!(a, f);
}
