//! Helpers shared by the configuration, keys, approvals and doctor tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rapha_testkit::node_config::{NodeConfig, SettlementSection};

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

/// The real Intel DCAP collateral rapha-attest's tests use (a well-formed collateral file).
pub fn sgx_collateral() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../rapha-attest/testdata/sgx_quote_collateral.json")
}

/// Settings of a config file written by [`ConfigSpec::write`].
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
    /// `[attestation.tpm.expected_pcrs]`: PCR index to hex digest.
    pub expected_pcrs: Vec<(u8, String)>,
    pub ak_file: PathBuf,
    /// Gramine's attestation interface (absent on a machine without SGX).
    pub quote_source: PathBuf,
    pub collateral: PathBuf,
    pub runtime: PathBuf,
    pub rpc_url: String,
    pub chain_id: u64,
    pub usdc: String,
    pub escrow: String,
    pub test_token: bool,
    pub settler_key: PathBuf,
    pub hospital: String,
    pub payout: String,
    /// `[depositors]`: publisher name to the accounts it pays from.
    pub depositors: Vec<(String, Vec<String>)>,
    pub tokens: PathBuf,
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
            expected_pcrs: vec![(0, "00".repeat(32))],
            ak_file: dir.join("state/attestation/tpm-ak.json"),
            quote_source: dir.join("no-gramine/attestation"),
            collateral: sgx_collateral(),
            runtime: PathBuf::from("/usr/sbin/runc"),
            rpc_url: "http://127.0.0.1:9".into(),
            chain_id: 137,
            usdc: "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359".into(),
            escrow: "0x0000000000000000000000000000000000000001".into(),
            test_token: false,
            settler_key: dir.join("settler.key"),
            hospital: "0x00000000000000000000000000000000000000a1".into(),
            payout: "0x00000000000000000000000000000000000000b2".into(),
            depositors: vec![(
                "acme-ai".into(),
                vec!["0x00000000000000000000000000000000000000c3".into()],
            )],
            tokens: dir.join("tokens"),
            data_dir: dir.join("data"),
            state_dir: dir.join("state"),
        }
    }

    pub fn to_toml(&self) -> String {
        let q = |p: &Path| format!("{:?}", p.display().to_string());
        let pcrs: Vec<String> = self
            .expected_pcrs
            .iter()
            .map(|(i, d)| format!("\"{i}\" = \"{d}\""))
            .collect();
        let attestation = format!(
            r#"[attestation.tpm]
tcti = "{tcti}"
vendor_root_ca = {root}
ak_file = {ak}
expected_pcrs = {{ {pcrs} }}

[attestation.sgx]
quote_source = {quote_source}
collateral_file = {collateral}
mrenclave = ["{mrenclave}"]"#,
            tcti = self.tcti,
            root = q(&self.vendor_root),
            ak = q(&self.ak_file),
            pcrs = pcrs.join(", "),
            quote_source = q(&self.quote_source),
            collateral = q(&self.collateral),
            mrenclave = "00".repeat(32),
        );
        NodeConfig {
            mode: self.mode.into(),
            dicomweb_url: self.dicomweb_url.clone(),
            ca_file: self.ca_file.clone(),
            dicomweb_auth: None,
            dicom_scope: true,
            hmac_key: self.hmac.clone(),
            node_key: self.node_key.clone(),
            dpo_keys: self.dpo_keys.clone(),
            opt_out: self.opt_out.clone(),
            labels: None,
            commit_quantum_secs: None,
            policy: policy_dir().join("rapha.rego"),
            modalities: vec!["CR".into(), "DX".into()],
            min_fee_usdc: "100.00".into(),
            min_patients: None,
            max_file_bytes: 100 << 20,
            max_total_bytes: 200 << 20,
            max_jobs: 5,
            window_hours: 720,
            trust: self.trust.clone(),
            attestation,
            runtime: self.runtime.clone(),
            run_quantum_secs: None,
            rpc_url: self.rpc_url.clone(),
            chain_id: self.chain_id,
            usdc: self.usdc.clone(),
            escrow: self.escrow.clone(),
            confirmations: None,
            test_token: self.test_token,
            settlement: Some(SettlementSection {
                settler_key: self.settler_key.clone(),
                hospital: self.hospital.clone(),
                payout: self.payout.clone(),
            }),
            depositors: self.depositors.clone(),
            api_tokens: Some(self.tokens.clone()),
            extra: String::new(),
            data_dir: self.data_dir.clone(),
            state_dir: self.state_dir.clone(),
        }
        .to_toml()
    }

    /// Writes the config to `path` and returns it.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.to_toml()).unwrap();
        path.to_owned()
    }
}
