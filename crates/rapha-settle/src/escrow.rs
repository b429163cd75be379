//! Calls to the escrow contract: deploy (tests, staging), register, deposit (one job or a
//! batch), settle, refund, withdraw, and reading a job's status and what the escrow owes.

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use rapha_core::{JobId, Usdc};
use zeroize::Zeroizing;

use crate::bindings::{MockUSDC, RaphaEscrow, IERC20};
use crate::error::{EscrowRefusal, JobStatus, Result, SettleError};
use crate::settlement::{job_key, SignedSettlement};

/// A wallet key (secp256k1). The inner signing key zeroizes on drop; no `Debug` prints it.
pub struct WalletKey(PrivateKeySigner);

impl WalletKey {
    /// Parses 32 bytes of hex (with or without `0x`).
    ///
    /// # Errors
    /// [`SettleError::BadKey`].
    pub fn from_hex(hex_key: &str) -> Result<Self> {
        let hex_key = Zeroizing::new(hex_key.trim().trim_start_matches("0x").to_owned());
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_key.as_bytes(), bytes.as_mut())
            .map_err(|_| SettleError::BadKey)?;
        PrivateKeySigner::from_bytes(&B256::from(*bytes))
            .map(Self)
            .map_err(|_| SettleError::BadKey)
    }

    /// The account address.
    pub fn address(&self) -> Address {
        self.0.address()
    }

    /// The signer, for signing transactions and (in tests) settlements.
    pub fn signer(&self) -> &PrivateKeySigner {
        &self.0
    }
}

/// A provider that signs with `key` and fills nonce, gas and chain id.
///
/// # Errors
/// [`SettleError::BadRpcUrl`].
pub fn wallet_provider(rpc_url: &str, key: &WalletKey) -> Result<DynProvider> {
    let url: alloy::transports::http::reqwest::Url =
        rpc_url.parse().map_err(|e| SettleError::BadRpcUrl {
            url: rpc_url.into(),
            reason: format!("{e}"),
        })?;
    let wallet = EthereumWallet::from(key.0.clone());
    // Simple nonce management: the nonce is read from the node for every transaction. A
    // cached nonce would advance on a call the escrow refuses at gas estimation and leave a
    // gap that stalls every later transaction from this wallet.
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(wallet)
        .connect_http(url)
        .erased())
}

/// The escrow interface this crate speaks: outcomes 1 to 5, pull payments, batch deposits.
pub const ESCROW_VERSION: u8 = 2;

/// One job of a batch deposit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchDeposit {
    pub job: JobId,
    pub hospital: Address,
    pub fee: Usdc,
    /// Unix time after which the depositor may take this job's deposit back if unsettled.
    pub deadline: u64,
}

/// A mined transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mined {
    pub tx: B256,
    pub block: u64,
    pub gas_used: u64,
}

/// A job as the escrow stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EscrowJob {
    pub depositor: Address,
    pub amount: Usdc,
    pub hospital: Address,
    pub deadline: u64,
    pub status: JobStatus,
}

/// The escrow at one address, reached through one provider.
#[derive(Clone, Debug)]
pub struct Escrow {
    provider: DynProvider,
    address: Address,
}

pub(crate) fn contract_error(call: &'static str) -> impl Fn(alloy::contract::Error) -> SettleError {
    move |e| match e.as_decoded_interface_error::<RaphaEscrow::RaphaEscrowErrors>() {
        Some(refusal) => SettleError::Refused(EscrowRefusal(refusal)),
        None => SettleError::Rpc {
            call,
            reason: e.to_string(),
        },
    }
}

/// How long to wait for a sent transaction to be mined before reporting an error.
const RECEIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

async fn mined(
    pending: std::result::Result<
        alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
        alloy::contract::Error,
    >,
    call: &'static str,
) -> Result<Mined> {
    let receipt: TransactionReceipt = pending
        .map_err(contract_error(call))?
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .map_err(|e| SettleError::Rpc {
            call,
            reason: e.to_string(),
        })?;
    if !receipt.status() {
        return Err(SettleError::Reverted {
            tx: receipt.transaction_hash,
        });
    }
    Ok(Mined {
        tx: receipt.transaction_hash,
        block: receipt.block_number.unwrap_or_default(),
        gas_used: receipt.gas_used,
    })
}

impl Escrow {
    /// The escrow at `address`.
    pub fn at(provider: DynProvider, address: Address) -> Self {
        Self { provider, address }
    }

    /// Deploys the escrow for `usdc` with `treasury` receiving the protocol share (tests,
    /// staging). `provider` must carry a wallet.
    ///
    /// # Errors
    /// RPC failures or a revert.
    pub async fn deploy(provider: DynProvider, usdc: Address, treasury: Address) -> Result<Self> {
        let c = RaphaEscrow::deploy(provider.clone(), usdc, treasury)
            .await
            .map_err(|e| SettleError::Deploy(e.to_string()))?;
        Ok(Self {
            address: *c.address(),
            provider,
        })
    }

    /// Deploys the test-only 6-decimal token (anyone can mint): never on a production chain.
    ///
    /// # Errors
    /// RPC failures.
    pub async fn deploy_mock_usdc(provider: DynProvider) -> Result<Address> {
        let c = MockUSDC::deploy(provider)
            .await
            .map_err(|e| SettleError::Deploy(e.to_string()))?;
        Ok(*c.address())
    }

    /// Sets up a whole local test market on a development chain (anvil): deploys the mock
    /// 6-decimal USDC and the escrow, mints `plan.funds` to `plan.funded`, and registers the
    /// hospital (`plan.hospital` signs) with its node signer and payout. Never on a production
    /// chain: the mock token lets anyone mint.
    ///
    /// # Errors
    /// RPC failures, a failed deployment or a refused registration.
    pub async fn deploy_test_market(plan: &TestMarketPlan<'_>) -> Result<TestMarket> {
        let deployer = wallet_provider(plan.rpc_url, plan.deployer)?;
        let token = Self::deploy_mock_usdc(deployer.clone()).await?;
        let escrow = Self::deploy(deployer.clone(), token, plan.treasury).await?;
        Self::mint_mock_usdc(deployer, token, plan.funded, plan.funds).await?;
        Self::at(
            wallet_provider(plan.rpc_url, plan.hospital)?,
            escrow.address(),
        )
        .register_hospital(plan.node_signer, plan.payout)
        .await?;
        Ok(TestMarket {
            token,
            escrow: escrow.address(),
        })
    }

    /// Mints test USDC (mock token only).
    ///
    /// # Errors
    /// RPC failures.
    pub async fn mint_mock_usdc(
        provider: DynProvider,
        token: Address,
        to: Address,
        amount: Usdc,
    ) -> Result<Mined> {
        let c = MockUSDC::new(token, provider);
        mined(
            c.mint(to, U256::from(amount.base_units())).send().await,
            "mint",
        )
        .await
    }

    /// Blacklists `account` in the test-only token, as Circle may freeze an address in USDC:
    /// transfers from or to it revert from then on.
    ///
    /// # Errors
    /// RPC failures.
    pub async fn blacklist_mock_usdc(
        provider: DynProvider,
        token: Address,
        account: Address,
    ) -> Result<Mined> {
        let c = MockUSDC::new(token, provider);
        mined(c.blacklist(account).send().await, "blacklist").await
    }

    /// USDC balance of `account` in base units.
    ///
    /// # Errors
    /// RPC failures.
    pub async fn balance_of(
        provider: &DynProvider,
        token: Address,
        account: Address,
    ) -> Result<U256> {
        IERC20::new(token, provider.clone())
            .balanceOf(account)
            .call()
            .await
            .map_err(|e| SettleError::Rpc {
                call: "balanceOf",
                reason: e.to_string(),
            })
    }

    pub fn address(&self) -> Address {
        self.address
    }

    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    fn contract(&self) -> RaphaEscrow::RaphaEscrowInstance<DynProvider> {
        RaphaEscrow::new(self.address, self.provider.clone())
    }

    /// The USDC token the escrow was deployed for.
    ///
    /// # Errors
    /// RPC failures.
    pub async fn token(&self) -> Result<Address> {
        self.contract()
            .usdc()
            .call()
            .await
            .map_err(contract_error("usdc"))
    }

    /// Registers the caller (the provider's wallet) as a hospital with its node signer and
    /// payout address.
    ///
    /// # Errors
    /// A refusal or RPC failure.
    pub async fn register_hospital(&self, signer: Address, payout: Address) -> Result<Mined> {
        mined(
            self.contract()
                .registerHospital(signer, payout)
                .send()
                .await,
            "registerHospital",
        )
        .await
    }

    /// Approves the escrow for `fee` and deposits it for `job`, naming `hospital`, as the
    /// wallet's own deposit (the escrow keeps it under this account and `job`).
    /// Returns (approve, deposit).
    ///
    /// # Errors
    /// A refusal (unregistered hospital, job exists, deadline past) or RPC failure.
    pub async fn approve_and_deposit(
        &self,
        job: &JobId,
        hospital: Address,
        fee: Usdc,
        deadline: u64,
    ) -> Result<(Mined, Mined)> {
        let token = self.token().await?;
        let amount = U256::from(fee.base_units());
        let erc20 = IERC20::new(token, self.provider.clone());
        let approve = mined(erc20.approve(self.address, amount).send().await, "approve").await?;
        let deposit = mined(
            self.contract()
                .deposit(job_key(job), hospital, amount, deadline)
                .send()
                .await,
            "deposit",
        )
        .await?;
        Ok((approve, deposit))
    }

    /// Approves the escrow for the sum of `jobs` and deposits them all with one token
    /// transfer (`depositBatch`): the rounds of a federated run, one job id per round and site.
    /// Returns (approve, deposit).
    ///
    /// # Errors
    /// A refusal (empty batch, unregistered hospital, a job that exists, a deadline past) or
    /// RPC failure; nothing is deposited then.
    pub async fn approve_and_deposit_batch(&self, jobs: &[BatchDeposit]) -> Result<(Mined, Mined)> {
        let token = self.token().await?;
        let total = jobs
            .iter()
            .fold(U256::ZERO, |sum, j| sum + U256::from(j.fee.base_units()));
        let erc20 = IERC20::new(token, self.provider.clone());
        let approve = mined(erc20.approve(self.address, total).send().await, "approve").await?;
        let items: Vec<RaphaEscrow::JobDeposit> = jobs
            .iter()
            .map(|j| RaphaEscrow::JobDeposit {
                jobId: job_key(&j.job),
                hospital: j.hospital,
                amount: U256::from(j.fee.base_units()),
                deadline: j.deadline,
            })
            .collect();
        let deposit = mined(
            self.contract().depositBatch(items).send().await,
            "depositBatch",
        )
        .await?;
        Ok((approve, deposit))
    }

    /// USDC base units the escrow owes `account` (credited by settlements and expiry
    /// refunds, not yet withdrawn).
    ///
    /// # Errors
    /// RPC failures.
    pub async fn owed(&self, account: Address) -> Result<U256> {
        self.contract()
            .owed(account)
            .call()
            .await
            .map_err(contract_error("owed"))
    }

    /// Sends the caller (the provider's wallet) everything the escrow owes it.
    ///
    /// # Errors
    /// [`crate::bindings::RaphaEscrow::NothingOwed`] as a refusal, the token's own revert
    /// (e.g. a blacklisted account) as [`SettleError::Rpc`], or RPC failure.
    pub async fn withdraw(&self) -> Result<Mined> {
        mined(self.contract().withdraw().send().await, "withdraw").await
    }

    /// The escrow's interface version; this crate speaks [`ESCROW_VERSION`] only.
    ///
    /// # Errors
    /// [`SettleError::WrongEscrowVersion`] for another version or a contract without one (the
    /// v1 escrow pushed payments and knew three outcomes), or RPC failure.
    pub async fn check_version(&self) -> Result<()> {
        let found = self.contract().ESCROW_VERSION().call().await.ok();
        if found == Some(ESCROW_VERSION) {
            return Ok(());
        }
        Err(SettleError::WrongEscrowVersion {
            escrow: self.address,
            found,
        })
    }

    /// `depositor`'s deposit for `job` as the escrow stores it (status `None` when that
    /// account deposited nothing for this job id; another account's deposit for the same id is
    /// not this one).
    ///
    /// # Errors
    /// RPC failures.
    pub async fn job(&self, depositor: Address, job: &JobId) -> Result<EscrowJob> {
        let j = self
            .contract()
            .jobOf(depositor, job_key(job))
            .call()
            .await
            .map_err(contract_error("jobOf"))?;
        Ok(EscrowJob {
            depositor: j.depositor,
            amount: Usdc::from_base_units(u64::try_from(j.amount).unwrap_or(u64::MAX)),
            hospital: j.hospital,
            deadline: j.deadline,
            status: JobStatus::from(j.status),
        })
    }

    /// Submits a signed settlement and waits for it to be mined (one confirmation). The node
    /// uses [`crate::Settler`] instead, which records the transaction before broadcast.
    ///
    /// # Errors
    /// The contract's refusal (bad signer, already settled, …) or RPC failure.
    pub async fn settle(&self, signed: &SignedSettlement) -> Result<Mined> {
        mined(
            self.contract()
                .settle(signed.fields.to_sol(), signed.signature.clone())
                .send()
                .await,
            "settle",
        )
        .await
    }

    /// Credits `depositor` its unsettled deposit for `job` after the deadline.
    ///
    /// # Errors
    /// [`crate::bindings::RaphaEscrow::DeadlineNotReached`] as a refusal, or RPC failure.
    pub async fn refund_expired(&self, depositor: Address, job: &JobId) -> Result<Mined> {
        mined(
            self.contract()
                .refundExpired(depositor, job_key(job))
                .send()
                .await,
            "refundExpired",
        )
        .await
    }

    /// The latest block's timestamp.
    ///
    /// # Errors
    /// RPC failures.
    pub async fn chain_time(&self) -> Result<u64> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(crate::rpc("eth_getBlockByNumber"))?
            .ok_or(SettleError::Rpc {
                call: "eth_getBlockByNumber",
                reason: "no latest block".into(),
            })?;
        Ok(block.header.timestamp)
    }
}

/// What [`Escrow::deploy_test_market`] sets up, and with which dev-chain accounts. No `Debug`:
/// it holds wallet keys.
#[derive(Clone, Copy)]
pub struct TestMarketPlan<'a> {
    pub rpc_url: &'a str,
    /// Deploys the token and the escrow, and mints.
    pub deployer: &'a WalletKey,
    /// Receives the protocol's 30%.
    pub treasury: Address,
    /// The account that gets `funds` of mock USDC (the AI company).
    pub funded: Address,
    pub funds: Usdc,
    /// The hospital's account; it registers itself.
    pub hospital: &'a WalletKey,
    /// The node key whose signature the escrow accepts for this hospital.
    pub node_signer: Address,
    /// Where the hospital's 70% goes.
    pub payout: Address,
}

/// The addresses of a test market.
#[derive(Debug, Clone, Copy)]
pub struct TestMarket {
    /// The mock 6-decimal USDC.
    pub token: Address,
    pub escrow: Address,
}

/// What the AI company asks for with `rapha job deposit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepositOrder {
    pub job: JobId,
    pub fee: Usdc,
    pub hospital: Address,
    /// The refund deadline, in seconds after the chain's latest block.
    pub deadline_after_secs: u64,
    /// Refuse an RPC whose chain id differs (when set).
    pub expected_chain_id: Option<u64>,
    /// Accept an escrow whose token is not the official USDC (test chains only).
    pub test_token: bool,
}

/// The outcome of [`deposit_for_job`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepositDone {
    pub chain_id: u64,
    pub token: Address,
    pub token_kind: crate::network::TokenKind,
    pub deadline: u64,
    pub approve: Mined,
    pub deposit: Mined,
}

/// Checks the chain and the escrow's token, then approves and deposits `order.fee` for
/// `order.job`. The token must be the official USDC of the RPC's chain unless
/// `order.test_token`.
///
/// # Errors
/// [`SettleError::ChainIdMismatch`], token errors, the escrow's refusal, RPC failures.
pub async fn deposit_for_job(
    rpc_url: &str,
    escrow: Address,
    key: &WalletKey,
    order: &DepositOrder,
) -> Result<DepositDone> {
    let provider = wallet_provider(rpc_url, key)?;
    let chain_id = provider
        .get_chain_id()
        .await
        .map_err(crate::rpc("eth_chainId"))?;
    if let Some(expected) = order.expected_chain_id {
        if expected != chain_id {
            return Err(SettleError::ChainIdMismatch {
                expected,
                actual: chain_id,
            });
        }
    }
    let escrow = Escrow::at(provider, escrow);
    let token = escrow.token().await?;
    let cfg = crate::network::NetworkConfig {
        chain_id,
        rpc_url: rpc_url.to_owned(),
        escrow: escrow.address(),
        token,
        test_token: order.test_token,
    };
    let token_kind = cfg.check_token()?;
    let deadline = escrow
        .chain_time()
        .await?
        .saturating_add(order.deadline_after_secs);
    let (approve, deposit) = escrow
        .approve_and_deposit(&order.job, order.hospital, order.fee, deadline)
        .await?;
    Ok(DepositDone {
        chain_id,
        token,
        token_kind,
        deadline,
        approve,
        deposit,
    })
}
