//! Fuzz entry points: every parser of trainer-written bytes, driven by `cargo fuzz`
//! (`fuzz/`) and by proptest over a seed corpus on stable (`tests/fuzz.rs`). Each must
//! return, never panic, and never allocate beyond its limits.

use crate::formats;
use crate::protocol;

/// Output-format parsers on arbitrary bytes.
pub fn output_formats(data: &[u8]) {
    let _ = formats::has_dicm_magic(data);
    let _ = formats::looks_like_dicom_dataset(data);
    let _ = formats::check_safetensors(data);
    let _ = formats::parse_safetensors(data);
    // The node's re-serialisation, for a model declaring one tensor and for metrics.
    let w = rapha_core::release::TensorDecl {
        name: "w".into(),
        dtype: rapha_core::release::TensorDtype::F32,
        shape: vec![4],
    };
    for (kind, tensors) in [
        (rapha_core::OutputKind::Safetensors, vec![w]),
        (rapha_core::OutputKind::MetricsJson, vec![]),
    ] {
        let decl = rapha_core::OutputDecl {
            name: "out".into(),
            kind,
            max_bytes: 1 << 20,
            tensors,
        };
        let _ = crate::guard::release::reserialise(&decl, data);
    }
    let _ = formats::check_onnx(data);
    let _ = formats::check_metrics_json(data);
    let _ = formats::json_strings(data);
    let _ = formats::pickle_strings(data);
    if let Ok(entries) = formats::read_zip(data, 1 << 20) {
        let _ = formats::check_pytorch_entries(&entries);
        let _ = formats::torch_storage_keys(&entries);
    }
}

/// Protocol framing and request parsing on arbitrary bytes.
pub fn protocol_request(data: &[u8]) {
    let mut cursor = std::io::Cursor::new(data);
    if let Ok(header) = protocol::read_header(&mut cursor, protocol::MAX_REQUEST_HEADER) {
        let _ = protocol::parse_request(&header);
    }
    let _ = protocol::parse_request(data);
    // The feed's read-ahead: count the complete frames, then cut and parse each.
    let _ = protocol::complete_requests(data);
    let mut rest = data;
    while let Ok(Some(n)) = protocol::request_frame_len(rest) {
        let (Some(header), Some(next)) = (rest.get(4..n), rest.get(n..)) else {
            break;
        };
        let _ = protocol::parse_request(header);
        rest = next;
    }
}
