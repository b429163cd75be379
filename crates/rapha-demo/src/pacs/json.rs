//! DICOM JSON (PS3.18 Annex F) of what the demo PACS indexed: datasets, and the series and
//! instance listings built from them.
//!
//! Why this is not `dicom-json` (0.10.1 matches our dicom-object 0.10): its serializer writes
//! binary values as `InlineBinary` (base64 of every OB/OW/UN element, private ones included),
//! where this writes binary attributes without a value, as a metadata-only PACS does; and it
//! writes DS and IS read from a Part 10 file as JSON strings, where this writes JSON numbers.
//! The metadata is what the node's cohort step, burned-in checks and approved-instance
//! comparison read, and the demo's output is pinned, so the swap needs the demo run compared
//! byte for byte on the new JSON. It can go once that comparison is done (binary elements
//! dropped before serializing).

use dicom_core::header::Header;
use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;
use serde_json::{json, Map, Value};

use super::Instance;

pub(super) fn tag_key(t: dicom_core::Tag) -> String {
    format!("{:04X}{:04X}", t.group(), t.element())
}

/// PS3.18 Annex F JSON of a dataset (binary values are left without a value).
pub(super) fn dataset_json(obj: &InMemDicomObject) -> Value {
    let mut m = Map::new();
    for e in obj.iter() {
        let t = e.tag();
        if t == tags::PIXEL_DATA || t.group() == 0x0002 {
            continue;
        }
        if let Some(v) = element_json(e) {
            m.insert(tag_key(t), v);
        }
    }
    Value::Object(m)
}

fn element_json(e: &InMemElement) -> Option<Value> {
    let vr = e.vr();
    let code = vr.to_string();
    if code.len() != 2 {
        return None;
    }
    if matches!(
        vr,
        VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN
    ) {
        return Some(json!({ "vr": code }));
    }
    if vr == VR::SQ {
        let items: Vec<Value> = e
            .items()
            .map(|items| items.iter().map(dataset_json).collect())
            .unwrap_or_default();
        return Some(json!({ "vr": code, "Value": items }));
    }
    let strs: Vec<String> = e
        .to_multi_str()
        .map(|c| {
            c.iter()
                .map(|s| s.trim_end_matches(['\0', ' ']).trim_start().to_owned())
                .collect()
        })
        .unwrap_or_default();
    if strs.is_empty() || strs.iter().all(String::is_empty) {
        return Some(json!({ "vr": code }));
    }
    let values: Vec<Value> = match vr {
        VR::PN => strs
            .into_iter()
            .map(|s| json!({ "Alphabetic": s }))
            .collect(),
        VR::FL | VR::FD | VR::DS | VR::SL | VR::SS | VR::UL | VR::US | VR::IS | VR::SV | VR::UV => {
            strs.into_iter().map(|s| number(&s)).collect()
        }
        _ => strs.into_iter().map(Value::String).collect(),
    };
    Some(json!({ "vr": code, "Value": values }))
}

pub(super) fn number(s: &str) -> Value {
    let s = s.trim();
    if s.is_empty() {
        return Value::Null;
    }
    if let Ok(i) = s.parse::<i64>() {
        return json!(i);
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => json!(f),
        _ => Value::Null,
    }
}

fn pick(json: &Value, t: &[dicom_core::Tag]) -> Value {
    let mut m = Map::new();
    for t in t {
        if let Some(v) = json.get(tag_key(*t)) {
            m.insert(tag_key(*t), v.clone());
        }
    }
    Value::Object(m)
}

pub(super) fn series_json(i: &Instance) -> Value {
    pick(
        &i.json,
        &[
            tags::STUDY_INSTANCE_UID,
            tags::SERIES_INSTANCE_UID,
            tags::MODALITY,
            tags::SERIES_NUMBER,
        ],
    )
}

pub(super) fn instance_json(i: &Instance) -> Value {
    pick(
        &i.json,
        &[
            tags::STUDY_INSTANCE_UID,
            tags::SERIES_INSTANCE_UID,
            tags::SOP_INSTANCE_UID,
            tags::SOP_CLASS_UID,
            tags::INSTANCE_NUMBER,
        ],
    )
}
