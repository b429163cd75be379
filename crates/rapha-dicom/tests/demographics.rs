//! The cohort summary's sex and age histograms over a generated cohort: each kept patient
//! counted once, by the PatientSex and the age at their first kept study (from
//! PatientBirthDate and StudyDate, which the generator writes instead of PatientAge) that the
//! manifest lists, whatever the field policy lets into the records.

use std::collections::{BTreeMap, BTreeSet};

use rapha_core::demographics::{Demographics, SexBin};
use rapha_core::HmacKey;
use rapha_dicom::cohort::{CohortBuilder, Patients};
use rapha_dicom::exclusion::OptOuts;
use rapha_dicom::{DicomConfig, Pseudonymizer};
use rapha_testkit::cohort::{generate, CohortSpec};

/// Whole years from `birth` to `on` (both YYYYMMDD), computed here from the strings.
fn years(birth: &str, on: &str) -> u32 {
    let n = |s: &str, r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap();
    let (by, bmd) = (n(birth, 0..4), n(birth, 4..8));
    let (y, md) = (n(on, 0..4), n(on, 4..8));
    y - by - u32::from(md < bmd)
}

#[test]
fn kept_patients_are_counted_once_by_sex_and_age_decade() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = generate(&CohortSpec::new(40, 20, dir.path())).unwrap();
    let pseudo = Pseudonymizer::new(HmacKey::from_bytes([0x20; 32]));
    let config = DicomConfig::default();
    assert!(
        !config.fields.sex,
        "the default policy keeps sex out of records"
    );
    let optouts = OptOuts::from_ids(manifest.opted_out_patients.iter().map(String::as_str));
    let cohort = CohortBuilder::new(&pseudo, &config, &optouts)
        .from_dir(&dir.path().join("dicom"))
        .unwrap();
    assert!(cohort.entries.iter().all(|e| e.record.sex.is_none()));

    // The expectation, from the manifest and the kept instances' raw identities.
    let studies: BTreeMap<&str, _> = manifest
        .studies
        .iter()
        .map(|s| (s.study_instance_uid.as_str(), s))
        .collect();
    let mut per_patient: BTreeMap<String, (String, u32)> = BTreeMap::new();
    let mut kept_studies = BTreeSet::new();
    for e in &cohort.entries {
        let a = e.approved.as_ref().unwrap();
        let s = studies[a.study_uid.as_str()];
        assert!(!s.patient_birth_date.is_empty() && !s.patient_sex.is_empty());
        kept_studies.insert(a.study_uid.clone());
        let age = years(&s.patient_birth_date, &s.study_date);
        let p = per_patient
            .entry(a.patient_id.clone())
            .or_insert((s.patient_sex.clone(), age));
        assert_eq!(p.0, s.patient_sex);
        p.1 = p.1.min(age);
    }
    let mut want = Demographics::default();
    for (sex, age) in per_patient.values() {
        let bin = match sex.as_str() {
            "F" => SexBin::Female,
            "M" => SexBin::Male,
            "O" => SexBin::Other,
            _ => SexBin::Unknown,
        };
        want.add(bin, Some(u8::try_from(age / 10).unwrap().min(9)));
    }

    let mut patients = Patients::default();
    for e in &cohort.entries {
        patients.add(e);
    }
    let got = patients.demographics();
    assert_eq!(got, want);
    assert_eq!(got.patients(), patients.len());
    // The cohort is not trivial: several patients, both sexes, more than one decade, and
    // some generated patients left out (opted out or with every instance excluded).
    let generated: BTreeSet<&str> = manifest
        .studies
        .iter()
        .map(|s| s.patient_id.as_str())
        .collect();
    assert!(per_patient.len() >= 10 && per_patient.len() < generated.len());
    assert!(got.sex.female > 0 && got.sex.male > 0 && got.sex.unknown == 0);
    assert!(got.age.decades.iter().filter(|n| **n > 0).count() >= 3);
    assert_eq!(got.age.unknown, 0);
    eprintln!(
        "FIGURES demographics: {} patients kept of {} generated ({} studies kept): {:?}",
        per_patient.len(),
        generated.len(),
        kept_studies.len(),
        got
    );
}

/// A patient whose instances state different sexes counts as unknown, one with no stated age
/// as unknown age, and an instance with no age leaves the age another instance stated.
#[test]
fn conflicting_sex_and_a_missing_age_are_unknown_and_a_stated_age_stays() {
    use rapha_dicom::record::Sex;
    let dir = tempfile::tempdir().unwrap();
    generate(&CohortSpec::new(6, 21, dir.path())).unwrap();
    let pseudo = Pseudonymizer::new(HmacKey::from_bytes([0x20; 32]));
    let config = DicomConfig::default();
    let cohort = CohortBuilder::new(&pseudo, &config, &OptOuts::none())
        .from_dir(&dir.path().join("dicom"))
        .unwrap();
    let mut entries = cohort.entries;
    let first = entries[0].record.patient;
    let mut patients = Patients::default();
    for e in &mut entries {
        if e.record.patient == first {
            e.record.age_years = None;
        }
        patients.add(e);
    }
    let before = patients.demographics();
    assert_eq!(before.age.unknown, 1, "{before:?}");
    assert!(before.patients() >= 2, "{before:?}");

    let mut flipped = entries[0].clone();
    flipped.sex = match flipped.sex {
        Some(Sex::Female) => Some(Sex::Male),
        _ => Some(Sex::Female),
    };
    let mut ageless = entries
        .iter()
        .find(|e| e.record.patient != first)
        .unwrap()
        .clone();
    ageless.record.age_years = None;
    patients.add(&flipped);
    patients.add(&ageless);
    let after = patients.demographics();
    assert_eq!(after.sex.unknown, before.sex.unknown + 1);
    assert_eq!(after.age, before.age);
    assert_eq!(after.patients(), before.patients());
}
