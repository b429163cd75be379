//! `rapha-settle-worker`: submits one signed settlement through the node's ledger, reconciles
//! the ledger with the chain after a restart, or withdraws what the escrow owes an account. An
//! operator's tool (and the process the crash tests SIGKILL mid-settlement).
//!
//! ```text
//! rapha-settle-worker settle    --ledger DB --rpc URL --escrow ADDR --key-env VAR --settlement FILE [--confirmations N]
//! rapha-settle-worker reconcile --ledger DB --rpc URL --escrow ADDR --key-env VAR
//! rapha-settle-worker withdraw  --rpc URL --escrow ADDR --key-env VAR
//! ```
//! The wallet key is read from the environment variable named by `--key-env`, never from the
//! command line. Progress is printed one line per step: `recorded TX`, `broadcast TX`,
//! `confirmed TX N`, `failed REASON`, `open JOB STATE`, `withdrawn TX AMOUNT`, `owed nothing`.
//! `withdraw` is how the hospital's payout, the treasury or a refunded depositor takes its
//! money: settlements and expiry refunds only credit it in the escrow.

#![allow(clippy::print_stderr)] // a binary reports to its operator

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use rapha_settle::network::connect_http;
use rapha_settle::{
    wallet_provider, Escrow, Ledger, LedgerState, SettleError, Settler, SettlerConfig,
    SignedSettlement, WalletKey,
};
use zeroize::Zeroizing;

fn usage() -> ExitCode {
    eprintln!(
        "usage: rapha-settle-worker settle|reconcile --ledger DB --rpc URL --escrow ADDR --key-env VAR \
         [--settlement FILE] [--confirmations N]\n       rapha-settle-worker withdraw --rpc URL --escrow ADDR --key-env VAR"
    );
    ExitCode::from(2)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // The parent may already be gone; nothing useful to do about a closed pipe.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        return usage();
    };
    let mut opts = HashMap::new();
    let mut it = rest.iter();
    while let Some(k) = it.next() {
        let (Some(name), Some(v)) = (k.strip_prefix("--"), it.next()) else {
            return usage();
        };
        opts.insert(name.to_owned(), v.clone());
    }
    match run(cmd, &opts).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rapha-settle-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: &str, opts: &HashMap<String, String>) -> Result<ExitCode, SettleError> {
    let get = |k: &str| opts.get(k).cloned();
    let (Some(rpc), Some(escrow), Some(key_env)) = (get("rpc"), get("escrow"), get("key-env"))
    else {
        return Ok(usage());
    };
    let escrow = escrow
        .parse()
        .map_err(|_| SettleError::Deploy(format!("bad escrow address {escrow:?}")))?;
    let key_hex = Zeroizing::new(std::env::var(&key_env).map_err(|_| SettleError::BadKey)?);
    let key = WalletKey::from_hex(&key_hex)?;
    if cmd == "withdraw" {
        let escrow = Escrow::at(wallet_provider(&rpc, &key)?, escrow);
        let owed = escrow.owed(key.address()).await?;
        if owed.is_zero() {
            say("owed nothing");
            return Ok(ExitCode::SUCCESS);
        }
        let mined = escrow.withdraw().await?;
        say(&format!("withdrawn {} {owed}", mined.tx));
        return Ok(ExitCode::SUCCESS);
    }
    let Some(ledger) = get("ledger") else {
        return Ok(usage());
    };
    let mut cfg = SettlerConfig::default();
    if let Some(n) = get("confirmations") {
        cfg.confirmations = n
            .parse()
            .map_err(|_| SettleError::Deploy(format!("bad --confirmations {n:?}")))?;
    }
    cfg.poll_interval = std::time::Duration::from_millis(250);
    let provider = connect_http(&rpc)?;
    let mut settler = Settler::new(
        Ledger::open(&PathBuf::from(ledger))?,
        provider,
        escrow,
        &key,
        cfg,
    )
    .await?;
    match cmd {
        "settle" => {
            let Some(file) = get("settlement") else {
                return Ok(usage());
            };
            let bytes = std::fs::read(&file)
                .map_err(|e| SettleError::BadSettlement(format!("{file}: {e}")))?;
            let signed = SignedSettlement::from_json(&bytes)?;
            let job = signed.fields.job_id;
            let row = settler.ledger().enqueue(&job, &signed)?;
            if row.state == LedgerState::Pending {
                if let Some(a) = settler.prepare(&job).await? {
                    say(&format!("recorded {}", a.tx));
                    let tx = settler.broadcast(&job).await?;
                    say(&format!("broadcast {tx}"));
                }
            }
            report(settler.settle(&job, &signed).await?);
            Ok(ExitCode::SUCCESS)
        }
        "reconcile" => {
            for row in settler.reconcile().await? {
                say(&format!("open {} {:?}", row.job, row.state));
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => Ok(usage()),
    }
}

fn report(state: LedgerState) {
    match state {
        LedgerState::Confirmed {
            tx, confirmations, ..
        } => say(&format!("confirmed {tx} {confirmations}")),
        LedgerState::Failed { reason } => say(&format!("failed {reason}")),
        other => say(&format!("open {other:?}")),
    }
}
