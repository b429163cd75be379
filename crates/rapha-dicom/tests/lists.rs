//! Hospital lists as they are really saved (issue 17 item 4). Each spelling a spreadsheet or a
//! hospital export writes is either read exactly or refused with the line named: an opt-out that
//! is silently dropped puts a patient who said no into a cohort.

use std::path::PathBuf;

use proptest::prelude::*;
use rapha_dicom::exclusion::{LabelTable, OptOuts};

fn file(dir: &tempfile::TempDir, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join("list.csv");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn optouts(bytes: &[u8]) -> Result<OptOuts, String> {
    let dir = tempfile::tempdir().unwrap();
    OptOuts::load(&file(&dir, bytes)).map_err(|e| e.to_string())
}

fn labels(bytes: &[u8]) -> Result<LabelTable, String> {
    let dir = tempfile::tempdir().unwrap();
    LabelTable::load(&file(&dir, bytes)).map_err(|e| e.to_string())
}

fn assert_exactly(list: &OptOuts, ids: &[&str]) {
    for id in ids {
        assert!(list.contains(id), "{id} must be on the opt-out list");
    }
    assert_eq!(list.len(), ids.len(), "no other entry may appear");
}

#[test]
fn an_excel_csv_utf8_export_with_a_bom_and_crlf_keeps_every_patient() {
    let list = optouts(b"\xEF\xBB\xBFPatientID\r\nPAT-1\r\nPAT-2\r\n").unwrap();
    assert_exactly(&list, &["PAT-1", "PAT-2"]);
}

#[test]
fn a_semicolon_export_with_several_columns_takes_the_patient_id_column() {
    let list =
        optouts(b"Name;Patient ID;Withdrawn\nDOE^JANE;PAT-7;20240101\nROE^R;PAT-8;20240301\n")
            .unwrap();
    assert_exactly(&list, &["PAT-7", "PAT-8"]);
}

#[test]
fn a_tab_separated_export_is_read() {
    let list = optouts(b"mrn\tdate\nPAT-9\t2024\n").unwrap();
    assert_exactly(&list, &["PAT-9"]);
}

#[test]
fn quoted_fields_with_stray_spaces_and_a_trailing_separator_are_read() {
    let list =
        optouts(b"patient_id,\n \"PAT-3\" ,\n\"PAT-4\"\n  PAT-5\t \n\n# withdrawn 2024\n").unwrap();
    assert_exactly(&list, &["PAT-3", "PAT-4", "PAT-5"]);
}

#[test]
fn excels_sep_line_names_the_separator() {
    let list = optouts(b"sep=;\nPatientID;Note\nPAT-1;a, b\n").unwrap();
    assert_exactly(&list, &["PAT-1"]);
}

#[test]
fn a_utf16_list_is_refused_with_what_to_do() {
    let mut bytes = vec![0xFF, 0xFE];
    for u in "PatientID\r\nPAT-1\r\n".encode_utf16() {
        bytes.extend(u.to_le_bytes());
    }
    let e = optouts(&bytes).unwrap_err();
    assert!(e.contains("UTF-16") && e.contains("UTF-8"), "{e}");
    // Without the mark, the NUL bytes give it away, with the line.
    let e = optouts(&bytes[2..]).unwrap_err();
    assert!(e.contains("line 1") && e.contains("NUL"), "{e}");
}

#[test]
fn a_latin1_list_is_refused_naming_the_line_and_not_the_patient() {
    let e = optouts(b"PatientID\nPAT-1\nM\xFCLLER-2\n").unwrap_err();
    assert!(e.contains("line 3") && e.contains("UTF-8"), "{e}");
    assert!(!e.contains("LLER"), "an error never quotes an entry: {e}");
}

#[test]
fn several_values_on_a_row_without_a_header_are_refused_not_guessed() {
    let e = optouts(b"PAT-1\nPAT-2,PAT-3\n").unwrap_err();
    assert!(e.contains("line 2") && e.contains("header"), "{e}");
    assert!(!e.contains("PAT-"), "an error never quotes an entry: {e}");
}

#[test]
fn a_quoted_value_over_several_lines_is_refused() {
    let e = optouts(b"PatientID\n\"PAT-1\nPAT-2\"\n").unwrap_err();
    assert!(e.contains("line 2") && e.contains("several lines"), "{e}");
}

#[test]
fn a_header_row_without_a_value_in_its_column_is_refused() {
    let e = optouts(b"Name,PatientID\nDOE^J,\n").unwrap_err();
    assert!(e.contains("line 2") && e.contains("column 2"), "{e}");
}

#[test]
fn a_row_with_more_values_than_its_header_is_refused_not_shifted() {
    // An unquoted separator in free text would shift PAT-1 out of the PatientID column.
    let e = optouts(b"Name;PatientID\nDOE; JANE;PAT-1\n").unwrap_err();
    assert!(
        e.contains("line 2") && e.contains("3 values under a header of 2"),
        "{e}"
    );
    assert!(!e.contains("PAT-1") && !e.contains("JANE"), "{e}");
}

#[test]
fn a_header_naming_the_patient_id_twice_is_refused() {
    let e = optouts(b"MRN,Patient ID\nM-1,PAT-1\n").unwrap_err();
    assert!(e.contains("line 1") && e.contains("2 columns"), "{e}");
}

#[test]
fn a_row_whose_first_cell_begins_with_hash_is_data_when_the_ids_are_in_another_column() {
    // A ward or name that begins with '#' must not comment out the patient's opt-out.
    let list =
        optouts(b"# exported 2024-05-01\nWard;PatientID\n#3 EAST;PAT-1\nICU;PAT-2\n").unwrap();
    assert_exactly(&list, &["PAT-1", "PAT-2"]);
    // A comment line there cannot be told from a row: refused with its line, never guessed.
    let e = optouts(b"Ward;PatientID\nICU;PAT-2\n# withdrawn\n").unwrap_err();
    assert!(e.contains("line 3") && e.contains("comment"), "{e}");
    // Where the entries are in the first column, '#' lines stay comments, also before a header.
    let list =
        optouts(b"# exported\nPatientID;Note\nPAT-3;x\n# PAT-4 withdrew the opt-out\n").unwrap();
    assert_exactly(&list, &["PAT-3"]);
    let t = labels(b"# from RIS\nAccessionNumber,label\n# reviewed\nACC1,1\n").unwrap();
    assert_eq!(t.get("ACC1"), Some(1));
}

#[test]
fn a_label_table_from_a_european_spreadsheet_is_read_in_either_column_order() {
    let t = labels(b"\xEF\xBB\xBFLabel;Accession Number\r\n1;ACC1\r\n\"0\";\"ACC2\"\r\n").unwrap();
    assert_eq!(t.get("ACC1"), Some(1));
    assert_eq!(t.get("ACC2"), Some(0));
}

#[test]
fn a_label_tables_first_row_that_is_neither_header_nor_data_is_refused() {
    let e = labels(b"ACC1,yes\nACC2,1\n").unwrap_err();
    assert!(e.contains("line 1") && e.contains("0-255"), "{e}");
}

#[test]
fn an_accession_with_two_different_labels_is_refused_without_naming_it() {
    let e = labels(b"AccessionNumber,label\nACC1,1\nACC2,0\nACC1,0\n").unwrap_err();
    assert!(e.contains("line 4") && e.contains("line 2"), "{e}");
    assert!(!e.contains("ACC1"), "{e}");
    // The same label twice is the same fact.
    assert_eq!(labels(b"ACC1,1\nACC1,1\n").unwrap().get("ACC1"), Some(1));
}

#[test]
fn a_label_row_without_a_label_is_refused() {
    let e = labels(b"AccessionNumber,label\nACC1\n").unwrap_err();
    assert!(e.contains("line 2") && e.contains("no label"), "{e}");
}

/// How a spreadsheet or export may save a one-column list.
#[derive(Debug, Clone)]
struct Spelling {
    bom: bool,
    crlf: bool,
    header: Option<&'static str>,
    separator: char,
    quote: bool,
    pad: &'static str,
    extra_column: bool,
}

fn spelling() -> impl Strategy<Value = Spelling> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![
            "PatientID",
            "Patient ID",
            "patient_id",
            "MRN",
        ])),
        prop::sample::select(vec![',', ';', '\t']),
        any::<bool>(),
        prop::sample::select(vec!["", " ", "  ", "\u{a0}"]),
        any::<bool>(),
    )
        .prop_map(
            |(bom, crlf, header, separator, quote, pad, extra_column)| Spelling {
                bom,
                crlf,
                header,
                separator,
                quote,
                pad,
                extra_column: extra_column && header.is_some(),
            },
        )
}

fn write_list(s: &Spelling, ids: &[String]) -> Vec<u8> {
    let end = if s.crlf { "\r\n" } else { "\n" };
    let mut text = String::new();
    if s.bom {
        text.push('\u{feff}');
    }
    let row = |value: &str| {
        let v = if s.quote {
            format!("\"{value}\"")
        } else {
            value.to_owned()
        };
        let mut r = format!("{}{v}{}", s.pad, s.pad);
        if s.extra_column {
            r.push(s.separator);
            r.push_str("note");
        }
        r
    };
    if let Some(h) = s.header {
        text.push_str(&row(h));
        text.push_str(end);
    }
    for id in ids {
        text.push_str(&row(id));
        text.push_str(end);
    }
    text.into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the spelling, the list read is exactly the list written: nothing dropped,
    /// nothing added.
    #[test]
    fn every_spelling_of_an_opt_out_list_reads_back_exactly(
        s in spelling(),
        ids in prop::collection::btree_set("[A-Z0-9][A-Z0-9^.-]{0,15}", 1..20),
    ) {
        let ids: Vec<String> = ids.into_iter().collect();
        // A first entry spelled like a header is read as one (documented); keep those out.
        let like_a_header = |i: &String| {
            let n: String = i.chars().filter(|c| !matches!(c, '.' | '-')).collect();
            ["PATIENTID", "MRN", "PATIENTNUMBER", "PATIENTIDENTIFIER"].contains(&n.as_str())
        };
        prop_assume!(!ids.iter().any(like_a_header));
        let list = optouts(&write_list(&s, &ids)).unwrap();
        prop_assert_eq!(list.len(), ids.len());
        for id in &ids {
            prop_assert!(list.contains(id));
        }
    }
}

/// A label table in spelling `s` (its one extra column is the label itself): `ids` with
/// `labels`, after a header line when the spelling has one.
fn write_label_table(s: &Spelling, rows: &[(String, u8)]) -> Vec<u8> {
    let end = if s.crlf { "\r\n" } else { "\n" };
    let cell = |value: &str| {
        let v = if s.quote {
            format!("\"{value}\"")
        } else {
            value.to_owned()
        };
        format!("{}{v}{}", s.pad, s.pad)
    };
    let mut text = String::new();
    if s.bom {
        text.push('\u{feff}');
    }
    if s.header.is_some() {
        text.push_str(&format!(
            "{}{}{}{end}",
            cell("AccessionNumber"),
            s.separator,
            cell("label")
        ));
    }
    for (acc, label) in rows {
        text.push_str(&format!(
            "{}{}{}{end}",
            cell(acc),
            s.separator,
            cell(&label.to_string())
        ));
    }
    text.into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The label table, in every spelling the opt-out list is tested in (byte-order mark,
    /// CRLF, a header line or none, comma, semicolon or tab, quoted fields, stray spaces):
    /// every accession reads back with its own label, and no other.
    #[test]
    fn every_spelling_of_a_label_table_reads_back_exactly(
        s in spelling(),
        rows in prop::collection::btree_map("A[0-9]{1,10}", any::<u8>(), 1..20),
    ) {
        let rows: Vec<(String, u8)> = rows.into_iter().collect();
        let table = labels(&write_label_table(&s, &rows)).unwrap();
        for (acc, label) in &rows {
            prop_assert_eq!(table.get(acc), Some(*label), "{}", acc);
        }
        prop_assert_eq!(table.get("A"), None);
    }
}

#[test]
fn a_label_table_with_a_bom_crlf_quotes_and_stray_spaces_keeps_every_label() {
    let t =
        labels(b"\xEF\xBB\xBF AccessionNumber , \"label\" \r\n \"ACC1\" , 1 \r\nACC2,\"0\"\r\n")
            .unwrap();
    assert_eq!((t.get("ACC1"), t.get("ACC2")), (Some(1), Some(0)));
}
