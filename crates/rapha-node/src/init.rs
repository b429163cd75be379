//! `rapha-node init --production|--demo`: configuration templates.
//!
//! The production template parses but points at placeholders, so `doctor` fails on it until
//! the hospital fills in its PACS, keys, TPM/SGX, runtime and chain. The demo template runs
//! against the local demo components and is refused by `doctor` (mode = "demo").

use std::path::{Path, PathBuf};

use rapha_policy::{write_secret_file, write_secret_hex, DpoSigningKey};

use anyhow::Context as _;
use clap::{ArgGroup, Args};

/// Arguments of `init`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("template").required(true).args(["production", "demo"])))]
#[command(after_help = "Examples:
  rapha-node init --production --out /etc/rapha/node.toml
                       a production template: fill in every REPLACE-ME, then run doctor
  rapha-node init --demo --dir demo-node
                       a demo node on this machine: configuration, keys, API tokens and
                       policy under demo-node/; then `rapha-demo up --config
                       demo-node/node.toml` (demo PACS + local chain) and `rapha-node serve
                       --config demo-node/node.toml` (docs/configuration.md walks through it)")]
pub struct InitArgs {
    /// A production template with placeholders to fill in.
    #[arg(long)]
    pub production: bool,
    /// A demo template (local demo PACS and chain; never for production).
    #[arg(long)]
    pub demo: bool,
    /// File to create (must not exist); standard output when absent.
    #[arg(long, conflicts_with = "dir")]
    pub out: Option<PathBuf>,
    /// With --demo: create this directory (it must not exist or be empty) holding a node that
    /// runs as is: node.toml, fresh keys (keys/), API tokens (api-tokens), the default
    /// policy, an empty trust store and opt-out list. `rapha-demo up` adds the cohort and
    /// the chain.
    #[arg(long, requires = "demo", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Runs `init`.
///
/// # Errors
/// When the file exists or cannot be written.
pub fn run(args: &InitArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.dir {
        let node = write_demo_node(dir)?;
        println!("wrote a demo node under {}:", dir.display());
        println!("  configuration   {}", node.config.display());
        println!(
            "  API tokens      {} (publisher example-ai, dpo, admin)",
            node.tokens.display()
        );
        println!("  DPO key         {}", node.dpo_key.display());
        println!("next:");
        println!(
            "  rapha-demo up --config {}      # demo PACS with a synthetic cohort + local chain; leave it running",
            node.config.display()
        );
        println!(
            "  rapha-node serve --config {}   # the node's API on {DEMO_API_LISTEN}",
            node.config.display()
        );
        return Ok(());
    }
    let text = if args.production {
        PRODUCTION_TEMPLATE
    } else {
        DEMO_TEMPLATE
    };
    match &args.out {
        None => print!("{text}"),
        Some(path) => {
            create_new(path, text.as_bytes())?;
            if args.production {
                println!(
                    "wrote {}; fill in every REPLACE-ME, then run `rapha-node doctor --config {}`",
                    path.display(),
                    path.display()
                );
            } else {
                println!(
                    "wrote {}; `rapha-node init --demo --dir DIR` also writes the keys, tokens and \
                     policy it names",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

fn create_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Where the demo node's API listens.
pub const DEMO_API_LISTEN: &str = "127.0.0.1:8420";

/// The publisher the demo node's publisher token speaks for (the reference trainer's).
pub const DEMO_PUBLISHER: &str = "example-ai";

/// What [`write_demo_node`] wrote.
#[derive(Debug)]
pub struct DemoNode {
    /// The node's configuration file.
    pub config: PathBuf,
    /// The API token file (`<role> <token>` lines, mode 0600).
    pub tokens: PathBuf,
    /// The DPO's Ed25519 signing key (its public key is in the configuration).
    pub dpo_key: PathBuf,
}

/// Creates `dir` (absent or empty) with a demo node that `serve` runs once `rapha-demo up`
/// has written its cohort and chain: the demo template, fresh HMAC, node and DPO keys, one
/// random API token per role, the default policy, an empty trust store and opt-out list.
///
/// # Errors
/// When `dir` holds anything, or a file cannot be written.
pub fn write_demo_node(dir: &Path) -> anyhow::Result<DemoNode> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!(
            "{} is not empty; give a new directory (init never overwrites a node)",
            dir.display()
        );
    }
    for sub in ["keys", "policy", "trust", "cohort"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    crate::keygen::write_hmac(&dir.join("keys/hmac.key"))?;
    crate::keygen::write_node_key(&dir.join("keys/node.key"))?;
    let dpo_key = dir.join("keys/dpo.key");
    let dpo = DpoSigningKey::generate();
    write_secret_hex(&dpo_key, &dpo.expose_seed())
        .with_context(|| format!("writing {}", dpo_key.display()))?;
    std::fs::write(dpo_key.with_extension("pub"), format!("{}\n", dpo.public()))
        .with_context(|| format!("writing {}", dpo_key.with_extension("pub").display()))?;
    let tokens = dir.join("api-tokens");
    let token = || {
        let mut b = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        hex::encode(b)
    };
    let lines = format!(
        "# role token [publisher name]; give each holder only their own line\n\
         publisher {} {DEMO_PUBLISHER}\ndpo {}\nadmin {}\n",
        token(),
        token(),
        token()
    );
    write_secret_file(&tokens, lines.as_bytes())
        .with_context(|| format!("writing {}", tokens.display()))?;
    create_new(
        &dir.join("policy/rapha.rego"),
        rapha_policy::DEFAULT_POLICY.as_bytes(),
    )?;
    create_new(&dir.join("cohort/optouts.csv"), b"")?;
    let config = dir.join("node.toml");
    let text = DEMO_TEMPLATE.replace(
        "dpo_public_keys = []",
        &format!("dpo_public_keys = [\"{}\"]", dpo.public()),
    );
    create_new(&config, text.as_bytes())?;
    Ok(DemoNode {
        config,
        tokens,
        dpo_key,
    })
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

# The DPO console (docs/console.md): uncomment to serve it beside the API. A listener off
# loopback needs the TLS certificate and key; logins use the API token file's dpo and admin tokens.
# [console]
# listen = "10.0.0.5:8421"                      # the hospital LAN address
# tls_cert_file = "/etc/rapha/console.crt"      # PEM chain
# tls_key_file = "/etc/rapha/console.key"       # PEM key, 0600
# rp_id = "rapha.hospital.example"              # the host name the DPO's browser uses
# origins = ["https://rapha.hospital.example:8421"]
# session_minutes = 30

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

/// Demo template: local components only. `doctor` refuses it. Paths are relative to the
/// file's directory; `init --demo --dir` writes the files they name, `rapha-demo up` the
/// cohort (labels, demo PACS) and the chain (addresses, settler key, depositor).
pub const DEMO_TEMPLATE: &str = r#"# Rapha node configuration (DEMO: local demo PACS, anvil chain, no attestation).
# Never use for production: `rapha-node doctor` refuses mode = "demo".
# Written by `rapha-node init --demo --dir DIR`, which also wrote the keys, API tokens, policy,
# trust store and opt-out list named below. `rapha-demo up --config THIS_FILE` serves the
# synthetic cohort on the PACS URL below, starts (or reuses) anvil at [chain] rpc_url, deploys
# the demo escrow and mock USDC and writes every 0x0000... address below; then
# `rapha-node serve --config THIS_FILE`. Every key: docs/configuration.md.
mode = "demo"

[[dicomweb.endpoints]]
url = "http://127.0.0.1:8042/dicom-web"    # the demo PACS `rapha-demo up` serves

[dicom.scope]
max_date_range_days = 3660
max_limit = 1000
max_list = 1000
page_size = 100

[dicom.fields]
sex = false
manufacturer_model = false
free_text = ["BodyPartExamined"]         # the reference trainer asks for it

[keys]
hmac_key_file = "keys/hmac.key"
node_key_file = "keys/node.key"
dpo_public_keys = []                       # init --dir writes keys/dpo.pub's key here

[cohort]
opt_out_file = "cohort/optouts.csv"
labels_file = "cohort/labels.csv"          # written by rapha-demo up
commit_quantum_secs = 1                    # demo: no wait (production: 300, hides timing)

[policy]
path = "policy/rapha.rego"
modalities = ["CR", "DX", "CT", "MR"]
min_fee_usdc = "1.00"
min_patients = 10                          # demo: the synthetic cohort is small (default 50)
min_validation_patients = 2                # demo (default 20)

[policy.outputs]
kinds = ["safetensors", "metrics-json"]
max_file_bytes = 104857600
max_total_bytes = 209715200

[policy.budget]
max_jobs = 100
window_hours = 24

[trust]
store = "trust"                            # rapha-node trust add --store trust ...

[attestation]

[trainer]
runtime = "/usr/sbin/runc"
run_quantum_secs = 1                       # demo: no wait (production default hides run time)

[chain]
rpc_url = "http://127.0.0.1:8545"          # rapha-demo up starts anvil here, or reuses it
chain_id = 137
usdc_address = "0x0000000000000000000000000000000000000000"     # written by rapha-demo up
escrow_address = "0x0000000000000000000000000000000000000000"   # written by rapha-demo up
confirmations = 1
test_token = true

[settlement]
settler_key_file = "keys/settler.key"      # written by rapha-demo up (an anvil dev account)
hospital_address = "0x0000000000000000000000000000000000000000"   # written by rapha-demo up
payout_address = "0x0000000000000000000000000000000000000000"     # written by rapha-demo up
settle_margin_secs = 3600

[depositors]
example-ai = []                            # rapha-demo up adds the demo company's account

[api]
listen = "127.0.0.1:8420"
tokens_file = "api-tokens"                 # one token per role, written by init --demo --dir

[console]
listen = "127.0.0.1:8421"                       # loopback: plain http (browsers treat localhost as secure)
rp_id = "localhost"
session_minutes = 30

[paths]
data_dir = "data"
state_dir = "state"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_named_by_a_relative_path_resolves_to_absolute_paths() {
        // runc resolves a relative rootfs against its bundle directory, not the node's working
        // directory: every path the node takes from its configuration must be absolute, even
        // when the configuration itself was named relatively (`serve --config demo/node.toml`).
        let cwd = std::env::current_dir().unwrap();
        let tmp = tempfile::tempdir_in(&cwd).unwrap();
        write_demo_node(&tmp.path().join("node")).unwrap();
        let relative = tmp
            .path()
            .strip_prefix(&cwd)
            .unwrap()
            .join("node/node.toml");
        assert!(relative.is_relative());
        let config = crate::config::Config::load(&relative).unwrap();
        for path in [
            &config.paths.data_dir,
            &config.paths.state_dir,
            &config.keys.hmac_key_file,
            &config.trust.store,
            &config.policy.path,
        ] {
            assert!(path.is_absolute(), "{}", path.display());
            assert!(path.starts_with(tmp.path()), "{}", path.display());
        }
    }

    #[test]
    fn a_demo_node_directory_loads_as_is_and_is_never_overwritten() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node");
        let node = write_demo_node(&dir).unwrap();
        let config = crate::config::Config::load(&node.config).unwrap();
        // Every file the configuration names and init writes is there, the secrets 0600.
        for secret in [
            &config.keys.hmac_key_file,
            &config.keys.node_key_file,
            &node.dpo_key,
            &node.tokens,
        ] {
            let mode = std::fs::metadata(secret).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", secret.display());
        }
        assert!(config.policy.path.is_file());
        assert!(config.cohort.opt_out_file.is_file());
        assert!(config.trust.store.is_dir());
        // The DPO key's public half is the one the node accepts approvals from.
        let public = std::fs::read_to_string(node.dpo_key.with_extension("pub")).unwrap();
        assert_eq!(config.keys.dpo_public_keys, vec![public.trim().to_owned()]);
        // One token per role, each different, the publisher's speaking for the demo publisher.
        let tokens = std::fs::read_to_string(&node.tokens).unwrap();
        crate::api::Tokens::parse(&tokens).unwrap();
        let lines: Vec<Vec<&str>> = tokens
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0][0], "publisher");
        assert_eq!(lines[0][2], DEMO_PUBLISHER);
        assert!(lines[0][1] != lines[1][1] && lines[1][1] != lines[2][1]);
        assert!(config.api.is_some() && config.settlement.is_some());
        // A second init into the same directory is refused, and nothing in it changes.
        let before = std::fs::read(&config.keys.hmac_key_file).unwrap();
        let err = write_demo_node(&dir).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(std::fs::read(&config.keys.hmac_key_file).unwrap(), before);
    }

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
        // The console is commented out in production and served on loopback in the demo.
        assert!(production.console.is_none());
        assert!(PRODUCTION_TEMPLATE.contains("# [console]"));
        let demo = crate::config::Config::parse(DEMO_TEMPLATE).unwrap();
        let console = demo.console.unwrap();
        assert!(console.listen.ip().is_loopback() && console.tls().is_none());
    }
}
