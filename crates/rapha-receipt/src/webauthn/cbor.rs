//! A bounded CBOR (RFC 8949) decoder for the few structures WebAuthn needs: the attestation
//! object (a map of text keys), COSE keys (maps of small integer keys) and a packed
//! attestation statement. Definite lengths only (CTAP2 encodes canonically), no tags, no
//! floats; depth and sizes bounded, so hostile bytes cost at most their own length.

use super::WebauthnError;

/// Nesting deeper than this is refused (a COSE key inside an attestation object is depth 3).
const MAX_DEPTH: usize = 4;
/// Items in one array or map.
const MAX_ITEMS: u64 = 64;

/// A decoded CBOR item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Uint(u64),
    /// A negative integer: the value is `-1 - n`.
    Nint(u64),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Bool(bool),
    Null,
}

impl Value {
    /// The integer as an `i64` (COSE labels and algorithm ids), if it is a small integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Uint(n) => i64::try_from(*n).ok(),
            Self::Nint(n) => i64::try_from(*n).ok().map(|n| -1 - n),
            _ => None,
        }
    }

    /// The value of `key` in a map.
    pub fn get(&self, key: &Value) -> Option<&Value> {
        match self {
            Self::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value of the integer label `label` in a map (COSE).
    pub fn label(&self, label: i64) -> Option<&Value> {
        match self {
            Self::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_int() == Some(label))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value of the text key `key` in a map.
    pub fn text_key(&self, key: &str) -> Option<&Value> {
        self.get(&Self::Text(key.to_owned()))
    }
}

/// Decodes one item at the start of `bytes`; returns it and the bytes it took.
///
/// # Errors
/// [`WebauthnError::Cbor`] for anything outside the subset, truncated input, or a map with a
/// repeated key.
pub fn decode_prefix(bytes: &[u8]) -> Result<(Value, usize), WebauthnError> {
    let mut r = Reader { bytes, pos: 0 };
    let v = r.item(0)?;
    Ok((v, r.pos))
}

/// Decodes exactly one item that fills `bytes`.
///
/// # Errors
/// As [`decode_prefix`], and trailing bytes.
pub fn decode(bytes: &[u8]) -> Result<Value, WebauthnError> {
    let (v, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(bad("trailing bytes after the CBOR item"));
    }
    Ok(v)
}

fn bad(why: &str) -> WebauthnError {
    WebauthnError::Cbor(why.to_owned())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WebauthnError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| bad("truncated CBOR"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn argument(&mut self, info: u8) -> Result<u64, WebauthnError> {
        let n = match info {
            0..=23 => return Ok(u64::from(info)),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => {
                return Err(bad(
                    "indefinite lengths and reserved encodings are not accepted",
                ))
            }
        };
        let b = self.take(n)?;
        Ok(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    }

    fn len(&mut self, info: u8) -> Result<usize, WebauthnError> {
        let n = self.argument(info)?;
        let n = usize::try_from(n).map_err(|_| bad("length too large"))?;
        if n > self.bytes.len() - self.pos {
            return Err(bad("length past the end of the input"));
        }
        Ok(n)
    }

    fn item(&mut self, depth: usize) -> Result<Value, WebauthnError> {
        if depth > MAX_DEPTH {
            return Err(bad("nested too deep"));
        }
        let first = *self.take(1)?.first().ok_or_else(|| bad("truncated CBOR"))?;
        let (major, info) = (first >> 5, first & 0x1f);
        Ok(match major {
            0 => Value::Uint(self.argument(info)?),
            1 => Value::Nint(self.argument(info)?),
            2 => {
                let n = self.len(info)?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            3 => {
                let n = self.len(info)?;
                let s = std::str::from_utf8(self.take(n)?)
                    .map_err(|_| bad("text string is not UTF-8"))?;
                Value::Text(s.to_owned())
            }
            4 => {
                let n = self.argument(info)?;
                if n > MAX_ITEMS {
                    return Err(bad("array too long"));
                }
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.item(depth + 1)?);
                }
                Value::Array(items)
            }
            5 => {
                let n = self.argument(info)?;
                if n > MAX_ITEMS {
                    return Err(bad("map too long"));
                }
                let mut entries: Vec<(Value, Value)> = Vec::new();
                for _ in 0..n {
                    let k = self.item(depth + 1)?;
                    if entries.iter().any(|(seen, _)| *seen == k) {
                        return Err(bad("map key repeated"));
                    }
                    let v = self.item(depth + 1)?;
                    entries.push((k, v));
                }
                Value::Map(entries)
            }
            7 => match info {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                22 => Value::Null,
                _ => return Err(bad("floats and other simple values are not accepted")),
            },
            _ => return Err(bad("tags are not accepted")),
        })
    }
}

/// Encodes the subset [`decode`] reads, definite lengths, shortest arguments (for test
/// authenticators and COSE keys the node stores).
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, v);
    out
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if let Ok(b) = u8::try_from(n) {
        out.extend([m | 24, b]);
    } else if let Ok(b) = u16::try_from(n) {
        out.push(m | 25);
        out.extend(b.to_be_bytes());
    } else if let Ok(b) = u32::try_from(n) {
        out.push(m | 26);
        out.extend(b.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend(n.to_be_bytes());
    }
}

fn put(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Uint(n) => head(out, 0, *n),
        Value::Nint(n) => head(out, 1, *n),
        Value::Bytes(b) => {
            head(out, 2, b.len() as u64);
            out.extend(b);
        }
        Value::Text(s) => {
            head(out, 3, s.len() as u64);
            out.extend(s.as_bytes());
        }
        Value::Array(items) => {
            head(out, 4, items.len() as u64);
            items.iter().for_each(|i| put(out, i));
        }
        Value::Map(entries) => {
            head(out, 5, entries.len() as u64);
            for (k, v) in entries {
                put(out, k);
                put(out, v);
            }
        }
        Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Value::Null => out.push(0xf6),
    }
}
