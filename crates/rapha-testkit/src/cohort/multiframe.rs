//! A generated cohort with multi-frame projection images (`rapha-testkit cohort
//! --multiframe`), as archives hold them: each CR series becomes one multi-frame CR object
//! (its views the frames); DX studies alternate between one multi-frame DX object (the study's
//! images the frames) and an X-Ray Angiographic cine run (modality XA, [`CINE_FRAMES`]
//! frames of the study's first image panning by a pixel a frame, with the Cine module's
//! nominal FrameTime and a FrameTimeVector whose increments differ per frame, the frame
//! increment pointer naming it, PS3.3 C.7.6.5). Every other attribute, planted PHI included,
//! is the first image's. Test data only.

use std::collections::BTreeMap;
use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{open_file, InMemDicomObject};

use super::{CohortError, CohortManifest, InstanceEntry};

/// X-Ray Angiographic Image Storage.
pub const XA: &str = "1.2.840.10008.5.1.4.1.1.12.1";
/// Frames of each XA cine run.
pub const CINE_FRAMES: usize = 8;
/// The run's nominal time per frame, in milliseconds (15 frames a second).
pub const CINE_FRAME_TIME_MS: f64 = 66.7;
/// The FrameTimeVector of each XA cine run, in milliseconds: the increment before each frame
/// (0 for the first); the fifth frame came late, as when a pulse is dropped.
pub const CINE_FRAME_TIME_VECTOR: [f64; CINE_FRAMES] =
    [0.0, 66.7, 66.7, 66.7, 133.4, 66.7, 66.7, 66.7];

/// Rewrites the uncompressed cohort in `dir` with multi-frame CR, DX and XA objects (written
/// at the first image's path, keeping its SOPInstanceUID; the other images' files are
/// removed) and records it in `manifest.json` (`multiframe`; XA instances and studies with
/// modality `XA`).
///
/// # Errors
/// [`CohortError::InvalidSpec`] for a cohort that is compressed, enhanced or multi-frame
/// already; I/O and DICOM errors.
pub fn multiframe_cohort(dir: &Path) -> Result<CohortManifest, CohortError> {
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read(&manifest_path).map_err(super::io_err("read", &manifest_path))?;
    let mut manifest: CohortManifest = serde_json::from_slice(&text)?;
    if manifest.rle_fraction > 0.0
        || manifest.transfer_syntax.is_some()
        || manifest.enhanced
        || manifest.multiframe
    {
        return Err(CohortError::InvalidSpec(
            "make multi-frame objects from a cohort generated uncompressed (no --rle-fraction), \
             before --enhanced and --transfer-syntax"
                .into(),
        ));
    }
    let mut dx_studies = 0usize;
    for study in &mut manifest.studies {
        let images = std::mem::take(&mut study.instances);
        match study.modality.as_str() {
            "CR" => {
                let mut series: BTreeMap<String, Vec<InstanceEntry>> = BTreeMap::new();
                for inst in images {
                    series
                        .entry(inst.series_instance_uid.clone())
                        .or_default()
                        .push(inst);
                }
                for (_, views) in series {
                    if views.iter().any(|v| v.burned_in_text) {
                        study.instances.extend(views);
                        continue;
                    }
                    let frames = read_frames(dir, &views)?;
                    write_frames(dir, &views, frames, None)?;
                    study.instances.push(views[0].clone());
                }
            }
            "DX" if !images.iter().any(|i| i.burned_in_text) => {
                let cine = dx_studies % 2 == 1;
                dx_studies += 1;
                let mut first = images[0].clone();
                if cine {
                    let frames = read_frames(dir, &images[..1])?;
                    let run = pan(&frames[0], &first);
                    write_frames(dir, &images, run, Some(&mut first))?;
                    study.modality = "XA".into();
                } else {
                    let frames = read_frames(dir, &images)?;
                    write_frames(dir, &images, frames, None)?;
                }
                study.instances.push(first);
            }
            _ => study.instances = images,
        }
    }
    manifest.instance_count = manifest.studies.iter().map(|s| s.instances.len()).sum();
    manifest.multiframe = true;
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    super::write(&manifest_path, &json)?;
    Ok(manifest)
}

/// Each image's dataset and native pixel data, in order.
fn read_frames(
    dir: &Path,
    images: &[InstanceEntry],
) -> Result<Vec<(InMemDicomObject, Vec<u8>)>, CohortError> {
    images
        .iter()
        .map(|i| {
            let path = dir.join(&i.path);
            let dicom_err = |detail: String| CohortError::Dicom {
                path: path.clone(),
                detail,
            };
            let obj = open_file(&path)
                .map_err(|e| dicom_err(e.to_string()))?
                .into_inner();
            let px = obj
                .element(tags::PIXEL_DATA)
                .ok()
                .and_then(|e| e.to_bytes().ok())
                .ok_or_else(|| dicom_err("no native PixelData".into()))?
                .into_owned();
            Ok((obj, px))
        })
        .collect()
}

/// The cine run of `image`: [`CINE_FRAMES`] frames, frame `k` the image moved `k` pixels to
/// the left (the right edge repeats its last column).
fn pan(
    (obj, px): &(InMemDicomObject, Vec<u8>),
    entry: &InstanceEntry,
) -> Vec<(InMemDicomObject, Vec<u8>)> {
    let cols = usize::from(entry.columns);
    let pixel = usize::from(entry.bits_allocated / 8) * usize::from(entry.samples_per_pixel);
    let row_len = cols * pixel;
    (0..CINE_FRAMES)
        .map(|k| {
            let mut frame = Vec::with_capacity(px.len());
            for row in px.chunks_exact(row_len.max(1)) {
                for c in 0..cols {
                    let from = (c + k).min(cols - 1) * pixel;
                    frame.extend_from_slice(&row[from..from + pixel]);
                }
            }
            (obj.clone(), frame)
        })
        .collect()
}

/// Writes `frames` as one multi-frame object at the first image's path and removes the other
/// images' files. With `xa`, the object is an XA cine run and the entry is made one.
fn write_frames(
    dir: &Path,
    images: &[InstanceEntry],
    frames: Vec<(InMemDicomObject, Vec<u8>)>,
    xa: Option<&mut InstanceEntry>,
) -> Result<(), CohortError> {
    let first = &images[0];
    let path = dir.join(&first.path);
    for i in &images[1..] {
        let p = dir.join(&i.path);
        std::fs::remove_file(&p).map_err(super::io_err("remove", &p))?;
    }
    let n = frames.len();
    let mut pixels = Vec::new();
    let mut base = None;
    for (obj, px) in frames {
        pixels.extend_from_slice(&px);
        base.get_or_insert(obj);
    }
    let mut o = base.ok_or_else(|| CohortError::Dicom {
        path: path.clone(),
        detail: "no image to merge".into(),
    })?;
    let text = |v: &str| PrimitiveValue::from(v);
    let class = o
        .element(tags::SOP_CLASS_UID)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|c| c.trim_end_matches('\0').to_owned())
        .unwrap_or_default();
    let class = if let Some(entry) = xa {
        entry.modality = "XA".into();
        o.put(DataElement::new(tags::MODALITY, VR::CS, text("XA")));
        o.put(DataElement::new(tags::SOP_CLASS_UID, VR::UI, text(XA)));
        o.put(DataElement::new(
            tags::FRAME_TIME,
            VR::DS,
            text(&CINE_FRAME_TIME_MS.to_string()),
        ));
        let vector: Vec<String> = CINE_FRAME_TIME_VECTOR.iter().map(f64::to_string).collect();
        o.put(DataElement::new(
            tags::FRAME_TIME_VECTOR,
            VR::DS,
            text(&vector.join("\\")),
        ));
        o.put(DataElement::new(
            tags::FRAME_INCREMENT_POINTER,
            VR::AT,
            PrimitiveValue::Tags(dicom_core::smallvec::smallvec![tags::FRAME_TIME_VECTOR]),
        ));
        o.put(DataElement::new(tags::CINE_RATE, VR::IS, text("15")));
        XA.to_owned()
    } else {
        class
    };
    o.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        text(&n.to_string()),
    ));
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U8(pixels.into()),
    ));
    super::write_part10(
        o,
        &path,
        super::NATIVE_TS,
        (&class, &first.sop_instance_uid),
    )
}
