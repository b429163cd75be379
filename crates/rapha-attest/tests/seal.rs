//! The HMAC key sealed to a TPM (swtpm) under a PCR policy: it unseals on the same TPM with the
//! same PCRs, and is refused, each with its own error, after a PCR changed (the measured boot
//! state moved), on another TPM (the disk moved to another machine), or from an altered file.

use std::collections::BTreeSet;

use rapha_attest::tpm::{connect, seal, unseal, SealedSecret};
use rapha_attest::AttestError;
use rapha_testkit::services::Swtpm;
use tss_esapi::handles::PcrHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{Digest as TpmDigest, DigestValues};

const SECRET: [u8; 32] = [0x5a; 32];

fn pcrs() -> BTreeSet<u8> {
    [0, 1, 2, 3, 4, 7, 14].into_iter().collect()
}

fn extend_pcr14(tcti: &str) {
    let mut ctx = connect(tcti).unwrap();
    let mut values = DigestValues::new();
    values.set(
        HashingAlgorithm::Sha256,
        TpmDigest::try_from(vec![0xcd; 32]).unwrap(),
    );
    ctx.execute_with_nullauth_session(|c| c.pcr_extend(PcrHandle::Pcr14, values))
        .unwrap();
}

#[test]
fn a_sealed_key_unseals_only_on_its_tpm_with_its_pcrs() {
    let Some(tpm) = rapha_testkit::require!(Swtpm::start()) else {
        return;
    };
    let sealed = seal(&mut connect(&tpm.tcti()).unwrap(), &SECRET, &pcrs()).unwrap();
    // The file holds no copy of the secret.
    let file = serde_json::to_string(&sealed).unwrap();
    assert!(!file.contains(&hex::encode(SECRET)));
    // Same TPM, same PCRs, a new connection (as after a node restart): the secret.
    let back = unseal(&mut connect(&tpm.tcti()).unwrap(), &sealed).unwrap();
    assert_eq!(back.as_slice(), SECRET);

    // Another machine's TPM (the disk moved): refused.
    let Some(other) = rapha_testkit::require!(Swtpm::start()) else {
        return;
    };
    let err = unseal(&mut connect(&other.tcti()).unwrap(), &sealed).unwrap_err();
    assert!(
        matches!(err, AttestError::SealedKeyRefused(ref m) if m.contains("cannot load")),
        "{err}"
    );

    // An altered file: refused before or by the TPM, never a wrong secret.
    let mut altered: SealedSecret = sealed.clone();
    let mut private = hex::decode(&altered.private).unwrap();
    let last = private.len() - 1;
    private[last] ^= 1;
    altered.private = hex::encode(private);
    let err = unseal(&mut connect(&tpm.tcti()).unwrap(), &altered).unwrap_err();
    assert!(matches!(err, AttestError::SealedKeyRefused(_)), "{err}");
    let mut wrong_format = sealed.clone();
    wrong_format.format = "something-else/1".into();
    let err = unseal(&mut connect(&tpm.tcti()).unwrap(), &wrong_format).unwrap_err();
    assert!(matches!(err, AttestError::SealedFileMalformed(_)), "{err}");

    // The measured boot state changes (PCR 14 extended): refused, on the same TPM.
    extend_pcr14(&tpm.tcti());
    let err = unseal(&mut connect(&tpm.tcti()).unwrap(), &sealed).unwrap_err();
    assert!(
        matches!(err, AttestError::SealedKeyRefused(ref m) if m.contains("differ")),
        "{err}"
    );
}

#[test]
fn sealing_to_no_pcr_is_refused() {
    let Some(tpm) = rapha_testkit::require!(Swtpm::start()) else {
        return;
    };
    let err = seal(
        &mut connect(&tpm.tcti()).unwrap(),
        &SECRET,
        &BTreeSet::new(),
    )
    .unwrap_err();
    assert!(
        matches!(err, AttestError::PcrSelectionMismatch { .. }),
        "{err}"
    );
}
