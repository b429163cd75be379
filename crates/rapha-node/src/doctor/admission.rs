//! What admission and the deposit step rest on: the Rego policy compiles and its own tests
//! pass, the trust store has publishers, and each of them has the accounts it pays from.

use rapha_policy::Policy;

use crate::config::Config;

use super::{fail, Outcome};

pub(super) fn check_policy(config: &Config) -> Outcome {
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

pub(super) fn check_trust(config: &Config) -> Outcome {
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
pub(super) fn check_depositors(config: &Config) -> Outcome {
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
