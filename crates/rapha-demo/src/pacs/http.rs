//! The demo PACS's HTTP/1.1: one request read from a connection within fixed bounds (line,
//! header and body sizes; no chunked bodies), and one response written.
//!
//! Why this is not hyper/axum (which the node's API uses): the demo PACS's tests and its fuzz
//! target (`fuzz/fuzz_targets/pacs_request.rs`, driven on stable by `tests/pacs.rs`) pin one
//! answer to every malformed request, `400 Bad Request` and the connection closed, and they
//! drive the server synchronously from bytes (`fuzz_requests`). hyper answers some of the same
//! requests otherwise (an oversized header section is `431`, a chunked body is read, not
//! refused), and an axum server can only be driven through a runtime and a socket. The
//! percent-decoding is already the shared one (`rapha_core::percent`, a bad escape is a `400`).
//! This can go when the demo PACS moves onto the node's axum stack and those tests are re-pinned
//! to hyper's answers (the routing in `mod.rs` is transport-free and would move as is).

use std::io::{BufRead, Read, Write};

use anyhow::Result;
use rapha_core::percent::{self, PercentError};

/// Longest request line or header line accepted (bytes, with the line end).
pub const MAX_LINE: usize = 16 << 10;
/// Most header lines accepted in one request.
pub const MAX_HEADERS: usize = 100;
/// Largest request body accepted (the DICOMweb client sends none; it is read and dropped).
pub const MAX_BODY: usize = 1 << 20;

/// Why a request could not be parsed: answered `400 Bad Request` (the message says why) and
/// the connection closed, since the stream cannot be resynchronised.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed in the middle of a request")]
    Truncated,
    #[error("a request or header line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    #[error("the request line is not `METHOD TARGET HTTP/1.x` in ASCII")]
    BadRequestLine,
    #[error("a header line has no colon or is not ASCII")]
    BadHeader,
    #[error("Content-Length is not a decimal number")]
    BadContentLength,
    #[error("the request body is over {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("Transfer-Encoding is not supported; send Content-Length")]
    TransferEncoding,
    #[error("the request target is not valid percent-encoding: {0}")]
    BadPercentEncoding(#[from] PercentError),
}

impl RequestError {
    /// True when the peer is gone or the socket failed: nothing can be answered.
    pub(super) fn is_io(&self) -> bool {
        matches!(self, Self::Io(_) | Self::Truncated)
    }
}

/// One parsed request: method, percent-decoded path and query pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
}

/// Reads one line of at most [`MAX_LINE`] bytes, without its line end. `Ok(None)` at a clean
/// end of stream before any byte.
fn read_line(r: &mut impl BufRead) -> Result<Option<String>, RequestError> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n > MAX_LINE {
            RequestError::LineTooLong
        } else {
            RequestError::Truncated
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .ok()
        .filter(|l| l.is_ascii())
        .map(Some)
        .ok_or(RequestError::BadRequestLine)
}

/// Parses one HTTP/1.1 request from `r`; `Ok(None)` when the peer closed the connection
/// between requests. Never panics and never allocates more than [`MAX_LINE`] per line or
/// [`MAX_BODY`] for a body, whatever the bytes.
///
/// # Errors
/// [`RequestError`]: the request is malformed or over a limit, or the socket failed.
pub fn read_request(r: &mut impl BufRead) -> Result<Option<Request>, RequestError> {
    let Some(line) = read_line(r)? else {
        return Ok(None);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::BadRequestLine);
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || !version.starts_with("HTTP/1.")
    {
        return Err(RequestError::BadRequestLine);
    }
    let mut content_length = 0usize;
    let mut headers = 0usize;
    loop {
        let h = match read_line(r) {
            Ok(Some(h)) => h,
            Ok(None) => return Err(RequestError::Truncated),
            Err(RequestError::BadRequestLine) => return Err(RequestError::BadHeader),
            Err(e) => return Err(e),
        };
        if h.is_empty() {
            break;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(RequestError::TooManyHeaders);
        }
        let (k, v) = h.split_once(':').ok_or(RequestError::BadHeader)?;
        if k.eq_ignore_ascii_case("content-length") {
            let v = v.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(RequestError::BadContentLength);
            }
            content_length = v.parse().map_err(|_| RequestError::BodyTooLarge)?;
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            return Err(RequestError::TransferEncoding);
        }
    }
    if content_length > MAX_BODY {
        return Err(RequestError::BodyTooLarge);
    }
    if content_length > 0 {
        let got = std::io::copy(
            &mut r.by_ref().take(content_length as u64),
            &mut std::io::sink(),
        )?;
        if got != content_length as u64 {
            return Err(RequestError::Truncated);
        }
    }
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Ok((percent::decode(k)?, percent::decode(v)?))
        })
        .collect::<Result<_, PercentError>>()?;
    Ok(Some(Request {
        method: method.to_owned(),
        path: percent::decode(path)?,
        query,
    }))
}

/// Writes one response with a single write of header and body.
pub(super) fn write_response(
    w: &mut impl Write,
    status: &str,
    ctype: &str,
    body: &[u8],
) -> Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()?;
    Ok(())
}
