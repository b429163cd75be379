//! The cohort file: a build written to it keeps exactly the entries (day offsets included) and
//! exclusions of the same build held in memory; the file is read back an entry at a time and
//! refused when it is not the committed one, whether changed before it is opened or after.
use rapha_dicom::cohort::CohortBuilder;
use rapha_dicom::cohort_file::{CohortFile, CohortFileRef, Entries};
use rapha_dicom::exclusion::OptOuts;
use rapha_dicom::{DicomConfig, DicomError};

use crate::common::key;
use crate::records::write_fixture;

fn built(dir: &std::path::Path) -> (rapha_dicom::cohort::Cohort, rapha_dicom::cohort::FileCohort) {
    write_fixture(dir);
    let pseudo = key(3);
    let cfg = DicomConfig::default();
    let optouts = OptOuts::from_ids(["PAT-0099"]);
    let b = CohortBuilder::new(&pseudo, &cfg, &optouts);
    let held = b.from_dir(dir).unwrap();
    // Beside the archive, not in it: the walk would count the spool as a malformed file.
    let out = dir.parent().unwrap().join("cohort.jsonl");
    let file = b.from_dir_to_file(dir, &out).unwrap();
    (held, file)
}

#[test]
fn a_cohort_written_to_its_file_is_the_cohort_built_in_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("archive");
    let (held, file) = built(&root);
    assert_eq!(file.exclusions, held.exclusions);
    assert_eq!(file.file.entries, held.entries.len() as u64);
    let opened = CohortFile::open(&tmp.path().join("cohort.jsonl"), &file.file).unwrap();
    assert_eq!(opened.len(), held.entries.len());
    let mut read = Vec::new();
    opened
        .try_for_each(|_, e| {
            read.push(e);
            Ok(())
        })
        .unwrap();
    let json = |v: &[rapha_dicom::cohort::CohortEntry]| serde_json::to_value(v).unwrap();
    assert_eq!(json(&read), json(&held.entries));
    // The later study of the same patient has its day offset, computed in the second pass.
    assert!(read
        .iter()
        .any(|e| e.record.days_since_first_study.is_some_and(|d| d > 0)));
    // Nothing but the file is left beside it (no spool, no temporary file), and it is private.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.ends_with(".jsonl"))
        .collect();
    assert_eq!(names, ["cohort.jsonl"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tmp.path().join("cohort.jsonl"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

#[test]
fn a_cohort_file_that_is_not_the_committed_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("archive");
    let (_, file) = built(&root);
    let path = tmp.path().join("cohort.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let refused = |r: Result<CohortFile, DicomError>| match r {
        Err(DicomError::CohortFile { .. }) => {}
        other => panic!("not refused: {other:?}"),
    };
    // One entry dropped, one line changed, one line repeated: each is refused at open.
    let lines: Vec<&str> = text.lines().collect();
    let dropped = lines[1..].join("\n") + "\n";
    std::fs::write(&path, dropped).unwrap();
    refused(CohortFile::open(&path, &file.file));
    let changed = text.replacen("\"CT\"", "\"MR\"", 1);
    assert_ne!(changed, text);
    std::fs::write(&path, &changed).unwrap();
    refused(CohortFile::open(&path, &file.file));
    std::fs::write(&path, format!("{text}{}\n", lines[0])).unwrap();
    refused(CohortFile::open(&path, &file.file));
    // Another commitment for the true file: refused too.
    std::fs::write(&path, &text).unwrap();
    let other = CohortFileRef {
        sha256: rapha_core::Digest::of(b"another cohort"),
        ..file.file
    };
    refused(CohortFile::open(&path, &other));

    // Changed in place after it was opened: the changed entry is refused when read, never
    // parsed; the others still read.
    let opened = CohortFile::open(&path, &file.file).unwrap();
    std::fs::write(&path, &changed).unwrap();
    let mut entries = Entries::File(opened);
    let results: Vec<bool> = (0..entries.len()).map(|i| entries.get(i).is_ok()).collect();
    assert!(results.iter().any(|ok| !ok), "{results:?}");
    assert!(results.iter().any(|ok| *ok), "{results:?}");
    // Past the end: none.
    std::fs::write(&path, &text).unwrap();
    assert!(entries.get(entries.len()).unwrap().is_none());
    let _ = entries.drop_opted_out_now(&OptOuts::none());
}

#[test]
fn a_build_that_fails_leaves_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("archive");
    write_fixture(&root);
    let pseudo = key(3);
    let cfg = DicomConfig::default();
    let none = OptOuts::none();
    let path = tmp.path().join("cohort.jsonl");
    let r = CohortBuilder::new(&pseudo, &cfg, &none)
        .with_max_instances(1)
        .from_dir_to_file(&root, &path);
    assert!(
        matches!(r, Err(DicomError::TooManyInstances { limit: 1 })),
        "{r:?}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "archive")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
