//! `rapha job deposit` end to end on anvil: the fee lands in escrow to the base unit; an
//! unofficial token, a wrong chain and a fee with more than 6 decimals are refused.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use rapha_core::JobId;
use rapha_settle::test_support::{account, DevMarket};
use rapha_settle::{wallet_provider, Escrow};
use rapha_testkit::services::{Anvil, AnvilOptions};

#[test]
fn job_deposit_pays_the_exact_fee_into_escrow_and_refuses_what_it_must() {
    let Some(anvil) = std::thread::scope(|s| {
        s.spawn(|| rapha_testkit::require!(Anvil::start(AnvilOptions::default())))
            .join()
            .unwrap()
    }) else {
        return;
    };
    let url = anvil.rpc_url();
    let keys: Vec<String> = anvil.dev_accounts().into_iter().map(|(_, k)| k).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let market = rt.block_on(DevMarket::deploy(&url, keys)).unwrap();
    let key = |i: usize| market.key(i);
    let escrow = Escrow::at(
        wallet_provider(&url, &key(account::HOSPITAL)).unwrap(),
        market.escrow,
    );
    let hospital = key(account::HOSPITAL).address();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("wallet.key");
    std::fs::write(&key_file, &market.keys[account::COMPANY]).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let job = JobId::random();
    let rapha = |fee: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rapha"))
            .args(["job", "deposit", &job.to_string(), "--fee", fee, "--escrow"])
            .arg(escrow.address().to_string())
            .args(["--rpc", &url, "--key"])
            .arg(&key_file)
            .args(["--hospital", &hospital.to_string()])
            .args(extra)
            .output()
            .unwrap()
    };

    let out = rapha("120.0000001", &["--test-token"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("6 decimals"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = rapha("120.00", &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not the official USDC"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = rapha("120.00", &["--test-token", "--chain-id", "80002"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chain id 137"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = rapha("120.00", &["--test-token", "--chain-id", "137"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deposited 120.000000 USDC"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-production"));
    let onchain = rt
        .block_on(escrow.job(key(account::COMPANY).address(), &job))
        .unwrap();
    assert_eq!(onchain.amount.base_units(), 120_000_000);
    assert_eq!(onchain.hospital, hospital);
    assert_eq!(onchain.depositor, key(account::COMPANY).address());
}
