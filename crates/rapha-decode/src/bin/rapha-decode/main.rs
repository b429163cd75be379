//! `rapha-decode`: decodes one JPEG-LS or 12-bit JPEG frame inside a sandbox, for the enclave
//! runtime (the crate's documentation has the design).
//!
//! `rapha-decode MEMORY_BYTES CPU_SECONDS`, started by [`rapha_decode::Worker`] only: the
//! sandbox is entered first, then the request and the frame are read from stdin and the
//! samples written to stdout. Exit 0 with exactly the samples, 2 when the decoder refused the
//! frame (its reason on stderr), 3 for a bad request, 4 when the sandbox could not be entered.

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
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

fn run() -> Result<(), (u8, String)> {
    let bad = |e: String| (3, e);
    let mut stdin = std::io::stdin().lock();
    let mut header = [0u8; REQUEST_LEN];
    stdin
        .read_exact(&mut header)
        .map_err(|e| bad(format!("request: {e}")))?;
    let request = Request::decode(&header).map_err(|e| bad(e.to_string()))?;
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
    let mut out = Vec::new();
    out.try_reserve_exact(request.output_len())
        .map_err(|e| (2, format!("output buffer: {e}")))?;
    out.resize(request.output_len(), 0);
    let (rows, columns, samples) = request.geometry();
    match request.codec() {
        Codec::JpegLs => codecs::jpeg_ls(
            &frame,
            &mut out,
            (rows, columns, samples),
            request.bytes_per_sample(),
        ),
        Codec::Jpeg12 => codecs::jpeg12(&frame, &mut out, (rows, columns, samples)),
        #[cfg(feature = "test-hooks")]
        Codec::Hook(hook) => hooks::run(hook, &mut out),
        #[allow(unreachable_patterns)] // `Codec` is non-exhaustive
        _ => Err("codec not built into this worker".into()),
    }
    .map_err(|e| (2, e))?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(|e| (3, format!("output: {e}")))
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
        }
    }
}
