//! `rapha-node keygen --hmac|--node|--settler|--dpo --out FILE`: the hospital's secrets.
//!
//! Every key comes from the OS CSPRNG and is written to a new file (never overwriting) with
//! mode 0600. Key bytes are never printed or logged; only public keys are.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{ArgGroup, Args};
use rapha_core::HmacKey;
use rapha_policy::{write_secret_file, write_secret_hex, DpoSigningKey};

/// Arguments of `keygen`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["hmac", "node", "settler", "dpo"])))]
pub struct KeygenArgs {
    /// The 32-byte PHI HMAC key (pseudonyms).
    #[arg(long)]
    pub hmac: bool,
    /// The node's secp256k1 key (receipts and settlement).
    #[arg(long)]
    pub node: bool,
    /// The settlement wallet's secp256k1 key (pays gas for settlements; settlement.settler_key_file).
    #[arg(long)]
    pub settler: bool,
    /// A DPO's Ed25519 approval key (run on the DPO's machine).
    #[arg(long)]
    pub dpo: bool,
    /// With --hmac: seal the key to the TPM at --tcti under a PCR policy instead of writing
    /// it in the clear; the node unseals it at start through [attestation.tpm] tcti.
    #[arg(long, requires = "hmac", requires = "tcti")]
    pub seal_to_tpm: bool,
    /// With --seal-to-tpm: the TPM (TSS2 TCTI, e.g. device:/dev/tpmrm0; the node's
    /// [attestation.tpm] tcti).
    #[arg(long, value_name = "TCTI")]
    pub tcti: Option<String>,
    /// With --seal-to-tpm: the PCRs (sha256 bank) whose current values unseal it.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values_t = [0u8, 2, 4, 7])]
    pub pcrs: Vec<u8>,
    /// With --seal-to-tpm: seal this existing plain key file (keeps every pseudonym) instead
    /// of a new key.
    #[arg(long, value_name = "FILE", requires = "seal_to_tpm")]
    pub from: Option<PathBuf>,
    /// File to create (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

/// Printed after an HMAC key is made: losing or rotating it has consequences.
pub const HMAC_WARNING: &str = "\
WARNING: this key turns patient identifiers into pseudonyms.
  - Back it up now (offline, encrypted, two places): if it is lost, pseudonyms of future jobs
    can no longer be linked to earlier ones, and opt-outs keyed by pseudonym stop matching.
  - Rotating it makes every pseudonym new: models and receipts made before and after the
    rotation cannot be linked. Rotate only deliberately (see docs/keys.md).
  - Never copy it to the trainer, a ticket, a log or a chat.";

/// Runs `keygen`.
///
/// # Errors
/// When the file exists or cannot be written.
pub fn run(args: &KeygenArgs) -> anyhow::Result<()> {
    if args.seal_to_tpm {
        let key = match &args.from {
            Some(plain) => HmacKey::load(plain)?,
            None => HmacKey::generate(),
        };
        let tcti = args.tcti.as_deref().unwrap_or_default();
        let pcrs = args.pcrs.iter().copied().collect();
        crate::hmac_key::seal_to_file(&key, tcti, &pcrs, &args.out)?;
        println!(
            "wrote the HMAC key sealed to the TPM at {tcti} (PCRs {:?}, mode 0600) to {}",
            args.pcrs,
            args.out.display()
        );
        println!(
            "only this TPM, with these PCRs at their current values, unseals it: a changed boot \
             chain or another machine cannot. Escrow the key before relying on it (docs/keys.md)."
        );
        if args.from.is_none() {
            println!("{HMAC_WARNING}");
        }
    } else if args.hmac {
        write_hmac(&args.out)?;
        println!(
            "wrote HMAC key (32 bytes, mode 0600) to {}",
            args.out.display()
        );
        println!("{HMAC_WARNING}");
    } else if args.node {
        let address = write_node_key(&args.out)?;
        println!(
            "wrote node secp256k1 key (mode 0600) to {}",
            args.out.display()
        );
        println!("node address: {address}");
    } else if args.settler {
        let address = write_node_key(&args.out)?;
        println!(
            "wrote settlement wallet secp256k1 key (mode 0600) to {}",
            args.out.display()
        );
        println!("settler address (fund it with gas, never with fees): {address}");
        println!(
            "set settlement.settler_key_file = {:?}",
            args.out.display().to_string()
        );
    } else {
        let key = DpoSigningKey::generate();
        write_secret_hex(&args.out, &key.expose_seed())
            .with_context(|| format!("writing {}", args.out.display()))?;
        let pub_path = args.out.with_extension("pub");
        std::fs::write(&pub_path, format!("{}\n", key.public()))
            .with_context(|| format!("writing {}", pub_path.display()))?;
        println!(
            "wrote DPO Ed25519 key (mode 0600) to {}",
            args.out.display()
        );
        println!("public key (add to keys.dpo_public_keys): {}", key.public());
    }
    Ok(())
}

/// Writes a fresh HMAC key (32 raw bytes, mode 0600).
///
/// # Errors
/// When the file exists or cannot be written.
pub fn write_hmac(path: &Path) -> anyhow::Result<()> {
    let key = HmacKey::generate();
    write_secret_file(path, key.expose_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes a fresh secp256k1 key (64 hex digits and a newline, mode 0600); returns the
/// node's Ethereum address.
///
/// # Errors
/// When the file exists or cannot be written.
pub fn write_node_key(path: &Path) -> anyhow::Result<String> {
    let key = k256::SecretKey::random(&mut rand_core::OsRng);
    let secret = zeroize::Zeroizing::new(<[u8; 32]>::from(key.to_bytes()));
    write_secret_hex(path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok(eth_address(&key.public_key()))
}

/// The Ethereum address of a secp256k1 public key (last 20 bytes of Keccak-256 of the
/// uncompressed point), EIP-55 checksummed: the address receipts name (`rapha_eth`).
pub fn eth_address(public: &k256::PublicKey) -> String {
    rapha_receipt::address_of(&k256::ecdsa::VerifyingKey::from(public)).to_string()
}
