//! The demo's local chain: `anvil` (chain id 137), the mock 6-decimal USDC, the escrow, the
//! hospital's registration, and the AI company's deposit. Accounts are anvil's well-known dev
//! accounts: 0 deploys, 1 is the hospital (and its payout), 2 the AI company, 3 the treasury.

use alloy::primitives::Address;
use anyhow::{anyhow, Context, Result};
use rapha_core::{JobId, Usdc};
use rapha_settle::{
    deposit_for_job, wallet_provider, DepositOrder, Escrow, TestMarketPlan, WalletKey,
};
use rapha_testkit::services::{Anvil, AnvilOptions};

/// The running chain and the demo's accounts on it.
pub struct Chain {
    _anvil: Anvil,
    pub rt: tokio::runtime::Runtime,
    pub rpc: String,
    pub chain_id: u64,
    pub escrow: Address,
    pub token: Address,
    pub hospital: WalletKey,
    pub payout: Address,
    pub company: WalletKey,
    pub treasury: Address,
    treasury_key: WalletKey,
}

fn key(accounts: &[(String, String)], i: usize) -> Result<WalletKey> {
    let (_, k) = accounts
        .get(i)
        .ok_or_else(|| anyhow!("anvil reported fewer than {} dev accounts", i + 1))?;
    WalletKey::from_hex(k).map_err(|e| anyhow!("anvil dev key {i}: {e}"))
}

impl Chain {
    /// Starts anvil and deploys the mock USDC and the escrow; registers the hospital with the
    /// node's signing address; mints `fee` to the AI company. `Ok(None)` when anvil is missing.
    pub fn start(node_signer: Address, fee: Usdc) -> Result<Option<Self>> {
        let Some(anvil) = Anvil::start(AnvilOptions {
            // Mine each transaction as it arrives: with a block every second the deposit
            // (approve + deposit) and the settlement each wait for the next block.
            block_time: None,
            ..AnvilOptions::default()
        })
        .map_err(|e| anyhow!("starting anvil: {e}"))?
        else {
            return Ok(None);
        };
        let rpc = anvil.rpc_url();
        let chain_id = anvil.chain_id();
        let accounts = anvil.dev_accounts();
        let deployer = key(&accounts, 0)?;
        let hospital = key(&accounts, 1)?;
        let company = key(&accounts, 2)?;
        let treasury_key = key(&accounts, 3)?;
        let treasury = treasury_key.address();
        let payout = hospital.address();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let market = rt
            .block_on(Escrow::deploy_test_market(&TestMarketPlan {
                rpc_url: &rpc,
                deployer: &deployer,
                treasury,
                funded: company.address(),
                funds: fee,
                hospital: &hospital,
                node_signer,
                payout,
            }))
            .map_err(|e| anyhow!("deploying the escrow on anvil: {e}"))?;
        let (escrow, token) = (market.escrow, market.token);
        Ok(Some(Self {
            _anvil: anvil,
            rt,
            rpc,
            chain_id,
            escrow,
            token,
            hospital,
            payout,
            company,
            treasury,
            treasury_key,
        }))
    }

    /// The AI company approves and deposits `fee` for `job`.
    pub fn deposit(&self, job: JobId, fee: Usdc) -> Result<String> {
        let order = DepositOrder {
            job,
            fee,
            hospital: self.hospital.address(),
            deadline_after_secs: 24 * 3600,
            expected_chain_id: Some(self.chain_id),
            test_token: true,
        };
        let done = self
            .rt
            .block_on(deposit_for_job(
                &self.rpc,
                self.escrow,
                &self.company,
                &order,
            ))
            .map_err(|e| anyhow!("deposit: {e}"))?;
        Ok(format!(
            "tx {} in block {}",
            done.deposit.tx, done.deposit.block
        ))
    }

    /// The escrow credits settlements and refunds (pull payments): the hospital's payout, the
    /// treasury and the AI company each take what they are owed. Returns the withdrawals made.
    pub fn withdraw_all(&self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for (who, key) in [
            ("hospital payout", &self.hospital),
            ("treasury", &self.treasury_key),
            ("AI company", &self.company),
        ] {
            let escrow = Escrow::at(
                wallet_provider(&self.rpc, key).map_err(|e| anyhow!("{e}"))?,
                self.escrow,
            );
            let owed = self
                .rt
                .block_on(escrow.owed(key.address()))
                .map_err(|e| anyhow!("owed: {e}"))?;
            if owed.is_zero() {
                continue;
            }
            let mined = self
                .rt
                .block_on(escrow.withdraw())
                .map_err(|e| anyhow!("withdraw: {e}"))?;
            done.push(format!("{who} withdrew {owed} base units: tx {}", mined.tx));
        }
        Ok(done)
    }

    /// USDC balance in base units.
    pub fn balance(&self, who: Address) -> Result<u64> {
        let p = wallet_provider(&self.rpc, &self.hospital).map_err(|e| anyhow!("{e}"))?;
        let b = self
            .rt
            .block_on(Escrow::balance_of(&p, self.token, who))
            .map_err(|e| anyhow!("balance: {e}"))?;
        u64::try_from(b).context("balance does not fit in u64")
    }
}
