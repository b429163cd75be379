//! `rapha-decode`: decodes one JPEG-LS, 12-bit JPEG or HTJ2K frame inside a sandbox, for the enclave
//! runtime (the crate's documentation has the design).
//!
//! `rapha-decode MEMORY_BYTES CPU_SECONDS`, started by [`rapha_decode::Worker`] only: the
//! sandbox is entered first, then the request and the frame are read from stdin and the
//! samples written to stdout. Exit 0 with exactly the samples, 2 when the decoder refused the
//! frame (its reason on stderr), 3 for a bad request, 4 when the sandbox could not be entered.
//!
//! `rapha-decode MEMORY_BYTES CPU_SECONDS session`, started by [`rapha_decode::Session`] only:
//! the same sandbox, then request after request (each numbered), each answered with an
//! [`rapha_decode::Answer`] header and the samples or the refusal, until stdin closes (exit 0);
//! a bad request ends it with 3.

mod codecs;
mod sandbox;

use std::io::{Read, Write};
use std::process::ExitCode;

use rapha_decode::{Codec, Request, REQUEST_LEN};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(memory), Some(cpu)) = (
        args.first().and_then(|a| a.parse::<u64>().ok()),
        args.get(1).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: rapha-decode MEMORY_BYTES CPU_SECONDS (started by the node only)");
        return ExitCode::from(3);
    };
    if let Err(e) = sandbox::enter(memory, cpu) {
        eprintln!("sandbox not entered: {e}");
        return ExitCode::from(4);
    }
    let session = args.get(2).is_some_and(|a| a == rapha_decode::SESSION_ARG);
    let result = if session { serve() } else { run() };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

/// A request read, its sequence number (0 outside a session) and its frame.
type Received = (Request, u32, Vec<u8>);

/// Why the worker stops: its exit status and message.
type Stop = (u8, String);

/// Reads one request (numbered in a session) and its frame; `Ok(None)` at the end of the input
/// before a request.
fn read_request(stdin: &mut impl Read, numbered: bool) -> Result<Option<Received>, Stop> {
    let bad = |e: String| (3, e);
    let mut header = [0u8; REQUEST_LEN];
    let mut got = 0;
    while got < REQUEST_LEN {
        match stdin.read(&mut header[got..]) {
            Ok(0) if got == 0 && numbered => return Ok(None),
            Ok(0) => return Err(bad("request: the input ended".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(bad(format!("request: {e}"))),
        }
    }
    let (request, sequence) = if numbered {
        Request::decode_numbered(&header)
    } else {
        Request::decode(&header).map(|r| (r, 0))
    }
    .map_err(|e| bad(e.to_string()))?;
    let mut frame = Vec::new();
    frame
        .try_reserve_exact(request.input_len())
        .map_err(|e| bad(format!("frame buffer: {e}")))?;
    stdin
        .take(request.input_len() as u64)
        .read_to_end(&mut frame)
        .map_err(|e| bad(format!("frame: {e}")))?;
    if frame.len() != request.input_len() {
        return Err(bad("frame shorter than the request says".into()));
    }
    Ok(Some((request, sequence, frame)))
}

/// Decodes one frame into exactly the request's image, or the decoder's refusal.
fn decode_frame(request: &Request, frame: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    out.try_reserve_exact(request.output_len())
        .map_err(|e| format!("output buffer: {e}"))?;
    out.resize(request.output_len(), 0);
    let (rows, columns, samples) = request.geometry();
    match request.codec() {
        Codec::JpegLs => codecs::jpeg_ls(
            frame,
            &mut out,
            (rows, columns, samples),
            request.bytes_per_sample(),
        ),
        Codec::Jpeg12 => codecs::jpeg12(frame, &mut out, (rows, columns, samples)),
        Codec::Htj2k => codecs::htj2k(
            frame,
            &mut out,
            (rows, columns, samples),
            request.bytes_per_sample(),
        ),
        #[cfg(feature = "test-hooks")]
        Codec::Hook(hook) => hooks::run(hook, &mut out),
        #[allow(unreachable_patterns)] // `Codec` is non-exhaustive
        _ => Err("codec not built into this worker".into()),
    }?;
    Ok(out)
}

fn run() -> Result<(), (u8, String)> {
    let mut stdin = std::io::stdin().lock();
    let Some((request, _, frame)) = read_request(&mut stdin, false)? else {
        return Err((3, "request: the input ended".into()));
    };
    let out = decode_frame(&request, &frame).map_err(|e| (2, e))?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(|e| (3, format!("output: {e}")))
}

/// A job's session: request after request until stdin closes.
fn serve() -> Result<(), (u8, String)> {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    while let Some((request, sequence, frame)) = read_request(&mut stdin, true)? {
        let result = decode_frame(&request, &frame);
        drop(frame);
        #[cfg(feature = "test-hooks")]
        let sequence = match request.codec() {
            Codec::Hook(rapha_decode::Hook::OtherSequence) => sequence.wrapping_add(1),
            _ => sequence,
        };
        let (refused, body) = match result {
            Ok(out) => (false, out),
            Err(message) => {
                let mut m = message.into_bytes();
                m.truncate(1024);
                (true, m)
            }
        };
        let answer = rapha_decode::Answer {
            sequence,
            refused,
            len: u32::try_from(body.len()).map_err(|_| (3, "output: too long".to_owned()))?,
        };
        stdout
            .write_all(&answer.encode())
            .and_then(|()| stdout.write_all(&body))
            .and_then(|()| stdout.flush())
            .map_err(|e| (3, format!("output: {e}")))?;
    }
    Ok(())
}

/// What a test asks a sandboxed worker to try (feature `test-hooks`, never in production).
#[cfg(feature = "test-hooks")]
mod hooks {
    use std::io::Write;

    use rapha_decode::Hook;

    pub(crate) fn run(hook: Hook, out: &mut Vec<u8>) -> Result<(), String> {
        match hook {
            Hook::OpenFile => {
                let f = std::fs::File::open("/etc/hostname");
                Err(format!("opened a file: {f:?}"))
            }
            Hook::Socket => {
                let s = std::net::UdpSocket::bind("127.0.0.1:0");
                Err(format!("made a socket: {s:?}"))
            }
            Hook::Spin => loop {
                std::hint::spin_loop();
            },
            Hook::Overflow => {
                out.resize(out.len() + 65536, 0xAB);
                Ok(())
            }
            Hook::Allocate => {
                let mut big: Vec<u8> = Vec::new();
                match big.try_reserve_exact(2 << 30) {
                    Ok(()) => Ok(()),
                    Err(e) => Err(format!("allocation refused: {e}")),
                }
            }
            Hook::Short => {
                out.truncate(out.len() / 2);
                let _ = std::io::stdout().flush();
                Ok(())
            }
            Hook::OtherSequence => Ok(()),
        }
    }
}
