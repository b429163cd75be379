//! Settlement networks: Polygon PoS (137) and Amoy (80002), the official USDC on each, and
//! the checks a node makes before it trusts an RPC endpoint.

use alloy::primitives::{address, Address};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SettleError};

/// Polygon PoS mainnet.
pub const POLYGON_CHAIN_ID: u64 = 137;
/// Polygon's Amoy test network (staging).
pub const AMOY_CHAIN_ID: u64 = 80002;

/// Circle's native USDC on Polygon PoS.
pub const POLYGON_USDC: Address = address!("3c499c542cEF5E3811e1192ce70d8cC03d5c3359");
/// Circle's USDC on Amoy.
pub const AMOY_USDC: Address = address!("41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582");

/// The official USDC for a supported chain.
pub fn official_usdc(chain_id: u64) -> Option<Address> {
    match chain_id {
        POLYGON_CHAIN_ID => Some(POLYGON_USDC),
        AMOY_CHAIN_ID => Some(AMOY_USDC),
        _ => None,
    }
}

/// A node's (or the CLI's) settlement network configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The chain id this node settles on; an RPC reporting another is refused.
    pub chain_id: u64,
    pub rpc_url: String,
    pub escrow: Address,
    /// The USDC token. Must be the official one for `chain_id` unless `test_token`.
    pub token: Address,
    /// Accept a token that is not the official USDC (local chains, tests). Non-production.
    #[serde(default)]
    pub test_token: bool,
}

/// What the token check concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Circle's USDC for the configured chain.
    Official,
    /// A token accepted only because `test_token` is set: `doctor` reports it as
    /// non-production.
    Test,
}

impl NetworkConfig {
    /// Checks the configuration alone (no network): the token must be the official USDC for
    /// the chain unless `test_token` is set.
    ///
    /// # Errors
    /// [`SettleError::UnofficialToken`] or [`SettleError::NoOfficialToken`].
    pub fn check_token(&self) -> Result<TokenKind> {
        match official_usdc(self.chain_id) {
            Some(official) if official == self.token => Ok(TokenKind::Official),
            _ if self.test_token => Ok(TokenKind::Test),
            Some(official) => Err(SettleError::UnofficialToken {
                chain_id: self.chain_id,
                configured: self.token,
                official,
            }),
            None => Err(SettleError::NoOfficialToken {
                chain_id: self.chain_id,
            }),
        }
    }

    /// True only for the official token on Polygon PoS mainnet.
    pub fn is_production(&self) -> bool {
        self.chain_id == POLYGON_CHAIN_ID && matches!(self.check_token(), Ok(TokenKind::Official))
    }

    /// Connects a read-only provider after checking the token and that the RPC's chain id is
    /// the configured one.
    ///
    /// # Errors
    /// Token errors, [`SettleError::BadRpcUrl`], [`SettleError::ChainIdMismatch`], RPC failures.
    pub async fn connect(&self) -> Result<(DynProvider, TokenKind)> {
        let kind = self.check_token()?;
        let provider = connect_http(&self.rpc_url)?;
        check_chain_id(&provider, self.chain_id).await?;
        Ok((provider, kind))
    }
}

/// A plain HTTP provider (no wallet, no fillers).
///
/// # Errors
/// [`SettleError::BadRpcUrl`].
pub fn connect_http(url: &str) -> Result<DynProvider> {
    let parsed: alloy::transports::http::reqwest::Url =
        url.parse().map_err(|e| SettleError::BadRpcUrl {
            url: url.into(),
            reason: format!("{e}"),
        })?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .connect_http(parsed)
        .erased())
}

/// Refuses an RPC whose chain id is not `expected`.
///
/// # Errors
/// [`SettleError::ChainIdMismatch`] or an RPC failure.
pub async fn check_chain_id(provider: &DynProvider, expected: u64) -> Result<()> {
    let actual = provider
        .get_chain_id()
        .await
        .map_err(crate::rpc("eth_chainId"))?;
    if actual != expected {
        return Err(SettleError::ChainIdMismatch { expected, actual });
    }
    Ok(())
}
