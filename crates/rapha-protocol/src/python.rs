//! The Python SDK's constants, generated from this crate: `sdk/python/rapha_trainer/_protocol.py`
//! is the text [`module`] returns, and a test of this crate fails when the committed file is
//! not (so the Python SDK cannot drift from the node). After a change here:
//!
//! ```text
//! cargo run -p rapha-protocol --example python_constants > sdk/python/rapha_trainer/_protocol.py
//! ```

use std::fmt::Write as _;

use crate::{
    Dtype, ErrorCode, Split, MAX_CURVE, MAX_IN_FLIGHT, MAX_PAGE, MAX_PAYLOAD, MAX_REQUEST_HEADER,
    MAX_RESPONSE_HEADER, MAX_TRAINER_NAME, METRICS_KEYS, OUT_DIR_IN_CONTAINER, OUT_ENV,
    PROTOCOL_ENV, PROTOCOL_VERSION, SOCKET_ENV, SOCKET_PATH_IN_CONTAINER,
};

/// Where the generated module lives, from the workspace root.
pub const MODULE_PATH: &str = "sdk/python/rapha_trainer/_protocol.py";

/// The text of the Python SDK's constants module (standard library only; no imports).
pub fn module() -> String {
    let mut s = String::new();
    s.push_str(
        "\"\"\"Trainer protocol v1 constants, generated from crates/rapha-protocol: do not edit.\n\
         \n\
         A deliberate duplicate of rapha-protocol's constants (issue 23): the Python SDK links\n\
         no Rust, so they are written out here, and a rapha-protocol test fails when this file\n\
         is not what the crate generates. Regenerate with\n\
         \x20   cargo run -p rapha-protocol --example python_constants > sdk/python/rapha_trainer/_protocol.py\n\
         \"\"\"\n\n",
    );
    // `write!` into a String cannot fail.
    let _ = writeln!(s, "PROTOCOL_VERSION = {PROTOCOL_VERSION}");
    let _ = writeln!(s, "SOCKET_PATH_IN_CONTAINER = {SOCKET_PATH_IN_CONTAINER:?}");
    let _ = writeln!(s, "SOCKET_ENV = {SOCKET_ENV:?}");
    let _ = writeln!(s, "OUT_DIR_IN_CONTAINER = {OUT_DIR_IN_CONTAINER:?}");
    let _ = writeln!(s, "OUT_ENV = {OUT_ENV:?}");
    let _ = writeln!(s, "PROTOCOL_ENV = {PROTOCOL_ENV:?}");
    let _ = writeln!(s, "MAX_REQUEST_HEADER = {MAX_REQUEST_HEADER}");
    let _ = writeln!(s, "MAX_RESPONSE_HEADER = {MAX_RESPONSE_HEADER}");
    let _ = writeln!(s, "MAX_PAYLOAD = {MAX_PAYLOAD}");
    let _ = writeln!(s, "MAX_IN_FLIGHT = {MAX_IN_FLIGHT}");
    let _ = writeln!(s, "MAX_PAGE = {MAX_PAGE}");
    let _ = writeln!(s, "MAX_TRAINER_NAME = {MAX_TRAINER_NAME}");
    let _ = writeln!(s, "MAX_CURVE = {MAX_CURVE}");
    s.push_str("\n# dtype name -> numpy type string (little-endian)\nDTYPES = {\n");
    for d in Dtype::ALL {
        let kind = d.name().chars().next().unwrap_or('u');
        let _ = writeln!(s, "    {:?}: \"<{kind}{}\",", d.name(), d.size());
    }
    let splits: Vec<String> = Split::ALL
        .iter()
        .map(|x| format!("{:?}", x.name()))
        .collect();
    let _ = write!(
        s,
        "}}\n\nSPLITS = ({})\n\nERROR_CODES = (\n",
        splits.join(", ")
    );
    for c in ErrorCode::ALL {
        let _ = writeln!(s, "    {:?},", c.as_str());
    }
    s.push_str(")\n\nMETRICS_KEYS = (\n");
    for k in METRICS_KEYS {
        let _ = writeln!(s, "    {k:?},");
    }
    s.push_str(")\n");
    s
}
