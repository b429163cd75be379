//! `[chain]` (the escrow and its token) and `[settlement]` (the hospital's accounts and the
//! key that pays gas).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{invalid, parse_address};

/// `[chain]`: settlement.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    pub chain_id: u64,
    /// USDC token contract; must be the official one for `chain_id`.
    pub usdc_address: String,
    /// Rapha escrow contract.
    pub escrow_address: String,
    /// Blocks to wait before a deposit counts as confirmed.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// Accept a token other than official USDC (tests, staging). `doctor` always flags it as
    /// non-production.
    #[serde(default)]
    pub test_token: bool,
}

fn default_confirmations() -> u64 {
    12
}

impl ChainConfig {
    /// The RPC URL, addresses and confirmation count are usable.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if !(self.rpc_url.starts_with("http://") || self.rpc_url.starts_with("https://")) {
            return Err(invalid(
                "chain.rpc_url",
                format!(
                    "{:?} is not an http(s) URL of a JSON-RPC endpoint",
                    self.rpc_url
                ),
            ));
        }
        parse_address("chain.usdc_address", &self.usdc_address)?;
        parse_address("chain.escrow_address", &self.escrow_address)?;
        if self.confirmations == 0 {
            return Err(invalid(
                "chain.confirmations",
                "0 would count a deposit before any block confirms it; use at least 1 (12 on Polygon PoS)",
            ));
        }
        Ok(())
    }
}

/// `[settlement]`: the hospital's accounts in the escrow and the key that pays gas.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementConfig {
    /// File with the hex secp256k1 key of the account that sends settlement transactions
    /// (mode 0600): `rapha-node keygen --settler`. Needs gas, never holds fees.
    pub settler_key_file: PathBuf,
    /// The hospital's account registered in the escrow (0x address).
    pub hospital_address: String,
    /// The payout account registered for the hospital (0x address): receives its 70%.
    pub payout_address: String,
    /// Seconds kept after the trainer's wall time for guard, receipt, settlement and its
    /// confirmations: a deposit is accepted, and its trainer started, only if its refund
    /// deadline is at least chain time + wall time + this. (`run_window_secs`, its name
    /// before the wall time counted separately, is read as this.)
    #[serde(default = "default_settle_margin_secs", alias = "run_window_secs")]
    pub settle_margin_secs: u64,
}

fn default_settle_margin_secs() -> u64 {
    3600
}

impl SettlementConfig {
    /// The hospital's accounts are addresses and the settlement margin is not zero.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        parse_address("settlement.hospital_address", &self.hospital_address)?;
        parse_address("settlement.payout_address", &self.payout_address)?;
        if self.settle_margin_secs == 0 {
            return Err(invalid(
                "settlement.settle_margin_secs",
                "0 leaves the depositor free to take the fee back before the settlement lands; use the time guard, receipt and settlement confirmations need (default 3600)",
            ));
        }
        Ok(())
    }
}
