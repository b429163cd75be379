//! Strict DICOM JSON (PS3.18 Annex F) parsing into [`Attrs`].
//!
//! Everything the PACS sends is outside input. A document that is not an array of datasets, a
//! key that is not eight hex digits, an element without a known `vr`, a value whose JSON type
//! does not match its VR (F.2.3), a person name that is not an object of name groups, or an
//! element carrying both `Value` and `BulkDataURI` is refused with a [`JsonError`] saying where
//! and what, never a panic. Refusing rather than guessing keeps a header we do not understand
//! from being read as a header we do.
//!
//! # Why not `dicom-json`
//!
//! dicom-rs's `dicom-json` deserializes Annex F into an `InMemDicomObject` through serde: its
//! errors are `serde_json::Error`s, which say where in the text a document went wrong but not
//! which element of which dataset nor which rule it broke, and its only nesting bound is
//! serde_json's recursion limit, not the [`MAX_DEPTH`] sequence levels that Part 10 headers
//! get here. Our parser is the one place that decides what a PACS's JSON may say, so it stays
//! until `dicom-json` refuses each case above with an error naming the element and takes a
//! sequence depth bound; the corpus and fuzz tests of this crate (`tests/json.rs`, the
//! `dicom_json` fuzz target) must then pass unchanged against it.

use serde_json::{Map, Value};

use crate::attrs::{Attr, AttrValue, Attrs, TagU32};

/// Maximum nesting of sequences accepted (far deeper than any real IOD); the same bound as
/// for Part 10 headers.
pub const MAX_DEPTH: usize = crate::guard::MAX_DEPTH;

/// JSON nesting a document within [`MAX_DEPTH`] can reach: the array of datasets, then per
/// sequence level a dataset object, an element object and a `Value` array, and at the
/// deepest level a person-name object inside a `Value` array.
const MAX_JSON_NESTING: usize = 3 * MAX_DEPTH + 5;

/// Where in the document the problem is (e.g. `[2].00081115[0].00081155`) and what it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at {at}: {kind}")]
pub struct JsonError {
    pub at: String,
    pub kind: JsonErrorKind,
}

/// What is wrong with a DICOM JSON document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonErrorKind {
    #[error("not JSON: {0}")]
    Syntax(String),
    #[error("expected an array of datasets")]
    NotArray,
    #[error("expected a dataset (JSON object)")]
    NotObject,
    #[error("attribute key is not 8 hexadecimal digits")]
    BadTag,
    #[error("element has no \"vr\"")]
    MissingVr,
    #[error("unknown VR {0:?}")]
    UnknownVr(String),
    #[error("VR {vr} needs {expected} values")]
    WrongValueType { vr: String, expected: &'static str },
    #[error("\"Value\" must be an array")]
    ValueNotArray,
    #[error("element has more than one of Value, BulkDataURI, InlineBinary")]
    ConflictingValues,
    #[error("unexpected member {0:?} in an element")]
    UnexpectedMember(String),
    #[error("VR {0} cannot carry BulkDataURI or InlineBinary")]
    BinaryOnTextVr(String),
    #[error("person name must be an object with Alphabetic/Ideographic/Phonetic strings")]
    BadPersonName,
    #[error("attribute tag value must be 8 hexadecimal digits")]
    BadAttributeTag,
    #[error("sequences nested deeper than {MAX_DEPTH} levels (refused before parsing)")]
    TooDeep,
}

const KNOWN_VRS: [&str; 34] = [
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL",
    "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US",
    "UT", "UV",
];

/// Parses a QIDO-RS or WADO-RS metadata response: a JSON array of datasets.
///
/// # Errors
/// [`JsonError`] locating the first violation of PS3.18 Annex F.
pub fn parse_datasets(bytes: &[u8]) -> Result<Vec<Attrs>, JsonError> {
    check_nesting(bytes)?;
    let v: Value = serde_json::from_slice(bytes).map_err(|e| JsonError {
        at: "document".into(),
        kind: JsonErrorKind::Syntax(e.to_string()),
    })?;
    let Value::Array(items) = v else {
        return Err(JsonError {
            at: "document".into(),
            kind: JsonErrorKind::NotArray,
        });
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| dataset(item, &format!("[{i}]"), 0))
        .collect()
}

/// Parses one dataset object.
///
/// # Errors
/// [`JsonError`] as for [`parse_datasets`].
pub fn parse_dataset(bytes: &[u8]) -> Result<Attrs, JsonError> {
    check_nesting(bytes)?;
    let v: Value = serde_json::from_slice(bytes).map_err(|e| JsonError {
        at: "document".into(),
        kind: JsonErrorKind::Syntax(e.to_string()),
    })?;
    dataset(&v, "", 0)
}

/// Refuses a document nested deeper than any DICOM JSON within [`MAX_DEPTH`] can be, before
/// the JSON parser (recursive) sees it. One pass, no allocation; brackets inside strings do
/// not count.
fn check_nesting(bytes: &[u8]) -> Result<(), JsonError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_NESTING {
                    return Err(JsonError {
                        at: "document".into(),
                        kind: JsonErrorKind::TooDeep,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn err(at: &str, kind: JsonErrorKind) -> JsonError {
    JsonError {
        at: if at.is_empty() {
            "root".into()
        } else {
            at.to_owned()
        },
        kind,
    }
}

fn dataset(v: &Value, at: &str, depth: usize) -> Result<Attrs, JsonError> {
    if depth > MAX_DEPTH {
        return Err(err(at, JsonErrorKind::TooDeep));
    }
    let Value::Object(map) = v else {
        return Err(err(at, JsonErrorKind::NotObject));
    };
    let mut out = Attrs::new();
    for (key, elem) in map {
        let here = format!("{at}.{key}");
        let tag = parse_tag(key).ok_or_else(|| err(&here, JsonErrorKind::BadTag))?;
        let Value::Object(elem) = elem else {
            return Err(err(&here, JsonErrorKind::NotObject));
        };
        out.insert(tag, element(elem, &here, depth)?);
    }
    Ok(out)
}

fn parse_tag(key: &str) -> Option<TagU32> {
    (key.len() == 8 && key.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(key, 16).ok())
        .flatten()
}

fn element(elem: &Map<String, Value>, at: &str, depth: usize) -> Result<Attr, JsonError> {
    let vr = match elem.get("vr") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) | None => return Err(err(at, JsonErrorKind::MissingVr)),
    };
    if !KNOWN_VRS.contains(&vr) {
        return Err(err(
            at,
            JsonErrorKind::UnknownVr(vr.chars().take(8).collect()),
        ));
    }
    let mut code = [0u8; 2];
    code.copy_from_slice(vr.as_bytes());
    for k in elem.keys() {
        if !matches!(k.as_str(), "vr" | "Value" | "BulkDataURI" | "InlineBinary") {
            return Err(err(
                at,
                JsonErrorKind::UnexpectedMember(k.chars().take(32).collect()),
            ));
        }
    }
    let present = ["Value", "BulkDataURI", "InlineBinary"]
        .iter()
        .filter(|k| elem.contains_key(**k))
        .count();
    if present > 1 {
        return Err(err(at, JsonErrorKind::ConflictingValues));
    }
    let binary_capable = matches!(vr, "OB" | "OD" | "OF" | "OL" | "OV" | "OW" | "UN");
    if elem.contains_key("BulkDataURI") || elem.contains_key("InlineBinary") {
        // F.2.5/F.2.6: binary forms are for binary VRs (and, for bulk data, large numeric or
        // text values a server chose to move out; those are never read here anyway).
        let key = if elem.contains_key("BulkDataURI") {
            "BulkDataURI"
        } else {
            "InlineBinary"
        };
        if !matches!(elem.get(key), Some(Value::String(_))) {
            return Err(err(
                at,
                JsonErrorKind::WrongValueType {
                    vr: vr.into(),
                    expected: "string",
                },
            ));
        }
        if !binary_capable && key == "InlineBinary" {
            return Err(err(at, JsonErrorKind::BinaryOnTextVr(vr.into())));
        }
        return Ok(Attr {
            vr: code,
            value: AttrValue::Binary,
        });
    }
    let Some(value) = elem.get("Value") else {
        return Ok(Attr {
            vr: code,
            value: AttrValue::Empty,
        });
    };
    let Value::Array(values) = value else {
        return Err(err(at, JsonErrorKind::ValueNotArray));
    };
    if binary_capable {
        // Binary VRs carry data only as InlineBinary or BulkDataURI (F.2.7).
        return Err(err(
            at,
            JsonErrorKind::WrongValueType {
                vr: vr.into(),
                expected: "InlineBinary or BulkDataURI, not Value",
            },
        ));
    }
    let value = match vr {
        "SQ" => {
            let mut items = Vec::with_capacity(values.len());
            for (i, item) in values.iter().enumerate() {
                items.push(dataset(item, &format!("{at}[{i}]"), depth + 1)?);
            }
            AttrValue::Items(items)
        }
        "PN" => AttrValue::Text(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| person_name(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        "FL" | "FD" | "SL" | "SS" | "UL" | "US" => AttrValue::Text(
            values
                .iter()
                .map(|v| match v {
                    Value::Number(n) => Ok(number_text(n)),
                    Value::Null => Ok(String::new()),
                    _ => Err(err(
                        at,
                        JsonErrorKind::WrongValueType {
                            vr: vr.into(),
                            expected: "number",
                        },
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
        // DS and IS are numbers in F.2.3; SV and UV may be strings to keep 64-bit precision. DS
        // and IS as decimal strings are accepted only when they parse as numbers, since several
        // PACS emit them that way.
        "DS" | "IS" | "SV" | "UV" => AttrValue::Text(
            values
                .iter()
                .map(|v| match v {
                    Value::Number(n) => Ok(number_text(n)),
                    Value::Null => Ok(String::new()),
                    Value::String(s) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
                        Ok(s.trim().to_owned())
                    }
                    _ => Err(err(
                        at,
                        JsonErrorKind::WrongValueType {
                            vr: vr.into(),
                            expected: "number",
                        },
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
        "AT" => AttrValue::Text(
            values
                .iter()
                .map(|v| match v {
                    Value::String(s) if parse_tag(s).is_some() => Ok(s.to_ascii_uppercase()),
                    Value::Null => Ok(String::new()),
                    _ => Err(err(at, JsonErrorKind::BadAttributeTag)),
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => AttrValue::Text(
            values
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Null => Ok(String::new()),
                    _ => Err(err(
                        at,
                        JsonErrorKind::WrongValueType {
                            vr: vr.into(),
                            expected: "string",
                        },
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(Attr { vr: code, value })
}

fn number_text(n: &serde_json::Number) -> String {
    // Integers print as integers; other numbers in Rust's shortest round-trip form.
    n.to_string()
}

fn person_name(v: &Value, at: &str) -> Result<String, JsonError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::Object(groups) => {
            let mut parts = [String::new(), String::new(), String::new()];
            for (k, g) in groups {
                let idx = match k.as_str() {
                    "Alphabetic" => 0,
                    "Ideographic" => 1,
                    "Phonetic" => 2,
                    _ => return Err(err(at, JsonErrorKind::BadPersonName)),
                };
                let Value::String(s) = g else {
                    return Err(err(at, JsonErrorKind::BadPersonName));
                };
                parts[idx] = s.clone();
            }
            let mut out = parts.join("=");
            while out.ends_with('=') {
                out.pop();
            }
            Ok(out)
        }
        _ => Err(err(at, JsonErrorKind::BadPersonName)),
    }
}
