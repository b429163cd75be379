//! `rapha-demo up --config FILE`: the local parts a demo node's configuration names, so that
//! `rapha-node serve --config FILE` runs it as is. It serves a synthetic cohort on the
//! configuration's PACS URL with the embedded demo PACS, starts anvil on its `[chain] rpc_url`
//! (state kept beside the configuration, so a second `up` finds the same contracts), deploys
//! the mock USDC and the escrow once, and writes what they are into the configuration and its
//! key files. It then stays in the foreground until interrupted.
//!
//! Demo only (**I8**): it lives here, never in `rapha-node`, because it deploys test contracts
//! and hands out anvil's dev keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use alloy::providers::{Provider, ProviderBuilder};
use anyhow::{anyhow, bail, Context, Result};
use rapha_core::Usdc;
use rapha_node::config::Config;
use rapha_node::init::DEMO_PUBLISHER;
use rapha_policy::Mode;
use rapha_receipt::NodeKey;
use rapha_settle::{Escrow, TestMarketPlan, WalletKey};
use rapha_testkit::cohort::{generate, CohortManifest, CohortSpec};
use rapha_testkit::services::{Anvil, AnvilOptions};

use crate::pacs::DemoPacs;

/// Arguments of `rapha-demo up`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example (docs/configuration.md walks through it):
  rapha-node init --demo --dir demo-node
  rapha-demo up --config demo-node/node.toml       leave it running
  rapha-node serve --config demo-node/node.toml    in another terminal

It writes, beside the configuration: demo-pacs/ (the synthetic cohort), chain/ (anvil's
state), accessions.txt (the labelled studies, for `rapha job submit --accessions-file`),
keys/settler.key (the hospital's gas account) and keys/company-wallet.key (the AI company's
funded account, for `rapha job deposit --key`); and into the configuration: the escrow and
token addresses, the hospital's accounts and the demo publisher's depositor. Stop it with
Ctrl-C; a second `up` reuses the cohort and the contracts.")]
pub struct UpArgs {
    /// The demo node's configuration (`rapha-node init --demo --dir DIR` wrote DIR/node.toml).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Synthetic studies to generate (the first `up` only; later ones reuse the cohort).
    #[arg(long, default_value_t = 120)]
    pub studies: usize,
    /// Cohort generator seed (the first `up` only).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Mock USDC minted to the AI company's account at deployment.
const COMPANY_FUNDS: u64 = 10_000_000_000; // 10,000.00 USDC

/// Runs `up`; returns the process exit code (0 after a clean stop, 1 on any error).
pub fn up(args: &UpArgs) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rapha-demo up: {e:#}");
            1
        }
    }
}

fn run(args: &UpArgs) -> Result<()> {
    let config =
        Config::load(&args.config).with_context(|| format!("loading {}", args.config.display()))?;
    if config.mode != Mode::Demo {
        bail!(
            "{} is not a demo configuration (mode = \"demo\"); rapha-demo up never touches a \
             production node",
            args.config.display()
        );
    }
    let base = args
        .config
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."));

    let cohort = prepare_cohort(&config, &base, args)?;
    let pacs_addr = loopback_addr(&pacs_url(&config)?, "/dicom-web")
        .context("[[dicomweb.endpoints]] url of a demo node")?;
    let pacs = DemoPacs::start_on(&base.join("demo-pacs/dicom"), pacs_addr)?;
    println!(
        "demo PACS     {} ({} studies, {} instances; {} labelled studies listed in {})",
        pacs.dicomweb_url(),
        pacs.studies,
        pacs.instances,
        cohort.labelled,
        cohort.accessions.display()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let node_signer = NodeKey::load(&config.keys.node_key_file)
        .map_err(|e| anyhow!("{}: {e}", config.keys.node_key_file.display()))?
        .address();
    let chain = start_chain(&config, &base, &args.config, node_signer, &rt)?;
    let env = write_company_env(&base, &config, &chain, node_signer)?;
    println!(
        "chain         {} (chain id {})",
        config.chain.rpc_url, config.chain.chain_id
    );
    println!("escrow        {}", chain.market.escrow);
    println!("mock USDC     {}", chain.market.token);
    println!(
        "AI company    {} (funded; key in {})",
        chain.company,
        base.join("keys/company-wallet.key").display()
    );
    println!("node signer   {node_signer}");
    println!(
        "for the AI company: {} (RPC, ESCROW, HOSPITAL, NODE_ADDRESS for `rapha job deposit` and \
         `rapha job fetch --node-address`)",
        env.display()
    );
    println!("next, in another terminal:");
    println!("  rapha-node serve --config {}", args.config.display());
    println!("stop with Ctrl-C (the cohort and the chain's state are kept for the next `up`)");

    rt.block_on(wait_for_stop())?;
    drop(pacs);
    drop(chain);
    println!("stopped");
    Ok(())
}

struct PreparedCohort {
    accessions: PathBuf,
    labelled: usize,
}

/// Generates the synthetic cohort once (`demo-pacs/` beside the configuration), then writes
/// the node's label table and opt-out list from it, and the accession list a publisher submits.
fn prepare_cohort(config: &Config, base: &Path, args: &UpArgs) -> Result<PreparedCohort> {
    let dir = base.join("demo-pacs");
    let manifest_path = dir.join("manifest.json");
    if manifest_path.exists() {
        println!("cohort        reusing {}", dir.display());
    } else {
        println!(
            "cohort        generating {} synthetic studies into {}",
            args.studies,
            dir.display()
        );
        generate(&CohortSpec {
            rle_fraction: 0.2,
            ..CohortSpec::new(args.studies, args.seed, &dir)
        })
        .context("generating the synthetic cohort")?;
    }
    let manifest: CohortManifest = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| format!("parsing {}", manifest_path.display()))?;
    let labels =
        config.cohort.labels_file.as_ref().ok_or_else(|| {
            anyhow!("[cohort] labels_file is not set; the demo's jobs need labels")
        })?;
    copy_into(&dir.join("labels.csv"), labels)?;
    copy_into(&dir.join("optouts.csv"), &config.cohort.opt_out_file)?;
    let accessions = manifest.labelled_accessions();
    let list = base.join("accessions.txt");
    let mut text =
        String::from("# the demo cohort's labelled studies: rapha job submit --accessions-file\n");
    for a in &accessions {
        text.push_str(a);
        text.push('\n');
    }
    std::fs::write(&list, text).with_context(|| format!("writing {}", list.display()))?;
    Ok(PreparedCohort {
        accessions: list,
        labelled: accessions.len(),
    })
}

fn copy_into(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

fn pacs_url(config: &Config) -> Result<String> {
    match config.dicomweb.endpoints.as_slice() {
        [one] => Ok(one.url.clone()),
        _ => bail!("a demo node has exactly one [[dicomweb.endpoints]], the demo PACS"),
    }
}

/// `http://127.0.0.1:PORT<path>` → the socket address, refusing anything else: the demo's
/// services listen on loopback only.
fn loopback_addr(url: &str, path: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url:?} is not an http:// URL"))?;
    let (host, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if tail.trim_end_matches('/') != path {
        bail!("{url:?} must end in {path:?}");
    }
    let addr: SocketAddr = host.parse().map_err(|_| {
        anyhow!("{url:?}: the demo needs an IP address and port, e.g. 127.0.0.1:8042")
    })?;
    if !addr.ip().is_loopback() || addr.port() == 0 {
        bail!("{url:?}: the demo's services listen on a loopback address with a port");
    }
    Ok(addr)
}

struct RunningChain {
    _anvil: Option<Anvil>,
    market: rapha_settle::TestMarket,
    company: Address,
    hospital: Address,
}

/// `company.env` beside the configuration: what a hospital tells the AI company, as shell
/// variables (`source` it).
fn write_company_env(
    base: &Path,
    config: &Config,
    chain: &RunningChain,
    node_signer: Address,
) -> Result<PathBuf> {
    let path = base.join("company.env");
    let text = format!(
        "# What the hospital tells the AI company (written by rapha-demo up)\n\
         RPC={}\nESCROW={}\nHOSPITAL={}\nNODE_ADDRESS={node_signer}\n",
        config.chain.rpc_url, chain.market.escrow, chain.hospital
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// anvil on `[chain] rpc_url` with its state beside the configuration, and the contracts: the
/// ones the configuration names when the chain has them, else a fresh deployment written into
/// the configuration.
fn start_chain(
    config: &Config,
    base: &Path,
    config_path: &Path,
    node_signer: Address,
    rt: &tokio::runtime::Runtime,
) -> Result<RunningChain> {
    let addr =
        loopback_addr(&config.chain.rpc_url, "").context("[chain] rpc_url of a demo node")?;
    let state_dir = base.join("chain");
    std::fs::create_dir_all(&state_dir)?;
    let company_key = base.join("keys/company-wallet.key");
    let anvil = if std::net::TcpStream::connect(addr).is_ok() {
        println!(
            "chain         reusing the RPC already listening at {}",
            config.chain.rpc_url
        );
        None
    } else {
        Some(
            Anvil::start(AnvilOptions {
                chain_id: config.chain.chain_id,
                // Mine each transaction as it arrives: the demo's deposits and settlements
                // should not wait for the next block.
                block_time: None,
                state_file: Some(state_dir.join("anvil-state.json")),
                port: Some(addr.port()),
            })
            .map_err(|e| anyhow!("starting anvil on {addr}: {e}"))?
            .ok_or_else(|| {
                anyhow!("anvil is not installed (./scripts/demo installs it; or set $RAPHA_ANVIL)")
            })?,
        )
    };
    let provider = ProviderBuilder::new().connect_http(
        config
            .chain
            .rpc_url
            .parse()
            .with_context(|| format!("[chain] rpc_url {:?}", config.chain.rpc_url))?,
    );
    let chain_id = rt
        .block_on(provider.get_chain_id())
        .with_context(|| format!("asking {} for its chain id", config.chain.rpc_url))?;
    if chain_id != config.chain.chain_id {
        bail!(
            "the chain at {} has id {chain_id}, the configuration says {}",
            config.chain.rpc_url,
            config.chain.chain_id
        );
    }

    // Contracts already deployed on this chain (an earlier `up`): reuse them.
    let named = (
        config.chain.escrow_address.parse::<Address>(),
        config.chain.usdc_address.parse::<Address>(),
    );
    if let (Ok(escrow), Ok(token)) = named {
        if escrow != Address::ZERO && company_key.exists() {
            let code = rt
                .block_on(async { provider.get_code_at(escrow).await })
                .context("reading the escrow's code")?;
            if !code.is_empty() {
                let company = WalletKey::from_hex(
                    std::fs::read_to_string(&company_key)
                        .with_context(|| format!("reading {}", company_key.display()))?
                        .trim(),
                )
                .map_err(|e| anyhow!("{}: {e}", company_key.display()))?;
                let hospital = config
                    .settlement
                    .as_ref()
                    .and_then(|s| s.hospital_address.parse::<Address>().ok())
                    .ok_or_else(|| anyhow!("[settlement] hospital_address is not an address"))?;
                println!("contracts     reusing the escrow the configuration names");
                return Ok(RunningChain {
                    _anvil: anvil,
                    market: rapha_settle::TestMarket { token, escrow },
                    company: company.address(),
                    hospital,
                });
            }
        }
    }
    let Some(anvil) = anvil else {
        bail!(
            "an RPC already listens at {} but has none of this node's contracts; stop it, or \
             point [chain] rpc_url at a free port and run `rapha-demo up` again",
            config.chain.rpc_url
        );
    };
    let accounts = anvil.dev_accounts();
    let key_hex = |i: usize| -> Result<String> {
        accounts
            .get(i)
            .map(|(_, k)| k.clone())
            .ok_or_else(|| anyhow!("anvil reported fewer than {} dev accounts", i + 1))
    };
    let wallet = |i: usize| -> Result<WalletKey> {
        WalletKey::from_hex(&key_hex(i)?).map_err(|e| anyhow!("anvil dev key {i}: {e}"))
    };
    // anvil's dev accounts: 0 deploys, 1 is the hospital (gas and payout), 2 the AI company,
    // 3 the protocol's treasury.
    let (deployer, hospital, company, treasury) = (wallet(0)?, wallet(1)?, wallet(2)?, wallet(3)?);
    let market = rt
        .block_on(Escrow::deploy_test_market(&TestMarketPlan {
            rpc_url: &config.chain.rpc_url,
            deployer: &deployer,
            treasury: treasury.address(),
            funded: company.address(),
            funds: Usdc::from_base_units(COMPANY_FUNDS),
            hospital: &hospital,
            node_signer,
            payout: hospital.address(),
        }))
        .map_err(|e| anyhow!("deploying the demo escrow and mock USDC: {e}"))?;
    println!("contracts     deployed the mock USDC and the escrow");

    let settler = config
        .settlement
        .as_ref()
        .map(|s| s.settler_key_file.clone())
        .unwrap_or_else(|| base.join("keys/settler.key"));
    replace_secret(&settler, &key_hex(1)?)?;
    replace_secret(&company_key, &key_hex(2)?)?;
    write_chain_settings(config_path, &market, hospital.address(), company.address())?;
    Ok(RunningChain {
        _anvil: Some(anvil),
        market,
        company: company.address(),
        hospital: hospital.address(),
    })
}

/// Writes a dev wallet key (hex, mode 0600), replacing an earlier `up`'s.
fn replace_secret(path: &Path, hex_key: &str) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("replacing {}", path.display())),
    }
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_key.trim_start_matches("0x"), &mut *secret)
        .map_err(|e| anyhow!("anvil dev key: {e}"))?;
    rapha_policy::write_secret_hex(path, &secret)
        .with_context(|| format!("writing {}", path.display()))
}

/// Edits the configuration in place (comments and layout kept): the contracts, the hospital's
/// accounts, and the AI company's account as the demo publisher's depositor.
fn write_chain_settings(
    path: &Path,
    market: &rapha_settle::TestMarket,
    hospital: Address,
    company: Address,
) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    let mut set = |table: &str, key: &str, value: toml_edit::Value| {
        let item = &mut doc[table][key];
        // Keep the comment after the value.
        let decor = item.as_value().map(|v| v.decor().clone());
        *item = toml_edit::value(value);
        if let (Some(d), Some(v)) = (decor, item.as_value_mut()) {
            *v.decor_mut() = d;
        }
    };
    set("chain", "usdc_address", market.token.to_string().into());
    set("chain", "escrow_address", market.escrow.to_string().into());
    set(
        "settlement",
        "hospital_address",
        hospital.to_string().into(),
    );
    set("settlement", "payout_address", hospital.to_string().into());
    let mut depositors = toml_edit::Array::new();
    depositors.push(company.to_string());
    set("depositors", DEMO_PUBLISHER, depositors.into());
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, doc.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    // What was written must load: never leave the node a configuration it refuses.
    Config::load(path).with_context(|| format!("re-reading {}", path.display()))?;
    Ok(())
}

/// Until SIGINT or SIGTERM.
async fn wait_for_stop() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_services_listen_on_loopback_only() {
        assert_eq!(
            loopback_addr("http://127.0.0.1:8042/dicom-web", "/dicom-web").unwrap(),
            "127.0.0.1:8042".parse().unwrap()
        );
        assert!(loopback_addr("http://127.0.0.1:8545", "").is_ok());
        for bad in [
            "http://10.0.0.5:8042/dicom-web",
            "http://0.0.0.0:8042/dicom-web",
            "https://127.0.0.1:8042/dicom-web",
            "http://pacs.local:8042/dicom-web",
            "http://127.0.0.1/dicom-web",
            "http://127.0.0.1:8042/wado",
        ] {
            assert!(loopback_addr(bad, "/dicom-web").is_err(), "{bad}");
        }
    }
}
