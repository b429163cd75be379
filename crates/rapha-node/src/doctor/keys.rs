//! The node's secrets and callers' keys: the PHI HMAC key, the node signing key, the DPO
//! public keys and the API token file, none of them a development key.

use rapha_policy::{is_dev_key, read_secret_hex, DpoPublicKey};

use crate::config::Config;

use super::{fail, Outcome};

pub(super) fn check_hmac(config: &Config) -> Outcome {
    let path = &config.keys.hmac_key_file;
    let (key, source) = crate::hmac_key::load(config).or_else(|e| {
        fail(
            format!("{e:#}"),
            format!(
                "create one with `rapha-node keygen --hmac --seal-to-tpm --out {}` (and escrow \
                 it: docs/keys.md)",
                path.display()
            ),
        )
    })?;
    if is_dev_key(key.expose_bytes()) {
        return fail(
            format!(
                "{} is a development key (it carries the dev-key marker)",
                path.display()
            ),
            "generate a production key with `rapha-node keygen --hmac --out FILE`",
        );
    }
    Ok(match source {
        crate::hmac_key::HmacSource::Tpm { tcti, pcrs } => format!(
            "{}: sealed to the TPM at {tcti} (PCRs {pcrs:?}), unsealed",
            path.display()
        ),
        crate::hmac_key::HmacSource::File => format!(
            "{}: 32 bytes, mode 0600 or stricter; PLAIN FILE, not sealed to the TPM (whoever \
             reads the disk reads the key: `rapha-node keygen --hmac --seal-to-tpm --from {}`)",
            path.display(),
            path.display()
        ),
    })
}

pub(super) fn check_node_key(config: &Config) -> Outcome {
    let path = &config.keys.node_key_file;
    let fix = format!(
        "create one with `rapha-node keygen --node --out {}`",
        path.display()
    );
    let secret = read_secret_hex(path).or_else(|e| fail(e.to_string(), fix.clone()))?;
    if k256::SecretKey::from_bytes((&*secret).into()).is_err() {
        return fail(
            format!("{} is not a valid secp256k1 secret key", path.display()),
            fix,
        );
    }
    if is_dev_key(&secret[..]) {
        return fail(format!("{} is a development key", path.display()), fix);
    }
    Ok(format!(
        "{}: secp256k1 key, mode 0600 or stricter",
        path.display()
    ))
}

pub(super) fn check_dpo_keys(config: &Config) -> Outcome {
    let keys = &config.keys.dpo_public_keys;
    if keys.is_empty() && config.approval.as_ref().is_some_and(|a| a.require_passkey) {
        return Ok("none: approvals by DPO passkey only ([approval] require_passkey)".into());
    }
    if keys.is_empty() {
        return fail(
            "no DPO public key configured: no job could ever be approved",
            "run `rapha-node keygen --dpo --out FILE` on the DPO's machine and add the printed public key",
        );
    }
    for (i, k) in keys.iter().enumerate() {
        k.parse::<DpoPublicKey>().or_else(|e| {
            fail(
                format!("keys.dpo_public_keys[{i}]: {e}"),
                "paste the public key `keygen --dpo` printed",
            )
        })?;
    }
    Ok(format!("{} DPO key(s)", keys.len()))
}

pub(super) fn check_api(config: &Config) -> Outcome {
    let Some(api) = &config.api else {
        return fail(
            "no [api] section: `rapha-node serve` has no token file to authenticate callers",
            "add [api] with tokens_file (one `<publisher|dpo|admin> <token>` per line, mode 0600)",
        );
    };
    let tokens = crate::api::Tokens::load(&api.tokens_file).or_else(|e| {
        fail(
            e.to_string(),
            format!(
                "write one `<publisher|dpo|admin> <token>` per line (tokens of 32+ random characters) and `chmod 600 {}`",
                api.tokens_file.display()
            ),
        )
    })?;
    let _ = tokens;
    Ok(format!(
        "listening on {}, tokens from {}",
        api.listen,
        api.tokens_file.display()
    ))
}

/// Which approval methods are active, and how many DPO passkeys the log has enrolled.
pub(super) fn check_approval_methods(config: &Config) -> Outcome {
    let key_file = format!("{} DPO key(s)", config.keys.dpo_public_keys.len());
    let Some(a) = &config.approval else {
        return Ok(format!(
            "Ed25519 key file only ({key_file}); DPO passkeys not configured"
        ));
    };
    a.check()
        .or_else(|e| fail(e, "fix [approval] (docs/configuration.md)"))?;
    let state = &config.paths.state_dir;
    let log = state.join("receipts");
    let enrolled = if log.exists() {
        let log = rapha_receipt::ReceiptLog::open_read_only(&log).or_else(|e| {
            fail(
                format!("receipt log: {e}"),
                "restore the state directory from backup",
            )
        })?;
        crate::passkeys::Passkeys::read_set(&state.join("passkeys.sqlite"), &log)
            .or_else(|e| {
                fail(
                    format!("DPO credentials: {e}"),
                    "restore the state directory from backup",
                )
            })?
            .len()
    } else {
        0
    };
    if a.require_passkey && enrolled == 0 {
        return fail(
            "passkeys are required but no DPO passkey is enrolled: no job could be approved",
            "run `rapha-node dpo enrol-code` on the node's console and enrol the first DPO's passkey",
        );
    }
    let methods = if a.require_passkey {
        "DPO passkey only".to_owned()
    } else {
        format!("Ed25519 key file ({key_file}) and DPO passkey")
    };
    Ok(format!(
        "{methods}; {enrolled} DPO passkey(s) enrolled for {}",
        a.rp_id
    ))
}
