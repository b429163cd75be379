//! Framing: a frame is `u32 LE header length`, a JSON header, then `header.payload` raw
//! bytes. Limits are checked before any allocation, so a hostile peer cannot make the reader
//! allocate more than the limit.

use std::io::{self, Read, Write};

use crate::{MAX_PAYLOAD, MAX_REQUEST_HEADER, MAX_RESPONSE_HEADER};

/// A framing violation: the connection is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("header of {0} bytes exceeds the limit of {1}")]
    HeaderTooLarge(usize, usize),
    #[error("payload of {0} bytes exceeds the limit of {1}")]
    PayloadTooLarge(usize, usize),
    #[error("the trainer had more than {0} requests in flight")]
    TooManyInFlight(usize),
    #[error(
        "the trainer passed file descriptors over the feed (closed, and the connection with them)"
    )]
    PassedDescriptors,
    #[error("header is not a JSON object: {0}")]
    BadHeader(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one frame's header bytes (no payload: requests never carry one).
///
/// # Errors
/// [`FrameError`] on EOF, a header over `max_header`, or I/O failure.
pub fn read_header(r: &mut impl Read, max_header: usize) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max_header {
        return Err(FrameError::HeaderTooLarge(len, max_header));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// The length (prefix and header) of the request frame at the front of `bytes`, once its
/// 4-byte length prefix has arrived.
///
/// # Errors
/// [`FrameError::HeaderTooLarge`] for a header over [`MAX_REQUEST_HEADER`].
pub fn request_frame_len(bytes: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = bytes.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*prefix) as usize;
    if len > MAX_REQUEST_HEADER {
        return Err(FrameError::HeaderTooLarge(len, MAX_REQUEST_HEADER));
    }
    Ok(Some(4 + len))
}

/// Complete request frames at the front of `bytes`, up to the first incomplete or oversized
/// one (how many requests a pipelining trainer has sent that the node holds).
pub fn complete_requests(bytes: &[u8]) -> usize {
    let mut count = 0;
    let mut rest = bytes;
    while let Ok(Some(n)) = request_frame_len(rest) {
        let Some(next) = rest.get(n..) else {
            break;
        };
        count += 1;
        rest = next;
    }
    count
}

/// Reads a full frame: header JSON value and payload (client side; used by tests and SDKs).
///
/// # Errors
/// [`FrameError`] on violations of the limits or malformed JSON.
pub fn read_frame(r: &mut impl Read) -> Result<(serde_json::Value, Vec<u8>), FrameError> {
    let header = read_header(r, MAX_RESPONSE_HEADER)?;
    let value: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| FrameError::BadHeader(e.to_string()))?;
    let n = value
        .get("payload")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0) as usize;
    if n > MAX_PAYLOAD {
        return Err(FrameError::PayloadTooLarge(n, MAX_PAYLOAD));
    }
    let mut payload = vec![0u8; n];
    r.read_exact(&mut payload)?;
    Ok((value, payload))
}

/// Writes one frame: length, header and payload in one vectored write where the socket takes
/// it (no copy of the payload into a buffer first).
///
/// # Errors
/// I/O failure, or a header over the response limit.
pub fn write_frame(w: &mut impl Write, header: &[u8], payload: &[u8]) -> Result<(), FrameError> {
    if header.len() > MAX_RESPONSE_HEADER {
        return Err(FrameError::HeaderTooLarge(
            header.len(),
            MAX_RESPONSE_HEADER,
        ));
    }
    let len = u32::try_from(header.len())
        .map_err(|_| FrameError::HeaderTooLarge(header.len(), MAX_RESPONSE_HEADER))?
        .to_le_bytes();
    let mut parts = [
        io::IoSlice::new(&len),
        io::IoSlice::new(header),
        io::IoSlice::new(payload),
    ];
    let mut rest: &mut [io::IoSlice<'_>] = &mut parts;
    io::IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        match w.write_vectored(rest) {
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    w.flush()?;
    Ok(())
}
