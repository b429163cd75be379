//! The cohort generator: determinism, validity (checked by pydicom), the learnable-but-not-
//! trivial signal, burned-in text, label table, opt-outs, and loading into Orthanc.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use dicom_dictionary_std::tags;
use rapha_testkit::auc;
use rapha_testkit::cohort::{generate, CohortError, CohortManifest, CohortSpec, NATIVE_TS};
use rapha_testkit::require;
use rapha_testkit::services::Orthanc;

use crate::support::python;

fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let spec = |out: &Path, seed| CohortSpec {
        rle_fraction: 0.3,
        ..CohortSpec::new(12, seed, out)
    };
    generate(&spec(a.path(), 42)).unwrap();
    generate(&spec(b.path(), 42)).unwrap();
    generate(&spec(c.path(), 43)).unwrap();
    let (fa, fb, fc) = (
        files_under(a.path()),
        files_under(b.path()),
        files_under(c.path()),
    );
    assert!(fa.len() > 40, "only {} files", fa.len());
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (k, v) in &fa {
        assert!(
            fb[k] == *v,
            "{k} differs between two runs with the same seed"
        );
    }
    assert_ne!(fa["manifest.json"], fc["manifest.json"]);
}

#[test]
fn refuses_to_write_over_an_existing_cohort() {
    let dir = tempfile::tempdir().unwrap();
    generate(&CohortSpec::new(2, 1, dir.path())).unwrap();
    let again = generate(&CohortSpec::new(2, 1, dir.path()));
    assert!(
        matches!(again, Err(CohortError::InvalidSpec(_))),
        "{again:?}"
    );
    let bad = generate(&CohortSpec {
        rle_fraction: 1.5,
        ..CohortSpec::new(2, 1, dir.path().join("x"))
    });
    assert!(matches!(bad, Err(CohortError::InvalidSpec(_))), "{bad:?}");
}

#[test]
fn every_file_parses_in_pydicom_with_its_header_shape_including_rle() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let m = generate(&CohortSpec {
        rle_fraction: 0.5,
        ..CohortSpec::new(20, 9, dir.path())
    })
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_cohort.py");
    let stdout = rapha_testkit::command::stdout_of(Command::new(py).arg(script).arg(dir.path()));
    let summary: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(summary["files"], m.instance_count);
    assert!(summary["rle"].as_u64().unwrap() > 10, "{summary}");
    assert!(summary["native"].as_u64().unwrap() > 10, "{summary}");
    assert!(summary["rgb"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["private_creator"], m.instance_count);
}

fn study_table(m: &CohortManifest) -> BTreeMap<String, u8> {
    m.studies
        .iter()
        .filter_map(|s| s.label.map(|l| (s.accession_number.clone(), l)))
        .collect()
}

#[test]
fn labels_optouts_and_manifest_describe_a_realistic_cohort() {
    let dir = tempfile::tempdir().unwrap();
    let m = generate(&CohortSpec::new(30, 5, dir.path())).unwrap();
    let modalities: BTreeSet<&str> = m.studies.iter().map(|s| s.modality.as_str()).collect();
    assert_eq!(
        modalities,
        ["CR", "CT", "DX", "MR", "SC", "US"].into_iter().collect()
    );
    let mut per_patient: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &m.studies {
        *per_patient.entry(&s.patient_id).or_default() += 1;
        let series: BTreeSet<&str> = s
            .instances
            .iter()
            .map(|i| i.series_instance_uid.as_str())
            .collect();
        if s.modality == "CT" || s.modality == "MR" {
            assert!(
                series.len() >= 2 && s.instances.len() >= 4,
                "{} not multi-series",
                s.modality
            );
        }
        for i in &s.instances {
            assert!(dir.path().join(&i.path).is_file());
            assert_eq!(i.transfer_syntax, NATIVE_TS);
        }
    }
    assert!(
        per_patient.len() >= 5 && per_patient.values().all(|&n| n >= 2),
        "{per_patient:?}"
    );

    let csv = std::fs::read_to_string(dir.path().join("labels.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("AccessionNumber,label"));
    let csv_order: Vec<&str> = lines.clone().filter_map(|l| l.split(',').next()).collect();
    assert_eq!(m.labelled_accessions(), csv_order, "labels.csv order");
    let from_csv: BTreeMap<String, u8> = lines
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.to_owned(), b.parse().unwrap())
        })
        .collect();
    assert_eq!(from_csv, study_table(&m));
    let positives = from_csv.values().filter(|&&l| l == 1).count();
    assert!(
        positives >= 3 && positives < from_csv.len(),
        "{positives}/{}",
        from_csv.len()
    );
    for s in &m.studies {
        assert_eq!(
            s.label.is_some(),
            !matches!(s.modality.as_str(), "US" | "SC")
        );
        assert_eq!(s.label, s.label.map(|_| u8::from(s.has_lesion)));
    }

    let optouts = std::fs::read_to_string(dir.path().join("optouts.csv")).unwrap();
    let listed: Vec<&str> = optouts.lines().skip(1).collect();
    assert_eq!(optouts.lines().next(), Some("PatientID"));
    assert!(!listed.is_empty());
    assert_eq!(
        listed,
        m.opted_out_patients
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert!(listed.iter().all(|p| per_patient.contains_key(p)));
    assert!(listed.len() < per_patient.len());

    let on_disk: CohortManifest =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(on_disk, m);
    for s in &m.studies {
        for v in [
            &s.patient_id,
            &s.patient_name,
            &s.accession_number,
            &s.study_instance_uid,
            &s.study_date,
        ] {
            assert!(m.phi.contains(v), "{v} missing from phi");
        }
    }
}

/// Native pixels of one instance as stored values (16-bit mono or 8-bit RGB averaged).
fn pixels(path: &Path) -> (usize, Vec<f64>) {
    let obj = dicom_object::open_file(path).unwrap();
    let rows = obj.element(tags::ROWS).unwrap().to_int::<usize>().unwrap();
    let spp = obj
        .element(tags::SAMPLES_PER_PIXEL)
        .unwrap()
        .to_int::<usize>()
        .unwrap();
    let bytes = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    let v = if spp == 3 {
        bytes
            .chunks_exact(3)
            .map(|p| p.iter().map(|&b| f64::from(b)).sum::<f64>() / 3.0)
            .collect()
    } else {
        bytes
            .chunks_exact(2)
            .map(|b| f64::from(u16::from_le_bytes([b[0], b[1]])))
            .collect()
    };
    (rows, v)
}

fn integral(img: &[f64], n: usize) -> Vec<f64> {
    let mut s = vec![0.0; (n + 1) * (n + 1)];
    for y in 0..n {
        let mut row = 0.0;
        for x in 0..n {
            row += img[y * n + x];
            s[(y + 1) * (n + 1) + x + 1] = s[y * (n + 1) + x + 1] + row;
        }
    }
    s
}

fn box_mean(s: &[f64], n: usize, cx: usize, cy: usize, r: usize) -> f64 {
    let (x0, y0, x1, y1) = (cx - r, cy - r, cx + r + 1, cy + r + 1);
    let w = n + 1;
    (s[y1 * w + x1] - s[y0 * w + x1] - s[y1 * w + x0] + s[y0 * w + x0])
        / ((2 * r + 1).pow(2) as f64)
}

/// A detector that knows roughly what a lesion is: the largest excess of a lesion-sized box
/// mean over its surround, away from bone and air, in units of the image's noise.
fn matched_filter(img: &[f64], n: usize) -> f64 {
    let max = img.iter().copied().fold(0.0, f64::max);
    let mask: Vec<f64> = img
        .iter()
        .map(|&v| {
            if v > 0.78 * max || v < 0.15 * max {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let (r1, r2) = ((n as f64 * 0.04) as usize, (n as f64 * 0.09) as usize);
    let (si, sm) = (integral(img, n), integral(&mask, n));
    let mut diffs = Vec::new();
    for y in 0..n {
        for x in 0..n - 1 {
            if mask[y * n + x] == 0.0 && mask[y * n + x + 1] == 0.0 {
                diffs.push(img[y * n + x + 1] - img[y * n + x]);
            }
        }
    }
    let var = diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len().max(1) as f64;
    let sigma = (var / 2.0).sqrt().max(1e-9);
    let mut best = 0.0f64;
    for y in r2..n - r2 {
        for x in r2..n - r2 {
            if box_mean(&sm, n, x, y, r2) > 0.0 {
                continue;
            }
            best = best.max((box_mean(&si, n, x, y, r1) - box_mean(&si, n, x, y, r2)) / sigma);
        }
    }
    best
}

#[test]
fn intensity_baselines_stay_near_chance_while_a_lesion_detector_finds_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let m = generate(&CohortSpec::new(100, 2024, dir.path())).unwrap();
    let (mut max_s, mut mean_s, mut mf_s, mut labels) = (vec![], vec![], vec![], vec![]);
    for s in m.studies.iter().filter(|s| s.label.is_some()) {
        let (mut mx, mut mean, mut mf) = (0.0f64, 0.0, 0.0);
        for i in &s.instances {
            let (n, img) = pixels(&dir.path().join(&i.path));
            mx = mx.max(img.iter().copied().fold(0.0, f64::max));
            mean += img.iter().sum::<f64>() / img.len() as f64;
            mf += matched_filter(&img, n);
        }
        let k = s.instances.len() as f64;
        max_s.push(mx);
        mean_s.push(mean / k);
        mf_s.push(mf / k);
        labels.push(s.label.unwrap());
    }
    let positives = labels.iter().filter(|&&l| l == 1).count();
    assert!(
        positives >= 20 && labels.len() - positives >= 20,
        "{positives}/{}",
        labels.len()
    );
    let (a_max, a_mean, a_mf) = (
        auc(&max_s, &labels),
        auc(&mean_s, &labels),
        auc(&mf_s, &labels),
    );
    eprintln!("AUC max {a_max:.3} mean {a_mean:.3} matched filter {a_mf:.3}");
    assert!(a_max <= 0.70, "max-intensity baseline too good: {a_max}");
    assert!(a_mean <= 0.70, "mean-intensity baseline too good: {a_mean}");
    assert!(
        a_mf >= 0.85,
        "the lesion signal is not there: matched filter AUC {a_mf}"
    );
}

#[test]
fn shuffled_labels_permute_the_table_and_leave_images_unchanged() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let truth = generate(&CohortSpec::new(40, 77, a.path())).unwrap();
    let shuffled = generate(&CohortSpec {
        label_shuffle: true,
        ..CohortSpec::new(40, 77, b.path())
    })
    .unwrap();
    let (t, s) = (study_table(&truth), study_table(&shuffled));
    assert_eq!(t.keys().collect::<Vec<_>>(), s.keys().collect::<Vec<_>>());
    let count = |m: &BTreeMap<String, u8>| m.values().filter(|&&l| l == 1).count();
    assert_eq!(count(&t), count(&s));
    assert_ne!(t, s, "shuffling left every label in place");
    let p = &truth.studies[0].instances[0].path;
    assert_eq!(
        std::fs::read(a.path().join(p)).unwrap(),
        std::fs::read(b.path().join(p)).unwrap()
    );
    assert!(shuffled
        .studies
        .iter()
        .any(|s| s.label.is_some_and(|l| l != u8::from(s.has_lesion))));
}

#[test]
fn burned_in_text_is_in_the_pixels_of_exactly_the_listed_instances() {
    let dir = tempfile::tempdir().unwrap();
    let m = generate(&CohortSpec::new(30, 11, dir.path())).unwrap();
    let listed: BTreeSet<&str> = m.burned_in.iter().map(String::as_str).collect();
    let (mut with, mut without, mut flags) = (0, 0, BTreeSet::new());
    for s in &m.studies {
        for i in &s.instances {
            assert_eq!(
                listed.contains(i.sop_instance_uid.as_str()),
                i.burned_in_text
            );
            if !matches!(i.modality.as_str(), "CR" | "DX") {
                assert_eq!(i.burned_in_text, matches!(i.modality.as_str(), "US" | "SC"));
                continue;
            }
            // Text is drawn at the 12-bit ceiling, which anatomy never reaches.
            let (_, img) = pixels(&dir.path().join(&i.path));
            let lit = img.iter().filter(|&&v| v >= 4095.0).count();
            if i.burned_in_text {
                assert!(lit > 200, "{} lit pixels", lit);
                with += 1;
            } else {
                assert_eq!(lit, 0);
                without += 1;
            }
            flags.insert((i.burned_in_text, i.burned_in_annotation_flag.clone()));
        }
    }
    assert!(with > 0 && without > 0);
    // As in the wild: text with the flag set, text without any flag, no text with either.
    assert!(
        flags.contains(&(true, Some("YES".into()))) && flags.contains(&(true, None)),
        "{flags:?}"
    );
}

#[test]
fn generated_cohort_loads_into_orthanc_and_qido_finds_each_patients_studies() {
    let Some(orthanc) = require!(Orthanc::start()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let m = generate(&CohortSpec {
        rle_fraction: 0.3,
        ..CohortSpec::new(12, 3, dir.path())
    })
    .unwrap();
    let (ok, bad) = orthanc.upload_dir(&dir.path().join("dicom")).unwrap();
    assert_eq!((ok, bad), (m.instance_count, 0));
    let mut by_patient: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in &m.studies {
        by_patient
            .entry(&s.patient_id)
            .or_default()
            .insert(&s.study_instance_uid);
    }
    for (pid, want) in &by_patient {
        let found = orthanc
            .get_json(&format!("/dicom-web/studies?PatientID={pid}"))
            .unwrap();
        let got: BTreeSet<String> = found
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["0020000D"]["Value"][0].as_str().unwrap().to_owned())
            .collect();
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "QIDO for {pid}");
    }
}

#[test]
fn the_cli_writes_the_same_cohort_as_the_library() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_rapha-testkit"))
        .args([
            "cohort",
            "--studies",
            "4",
            "--seed",
            "99",
            "--rle-fraction",
            "0.5",
            "--out",
        ])
        .arg(a.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = CohortSpec {
        rle_fraction: 0.5,
        ..CohortSpec::new(4, 99, b.path())
    };
    let m = generate(&spec).unwrap();
    assert_eq!(
        std::fs::read(a.path().join("manifest.json")).unwrap(),
        std::fs::read(b.path().join("manifest.json")).unwrap()
    );
    for s in &m.studies {
        for i in &s.instances {
            assert_eq!(
                std::fs::read(a.path().join(&i.path)).unwrap(),
                std::fs::read(b.path().join(&i.path)).unwrap()
            );
        }
    }
}

/// `--multiframe` and a comma-separated `--transfer-syntax` write what the library's passes
/// write: multi-frame CR/DX/XA objects, study `i` in the `i`-th syntax.
#[test]
fn the_cli_writes_the_same_multiframe_mixed_archive_as_the_library() {
    use rapha_testkit::cohort::{multiframe_cohort, transcode_mixed};

    let syntaxes = ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201"];
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_rapha-testkit"))
        .args(["cohort", "--studies", "10", "--seed", "5", "--multiframe"])
        .args(["--transfer-syntax", &syntaxes.join(","), "--out"])
        .arg(a.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("install the Debian package") {
        assert!(!rapha_testkit::services::services_required(), "{stderr}");
        eprintln!("SKIPPED: {stderr}");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    generate(&CohortSpec::new(10, 5, b.path())).unwrap();
    multiframe_cohort(b.path()).unwrap();
    let m = transcode_mixed(b.path(), &syntaxes).unwrap();
    assert_eq!(
        std::fs::read(a.path().join("manifest.json")).unwrap(),
        std::fs::read(b.path().join("manifest.json")).unwrap()
    );
    assert!(m.multiframe);
    for (k, s) in m.studies.iter().enumerate() {
        for i in &s.instances {
            assert_eq!(i.transfer_syntax, syntaxes[k % 2]);
        }
    }
}
