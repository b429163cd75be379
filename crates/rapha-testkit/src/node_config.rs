//! The `rapha-node` configuration file the node's tests and the node bench write: one template,
//! its values and optional sections as fields (docs/configuration.md says what each means).

use std::path::{Path, PathBuf};

/// The `[settlement]` section.
pub struct SettlementSection {
    pub settler_key: PathBuf,
    pub hospital: String,
    pub payout: String,
}

/// A node configuration, rendered by [`NodeConfig::to_toml`] in the order the node's
/// documentation lists the sections; tests edit the text by replacing its lines.
pub struct NodeConfig {
    pub mode: String,
    pub dicomweb_url: String,
    pub ca_file: Option<PathBuf>,
    /// The endpoint's `auth` inline table (e.g. `{ kind = "header", name = "X-Api-Key",
    /// value_file = "pacs-key" }`); none: no `auth` key.
    pub dicomweb_auth: Option<String>,
    /// `[dicom.scope]` with the tests' bounds: a year, 1000 results, 100 listed, pages of 50.
    pub dicom_scope: bool,
    pub hmac_key: PathBuf,
    pub node_key: PathBuf,
    pub dpo_keys: Vec<String>,
    pub opt_out: PathBuf,
    pub labels: Option<PathBuf>,
    /// `commit_quantum_secs`: 1 commits cohorts as they are built, to the second (the default
    /// quantum is 300 s).
    pub commit_quantum_secs: Option<u64>,
    pub policy: PathBuf,
    pub modalities: Vec<String>,
    pub min_fee_usdc: String,
    /// `min_patients` and `min_validation_patients` (the node's defaults when `None`).
    pub min_patients: Option<(u32, u32)>,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    pub max_jobs: u64,
    pub window_hours: u64,
    pub trust: PathBuf,
    /// The attestation sections as written (`[attestation]` for none).
    pub attestation: String,
    pub runtime: PathBuf,
    /// `run_quantum_secs`: 1 ends runs as the trainer exits, to the second (the default quantum
    /// is 60 s).
    pub run_quantum_secs: Option<u64>,
    pub rpc_url: String,
    pub chain_id: u64,
    pub usdc: String,
    pub escrow: String,
    pub confirmations: Option<u64>,
    pub test_token: bool,
    pub settlement: Option<SettlementSection>,
    /// `[depositors]`: publisher name to the accounts it pays from (none: no section).
    pub depositors: Vec<(String, Vec<String>)>,
    /// `[api] tokens_file` (none: no `[api]` section).
    pub api_tokens: Option<PathBuf>,
    /// More sections, written as given before `[paths]`.
    pub extra: String,
    pub data_dir: PathBuf,
    pub state_dir: PathBuf,
}

/// `path` as a TOML string.
fn q(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

impl NodeConfig {
    /// A demo-mode node over the PACS at `dicomweb_url` and the chain at `rpc_url` with its
    /// test `usdc` and `escrow`, whose files all live under `dir` (`hmac.key`, `node.key`,
    /// `trust`, `data`, `state`; `opt_out` and `labels` from a testkit cohort), under the
    /// repository's Rego policy, with the tests' scope and a day's budget of 100 jobs; no
    /// attestation, `runc` at /usr/sbin/runc, chain id 137, one confirmation.
    pub fn demo(dir: &Path, dicomweb_url: &str, rpc_url: &str, usdc: &str, escrow: &str) -> Self {
        Self {
            mode: "demo".into(),
            dicomweb_url: dicomweb_url.into(),
            ca_file: None,
            dicomweb_auth: None,
            dicom_scope: true,
            hmac_key: dir.join("hmac.key"),
            node_key: dir.join("node.key"),
            dpo_keys: vec![],
            opt_out: dir.join("optouts.csv"),
            labels: None,
            commit_quantum_secs: None,
            policy: policy_file(),
            modalities: ["CT", "MR", "CR", "DX", "US", "SC"]
                .map(String::from)
                .to_vec(),
            min_fee_usdc: "1.00".into(),
            min_patients: Some((5, 2)),
            max_file_bytes: 1 << 20,
            max_total_bytes: 2 << 20,
            max_jobs: 100,
            window_hours: 24,
            trust: dir.join("trust"),
            attestation: "[attestation]".into(),
            runtime: PathBuf::from("/usr/sbin/runc"),
            run_quantum_secs: None,
            rpc_url: rpc_url.into(),
            chain_id: 137,
            usdc: usdc.into(),
            escrow: escrow.into(),
            confirmations: Some(1),
            test_token: true,
            settlement: None,
            depositors: vec![],
            api_tokens: None,
            extra: String::new(),
            data_dir: dir.join("data"),
            state_dir: dir.join("state"),
        }
    }

    /// The configuration file's text.
    pub fn to_toml(&self) -> String {
        let mut t = String::new();
        t.push_str(&format!("mode = {:?}\n\n", self.mode));
        t.push_str(&format!(
            "[[dicomweb.endpoints]]\nurl = {:?}\n",
            self.dicomweb_url
        ));
        if let Some(ca) = &self.ca_file {
            t.push_str(&format!("ca_file = {}\n", q(ca)));
        }
        if let Some(auth) = &self.dicomweb_auth {
            t.push_str(&format!("auth = {auth}\n"));
        }
        if self.dicom_scope {
            t.push_str(
                "\n[dicom.scope]\nmax_date_range_days = 366\nmax_limit = 1000\nmax_list = 100\n\
                 page_size = 50\n",
            );
        }
        let dpo: Vec<String> = self.dpo_keys.iter().map(|k| format!("{k:?}")).collect();
        t.push_str(&format!(
            "\n[keys]\nhmac_key_file = {}\nnode_key_file = {}\ndpo_public_keys = [{}]\n",
            q(&self.hmac_key),
            q(&self.node_key),
            dpo.join(", ")
        ));
        t.push_str(&format!(
            "\n[cohort]\nopt_out_file = {}\n",
            q(&self.opt_out)
        ));
        if let Some(labels) = &self.labels {
            t.push_str(&format!("labels_file = {}\n", q(labels)));
        }
        if let Some(secs) = self.commit_quantum_secs {
            t.push_str(&format!("commit_quantum_secs = {secs}\n"));
        }
        t.push_str(&format!(
            "\n[policy]\npath = {}\nmodalities = {:?}\nmin_fee_usdc = {:?}\n",
            q(&self.policy),
            self.modalities,
            self.min_fee_usdc
        ));
        if let Some((patients, validation)) = self.min_patients {
            t.push_str(&format!(
                "min_patients = {patients}\nmin_validation_patients = {validation}\n"
            ));
        }
        t.push_str(&format!(
            "\n[policy.outputs]\nkinds = [\"safetensors\", \"metrics-json\"]\n\
             max_file_bytes = {}\nmax_total_bytes = {}\n",
            self.max_file_bytes, self.max_total_bytes
        ));
        t.push_str(&format!(
            "\n[policy.budget]\nmax_jobs = {}\nwindow_hours = {}\n",
            self.max_jobs, self.window_hours
        ));
        t.push_str(&format!("\n[trust]\nstore = {}\n", q(&self.trust)));
        t.push_str(&format!("\n{}\n", self.attestation.trim_end()));
        t.push_str(&format!("\n[trainer]\nruntime = {}\n", q(&self.runtime)));
        if let Some(secs) = self.run_quantum_secs {
            t.push_str(&format!("run_quantum_secs = {secs}\n"));
        }
        t.push_str(&format!(
            "\n[chain]\nrpc_url = {:?}\nchain_id = {}\nusdc_address = {:?}\n\
             escrow_address = {:?}\n",
            self.rpc_url, self.chain_id, self.usdc, self.escrow
        ));
        if let Some(n) = self.confirmations {
            t.push_str(&format!("confirmations = {n}\n"));
        }
        t.push_str(&format!("test_token = {}\n", self.test_token));
        if let Some(s) = &self.settlement {
            t.push_str(&format!(
                "\n[settlement]\nsettler_key_file = {}\nhospital_address = {:?}\n\
                 payout_address = {:?}\n",
                q(&s.settler_key),
                s.hospital,
                s.payout
            ));
        }
        if !self.depositors.is_empty() {
            t.push_str("\n[depositors]\n");
            for (publisher, accounts) in &self.depositors {
                t.push_str(&format!("{publisher:?} = {accounts:?}\n"));
            }
        }
        if let Some(tokens) = &self.api_tokens {
            t.push_str(&format!("\n[api]\ntokens_file = {}\n", q(tokens)));
        }
        if !self.extra.trim().is_empty() {
            t.push_str(&format!("\n{}\n", self.extra.trim_end()));
        }
        t.push_str(&format!(
            "\n[paths]\ndata_dir = {}\nstate_dir = {}\n",
            q(&self.data_dir),
            q(&self.state_dir)
        ));
        t
    }
}

/// The repository's default Rego policy (`policy/rapha.rego`).
pub fn policy_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policy/rapha.rego")
}
