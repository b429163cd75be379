//! Attestation (**I8**): the TPM certifies an AK under an EK that chains to the vendor root and
//! its PCRs are the expected ones, the enrolled AK loads, and an SGX DCAP quote source with
//! collateral and an expected enclave identity is configured.

use crate::config::Config;

use super::{fail, Outcome};

pub(super) fn check_tpm(config: &Config) -> Outcome {
    let Some(tpm) = &config.attestation.tpm else {
        return fail(
            "no TPM configured: jobs cannot be attested",
            "add [attestation.tpm] with tcti, vendor_root_ca and expected_pcrs",
        );
    };
    let policy = tpm.pcr_policy().or_else(|(field, message)| {
        fail(
            format!("{field}: {message}"),
            "write each entry as \"INDEX\" = \"HEX DIGEST\" (e.g. from `tpm2_pcrread`)",
        )
    })?;
    if policy.expected.is_empty() {
        return fail(
            "attestation.tpm.expected_pcrs is empty: a quote over no PCRs says nothing about how the appliance booted",
            "on the known-good appliance run `tpm2_pcrread sha256:0,1,2,3,4,5,6,7` and copy the values into attestation.tpm.expected_pcrs",
        );
    }
    let ready = rapha_attest::tpm_readiness(&tpm.tcti, &tpm.vendor_root_ca).or_else(|e| {
        fail(
            e.to_string(),
            "check attestation.tpm.tcti reaches the TPM (e.g. device:/dev/tpmrm0) and vendor_root_ca holds the TPM vendor's EK root CA",
        )
    })?;
    let current = rapha_attest::tpm::connect(&tpm.tcti)
        .and_then(|mut ctx| rapha_attest::tpm::read_pcrs(&mut ctx, &policy.selection()))
        .or_else(|e| {
            fail(
                e.to_string(),
                "check the TPM answers PCR_Read on its sha256 bank",
            )
        })?;
    for (pcr, expected) in &policy.expected {
        if current.get(pcr) != Some(expected) {
            let found = current.get(pcr).map(|d| d.to_hex()).unwrap_or_default();
            return fail(
                format!("PCR {pcr} is {found}, attestation.tpm.expected_pcrs says {expected}: every job's quote would be refused"),
                "if the platform changed on purpose (firmware or boot loader update), record the new values; otherwise investigate the boot chain",
            );
        }
    }
    Ok(format!(
        "{}: AK certified by an EK whose certificate ({}) chains to {} (issuer {}); PCRs {:?} as expected",
        ready.tcti,
        ready.ek_cert_subject,
        tpm.vendor_root_ca.display(),
        ready.ek_cert_issuer,
        policy.selection()
    ))
}

pub(super) fn check_ak(config: &Config) -> Outcome {
    let (Some(tpm), Some(path)) = (&config.attestation.tpm, config.tpm_ak_file()) else {
        return fail("no TPM configured", "add [attestation.tpm]");
    };
    if !path.exists() {
        return Ok(format!(
            "{}: not enrolled yet; the node enrols an AK against the EK at its first start and keeps it there",
            path.display()
        ));
    }
    let fix = format!(
        "if the TPM was cleared or replaced, move {} away so the node enrols a new key",
        path.display()
    );
    let roots = rapha_attest::tpm::VendorRoots::from_pem_file(&tpm.vendor_root_ca)
        .or_else(|e| fail(e.to_string(), "fix attestation.tpm.vendor_root_ca"))?;
    let ak = crate::node_build::load_or_enrol_ak(tpm, &roots, &path)
        .or_else(|e| fail(e.to_string(), fix.clone()))?;
    let name = hex::encode(ak.ak_name());
    let mut verifier = rapha_attest::tpm::TpmVerifier::new(
        roots,
        rapha_attest::tpm::PcrPolicy {
            expected: std::collections::BTreeMap::new(),
        },
    );
    verifier
        .trust_ak(ak.record())
        .or_else(|e| fail(format!("{}: {e}", path.display()), fix.clone()))?;
    rapha_attest::tpm::TpmAttester::open(&tpm.tcti, ak).or_else(|e| {
        fail(
            format!("{}: the TPM cannot load this AK: {e}", path.display()),
            fix.clone(),
        )
    })?;
    Ok(format!(
        "{}: AK {name} enrolled, loads on this TPM",
        path.display()
    ))
}

pub(super) fn check_sgx(config: &Config) -> Outcome {
    let Some(sgx) = &config.attestation.sgx else {
        return fail(
            "no SGX configured: the enclave runtime cannot be attested",
            "add [attestation.sgx] with quote_source, collateral_file and mrenclave or mrsigner",
        );
    };
    if sgx.mrenclave.is_empty() && sgx.mrsigner.is_empty() {
        return fail(
            "no expected enclave measurement (mrenclave or mrsigner) configured",
            "set attestation.sgx.mrenclave or mrsigner to the enclave runtime's values (`gramine-sgx-sigstruct-view`)",
        );
    }
    let source = crate::node_build::GramineQuoteSource {
        dir: sgx.quote_source.clone(),
        collateral: sgx.collateral_file.clone().unwrap_or_default(),
    };
    if !source.present() {
        return fail(
            format!(
                "no SGX quote source: {} (Gramine's attestation interface with user_report_data and quote) is absent or offers no DCAP quotes; every production job would be refused at attestation",
                sgx.quote_source.display()
            ),
            "run rapha-node inside Gramine-SGX (`gramine-sgx`, manifest sgx.remote_attestation = \"dcap\") on an SGX platform with the DCAP quote provider, or fix attestation.sgx.quote_source",
        );
    }
    let Some(collateral) = &sgx.collateral_file else {
        return fail(
            "attestation.sgx.collateral_file is not set",
            "point it at the DCAP collateral JSON fetched from the hospital's PCCS",
        );
    };
    let text = std::fs::read(collateral).or_else(|e| {
        fail(
            format!("cannot read {}: {e}", collateral.display()),
            "fetch the DCAP collateral from the hospital's PCCS into this file",
        )
    })?;
    serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .filter(|v| v.get("tcb_info").is_some() && v.get("qe_identity").is_some())
        .map(|_| ())
        .ok_or(())
        .or_else(|()| {
            fail(
                format!(
                    "{} is not DCAP collateral JSON (tcb_info, qe_identity, CRLs and chains)",
                    collateral.display()
                ),
                "fetch the DCAP collateral from the hospital's PCCS into this file",
            )
        })?;
    Ok(format!(
        "{} offers DCAP quotes, collateral {}, {} accepted enclave identit(y/ies)",
        sgx.quote_source.display(),
        collateral.display(),
        sgx.mrenclave.len() + sgx.mrsigner.len()
    ))
}
