//! One study of the synthetic cohort: its headers with PHI planted where a real study carries
//! it, its pixels (with burned-in text where the modality has it), written as Part 10 files.

use dicom_core::value::{DataSetSequence, PixelFragmentSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use rand::Rng;

use super::*;

/// Study-level values shared by its instances.
struct Study {
    uid: String,
    accession: String,
    date: String,
    time: String,
    description: String,
    study_id: String,
    prior_uid: String,
    requested_procedure_id: String,
    sps_id: String,
    pps_id: String,
    staff: phi::Staff,
    age: String,
}

/// One instance's pixels before encoding.
enum Pixels {
    Mono16(Vec<u16>),
    Rgb8(Vec<u8>),
}

impl StudyCtx<'_> {
    fn plant(&mut self, s: &str) -> String {
        self.phi.insert(s.to_owned());
        s.to_owned()
    }

    pub(super) fn generate(&mut self) -> Result<StudyEntry, CohortError> {
        let m = self.modality;
        let p = self.patient;
        let date = date(&mut self.rng, 2016, 2026);
        let study_year: u32 = date[..4].parse().unwrap_or(2020);
        let staff = phi::staff(&mut self.rng, p.institution, m.code());
        let mut description = m.study_description().to_owned();
        if self.rng.gen_bool(0.5) {
            // Free text with identifiers, as technologists type them.
            description = format!("{description} FU {} {}", p.family, p.given);
        }
        let study = Study {
            uid: uid(&mut self.rng),
            accession: format!("A{:05}{:04}", self.index, self.rng.gen_range(0..10_000u32)),
            time: time(&mut self.rng),
            description,
            study_id: format!("ST{:06}", self.rng.gen_range(0..1_000_000u32)),
            prior_uid: uid(&mut self.rng),
            requested_procedure_id: format!("RP{:08}", self.rng.gen_range(0..100_000_000u32)),
            sps_id: format!("SPS{:07}", self.rng.gen_range(0..10_000_000u32)),
            pps_id: format!("PPS{:07}", self.rng.gen_range(0..10_000_000u32)),
            age: format!("{:03}Y", study_year.saturating_sub(p.birth_year)),
            date,
            staff,
        };
        for s in [
            &study.uid,
            &study.accession,
            &study.date,
            &study.time,
            &study.description,
            &study.study_id,
            &study.prior_uid,
            &study.requested_procedure_id,
            &study.sps_id,
            &study.pps_id,
            &study.staff.referring,
            &study.staff.operator,
            &study.staff.station,
        ] {
            self.phi.insert(s.clone());
        }

        let has_lesion = m.labelled() && self.rng.gen_bool(POSITIVE_RATE);
        let (n_series, per_series, side) = m.layout();
        let anatomy = image::anatomy(&mut self.rng, side);
        let lesion = has_lesion.then(|| image::lesion(&mut self.rng, &anatomy));

        let mut instances = Vec::new();
        for se in 0..n_series {
            let series_uid = uid(&mut self.rng);
            let frame_uid = uid(&mut self.rng);
            let series_time = time(&mut self.rng);
            let tag = if self.rng.gen_bool(0.3) {
                p.family.as_str()
            } else {
                "ROUTINE"
            };
            let series_desc = self.plant(&format!("{} SERIES {} {tag}", m.code(), se + 1));
            let protocol_no = self.rng.gen_range(1..9);
            let protocol = self.plant(&format!(
                "{} {} PROTOCOL {protocol_no}",
                phi::institution(p.institution)
                    .0
                    .split(' ')
                    .next()
                    .unwrap_or("HOSP"),
                m.code(),
            ));
            self.plant(&series_uid);
            self.plant(&frame_uid);
            self.plant(&series_time);
            for inst in 0..per_series {
                let sop_uid = uid(&mut self.rng);
                self.plant(&sop_uid);
                let content_time = time(&mut self.rng);
                self.plant(&content_time);
                let (pixels, text, flag) = self.pixels(side, &anatomy, lesion.as_ref(), &study)?;
                let rle = self.rng_rle();
                let rel = format!(
                    "dicom/p{:04}/s{:05}/se{}/i{:02}.dcm",
                    self.patient_index,
                    self.index,
                    se + 1,
                    inst + 1
                );
                let entry = InstanceEntry {
                    sop_instance_uid: sop_uid.clone(),
                    series_instance_uid: series_uid.clone(),
                    path: rel.clone(),
                    modality: m.name().to_owned(),
                    burned_in_text: text,
                    burned_in_annotation_flag: flag.map(str::to_owned),
                    transfer_syntax: if rle { RLE_TS } else { NATIVE_TS }.to_owned(),
                    rows: side as u16,
                    columns: side as u16,
                    samples_per_pixel: if matches!(pixels, Pixels::Rgb8(_)) {
                        3
                    } else {
                        1
                    },
                    bits_allocated: if matches!(pixels, Pixels::Rgb8(_)) {
                        8
                    } else {
                        16
                    },
                };
                let obj = self.dataset(
                    &study,
                    &entry,
                    InstanceCtx {
                        series_number: se + 1,
                        instance_number: inst + 1,
                        frame_uid: &frame_uid,
                        series_time: &series_time,
                        content_time: &content_time,
                        series_desc: &series_desc,
                        protocol: &protocol,
                    },
                    pixels,
                );
                let path = self.out.join(&rel);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
                }
                let dicom_err = |detail: String| CohortError::Dicom {
                    path: path.clone(),
                    detail,
                };
                let file = obj
                    .with_meta(
                        FileMetaTableBuilder::new()
                            .transfer_syntax(entry.transfer_syntax.as_str())
                            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                            .implementation_version_name("RAPHA_TESTKIT"),
                    )
                    .map_err(|e| dicom_err(e.to_string()))?;
                let mut bytes = Vec::new();
                file.write_all(&mut bytes)
                    .map_err(|e| dicom_err(e.to_string()))?;
                write(&path, &bytes)?;
                if text {
                    self.burned_in.push(sop_uid.clone());
                }
                instances.push(entry);
            }
        }
        Ok(StudyEntry {
            patient_id: p.id.clone(),
            patient_name: p.name.clone(),
            patient_sex: p.sex.to_owned(),
            patient_birth_date: p.birth_date.clone(),
            accession_number: study.accession.clone(),
            study_instance_uid: study.uid.clone(),
            study_date: study.date.clone(),
            modality: m.name().to_owned(),
            label: m.labelled().then_some(u8::from(has_lesion)),
            has_lesion,
            instances,
        })
    }

    fn rng_rle(&mut self) -> bool {
        // Drawn from its own stream for every instance, so the fraction alters nothing else.
        let draw: f32 = self.rle_rng.gen();
        draw < self.rle_fraction
    }

    /// The instance's pixels, whether they carry burned-in text, and the BurnedInAnnotation
    /// flag to write (present-and-true, present-and-false, or absent, as in the wild).
    fn pixels(
        &mut self,
        side: usize,
        anatomy: &image::Anatomy,
        lesion: Option<&image::Lesion>,
        study: &Study,
    ) -> Result<(Pixels, bool, Option<&'static str>), CohortError> {
        let m = self.modality;
        let text = match m {
            Modality::Us | Modality::Sc => true,
            Modality::Cr | Modality::Dx => self.rng.gen_bool(0.35),
            _ => false,
        };
        let flag = match (m, text) {
            (Modality::Us, _) => self.rng.gen_bool(0.7).then_some("YES"),
            (_, true) => self.rng.gen_bool(0.5).then_some("YES"),
            (_, false) => self.rng.gen_bool(0.5).then_some("NO"),
        };
        let p = self.patient;
        let mut lines = vec![
            p.name.clone(),
            format!("ID {}", p.id),
            format!("DOB {}", p.birth_date),
        ];
        lines.push(format!("{} {}", study.date, &study.time[..6]));
        if matches!(m, Modality::Us | Modality::Sc) {
            lines.push(phi::institution(p.institution).0.to_owned());
        }
        let scale = side / 128;
        let pixels = match m {
            Modality::Us => {
                let img = image::ultrasound(&mut self.rng, side, side);
                let mut rgb: Vec<u8> = img
                    .iter()
                    .flat_map(|&t| {
                        let g = (t * 255.0).clamp(0.0, 255.0) as u8;
                        [g, g, g]
                    })
                    .collect();
                burn_rgb(&mut rgb, side, &lines, scale, [255, 255, 160]);
                Pixels::Rgb8(rgb)
            }
            Modality::Sc => {
                let mut rgb = vec![0u8; side * side * 3];
                for px in rgb.chunks_exact_mut(3) {
                    px.copy_from_slice(&[18, 22, 34]);
                }
                // A screen capture: a small rendered image in a panel, text around it.
                let small = image::anatomy(&mut self.rng, side / 2);
                let inner = image::render(&mut self.rng, &small, None, side / 2, side / 2);
                let (ox, oy) = (side / 4, side * 3 / 8);
                for y in 0..side / 2 {
                    for x in 0..side / 2 {
                        let g = (inner[y * (side / 2) + x] * 255.0).clamp(0.0, 255.0) as u8;
                        let o = ((oy + y).min(side - 1) * side + ox + x) * 3;
                        rgb[o..o + 3].copy_from_slice(&[g, g, g]);
                    }
                }
                burn_rgb(&mut rgb, side, &lines, scale, [255, 255, 255]);
                Pixels::Rgb8(rgb)
            }
            _ => {
                let img = image::render(&mut self.rng, anatomy, lesion, side, side);
                let k = m.scale();
                let mut v: Vec<u16> = img
                    .iter()
                    .map(|&t| (t * k).round().clamp(0.0, 4095.0) as u16)
                    .collect();
                if text {
                    let mut y = 2;
                    for line in &lines {
                        font::draw(line, 2, y, scale, side, side, |x, yy| {
                            v[yy * side + x] = 4095
                        });
                        y += font::CELL_H * scale;
                    }
                }
                Pixels::Mono16(v)
            }
        };
        for line in lines.iter().filter(|_| text) {
            self.phi.insert(line.clone());
        }
        Ok((pixels, text, flag))
    }

    fn dataset(
        &self,
        study: &Study,
        entry: &InstanceEntry,
        ic: InstanceCtx<'_>,
        pixels: Pixels,
    ) -> InMemDicomObject {
        let m = self.modality;
        let p = self.patient;
        let (inst_name, inst_addr) = phi::institution(p.institution);
        let mut o = InMemDicomObject::new_empty();
        let s = |o: &mut InMemDicomObject, t: Tag, vr: VR, v: &str| {
            o.put(DataElement::new(t, vr, PrimitiveValue::from(v)));
        };
        let us = |o: &mut InMemDicomObject, t: Tag, v: u16| {
            o.put(DataElement::new(
                t,
                VR::US,
                PrimitiveValue::U16(vec![v].into()),
            ));
        };
        s(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
        let image_type = match m {
            Modality::Sc => "DERIVED\\SECONDARY",
            Modality::Ct | Modality::Mr => "ORIGINAL\\PRIMARY\\AXIAL",
            _ => "ORIGINAL\\PRIMARY",
        };
        s(&mut o, tags::IMAGE_TYPE, VR::CS, image_type);
        s(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, &study.date);
        s(
            &mut o,
            tags::INSTANCE_CREATION_TIME,
            VR::TM,
            ic.content_time,
        );
        s(&mut o, tags::SOP_CLASS_UID, VR::UI, m.sop_class());
        s(
            &mut o,
            tags::SOP_INSTANCE_UID,
            VR::UI,
            &entry.sop_instance_uid,
        );
        for t in [
            tags::STUDY_DATE,
            tags::SERIES_DATE,
            tags::ACQUISITION_DATE,
            tags::CONTENT_DATE,
        ] {
            s(&mut o, t, VR::DA, &study.date);
        }
        s(&mut o, tags::STUDY_TIME, VR::TM, &study.time);
        s(&mut o, tags::SERIES_TIME, VR::TM, ic.series_time);
        s(&mut o, tags::ACQUISITION_TIME, VR::TM, ic.content_time);
        s(&mut o, tags::CONTENT_TIME, VR::TM, ic.content_time);
        s(&mut o, tags::ACCESSION_NUMBER, VR::SH, &study.accession);
        s(&mut o, tags::MODALITY, VR::CS, m.code());
        if m == Modality::Sc {
            s(&mut o, tags::CONVERSION_TYPE, VR::CS, "WSD");
        }
        s(
            &mut o,
            tags::MANUFACTURER,
            VR::LO,
            "RAPHA SYNTHETIC IMAGING",
        );
        s(&mut o, tags::INSTITUTION_NAME, VR::LO, inst_name);
        s(&mut o, tags::INSTITUTION_ADDRESS, VR::ST, inst_addr);
        s(
            &mut o,
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            &study.staff.referring,
        );
        s(&mut o, tags::STATION_NAME, VR::SH, &study.staff.station);
        s(&mut o, tags::STUDY_DESCRIPTION, VR::LO, &study.description);
        s(&mut o, tags::SERIES_DESCRIPTION, VR::LO, ic.series_desc);
        s(&mut o, tags::OPERATORS_NAME, VR::PN, &study.staff.operator);
        // ReferencedStudySequence: a prior exam of the same patient.
        let mut prior = InMemDicomObject::new_empty();
        s(
            &mut prior,
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            "1.2.840.10008.3.1.2.3.1",
        );
        s(
            &mut prior,
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            &study.prior_uid,
        );
        o.put(DataElement::new(
            tags::REFERENCED_STUDY_SEQUENCE,
            VR::SQ,
            Value::from(DataSetSequence::from(vec![prior])),
        ));
        s(&mut o, tags::PATIENT_NAME, VR::PN, &p.name);
        s(&mut o, tags::PATIENT_ID, VR::LO, &p.id);
        s(&mut o, tags::ISSUER_OF_PATIENT_ID, VR::LO, &p.issuer);
        s(&mut o, tags::PATIENT_BIRTH_DATE, VR::DA, &p.birth_date);
        s(&mut o, tags::PATIENT_SEX, VR::CS, p.sex);
        // OtherPatientIDs: retired in the standard, still written by older systems.
        #[allow(deprecated)]
        s(&mut o, tags::OTHER_PATIENT_I_DS, VR::LO, &p.other_id);
        s(&mut o, tags::PATIENT_AGE, VR::AS, &study.age);
        // A vendor's private block that copies identifiers (as real ones do).
        s(&mut o, Tag(0x0011, 0x0010), VR::LO, "RAPHA SYNTH PRIVATE");
        s(&mut o, Tag(0x0011, 0x1010), VR::LO, &p.id);
        s(&mut o, Tag(0x0011, 0x1011), VR::LO, &p.name);
        s(&mut o, Tag(0x0011, 0x1012), VR::LO, &p.other_id);
        if matches!(m, Modality::Ct | Modality::Mr) {
            s(&mut o, tags::SLICE_THICKNESS, VR::DS, "2.5");
        }
        s(&mut o, tags::PROTOCOL_NAME, VR::LO, ic.protocol);
        s(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, &study.uid);
        s(
            &mut o,
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            &entry.series_instance_uid,
        );
        s(&mut o, tags::STUDY_ID, VR::SH, &study.study_id);
        s(
            &mut o,
            tags::SERIES_NUMBER,
            VR::IS,
            &ic.series_number.to_string(),
        );
        s(
            &mut o,
            tags::INSTANCE_NUMBER,
            VR::IS,
            &ic.instance_number.to_string(),
        );
        if matches!(m, Modality::Ct | Modality::Mr) {
            s(
                &mut o,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &format!("-160\\-160\\{}", ic.instance_number * 5),
            );
            s(
                &mut o,
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                "1\\0\\0\\0\\1\\0",
            );
            s(&mut o, tags::FRAME_OF_REFERENCE_UID, VR::UI, ic.frame_uid);
            s(&mut o, tags::PIXEL_SPACING, VR::DS, "2.5\\2.5");
        } else {
            s(&mut o, tags::PATIENT_ORIENTATION, VR::CS, "A\\F");
        }
        let rows = entry.rows;
        let cols = entry.columns;
        let (samples, photometric) = match &pixels {
            Pixels::Rgb8(_) => (3, "RGB"),
            Pixels::Mono16(_) => (1, "MONOCHROME2"),
        };
        us(&mut o, tags::SAMPLES_PER_PIXEL, samples);
        s(
            &mut o,
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            photometric,
        );
        if samples == 3 {
            us(&mut o, tags::PLANAR_CONFIGURATION, 0); // interleaved
        }
        us(&mut o, tags::ROWS, rows);
        us(&mut o, tags::COLUMNS, cols);
        let (alloc, stored) = match &pixels {
            Pixels::Rgb8(_) => (8, 8),
            Pixels::Mono16(_) => (16, 12),
        };
        us(&mut o, tags::BITS_ALLOCATED, alloc);
        us(&mut o, tags::BITS_STORED, stored);
        us(&mut o, tags::HIGH_BIT, stored - 1);
        us(&mut o, tags::PIXEL_REPRESENTATION, 0);
        if let Some(flag) = &entry.burned_in_annotation_flag {
            s(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, flag);
        }
        match m {
            Modality::Ct => {
                s(&mut o, tags::WINDOW_CENTER, VR::DS, "40");
                s(&mut o, tags::WINDOW_WIDTH, VR::DS, "400");
                s(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "-1024");
                s(&mut o, tags::RESCALE_SLOPE, VR::DS, "1");
            }
            Modality::Mr | Modality::Cr | Modality::Dx => {
                s(&mut o, tags::WINDOW_CENTER, VR::DS, "1600");
                s(&mut o, tags::WINDOW_WIDTH, VR::DS, "3200");
            }
            _ => {}
        }
        // RequestAttributesSequence: order identifiers, repeated inside an item.
        let mut req = InMemDicomObject::new_empty();
        s(&mut req, tags::ACCESSION_NUMBER, VR::SH, &study.accession);
        s(&mut req, tags::STUDY_INSTANCE_UID, VR::UI, &study.uid);
        s(
            &mut req,
            tags::REQUESTED_PROCEDURE_DESCRIPTION,
            VR::LO,
            &study.description,
        );
        s(
            &mut req,
            tags::SCHEDULED_PROCEDURE_STEP_ID,
            VR::SH,
            &study.sps_id,
        );
        s(
            &mut req,
            tags::REQUESTED_PROCEDURE_ID,
            VR::SH,
            &study.requested_procedure_id,
        );
        o.put(DataElement::new(
            tags::REQUEST_ATTRIBUTES_SEQUENCE,
            VR::SQ,
            Value::from(DataSetSequence::from(vec![req])),
        ));
        s(
            &mut o,
            tags::PERFORMED_PROCEDURE_STEP_START_DATE,
            VR::DA,
            &study.date,
        );
        s(
            &mut o,
            tags::PERFORMED_PROCEDURE_STEP_ID,
            VR::SH,
            &study.pps_id,
        );

        let bytes = match pixels {
            Pixels::Rgb8(b) => b,
            Pixels::Mono16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        let pixel_tag = tags::PIXEL_DATA;
        if entry.transfer_syntax == RLE_TS {
            let bps = usize::from(alloc / 8);
            let mut frag = rle::encode_frame(
                &bytes,
                usize::from(rows),
                usize::from(cols),
                usize::from(samples),
                bps,
            );
            if frag.len() % 2 == 1 {
                frag.push(0);
            }
            let seq = PixelFragmentSequence::new(Vec::<u32>::new(), vec![frag]);
            o.put(DataElement::new(pixel_tag, VR::OB, Value::from(seq)));
        } else {
            let vr = if alloc == 8 { VR::OB } else { VR::OW };
            o.put(DataElement::new(
                pixel_tag,
                vr,
                PrimitiveValue::U8(bytes.into()),
            ));
        }
        o
    }
}

struct InstanceCtx<'a> {
    series_number: usize,
    instance_number: usize,
    frame_uid: &'a str,
    series_time: &'a str,
    content_time: &'a str,
    series_desc: &'a str,
    protocol: &'a str,
}

fn burn_rgb(rgb: &mut [u8], side: usize, lines: &[String], scale: usize, color: [u8; 3]) {
    let mut y = 2;
    for line in lines {
        font::draw(line, 2, y, scale.max(1), side, side, |x, yy| {
            let o = (yy * side + x) * 3;
            rgb[o..o + 3].copy_from_slice(&color);
        });
        y += font::CELL_H * scale.max(1);
    }
}
