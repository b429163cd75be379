//! The request the parent writes to the worker's stdin before the frame: 24 bytes, little
//! endian. Parsed by the worker before it reads the frame; every field is checked.
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `RDW1` |
//! | 4 | codec ([`Codec`]) |
//! | 5 | bytes per output sample (1 or 2) |
//! | 6..8 | samples per pixel (1 or 3) |
//! | 8..12 | rows |
//! | 12..16 | columns |
//! | 16..20 | frame length in bytes (at most [`MAX_INPUT_BYTES`]) |
//! | 20..24 | zero; in a job's session ([`crate::Session`]), the request's sequence number |
//!
//! In a session the worker answers each request with an [`Answer`] header (16 bytes: magic
//! `RDA1`, the request's sequence number, the status, the length of what follows), then exactly
//! that many bytes: the samples, or the decoder's refusal.

/// Length of the encoded request.
pub const REQUEST_LEN: usize = 24;

/// Largest decoded frame a worker produces (bytes): the trainer protocol's largest payload.
pub const MAX_OUTPUT_BYTES: usize = 512 << 20;

/// Largest compressed frame a worker reads (bytes). A lossless frame can be a little larger
/// than its samples, never by this much.
pub const MAX_INPUT_BYTES: usize = MAX_OUTPUT_BYTES + (64 << 20);

/// Most tiles a JPEG 2000 or HTJ2K frame may have (the worker's HTJ2K decoder and the node's
/// in-process JPEG 2000 decoder both refuse more). Decoders keep coding parameters per tile
/// (kilobytes each, whatever the tile's size); a real frame has one tile or a few hundred.
pub const MAX_J2K_TILES: u64 = 4096;

const MAGIC: [u8; 4] = *b"RDW1";

/// Which decoder the worker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// JPEG-LS lossless and near-lossless (`.4.80`, `.4.81`), CharLS.
    JpegLs,
    /// JPEG extended, 12-bit precision (`.4.51`), IJG 6b built for 12-bit samples.
    Jpeg12,
    /// HTJ2K (`.4.201`–`.4.203`), a bare codestream, OpenJPH.
    Htj2k,
    /// An attack the worker carries out on itself, for the tests (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    Hook(Hook),
}

/// What a test asks a worker to try once it is sandboxed.
#[cfg(feature = "test-hooks")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Open a file for reading.
    OpenFile,
    /// Create a network socket.
    Socket,
    /// Spin forever without a system call.
    Spin,
    /// Write more output than the request implies.
    Overflow,
    /// Write half the output and exit successfully.
    Short,
    /// Reserve 2 GiB (far past the address-space limit of a small frame).
    Allocate,
    /// In a session, answer with the next request's sequence number.
    OtherSequence,
}

impl Codec {
    fn code(self) -> u8 {
        match self {
            Self::JpegLs => 1,
            Self::Jpeg12 => 2,
            Self::Htj2k => 3,
            #[cfg(feature = "test-hooks")]
            Self::Hook(h) => 0xF0 + h as u8,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Self::JpegLs),
            2 => Some(Self::Jpeg12),
            3 => Some(Self::Htj2k),
            #[cfg(feature = "test-hooks")]
            0xF0 => Some(Self::Hook(Hook::OpenFile)),
            #[cfg(feature = "test-hooks")]
            0xF1 => Some(Self::Hook(Hook::Socket)),
            #[cfg(feature = "test-hooks")]
            0xF2 => Some(Self::Hook(Hook::Spin)),
            #[cfg(feature = "test-hooks")]
            0xF3 => Some(Self::Hook(Hook::Overflow)),
            #[cfg(feature = "test-hooks")]
            0xF4 => Some(Self::Hook(Hook::Short)),
            #[cfg(feature = "test-hooks")]
            0xF5 => Some(Self::Hook(Hook::Allocate)),
            #[cfg(feature = "test-hooks")]
            0xF6 => Some(Self::Hook(Hook::OtherSequence)),
            _ => None,
        }
    }
}

/// Why a request is refused (by the parent before it starts a worker, or by the worker).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("decode request is not {REQUEST_LEN} bytes beginning RDW1")]
    Framing,
    #[error("decode request names unknown codec {0}")]
    Codec(u8),
    #[error("decode request has an unsupported layout: {0}")]
    Layout(String),
    #[error("frame of {bytes} bytes is longer than the {MAX_INPUT_BYTES} accepted")]
    InputTooLong { bytes: usize },
    #[error("decoded frame would take {bytes} bytes, more than the {MAX_OUTPUT_BYTES} accepted")]
    OutputTooLarge { bytes: u128 },
}

/// One frame to decode: the image the DICOM header describes and the frame's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    codec: Codec,
    rows: u32,
    columns: u32,
    samples: u16,
    bytes_per_sample: u8,
    input_len: u32,
}

impl Request {
    /// A checked request: 1 or 3 samples, 1 or 2 bytes each (2 for 12-bit JPEG), a non-empty
    /// image of at most [`MAX_OUTPUT_BYTES`], a frame of at most [`MAX_INPUT_BYTES`].
    ///
    /// # Errors
    /// [`RequestError`] naming the field refused.
    pub fn new(
        codec: Codec,
        (rows, columns, samples): (u32, u32, u16),
        bytes_per_sample: u8,
        input_len: usize,
    ) -> Result<Self, RequestError> {
        if !matches!(samples, 1 | 3) || !matches!(bytes_per_sample, 1 | 2) {
            return Err(RequestError::Layout(format!(
                "{samples} samples per pixel of {bytes_per_sample} bytes"
            )));
        }
        if codec == Codec::Jpeg12 && bytes_per_sample != 2 {
            return Err(RequestError::Layout(
                "12-bit JPEG samples need 2 bytes".into(),
            ));
        }
        if rows == 0 || columns == 0 {
            return Err(RequestError::Layout("no rows or columns".into()));
        }
        let bytes = u128::from(rows)
            * u128::from(columns)
            * u128::from(samples)
            * u128::from(bytes_per_sample);
        if bytes > MAX_OUTPUT_BYTES as u128 {
            return Err(RequestError::OutputTooLarge { bytes });
        }
        let input = u32::try_from(input_len)
            .ok()
            .filter(|_| input_len <= MAX_INPUT_BYTES)
            .ok_or(RequestError::InputTooLong { bytes: input_len })?;
        Ok(Self {
            codec,
            rows,
            columns,
            samples,
            bytes_per_sample,
            input_len: input,
        })
    }

    /// The decoder asked for.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// `(rows, columns, samples per pixel)`.
    pub fn geometry(&self) -> (u32, u32, u16) {
        (self.rows, self.columns, self.samples)
    }

    /// Bytes per output sample.
    pub fn bytes_per_sample(&self) -> u8 {
        self.bytes_per_sample
    }

    /// Length of the frame that follows the request.
    pub fn input_len(&self) -> usize {
        self.input_len as usize
    }

    /// Exactly how many bytes a successful worker writes (at most [`MAX_OUTPUT_BYTES`], checked
    /// when the request was made).
    pub fn output_len(&self) -> usize {
        self.rows as usize
            * self.columns as usize
            * usize::from(self.samples)
            * usize::from(self.bytes_per_sample)
    }

    /// The request's wire form.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = self.codec.code();
        b[5] = self.bytes_per_sample;
        b[6..8].copy_from_slice(&self.samples.to_le_bytes());
        b[8..12].copy_from_slice(&self.rows.to_le_bytes());
        b[12..16].copy_from_slice(&self.columns.to_le_bytes());
        b[16..20].copy_from_slice(&self.input_len.to_le_bytes());
        b
    }

    /// The wire form of the request numbered `sequence` in a session.
    pub fn encode_numbered(&self, sequence: u32) -> [u8; REQUEST_LEN] {
        let mut b = self.encode();
        b[20..24].copy_from_slice(&sequence.to_le_bytes());
        b
    }

    /// Parses and checks a wire form, as [`Request::new`] would.
    ///
    /// # Errors
    /// [`RequestError`].
    pub fn decode(b: &[u8]) -> Result<Self, RequestError> {
        match Self::decode_numbered(b)? {
            (r, 0) => Ok(r),
            _ => Err(RequestError::Framing),
        }
    }

    /// Parses and checks a session's wire form: the request and its sequence number.
    ///
    /// # Errors
    /// [`RequestError`].
    pub fn decode_numbered(b: &[u8]) -> Result<(Self, u32), RequestError> {
        if b.len() != REQUEST_LEN || b[..4] != MAGIC {
            return Err(RequestError::Framing);
        }
        let sequence = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
        let codec = Codec::from_code(b[4]).ok_or(RequestError::Codec(b[4]))?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let request = Self::new(
            codec,
            (u32_at(8), u32_at(12), u16::from_le_bytes([b[6], b[7]])),
            b[5],
            u32_at(16) as usize,
        )?;
        Ok((request, sequence))
    }
}

/// Length of an encoded [`Answer`].
pub const ANSWER_LEN: usize = 16;

const ANSWER_MAGIC: [u8; 4] = *b"RDA1";

/// The header of a session worker's answer to one request (the parent checks every field
/// against the request it sent before it reads what follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The sequence number of the request answered.
    pub sequence: u32,
    /// Whether the decoder refused the frame (what follows is its message), else the samples
    /// follow.
    pub refused: bool,
    /// Bytes that follow.
    pub len: u32,
}

impl Answer {
    /// The answer's wire form.
    pub fn encode(&self) -> [u8; ANSWER_LEN] {
        let mut b = [0u8; ANSWER_LEN];
        b[..4].copy_from_slice(&ANSWER_MAGIC);
        b[4..8].copy_from_slice(&self.sequence.to_le_bytes());
        b[8..12].copy_from_slice(&u32::from(self.refused).to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Parses a wire form; `None` when it is not one.
    pub fn decode(b: &[u8; ANSWER_LEN]) -> Option<Self> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if b[..4] != ANSWER_MAGIC || u32_at(8) > 1 {
            return None;
        }
        Some(Self {
            sequence: u32_at(4),
            refused: u32_at(8) == 1,
            len: u32_at(12),
        })
    }
}
