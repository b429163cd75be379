//! Test support (feature `test-support`, enabled only by the dev-dependencies of the CLI's and
//! the node's tests): the local market their chain tests deploy on anvil, with one layout of
//! anvil's dev accounts, so every test reads the same roles. It lives here and not in
//! rapha-testkit because rapha-settle's own tests depend on rapha-testkit: the testkit cannot
//! depend on this crate without a cycle. Never in a production build: the mock token lets
//! anyone mint.

use alloy::primitives::Address;

use crate::{Escrow, Result, TestMarketPlan, WalletKey};
use rapha_core::Usdc;

/// The roles of anvil's dev accounts in a [`DevMarket`].
pub mod account {
    /// Deploys the mock USDC and the escrow, and mints.
    pub const DEPLOYER: usize = 0;
    /// Receives the protocol's 30%.
    pub const TREASURY: usize = 1;
    /// The AI company: funded with [`super::COMPANY_FUNDS`] base units, pays the deposits.
    pub const COMPANY: usize = 2;
    /// The hospital's account, registered in the escrow.
    pub const HOSPITAL: usize = 3;
    /// The node's receipt key: the signer the escrow accepts for the hospital.
    pub const NODE_SIGNER: usize = 4;
    /// Pays the settlement gas (the node's settler key).
    pub const SETTLER: usize = 5;
    /// Where the hospital's 70% goes.
    pub const PAYOUT: usize = 6;
}

/// The mock USDC minted to [`account::COMPANY`]: a million USDC.
pub const COMPANY_FUNDS: u64 = 1_000_000_000_000;

/// A test market on a development chain: the mock USDC and the escrow, the company funded and
/// the hospital registered with its node signer and payout, each role its dev account.
pub struct DevMarket {
    pub rpc_url: String,
    /// The chain's dev account keys (hex), by [`account`] role.
    pub keys: Vec<String>,
    /// The mock 6-decimal USDC.
    pub token: Address,
    pub escrow: Address,
}

impl DevMarket {
    /// Deploys the market at `rpc_url`, whose dev accounts' keys are `keys` (hex).
    ///
    /// # Errors
    /// A key that is not hex, fewer than seven keys, RPC failures, a failed deployment or a
    /// refused registration.
    pub async fn deploy(rpc_url: &str, keys: Vec<String>) -> Result<Self> {
        let key = |i: usize| {
            keys.get(i)
                .ok_or_else(|| crate::SettleError::Deploy(format!("no dev account {i}")))
                .and_then(|k| WalletKey::from_hex(k))
        };
        let market = Escrow::deploy_test_market(&TestMarketPlan {
            rpc_url,
            deployer: &key(account::DEPLOYER)?,
            treasury: key(account::TREASURY)?.address(),
            funded: key(account::COMPANY)?.address(),
            funds: Usdc::from_base_units(COMPANY_FUNDS),
            hospital: &key(account::HOSPITAL)?,
            node_signer: key(account::NODE_SIGNER)?.address(),
            payout: key(account::PAYOUT)?.address(),
        })
        .await?;
        Ok(Self {
            rpc_url: rpc_url.to_owned(),
            keys,
            token: market.token,
            escrow: market.escrow,
        })
    }

    /// The wallet key of dev account `i`.
    ///
    /// # Panics
    /// If `i` is not a dev account ([`Self::deploy`] checked the seven roles).
    #[allow(clippy::expect_used)] // test support: the keys were parsed by `deploy`
    pub fn key(&self, i: usize) -> WalletKey {
        WalletKey::from_hex(&self.keys[i]).expect("deploy parsed the dev account keys")
    }

    /// The address of dev account `i`.
    pub fn address(&self, i: usize) -> Address {
        self.key(i).address()
    }

    /// The node receipt key's secret bytes ([`account::NODE_SIGNER`]).
    #[allow(clippy::expect_used)] // test support: the key was parsed by `deploy`
    pub fn node_secret(&self) -> [u8; 32] {
        let mut secret = [0u8; 32];
        hex::decode_to_slice(
            self.keys[account::NODE_SIGNER]
                .trim()
                .trim_start_matches("0x"),
            &mut secret,
        )
        .expect("deploy parsed the node signer's key");
        secret
    }
}
