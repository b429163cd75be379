//! A structural pre-check of Part 10 bytes before dicom-rs parses them.
//!
//! dicom-rs 0.10 trusts what a file says about itself: a 674-byte file with a bad length makes
//! it allocate gigabytes before failing, a ~720 KB file of nested sequences recurses until the
//! stack overflows (an abort no `catch_unwind` can stop), and a deflated data set is inflated
//! without limit. So before dicom-rs sees a byte:
//!
//! 1. [`prepare`] inflates a deflated data set (transfer syntax 1.2.840.10008.1.2.1.99) with a
//!    size cap and hands on the inflated bytes as explicit VR little endian, so the checks
//!    below see every length;
//! 2. the scan walks every element header (file meta group, data set in its transfer syntax,
//!    sequences and items at any depth, encapsulated fragments) the way dicom-rs will, and
//!    refuses any length that runs past the end of the bytes, sequences nested deeper than
//!    [`Limits::max_depth`] and more than [`Limits::max_elements`] headers in all.
//!
//! The parser then only ever sees lengths the input backs, a bounded depth and a bounded
//! number of nodes: memory and time are linear in the input. The scan itself allocates only
//! its stack of open sequences and items, which the depth limit bounds.

use std::borrow::Cow;
use std::io::Read;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_dictionary_std::StandardDataDictionary;

const UNDEFINED: u32 = 0xFFFF_FFFF;
/// The deflated transfer syntax.
pub const DEFLATED_TS: &str = "1.2.840.10008.1.2.1.99";
/// What a deflated data set is once inflated.
const EXPLICIT_LE_TS: &str = "1.2.840.10008.1.2.1";

/// Deepest sequence nesting accepted, in a Part 10 header and in DICOM JSON alike (real IODs
/// outside structured reports stay under 8; SR is excluded as an at-risk class anyway).
pub const MAX_DEPTH: usize = 16;
/// Most element, item and fragment headers accepted in one object (a 3000-frame enhanced
/// multi-frame has about 10^5).
pub const MAX_ELEMENTS: usize = 1 << 18;
/// Largest data set a deflated object may inflate to.
pub const MAX_INFLATED_BYTES: usize = 256 << 20;

/// Bounds on what one object may make the parser do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Sequences nested at most this deep.
    pub max_depth: usize,
    /// Element, item and fragment headers in all.
    pub max_elements: usize,
    /// A deflated data set inflates to at most this many bytes.
    pub max_inflated_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: MAX_DEPTH,
            max_elements: MAX_ELEMENTS,
            max_inflated_bytes: MAX_INFLATED_BYTES,
        }
    }
}

/// Why bytes were refused before parsing. Messages name the limit, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StructureError {
    /// Sequences nested deeper than the limit.
    #[error("sequences nested deeper than {limit} levels (refused before parsing)")]
    TooDeep { limit: usize },
    /// More headers than the limit.
    #[error("more than {limit} elements, items and fragments (refused before parsing)")]
    TooManyElements { limit: usize },
    /// The deflated data set inflates past the cap.
    #[error("the deflated data set inflates past {limit} bytes (refused)")]
    InflatedTooLarge { limit: usize },
    /// The deflated data set is not a DEFLATE stream.
    #[error("the deflated data set is not a valid DEFLATE stream")]
    BadDeflate,
    /// A length that does not fit, a truncated header, a missing prefix.
    #[error("{0}")]
    Malformed(String),
}

impl From<&str> for StructureError {
    fn from(s: &str) -> Self {
        Self::Malformed(s.to_owned())
    }
}

impl From<String> for StructureError {
    fn from(s: String) -> Self {
        Self::Malformed(s)
    }
}

type Result<T, E = StructureError> = std::result::Result<T, E>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    ExplicitLe,
    ImplicitLe,
    ExplicitBe,
}

/// What an open level of the data set is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A sequence of data set items (counts toward the depth).
    Sequence,
    /// One item of a sequence: a data set.
    Item,
    /// Encapsulated pixel data: items are fragments, skipped by length.
    Fragments,
}

#[derive(Clone, Copy)]
struct Level {
    kind: Kind,
    /// Where a defined-length sequence or item ends (offset in the scanned bytes).
    end: Option<usize>,
}

/// Checks that every element length in `bytes` (a Part 10 file with or without preamble, not
/// deflated: see [`prepare`]) fits in the input, and the nesting and header count are within
/// `limits`.
///
/// # Errors
/// [`StructureError`] for the first thing that does not fit.
pub fn check(bytes: &[u8], limits: &Limits) -> Result<()> {
    match scan_file(bytes, bytes.len(), false, limits)? {
        Scan::Complete | Scan::PixelDataAt(_) => Ok(()),
        // Unreachable when the prefix is the whole input; kept total for safety.
        Scan::NeedMore => Err("truncated file".into()),
    }
}

/// [`check`] with the default [`Limits`], for callers that want a message.
///
/// # Errors
/// A short description of the first thing that does not fit.
pub fn check_lengths(bytes: &[u8]) -> Result<(), String> {
    check(bytes, &Limits::default()).map_err(|e| e.to_string())
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
/// reading the pixels. A deflated file needs all its bytes: it answers
/// [`Scan::NeedMore`] until the prefix is the whole file, then [`Scan::Complete`] (inflate it
/// with [`prepare`] and scan the result).
///
/// # Errors
/// As [`check`].
pub fn scan_header(prefix: &[u8], total: usize, limits: &Limits) -> Result<Scan> {
    scan_file(prefix, total, true, limits)
}

/// The transfer syntax of a Part 10 file's meta group, if the group can be read.
pub fn transfer_syntax(bytes: &[u8]) -> Option<String> {
    meta_group(bytes).ok().map(|m| m.ts)
}

/// The bytes to check and parse: `bytes` itself, or for a deflated data set a copy whose data
/// set is inflated (at most `limits.max_inflated_bytes`) and whose meta group names explicit
/// VR little endian, which is what a deflated data set is once inflated.
///
/// # Errors
/// [`StructureError::InflatedTooLarge`], [`StructureError::BadDeflate`], or a malformed meta
/// group.
pub fn prepare<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Cow<'a, [u8]>> {
    let meta = meta_group(bytes)?;
    if meta.ts != DEFLATED_TS {
        return Ok(Cow::Borrowed(bytes));
    }
    let inflated = inflate(&bytes[meta.end..], limits.max_inflated_bytes)?;
    let mut out = Vec::with_capacity(meta.start + meta.end - meta.start + inflated.len());
    out.extend_from_slice(&bytes[..meta.start]);
    out.extend_from_slice(&rewrite_meta(&bytes[meta.start..meta.end], EXPLICIT_LE_TS)?);
    out.extend_from_slice(&inflated);
    Ok(Cow::Owned(out))
}

/// Inflates a raw DEFLATE stream into at most `cap` bytes. The buffer grows by doubling but
/// never past the cap, so memory stays within it (plus one 64 KiB chunk).
fn inflate(compressed: &[u8], cap: usize) -> Result<Vec<u8>> {
    let mut z = flate2::read::DeflateDecoder::new(compressed);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = z.read(&mut chunk).map_err(|_| StructureError::BadDeflate)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > cap {
            return Err(StructureError::InflatedTooLarge { limit: cap });
        }
        if out.capacity() < out.len() + n {
            let want = (out.capacity() * 2).max(out.len() + n).min(cap);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Where a file's meta group is and what transfer syntax it names.
struct Meta {
    /// Offset of the first meta element (after `DICM`).
    start: usize,
    /// Offset just past the meta group.
    end: usize,
    ts: String,
}

fn meta_group(bytes: &[u8]) -> Result<Meta> {
    let start = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        132
    } else if bytes.starts_with(b"DICM") {
        4
    } else {
        return Err("no DICM prefix".into());
    };
    let body = &bytes[start..];
    match parse_meta(body, body.len())? {
        Some((end, ts)) => Ok(Meta {
            start,
            end: start + end,
            ts,
        }),
        None => Err("file ends inside its meta group".into()),
    }
}

/// The file meta group at the start of `body` (a prefix of `limit` bytes), read the way
/// dicom-rs reads it: (0002,0000) first, then elements until the group length is used up,
/// whatever their group. `None` when the prefix ends inside the group.
fn parse_meta(body: &[u8], limit: usize) -> Result<Option<(usize, String)>> {
    if body.len() < 12 {
        return if body.len() < limit {
            Ok(None)
        } else {
            Err("file ends inside its meta group".into())
        };
    }
    let (glen, hdr) = explicit_len(body, 0, Mode::ExplicitLe)?;
    if body[..4] != [0x02, 0x00, 0x00, 0x00] || glen != 4 || hdr != 8 {
        return Err("the file meta group does not start with its group length".into());
    }
    let group_len = u32_at(body, 8, Mode::ExplicitLe).ok_or("truncated meta group length")?;
    let mut pos = 12usize;
    let mut used = 0u64;
    let mut ts = String::new();
    while used < u64::from(group_len) {
        if pos + 8 > body.len() {
            return if body.len() < limit {
                Ok(None)
            } else {
                Err("file ends inside its meta group".into())
            };
        }
        let group = u16::from_le_bytes([body[pos], body[pos + 1]]);
        let elem = u16::from_le_bytes([body[pos + 2], body[pos + 3]]);
        let (len, hdr) = if group == 0xFFFE {
            // dicom-rs reads these without a VR.
            (
                u32_at(body, pos + 4, Mode::ExplicitLe).ok_or("truncated meta element")?,
                8,
            )
        } else {
            explicit_len(body, pos, Mode::ExplicitLe)?
        };
        if len == UNDEFINED {
            return Err("undefined length in the file meta group".into());
        }
        let from = pos + hdr;
        let end = from
            .checked_add(len as usize)
            .filter(|e| *e <= limit)
            .ok_or("file meta element runs past the end")?;
        if end > body.len() {
            return Ok(None);
        }
        if Tag(group, elem) == tags::TRANSFER_SYNTAX_UID {
            ts = String::from_utf8_lossy(&body[from..end])
                .trim_matches(['\0', ' '])
                .to_owned();
        }
        used += (hdr + len as usize) as u64;
        pos = end;
    }
    Ok(Some((pos, ts)))
}

/// The meta group with its TransferSyntaxUID replaced by `ts` and its group length fixed.
fn rewrite_meta(meta: &[u8], ts: &str) -> Result<Vec<u8>> {
    let mut elems: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut pos = 0;
    while pos + 8 <= meta.len() {
        let elem = u16::from_le_bytes([meta[pos + 2], meta[pos + 3]]);
        let (len, hdr) = explicit_len(meta, pos, Mode::ExplicitLe)?;
        let end = pos + hdr + len as usize;
        if end > meta.len() {
            return Err("file meta element runs past the end".into());
        }
        elems.push((elem, meta[pos..end].to_vec()));
        pos = end;
    }
    let mut value = ts.as_bytes().to_vec();
    if value.len() % 2 == 1 {
        value.push(0);
    }
    let mut body = Vec::new();
    for (elem, raw) in &elems {
        match elem {
            0x0000 => {}
            0x0010 => {
                body.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
                // A transfer syntax UID is at most 64 bytes.
                body.extend_from_slice(&(value.len() as u16).to_le_bytes());
                body.extend_from_slice(&value);
            }
            _ => body.extend_from_slice(raw),
        }
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    if elems.iter().any(|(e, _)| *e == 0x0000) {
        let len = u32::try_from(body.len()).map_err(|_| "file meta group too large")?;
        out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(&body);
    Ok(out)
}

fn scan_file(bytes: &[u8], total: usize, stop_at_pixels: bool, limits: &Limits) -> Result<Scan> {
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
    let Some((pos, ts)) = parse_meta(body, limit)? else {
        return Ok(Scan::NeedMore);
    };
    if pos + 8 > body.len() && body.len() < limit {
        return Ok(Scan::NeedMore);
    }
    let mode = match ts.as_str() {
        "1.2.840.10008.1.2" => Mode::ImplicitLe,
        "1.2.840.10008.1.2.2" => Mode::ExplicitBe,
        // Compressed: nothing inside can be checked until it is inflated ([`prepare`]). A
        // caller that parses without preparing gets a refusal, never an unchecked parse.
        DEFLATED_TS => {
            // Stored DEFLATE blocks add 5 bytes per 64 KiB: a stream this much larger than
            // the cap cannot inflate to less than it, so it is not even read in.
            let cap = limits.max_inflated_bytes;
            if limit > cap.saturating_add(cap / 256).saturating_add(4096) {
                return Err(StructureError::InflatedTooLarge { limit: cap });
            }
            return if body.len() < limit {
                Ok(Scan::NeedMore)
            } else if stop_at_pixels {
                Ok(Scan::Complete)
            } else {
                Err("a deflated data set must be inflated (with a cap) before it is checked".into())
            };
        }
        _ => Mode::ExplicitLe,
    };
    let offset = skip + pos;
    Ok(
        match scan(&body[pos..], mode, limit - pos, stop_at_pixels, limits)? {
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

/// Length and header size of an explicit-VR element at `p`. As dicom-rs reads it: the VRs of
/// PS3.5 table 7.1-2 have a 2-byte length; every other VR, and bytes that are no VR at all
/// (read as UN), a 2-byte reserved field and a 4-byte length.
fn explicit_len(b: &[u8], p: usize, mode: Mode) -> Result<(u32, usize)> {
    let vr = b.get(p + 4..p + 6).ok_or("truncated element header")?;
    if matches!(
        vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    ) {
        Ok((
            u32::from(u16_at(b, p + 6, mode).ok_or("truncated element header")?),
            8,
        ))
    } else {
        Ok((
            u32_at(b, p + 8, mode).ok_or("truncated element header")?,
            12,
        ))
    }
}

/// The data set walk. It opens a level wherever dicom-rs 0.10's data set reader opens one, so
/// the depth counted here is the depth its object builder will recurse to: an SQ element, or
/// any other element of undefined length except PixelData (which is encapsulated pixel data,
/// read as fragments, without recursion), opens a sequence; an item opens a data set.
fn scan(b: &[u8], mode: Mode, limit: usize, stop_at_pixels: bool, lim: &Limits) -> Result<Scan> {
    let mut stack: Vec<Level> = Vec::new();
    let mut depth = 0usize;
    let mut headers = 0usize;
    let mut p = 0usize;
    loop {
        // Close defined-length items and sequences that end here.
        while let Some(top) = stack.last() {
            match top.end {
                Some(e) if e == p => {
                    if top.kind == Kind::Sequence {
                        depth -= 1;
                    }
                    stack.pop();
                }
                Some(e) if e < p => {
                    return Err("an element runs past the end of its sequence or item".into());
                }
                _ => break,
            }
        }
        if p + 8 > b.len() {
            break;
        }
        headers += 1;
        if headers > lim.max_elements {
            return Err(StructureError::TooManyElements {
                limit: lim.max_elements,
            });
        }
        let top = stack.last().map(|l| l.kind);
        let m = if top == Some(Kind::Fragments) {
            Mode::ExplicitLe
        } else {
            mode
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
                // Sequence delimiter: closes the innermost open sequence (and its open item).
                0xE0DD => {
                    while let Some(l) = stack.pop() {
                        match l.kind {
                            Kind::Sequence => {
                                depth -= 1;
                                break;
                            }
                            Kind::Fragments => break,
                            Kind::Item => {}
                        }
                    }
                }
                // Item delimiter: closes the innermost open item.
                0xE00D => {
                    if top == Some(Kind::Item) {
                        stack.pop();
                    }
                }
                _ if top == Some(Kind::Fragments) => {
                    p = p
                        .checked_add(len as usize)
                        .filter(|e| *e <= limit)
                        .ok_or("pixel fragment runs past the end")?;
                }
                _ => {
                    let end = if len == UNDEFINED {
                        None
                    } else if len as usize > limit - p {
                        return Err("item length runs past the end".into());
                    } else {
                        Some(p + len as usize)
                    };
                    stack.push(Level {
                        kind: Kind::Item,
                        end,
                    });
                }
            }
            continue;
        }
        if b.len() < p + 12 && b.len() < limit {
            return Ok(Scan::NeedMore);
        }
        let (len, hdr, vr) = if m == Mode::ImplicitLe {
            let len = u32_at(b, p + 4, m).ok_or("truncated element header")?;
            let tag = Tag(group, elem);
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
        let pixel_data = Tag(group, elem) == tags::PIXEL_DATA;
        let top_pixels = stack.is_empty() && pixel_data;
        if len == UNDEFINED {
            if top_pixels && stop_at_pixels {
                return Ok(Scan::PixelDataAt(p));
            }
            if pixel_data && vr != dicom_core::VR::SQ {
                stack.push(Level {
                    kind: Kind::Fragments,
                    end: None,
                });
                continue;
            }
            // An undefined-length UN is a sequence encoded implicit VR little endian, which
            // dicom-rs 0.10 reads in the outer encoding and then trusts garbage lengths:
            // refused rather than handed to it.
            if vr == dicom_core::VR::UN && m != Mode::ImplicitLe {
                return Err(format!(
                    "undefined-length UN element ({group:04X},{elem:04X}) is not supported"
                )
                .into());
            }
            open_sequence(&mut stack, &mut depth, None, lim)?;
            continue;
        }
        if len as usize > limit - p {
            return Err(
                format!("element ({group:04X},{elem:04X}) length {len} runs past the end").into(),
            );
        }
        if top_pixels && stop_at_pixels {
            return Ok(Scan::PixelDataAt(p));
        }
        if vr == dicom_core::VR::SQ {
            open_sequence(&mut stack, &mut depth, Some(p + len as usize), lim)?;
        } else {
            p += len as usize;
        }
    }
    Ok(if b.len() < limit {
        Scan::NeedMore
    } else {
        Scan::Complete
    })
}

fn open_sequence(
    stack: &mut Vec<Level>,
    depth: &mut usize,
    end: Option<usize>,
    lim: &Limits,
) -> Result<()> {
    *depth += 1;
    if *depth > lim.max_depth {
        return Err(StructureError::TooDeep {
            limit: lim.max_depth,
        });
    }
    stack.push(Level {
        kind: Kind::Sequence,
        end,
    });
    Ok(())
}
