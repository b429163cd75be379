//! HTJ2K through OpenJPH in the worker, on the files `rapha-testkit cohort --transfer-syntax`
//! writes (`.4.201`, `.4.202`, `.4.203`; every generated modality: 8-, 12- and 16-bit
//! grayscale, RGB): each frame comes out of the worker bit for bit as the in-process JPEG 2000
//! decoder (the pure-Rust OpenJPEG port) and OpenJPH's own `ojph_expand` give it, lossless
//! files as the native cohort's pixels; signed components (OpenJPH 0.9's encoder writes none)
//! from the same codestreams with their SIZ marked signed.

use std::path::Path;
use std::process::Command;

use rapha_decode::Codec;
use rapha_dicom::pixels::j2k::decode_codestream;
use rapha_dicom::pixels::sandboxed::decode_frame;
use rapha_dicom::pixels::{decode, Output};
use rapha_testkit::cohort::{generate, transcode_cohort, CohortError, CohortSpec};
use rapha_testkit::services::services_required;

use crate::support::{first_fragment, install_worker};

const SYNTAXES: [&str; 3] = [
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
];

/// Largest frame the in-process decoder's bare entry point takes here (samples).
const MAX_SAMPLES: usize = 1 << 24;

/// The frame as `ojph_expand` (OpenJPH's own tool) decodes it: 16-bit little-endian samples,
/// interleaved, as the worker returns them with two bytes per sample.
fn ojph_expand(dir: &Path, frame: &[u8], samples: u16) -> Vec<u8> {
    let input = dir.join("frame.j2c");
    let output = dir.join(if samples == 3 { "out.ppm" } else { "out.pgm" });
    std::fs::write(&input, frame).unwrap();
    let run = Command::new("ojph_expand")
        .arg("-i")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "ojph_expand: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let pnm = std::fs::read(&output).unwrap();
    // Header: magic, width, height, maximum, each after whitespace, then one whitespace byte.
    let mut fields = 0;
    let mut at = 0;
    let mut max = String::new();
    while fields < 4 {
        while pnm[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !pnm[at].is_ascii_whitespace() {
            at += 1;
        }
        fields += 1;
        if fields == 4 {
            max = String::from_utf8_lossy(&pnm[start..at]).into_owned();
        }
    }
    let body = &pnm[at + 1..];
    if max.parse::<u32>().unwrap() < 256 {
        body.iter().flat_map(|b| [*b, 0]).collect()
    } else {
        body.chunks_exact(2).flat_map(|p| [p[1], p[0]]).collect()
    }
}

/// The codestream with every component's SIZ precision byte marked signed.
fn marked_signed(frame: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    let components = usize::from(u16::from_be_bytes([out[40], out[41]]));
    for c in 0..components {
        out[42 + 3 * c] |= 0x80;
    }
    out
}

#[test]
fn htj2k_from_the_testkit_decodes_in_the_worker_as_in_process_and_as_ojph_expand() {
    install_worker();
    let scratch = tempfile::tempdir().unwrap();
    let native = tempfile::tempdir().unwrap();
    generate(&CohortSpec::new(10, 17, native.path())).unwrap();
    let mut checked = Vec::new();
    for ts in SYNTAXES {
        let dir = tempfile::tempdir().unwrap();
        generate(&CohortSpec::new(10, 17, dir.path())).unwrap();
        let manifest = match transcode_cohort(dir.path(), ts) {
            Err(e @ CohortError::Tool { .. }) if !services_required() => {
                eprintln!("SKIPPED {ts}: {e}");
                continue;
            }
            written => written.unwrap(),
        };
        let lossy = ts.ends_with(".203");
        let mut layouts = std::collections::BTreeSet::new();
        for inst in manifest.studies.iter().flat_map(|s| &s.instances) {
            let path = dir.path().join(&inst.path);
            let frame = first_fragment(&path);
            let geometry = (
                u32::from(inst.rows),
                u32::from(inst.columns),
                inst.samples_per_pixel,
            );
            let name = format!("{ts} {}", inst.path);
            // Frame by frame: the worker (OpenJPH) against the in-process decoder (the
            // OpenJPEG port) and against ojph_expand, as 16-bit samples.
            let worker = decode_frame(Codec::Htj2k, geometry, 2, &frame)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let in_process = decode_codestream(&frame, MAX_SAMPLES).unwrap();
            if lossy {
                // Two implementations of the irreversible 9/7 wavelet in floating point, each
                // rounding its own way: a unit apart at most.
                let worst = worker
                    .chunks_exact(2)
                    .zip(in_process.chunks_exact(2))
                    .map(|(a, b)| {
                        (i32::from(u16::from_le_bytes([a[0], a[1]]))
                            - i32::from(u16::from_le_bytes([b[0], b[1]])))
                        .abs()
                    })
                    .max()
                    .unwrap();
                assert!(worst <= 1, "{name}: {worst} from the in-process decoder");
            } else {
                assert!(worker == in_process, "{name}: differs from in process");
            }
            assert!(
                worker == ojph_expand(scratch.path(), &frame, inst.samples_per_pixel),
                "{name}: differs from ojph_expand"
            );
            // The whole object, through the worker at its own sample size, against the
            // native cohort's pixels (lossless) or the in-process frame (lossy, shape only).
            let px = decode(&std::fs::read(&path).unwrap(), Output::Stored)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            if !lossy {
                let reference = decode(
                    &std::fs::read(native.path().join(&inst.path)).unwrap(),
                    Output::Stored,
                )
                .unwrap();
                assert_eq!(px.shape(), reference.shape(), "{name}");
                assert!(px.data == reference.data, "{name}: differs from the source");
            }
            // Signed components: the same codestream marked signed, bit for bit as in process.
            if inst.samples_per_pixel == 1 && !lossy {
                let signed = marked_signed(&frame);
                let worker = decode_frame(Codec::Htj2k, geometry, 2, &signed).unwrap();
                let in_process = decode_codestream(&signed, MAX_SAMPLES).unwrap();
                assert!(worker == in_process, "{name} marked signed");
            }
            layouts.insert((inst.bits_allocated, inst.samples_per_pixel));
        }
        assert!(
            layouts.contains(&(8, 3)) && layouts.contains(&(16, 1)),
            "{ts}: {layouts:?}"
        );
        eprintln!("{ts}: {layouts:?} checked");
        checked.push(ts);
    }
    assert!(
        checked.len() == SYNTAXES.len() || !services_required(),
        "{checked:?}"
    );
}
