//! Streaming reader for the first part of a `multipart/related` body (RFC 2046 framing), as
//! WADO-RS sends an instance. The part body is handed out as it arrives; only a window the size
//! of the boundary is held back, so memory stays flat whatever the instance size.

use std::io::{self, Read};

/// Longest part header block accepted.
const MAX_HEADER_BYTES: usize = 16 * 1024;
const CHUNK: usize = 64 * 1024;

/// Extracts the boundary of a `multipart/related` Content-Type, checking that its `type`
/// parameter (if present) is `application/dicom`.
///
/// # Errors
/// A message saying what is wrong with the header.
pub fn boundary_of(content_type: &str) -> Result<String, String> {
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/related") {
        return Err(format!(
            "Content-Type is {media:?}, expected multipart/related"
        ));
    }
    let mut boundary = None;
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_lowercase().as_str() {
            "boundary" => boundary = Some(v.to_owned()),
            "type" if !v.eq_ignore_ascii_case("application/dicom") => {
                return Err(format!(
                    "multipart type is {v:?}, expected application/dicom"
                ));
            }
            _ => {}
        }
    }
    match boundary {
        Some(b) if !b.is_empty() && b.len() <= 70 => Ok(b),
        _ => Err("multipart/related without a valid boundary".into()),
    }
}

/// Reads the body of the first part of a multipart stream.
pub struct FirstPart<R> {
    inner: R,
    delimiter: Vec<u8>,
    buf: Vec<u8>,
    start: usize,
    /// `buf[..clear]` is known to hold no delimiter start: bytes up to here go out without
    /// being searched again (a read into a small buffer would otherwise rescan the rest).
    clear: usize,
    chunk: Box<[u8]>,
    state: State,
}

#[derive(PartialEq, Eq)]
enum State {
    Preamble,
    Body,
    Done,
}

impl<R: Read> FirstPart<R> {
    /// Wraps the response body.
    pub fn new(inner: R, boundary: &str) -> Self {
        Self {
            inner,
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            buf: Vec::new(),
            start: 0,
            clear: 0,
            chunk: vec![0; CHUNK].into_boxed_slice(),
            state: State::Preamble,
        }
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.clear = self.clear.saturating_sub(self.start);
            self.start = 0;
        }
        // Read into the scratch chunk (zeroed once) and append what came: a short read does
        // not cost zeroing a whole chunk of the buffer.
        let n = self.inner.read(&mut self.chunk[..])?;
        self.buf.extend_from_slice(&self.chunk[..n]);
        Ok(n)
    }

    /// Skips the preamble and the first part's headers, checking its Content-Type.
    fn open_part(&mut self) -> io::Result<()> {
        // The first boundary may start the body without the leading CRLF.
        let first = self.delimiter[2..].to_vec();
        let first = first.as_slice();
        loop {
            let hay = &self.buf[self.start..];
            if let Some(pos) = find(hay, first) {
                let after = self.start + pos + first.len();
                // Headers end at an empty line.
                if let Some(end) = find(&self.buf[after..], b"\r\n\r\n") {
                    let headers =
                        String::from_utf8_lossy(&self.buf[after..after + end]).to_string();
                    for line in headers.lines() {
                        if let Some((k, v)) = line.split_once(':') {
                            if k.trim().eq_ignore_ascii_case("content-type") {
                                let v = v.trim();
                                let media = v.split(';').next().unwrap_or("").trim();
                                if !media.eq_ignore_ascii_case("application/dicom") {
                                    return Err(bad(format!("part Content-Type is {media:?}, expected application/dicom")));
                                }
                            }
                        }
                    }
                    self.start = after + end + 4;
                    self.state = State::Body;
                    return Ok(());
                }
            }
            if self.buf.len() - self.start > MAX_HEADER_BYTES {
                return Err(bad(
                    "no multipart boundary or part headers within the first 16 KiB".into(),
                ));
            }
            if self.fill()? == 0 {
                return Err(bad("response ended before the first part began".into()));
            }
        }
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The first position of `needle` in `hay`: candidates are found by the needle's first byte
/// and only those compared whole (a delimiter's first byte, CR, is rare in pixel data).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let last_start = hay.len().checked_sub(needle.len())?;
    let mut from = 0;
    while from <= last_start {
        let pos = from + hay[from..=last_start].iter().position(|&b| b == first)?;
        if hay[pos..pos + needle.len()] == *needle {
            return Some(pos);
        }
        from = pos + 1;
    }
    None
}

impl<R: Read> Read for FirstPart<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.state == State::Preamble {
            self.open_part()?;
        }
        loop {
            if self.state == State::Done || out.is_empty() {
                return Ok(0);
            }
            if self.start < self.clear {
                let n = (self.clear - self.start).min(out.len());
                out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
                self.start += n;
                return Ok(n);
            }
            let avail = &self.buf[self.start..];
            if let Some(pos) = find(avail, &self.delimiter) {
                if pos == 0 {
                    self.state = State::Done;
                    return Ok(0);
                }
                let n = pos.min(out.len());
                out[..n].copy_from_slice(&avail[..n]);
                self.clear = self.start + pos;
                self.start += n;
                return Ok(n);
            }
            // Everything but a possible partial delimiter at the end can go out.
            let safe = avail.len().saturating_sub(self.delimiter.len() - 1);
            if safe > 0 {
                self.clear = self.start + safe;
                let n = safe.min(out.len());
                out[..n].copy_from_slice(&avail[..n]);
                self.start += n;
                return Ok(n);
            }
            if self.fill()? == 0 {
                return Err(bad(
                    "response ended inside the DICOM part (no closing boundary)".into(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A reader that hands out at most `step` bytes a call.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn body(part: &[u8]) -> Vec<u8> {
        let mut b = b"preamble\r\n--XYZ\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
        b.extend_from_slice(part);
        b.extend_from_slice(b"\r\n--XYZ--\r\n");
        b
    }

    #[test]
    fn the_first_part_is_read_whole_whatever_the_read_sizes() {
        // Part bytes full of CRs, CRLFs and delimiter prefixes that are not the delimiter.
        let mut part = Vec::new();
        for i in 0..12_000u32 {
            match i % 5 {
                0 => part.extend_from_slice(b"\r\n--XY"),
                1 => part.push(b'\r'),
                2 => part.extend_from_slice(b"\r\n-"),
                _ => part.push((i % 251) as u8),
            }
        }
        let whole = body(&part);
        for step in [1, 3, 7, 64, 4096, 1 << 20] {
            for out_len in [1, 5, 100, 8192] {
                let mut r = FirstPart::new(
                    Trickle {
                        bytes: &whole,
                        step,
                    },
                    "XYZ",
                );
                let mut got = Vec::new();
                let mut buf = vec![0; out_len];
                loop {
                    let n = r.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                assert!(got == part, "step {step}, reads of {out_len}");
            }
        }
    }

    #[test]
    fn a_part_without_its_closing_delimiter_is_an_error() {
        let mut whole = body(b"pixels");
        whole.truncate(whole.len() - 11);
        let mut r = FirstPart::new(
            Trickle {
                bytes: &whole,
                step: 2,
            },
            "XYZ",
        );
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn find_finds_the_first_whole_needle() {
        assert_eq!(find(b"ab\r\n-\r\n--B", b"\r\n--B"), Some(5));
        assert_eq!(find(b"\r\n--", b"\r\n--B"), None);
        assert_eq!(find(b"", b"x"), None);
        assert_eq!(find(b"abc", b""), None);
        assert_eq!(find(b"xxabc", b"abc"), Some(2));
    }
}
