//! anvil (local EVM chain) with Polygon's chain id by default, restartable on the same port and
//! state file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::{find_binary, free_port, Proc, Workdir};
use super::{missing, with_http, HarnessError, START_ATTEMPTS};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start anvil. `Default` is chain id 137 (Polygon PoS), one block a second, a state
/// file in the harness's directory, a free port.
#[derive(Debug, Clone)]
pub struct AnvilOptions {
    pub chain_id: u64,
    pub block_time: Option<u64>,
    /// `--state FILE`: loaded at start if it exists, dumped on (graceful) stop. `None` uses a
    /// file in the harness's temporary directory, so [`Anvil::restart`] always keeps state.
    pub state_file: Option<PathBuf>,
    pub port: Option<u16>,
}

impl Default for AnvilOptions {
    fn default() -> Self {
        AnvilOptions {
            chain_id: 137,
            block_time: Some(1),
            state_file: None,
            port: None,
        }
    }
}

/// A running anvil node; dropped = stopped (SIGTERM, so the state file is written).
pub struct Anvil {
    proc: Proc,
    dir: Workdir,
    bin: PathBuf,
    opts: AnvilOptions,
    port: u16,
    state_file: PathBuf,
    accounts: Vec<(String, String)>,
}

impl std::fmt::Debug for Anvil {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anvil")
            .field("rpc_url", &self.rpc_url())
            .finish_non_exhaustive()
    }
}

impl Anvil {
    /// Starts anvil (binary `$RAPHA_ANVIL`, else the npm cache path, else `anvil` in PATH).
    /// Ready once `eth_chainId` answers.
    pub fn start(opts: AnvilOptions) -> Result<Option<Anvil>, HarnessError> {
        let home_candidate = std::env::var_os("HOME").map(|h| {
            PathBuf::from(h)
                .join(".cache/rapha/npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
        });
        let candidates: Vec<&str> = home_candidate.iter().filter_map(|p| p.to_str()).collect();
        let Some(bin) = find_binary(Some("RAPHA_ANVIL"), "anvil", &candidates) else {
            return missing(
                "anvil",
                "no binary at $RAPHA_ANVIL, the npm cache, or PATH".into(),
            );
        };
        let mut dir = Workdir::new("anvil")?;
        let state_file = opts
            .state_file
            .clone()
            .unwrap_or_else(|| dir.path().join("state.json"));
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = match opts.port {
                Some(p) => p,
                None => free_port()?,
            };
            match launch(&bin, &dir, &opts, port, &state_file) {
                Ok(proc) => {
                    let accounts =
                        parse_accounts(&std::fs::read_to_string(dir.log()).unwrap_or_default());
                    return Ok(Some(Anvil {
                        proc,
                        dir,
                        bin,
                        opts,
                        port,
                        state_file,
                        accounts,
                    }));
                }
                Err(e @ (HarnessError::Exited { .. } | HarnessError::NotReady { .. }))
                    if opts.port.is_none() =>
                {
                    last = Some(e);
                }
                Err(e) => {
                    dir.keep();
                    return Err(e);
                }
            }
        }
        dir.keep();
        Err(last.unwrap_or(HarnessError::NoFreePort))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn chain_id(&self) -> u64 {
        self.opts.chain_id
    }

    /// The state file anvil loads at start and writes on stop.
    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// anvil's dev accounts (from its default mnemonic), as printed at start-up:
    /// `(address "0x…", private key "0x…")`.
    pub fn dev_accounts(&self) -> Vec<(String, String)> {
        self.accounts.clone()
    }

    /// Stops anvil with SIGTERM (so the state file is dumped) and starts it again on the same
    /// port and state file.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.proc.stop();
        let mut last = None;
        // The old socket may linger for a moment; the port is ours, so retry on it.
        for _ in 0..START_ATTEMPTS {
            match launch(
                &self.bin,
                &self.dir,
                &self.opts,
                self.port,
                &self.state_file,
            ) {
                Ok(proc) => {
                    self.proc = proc;
                    return Ok(());
                }
                Err(e @ HarnessError::Exited { .. }) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => {
                    self.dir.keep();
                    return Err(e);
                }
            }
        }
        self.dir.keep();
        Err(last.unwrap_or(HarnessError::NoFreePort))
    }

    /// One JSON-RPC call; returns the `result` member (test convenience).
    pub fn rpc(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, HarnessError> {
        rpc(&self.rpc_url(), method, params, Duration::from_secs(30))
    }

    pub fn log_path(&self) -> &Path {
        self.dir.log()
    }
}

fn launch(
    bin: &Path,
    dir: &Workdir,
    opts: &AnvilOptions,
    port: u16,
    state: &Path,
) -> Result<Proc, HarnessError> {
    let mut args: Vec<OsString> = vec![
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string().into(),
        "--chain-id".into(),
        opts.chain_id.to_string().into(),
        "--state".into(),
        state.as_os_str().to_owned(),
    ];
    if let Some(bt) = opts.block_time {
        args.push("--block-time".into());
        args.push(bt.to_string().into());
    }
    let mut proc = Proc::spawn("anvil", bin, &args, dir.path(), dir.log())?;
    let url = format!("http://127.0.0.1:{port}");
    let want = format!("0x{:x}", opts.chain_id);
    proc.wait_ready(READY_TIMEOUT, || {
        rpc(
            &url,
            "eth_chainId",
            serde_json::json!([]),
            Duration::from_secs(2),
        )
        .is_ok_and(|v| v.as_str().is_some_and(|s| s == want))
    })?;
    Ok(proc)
}

fn rpc(
    url: &str,
    method: &str,
    params: serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, HarnessError> {
    let body = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let err = |detail: String| HarnessError::Rpc {
        method: method.to_owned(),
        detail,
    };
    let answer: serde_json::Value = with_http(false, |c| {
        let r = c
            .post(url)
            .timeout(timeout)
            .json(&body)
            .send()
            .map_err(|e| HarnessError::http(format!("POST {url}"), e))?;
        r.json()
            .map_err(|e| HarnessError::http(format!("POST {url}"), e))
    })
    .map_err(|e| err(e.to_string()))?;
    if let Some(e) = answer.get("error") {
        return Err(err(e.to_string()));
    }
    answer
        .get("result")
        .cloned()
        .ok_or_else(|| err(format!("no result in {answer}")))
}

/// Reads anvil's start-up banner: `(i) 0x<40 hex> (… ETH)` lines are addresses, `(i) 0x<64
/// hex>` lines are private keys, in the same order.
fn parse_accounts(log: &str) -> Vec<(String, String)> {
    let mut addrs = Vec::new();
    let mut keys = Vec::new();
    for line in log.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix('(') else {
            continue;
        };
        let Some((_, rest)) = rest.split_once(") ") else {
            continue;
        };
        let token = rest.split_whitespace().next().unwrap_or("");
        let hex_ok = |n: usize| {
            token.len() == n + 2
                && token.starts_with("0x")
                && token[2..].chars().all(|c| c.is_ascii_hexdigit())
        };
        if hex_ok(40) {
            addrs.push(token.to_owned());
        } else if hex_ok(64) {
            keys.push(token.to_owned());
        }
    }
    // The banner is printed once per start; the first block of each is the one we want.
    let n = addrs.len().min(keys.len()).min(10);
    addrs.into_iter().zip(keys).take(n).collect()
}
