//! Hospital lists as spreadsheets and hospital systems save them: the opt-out list, the label
//! table and the accession lists a publisher's engineer hands to `rapha job submit`.
//!
//! A list entry that cannot be read is never dropped: for opt-outs that would put a patient who
//! said no into a cohort (the opt-out half of **I3**). So every spelling a spreadsheet or an
//! export writes is read through a real CSV parser (the `csv` crate), and every spelling it
//! cannot read is refused with the line named:
//!
//! | spelling                                   | handling                                   |
//! |--------------------------------------------|--------------------------------------------|
//! | UTF-8 with or without a byte-order mark     | read (the mark is dropped)                 |
//! | CRLF, LF or CR line ends                    | read                                       |
//! | `,`, `;` (European locales) or tab          | read: the separator is detected            |
//! | Excel's `sep=;` first line                  | read: it names the separator               |
//! | quoted fields, `""` inside quotes           | read                                       |
//! | stray spaces (also no-break) around a field | trimmed, and quotes inside them removed    |
//! | a trailing separator (`PAT1,`)              | read: empty fields are ignored             |
//! | blank lines and lines starting with `#`     | skipped                                    |
//! | UTF-16 (with or without a mark), NUL bytes  | refused: save as "CSV UTF-8"               |
//! | bytes that are not UTF-8 (Latin-1, …)       | refused, naming the line                   |
//! | a quoted value spanning several lines       | refused, naming the line                   |
//!
//! Errors name a line and a column, never a value from the list (a PatientID is PHI).

use std::fmt;

/// Why a list cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError {
    /// 1-based line of the file, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub reason: String,
}

impl ListError {
    fn at(line: usize, reason: impl Into<String>) -> Self {
        Self {
            line: Some(line),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for ListError {}

/// One non-blank row of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based line of the file where the row starts.
    pub line: usize,
    /// The fields, trimmed and unquoted; trailing empty fields removed.
    pub fields: Vec<String>,
}

impl Row {
    /// Whether the row's first cell starts with `#`.
    pub fn starts_with_hash(&self) -> bool {
        self.fields[0].starts_with('#')
    }

    /// Whether the row is a comment in a list whose entries are in column `key` (0-based): a
    /// first cell starting with `#` comments the row out only when that cell is the entry's
    /// own. Under a header whose entry column is another, such a row is data (a name or ward
    /// that begins with `#`), never dropped.
    pub fn is_comment_for(&self, key: usize) -> bool {
        key == 0 && self.starts_with_hash()
    }
}

/// The rows from the first that is not a `#` comment on: comments before a header.
pub fn after_leading_comments(rows: &[Row]) -> &[Row] {
    let start = rows
        .iter()
        .position(|r| !r.starts_with_hash())
        .unwrap_or(rows.len());
    &rows[start..]
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The rows of a list file.
///
/// # Errors
/// [`ListError`] for a file in UTF-16, with a NUL byte or bytes that are not UTF-8, or with a
/// quoted value over several lines.
pub fn read_rows(bytes: &[u8]) -> Result<Vec<Row>, ListError> {
    let text = decode(bytes)?;
    let (skip_lines, delimiter) = separator(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let more = reader.read_record(&mut record).map_err(|e| {
            let line = e
                .position()
                .map_or(0, |p| usize::try_from(p.line()).unwrap_or(0));
            ListError::at(line, format!("not readable as CSV ({})", csv_kind(&e)))
        })?;
        if !more {
            break;
        }
        let line = record
            .position()
            .map_or(0, |p| usize::try_from(p.line()).unwrap_or(usize::MAX));
        if line <= skip_lines {
            continue;
        }
        if record.iter().any(|f| f.contains(['\n', '\r'])) {
            return Err(ListError::at(
                line,
                "a quoted value spans several lines; put each entry on its own line",
            ));
        }
        let mut fields: Vec<String> = record.iter().map(clean).collect();
        while fields.last().is_some_and(String::is_empty) {
            fields.pop();
        }
        if fields.is_empty() {
            continue;
        }
        rows.push(Row { line, fields });
    }
    Ok(rows)
}

/// The entries of a one-column list (PatientIDs, AccessionNumbers): the first field of each row,
/// or the column whose header `is_header` recognises when the first row is such a header.
///
/// # Errors
/// As [`read_rows`]; and a row with more than one value when no header line says which column
/// is meant, a header naming that column twice, a row with more values than the header has
/// columns (its columns would be shifted), or a row without a value in the header's column.
pub fn read_column(
    bytes: &[u8],
    what: &str,
    is_header: impl Fn(&str) -> bool,
) -> Result<Vec<(usize, String)>, ListError> {
    let all = read_rows(bytes)?;
    let rows = after_leading_comments(&all);
    let (column, body) = match rows.split_first() {
        Some((first, rest)) => {
            let named: Vec<usize> = (0..first.fields.len())
                .filter(|&i| is_header(&first.fields[i]))
                .collect();
            match named[..] {
                [] => (None, rows),
                [column] => (Some((column, first.fields.len())), rest),
                _ => {
                    return Err(ListError::at(
                        first.line,
                        format!(
                            "{} columns of the header name the {what}; keep one",
                            named.len()
                        ),
                    ))
                }
            }
        }
        None => return Ok(Vec::new()),
    };
    body.iter()
        .filter(|row| !row.is_comment_for(column.map_or(0, |(c, _)| c)))
        .map(|row| {
            if let Some((_, width)) = column {
                if row.fields.len() > width {
                    return Err(ListError::at(
                        row.line,
                        format!(
                            "{} values under a header of {width} columns (a separator inside an \
                             unquoted value?); quote the value or remove the separator",
                            row.fields.len()
                        ),
                    ));
                }
            }
            let value = match column.map(|(c, _)| c) {
                Some(c) => row.fields.get(c).filter(|v| !v.is_empty()).ok_or_else(|| {
                    let hint = if row.starts_with_hash() {
                        " (a '#' comment cannot be told from a row when the entries are not in \
                         the first column: remove it)"
                    } else {
                        ""
                    };
                    ListError::at(row.line, format!("no {what} in column {}{hint}", c + 1))
                })?,
                None if row.fields.len() > 1 => {
                    return Err(ListError::at(
                        row.line,
                        format!(
                            "{} values, but no header line says which column holds the {what}; \
                             add a header line naming it",
                            row.fields.len()
                        ),
                    ))
                }
                None => &row.fields[0],
            };
            if value.is_empty() {
                return Err(ListError::at(row.line, format!("the {what} is empty")));
            }
            Ok((row.line, value.clone()))
        })
        .collect()
}

/// A header cell, compared without case, spaces, `_`, `-` and `.`: `Patient ID`, `patient_id`
/// and `PATIENTID` are one name.
pub fn header_name(cell: &str) -> String {
    cell.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-' | '.') && !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a header cell names an AccessionNumber column (`AccessionNumber`, `Accession No.`,
/// `accession_nr`, …). Exact names only: an accession number that merely starts with
/// "ACCESSION" is data, not a header.
pub fn is_accession_header(cell: &str) -> bool {
    matches!(
        header_name(cell).as_str(),
        "accession" | "accessionnumber" | "accessionno" | "accessionnr" | "accessionid"
    )
}

fn decode(bytes: &[u8]) -> Result<&str, ListError> {
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err(ListError {
            line: None,
            reason: "the file is UTF-16 text; save it as UTF-8 (\"CSV UTF-8\" in a spreadsheet)"
                .into(),
        });
    }
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let line_of = |offset: usize| 1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count();
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(ListError::at(
            line_of(at),
            "a NUL byte (UTF-16 text?); save the file as UTF-8 (\"CSV UTF-8\" in a spreadsheet)",
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        ListError::at(
            line_of(e.valid_up_to()),
            "bytes that are not UTF-8 (Latin-1 or Windows-1252?); save the file as UTF-8 \
             (\"CSV UTF-8\" in a spreadsheet)",
        )
    })
}

/// The separator, and the number of lines to skip before the data (1 for Excel's `sep=` line).
fn separator(text: &str) -> (usize, u8) {
    let mut lines = text.lines();
    if let Some(first) = lines.clone().next() {
        let first = first.trim();
        if let Some(sep) = first
            .strip_prefix("sep=")
            .or_else(|| first.strip_prefix("SEP="))
        {
            if let [b] = sep.as_bytes() {
                return (1, *b);
            }
        }
    }
    let sample = lines.find(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#')
    });
    let Some(sample) = sample else {
        return (0, b',');
    };
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut quoted = false;
    for b in sample.bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted {
            for (d, n) in &mut counts {
                if b == *d {
                    *n += 1;
                }
            }
        }
    }
    // Ties (and a one-column list) keep the comma.
    let best = counts.iter().fold(
        (b',', 0),
        |best, &(d, n)| if n > best.1 { (d, n) } else { best },
    );
    (0, best.0)
}

/// A field trimmed of spaces (also no-break spaces), then of one pair of quotes that stray spaces
/// kept the CSV parser from seeing (`, "PAT-1"`), then of spaces inside those quotes.
fn clean(field: &str) -> String {
    let t = field.trim();
    let t = t
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map_or(t, str::trim);
    t.to_owned()
}

fn csv_kind(e: &csv::Error) -> &'static str {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8",
        csv::ErrorKind::UnequalLengths { .. } => "unequal rows",
        csv::ErrorKind::Io(_) => "read error",
        _ => "malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_ignore_case_and_punctuation() {
        assert_eq!(header_name(" Patient_ID "), "patientid");
        assert_eq!(header_name("Accession-No."), "accessionno");
    }

    #[test]
    fn the_separator_is_the_most_frequent_outside_quotes() {
        assert_eq!(separator("a;b;\"c,d,e\"\n").1, b';');
        assert_eq!(separator("a\tb\n").1, b'\t');
        assert_eq!(separator("PAT-1\n").1, b',');
        assert_eq!(separator("sep=;\na,b;c\n"), (1, b';'));
    }
}
