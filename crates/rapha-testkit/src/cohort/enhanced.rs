//! A generated cohort as a modern scanner writes it (`rapha-testkit cohort --enhanced`): each
//! CT and MR series becomes one Enhanced CT / Enhanced MR Image object, its slices the frames.
//! What the single-frame objects held per image moves into functional groups, as PS3.3
//! C.7.6.16 lays them out: pixel spacing, slice thickness, orientation and (CT) the rescale in
//! the shared group; each frame's position and window in its own per-frame item. Every other
//! attribute, planted PHI included, is the first slice's. Test data only.

use std::collections::BTreeMap;
use std::path::Path;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{open_file, InMemDicomObject};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{uid, CohortError, CohortManifest, InstanceEntry};

/// Enhanced CT Image Storage.
pub const ENHANCED_CT: &str = "1.2.840.10008.5.1.4.1.1.2.1";
/// Enhanced MR Image Storage.
pub const ENHANCED_MR: &str = "1.2.840.10008.5.1.4.1.1.4.1";

/// Attributes of a single-frame object that an enhanced one holds in functional groups only.
const MOVED: [Tag; 9] = [
    tags::IMAGE_POSITION_PATIENT,
    tags::IMAGE_ORIENTATION_PATIENT,
    tags::PIXEL_SPACING,
    tags::SLICE_THICKNESS,
    tags::RESCALE_INTERCEPT,
    tags::RESCALE_SLOPE,
    tags::WINDOW_CENTER,
    tags::WINDOW_WIDTH,
    tags::SLICE_LOCATION,
];

/// Merges every CT and MR series of the uncompressed cohort in `dir` into one enhanced
/// multi-frame object (written at the first slice's path; the other slices' files are
/// removed) and records it in `manifest.json`. A series with burned-in text stays as it is.
///
/// # Errors
/// [`CohortError::InvalidSpec`] for a cohort that is compressed or already enhanced; I/O and
/// DICOM errors.
pub fn enhance_cohort(dir: &Path) -> Result<CohortManifest, CohortError> {
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read(&manifest_path).map_err(super::io_err("read", &manifest_path))?;
    let mut manifest: CohortManifest = serde_json::from_slice(&text)?;
    if manifest.rle_fraction > 0.0 || manifest.transfer_syntax.is_some() || manifest.enhanced {
        return Err(CohortError::InvalidSpec(
            "make enhanced objects from a cohort generated uncompressed (no --rle-fraction), \
             before any --transfer-syntax"
                .into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(manifest.seed ^ 0x656e_6861_6e63_6564);
    let mut new_uids = Vec::new();
    for study in &mut manifest.studies {
        let mut series: BTreeMap<String, Vec<InstanceEntry>> = BTreeMap::new();
        for inst in study.instances.drain(..) {
            series
                .entry(inst.series_instance_uid.clone())
                .or_default()
                .push(inst);
        }
        for (_, slices) in series {
            let class = match slices[0].modality.as_str() {
                "CT" => ENHANCED_CT,
                "MR" => ENHANCED_MR,
                _ => "",
            };
            if class.is_empty() || slices.iter().any(|s| s.burned_in_text) {
                study.instances.extend(slices);
                continue;
            }
            let sop = uid(&mut rng);
            merge(dir, &slices, class, &sop)?;
            new_uids.push(sop.clone());
            study.instances.push(InstanceEntry {
                sop_instance_uid: sop,
                ..slices[0].clone()
            });
        }
    }
    manifest.instance_count = manifest.studies.iter().map(|s| s.instances.len()).sum();
    manifest.phi.extend(new_uids);
    manifest.phi.sort();
    manifest.phi.dedup();
    manifest.enhanced = true;
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    super::write(&manifest_path, &json)?;
    Ok(manifest)
}

/// Writes the enhanced object of `slices` (in instance order) at the first slice's path.
fn merge(dir: &Path, slices: &[InstanceEntry], class: &str, sop: &str) -> Result<(), CohortError> {
    let first_path = dir.join(&slices[0].path);
    let dicom_err = |detail: String| CohortError::Dicom {
        path: first_path.clone(),
        detail,
    };
    let mut frames = Vec::with_capacity(slices.len());
    let mut pixels = Vec::new();
    let mut base: Option<InMemDicomObject> = None;
    for s in slices {
        let path = dir.join(&s.path);
        let obj = open_file(&path)
            .map_err(|e| dicom_err(e.to_string()))?
            .into_inner();
        let bytes = obj
            .element(tags::PIXEL_DATA)
            .ok()
            .and_then(|e| e.to_bytes().ok())
            .ok_or_else(|| dicom_err("no native PixelData".into()))?;
        pixels.extend_from_slice(&bytes);
        frames.push(per_frame_item(&obj));
        if base.is_none() {
            base = Some(obj);
        } else {
            std::fs::remove_file(&path).map_err(super::io_err("remove", &path))?;
        }
    }
    let mut o = base.ok_or_else(|| dicom_err("an empty series".into()))?;
    let shared = shared_item(&o, class == ENHANCED_CT);
    for tag in MOVED {
        o.remove_element(tag);
    }
    let text = |v: &str| PrimitiveValue::from(v);
    o.put(DataElement::new(tags::SOP_CLASS_UID, VR::UI, text(class)));
    o.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, text(sop)));
    o.put(DataElement::new(tags::INSTANCE_NUMBER, VR::IS, text("1")));
    o.put(DataElement::new(
        tags::IMAGE_TYPE,
        VR::CS,
        text("ORIGINAL\\PRIMARY\\AXIAL\\NONE"),
    ));
    o.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        text(&slices.len().to_string()),
    ));
    o.put(sequence(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared],
    ));
    o.put(sequence(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames));
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U8(pixels.into()),
    ));
    super::write_part10(o, &first_path, super::NATIVE_TS, (class, sop))
}

fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// A functional-group macro: one sequence holding one item with `tags` copied from `from`.
fn macro_item(group: &mut InMemDicomObject, seq: Tag, from: &InMemDicomObject, tags: &[Tag]) {
    let mut item = InMemDicomObject::new_empty();
    let mut any = false;
    for &t in tags {
        if let Ok(e) = from.element(t) {
            item.put(e.clone());
            any = true;
        }
    }
    if any {
        group.put(sequence(seq, vec![item]));
    }
}

/// The shared functional groups: pixel measures, plane orientation and (CT) the rescale.
fn shared_item(o: &InMemDicomObject, ct: bool) -> InMemDicomObject {
    let mut g = InMemDicomObject::new_empty();
    macro_item(
        &mut g,
        tags::PIXEL_MEASURES_SEQUENCE,
        o,
        &[tags::PIXEL_SPACING, tags::SLICE_THICKNESS],
    );
    macro_item(
        &mut g,
        tags::PLANE_ORIENTATION_SEQUENCE,
        o,
        &[tags::IMAGE_ORIENTATION_PATIENT],
    );
    if ct {
        let mut with_type = o.clone();
        with_type.put(DataElement::new(
            tags::RESCALE_TYPE,
            VR::LO,
            PrimitiveValue::from("HU"),
        ));
        macro_item(
            &mut g,
            tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
            &with_type,
            &[
                tags::RESCALE_INTERCEPT,
                tags::RESCALE_SLOPE,
                tags::RESCALE_TYPE,
            ],
        );
    }
    g
}

/// One frame's functional groups: its position and its window.
fn per_frame_item(o: &InMemDicomObject) -> InMemDicomObject {
    let mut g = InMemDicomObject::new_empty();
    macro_item(
        &mut g,
        tags::PLANE_POSITION_SEQUENCE,
        o,
        &[tags::IMAGE_POSITION_PATIENT],
    );
    macro_item(
        &mut g,
        tags::FRAME_VOILUT_SEQUENCE,
        o,
        &[tags::WINDOW_CENTER, tags::WINDOW_WIDTH],
    );
    g
}
