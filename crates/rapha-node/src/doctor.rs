//! `rapha-node doctor`: the production preflight (**I8**).
//!
//! Checks every production requirement against the real thing (the PACS answers a scoped QIDO
//! over HTTPS, the TPM certifies an AK under an EK that chains to the vendor root, the chain
//! has the escrow deployed, …) and reports each as PASS or FAIL with how to fix it. Run it
//! before starting a production node ([`preflight`] for a supervisor that must refuse to start
//! on any FAIL). The node itself refuses to build without production attestation
//! ([`crate::node_build`]), and every job without verified TPM and SGX evidence is refused.
//!
//! [`run_doctor`] blocks (network and TPM I/O) on a thread of its own, so async code may call
//! it, though it should not hold up a runtime worker with it (use `spawn_blocking`).

use std::fmt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rapha_core::HmacKey;
use rapha_policy::{is_dev_key, read_secret_hex, DpoPublicKey, Mode, Policy};
use serde_json::{json, Value};

use crate::config::{Config, DicomWebAuth, DicomWebEndpoint};

/// Official native USDC per chain id: Polygon PoS, and Polygon Amoy for staging.
pub const OFFICIAL_USDC: &[(u64, &str, &str)] = &[
    (
        137,
        "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359",
        "Polygon PoS",
    ),
    (
        80002,
        "0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582",
        "Polygon Amoy (staging)",
    ),
];

/// Strings that mark a demo-only component; a production config referencing one is refused.
const DEMO_MARKERS: &[&str] = &["rapha-demo", "rapha-testkit"];

const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);

/// PASS or FAIL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Short stable name, e.g. `HMAC key`.
    pub name: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix a failure.
    pub fix: Option<String>,
}

/// All checks, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status == Status::Pass)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    fn pass(&mut self, name: &str, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_owned(),
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        });
    }

    fn fail(&mut self, name: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_owned(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }

    fn push(&mut self, name: &str, result: Result<String, (String, String)>) {
        match result {
            Ok(detail) => self.pass(name, detail),
            Err((detail, fix)) => self.fail(name, detail, fix),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let tag = match c.status {
                Status::Pass => "PASS",
                Status::Fail => "FAIL",
            };
            writeln!(f, "{tag}  {}: {}", c.name, c.detail)?;
            if let Some(fix) = &c.fix {
                writeln!(f, "      fix: {fix}")?;
            }
        }
        let failed = self.failures().count();
        if failed == 0 {
            writeln!(f, "all {} checks passed", self.checks.len())
        } else {
            writeln!(f, "{failed} of {} checks FAILED", self.checks.len())
        }
    }
}

type Outcome = Result<String, (String, String)>;

fn fail<T>(detail: impl Into<String>, fix: impl Into<String>) -> Result<T, (String, String)> {
    Err((detail.into(), fix.into()))
}

/// Runs every production check.
///
/// The checks run on a thread of their own: the blocking HTTP client must not start inside
/// an async runtime, so this is safe to call from `rapha-node serve`'s async code too.
pub fn run_doctor(config: &Config) -> Report {
    std::thread::scope(|s| s.spawn(|| run_checks(config)).join()).unwrap_or_else(|_| {
        let mut r = Report::default();
        r.fail(
            "doctor",
            "a check crashed",
            "report this as a bug; the node must not start",
        );
        r
    })
}

fn run_checks(config: &Config) -> Report {
    let mut r = Report::default();
    r.push("mode", check_mode(config));
    for (i, e) in config.dicomweb.endpoints.iter().enumerate() {
        r.push(
            &format!("DICOMweb endpoint (dicomweb.endpoints[{i}])"),
            check_dicomweb(config, e),
        );
    }
    if config.dicomweb.endpoints.is_empty() {
        r.fail(
            "DICOMweb endpoint",
            "no endpoint configured",
            "add a [[dicomweb.endpoints]] entry",
        );
    }
    r.push("HMAC key (keys.hmac_key_file)", check_hmac(config));
    r.push("node key (keys.node_key_file)", check_node_key(config));
    r.push("DPO keys (keys.dpo_public_keys)", check_dpo_keys(config));
    r.push("opt-out list (cohort.opt_out_file)", check_optouts(config));
    r.push("scope limits ([dicom.scope])", check_scope(config));
    r.push("policy (policy.path)", check_policy(config));
    r.push("trust store (trust.store)", check_trust(config));
    r.push(
        "depositor accounts ([depositors])",
        check_depositors(config),
    );
    r.push("attestation: TPM ([attestation.tpm])", check_tpm(config));
    r.push(
        "attestation: TPM attestation key (attestation.tpm.ak_file)",
        check_ak(config),
    );
    r.push("attestation: SGX ([attestation.sgx])", check_sgx(config));
    r.push("trainer command (trainer.runtime)", check_trainer(config));
    r.push(
        "trainer resource bounds ([trainer.limits])",
        check_trainer_limits(config, memory_total_mb()),
    );
    r.push("GPUs (trainer.gpus)", check_gpus(&config.trainer));
    check_chain(config, &mut r);
    r.push("settlement ([settlement])", check_settlement(config));
    r.push("API tokens ([api])", check_api(config));
    r.push("data directories ([paths])", check_paths(config));
    r.push("swap", check_host_swap());
    r.push("no demo component", check_no_demo(config));
    r
}

fn check_mode(config: &Config) -> Outcome {
    match config.mode {
        Mode::Production => Ok("production".into()),
        Mode::Demo => fail(
            "mode = \"demo\"",
            "set mode = \"production\" (demo configs never run in production)",
        ),
    }
}

fn check_dicomweb(config: &Config, e: &DicomWebEndpoint) -> Outcome {
    if !e.url.starts_with("https://") {
        return fail(
            format!("{} is not HTTPS", e.url),
            "use the PACS's https:// DICOMweb URL and set ca_file to the CA that issued its certificate",
        );
    }
    let auth = match &e.auth {
        DicomWebAuth::None => None,
        DicomWebAuth::Bearer { token_file } => {
            Some(rapha_dicom::Auth::Bearer(read_secret_text(token_file)?))
        }
        DicomWebAuth::Header { name, value_file } => Some(rapha_dicom::Auth::Header {
            name: name.clone(),
            value: read_secret_text(value_file)?,
        }),
    };
    let opts = rapha_dicom::ClientOptions {
        base_url: e.url.clone(),
        auth,
        ca_pem: e.ca_file.clone(),
        timeout: NETWORK_TIMEOUT,
    };
    let client = rapha_dicom::DicomWebClient::new(opts)
        .or_else(|err| fail(err.to_string(), "fix the endpoint's url, ca_file or auth"))?;
    let limits = config
        .dicom
        .as_ref()
        .map(|d| d.scope.clone())
        .unwrap_or_default();
    // A real, narrow study search: one day, one result. It proves reachability, TLS, auth and
    // QIDO-RS support without listing anything of substance.
    let modality = config
        .policy
        .modalities
        .first()
        .map_or("CT", String::as_str);
    let probe = format!("StudyDate=20000101-20000101&ModalitiesInStudy={modality}&limit=1");
    let query = rapha_dicom::ScopedQuery::parse(&probe, &limits).or_else(|err| {
        fail(
            format!("cannot build the probe query: {err}"),
            "check [dicom.scope]",
        )
    })?;
    match client.search_studies(&query) {
        Ok(studies) => Ok(format!("{} answered a scoped QIDO-RS study search ({} result(s))", e.url, studies.len())),
        Err(err) => fail(
            format!("{} did not answer a scoped QIDO-RS search: {err}", e.url),
            "check the PACS is reachable from this appliance, its certificate chains to ca_file, and the credentials",
        ),
    }
}

fn read_secret_text(path: &Path) -> Result<zeroize::Zeroizing<String>, (String, String)> {
    use rapha_core::{check_private_mode, ModeError};
    match check_private_mode(path) {
        Ok(()) => {}
        Err(ModeError::Loose(mode)) => {
            return fail(
                format!("credential file {} has mode {mode:o}", path.display()),
                format!("run `chmod 600 {}`", path.display()),
            )
        }
        Err(ModeError::Io(e)) => {
            return fail(
                format!("cannot read credential file {}: {e}", path.display()),
                "create the file",
            )
        }
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).or_else(|e| {
        fail(
            format!("cannot read credential file {}: {e}", path.display()),
            "create the file",
        )
    })?);
    Ok(zeroize::Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

fn check_hmac(config: &Config) -> Outcome {
    let path = &config.keys.hmac_key_file;
    let key = HmacKey::load(path).or_else(|e| {
        fail(
            e.to_string(),
            format!(
                "create one with `rapha-node keygen --hmac --out {}` (and back it up)",
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
    Ok(format!(
        "{}: 32 bytes, mode 0600 or stricter",
        path.display()
    ))
}

fn check_node_key(config: &Config) -> Outcome {
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

fn check_dpo_keys(config: &Config) -> Outcome {
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

fn check_optouts(config: &Config) -> Outcome {
    let path = &config.cohort.opt_out_file;
    let text = std::fs::read_to_string(path).or_else(|e| {
        fail(
            format!("cannot read {}: {e}", path.display()),
            "create the opt-out list: a CSV file whose first line is `PatientID` (it may have no other line)",
        )
    })?;
    if text.lines().next().map(str::trim) != Some("PatientID") {
        return fail(
            format!(
                "{} does not start with the header line `PatientID`",
                path.display()
            ),
            "make the first line `PatientID`, then one opted-out PatientID per line",
        );
    }
    let n = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    Ok(format!("{}: {n} opted-out patient(s)", path.display()))
}

fn check_scope(config: &Config) -> Outcome {
    let Some(d) = &config.dicom else {
        return fail(
            "no [dicom] section: scope limits, fields and exclusions are not set",
            "add [dicom.scope] with max_date_range_days, max_limit, max_list, page_size",
        );
    };
    d.validate()
        .or_else(|e| fail(e.to_string(), "fix the [dicom] section"))?;
    let s = &d.scope;
    Ok(format!(
        "at most {} studies per job, date ranges up to {} days, lists up to {}",
        s.max_limit, s.max_date_range_days, s.max_list
    ))
}

fn check_policy(config: &Config) -> Outcome {
    let policy = Policy::load(&config.policy.path).or_else(|e| {
        fail(
            e.to_string(),
            "fix the policy or point policy.path at policy/rapha.rego",
        )
    })?;
    let dir = config.policy_tests_dir();
    let results = rapha_policy::run_rego_tests(&dir)
        .or_else(|e| fail(e.to_string(), "fix the Rego test files"))?;
    if results.is_empty() {
        return fail(
            format!(
                "no Rego unit tests (test_* rules in *_test.rego) in {}",
                dir.display()
            ),
            "keep the policy's tests next to it (policy/rapha_test.rego) or set policy.tests_dir",
        );
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|t| !t.passed)
        .map(|t| t.name.as_str())
        .collect();
    if !failed.is_empty() {
        return fail(
            format!(
                "{} of {} Rego tests fail: {}",
                failed.len(),
                results.len(),
                failed.join(", ")
            ),
            "run `rapha-node policy test --config FILE` and fix the policy",
        );
    }
    config
        .policy
        .min_fee_usdc
        .parse::<rapha_core::Usdc>()
        .or_else(|e| {
            fail(
                format!("policy.min_fee_usdc: {e}"),
                "write the minimum fee as a decimal, e.g. \"100.00\"",
            )
        })?;
    Ok(format!(
        "compiles (sha256 {}), {} Rego tests pass",
        policy.digest(),
        results.len()
    ))
}

fn check_trust(config: &Config) -> Outcome {
    let store = rapha_bundle::TrustStore::open(&config.trust.store).or_else(|e| {
        fail(
            e.to_string(),
            "create the trust store with `rapha-node trust add`",
        )
    })?;
    let active = store.publishers().iter().filter(|p| !p.revoked).count();
    if active == 0 {
        return fail(
            format!(
                "{} has no trusted (unrevoked) publisher: no bundle could run",
                config.trust.store.display()
            ),
            "add the publishers you accept with `rapha-node trust add`",
        );
    }
    Ok(format!("{active} trusted publisher(s)"))
}

/// Every trusted publisher has the accounts it pays from: the deposit step refuses every job
/// of one that has none, after its review, so a missing entry is found here instead.
fn check_depositors(config: &Config) -> Outcome {
    let accounts = config
        .depositor_accounts()
        .or_else(|(key, e)| fail(format!("{key}: {e}"), "write each account as a 0x address"))?;
    let Ok(store) = rapha_bundle::TrustStore::open(&config.trust.store) else {
        // The trust store's own check says why it cannot be read.
        return Ok("not checked: the trust store cannot be read".into());
    };
    let missing: Vec<&str> = store
        .publishers()
        .iter()
        .filter(|p| !p.revoked)
        .map(|p| p.name.as_str())
        .filter(|name| accounts.get(*name).is_none_or(Vec::is_empty))
        .collect();
    if !missing.is_empty() {
        return fail(
            format!(
                "no depositor account for trusted publisher(s) {}: each of their jobs would be \
                 refused at the deposit step (deposit-refused) after the DPO's review",
                missing.join(", ")
            ),
            "ask each company for the account it deposits from and list it under [depositors], \
             e.g. acme-ai = [\"0x…\"]",
        );
    }
    let total: usize = accounts.values().map(Vec::len).sum();
    Ok(format!(
        "{total} account(s) for {} publisher(s)",
        accounts.len()
    ))
}

fn check_tpm(config: &Config) -> Outcome {
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

fn check_ak(config: &Config) -> Outcome {
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

fn check_sgx(config: &Config) -> Outcome {
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

fn check_settlement(config: &Config) -> Outcome {
    let Some(s) = &config.settlement else {
        return fail(
            "no [settlement] section: the node cannot confirm deposits or settle",
            "add [settlement] with settler_key_file (`rapha-node keygen --settler`), hospital_address and payout_address",
        );
    };
    let key = crate::node_build::read_settler_key(&s.settler_key_file).or_else(|e| {
        fail(
            e.to_string(),
            format!(
                "create one with `rapha-node keygen --settler --out {}` and fund its address with gas",
                s.settler_key_file.display()
            ),
        )
    })?;
    let secret = read_secret_hex(&s.settler_key_file).ok();
    if secret.is_some_and(|k| is_dev_key(&k[..])) {
        return fail(
            format!("{} is a development key", s.settler_key_file.display()),
            "generate a production key with `rapha-node keygen --settler --out FILE`",
        );
    }
    let zero = "0x0000000000000000000000000000000000000000";
    for (key_name, v) in [
        ("settlement.hospital_address", &s.hospital_address),
        ("settlement.payout_address", &s.payout_address),
    ] {
        if v.eq_ignore_ascii_case(zero) {
            return fail(
                format!("{key_name} is the zero address (a placeholder)"),
                "set it to the account registered for the hospital in the escrow",
            );
        }
    }
    Ok(format!(
        "settler {} (key mode 0600), hospital {}, payout {}, settlement margin {} s",
        key.address(),
        s.hospital_address,
        s.payout_address,
        s.settle_margin_secs
    ))
}

fn check_api(config: &Config) -> Outcome {
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

fn check_trainer(config: &Config) -> Outcome {
    let rt = &config.trainer.runtime;
    let fix = "install an OCI runtime (e.g. runc) and set trainer.runtime to its absolute path";
    if !rt.is_absolute() {
        return fail(format!("{} is not an absolute path", rt.display()), fix);
    }
    let meta = std::fs::metadata(rt).or_else(|e| fail(format!("{}: {e}", rt.display()), fix))?;
    use std::os::unix::fs::PermissionsExt;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return fail(format!("{} is not an executable file", rt.display()), fix);
    }
    let out = Command::new(rt)
        .args(&config.trainer.runtime_args)
        .arg("--version")
        .output()
        .or_else(|e| fail(format!("{} cannot be run: {e}", rt.display()), fix))?;
    if !out.status.success() {
        return fail(
            format!("`{} --version` failed ({})", rt.display(), out.status),
            fix,
        );
    }
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    Ok(format!("{}: {version}", rt.display()))
}

/// The appliance's memory in MiB (`MemTotal` of /proc/meminfo), if it can be read.
fn memory_total_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// Shows the bounds a bundle's resource requests must fall in, and refuses a memory bound the
/// appliance cannot honour (a trainer admitted up to it would push the node out of memory).
fn check_trainer_limits(config: &Config, memory_mb: Option<u64>) -> Outcome {
    let l = &config.trainer.limits;
    l.validate().or_else(|(key, message)| {
        fail(
            format!("trainer.limits.{key}: {message}"),
            "set each bound as { min = N, max = M } with 1 <= min <= max",
        )
    })?;
    if let Some(total) = memory_mb {
        if l.memory_mb.max >= total {
            return fail(
                format!(
                    "trainer.limits.memory_mb.max = {} MiB is not below this appliance's {total} MiB of memory",
                    l.memory_mb.max
                ),
                "lower trainer.limits.memory_mb.max so a trainer cannot take the node's own memory",
            );
        }
    }
    Ok(format!(
        "memory {} MiB, cpus {}, pids {}, wall time {} s, /tmp {} MiB, gpus {}",
        l.memory_mb,
        l.cpus,
        l.pids,
        l.wall_seconds,
        l.tmp_mb,
        l.gpu_bound()
    ))
}

/// The GPUs a GPU job would get: the CDI specs parse, define the configured names and make
/// only edits the node applies, and the driver is there (each device node the specs list is a
/// device of the host, each library or socket they mount exists).
pub fn check_gpus(t: &crate::config::TrainerConfig) -> Outcome {
    if t.gpus.is_empty() {
        return Ok("not configured: jobs declaring a GPU are refused at admission".into());
    }
    let dirs = t.cdi_dirs();
    let shown_dirs = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let gpus = rapha_enclave::cdi::GpuDevices::resolve(&dirs, &t.gpus).or_else(|e| {
        fail(
            e.to_string(),
            format!(
                "install the GPU driver and generate its CDI spec into one of {shown_dirs} \
                 (e.g. `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`), then name \
                 devices it lists (`nvidia-ctk cdi list`) in trainer.gpus"
            ),
        )
    })?;
    let driver_fix = "the CDI spec names driver files this host does not have: install the \
                      driver it was generated for, or generate the spec again";
    for n in gpus.device_nodes() {
        let (kind, major, minor) = rapha_enclave::cdi::stat_device(Path::new(&n.host_path))
            .or_else(|e| fail(format!("device node {}: {e}", n.host_path), driver_fix))?;
        if (kind, major, minor) != (n.kind, n.major, n.minor) {
            return fail(
                format!(
                    "device node {} is {kind} {major}:{minor} on this host, the spec says {} {}:{}",
                    n.host_path, n.kind, n.major, n.minor
                ),
                driver_fix,
            );
        }
    }
    if let Some(missing) = gpus.mount_sources().find(|p| !Path::new(p).exists()) {
        return fail(
            format!("{missing} (mounted into GPU jobs) does not exist"),
            driver_fix,
        );
    }
    Ok(format!(
        "{} from {}: {} device nodes, {} mounts; a GPU job's pixels in GPU memory are outside \
         any enclave (its receipt's confinement says so)",
        t.gpus.join(", "),
        gpus.spec_files()
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        gpus.device_nodes().len(),
        gpus.mount_sources().count()
    ))
}

fn check_chain(config: &Config, r: &mut Report) {
    let c = &config.chain;
    let client = match reqwest::blocking::Client::builder()
        .timeout(NETWORK_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            r.fail(
                "chain RPC (chain.rpc_url)",
                format!("cannot build an HTTP client: {e}"),
                "check the system's TLS setup",
            );
            return;
        }
    };
    let rpc = |method: &str, params: Value| -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp: Value = client
            .post(&c.rpc_url)
            .json(&body)
            .send()
            .and_then(reqwest::blocking::Response::error_for_status)
            .and_then(reqwest::blocking::Response::json)
            .map_err(|e| format!("{method} to {}: {e}", c.rpc_url))?;
        if let Some(err) = resp.get("error") {
            return Err(format!("{method}: the node answered an error: {err}"));
        }
        resp.get("result")
            .cloned()
            .ok_or_else(|| format!("{method}: no result in the answer"))
    };
    let chain_ok = match rpc("eth_chainId", json!([])) {
        Err(e) => {
            r.fail(
                "chain RPC (chain.rpc_url)",
                e,
                "point chain.rpc_url at a reachable Polygon JSON-RPC endpoint",
            );
            false
        }
        Ok(v) => match v
            .as_str()
            .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        {
            Some(id) if id == c.chain_id => {
                r.pass(
                    "chain RPC (chain.rpc_url)",
                    format!("{} reachable, chain id {id}", c.rpc_url),
                );
                true
            }
            Some(id) => {
                r.fail(
                    "chain RPC (chain.rpc_url)",
                    format!(
                        "{} serves chain id {id}, but chain.chain_id is {}",
                        c.rpc_url, c.chain_id
                    ),
                    "use an RPC endpoint of the configured chain, or fix chain.chain_id",
                );
                false
            }
            None => {
                r.fail(
                    "chain RPC (chain.rpc_url)",
                    format!("eth_chainId answered {v}"),
                    "use a standard Ethereum JSON-RPC endpoint",
                );
                false
            }
        },
    };
    r.push("USDC token (chain.usdc_address)", check_usdc(c));
    if !chain_ok {
        r.fail(
            "escrow contract (chain.escrow_address)",
            "not checked: the chain RPC check failed",
            "fix the chain RPC first",
        );
        return;
    }
    let escrow = match rapha_core_address(&c.escrow_address) {
        Ok(a) => a,
        Err(e) => {
            r.fail(
                "escrow contract (chain.escrow_address)",
                e,
                "set chain.escrow_address to the deployed escrow's 0x address",
            );
            return;
        }
    };
    match rpc("eth_getCode", json!([escrow, "latest"])) {
        Ok(Value::String(code)) if code.len() > 2 => r.pass(
            "escrow contract (chain.escrow_address)",
            format!("contract code at {escrow} ({} bytes)", (code.len() - 2) / 2),
        ),
        Ok(_) => r.fail(
            "escrow contract (chain.escrow_address)",
            format!("no contract deployed at {escrow} on chain {}", c.chain_id),
            "deploy the Rapha escrow (contracts/) and set chain.escrow_address to its address",
        ),
        Err(e) => r.fail(
            "escrow contract (chain.escrow_address)",
            e,
            "check the chain RPC",
        ),
    }
}

fn check_usdc(c: &crate::config::ChainConfig) -> Outcome {
    let addr = rapha_core_address(&c.usdc_address)
        .or_else(|e| fail(e, "set chain.usdc_address to the official USDC address"))?;
    if c.test_token {
        return fail(
            format!("test token: non-production (chain.test_token = true accepts {addr} instead of official USDC)"),
            "remove test_token and set chain.usdc_address to official USDC",
        );
    }
    match OFFICIAL_USDC.iter().find(|(id, _, _)| *id == c.chain_id) {
        None => fail(
            format!("no official USDC is known for chain id {}", c.chain_id),
            "settle on Polygon PoS (chain id 137)",
        ),
        Some((_, official, name)) if official.eq_ignore_ascii_case(&addr) => {
            Ok(format!("official USDC on {name}"))
        }
        Some((_, official, name)) => fail(
            format!("{addr} is not official USDC on {name} ({official})"),
            format!("set chain.usdc_address = \"{official}\""),
        ),
    }
}

/// Checks a 0x-prefixed 20-byte hex address; returns it lowercased.
fn rapha_core_address(s: &str) -> Result<String, String> {
    let h = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("{s:?} is not a 0x address"))?;
    if h.len() != 40 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not a 0x address of 40 hex digits"));
    }
    Ok(format!("0x{}", h.to_ascii_lowercase()))
}

fn check_paths(config: &Config) -> Outcome {
    for (key, dir) in [
        ("paths.data_dir", &config.paths.data_dir),
        ("paths.state_dir", &config.paths.state_dir),
    ] {
        if !dir.is_dir() {
            return fail(
                format!("{key}: {} is not a directory", dir.display()),
                format!("mkdir -p {}", dir.display()),
            );
        }
        let probe = dir.join(".rapha-doctor-probe");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .or_else(|e| {
                fail(
                    format!("{key}: {} is not writable: {e}", dir.display()),
                    "give the node's user write access",
                )
            })?;
    }
    Ok("data and state directories writable".into())
}

/// The node's own memory cgroup, as far as swap goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupSwap {
    /// The cgroup cannot swap (v2 `memory.swap.max` 0; v1 memory+swap limit equal to the
    /// memory limit).
    Disallowed(String),
    /// The cgroup may swap (or no limit could be read: treated as allowed).
    Allowed(String),
}

/// The swap allowance of the node's memory cgroup, from `/proc/self/cgroup` and the files
/// `read` returns (a path under `/sys/fs/cgroup`, e.g. `/sys/fs/cgroup/x/memory.swap.max`).
pub fn node_cgroup_swap(
    proc_self_cgroup: &str,
    read: impl Fn(&str) -> Option<String>,
) -> CgroupSwap {
    let read = |p: &str| read(p).map(|v| v.trim().to_owned());
    // cgroup v1 (or hybrid): the memory controller's own line decides.
    let v1 = proc_self_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls.split(',').any(|c| c == "memory").then_some(path)
    });
    if let Some(path) = v1 {
        let dir = format!("/sys/fs/cgroup/memory{}", path.trim_end_matches('/'));
        let limit = read(&format!("{dir}/memory.limit_in_bytes"));
        let memsw = read(&format!("{dir}/memory.memsw.limit_in_bytes"));
        return match (limit, memsw) {
            (Some(l), Some(m)) if l == m => CgroupSwap::Disallowed(format!(
                "cgroup v1 memory:{path}: memory+swap limit equals the memory limit ({l} bytes)"
            )),
            (l, m) => CgroupSwap::Allowed(format!(
                "cgroup v1 memory:{path}: memory limit {}, memory+swap limit {}",
                l.as_deref().unwrap_or("unreadable"),
                m.as_deref().unwrap_or("unreadable (no swap accounting)")
            )),
        };
    }
    let v2 = proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/");
    let file = format!("/sys/fs/cgroup{}/memory.swap.max", v2.trim_end_matches('/'));
    match read(&file) {
        Some(v) if v == "0" => {
            CgroupSwap::Disallowed(format!("cgroup v2 {v2}: memory.swap.max is 0"))
        }
        Some(v) => CgroupSwap::Allowed(format!("cgroup v2 {v2}: memory.swap.max is {v}")),
        None => CgroupSwap::Allowed(format!("cgroup v2 {v2}: no memory.swap.max (no limit)")),
    }
}

/// Production refuses swap the node could use (**I3**): the runtime locks its own memory, but
/// the trainer's `/out` and what else the node's cgroup holds could still be written to a
/// swap device. PASS when `/proc/swaps` lists no active device, or the node's cgroup cannot
/// swap.
pub fn check_swap(proc_swaps: &str, cgroup: &CgroupSwap) -> Result<String, (String, String)> {
    let active: Vec<&str> = proc_swaps
        .lines()
        .skip(1) // the header: Filename Type Size Used Priority
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if active.is_empty() {
        return Ok("no active swap device".into());
    }
    match cgroup {
        CgroupSwap::Disallowed(why) => Ok(format!(
            "{} active swap device(s), but the node's cgroup cannot swap ({why})",
            active.len()
        )),
        CgroupSwap::Allowed(why) => fail(
            format!(
                "swap is active ({}) and the node's cgroup may use it ({why}): pixels and \
                 trainer outputs held in memory could be written to disk",
                active.join(", ")
            ),
            "turn swap off (swapoff -a, and remove it from /etc/fstab), or run the node in a \
             cgroup without swap (systemd: MemorySwapMax=0)",
        ),
    }
}

fn check_host_swap() -> Outcome {
    let swaps = std::fs::read_to_string("/proc/swaps").or_else(|e| {
        fail(
            format!("/proc/swaps is unreadable: {e}"),
            "run the node on Linux with /proc mounted",
        )
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    check_swap(
        &swaps,
        &node_cgroup_swap(&own, |p| std::fs::read_to_string(p).ok()),
    )
}

fn check_no_demo(config: &Config) -> Outcome {
    let json = serde_json::to_value(config).unwrap_or(Value::Null);
    let mut found = Vec::new();
    collect_demo_refs("", &json, &mut found);
    if config.mode == Mode::Demo {
        found.push("mode = \"demo\"".to_owned());
    }
    if found.is_empty() {
        Ok("no demo PACS, simulated attestation or demo tooling referenced".into())
    } else {
        fail(
            format!("demo components referenced: {}", found.join(", ")),
            "replace them with the hospital's real PACS, keys, runtime and chain",
        )
    }
}

fn collect_demo_refs(path: &str, v: &Value, found: &mut Vec<String>) {
    match v {
        Value::String(s) if DEMO_MARKERS.iter().any(|m| s.contains(m)) => {
            found.push(format!("{path} = {s:?}"))
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_demo_refs(&format!("{path}[{i}]"), item, found);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                collect_demo_refs(&p, item, found);
            }
        }
        _ => {}
    }
}

/// Arguments of `doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Node configuration file.
    #[arg(long, env = "RAPHA_NODE_CONFIG")]
    pub config: std::path::PathBuf,
}

/// Runs `doctor`: prints the report; returns whether every check passed.
///
/// # Errors
/// When the configuration cannot be read or parsed (the error names the key).
pub fn run(args: &DoctorArgs) -> anyhow::Result<bool> {
    let config = Config::load(&args.config)?;
    let report = run_doctor(&config);
    print!("{report}");
    Ok(report.passed())
}

/// For `rapha-node serve` in production mode: runs every check and refuses to start on any
/// FAIL, returning the report (print it: it says how to fix each failure).
///
/// # Errors
/// The full report when any check failed.
pub fn preflight(config: &Config) -> Result<Report, Report> {
    let report = run_doctor(config);
    if report.passed() {
        Ok(report)
    } else {
        Err(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(crate::init::PRODUCTION_TEMPLATE).unwrap()
    }

    #[test]
    fn trainer_limits_are_shown() {
        let detail = check_trainer_limits(&config(), Some(64 * 1024)).unwrap();
        assert_eq!(
            detail,
            "memory 64..=16384 MiB, cpus 1..=8, pids 8..=1024, wall time 10..=86400 s, /tmp 1..=1024 MiB, gpus 0..=0"
        );
    }

    fn gpu_trainer(dir: &Path, gpus: &[&str]) -> crate::config::TrainerConfig {
        let mut t = config().trainer;
        t.gpus = gpus.iter().map(|g| (*g).to_owned()).collect();
        t.cdi_spec_dirs = Some(vec![dir.to_owned()]);
        t
    }

    #[test]
    fn no_gpus_configured_passes_and_says_gpu_jobs_are_refused() {
        let t = config().trainer;
        assert_eq!(
            check_gpus(&t).unwrap(),
            "not configured: jobs declaring a GPU are refused at admission"
        );
    }

    /// This machine has no GPU: the spec stands its GPU for /dev/null, and the driver check
    /// runs on that real device node.
    #[test]
    fn gpus_pass_when_the_spec_names_them_and_the_host_has_their_nodes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("gpu.yaml"),
            "cdiVersion: 0.5.0\nkind: example.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/gpu0\n      hostPath: /dev/null\n",
        )
        .unwrap();
        let detail = check_gpus(&gpu_trainer(dir.path(), &["example.com/gpu=0"])).unwrap();
        assert!(
            detail.starts_with("example.com/gpu=0 from ")
                && detail.contains(": 1 device nodes, 0 mounts"),
            "{detail}"
        );
        let (detail, _) = check_gpus(&gpu_trainer(dir.path(), &["example.com/gpu=1"])).unwrap_err();
        assert!(detail.starts_with("no CDI spec in "), "{detail}");
    }

    /// The sample spec `nvidia-ctk` would write on a GPU host: this host has not its driver.
    #[test]
    fn gpus_fail_when_the_driver_the_spec_names_is_missing() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rapha-enclave/testdata/cdi");
        let (detail, fix) = check_gpus(&gpu_trainer(&dir, &["nvidia.com/gpu=all"])).unwrap_err();
        assert!(
            detail.starts_with("the device node /dev/nvidia-modeset of the CDI spec "),
            "{detail}"
        );
        assert!(fix.starts_with("install the GPU driver"), "{fix}");
        let (detail, _) = check_gpus(&gpu_trainer(&dir, &["nvidia.com/gpu=7"])).unwrap_err();
        assert!(detail.contains("defines \"nvidia.com/gpu=7\""), "{detail}");
    }

    #[test]
    fn a_memory_bound_the_appliance_cannot_honour_fails() {
        let (detail, _) = check_trainer_limits(&config(), Some(8 * 1024)).unwrap_err();
        assert_eq!(
            detail,
            "trainer.limits.memory_mb.max = 16384 MiB is not below this appliance's 8192 MiB of memory"
        );
    }
}

#[cfg(test)]
mod swap_tests {
    use super::{check_swap, node_cgroup_swap, CgroupSwap};

    const ACTIVE: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
        /dev/vda3                               partition\t8388604\t\t0\t\t-2\n\
        /swapfile                               file\t\t2097148\t\t0\t\t-3\n";
    const NONE: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

    fn files(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(p, v)| ((*p).to_owned(), (*v).to_owned()))
            .collect();
        move |p: &str| owned.iter().find(|(k, _)| k == p).map(|(_, v)| v.clone())
    }

    #[test]
    fn active_swap_with_a_cgroup_that_may_swap_is_refused() {
        // cgroup v2, the node's service without a swap limit.
        let cg = node_cgroup_swap(
            "0::/system.slice/rapha-node.service\n",
            files(&[(
                "/sys/fs/cgroup/system.slice/rapha-node.service/memory.swap.max",
                "max\n",
            )]),
        );
        let Err((detail, fix)) = check_swap(ACTIVE, &cg) else {
            panic!("active swap passed")
        };
        assert_eq!(
            detail,
            "swap is active (/dev/vda3, /swapfile) and the node's cgroup may use it (cgroup v2 \
             /system.slice/rapha-node.service: memory.swap.max is max): pixels and trainer \
             outputs held in memory could be written to disk"
        );
        assert!(
            fix.contains("swapoff -a") && fix.contains("MemorySwapMax=0"),
            "{fix}"
        );
        // The root cgroup has no memory.swap.max at all: no limit, refused too.
        let root = node_cgroup_swap("0::/\n", files(&[]));
        assert!(matches!(root, CgroupSwap::Allowed(_)));
        assert!(check_swap(ACTIVE, &root).is_err());
    }

    #[test]
    fn cgroup_v1_without_swap_accounting_counts_as_swap_allowed() {
        let proc_cgroup = "9:pids:/\n4:memory:/rapha-node\n0::/\n";
        let no_accounting = node_cgroup_swap(
            proc_cgroup,
            files(&[(
                "/sys/fs/cgroup/memory/rapha-node/memory.limit_in_bytes",
                "4294967296",
            )]),
        );
        assert!(check_swap(ACTIVE, &no_accounting).is_err());
        let swap_allowed = node_cgroup_swap(
            proc_cgroup,
            files(&[
                (
                    "/sys/fs/cgroup/memory/rapha-node/memory.limit_in_bytes",
                    "4294967296",
                ),
                (
                    "/sys/fs/cgroup/memory/rapha-node/memory.memsw.limit_in_bytes",
                    "9223372036854771712",
                ),
            ]),
        );
        assert!(check_swap(ACTIVE, &swap_allowed).is_err());
    }

    #[test]
    fn no_active_swap_or_a_cgroup_that_cannot_swap_passes() {
        let may_swap = CgroupSwap::Allowed("test".into());
        assert_eq!(
            check_swap(NONE, &may_swap),
            Ok("no active swap device".into())
        );
        assert_eq!(
            check_swap("", &may_swap),
            Ok("no active swap device".into())
        );
        let v2 = node_cgroup_swap(
            "0::/rapha\n",
            files(&[("/sys/fs/cgroup/rapha/memory.swap.max", "0\n")]),
        );
        assert_eq!(
            v2,
            CgroupSwap::Disallowed("cgroup v2 /rapha: memory.swap.max is 0".into())
        );
        assert!(check_swap(ACTIVE, &v2).is_ok());
        let v1 = node_cgroup_swap(
            "4:memory:/rapha-node\n",
            files(&[
                (
                    "/sys/fs/cgroup/memory/rapha-node/memory.limit_in_bytes",
                    "4294967296\n",
                ),
                (
                    "/sys/fs/cgroup/memory/rapha-node/memory.memsw.limit_in_bytes",
                    "4294967296\n",
                ),
            ]),
        );
        assert!(matches!(v1, CgroupSwap::Disallowed(_)));
        assert!(check_swap(ACTIVE, &v1).is_ok());
    }
}
