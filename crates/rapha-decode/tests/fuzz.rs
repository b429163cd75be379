//! Stable proptest drivers of the fuzz entry points behind the worker: the request and answer
//! parsers and the three decoders (JPEG-LS, 12-bit JPEG, HTJ2K) on frames mutated from seeds, in a worker per frame and in a
//! job's long-lived workers. Never a panic; a decode ends in exactly the
//! image's bytes or a refusal, and the worker's memory is capped by its own limit.

use proptest::prelude::*;
use rapha_decode::{Answer, Request, ANSWER_LEN, REQUEST_LEN};
use rapha_dicom::fuzzing::{sandboxed_frame, sandboxed_frame_in_job};
use rapha_dicom::pixels::JobDecoders;

use crate::dicom_common::corpus;
use crate::support::{first_fragment, install_worker};

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_request_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(r) = Request::decode(&bytes) {
            prop_assert_eq!(bytes.len(), REQUEST_LEN);
            prop_assert_eq!(Request::decode(&r.encode()), Ok(r));
            prop_assert!(r.output_len() <= rapha_decode::MAX_OUTPUT_BYTES);
        }
        if let Ok((r, n)) = Request::decode_numbered(&bytes) {
            prop_assert_eq!(Request::decode_numbered(&r.encode_numbered(n)), Ok((r, n)));
        }
    }

    #[test]
    fn any_answer_bytes_parse_or_are_refused(bytes in any::<[u8; ANSWER_LEN]>()) {
        if let Some(a) = Answer::decode(&bytes) {
            prop_assert_eq!(a.encode(), bytes);
        }
    }

    /// The `request` fuzz target's property from a valid header with bytes overwritten (random
    /// bytes almost never carry the magic): a header that parses encodes back to the same
    /// bytes and bounds the frame read after it and the image written back.
    #[test]
    fn mutated_request_headers_parse_to_themselves_or_are_refused(
        flips in proptest::collection::vec((0..REQUEST_LEN, any::<u8>()), 0..4)
    ) {
        let mut bytes = Request::new(rapha_decode::Codec::JpegLs, (64, 64, 1), 2, 1000)
            .unwrap()
            .encode();
        for (at, b) in flips {
            bytes[at] = b;
        }
        if let Ok(r) = Request::decode(&bytes) {
            prop_assert_eq!(r.encode(), bytes);
            prop_assert!(r.input_len() <= rapha_decode::MAX_INPUT_BYTES);
            prop_assert!(r.output_len() <= rapha_decode::MAX_OUTPUT_BYTES);
        }
    }
}

/// Seeds: a real frame of each codec (64 x 64 JPEG-LS from the corpus; the 12-bit JPEG frame is
/// larger than the entry point's image and so exercises the refusal; a 64 x 64 16-bit HTJ2K
/// frame from `ojph_compress`) and a bare SOI.
fn seeds() -> Vec<Vec<u8>> {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS
        .get_or_init(|| {
            let mut seeds = vec![vec![0xFF, 0xD8, 0xFF, 0xD9]];
            if let Some(dir) = corpus() {
                seeds.push(first_fragment(&dir.join("MR_small_jpeg_ls_lossless.dcm")));
                seeds.push(first_fragment(&dir.join("JPGExtended.dcm")));
            }
            seeds.extend(htj2k_seed());
            seeds
        })
        .clone()
}

/// A 64 x 64 16-bit lossless HTJ2K codestream, when `ojph_compress` is installed.
fn htj2k_seed() -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().ok()?;
    let input = dir.path().join("in.pgm");
    let mut pgm = b"P5\n64 64\n65535\n".to_vec();
    pgm.extend((0..64u32 * 64).flat_map(|i| ((i * 37 + (i >> 6) * 11) as u16).to_be_bytes()));
    std::fs::write(&input, pgm).ok()?;
    let out = dir.path().join("out.j2c");
    let ok = std::process::Command::new("ojph_compress")
        .arg("-i")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .args(["-reversible", "true"])
        .output()
        .ok()?
        .status
        .success();
    ok.then(|| std::fs::read(&out).ok()).flatten()
}

proptest! {
    // Each case starts three worker processes (and at most three in the job): bounded for CI.
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_frames_decode_to_the_image_or_are_refused(
        seed in 0usize..4,
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        install_worker();
        let seeds = seeds();
        let mut frame = seeds[seed % seeds.len()].clone();
        for (at, x) in flips {
            let i = at.index(frame.len());
            frame[i] ^= x;
        }
        frame.truncate(cut.index(frame.len() + 1).max(2));
        let once = sandboxed_frame(&frame);
        for r in &once {
            match r {
                Ok(len) => prop_assert_eq!(*len, 64 * 64 * 2),
                Err(e) => prop_assert_eq!(e.reason(), "malformed-pixel-data", "{}", e),
            }
        }
        // The same frame through one job's long-lived workers (kept across the cases, as a
        // job keeps them across its frames): the same answer as a worker per frame.
        static JOB: std::sync::OnceLock<JobDecoders> = std::sync::OnceLock::new();
        let in_job = sandboxed_frame_in_job(JOB.get_or_init(JobDecoders::new), &frame);
        for (a, b) in once.iter().zip(&in_job) {
            match (a, b) {
                (Ok(x), Ok(y)) => prop_assert_eq!(x, y),
                (Err(x), Err(y)) => prop_assert_eq!(x.reason(), y.reason(), "{} / {}", x, y),
                _ => prop_assert!(false, "per frame {:?}, in a job {:?}", a, b),
            }
        }
    }
}
