//! The operator's command line of `rapha-settle-worker`: what `--help` tells an admin, and the
//! exit statuses (0 done, 1 the work failed or a value was refused, 2 a usage error). None of
//! these reach a chain: each stops before connecting.

use std::process::{Command, Output};

fn worker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rapha-settle-worker"))
        .args(args)
        .env_remove("RAPHA_TEST_WALLET_KEY")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const CHAIN: [&str; 6] = [
    "--rpc",
    "http://127.0.0.1:9",
    "--escrow",
    "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    "--key-env",
    "RAPHA_TEST_WALLET_KEY",
];

#[test]
fn help_names_the_commands_the_key_rule_and_the_exit_statuses() {
    let o = worker(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = text(&o);
    for word in [
        "settle",
        "reconcile",
        "withdraw",
        "Exit status",
        "recorded TX",
    ] {
        assert!(help.contains(word), "--help lacks {word:?}:\n{help}");
    }
    let o = worker(&["settle", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = text(&o);
    for flag in [
        "--ledger",
        "--rpc",
        "--escrow",
        "--key-env",
        "--settlement",
        "--confirmations",
        "never goes on the command line",
        "[default: 12]",
    ] {
        assert!(help.contains(flag), "settle --help lacks {flag:?}:\n{help}");
    }
    let help = text(&worker(&["withdraw", "--help"]));
    assert!(
        !help.contains("--ledger"),
        "withdraw needs no ledger:\n{help}"
    );
}

#[test]
fn a_usage_error_exits_2_before_anything_is_read() {
    for args in [
        vec![],
        vec!["pay"],
        vec!["settle", "--ledger", "l.db"],
        vec!["withdraw", "--rpc", "http://127.0.0.1:9"],
    ] {
        let o = worker(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    }
    let mut missing_settlement = vec!["settle", "--ledger", "l.db"];
    missing_settlement.extend(CHAIN);
    let o = worker(&missing_settlement);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--settlement"), "{}", text(&o));
}

#[test]
fn a_refused_value_or_a_missing_key_exits_1_with_the_reason() {
    // A mistyped (wrong EIP-55 checksum) escrow address.
    let o = worker(&[
        "withdraw",
        "--rpc",
        "http://127.0.0.1:9",
        "--escrow",
        "0x5FBDB2315678afecb367f032d93F642f64180aa3",
        "--key-env",
        "RAPHA_TEST_WALLET_KEY",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("bad escrow address"), "{}", text(&o));
    // A number that is not one.
    let mut args = vec!["reconcile", "--ledger", "l.db", "--confirmations", "many"];
    args.extend(CHAIN);
    let o = worker(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // The key's variable is not set: refused before any connection.
    let mut args = vec!["withdraw"];
    args.extend(CHAIN);
    let o = worker(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("rapha-settle-worker: invalid wallet key"),
        "{}",
        text(&o)
    );
}
