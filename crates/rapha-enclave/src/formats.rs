//! Byte-level checks of output formats: DICOM sniffing, safetensors headers, ONNX, zip
//! containers (PyTorch), and the numeric `metrics.json` schema.
//!
//! Everything here parses bytes a hostile trainer wrote, so every length is checked before
//! use and every failure is a refusal, never a panic.

use std::io::Read;

/// Value representations a DICOM element header can carry (PS3.5 6.2).
const VRS: [&[u8; 2]; 34] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
];

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Groups a DICOM dataset (or its file meta) plausibly starts with.
fn dicom_start_group(g: u16) -> bool {
    matches!(g, 0x0002 | 0x0008 | 0x0010 | 0x0018 | 0x0020 | 0x0028)
}

/// True when `b` has the Part 10 `DICM` magic at offset 128.
pub fn has_dicm_magic(b: &[u8]) -> bool {
    b.get(128..132) == Some(b"DICM")
}

/// True when `b` begins like a DICOM dataset without preamble: a first element of a DICOM
/// header group with a valid explicit VR, or (implicit VR) two consecutive element headers
/// of such groups with ascending tags and in-bounds lengths. Little and big endian.
pub fn looks_like_dicom_dataset(b: &[u8]) -> bool {
    for read16 in [le16, be16] {
        let (Some(g), Some(e)) = (read16(b, 0), read16(b, 2)) else {
            return false;
        };
        if !dicom_start_group(g) {
            continue;
        }
        // Explicit VR: two upper-case letters that name a VR.
        if let Some(vr) = b.get(4..6) {
            if VRS.iter().any(|v| &v[..] == vr) {
                return true;
            }
        }
        // Implicit VR little endian: 32-bit length, then the next element.
        if let Some(len) = le32(b, 4) {
            let next = 8usize.saturating_add(len as usize);
            if let (Some(g2), Some(e2)) = (read16(b, next), read16(b, next + 2)) {
                if len < 1 << 20 && dicom_start_group(g2) && (g2, e2) > (g, e) {
                    return true;
                }
            }
        }
    }
    false
}

/// safetensors dtypes and their element sizes in bits.
fn safetensors_dtype_bits(d: &str) -> Option<u64> {
    Some(match d {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 8,
        "U16" | "I16" | "F16" | "BF16" => 16,
        "U32" | "I32" | "F32" => 32,
        "U64" | "I64" | "F64" => 64,
        _ => return None,
    })
}

/// Largest safetensors JSON header accepted.
pub const MAX_SAFETENSORS_HEADER: u64 = 100 << 20;

/// Checks a safetensors file: header length, JSON header of tensors with known dtype, shape
/// and offsets, tensors covering the data region exactly (no hidden bytes), and
/// `__metadata__` as a string map.
///
/// Not the `safetensors` crate, which the trainer SDK writes with: its header type ignores
/// fields it does not know, a place a trainer could hide bytes, and this is the output guard's
/// trust boundary with its own refusals. It can go if the crate gains a mode that refuses
/// unknown fields and reports the same problems.
///
/// # Errors
/// A description of the first problem.
pub fn check_safetensors(b: &[u8]) -> Result<(), String> {
    parse_safetensors(b).map(|_| ())
}

/// One tensor of a checked safetensors header: its name and dtype as written, its shape and
/// its byte range in the data region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetensorsTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub start: u64,
    pub end: u64,
}

/// [`check_safetensors`], returning the tensors it checked (in the header's order).
///
/// # Errors
/// As [`check_safetensors`].
pub fn parse_safetensors(b: &[u8]) -> Result<Vec<SafetensorsTensor>, String> {
    let n = le64(b, 0).ok_or("file shorter than the 8-byte header length")?;
    if n > MAX_SAFETENSORS_HEADER || n.saturating_add(8) > b.len() as u64 {
        return Err(format!("header length {n} is out of bounds"));
    }
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n as usize])
        .map_err(|e| format!("header is not JSON: {e}"))?;
    let obj = header.as_object().ok_or("header is not a JSON object")?;
    let data_len = b.len() as u64 - 8 - n;
    let mut ranges = Vec::new();
    let mut tensors = Vec::new();
    for (name, t) in obj {
        if name == "__metadata__" {
            let m = t.as_object().ok_or("__metadata__ is not an object")?;
            if !m.values().all(serde_json::Value::is_string) {
                return Err("__metadata__ values must be strings".into());
            }
            continue;
        }
        let t = t
            .as_object()
            .ok_or_else(|| format!("tensor {name:?} is not an object"))?;
        if t.keys()
            .any(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
        {
            return Err(format!("tensor {name:?} has unknown fields"));
        }
        let bits = t
            .get("dtype")
            .and_then(serde_json::Value::as_str)
            .and_then(safetensors_dtype_bits)
            .ok_or_else(|| format!("tensor {name:?} has no known dtype"))?;
        let shape = t
            .get("shape")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| format!("tensor {name:?} has no shape"))?;
        let mut elems: u64 = 1;
        let mut dims = Vec::with_capacity(shape.len().min(64));
        for d in shape {
            let d = d
                .as_u64()
                .ok_or_else(|| format!("tensor {name:?} has a bad dimension"))?;
            elems = elems
                .checked_mul(d)
                .ok_or_else(|| format!("tensor {name:?} is too large"))?;
            dims.push(d);
        }
        let offs = t
            .get("data_offsets")
            .and_then(serde_json::Value::as_array)
            .filter(|a| a.len() == 2)
            .ok_or_else(|| format!("tensor {name:?} has no data_offsets"))?;
        let (Some(start), Some(end)) = (offs[0].as_u64(), offs[1].as_u64()) else {
            return Err(format!("tensor {name:?} has bad data_offsets"));
        };
        let want = elems.checked_mul(bits).map(|x| x.div_ceil(8));
        if start > end || end > data_len || Some(end - start) != want {
            return Err(format!(
                "tensor {name:?} data_offsets do not match its shape and dtype"
            ));
        }
        ranges.push((start, end));
        tensors.push(SafetensorsTensor {
            name: name.clone(),
            dtype: t
                .get("dtype")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            shape: dims,
            start,
            end,
        });
    }
    ranges.sort_unstable();
    let mut at = 0u64;
    for (s, e) in ranges {
        if s != at {
            return Err(
                "tensor data has gaps or overlaps (bytes not belonging to a tensor)".into(),
            );
        }
        at = e;
    }
    if at != data_len {
        return Err(format!(
            "{} trailing bytes after the last tensor",
            data_len - at
        ));
    }
    Ok(tensors)
}

/// Offset of a (checked) safetensors file's tensor data: 8 + header length.
pub fn safetensors_data_start(b: &[u8]) -> usize {
    le64(b, 0).map_or(b.len(), |n| (n as usize).saturating_add(8).min(b.len()))
}

/// The string literals of a JSON text (keys and values), decoded, each with the offset in
/// `json` of its first byte after the opening quote. Numbers, `true`, `false` and `null` are
/// left out: in a checked safetensors header they are shapes and offsets, the file's
/// structure. A literal that does not decode (`json` is not valid JSON) is returned as its
/// raw bytes, so nothing is skipped.
pub fn json_strings(json: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < json.len() {
        if json[i] != b'"' {
            i += 1;
            continue;
        }
        let open = i;
        i += 1;
        while i < json.len() && json[i] != b'"' {
            i += if json[i] == b'\\' { 2 } else { 1 };
        }
        let end = i.min(json.len());
        let decoded = json
            .get(open..=end)
            .and_then(|lit| serde_json::from_slice::<String>(lit).ok())
            .map(String::into_bytes);
        out.push((
            open + 1,
            decoded.unwrap_or_else(|| json[open + 1..end].to_vec()),
        ));
        i = end + 1;
    }
    out
}

/// The strings of a pickle (protocols 0 to 5): the arguments of its string, bytes, global and
/// persistent-id opcodes, each with its offset in `b`, and any bytes after `STOP`. `None`
/// when `b` is not a pickle this reader can walk (an unknown opcode, a truncated argument):
/// the caller then searches the raw bytes as a whole.
pub fn pickle_strings(b: &[u8]) -> Option<Vec<(usize, &[u8])>> {
    let mut out = Vec::new();
    let mut i = 0usize;
    let line = |i: usize| -> Option<usize> {
        let n = b.get(i..)?.iter().position(|&c| c == b'\n')?;
        Some(n)
    };
    loop {
        let op = *b.get(i)?;
        i += 1;
        let mut take = |at: usize, n: usize| -> Option<usize> {
            let end = at.checked_add(n)?;
            out.push((at, b.get(at..end)?));
            Some(end)
        };
        i = match op {
            // No argument.
            b'(' | b'.' | b'0' | b'1' | b'2' | b'N' | b'R' | b'a' | b'b' | b'd' | b'}' | b'e'
            | b'l' | b']' | b'o' | b's' | b't' | b')' | b'u' | b'Q' | 0x81 | 0x85 | 0x86 | 0x87
            | 0x88 | 0x89 | 0x8f | 0x90 | 0x91 | 0x92 | 0x93 | 0x94 | 0x97 | 0x98 => i,
            // Fixed-size binary arguments (memo indexes, ints, floats, frame lengths).
            b'h' | b'q' | b'K' | 0x80 | 0x82 => i + 1,
            b'M' | 0x83 => i + 2,
            b'J' | b'j' | b'r' | 0x84 => i + 4,
            b'G' | 0x95 => i + 8,
            // Long integers: length-prefixed binary.
            0x8a => i + 1 + usize::from(*b.get(i)?),
            0x8b => (i + 4).checked_add(le32(b, i)? as usize)?,
            // Strings and bytes: length-prefixed.
            0x8c | b'U' | b'C' => take(i + 1, usize::from(*b.get(i)?))?,
            b'X' | b'T' | b'B' => take(i + 4, le32(b, i)? as usize)?,
            0x8d | 0x8e | 0x96 => take(i + 8, usize::try_from(le64(b, i)?).ok()?)?,
            // Protocol 0: newline-terminated numbers and memo keys,
            b'I' | b'L' | b'F' | b'g' | b'p' => i + line(i)? + 1,
            // strings and persistent ids,
            b'S' | b'V' | b'P' => take(i, line(i)?)? + 1,
            // and module + name pairs.
            b'c' | b'i' => {
                let j = take(i, line(i)?)? + 1;
                take(j, line(j)?)? + 1
            }
            _ => return None,
        };
        if i > b.len() {
            return None;
        }
        if op == b'.' {
            // Bytes after STOP are ignored by a loader but are still output bytes.
            if i < b.len() {
                out.push((i, &b[i..]));
            }
            return Some(out);
        }
    }
}

/// The storage keys of a `torch.save` archive: the `<key>` of each `<dir>/data/<key>` entry.
/// They are numbers the archive's own layout chose (`0`, `1`, ...), named again in its
/// `data.pkl`; they are not searched for number-shaped identifiers.
pub fn torch_storage_keys(entries: &[ZipEntry]) -> std::collections::BTreeSet<Vec<u8>> {
    entries
        .iter()
        .filter_map(|e| {
            let (dir, key) = e.name.rsplit_once('/')?;
            (dir == "data" || dir.ends_with("/data")).then(|| key.as_bytes().to_vec())
        })
        .collect()
}

/// Cheap ONNX check: a protobuf `ModelProto` starts with field 1 (`ir_version`, varint).
///
/// # Errors
/// When it does not.
pub fn check_onnx(b: &[u8]) -> Result<(), String> {
    match b.first() {
        Some(0x08) if b.len() > 2 => Ok(()),
        _ => Err("not an ONNX ModelProto (first field is not ir_version)".into()),
    }
}

/// One inflated zip entry.
#[derive(Debug)]
pub struct ZipEntry {
    pub name: String,
    pub data: Vec<u8>,
}

/// True when `b` starts with a zip local file header.
pub fn is_zip(b: &[u8]) -> bool {
    b.starts_with(b"PK\x03\x04")
}

/// Reads every entry of a zip archive through its central directory, inflating stored and
/// deflated entries; `budget` caps the total inflated bytes (zip bombs).
///
/// # Errors
/// Malformed archive, unsupported compression or zip64, or the budget exceeded.
pub fn read_zip(b: &[u8], budget: u64) -> Result<Vec<ZipEntry>, String> {
    let mut shared = u64::MAX;
    read_zip_within(b, budget, &mut shared, None).map_err(|e| match e {
        ZipError::Malformed(m) => m,
        ZipError::Inflate | ZipError::Time => "the guard's budget was used up".into(),
    })
}

/// Why [`read_zip_within`] stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZipError {
    /// The archive itself is refused (malformed, unsupported, or inflating past its cap).
    Malformed(String),
    /// The inflate budget shared by every archive of the output set ran out.
    Inflate,
    /// The deadline passed.
    Time,
}

impl From<&str> for ZipError {
    fn from(m: &str) -> Self {
        Self::Malformed(m.into())
    }
}

impl From<String> for ZipError {
    fn from(m: String) -> Self {
        Self::Malformed(m)
    }
}

/// Inflation happens in steps of this many bytes, with the deadline checked between them.
const INFLATE_STEP: u64 = 1 << 20;

/// [`read_zip`] within a byte budget shared with other archives (`shared`: what is left of
/// it, reduced by every entry read, stored or deflated) and a deadline. `cap` bounds this
/// archive alone: past it the archive is [`ZipError::Malformed`], checked first.
///
/// # Errors
/// As [`read_zip`]; [`ZipError::Inflate`] / [`ZipError::Time`] when the shared budget or the
/// deadline runs out.
pub fn read_zip_within(
    b: &[u8],
    cap: u64,
    shared: &mut u64,
    deadline: Option<std::time::Instant>,
) -> Result<Vec<ZipEntry>, ZipError> {
    const EOCD: &[u8] = b"PK\x05\x06";
    let late = || deadline.is_some_and(|d| std::time::Instant::now() >= d);
    let search_from = b.len().saturating_sub(22 + 65535);
    let eocd = (search_from..b.len().saturating_sub(21))
        .rev()
        .find(|&i| b.get(i..i + 4) == Some(EOCD))
        .ok_or("no end-of-central-directory record")?;
    let count = le16(b, eocd + 10).ok_or("truncated EOCD")? as usize;
    let cd_off = le32(b, eocd + 16).ok_or("truncated EOCD")?;
    if cd_off == u32::MAX || count == usize::from(u16::MAX) {
        return Err("zip64 archives are not accepted".into());
    }
    let mut at = cd_off as usize;
    let mut out = Vec::with_capacity(count.min(4096));
    let mut left = cap;
    for _ in 0..count {
        if late() {
            return Err(ZipError::Time);
        }
        if b.get(at..at + 4) != Some(b"PK\x01\x02") {
            return Err("bad central directory entry".into());
        }
        let method = le16(b, at + 10).ok_or("truncated entry")?;
        let csize = le32(b, at + 20).ok_or("truncated entry")?;
        let usize_ = le32(b, at + 24).ok_or("truncated entry")?;
        let nlen = le16(b, at + 28).ok_or("truncated entry")? as usize;
        let xlen = le16(b, at + 30).ok_or("truncated entry")? as usize;
        let clen = le16(b, at + 32).ok_or("truncated entry")? as usize;
        let local = le32(b, at + 42).ok_or("truncated entry")? as usize;
        if csize == u32::MAX || usize_ == u32::MAX || local == u32::MAX as usize {
            return Err("zip64 entries are not accepted".into());
        }
        let name = b
            .get(at + 46..at + 46 + nlen)
            .ok_or("truncated entry name")?;
        let name = String::from_utf8_lossy(name).into_owned();
        at += 46 + nlen + xlen + clen;
        if b.get(local..local + 4) != Some(b"PK\x03\x04") {
            return Err(format!("entry {name:?} has no local header").into());
        }
        let lnlen = le16(b, local + 26).ok_or("truncated local header")? as usize;
        let lxlen = le16(b, local + 28).ok_or("truncated local header")? as usize;
        let start = local + 30 + lnlen + lxlen;
        let raw = b
            .get(start..start + csize as usize)
            .ok_or("entry data out of bounds")?;
        // One more byte than either budget allows tells "over" from "exactly at".
        let allowed = left.min(*shared);
        let data = match method {
            0 => raw
                .get(
                    ..usize::try_from(allowed.saturating_add(1))
                        .unwrap_or(usize::MAX)
                        .min(raw.len()),
                )
                .unwrap_or(raw)
                .to_vec(),
            8 => {
                let mut d = Vec::new();
                let mut inflater = flate2::read::DeflateDecoder::new(raw);
                loop {
                    if late() {
                        return Err(ZipError::Time);
                    }
                    let want = (allowed.saturating_add(1) - d.len() as u64).min(INFLATE_STEP);
                    let n = (&mut inflater)
                        .take(want)
                        .read_to_end(&mut d)
                        .map_err(|e| format!("entry {name:?} does not inflate: {e}"))?;
                    if n == 0 || d.len() as u64 > allowed {
                        break;
                    }
                }
                d
            }
            m => {
                return Err(
                    format!("entry {name:?} uses unsupported compression method {m}").into(),
                )
            }
        };
        let n = data.len() as u64;
        left = left
            .checked_sub(n)
            .ok_or("zip entries inflate beyond the output cap")?;
        *shared = shared.checked_sub(n).ok_or(ZipError::Inflate)?;
        out.push(ZipEntry { name, data });
    }
    Ok(out)
}

/// PyTorch zip check: entries share one top-level directory and include `data.pkl`.
///
/// # Errors
/// When it is not a PyTorch archive.
pub fn check_pytorch_entries(entries: &[ZipEntry]) -> Result<(), String> {
    let has_pkl = entries
        .iter()
        .any(|e| e.name == "data.pkl" || e.name.ends_with("/data.pkl"));
    if !has_pkl {
        return Err("zip has no data.pkl entry (not a torch.save archive)".into());
    }
    Ok(())
}

/// Keys allowed in `metrics.json` and the longest `*_curve` array: the protocol's schema,
/// which the SDKs write by.
pub use rapha_protocol::{MAX_CURVE, METRICS_KEYS};

/// `metrics.json`: one object, fixed keys, finite numbers (arrays of numbers for curves).
///
/// # Errors
/// A description of the first violation (never the offending string's content).
pub fn check_metrics_json(b: &[u8]) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(b).map_err(|e| format!("not JSON (line {})", e.line()))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    for (k, val) in obj {
        if !METRICS_KEYS.contains(&k.as_str()) {
            return Err(format!(
                "key of {} bytes is not an allowed metrics key",
                k.len()
            ));
        }
        let ok = if k.ends_with("_curve") {
            val.as_array()
                .is_some_and(|a| a.len() <= MAX_CURVE && a.iter().all(serde_json::Value::is_number))
        } else {
            val.is_number()
        };
        if !ok {
            return Err(format!(
                "value of {k:?} is not {}",
                if k.ends_with("_curve") {
                    "an array of numbers"
                } else {
                    "a number"
                }
            ));
        }
    }
    Ok(())
}
