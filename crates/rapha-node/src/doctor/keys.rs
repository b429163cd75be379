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
