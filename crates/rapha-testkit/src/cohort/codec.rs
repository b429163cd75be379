//! A generated cohort re-encoded in another transfer syntax, as an archive that compresses on
//! ingest holds it (`rapha-testkit cohort --transfer-syntax UID`). Test data only.
//!
//! The encoders are outside tools from Debian, run on temporary files: DCMTK's `dcmcrle`,
//! `dcmcjpeg` and `dcmcjpls` re-encode whole objects; OpenJPEG's `opj_compress` and OpenJPH's
//! `ojph_compress` encode each frame, which is then encapsulated here. None of them is linked
//! into a Rapha binary. Every UID, attribute and pixel value stays (lossy syntaxes change
//! pixel values within their codec's error).

use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::open_file;

use super::{CohortError, CohortManifest};

/// What encodes a transfer syntax.
#[derive(Clone, Copy, Debug)]
enum Encoder {
    /// A DCMTK tool with its options, whole object in, whole object out.
    Dcmtk(&'static str, &'static [&'static str]),
    /// `opj_compress` per frame (JPEG 2000 Part 1), with its options.
    OpenJpeg(&'static [&'static str]),
    /// `ojph_compress` per frame (HTJ2K), with its options.
    OpenJph(&'static [&'static str]),
}

/// The transfer syntaxes a cohort can be re-encoded in, with their names and encoders.
const SYNTAXES: [(&str, &str, Encoder); 11] = [
    (
        "1.2.840.10008.1.2.5",
        "RLE Lossless",
        Encoder::Dcmtk("dcmcrle", &[]),
    ),
    (
        "1.2.840.10008.1.2.4.51",
        "JPEG Extended (12-bit)",
        Encoder::Dcmtk("dcmcjpeg", &["+ee", "+un"]),
    ),
    (
        "1.2.840.10008.1.2.4.57",
        "JPEG Lossless",
        Encoder::Dcmtk("dcmcjpeg", &["+el"]),
    ),
    (
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless SV1",
        Encoder::Dcmtk("dcmcjpeg", &["+e1"]),
    ),
    (
        "1.2.840.10008.1.2.4.80",
        "JPEG-LS Lossless",
        Encoder::Dcmtk("dcmcjpls", &["+el"]),
    ),
    (
        "1.2.840.10008.1.2.4.81",
        "JPEG-LS Near-Lossless",
        Encoder::Dcmtk("dcmcjpls", &["+en", "+un"]),
    ),
    (
        "1.2.840.10008.1.2.4.90",
        "JPEG 2000 Lossless",
        Encoder::OpenJpeg(&[]),
    ),
    (
        "1.2.840.10008.1.2.4.91",
        "JPEG 2000",
        Encoder::OpenJpeg(&["-I", "-r", "10"]),
    ),
    (
        "1.2.840.10008.1.2.4.201",
        "HTJ2K Lossless",
        Encoder::OpenJph(&["-reversible", "true"]),
    ),
    (
        "1.2.840.10008.1.2.4.202",
        "HTJ2K Lossless RPCL",
        Encoder::OpenJph(&["-reversible", "true", "-prog_order", "RPCL"]),
    ),
    (
        "1.2.840.10008.1.2.4.203",
        "HTJ2K",
        Encoder::OpenJph(&["-qstep", "0.005"]),
    ),
];

/// `(UID, name)` of every syntax [`transcode_cohort`] can write (besides explicit VR little
/// endian, which [`super::generate`] writes).
pub fn encodable() -> impl Iterator<Item = (&'static str, &'static str)> {
    SYNTAXES.iter().map(|(uid, name, _)| (*uid, *name))
}

/// Re-encodes every instance of the cohort generated in `dir` in transfer syntax `ts`, in
/// place, and records it in `manifest.json` (each instance's `transfer_syntax`).
///
/// # Errors
/// [`CohortError::InvalidSpec`] for a syntax not in [`encodable`]; [`CohortError::Tool`] when
/// an encoder is missing or fails (the message names the Debian package); I/O and DICOM errors.
pub fn transcode_cohort(dir: &Path, ts: &str) -> Result<CohortManifest, CohortError> {
    transcode_mixed(dir, &[ts])
}

/// Re-encodes the cohort generated in `dir` in several transfer syntaxes, as an archive that
/// changed its compression over the years holds it: study `i` (in manifest order) in
/// `syntaxes[i % syntaxes.len()]`. `manifest.json` records each instance's syntax and the
/// list, comma-separated, as the cohort's.
///
/// # Errors
/// As [`transcode_cohort`], and [`CohortError::InvalidSpec`] for an empty list.
pub fn transcode_mixed(dir: &Path, syntaxes: &[&str]) -> Result<CohortManifest, CohortError> {
    let mut encoders = Vec::with_capacity(syntaxes.len());
    for &ts in syntaxes {
        let encoder = SYNTAXES.iter().find(|(uid, _, _)| *uid == ts).map(|e| e.2);
        if encoder.is_none() && ts != super::NATIVE_TS {
            let known: Vec<String> = encodable().map(|(u, n)| format!("{u} ({n})")).collect();
            return Err(CohortError::InvalidSpec(format!(
                "cannot write transfer syntax {ts}; one of: 1.2.840.10008.1.2.1 (explicit VR \
                 little endian, the default), {}",
                known.join(", ")
            )));
        }
        encoders.push((ts, encoder));
    }
    if encoders.is_empty() {
        return Err(CohortError::InvalidSpec(
            "name at least one transfer syntax to re-encode the cohort in".into(),
        ));
    }
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read(&manifest_path).map_err(super::io_err("read", &manifest_path))?;
    let mut manifest: CohortManifest = serde_json::from_slice(&text)?;
    if manifest.rle_fraction > 0.0 || manifest.transfer_syntax.is_some() {
        return Err(CohortError::InvalidSpec(
            "re-encode a cohort generated uncompressed (no --rle-fraction, not re-encoded before)"
                .into(),
        ));
    }
    let work = tempfile::tempdir().map_err(super::io_err(
        "create a temporary directory in",
        Path::new("/tmp"),
    ))?;
    for (i, study) in manifest.studies.iter_mut().enumerate() {
        let (ts, encoder) = encoders[i % encoders.len()];
        for inst in &mut study.instances {
            let path = dir.join(&inst.path);
            match encoder {
                None => {} // generated as explicit VR little endian already
                Some(Encoder::Dcmtk(tool, opts)) => dcmtk(tool, opts, &path, work.path())?,
                Some(Encoder::OpenJpeg(opts)) => {
                    let tool = Tool {
                        program: "opj_compress",
                        package: "libopenjp2-tools",
                        ext: "j2k",
                    };
                    per_frame(&path, ts, work.path(), &tool, opts)?;
                }
                Some(Encoder::OpenJph(opts)) => {
                    let tool = Tool {
                        program: "ojph_compress",
                        package: "openjph-tools",
                        ext: "j2c",
                    };
                    per_frame(&path, ts, work.path(), &tool, opts)?;
                }
            }
            inst.transfer_syntax = ts.to_owned();
        }
    }
    manifest.transfer_syntax = Some(syntaxes.join(","));
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    super::write(&manifest_path, &json)?;
    Ok(manifest)
}

fn run(mut cmd: Command, package: &str) -> Result<(), CohortError> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| CohortError::Tool {
        tool: name.clone(),
        detail: format!("cannot run it ({e}); install the Debian package {package}"),
    })?;
    if !out.status.success() {
        return Err(CohortError::Tool {
            tool: name,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

fn dcmtk(tool: &str, opts: &[&str], path: &Path, work: &Path) -> Result<(), CohortError> {
    let out = work.join("out.dcm");
    let mut c = Command::new(tool);
    c.args(opts).arg(path).arg(&out);
    run(c, "dcmtk")?;
    std::fs::rename(&out, path).map_err(super::io_err("replace", path))
}

/// A frame encoder: the program, its Debian package, and the codestream file extension it
/// reads the output format from.
struct Tool {
    program: &'static str,
    package: &'static str,
    ext: &'static str,
}

/// Encodes each frame of the object with `tool` and stores them encapsulated in `ts`.
fn per_frame(
    path: &Path,
    ts: &str,
    work: &Path,
    tool: &Tool,
    opts: &[&str],
) -> Result<(), CohortError> {
    let dicom_err = |detail: String| CohortError::Dicom {
        path: path.to_path_buf(),
        detail,
    };
    let file = open_file(path).map_err(|e| dicom_err(e.to_string()))?;
    let int = |tag| -> Result<u32, CohortError> {
        file.element(tag)
            .ok()
            .and_then(|e| e.to_int::<u32>().ok())
            .ok_or_else(|| dicom_err(format!("no {tag} in a generated object")))
    };
    let (rows, cols, spp, stored) = (
        int(tags::ROWS)?,
        int(tags::COLUMNS)?,
        int(tags::SAMPLES_PER_PIXEL)?,
        int(tags::BITS_STORED)?,
    );
    let pixels = file
        .element(tags::PIXEL_DATA)
        .ok()
        .and_then(|e| e.to_bytes().ok())
        .ok_or_else(|| dicom_err("no native PixelData".into()))?
        .into_owned();
    let frames = file
        .element(tags::NUMBER_OF_FRAMES)
        .ok()
        .and_then(|e| e.to_int::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let frame_len = pixels.len() / frames;
    let mut encoded = Vec::with_capacity(frames);
    for raw in pixels.chunks_exact(frame_len.max(1)) {
        encoded.push(encode_frame(
            raw,
            (rows, cols, spp, stored),
            work,
            tool,
            opts,
        )?);
    }
    let sop_class = file.meta().media_storage_sop_class_uid().to_owned();
    let sop = file.meta().media_storage_sop_instance_uid().to_owned();
    let mut obj = file.into_inner();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        dicom_core::value::Value::PixelSequence(PixelFragmentSequence::new(
            Vec::<u32>::new(),
            encoded,
        )),
    ));
    if ts.ends_with(".91") || ts.ends_with(".203") {
        obj.put(DataElement::new(
            tags::LOSSY_IMAGE_COMPRESSION,
            VR::CS,
            PrimitiveValue::from("01"),
        ));
    }
    super::write_part10(
        obj,
        path,
        ts,
        (sop_class.trim_end_matches('\0'), sop.trim_end_matches('\0')),
    )
}

/// One frame through `tool`: written as a binary PGM/PPM (8-bit samples as bytes, deeper ones
/// 16-bit big endian, the maximum value giving the precision), read back as a codestream.
fn encode_frame(
    raw: &[u8],
    (rows, cols, spp, stored): (u32, u32, u32, u32),
    work: &Path,
    tool: &Tool,
    opts: &[&str],
) -> Result<Vec<u8>, CohortError> {
    let input: PathBuf = work.join(if spp == 3 { "frame.ppm" } else { "frame.pgm" });
    let max = (1u32 << stored) - 1;
    let mut netpbm = format!(
        "{}\n{cols} {rows}\n{max}\n",
        if spp == 3 { "P6" } else { "P5" }
    )
    .into_bytes();
    if stored <= 8 {
        netpbm.extend_from_slice(raw);
    } else {
        netpbm.extend(
            raw.chunks_exact(2)
                .flat_map(|p| u16::from_le_bytes([p[0], p[1]]).to_be_bytes()),
        );
    }
    super::write(&input, &netpbm)?;
    let out = work.join(format!("frame.{}", tool.ext));
    let mut cmd = Command::new(tool.program);
    cmd.arg("-i").arg(&input).arg("-o").arg(&out).args(opts);
    run(cmd, tool.package)?;
    let mut frame = std::fs::read(&out).map_err(super::io_err("read", &out))?;
    if frame.len() % 2 == 1 {
        frame.push(0);
    }
    Ok(frame)
}
