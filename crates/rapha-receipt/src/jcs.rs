//! RFC 8785 JSON Canonicalization Scheme (JCS) over `serde_json::Value`.
//!
//! - object members sorted by the UTF-16 code units of their names, no whitespace;
//! - strings escaped as ECMAScript `JSON.stringify` does: `\"`, `\\`, `\b \f \n \r \t`, other
//!   controls as `\u00xx` (lowercase hex), everything else as literal UTF-8;
//! - numbers as ECMAScript `Number.prototype.toString` of the IEEE-754 double (shortest
//!   round-trip digits, `1e+21` style exponents from 1e21 and below 1e-6).
//!
//! Integers must be exactly representable as doubles (|n| <= 2^53); larger values are refused
//! rather than rounded, so amounts that could exceed that travel as decimal strings.

use serde_json::{Map, Number, Value};

use crate::error::{ReceiptError, Result};

/// Largest integer a double represents exactly with all smaller integers (2^53).
const MAX_SAFE: u64 = 1 << 53;

/// Canonical bytes of `value`.
///
/// # Errors
/// [`ReceiptError::Canonicalize`] for integers beyond 2^53.
pub fn to_vec(value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(1024);
    write_value(value, &mut out)?;
    Ok(out)
}

/// Canonical bytes of any serializable value.
///
/// # Errors
/// [`ReceiptError::Canonicalize`] when the value does not serialize to JSON (for example a
/// non-finite float becomes `null` in serde_json, so callers check floats first) or holds an
/// integer beyond 2^53.
pub fn to_vec_of<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let v = serde_json::to_value(value)
        .map_err(|_| ReceiptError::Canonicalize("value does not serialize to JSON"))?;
    to_vec(&v)
}

fn write_value(v: &Value, out: &mut Vec<u8>) -> Result<()> {
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

fn write_object(o: &Map<String, Value>, out: &mut Vec<u8>) -> Result<()> {
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
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn write_number(n: &Number, out: &mut Vec<u8>) -> Result<()> {
    if let Some(u) = n.as_u64() {
        if u > MAX_SAFE {
            return Err(ReceiptError::Canonicalize("integer larger than 2^53"));
        }
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE {
            return Err(ReceiptError::Canonicalize("integer smaller than -2^53"));
        }
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(f) = n.as_f64() {
        out.extend_from_slice(format_double(f)?.as_bytes());
    } else {
        return Err(ReceiptError::Canonicalize("number is not a double"));
    }
    Ok(())
}

/// ECMAScript `Number.prototype.toString(x)` for a finite double (ECMA-262 §6.1.6.1.20).
///
/// # Errors
/// [`ReceiptError::Canonicalize`] for NaN and infinities, which JSON cannot carry.
pub fn format_double(x: f64) -> Result<String> {
    if !x.is_finite() {
        return Err(ReceiptError::Canonicalize(
            "NaN or infinity has no JSON form",
        ));
    }
    if x == 0.0 {
        return Ok("0".to_owned()); // also -0
    }
    if x < 0.0 {
        return Ok(format!("-{}", format_double(-x)?));
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, closest to x: exactly the
    // digits `s` (k of them) and exponent the ECMAScript algorithm asks for.
    let sci = format!("{x:e}");
    let (mant, exp) = sci
        .split_once('e')
        .ok_or(ReceiptError::Canonicalize("unexpected float formatting"))?;
    let exp: i32 = exp
        .parse()
        .map_err(|_| ReceiptError::Canonicalize("unexpected exponent"))?;
    let mut digits: String = mant.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exp + 1; // value = 0.digits * 10^n
    if digits.ends_with(['1', '3', '5', '7', '9']) {
        digits = tie_to_even(x, digits, exp);
    }
    let s = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let sign = if e < 0 { '-' } else { '+' };
        if k == 1 {
            format!("{digits}e{sign}{}", e.abs())
        } else {
            format!("{}.{}e{sign}{}", &digits[..1], &digits[1..], e.abs())
        }
    };
    Ok(s)
}

/// ECMAScript breaks a tie between two equally close shortest digit strings towards the even
/// one (`1424953923781206.25` prints as `...206.2`); Rust's shortest formatting may pick the
/// odd one. Given Rust's odd choice `digits`, returns the even neighbour when that also reads
/// back as `x` and `x` lies exactly halfway between the two.
fn tie_to_even(x: f64, digits: String, exp: i32) -> String {
    let k = digits.len();
    let reads_back = |d: &str| {
        let s = if d.len() == 1 {
            format!("{d}e{exp}")
        } else {
            format!("{}.{}e{exp}", &d[..1], &d[1..])
        };
        s.parse::<f64>().ok() == Some(x)
    };
    // Cheap filter first: without an even neighbour that round-trips there is no tie.
    let Some(even) = [decrement(&digits), increment(&digits)]
        .into_iter()
        .find(|n| n.len() == k && !n.starts_with('0') && reads_back(n))
    else {
        return digits;
    };
    // The exact decimal expansion of x (a double has at most 767 significant digits).
    let exact = format!("{x:.800e}");
    let Some((m, e)) = exact.split_once('e') else {
        return digits;
    };
    if e.parse::<i32>().ok() != Some(exp) {
        return digits;
    }
    let all: String = m.chars().filter(|c| *c != '.').collect();
    let low = if even < digits { &even } else { &digits };
    let (head, rest) = all.split_at(k.min(all.len()));
    let halfway =
        head == low.as_str() && rest.starts_with('5') && rest[1..].bytes().all(|b| b == b'0');
    if halfway {
        even
    } else {
        digits
    }
}

fn decrement(digits: &str) -> String {
    let mut b = digits.as_bytes().to_vec();
    for d in b.iter_mut().rev() {
        if *d == b'0' {
            *d = b'9';
        } else {
            *d -= 1;
            break;
        }
    }
    String::from_utf8(b).unwrap_or_default()
}

fn increment(digits: &str) -> String {
    let mut b = digits.as_bytes().to_vec();
    for d in b.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return String::from_utf8(b).unwrap_or_default();
        }
    }
    let mut out = String::from("1");
    out.push_str(&String::from_utf8(b).unwrap_or_default());
    out
}
