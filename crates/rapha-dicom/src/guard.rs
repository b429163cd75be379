//! A structural pre-check of Part 10 bytes before dicom-rs parses them.
//!
//! dicom-rs 0.10 trusts element lengths: a 674-byte file with a bad length makes it allocate
//! gigabytes before failing. This scan walks every element header (file meta group, data set in
//! its transfer syntax, sequences and items at any depth, encapsulated fragments) and refuses
//! any length that runs past the end of the bytes, so the parser only ever sees lengths the
//! input can back. It allocates nothing.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;

const UNDEFINED: u32 = 0xFFFF_FFFF;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    ExplicitLe,
    ImplicitLe,
    ExplicitBe,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// Inside a sequence or item: elements are descended into.
    Data(Mode),
    /// Inside encapsulated pixel data: items are fragments, skipped by length.
    Fragments,
}

/// Checks that every element length in `bytes` (a Part 10 file with or without preamble) fits
/// in the input.
///
/// # Errors
/// A short description of the first length that does not fit.
pub fn check_lengths(bytes: &[u8]) -> Result<(), String> {
    match scan_file(bytes, bytes.len(), false)? {
        Scan::Complete | Scan::PixelDataAt(_) => Ok(()),
        // Unreachable when the prefix is the whole input; kept total for safety.
        Scan::NeedMore => Err("truncated file".into()),
    }
}

/// Result of scanning a prefix of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The top-level PixelData element's header ends at this offset of the input; everything
    /// before it checked out and its length fits in the file.
    PixelDataAt(usize),
    /// The whole file was checked and has no top-level PixelData.
    Complete,
    /// The prefix ends before the PixelData header: read more.
    NeedMore,
}

/// Scans `prefix`, the first bytes of a file of `total` bytes, up to the top-level PixelData
/// header (lengths are checked against the whole file), so a header can be read without
/// reading the pixels.
///
/// # Errors
/// As [`check_lengths`].
pub fn scan_header(prefix: &[u8], total: usize) -> Result<Scan, String> {
    scan_file(prefix, total, true)
}

fn scan_file(bytes: &[u8], total: usize, stop_at_pixels: bool) -> Result<Scan, String> {
    let (body, skip) = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        (&bytes[132..], 132)
    } else if bytes.starts_with(b"DICM") {
        (&bytes[4..], 4)
    } else if bytes.len() < 132 && total > bytes.len() {
        return Ok(Scan::NeedMore);
    } else {
        return Err("no DICM prefix".into());
    };
    let limit = total.saturating_sub(skip);
    // File meta group: explicit VR little endian, group 0002.
    let mut pos = 0usize;
    let mut ts = String::new();
    while pos + 8 <= body.len() && u16::from_le_bytes([body[pos], body[pos + 1]]) == 0x0002 {
        let elem = u16::from_le_bytes([body[pos + 2], body[pos + 3]]);
        let (len, hdr) = explicit_len(body, pos, Mode::ExplicitLe)?;
        if len == UNDEFINED {
            return Err("undefined length in the file meta group".into());
        }
        let start = pos + hdr;
        let end = start
            .checked_add(len as usize)
            .filter(|e| *e <= limit)
            .ok_or("file meta element runs past the end")?;
        if end > body.len() {
            return Ok(Scan::NeedMore);
        }
        if elem == 0x0010 {
            ts = String::from_utf8_lossy(&body[start..end])
                .trim_matches(['\0', ' '])
                .to_owned();
        }
        pos = end;
    }
    if pos + 8 > body.len() && body.len() < limit {
        return Ok(Scan::NeedMore);
    }
    let mode = match ts.as_str() {
        "1.2.840.10008.1.2" => Mode::ImplicitLe,
        "1.2.840.10008.1.2.2" => Mode::ExplicitBe,
        // Deflated data sets are compressed: lengths inside cannot be checked here, and
        // inflating is bounded by the deflate stream itself.
        "1.2.840.10008.1.2.1.99" => {
            return if body.len() < limit {
                Ok(Scan::NeedMore)
            } else {
                Ok(Scan::Complete)
            }
        }
        _ => Mode::ExplicitLe,
    };
    let offset = skip + pos;
    Ok(
        match scan(&body[pos..], mode, limit - pos, stop_at_pixels)? {
            Scan::PixelDataAt(p) => Scan::PixelDataAt(p + offset),
            other => other,
        },
    )
}

fn u16_at(b: &[u8], p: usize, mode: Mode) -> Option<u16> {
    let s = b.get(p..p + 2)?;
    Some(if mode == Mode::ExplicitBe {
        u16::from_be_bytes([s[0], s[1]])
    } else {
        u16::from_le_bytes([s[0], s[1]])
    })
}

fn u32_at(b: &[u8], p: usize, mode: Mode) -> Option<u32> {
    let s = b.get(p..p + 4)?;
    let a = [s[0], s[1], s[2], s[3]];
    Some(if mode == Mode::ExplicitBe {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    })
}

/// Length and header size of an explicit-VR element at `p`.
fn explicit_len(b: &[u8], p: usize, mode: Mode) -> Result<(u32, usize), String> {
    let vr = b.get(p + 4..p + 6).ok_or("truncated element header")?;
    if matches!(
        vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"SV"
            | b"UV"
    ) {
        Ok((
            u32_at(b, p + 8, mode).ok_or("truncated element header")?,
            12,
        ))
    } else {
        Ok((
            u32::from(u16_at(b, p + 6, mode).ok_or("truncated element header")?),
            8,
        ))
    }
}

fn scan(b: &[u8], mode: Mode, limit: usize, stop_at_pixels: bool) -> Result<Scan, String> {
    let mut stack: Vec<Ctx> = vec![Ctx::Data(mode)];
    let mut p = 0usize;
    while p + 8 <= b.len() {
        let ctx = *stack.last().unwrap_or(&Ctx::Data(mode));
        let m = match ctx {
            Ctx::Data(m) => m,
            Ctx::Fragments => Mode::ExplicitLe,
        };
        // Items and delimiters (group FFFE) have no VR in any transfer syntax.
        let (group, elem) = (
            u16_at(b, p, m).unwrap_or(0),
            u16_at(b, p + 2, m).unwrap_or(0),
        );
        if group == 0xFFFE {
            let len = u32_at(b, p + 4, m).ok_or("truncated item header")?;
            p += 8;
            match elem {
                0xE0DD => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                }
                0xE00D => {}
                _ if ctx == Ctx::Fragments || len == UNDEFINED => {
                    if ctx == Ctx::Fragments {
                        p = p
                            .checked_add(len as usize)
                            .filter(|e| *e <= limit)
                            .ok_or("pixel fragment runs past the end")?;
                    }
                }
                _ => {
                    if len as usize > limit - p {
                        return Err("item length runs past the end".into());
                    }
                }
            }
            continue;
        }
        if b.len() < p + 12 && b.len() < limit {
            return Ok(Scan::NeedMore);
        }
        let (len, hdr, vr) = if m == Mode::ImplicitLe {
            let len = u32_at(b, p + 4, m).ok_or("truncated element header")?;
            let tag = dicom_core::Tag(group, elem);
            let vr = StandardDataDictionary
                .by_tag(tag)
                .map(|e| e.vr().relaxed())
                .unwrap_or(dicom_core::VR::UN);
            (len, 8, vr)
        } else {
            let (len, hdr) = explicit_len(b, p, m)?;
            let vr = std::str::from_utf8(&b[p + 4..p + 6])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(dicom_core::VR::UN);
            (len, hdr, vr)
        };
        p += hdr;
        let top_pixels = stack.len() == 1 && (group, elem) == (0x7FE0, 0x0010);
        if len == UNDEFINED {
            if top_pixels && stop_at_pixels {
                return Ok(Scan::PixelDataAt(p));
            }
            match vr {
                dicom_core::VR::SQ => stack.push(Ctx::Data(m)),
                // An undefined-length UN is a sequence encoded implicit VR little endian, which
                // dicom-rs 0.10 reads in the outer encoding and then trusts garbage lengths:
                // refused rather than handed to it.
                dicom_core::VR::UN if m != Mode::ImplicitLe => {
                    return Err(format!(
                        "undefined-length UN element ({group:04X},{elem:04X}) is not supported"
                    ));
                }
                _ => stack.push(Ctx::Fragments),
            }
            continue;
        }
        if len as usize > limit - p {
            return Err(format!(
                "element ({group:04X},{elem:04X}) length {len} runs past the end"
            ));
        }
        if top_pixels && stop_at_pixels {
            return Ok(Scan::PixelDataAt(p));
        }
        if vr != dicom_core::VR::SQ {
            p += len as usize;
        }
    }
    Ok(if b.len() < limit {
        Scan::NeedMore
    } else {
        Scan::Complete
    })
}
