//! DPO approvals, keys and the approval store, attacked and used honestly.

use std::os::unix::fs::PermissionsExt;

use rapha_core::Digest;
use rapha_policy::{
    is_dev_key, write_secret_hex, ApprovalStore, CohortSummary, DpoPublicKey, DpoSigningKey,
    PolicyError, ReviewRequest, DEV_KEY_PREFIX,
};

use crate::common::{request, NOW};

fn review(commitment: &[u8]) -> ReviewRequest {
    ReviewRequest::new(
        request(),
        CohortSummary {
            commitment: Digest::of(commitment),
            patients: 80,
            train_patients: 64,
            validation_patients: 16,
            studies: 90,
            instances: 200,
            modalities: [("CR".to_owned(), 200)].into(),
            exclusions: [("opted-out".to_owned(), 3)].into(),
            demographics: None,
        },
    )
}

#[test]
fn signed_approval_verifies_and_any_edit_breaks_it() {
    let dpo = DpoSigningKey::generate();
    let a = dpo.approve(Digest::of(b"j"), NOW, NOW + 10).unwrap();
    a.verify().unwrap();
    assert!(a.signed_by_one_of(&[dpo.public()]));
    assert!(!a.signed_by_one_of(&[DpoSigningKey::generate().public()]));

    let mut other_job = a.clone();
    other_job.job_digest = Digest::of(b"k");
    let mut later = a.clone();
    later.expires_at += 1;
    let mut earlier = a.clone();
    earlier.issued_at -= 1;
    let mut swapped_key = a.clone();
    swapped_key.dpo_key = DpoSigningKey::generate().public();
    let mut bad_hex = a.clone();
    bad_hex.signature = "zz".into();
    for forged in [other_job, later, earlier, swapped_key, bad_hex] {
        assert!(
            matches!(forged.verify(), Err(PolicyError::BadSignature { .. })),
            "{forged:?}"
        );
    }
}

#[test]
fn approval_cannot_expire_before_it_is_issued() {
    let dpo = DpoSigningKey::generate();
    assert!(matches!(
        dpo.approve(Digest::of(b"j"), NOW, NOW),
        Err(PolicyError::ExpiryBeforeIssue { .. })
    ));
}

#[test]
fn approval_json_round_trips_and_refuses_unknown_fields() {
    let dpo = DpoSigningKey::generate();
    let a = dpo.approve(Digest::of(b"j"), NOW, NOW + 10).unwrap();
    let mut json = serde_json::to_value(&a).unwrap();
    assert_eq!(
        serde_json::from_value::<rapha_policy::Approval>(json.clone()).unwrap(),
        a
    );
    json["note"] = "x".into();
    assert!(serde_json::from_value::<rapha_policy::Approval>(json).is_err());
}

#[test]
fn store_records_only_approvals_of_jobs_waiting_for_review() {
    let dir = tempfile::tempdir().unwrap();
    let store = ApprovalStore::open(dir.path()).unwrap();
    let dpo = DpoSigningKey::generate();
    let unknown = dpo
        .approve(Digest::of(b"never submitted"), NOW, NOW + 10)
        .unwrap();
    assert!(matches!(
        store.record(&unknown),
        Err(PolicyError::UnknownJob(_))
    ));

    let digest = store.submit(&review(b"a")).unwrap();
    let mut forged = dpo.approve(digest, NOW, NOW + 10).unwrap();
    forged.expires_at += 100;
    assert!(matches!(
        store.record(&forged),
        Err(PolicyError::BadSignature { .. })
    ));
    store
        .record(&dpo.approve(digest, NOW, NOW + 10).unwrap())
        .unwrap();
    let rec = store.get(&digest).unwrap().unwrap();
    assert_eq!((rec.revoked_at, rec.started_at), (None, None));
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].job_digest, digest);
    assert_eq!(list[0].review.as_ref().unwrap().cohort.patients, 80);
}

#[test]
fn revoked_approval_stops_the_job_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let store = ApprovalStore::open(dir.path()).unwrap();
    let dpo = DpoSigningKey::generate();
    let digest = store.submit(&review(b"a")).unwrap();
    store
        .record(&dpo.approve(digest, NOW, NOW + 10).unwrap())
        .unwrap();
    store.revoke(&digest, NOW + 1).unwrap();
    assert_eq!(
        store.get(&digest).unwrap().unwrap().revoked_at,
        Some(NOW + 1)
    );
    assert!(matches!(
        store.mark_started(&digest, NOW + 2),
        Err(PolicyError::Revoked(_))
    ));
    // A fresh approval cannot undo the revocation of the same job digest.
    let again = dpo.approve(digest, NOW + 3, NOW + 20).unwrap();
    assert!(matches!(store.record(&again), Err(PolicyError::Revoked(_))));
    assert!(matches!(
        store.revoke(&digest, NOW + 4),
        Err(PolicyError::Revoked(_))
    ));
}

#[test]
fn started_job_cannot_have_its_approval_revoked_or_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = ApprovalStore::open(dir.path()).unwrap();
    let dpo = DpoSigningKey::generate();
    let digest = store.submit(&review(b"a")).unwrap();
    assert!(matches!(
        store.mark_started(&digest, NOW),
        Err(PolicyError::NoApproval(_))
    ));
    store
        .record(&dpo.approve(digest, NOW, NOW + 10).unwrap())
        .unwrap();
    store.mark_started(&digest, NOW + 1).unwrap();
    assert!(matches!(
        store.revoke(&digest, NOW + 2),
        Err(PolicyError::AlreadyStarted(_))
    ));
    let again = dpo.approve(digest, NOW + 3, NOW + 20).unwrap();
    assert!(matches!(
        store.record(&again),
        Err(PolicyError::AlreadyStarted(_))
    ));
    assert_eq!(
        store.get(&digest).unwrap().unwrap().started_at,
        Some(NOW + 1)
    );
}

#[test]
fn edited_review_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = ApprovalStore::open(dir.path()).unwrap();
    let digest = store.submit(&review(b"a")).unwrap();
    let path = dir.path().join(format!("{digest}.review.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"patients\": 80", "\"patients\": 800");
    std::fs::write(&path, text).unwrap();
    // The cohort counts are not in the digest, but the commitment is: edit the commitment too.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&Digest::of(b"a").to_hex(), &Digest::of(b"b").to_hex());
    std::fs::write(&path, text).unwrap();
    assert!(matches!(
        store.review(&digest),
        Err(PolicyError::StoreCorrupt { .. })
    ));
}

#[test]
fn dpo_key_file_round_trips_and_bad_files_are_refused_without_key_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dpo.key");
    let key = DpoSigningKey::generate();
    write_secret_hex(&path, &key.expose_seed()).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(DpoSigningKey::load(&path).unwrap().public(), key.public());
    // Never overwrites an existing key.
    assert!(matches!(
        write_secret_hex(&path, &key.expose_seed()),
        Err(PolicyError::KeyIo { .. })
    ));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = DpoSigningKey::load(&path).err().unwrap().to_string();
    assert!(
        err.contains("mode 644") && err.contains("chmod 600"),
        "{err}"
    );

    for (name, body) in [
        ("short", "ab".repeat(31)),
        ("long", "ab".repeat(33)),
        ("nothex", "zz".repeat(32)),
    ] {
        let p = dir.path().join(name);
        rapha_policy::write_secret_file(&p, body.as_bytes()).unwrap();
        let err = DpoSigningKey::load(&p).err().unwrap().to_string();
        assert!(err.contains("expected 64 hex digits"), "{err}");
        assert!(
            !err.contains(&body[..20]),
            "error must not echo key material: {err}"
        );
    }
}

#[test]
fn dev_keys_carry_the_marker_and_real_keys_do_not() {
    let dev = DpoSigningKey::generate_dev();
    assert!(dev.is_dev());
    assert!(dev.expose_seed().starts_with(DEV_KEY_PREFIX));
    for _ in 0..16 {
        assert!(!DpoSigningKey::generate().is_dev());
    }
    assert!(is_dev_key(b"RAPHA-DEV!0123456789012345678901"));
    assert!(!is_dev_key(b"RAPHA-DEV"));
}

#[test]
fn public_key_parses_only_from_64_hex_digits() {
    let k = DpoSigningKey::generate().public();
    assert_eq!(k.to_hex().parse::<DpoPublicKey>().unwrap(), k);
    for bad in ["", "00", &"g".repeat(64), &"ab".repeat(33)] {
        assert!(
            matches!(
                bad.parse::<DpoPublicKey>(),
                Err(PolicyError::InvalidPublicKey(_))
            ),
            "{bad:?}"
        );
    }
}
