//! Test helper: appends receipts-shaped leaves to a log in a loop, printing each acknowledged
//! index, so the crash test can SIGKILL it mid-append and check nothing acknowledged was lost.
//!
//! Usage: `rapha-receipt-logwriter LOG_PATH KEY_HEX COUNT`. Leaf `i` is the bytes `leaf-<i>`
//! padded to 2 KiB. Every 7th append it signs a tree head and prints it as `sth <json>`.

use std::io::Write as _;

use rapha_receipt::{NodeKey, ReceiptLog};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, key_hex, count] = args.as_slice() else {
        return Err("usage: rapha-receipt-logwriter LOG_PATH KEY_HEX COUNT".into());
    };
    let mut secret = [0u8; 32];
    hex::decode_to_slice(key_hex, &mut secret)?;
    let key = NodeKey::from_secret_bytes(&secret)?;
    let count: u64 = count.parse()?;
    let mut log = ReceiptLog::open(std::path::Path::new(path))?;
    let mut out = std::io::stdout().lock();
    for _ in 0..count {
        let i = log.size();
        let appended = log.append(&leaf(i))?;
        writeln!(out, "ack {}", appended.index)?;
        if i % 7 == 6 {
            let head = log.sign_head(&key, 1_700_000_000_000 + i)?;
            writeln!(out, "sth {}", serde_json::to_string(&head)?)?;
        }
        out.flush()?;
    }
    Ok(())
}

/// The data of leaf `i` (the test recomputes it).
fn leaf(i: u64) -> Vec<u8> {
    let mut v = format!("leaf-{i}").into_bytes();
    v.resize(2048, b'.');
    v
}
