//! `rapha-node serve`: the HTTP API over the pipeline built from the node configuration
//! ([`crate::node_build::node_from_config`], the same as `run-job`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{ApiState, Tokens};
use crate::config::Config;
use crate::node_build::{node_from_config, SettlementOverrides};

/// Arguments of `serve`.
#[derive(Debug, Args)]
#[command(after_help = "\
Read from the configuration file: everything. `serve --config FILE` alone starts a node:
  [api]         listen (default 127.0.0.1:8420), tokens_file, max_bundle_bytes (default
                2 GiB; uploads are stored under paths.data_dir/bundles),
                max_downloads_per_caller, download_timeout_secs, download_stall_secs,
                publisher_calls_per_sec (default 2), publisher_call_burst (default 30)
  [settlement]  hospital_address, payout_address, settler_key_file, settle_margin_secs
  [attestation] production: TPM (tcti, vendor_root_ca, expected_pcrs, ak_file) and SGX
                (quote_source, collateral_file, mrenclave/mrsigner)
  [console]     listen (default 127.0.0.1:8421), tls_cert_file + tls_key_file (needed off
                loopback), rp_id, origins, session_minutes: the DPO console on its own
                listener (absent: no console)
The flags above override the configuration for this run only.")]
pub struct ServeArgs {
    /// Node configuration (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Overrides api.listen: address to listen on.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Overrides api.tokens_file: one `<publisher|dpo|admin> <token>` per line (mode 0600).
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    #[command(flatten)]
    pub settlement: SettlementOverrides,
}

/// Builds the node, takes every unfinished job through its quick steps, then serves until
/// killed (the background driver takes the jobs on).
///
/// # Errors
/// An unreadable configuration or token file, a node that cannot be built, a listener that
/// cannot bind.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    // A token file named on the command line is checked before anything else is touched.
    let cli_tokens = args.tokens.as_deref().map(Tokens::load).transpose()?;
    let mut cfg = Config::load(&args.config)?;
    let tokens = match cli_tokens {
        Some(t) => t,
        None => {
            let file = cfg.api.as_ref().map(|a| a.tokens_file.clone()).context(
                "no token file: set [api] tokens_file in the configuration (or pass --tokens)",
            )?;
            Tokens::load(&file)?
        }
    };
    let listen = args
        .listen
        .or_else(|| cfg.api.as_ref().map(|a| a.listen))
        .unwrap_or_else(crate::config::default_listen);
    args.settlement.apply(&mut cfg)?;
    // The console's TLS files are read before the node is built: a bad certificate stops the
    // start, not the first browser.
    let console_tls = cfg
        .console
        .as_ref()
        .and_then(|c| c.tls())
        .map(|(cert, key)| crate::console::tls::server_config(cert, key))
        .transpose()?;
    // The node (and its chain client's own runtime) is built outside the server's runtime.
    let mut node = node_from_config(&cfg)?;
    // Quick steps only: the background driver takes every job on from here, so a job whose
    // step is slow or keeps failing never keeps the node from serving.
    for (job, state) in node.start_up().context("resuming unfinished jobs")? {
        tracing::info!(%job, state = state.as_str(), "job resumed");
    }
    let max_bundle = cfg
        .api
        .as_ref()
        .map_or_else(crate::config::default_max_bundle_bytes, |a| {
            a.max_bundle_bytes
        });
    // Uploads (up to max_bundle_bytes each) go to the bulk data disk, not the state disk.
    let quotas = cfg
        .api
        .as_ref()
        .map_or_else(super::Quotas::default, |a| super::Quotas {
            max_jobs_in_flight: a.max_jobs_in_flight,
            max_bundle_bytes: a.publisher_bundle_quota(),
        });
    let state = ApiState::new(node, cfg.paths.state_dir.join("jobs.sqlite"), tokens)
        .with_bundle_dir(cfg.paths.data_dir.join("bundles"))
        .with_bundle_limit(max_bundle)
        .with_quotas(quotas)
        .with_download_limits(
            cfg.api
                .as_ref()
                .map_or_else(super::DownloadLimits::default, |a| a.download_limits()),
        )
        .with_publisher_rate(
            cfg.api
                .as_ref()
                .map_or_else(super::RateLimit::default, |a| a.publisher_rate()),
        );
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        tracing::info!(%listen, "rapha-node API listening");
        // Tests and supervisors wait for this line before connecting.
        eprintln!("rapha-node API listening on {}", listener.local_addr()?);
        let console = match &cfg.console {
            Some(c) => {
                let console_listener = tokio::net::TcpListener::bind(c.listen)
                    .await
                    .with_context(|| format!("binding the console on {}", c.listen))?;
                let scheme = if console_tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                tracing::info!(listen = %c.listen, "rapha-node console listening");
                eprintln!(
                    "rapha-node console listening on {scheme}://{}",
                    console_listener.local_addr()?
                );
                let console_state = crate::console::ConsoleState::new(state.clone(), c)
                    .with_node_config(cfg.clone());
                Some(tokio::spawn(crate::console::serve(
                    console_listener,
                    console_tls,
                    console_state,
                )))
            }
            None => None,
        };
        let served = super::serve(listener, state.clone())
            .await
            .context("serving the API");
        if let Some(c) = console {
            c.abort();
        }
        served
    })?;
    drop(rt);
    drop(state);
    Ok(())
}
