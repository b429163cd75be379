//! The PHI HMAC key as the node loads it: a plain 32-byte file (`keygen --hmac`), or the key
//! sealed to the node's TPM under a PCR policy (`keygen --hmac --seal-to-tpm`), unsealed
//! through `[attestation.tpm] tcti` at start and held only in memory (zeroized when dropped).
//! The file at `keys.hmac_key_file` says which: a sealed file is the JSON of
//! [`rapha_attest::tpm::SealedSecret`].

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use rapha_attest::tpm::{SealedSecret, SEALED_FORMAT};
use rapha_core::{HmacKey, HMAC_KEY_LEN};

use crate::config::Config;

/// Where the key came from, for `doctor` and the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HmacSource {
    /// A plain key file: whoever can read the disk can read the key.
    File,
    /// Sealed to the TPM at `tcti`, to these PCRs.
    Tpm { tcti: String, pcrs: BTreeSet<u8> },
}

/// The sealed secret in `bytes`, when they are one (a plain key is 32 raw bytes, never JSON).
fn sealed_in(bytes: &[u8]) -> Option<anyhow::Result<SealedSecret>> {
    if !bytes.starts_with(b"{") {
        return None;
    }
    Some(serde_json::from_slice::<SealedSecret>(bytes).map_err(|e| anyhow!("{e}")))
}

/// Loads the configured HMAC key, unsealing it through the TPM when it is sealed.
///
/// # Errors
/// The file is unreadable or too open, a sealed file names no TPM in the configuration, or the
/// TPM refuses to unseal (another TPM, or the measured boot state changed: the error says so).
pub fn load(config: &Config) -> anyhow::Result<(HmacKey, HmacSource)> {
    let path = &config.keys.hmac_key_file;
    // A plain key, the common case, is read once; only a file that is not 32 bytes is read
    // again to see whether it is a sealed key.
    let length_error = match HmacKey::load(path) {
        Ok(key) => return Ok((key, HmacSource::File)),
        Err(e @ rapha_core::CoreError::HmacKeyLength { .. }) => e,
        Err(e) => return Err(e.into()),
    };
    let bytes = rapha_core::fs::read_secret(path, 64 << 10)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let Some(sealed) = sealed_in(&bytes) else {
        return Err(length_error.into());
    };
    let sealed = sealed
        .with_context(|| format!("{}: not a sealed key ({SEALED_FORMAT})", path.display()))?;
    let tcti = config
        .attestation
        .tpm
        .as_ref()
        .map(|t| t.tcti.clone())
        .ok_or_else(|| {
            anyhow!(
                "{} is sealed to a TPM, but [attestation.tpm] names none (its tcti reaches the TPM \
                 that unseals it)",
                path.display()
            )
        })?;
    let secret = unseal_at(&tcti, &sealed, path)?;
    let key: [u8; HMAC_KEY_LEN] = secret.as_slice().try_into().map_err(|_| {
        anyhow!(
            "{}: the sealed secret is {} bytes, not {HMAC_KEY_LEN}",
            path.display(),
            secret.len()
        )
    })?;
    let pcrs = sealed.pcrs.clone();
    Ok((HmacKey::from_bytes(key), HmacSource::Tpm { tcti, pcrs }))
}

fn unseal_at(
    tcti: &str,
    sealed: &SealedSecret,
    path: &Path,
) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut ctx = rapha_attest::tpm::connect(tcti)?;
    rapha_attest::tpm::unseal(&mut ctx, sealed).map_err(|e| {
        anyhow!(
            "{}: {e}; restore the key from its escrow (docs/keys.md) if the platform changed on \
             purpose",
            path.display()
        )
    })
}

/// Seals `key` to the TPM at `tcti` and the current values of `pcrs`; writes the sealed file
/// (mode 0600, created new).
///
/// # Errors
/// The TPM refuses, or the file exists or cannot be written.
pub fn seal_to_file(
    key: &HmacKey,
    tcti: &str,
    pcrs: &BTreeSet<u8>,
    out: &Path,
) -> anyhow::Result<()> {
    if pcrs.is_empty() {
        bail!("seal to at least one PCR (e.g. --pcrs 0,2,4,7: firmware, option ROMs, boot loader, secure boot)");
    }
    let mut ctx = rapha_attest::tpm::connect(tcti)?;
    let sealed = rapha_attest::tpm::seal(&mut ctx, key.expose_bytes(), pcrs)?;
    let text = serde_json::to_vec_pretty(&sealed)?;
    rapha_policy::write_secret_file(out, &text)
        .with_context(|| format!("writing {}", out.display()))
}
