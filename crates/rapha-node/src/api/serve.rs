//! `rapha-node serve`: the HTTP API over the pipeline built from the node configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{ApiState, Tokens};
use crate::config::Config;
use crate::run_job::{node_from_config, RunJobArgs};

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Node configuration (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8420")]
    pub listen: SocketAddr,
    /// Token file: one `<publisher|dpo|admin> <token>` per line (mode 0600).
    #[arg(long)]
    pub tokens: PathBuf,
    /// The hospital's account registered in the escrow (0x...).
    #[arg(long)]
    pub hospital: String,
    /// The payout account registered for the hospital (0x...).
    #[arg(long)]
    pub payout: String,
    /// File with the hex private key that pays gas for settlements (mode 0600).
    #[arg(long)]
    pub settler_key_file: PathBuf,
    /// Seconds a deposit must stay non-refundable after it is checked.
    #[arg(long, default_value_t = 600)]
    pub run_window_secs: u64,
}

/// Builds the node, resumes every unfinished job, then serves until killed.
///
/// # Errors
/// An unreadable configuration or token file, a node that cannot be built, a listener that
/// cannot bind.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let tokens = Tokens::load(&args.tokens)?;
    let cfg = Config::load(&args.config)?;
    let node_args = RunJobArgs {
        config: args.config.clone(),
        bundle: None,
        request: None,
        hospital: args.hospital.clone(),
        payout: args.payout.clone(),
        settler_key_file: args.settler_key_file.clone(),
        run_window_secs: args.run_window_secs,
    };
    // The node (and its chain client's own runtime) is built outside the server's runtime.
    let mut node = node_from_config(&cfg, &node_args)?;
    for (job, state) in node.resume_all().context("resuming unfinished jobs")? {
        tracing::info!(%job, state = state.as_str(), "job resumed");
    }
    let state = ApiState::new(node, cfg.paths.state_dir.join("jobs.sqlite"), tokens);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        tracing::info!(listen = %args.listen, "rapha-node API listening");
        super::serve(listener, state.clone())
            .await
            .context("serving the API")
    })?;
    drop(rt);
    drop(state);
    Ok(())
}
