//! `rapha-node init --production|--demo`: configuration templates.
//!
//! The production template parses but points at placeholders, so `doctor` fails on it until
//! the hospital fills in its PACS, keys, TPM/SGX, runtime and chain. The demo template runs
//! against the local demo components and is refused by `doctor` (mode = "demo").

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{ArgGroup, Args};

/// Arguments of `init`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("template").required(true).args(["production", "demo"])))]
pub struct InitArgs {
    /// A production template with placeholders to fill in.
    #[arg(long)]
    pub production: bool,
    /// A demo template (local demo PACS and chain; never for production).
    #[arg(long)]
    pub demo: bool,
    /// File to create (must not exist); standard output when absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `init`.
///
/// # Errors
/// When the file exists or cannot be written.
pub fn run(args: &InitArgs) -> anyhow::Result<()> {
    let text = if args.production {
        PRODUCTION_TEMPLATE
    } else {
        DEMO_TEMPLATE
    };
    match &args.out {
        None => print!("{text}"),
        Some(path) => {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            println!(
                "wrote {}; fill in every REPLACE-ME, then run `rapha-node doctor --config {}`",
                path.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// Production template. Every key is documented in docs/configuration.md.
pub const PRODUCTION_TEMPLATE: &str = r#"# Rapha node configuration (production). Every key: docs/configuration.md.
# Fill in every REPLACE-ME, then run `rapha-node doctor --config THIS_FILE` until all PASS.
mode = "production"

[[dicomweb.endpoints]]
url = "https://REPLACE-ME.pacs.invalid/dicom-web"
ca_file = "/etc/rapha/pacs-ca.pem"
auth = { kind = "bearer", token_file = "/etc/rapha/pacs-token" }

[dicom.scope]
max_date_range_days = 366
max_limit = 5000
max_list = 1000
page_size = 100

[dicom.fields]
sex = false
manufacturer_model = false
free_text = []

[dicom.exclusions]
allow_classes = []

[keys]
hmac_key_file = "/etc/rapha/keys/hmac.key"     # rapha-node keygen --hmac --out ...
node_key_file = "/etc/rapha/keys/node.key"     # rapha-node keygen --node --out ...
dpo_public_keys = []                            # printed by rapha-node keygen --dpo

[cohort]
opt_out_file = "/etc/rapha/optouts.csv"         # header line "PatientID"
max_instances = 100000                          # most instances one cohort keeps
commit_quantum_secs = 300                       # cohort results land on this step after admission

[policy]
path = "/etc/rapha/policy/rapha.rego"
modalities = ["CR", "DX", "CT", "MR"]
min_fee_usdc = "100.00"
min_patients = 50
min_validation_patients = 20
min_validation_percent = 10                     # the validation split a job may ask for
max_validation_percent = 50
allow_linkage = []                              # publishers whose jobs may link pseudonyms

[policy.outputs]
kinds = ["safetensors", "metrics-json"]
max_file_bytes = 536870912
max_total_bytes = 1073741824
# max_release_bits = 1000000                    # most bits one job's released tensors may carry
max_publisher_bits = 268435456                  # most bits one publisher takes over all its jobs (2^28)
release_precision = "declared"                  # or "bf16", "fp16", "int8": rounded by the node
release_noise_k = 0.0                           # node noise, sigma = k x RMS per tensor (0: none)

[policy.budget]
max_jobs = 10
window_hours = 720

[trust]
store = "/etc/rapha/trust"                      # rapha-node trust add ...

[attestation.tpm]
tcti = "device:/dev/tpmrm0"                     # or "swtpm:host=HOST,port=PORT", "tabrmd"
vendor_root_ca = "/etc/rapha/REPLACE-ME-tpm-vendor-root.pem"
pcr_bank = "sha256"
ak_file = "/var/lib/rapha/state/attestation/tpm-ak.json"   # enrolled at first start
# The PCRs quoted for every job and their known-good values (`tpm2_pcrread sha256:0,1,2,3,4,5,6,7`).
[attestation.tpm.expected_pcrs]
# "0" = "REPLACE-ME: 64 hex digits"

[attestation.sgx]
quote_source = "/dev/attestation"               # Gramine's attestation interface
collateral_file = "/var/lib/rapha/sgx-collateral.json"   # DCAP collateral from the PCCS
mrenclave = []                                  # REPLACE-ME: the enclave runtime's MRENCLAVE
mrsigner = []                                   # or its MRSIGNER, with isv_prod_id/min_isv_svn
isv_prod_id = 0
min_isv_svn = 0
accepted_advisories = []

[trainer]
runtime = "/REPLACE-ME/oci-runtime"             # e.g. /usr/sbin/runc
runtime_args = []
# GPUs: CDI device names from the host's specs (`nvidia-ctk cdi generate
# --output=/etc/cdi/nvidia.yaml`, then `nvidia-ctk cdi list`); a job declaring resources.gpus = n
# gets the first n. Unset, jobs declaring a GPU are refused at admission. A GPU's memory is
# outside any enclave.
# gpus = ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]

# The range each resource a trainer's bundle requests must fall in; a job asking for more or
# less is refused before anything of it runs (code resources-out-of-range). Keep memory_mb.max
# below the appliance's RAM and wall_seconds.max below the escrow deposit's lock.
[trainer.limits]
memory_mb = { min = 64, max = 16384 }
cpus = { min = 1, max = 8 }
pids = { min = 8, max = 1024 }
wall_seconds = { min = 10, max = 86400 }
tmp_mb = { min = 1, max = 1024 }
# gpus = { min = 0, max = 1 }                   # default once trainer.gpus is set: one per name

[chain]
rpc_url = "https://REPLACE-ME.polygon-rpc.invalid"
chain_id = 137
usdc_address = "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359"
escrow_address = "0x0000000000000000000000000000000000000000"   # REPLACE-ME
confirmations = 12

[settlement]
settler_key_file = "/etc/rapha/keys/settler.key"   # rapha-node keygen --settler --out ...
hospital_address = "0x0000000000000000000000000000000000000000"   # REPLACE-ME
payout_address = "0x0000000000000000000000000000000000000000"     # REPLACE-ME
settle_margin_secs = 3600   # deposit deadline >= chain time + trainer wall time + this

# The accounts each trusted publisher pays its escrow deposits from (ask the company); a job
# naming any other depositor is refused at the deposit step.
[depositors]
# acme-ai = ["0x0000000000000000000000000000000000000000"]   # REPLACE-ME

[api]
listen = "127.0.0.1:8420"
tokens_file = "/etc/rapha/api-tokens"           # "<publisher|dpo|admin> <token>" per line, 0600
max_bundle_bytes = 2147483648                   # largest bundle upload (stored under data_dir/bundles)

# DPO passkeys (WebAuthn). Once configured, enrol the first DPO with the one-time code
# `rapha-node dpo enrol-code` prints on this console; further DPOs need an enrolled DPO's passkey.
# [approval]
# rp_id = "dpo.hospital.example"                # REPLACE-ME: the console's host name
# origins = ["https://dpo.hospital.example"]
# require_passkey = true                        # refuse Ed25519 key-file approvals

[paths]
data_dir = "/var/lib/rapha/data"
state_dir = "/var/lib/rapha/state"
"#;

/// Demo template: local components only. `doctor` refuses it.
pub const DEMO_TEMPLATE: &str = r#"# Rapha node configuration (DEMO: local demo PACS, anvil chain, no attestation).
# Never use for production: `rapha-node doctor` refuses mode = "demo".
mode = "demo"

[[dicomweb.endpoints]]
url = "http://127.0.0.1:8042/dicom-web"

[dicom.scope]
max_date_range_days = 3660
max_limit = 1000
max_list = 1000
page_size = 100

[keys]
hmac_key_file = "demo/hmac.key"
node_key_file = "demo/node.key"
dpo_public_keys = []

[cohort]
opt_out_file = "demo/optouts.csv"
labels_file = "demo/labels.csv"

[policy]
path = "policy/rapha.rego"
modalities = ["CR", "DX", "CT", "MR"]
min_fee_usdc = "1.00"
min_patients = 50
min_validation_patients = 20

[policy.outputs]
kinds = ["safetensors", "metrics-json"]
max_file_bytes = 104857600
max_total_bytes = 209715200

[policy.budget]
max_jobs = 100
window_hours = 24

[trust]
store = "demo/trust"

[attestation]

[trainer]
runtime = "/usr/sbin/runc"

[chain]
rpc_url = "http://127.0.0.1:8545"
chain_id = 137
usdc_address = "0x0000000000000000000000000000000000000000"
escrow_address = "0x0000000000000000000000000000000000000000"
confirmations = 1
test_token = true

[paths]
data_dir = "demo/data"
state_dir = "demo/state"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_templates_parse() {
        let production = crate::config::Config::parse(PRODUCTION_TEMPLATE).unwrap();
        crate::config::Config::parse(DEMO_TEMPLATE).unwrap();
        // The production template writes every bound out, with the defaults' values.
        assert!(PRODUCTION_TEMPLATE.contains("[trainer.limits]"));
        assert_eq!(
            production.trainer.limits,
            rapha_core::ResourceBounds::default()
        );
        // And the release bounds of issue 19, at their defaults too.
        let outputs = &production.policy.outputs;
        assert_eq!(
            outputs.max_publisher_bits,
            Some(rapha_policy::DEFAULT_MAX_PUBLISHER_BITS)
        );
        assert_eq!(
            outputs.release_transform(),
            rapha_core::release::ReleaseTransform::DECLARED
        );
        assert_eq!(outputs.max_release_bits, None);
    }
}
