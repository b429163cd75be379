//! The trainer protocol v1 (`docs/trainer-protocol.md`): the one interface between a trainer
//! and the hospital's node, shared by the enclave runtime (the node's side) and the Rust trainer
//! SDK.
//!
//! ```text
//!   rapha-enclave (feed)  ──┐                         ┌──  rapha-trainer-sdk (Rust trainers)
//!                           ├── rapha-protocol ───────┤
//!   docs/trainer-protocol.md┘   (this crate)          └──  sdk/python/rapha_trainer
//! ```
//!
//! The protocol is a trust boundary of its own: everything a trainer learns of the data and
//! everything it hands back crosses it. This crate carries the invariants both sides must
//! agree on, so that they are stated once:
//!
//! - **I1** (no raw PHI reaches the trainer): the messages carry records by index, hashed
//!   identifiers and decoded pixels only; a request has a fixed set of operations and fields
//!   ([`Request`] refuses unknown ones), and a validation label has no place in any message a
//!   trainer receives ([`Split`] tells the sides apart).
//! - **I3** (pixel confinement, availability of the node): every frame is bounded before
//!   anything is allocated ([`MAX_REQUEST_HEADER`], [`MAX_RESPONSE_HEADER`], [`MAX_PAYLOAD`],
//!   [`MAX_IN_FLIGHT`], [`MAX_PAGE`]), on the node's side and the SDKs' alike; a file
//!   descriptor passed over the socket is a framing violation ([`FrameError`]).
//! - **I4** (only vetted outputs leave): the metrics schema ([`METRICS_KEYS`], [`MAX_CURVE`])
//!   is the output guard's and the SDKs', so a trainer writing through an SDK is never refused
//!   for a key the SDK allowed, and the SDK refuses every key the guard would.
//!
//! Wire bytes are fixed by protocol version 1: a change here that changes what goes over the
//! socket is a new protocol version. Dependencies: serde, serde_json and thiserror only, so
//! a trainer linking the SDK links nothing of the node.

mod dtype;
mod frame;
mod message;
mod metrics;

pub use dtype::{Dtype, Split, UnknownDtype};
pub use frame::{
    complete_requests, read_frame, read_header, request_frame_len, write_frame, FrameError,
};
pub use message::{error_header, parse_request, ErrorCode, Prediction, Request};
pub use metrics::{MAX_CURVE, METRICS_KEYS};

/// Protocol version spoken by the node and the SDKs.
pub const PROTOCOL_VERSION: u32 = 1;
/// Fixed socket path inside the trainer's container.
pub const SOCKET_PATH_IN_CONTAINER: &str = "/rapha/data.sock";
/// The environment variable that names the socket (set by the node to
/// [`SOCKET_PATH_IN_CONTAINER`]).
pub const SOCKET_ENV: &str = "RAPHA_DATA_SOCKET";
/// The trainer's output directory inside its container.
pub const OUT_DIR_IN_CONTAINER: &str = "/out";
/// The environment variable that names the output directory.
pub const OUT_ENV: &str = "RAPHA_OUT";
/// The environment variable that carries [`PROTOCOL_VERSION`].
pub const PROTOCOL_ENV: &str = "RAPHA_PROTOCOL";
/// Largest request header the node reads.
pub const MAX_REQUEST_HEADER: usize = 1 << 20;
/// Largest response header the node writes (and an SDK should accept).
pub const MAX_RESPONSE_HEADER: usize = 4 << 20;
/// Largest payload (one record's pixels).
pub const MAX_PAYLOAD: usize = 512 << 20;
/// Requests a trainer may have sent and not yet had answered (pipelining); more is a
/// protocol violation that closes the connection.
pub const MAX_IN_FLIGHT: usize = 16;
/// Records per `list` page and predictions per `predict` request.
pub const MAX_PAGE: usize = 1000;
/// Longest `trainer` name a `hello` may carry, in bytes.
pub const MAX_TRAINER_NAME: usize = 128;
