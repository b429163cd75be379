//! The worker under test and objects rewritten around hostile frames.

use std::path::Path;
use std::sync::Once;

use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use rapha_decode::Worker;

/// The worker this test run built (with the test hooks).
pub fn worker() -> Worker {
    Worker::at(env!("CARGO_BIN_EXE_rapha-decode"))
}

/// Points rapha-dicom's decoder at the worker this run built (once, before any decode).
pub fn install_worker() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var(rapha_decode::WORKER_ENV, env!("CARGO_BIN_EXE_rapha-decode"))
    });
}

/// The first frame of a corpus file's encapsulated pixel data.
pub fn first_fragment(path: &Path) -> Vec<u8> {
    let obj = dicom_object::open_file(path).unwrap();
    let px = obj.element(tags::PIXEL_DATA).unwrap();
    match px.value() {
        Value::PixelSequence(seq) => seq.fragments().concat(),
        _ => panic!("{} is not encapsulated", path.display()),
    }
}

/// The Part 10 bytes of a corpus file with its pixel data replaced by `fragments`.
pub fn with_fragments(path: &Path, fragments: Vec<Vec<u8>>) -> Vec<u8> {
    with_frames(path, fragments, None)
}

/// [`with_fragments`], declaring `frames` frames when given.
pub fn with_frames(path: &Path, fragments: Vec<Vec<u8>>, frames: Option<u32>) -> Vec<u8> {
    let mut obj = dicom_object::open_file(path).unwrap();
    if let Some(n) = frames {
        obj.put(DataElement::new(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            dicom_core::PrimitiveValue::from(n.to_string()),
        ));
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::PixelSequence(PixelFragmentSequence::new(vec![], fragments)),
    ));
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}
