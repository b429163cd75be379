//! The messages: a trainer's requests and the node's refusals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A trainer's request.
///
/// Deliberately exhaustive (no `#[non_exhaustive]`): the node answers every operation of the
/// protocol, and a new one is a new protocol version that the feed must match.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Hello {
        protocol: u32,
        #[serde(default)]
        trainer: String,
    },
    List {
        offset: usize,
        limit: usize,
    },
    Fetch {
        index: usize,
    },
    Progress {
        #[serde(default)]
        epoch: Option<u64>,
        #[serde(default)]
        step: Option<u64>,
        #[serde(default)]
        loss: Option<f64>,
        #[serde(default)]
        metrics: BTreeMap<String, f64>,
    },
    Predict {
        predictions: Vec<Prediction>,
    },
    Done,
}

/// One validation prediction.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Prediction {
    pub index: usize,
    pub score: f64,
}

/// Error codes of `ok:false` responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    BadRequest,
    Protocol,
    NoSuchRecord,
    NotValidation,
    DuplicatePrediction,
    BadScore,
    Unavailable,
    Finished,
}

impl ErrorCode {
    /// Every code of protocol v1.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::BadRequest,
        ErrorCode::Protocol,
        ErrorCode::NoSuchRecord,
        ErrorCode::NotValidation,
        ErrorCode::DuplicatePrediction,
        ErrorCode::BadScore,
        ErrorCode::Unavailable,
        ErrorCode::Finished,
    ];

    /// The protocol's name (as serialized).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Protocol => "protocol",
            ErrorCode::NoSuchRecord => "no_such_record",
            ErrorCode::NotValidation => "not_validation",
            ErrorCode::DuplicatePrediction => "duplicate_prediction",
            ErrorCode::BadScore => "bad_score",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Finished => "finished",
        }
    }
}

/// An `ok:false` response header.
pub fn error_header(code: ErrorCode, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"ok": false, "error": code, "message": message}))
        .unwrap_or_else(|_| br#"{"ok":false,"error":"bad_request"}"#.to_vec())
}

/// Parses a request header.
///
/// # Errors
/// The header is not valid JSON or not a known request.
pub fn parse_request(header: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(header).map_err(|e| e.to_string())
}
