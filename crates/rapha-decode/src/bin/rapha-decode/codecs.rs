//! The calls into the C and C++ decoders (csrc/codecs.c, csrc/htj2k.cpp). Each one gets the frame, an output buffer of
//! exactly the image's size and the image the DICOM header describes, and reads the codec's own
//! header first: a stream that describes another image is refused before it is decoded.

use std::ffi::c_char;

#[allow(unsafe_code)] // the C decoders' entry point; its contract is stated at the call
mod ffi {
    extern "C" {
        /// Codec 1 JPEG-LS, 2 12-bit JPEG; 0 on success, else a message in `msg`.
        pub(super) fn rapha_decode_frame(
            codec: i32,
            src: *const u8,
            src_len: usize,
            dst: *mut u8,
            dst_len: usize,
            width: u32,
            height: u32,
            components: i32,
            bytes_per_sample: i32,
            msg: *mut std::ffi::c_char,
            msg_len: usize,
        ) -> i32;

        /// HTJ2K (OpenJPH); 0 on success, else a message in `msg`. Catches every C++
        /// exception itself.
        pub(super) fn rapha_decode_htj2k(
            src: *const u8,
            src_len: usize,
            dst: *mut u8,
            dst_len: usize,
            width: u32,
            height: u32,
            components: i32,
            bytes_per_sample: i32,
            max_tiles: u64,
            msg: *mut std::ffi::c_char,
            msg_len: usize,
        ) -> i32;
    }
}

/// Message buffer for a refusal.
const MSG: usize = 256;

/// JPEG-LS (CharLS) into `out`: interleaved samples of `bytes_per_sample` bytes, little endian.
pub(crate) fn jpeg_ls(
    frame: &[u8],
    out: &mut [u8],
    geometry: (u32, u32, u16),
    bytes_per_sample: u8,
) -> Result<(), String> {
    call(1, frame, out, geometry, bytes_per_sample)
}

/// 12-bit JPEG (IJG) into `out`: interleaved 16-bit little-endian samples.
pub(crate) fn jpeg12(
    frame: &[u8],
    out: &mut [u8],
    geometry: (u32, u32, u16),
) -> Result<(), String> {
    call(2, frame, out, geometry, 2)
}

/// HTJ2K (OpenJPH) into `out`: interleaved samples of `bytes_per_sample` bytes, little endian
/// (two's complement for a signed component), in a codestream of at most
/// [`rapha_decode::MAX_J2K_TILES`] tiles.
pub(crate) fn htj2k(
    frame: &[u8],
    out: &mut [u8],
    (rows, columns, samples): (u32, u32, u16),
    bytes_per_sample: u8,
) -> Result<(), String> {
    let mut msg: [c_char; MSG] = [0; MSG];
    // SAFETY: as in `call`: live slices with their lengths, nothing kept after the return; the
    // C++ side lets no exception out.
    #[allow(unsafe_code)]
    let rc = unsafe {
        ffi::rapha_decode_htj2k(
            frame.as_ptr(),
            frame.len(),
            out.as_mut_ptr(),
            out.len(),
            columns,
            rows,
            i32::from(samples),
            i32::from(bytes_per_sample),
            rapha_decode::MAX_J2K_TILES,
            msg.as_mut_ptr(),
            MSG,
        )
    };
    refusal(rc, &msg)
}

fn call(
    codec: i32,
    frame: &[u8],
    out: &mut [u8],
    (rows, columns, samples): (u32, u32, u16),
    bytes_per_sample: u8,
) -> Result<(), String> {
    let mut msg: [c_char; MSG] = [0; MSG];
    // SAFETY: the pointers and lengths are those of live slices; the C side reads at most
    // `frame.len()` bytes of `frame`, writes at most `out.len()` bytes into `out` and at most
    // `MSG` (snprintf, NUL included) into `msg`, and keeps none of them after it returns.
    #[allow(unsafe_code)]
    let rc = unsafe {
        ffi::rapha_decode_frame(
            codec,
            frame.as_ptr(),
            frame.len(),
            out.as_mut_ptr(),
            out.len(),
            columns,
            rows,
            i32::from(samples),
            i32::from(bytes_per_sample),
            msg.as_mut_ptr(),
            MSG,
        )
    };
    refusal(rc, &msg)
}

/// `Ok` for a zero return, else the decoder's message.
fn refusal(rc: i32, msg: &[c_char; MSG]) -> Result<(), String> {
    if rc == 0 {
        return Ok(());
    }
    let bytes: Vec<u8> = msg
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Err(if text.is_empty() {
        "the decoder refused the frame".into()
    } else {
        text
    })
}
