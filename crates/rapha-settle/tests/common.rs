//! Shared fixture: anvil (chain id 137, one block a second), a mock 6-decimal USDC, the escrow,
//! a registered hospital and a funded AI company.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::SignerSync;
use rapha_core::{JobId, Outcome, Usdc};
use rapha_settle::network::connect_http;
use rapha_settle::{wallet_provider, Escrow, SettlementFields, SignedSettlement, WalletKey};

use crate::anvil::{Anvil, AnvilOptions};

pub struct Fx {
    pub anvil: Anvil,
    /// anvil's dev account keys (hex), funded with ETH.
    pub keys: Vec<String>,
    pub chain_id: u64,
    pub url: String,
    pub read: DynProvider,
    pub usdc: Address,
    pub treasury: Address,
    /// The AI company's view of the escrow (its wallet pays).
    pub company: Escrow,
    pub company_addr: Address,
    /// The hospital's registered account.
    pub hospital: Address,
    /// The node key that signs settlements (registered as the hospital's signer).
    pub node: WalletKey,
    /// The node's transaction wallet (pays gas for settlements).
    pub node_wallet: WalletKey,
    pub payout: Address,
    /// A stranger's view of the escrow (anyone may submit a signed settlement).
    pub anyone: Escrow,
}

impl Fx {
    pub async fn start() -> Option<Fx> {
        Self::start_with(AnvilOptions::default()).await
    }

    pub async fn start_with(opts: AnvilOptions) -> Option<Fx> {
        let chain_id = opts.chain_id;
        let anvil = crate::anvil::start(opts)?;
        let url = anvil.rpc_url();
        let keys: Vec<String> = anvil.dev_accounts().into_iter().map(|(_, k)| k).collect();
        assert!(keys.len() >= 8, "anvil printed {} dev accounts", keys.len());
        let key = |i: usize| WalletKey::from_hex(&keys[i]).unwrap();
        let deployer = wallet_provider(&url, &key(0)).unwrap();
        let treasury = key(1).address();
        let usdc = Escrow::deploy_mock_usdc(deployer.clone()).await.unwrap();
        let escrow = Escrow::deploy(deployer.clone(), usdc, treasury)
            .await
            .unwrap();
        let company_key = key(2);
        let company = Escrow::at(
            wallet_provider(&url, &company_key).unwrap(),
            escrow.address(),
        );
        let hospital_key = key(3);
        let node = key(4);
        let payout = key(6).address();
        let hospital_escrow = Escrow::at(
            wallet_provider(&url, &hospital_key).unwrap(),
            escrow.address(),
        );
        let (minted, registered) = tokio::join!(
            Escrow::mint_mock_usdc(
                deployer,
                usdc,
                company_key.address(),
                Usdc::from_base_units(10u64.pow(15))
            ),
            hospital_escrow.register_hospital(node.address(), payout),
        );
        minted.unwrap();
        registered.unwrap();
        let node_wallet = key(5);
        let anyone = Escrow::at(wallet_provider(&url, &key(7)).unwrap(), escrow.address());
        Some(Fx {
            chain_id,
            read: connect_http(&url).unwrap(),
            anyone,
            url,
            anvil,
            keys,
            usdc,
            treasury,
            company,
            company_addr: company_key.address(),
            hospital: hospital_key.address(),
            node,
            node_wallet,
            payout,
        })
    }

    /// Fresh connections after anvil restarted (pooled ones point at the old process).
    pub fn reconnect(&mut self) {
        self.read = connect_http(&self.url).unwrap();
        self.company = Escrow::at(
            wallet_provider(&self.url, &self.key(2)).unwrap(),
            self.escrow(),
        );
        self.anyone = Escrow::at(
            wallet_provider(&self.url, &self.key(7)).unwrap(),
            self.escrow(),
        );
    }

    /// Dev account `i`'s wallet key.
    pub fn key(&self, i: usize) -> WalletKey {
        WalletKey::from_hex(&self.keys[i]).unwrap()
    }

    pub fn escrow(&self) -> Address {
        self.company.address()
    }

    pub async fn balance(&self, who: Address) -> U256 {
        Escrow::balance_of(&self.read, self.usdc, who)
            .await
            .unwrap()
    }

    /// What the escrow owes `who` (credited, not yet withdrawn).
    pub async fn owed(&self, who: Address) -> U256 {
        self.company.owed(who).await.unwrap()
    }

    /// `who`'s view of the escrow (its wallet pays): dev account `i`.
    pub fn as_account(&self, i: usize) -> Escrow {
        Escrow::at(
            wallet_provider(&self.url, &self.key(i)).unwrap(),
            self.escrow(),
        )
    }

    /// Freezes `who` in the mock USDC, as Circle can in USDC.
    pub async fn blacklist(&self, who: Address) {
        Escrow::blacklist_mock_usdc(
            wallet_provider(&self.url, &self.key(0)).unwrap(),
            self.usdc,
            who,
        )
        .await
        .unwrap();
    }

    /// Lifts a freeze put on `who` by [`Fx::blacklist`].
    pub async fn unblacklist(&self, who: Address) {
        rapha_settle::bindings::MockUSDC::new(
            self.usdc,
            wallet_provider(&self.url, &self.key(0)).unwrap(),
        )
        .unBlacklist(who)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    }

    pub async fn now(&self) -> u64 {
        self.company.chain_time().await.unwrap()
    }

    /// Deposits `fee` base units for `job` with a deadline an hour ahead.
    pub async fn deposit(&self, job: &JobId, fee: u64) {
        let deadline = self.now().await + 3600;
        self.company
            .approve_and_deposit(job, self.hospital, Usdc::from_base_units(fee), deadline)
            .await
            .unwrap();
    }

    /// The honest settlement fields for `job`.
    pub fn fields(
        &self,
        job: &JobId,
        outcome: Outcome,
        fee: u64,
        log_size: u64,
    ) -> SettlementFields {
        SettlementFields {
            job_id: *job,
            depositor: self.company_addr,
            outcome,
            receipt_digest: B256::repeat_byte(0xd1),
            payout: self.payout,
            fee: Usdc::from_base_units(fee),
            token: self.usdc,
            log_size,
            log_root: B256::from(U256::from(log_size) * U256::from(0x1234_5678u64)),
        }
    }

    /// Signs with the registered node key on this chain and escrow.
    pub fn sign(&self, fields: SettlementFields) -> SignedSettlement {
        sign_with(&self.node, fields, self.chain_id, self.escrow())
    }

    /// Advances chain time by `secs` (takes effect with the next block).
    pub async fn warp(&self, secs: u64) {
        let _: serde_json::Value = self
            .read
            .raw_request("evm_increaseTime".into(), (secs,))
            .await
            .unwrap();
        let _: serde_json::Value = self
            .read
            .raw_request("evm_mine".into(), serde_json::json!([]))
            .await
            .unwrap();
    }
}

pub fn sign_with(
    key: &WalletKey,
    fields: SettlementFields,
    chain_id: u64,
    escrow: Address,
) -> SignedSettlement {
    let digest = fields.signing_digest(chain_id, escrow);
    let sig = key.signer().sign_hash_sync(&digest).unwrap();
    SignedSettlement {
        fields,
        signature: sig.as_bytes().to_vec().into(),
    }
}

pub fn refusal(
    e: rapha_settle::SettleError,
) -> rapha_settle::bindings::RaphaEscrow::RaphaEscrowErrors {
    match e {
        rapha_settle::SettleError::Refused(r) => r.0,
        other => panic!("expected the escrow's refusal, got {other}"),
    }
}
