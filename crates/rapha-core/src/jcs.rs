//! RFC 8785 JSON Canonicalization Scheme (JCS): the one canonical form of everything Rapha signs
//! or hashes as JSON (receipt bodies, policy input digests, the job digest a DPO approves).
//!
//! - object members sorted by the UTF-16 code units of their names, no whitespace;
//! - strings escaped as ECMAScript `JSON.stringify` does: `\"`, `\\`, `\b \f \n \r \t`, other
//!   controls as `\u00xx` (lowercase hex), everything else as literal UTF-8;
//! - numbers as ECMAScript `Number.prototype.toString` of the IEEE-754 double, from the
//!   `ryu-js` crate (shortest round-trip digits, `1e+21` style exponents from 1e21 and below
//!   1e-6, `-0` as `0`).
//!
//! Integers must lie in I-JSON's exact range, `-(2^53 - 1) ..= 2^53 - 1`; others are refused
//! rather than rounded (an amount that could exceed it travels as a decimal string). NaN and
//! infinities have no JSON form and are refused. The result is byte-identical to any other
//! RFC 8785 implementation (tests compare it with the Python `rfc8785` package), so anyone can
//! recompute a digest Rapha signs.
//!
//! ```
//! let v = serde_json::json!({"b": [1.0, 1e21, "\u{20ac}"], "a": null});
//! let bytes = rapha_core::jcs::to_vec(&v).unwrap();
//! assert_eq!(String::from_utf8(bytes).unwrap(), r#"{"a":null,"b":[1,1e+21,"€"]}"#);
//! ```

use serde_json::{Map, Number, Value};

use crate::Digest;

/// Largest integer I-JSON (RFC 7493) carries exactly: `2^53 - 1`.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JcsError {
    #[error("integer {0} is outside the exact JSON range -(2^53-1)..=2^53-1")]
    IntegerOutOfRange(String),
    #[error("NaN or an infinity has no JSON form")]
    NotFinite,
    #[error("value does not serialize to JSON: {0}")]
    NotJson(String),
}

/// Canonical bytes of `value`.
///
/// # Errors
/// [`JcsError::IntegerOutOfRange`] for an integer outside `±(2^53 - 1)`.
pub fn to_vec(value: &Value) -> Result<Vec<u8>, JcsError> {
    let mut out = Vec::with_capacity(1024);
    write_value(value, &mut out)?;
    Ok(out)
}

/// Canonical bytes of any serializable value (through `serde_json::Value`).
///
/// # Errors
/// [`JcsError::NotJson`] when the value does not serialize to JSON (a map with non-string
/// keys); as [`to_vec`] otherwise. Note that serde_json turns a non-finite float into `null`,
/// so callers that must refuse those check their floats first.
pub fn to_vec_of<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, JcsError> {
    let v = serde_json::to_value(value).map_err(|e| JcsError::NotJson(e.to_string()))?;
    to_vec(&v)
}

/// SHA-256 of the canonical bytes of `value`: a digest any RFC 8785 library recomputes.
///
/// # Errors
/// As [`to_vec_of`].
pub fn digest_of<T: serde::Serialize + ?Sized>(value: &T) -> Result<Digest, JcsError> {
    Ok(Digest::of(&to_vec_of(value)?))
}

fn write_value(v: &Value, out: &mut Vec<u8>) -> Result<(), JcsError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out)?,
        Value::String(s) => write_string(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(o) => write_object(o, out)?,
    }
    Ok(())
}

fn write_object(o: &Map<String, Value>, out: &mut Vec<u8>) -> Result<(), JcsError> {
    let mut members: Vec<(&String, &Value)> = o.iter().collect();
    members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    out.push(b'{');
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(k, out);
        out.push(b':');
        write_value(v, out)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                let b = c as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn write_number(n: &Number, out: &mut Vec<u8>) -> Result<(), JcsError> {
    if let Some(u) = n.as_u64() {
        if u > MAX_SAFE_INTEGER {
            return Err(JcsError::IntegerOutOfRange(u.to_string()));
        }
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(JcsError::IntegerOutOfRange(i.to_string()));
        }
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(f) = n.as_f64() {
        out.extend_from_slice(format_double(f)?.as_bytes());
    } else {
        // Only with serde_json's arbitrary_precision, which Rapha does not enable.
        return Err(JcsError::NotJson(format!("number {n} is not a double")));
    }
    Ok(())
}

/// ECMAScript `Number.prototype.toString(x)` for a finite double (ECMA-262, Number::toString),
/// which RFC 8785 §3.2.2.3 prescribes; `-0` prints as `0`.
///
/// # Errors
/// [`JcsError::NotFinite`] for NaN and infinities.
pub fn format_double(x: f64) -> Result<String, JcsError> {
    if !x.is_finite() {
        return Err(JcsError::NotFinite);
    }
    if x == 0.0 {
        return Ok("0".to_owned()); // also -0
    }
    let mut buf = ryu_js::Buffer::new();
    Ok(buf.format_finite(x).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_zero_and_exponent_boundaries() {
        assert_eq!(format_double(-0.0).unwrap(), "0");
        assert_eq!(format_double(1e21).unwrap(), "1e+21");
        assert_eq!(format_double(1e20).unwrap(), "100000000000000000000");
        assert_eq!(format_double(1e-7).unwrap(), "1e-7");
        assert_eq!(format_double(1e-6).unwrap(), "0.000001");
        assert_eq!(format_double(f64::NAN), Err(JcsError::NotFinite));
    }
}
