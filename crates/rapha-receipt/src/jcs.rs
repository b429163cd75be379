//! RFC 8785 canonical JSON of receipt bodies: `rapha_core::jcs` (the one implementation every
//! signed or hashed JSON in Rapha uses), with its errors as [`ReceiptError::Canonicalize`].

use serde_json::Value;

use crate::error::{ReceiptError, Result};

pub use rapha_core::jcs::{JcsError, MAX_SAFE_INTEGER};

fn err(e: JcsError) -> ReceiptError {
    ReceiptError::Canonicalize(match e {
        JcsError::IntegerOutOfRange(_) => "integer outside the exact JSON range ±(2^53-1)",
        JcsError::NotFinite => "NaN or infinity has no JSON form",
        _ => "value does not serialize to JSON",
    })
}

/// Canonical bytes of `value`.
///
/// # Errors
/// [`ReceiptError::Canonicalize`] for integers outside `±(2^53 - 1)`.
pub fn to_vec(value: &Value) -> Result<Vec<u8>> {
    rapha_core::jcs::to_vec(value).map_err(err)
}

/// Canonical bytes of any serializable value.
///
/// # Errors
/// [`ReceiptError::Canonicalize`] when the value does not serialize to JSON or holds an
/// integer outside `±(2^53 - 1)`.
pub fn to_vec_of<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    rapha_core::jcs::to_vec_of(value).map_err(err)
}

/// ECMAScript `Number.prototype.toString` of a finite double.
///
/// # Errors
/// [`ReceiptError::Canonicalize`] for NaN and infinities.
pub fn format_double(x: f64) -> Result<String> {
    rapha_core::jcs::format_double(x).map_err(err)
}
