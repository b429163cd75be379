//! Helpers shared by the configuration, keys, approvals and doctor tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `rapha-node` binary.
pub fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rapha-node"))
        .args(args)
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The repository's `policy/` directory.
pub fn policy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policy")
}

/// Settings of a config file written by [`write_config`].
pub struct ConfigSpec {
    pub mode: &'static str,
    pub dicomweb_url: String,
    pub ca_file: Option<PathBuf>,
    pub hmac: PathBuf,
    pub node_key: PathBuf,
    pub dpo_keys: Vec<String>,
    pub opt_out: PathBuf,
    pub trust: PathBuf,
    pub tcti: String,
    pub vendor_root: PathBuf,
    pub runtime: PathBuf,
    pub rpc_url: String,
    pub chain_id: u64,
    pub usdc: String,
    pub escrow: String,
    pub test_token: bool,
    pub data_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl ConfigSpec {
    /// A spec whose files all live under `dir` (not created).
    pub fn under(dir: &Path) -> Self {
        Self {
            mode: "production",
            dicomweb_url: "https://127.0.0.1:9/dicom-web".into(),
            ca_file: None,
            hmac: dir.join("hmac.key"),
            node_key: dir.join("node.key"),
            dpo_keys: vec![],
            opt_out: dir.join("optouts.csv"),
            trust: dir.join("trust"),
            tcti: "swtpm:host=127.0.0.1,port=9".into(),
            vendor_root: dir.join("vendor-root.pem"),
            runtime: PathBuf::from("/usr/sbin/runc"),
            rpc_url: "http://127.0.0.1:9".into(),
            chain_id: 137,
            usdc: "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359".into(),
            escrow: "0x0000000000000000000000000000000000000001".into(),
            test_token: false,
            data_dir: dir.join("data"),
            state_dir: dir.join("state"),
        }
    }

    pub fn to_toml(&self) -> String {
        let q = |p: &Path| format!("{:?}", p.display().to_string());
        let ca = self
            .ca_file
            .as_ref()
            .map_or(String::new(), |c| format!("ca_file = {}\n", q(c)));
        let dpo: Vec<String> = self.dpo_keys.iter().map(|k| format!("{k:?}")).collect();
        format!(
            r#"mode = "{mode}"

[[dicomweb.endpoints]]
url = "{url}"
{ca}
[dicom.scope]
max_date_range_days = 366
max_limit = 1000
max_list = 100
page_size = 50

[keys]
hmac_key_file = {hmac}
node_key_file = {node}
dpo_public_keys = [{dpo}]

[cohort]
opt_out_file = {optout}

[policy]
path = {policy}
modalities = ["CR", "DX"]
min_fee_usdc = "100.00"

[policy.outputs]
kinds = ["safetensors", "metrics-json"]
max_file_bytes = 104857600
max_total_bytes = 209715200

[policy.budget]
max_jobs = 5
window_hours = 720

[trust]
store = {trust}

[attestation.tpm]
tcti = "{tcti}"
vendor_root_ca = {root}

[attestation.sgx]
mrenclave = ["{mrenclave}"]

[trainer]
runtime = {runtime}

[chain]
rpc_url = "{rpc}"
chain_id = {chain_id}
usdc_address = "{usdc}"
escrow_address = "{escrow}"
test_token = {test_token}

[paths]
data_dir = {data}
state_dir = {state}
"#,
            mode = self.mode,
            url = self.dicomweb_url,
            hmac = q(&self.hmac),
            node = q(&self.node_key),
            dpo = dpo.join(", "),
            optout = q(&self.opt_out),
            policy = q(&policy_dir().join("rapha.rego")),
            trust = q(&self.trust),
            tcti = self.tcti,
            root = q(&self.vendor_root),
            mrenclave = "00".repeat(32),
            runtime = q(&self.runtime),
            rpc = self.rpc_url,
            chain_id = self.chain_id,
            usdc = self.usdc,
            escrow = self.escrow,
            test_token = self.test_token,
            data = q(&self.data_dir),
            state = q(&self.state_dir),
        )
    }

    /// Writes the config to `path` and returns it.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.to_toml()).unwrap();
        path.to_owned()
    }
}
