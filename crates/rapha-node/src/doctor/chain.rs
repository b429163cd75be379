//! The chain and settlement (**I7**): the RPC serves the configured chain, the token is
//! official USDC, the escrow is deployed, and the settler key and hospital accounts are real.

use rapha_policy::{is_dev_key, read_secret_hex};
use serde_json::{json, Value};

use crate::config::Config;

use super::{fail, Outcome, Report, NETWORK_TIMEOUT};

/// Official native USDC per chain id: Polygon PoS, and Polygon Amoy for staging.
pub const OFFICIAL_USDC: &[(u64, &str, &str)] = &[
    (
        137,
        "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359",
        "Polygon PoS",
    ),
    (
        80002,
        "0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582",
        "Polygon Amoy (staging)",
    ),
];

pub(super) fn check_chain(config: &Config, r: &mut Report) {
    let c = &config.chain;
    let client = match reqwest::blocking::Client::builder()
        .timeout(NETWORK_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            r.fail(
                "chain RPC (chain.rpc_url)",
                format!("cannot build an HTTP client: {e}"),
                "check the system's TLS setup",
            );
            return;
        }
    };
    let rpc = |method: &str, params: Value| -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp: Value = client
            .post(&c.rpc_url)
            .json(&body)
            .send()
            .and_then(reqwest::blocking::Response::error_for_status)
            .and_then(reqwest::blocking::Response::json)
            .map_err(|e| format!("{method} to {}: {e}", c.rpc_url))?;
        if let Some(err) = resp.get("error") {
            return Err(format!("{method}: the node answered an error: {err}"));
        }
        resp.get("result")
            .cloned()
            .ok_or_else(|| format!("{method}: no result in the answer"))
    };
    let chain_ok = match rpc("eth_chainId", json!([])) {
        Err(e) => {
            r.fail(
                "chain RPC (chain.rpc_url)",
                e,
                "point chain.rpc_url at a reachable Polygon JSON-RPC endpoint",
            );
            false
        }
        Ok(v) => match v
            .as_str()
            .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        {
            Some(id) if id == c.chain_id => {
                r.pass(
                    "chain RPC (chain.rpc_url)",
                    format!("{} reachable, chain id {id}", c.rpc_url),
                );
                true
            }
            Some(id) => {
                r.fail(
                    "chain RPC (chain.rpc_url)",
                    format!(
                        "{} serves chain id {id}, but chain.chain_id is {}",
                        c.rpc_url, c.chain_id
                    ),
                    "use an RPC endpoint of the configured chain, or fix chain.chain_id",
                );
                false
            }
            None => {
                r.fail(
                    "chain RPC (chain.rpc_url)",
                    format!("eth_chainId answered {v}"),
                    "use a standard Ethereum JSON-RPC endpoint",
                );
                false
            }
        },
    };
    r.push("USDC token (chain.usdc_address)", check_usdc(c));
    if !chain_ok {
        r.fail(
            "escrow contract (chain.escrow_address)",
            "not checked: the chain RPC check failed",
            "fix the chain RPC first",
        );
        return;
    }
    let escrow = match address("chain.escrow_address", &c.escrow_address) {
        Ok(a) => a,
        Err(e) => {
            r.fail(
                "escrow contract (chain.escrow_address)",
                e,
                "set chain.escrow_address to the deployed escrow's 0x address",
            );
            return;
        }
    };
    match rpc("eth_getCode", json!([escrow, "latest"])) {
        Ok(Value::String(code)) if code.len() > 2 => r.pass(
            "escrow contract (chain.escrow_address)",
            format!("contract code at {escrow} ({} bytes)", (code.len() - 2) / 2),
        ),
        Ok(_) => r.fail(
            "escrow contract (chain.escrow_address)",
            format!("no contract deployed at {escrow} on chain {}", c.chain_id),
            "deploy the Rapha escrow (contracts/) and set chain.escrow_address to its address",
        ),
        Err(e) => r.fail(
            "escrow contract (chain.escrow_address)",
            e,
            "check the chain RPC",
        ),
    }
}

fn check_usdc(c: &crate::config::ChainConfig) -> Outcome {
    let addr = address("chain.usdc_address", &c.usdc_address)
        .or_else(|e| fail(e, "set chain.usdc_address to the official USDC address"))?;
    if c.test_token {
        return fail(
            format!("test token: non-production (chain.test_token = true accepts {addr} instead of official USDC)"),
            "remove test_token and set chain.usdc_address to official USDC",
        );
    }
    match OFFICIAL_USDC.iter().find(|(id, _, _)| *id == c.chain_id) {
        None => fail(
            format!("no official USDC is known for chain id {}", c.chain_id),
            "settle on Polygon PoS (chain id 137)",
        ),
        Some((_, official, name)) if official.eq_ignore_ascii_case(&addr) => {
            Ok(format!("official USDC on {name}"))
        }
        Some((_, official, name)) => fail(
            format!("{addr} is not official USDC on {name} ({official})"),
            format!("set chain.usdc_address = \"{official}\""),
        ),
    }
}

/// A configured address, read as loading the configuration reads it (a configuration built in
/// code is checked here the same way), in the lowercase hex the JSON-RPC calls and the report
/// use.
fn address(key: &str, value: &str) -> Result<String, String> {
    crate::config::parse_address(key, value)
        .map(|a| format!("0x{}", hex::encode(a)))
        .map_err(|(key, message)| format!("{key}: {message}"))
}

pub(super) fn check_settlement(config: &Config) -> Outcome {
    let Some(s) = &config.settlement else {
        return fail(
            "no [settlement] section: the node cannot confirm deposits or settle",
            "add [settlement] with settler_key_file (`rapha-node keygen --settler`), hospital_address and payout_address",
        );
    };
    let key = crate::node_build::read_settler_key(&s.settler_key_file).or_else(|e| {
        fail(
            e.to_string(),
            format!(
                "create one with `rapha-node keygen --settler --out {}` and fund its address with gas",
                s.settler_key_file.display()
            ),
        )
    })?;
    let secret = read_secret_hex(&s.settler_key_file).ok();
    if secret.is_some_and(|k| is_dev_key(&k[..])) {
        return fail(
            format!("{} is a development key", s.settler_key_file.display()),
            "generate a production key with `rapha-node keygen --settler --out FILE`",
        );
    }
    let zero = "0x0000000000000000000000000000000000000000";
    for (key_name, v) in [
        ("settlement.hospital_address", &s.hospital_address),
        ("settlement.payout_address", &s.payout_address),
    ] {
        if v.eq_ignore_ascii_case(zero) {
            return fail(
                format!("{key_name} is the zero address (a placeholder)"),
                "set it to the account registered for the hospital in the escrow",
            );
        }
    }
    Ok(format!(
        "settler {} (key mode 0600), hospital {}, payout {}, settlement margin {} s",
        key.address(),
        s.hospital_address,
        s.payout_address,
        s.settle_margin_secs
    ))
}
