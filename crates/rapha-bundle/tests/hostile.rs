//! A trusted publisher's hostile bundles (issue 18, review findings 3 and 8): a verification
//! whose cost the publisher chooses (a layer blob listed thousands of times, an envelope full of
//! junk signatures tried against every trusted key), and names that print terminal escapes in
//! the DPO's approval prompt. Each is signed by hand with a key the hospital trusts, as the
//! attacker would: `sign_bundle` refuses to write most of them.

use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rapha_bundle::dsse::{Envelope, Signature, IN_TOTO_PAYLOAD_TYPE};
use rapha_bundle::oci::{Descriptor, MEDIA_CONFIG, MEDIA_LAYER_TAR, MEDIA_MANIFEST};
use rapha_bundle::statement::{Statement, TrainerId};
use rapha_bundle::{verify_bundle, BundleError, SigningKey, TrainerPredicate, TrustStore};
use rapha_core::Digest;

use crate::common::*;

/// How long a refusal of a bundle built to be expensive may take: the honest work of reading
/// its JSON documents, nothing proportional to what the attacker repeated.
const FAST: Duration = Duration::from_secs(1);

/// The predicate of [`spec`] for an image whose config is [`layout_listing`]'s.
fn predicate() -> TrainerPredicate {
    let s = spec();
    TrainerPredicate {
        publisher: s.publisher,
        trainer: TrainerId {
            name: s.name,
            version: s.version,
        },
        entrypoint: vec!["/trainer".into()],
        env: vec!["EPOCHS=3".into()],
        outputs: s.outputs,
        resources: s.resources,
        requested_fields: s.requested_fields,
        audit: None,
    }
}

/// Signs the layout at `dir` in place (the envelope beside `index.json`) with `predicate`.
fn sign_in_place(key: &SigningKey, dir: &Path, predicate: &TrainerPredicate) -> Envelope {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest =
        rapha_bundle::oci::parse_oci_digest(index["manifests"][0]["digest"].as_str().unwrap())
            .unwrap();
    let statement = Statement::new(manifest, predicate).unwrap();
    let envelope = Envelope::sign(
        IN_TOTO_PAYLOAD_TYPE,
        &serde_json::to_vec(&statement).unwrap(),
        key,
    );
    write_envelope(dir, &envelope);
    envelope
}

fn write_envelope(dir: &Path, envelope: &Envelope) {
    std::fs::write(
        dir.join("signature.dsse.json"),
        serde_json::to_vec(envelope).unwrap(),
    )
    .unwrap();
}

/// A trust store under `dir` trusting `key` as `acme-ai` for any trainer, and `others` more
/// publishers (a hospital with several suppliers: more keys to try).
fn trust(dir: &Path, key: &SigningKey, others: u8) -> TrustStore {
    TrustStore::add(dir, "acme-ai", &key.public_key(), &[], None).unwrap();
    for i in 0..others {
        TrustStore::add(
            dir,
            &format!("supplier-{i}"),
            &rapha_bundle::SigningKey::ed25519_from_seed(&[100 + i; 32]).public_key(),
            &[],
            None,
        )
        .unwrap();
    }
    TrustStore::open(dir).unwrap()
}

/// Writes an OCI layout at `out` whose manifest lists one layer blob of `blob_bytes` zero bytes
/// `times` times (a sparse file: the test costs no disk, and reading it costs no I/O).
fn layout_listing(out: &Path, blob_bytes: u64, times: usize) {
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let tmp = blobs.join(".layer");
    std::fs::File::create(&tmp)
        .unwrap()
        .set_len(blob_bytes)
        .unwrap();
    let mut hasher = sha2::Sha256::default();
    let mut f = std::fs::File::open(&tmp).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sha2::Digest::update(&mut hasher, &buf[..n]);
    }
    let layer = Digest::from_bytes(sha2::Digest::finalize(hasher).into());
    std::fs::rename(&tmp, blobs.join(layer.to_hex())).unwrap();
    let put = |bytes: &[u8], media: &str| {
        let d = Digest::of(bytes);
        std::fs::write(blobs.join(d.to_hex()), bytes).unwrap();
        Descriptor {
            media_type: media.into(),
            digest: d.to_oci(),
            size: bytes.len() as u64,
            annotations: None,
        }
    };
    let desc = Descriptor {
        media_type: MEDIA_LAYER_TAR.into(),
        digest: layer.to_oci(),
        size: blob_bytes,
        annotations: None,
    };
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/trainer"], "Env": ["EPOCHS=3"]},
        // An uncompressed layer's diff_id is its digest.
        "rootfs": {"type": "layers", "diff_ids": vec![layer.to_oci(); times]},
    });
    let config_desc = put(&serde_json::to_vec(&config).unwrap(), MEDIA_CONFIG);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
        "config": config_desc, "layers": vec![desc; times],
    });
    let m = put(&serde_json::to_vec(&manifest).unwrap(), MEDIA_MANIFEST);
    std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [m]});
    std::fs::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Verifies `dir`, returning the refusal and how long it took.
fn refusal(dir: &Path, store: &TrustStore) -> (BundleError, Duration) {
    let t = Instant::now();
    let result = verify_bundle(dir, store);
    let took = t.elapsed();
    match result {
        Err(e) => (e, took),
        Ok(vb) => panic!(
            "the hostile bundle verified after {took:?} (manifest {})",
            vb.manifest_digest()
        ),
    }
}

#[test]
fn a_layer_blob_listed_twenty_thousand_times_is_refused_before_any_layer_is_hashed() {
    // The review's attack in small: one blob, a manifest naming it for every layer. Hashing it
    // once per listing was 20,000 x 1 MiB = 20 GiB of SHA-256 for one verification.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    layout_listing(&bundle, 1 << 20, 20_000);
    let key = key(21);
    sign_in_place(&key, &bundle, &predicate());
    let store = trust(&tmp.path().join("store"), &key, 0);
    let (err, took) = refusal(&bundle, &store);
    eprintln!("FIGURES 1 MiB layer listed 20,000 times: refused in {took:?}");
    assert!(
        matches!(
            err,
            BundleError::TooManyLayers {
                layers: 20_000,
                limit: 128
            }
        ),
        "{err}"
    );
    assert!(took < FAST, "the refusal took {took:?}");
}

#[test]
fn a_layer_blob_listed_twice_is_refused_before_any_layer_is_hashed() {
    // Within the layer cap, the same blob listed 128 times: 128 x 64 MiB = 8 GiB of SHA-256.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    layout_listing(&bundle, 64 << 20, 128);
    let key = key(22);
    sign_in_place(&key, &bundle, &predicate());
    let store = trust(&tmp.path().join("store"), &key, 0);
    let (err, took) = refusal(&bundle, &store);
    eprintln!("FIGURES 64 MiB layer listed 128 times: refused in {took:?}");
    match err {
        BundleError::DuplicateLayer {
            first: 0,
            second: 1,
            ..
        } => {}
        other => panic!("{other}"),
    }
    assert!(took < FAST, "the refusal took {took:?}");
}

#[test]
fn more_distinct_layers_than_the_cap_are_refused_and_the_cap_itself_verifies() {
    let tars: Vec<Vec<u8>> = (0..129)
        .map(|i| raw_tar(&[file(&format!("f{i}"), b"x", 0o644)]))
        .collect();
    let layers: Vec<(&str, Vec<u8>, Vec<u8>)> = tars
        .iter()
        .map(|t| (MEDIA_LAYER_TAR, t.clone(), t.clone()))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let key = key(23);
    let store = trust(&tmp.path().join("store"), &key, 0);
    let over = tmp.path().join("over");
    layout_from_layers(&over, &layers);
    sign_in_place(&key, &over, &predicate());
    let err = verify_bundle(&over, &store).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::TooManyLayers {
                layers: 129,
                limit: 128
            }
        ),
        "{err}"
    );
    // `rapha bundle sign` refuses to sign such an image in the first place.
    let err = rapha_bundle::sign_bundle(&key, &over, &spec(), &tmp.path().join("b")).unwrap_err();
    assert!(matches!(err, BundleError::TooManyLayers { .. }), "{err}");
    let at = tmp.path().join("at");
    layout_from_layers(&at, &layers[..128]);
    sign_in_place(&key, &at, &predicate());
    assert_eq!(
        verify_bundle(&at, &store).unwrap().trainer_name(),
        "lesion-classifier"
    );
}

/// An honestly signed bundle whose statement is padded to `padding` bytes (requested fields,
/// which the publisher chooses freely), with `junk` signatures before the real one.
fn padded_with_junk_signatures(
    dir: &Path,
    key: &SigningKey,
    padding: usize,
    junk: usize,
    junk_keyid: &str,
) {
    layout_listing(dir, 4096, 1);
    let mut p = predicate();
    p.requested_fields = (0..padding / 24)
        .map(|i| format!("BodyPartExamined{i:06}"))
        .collect();
    let honest = sign_in_place(key, dir, &p);
    // A junk signature: the real one with its scalar changed. It parses, its R is a valid
    // point, so checking it hashes the whole PAE before it fails.
    let mut raw = rapha_bundle::dsse::decode_b64(&honest.signatures[0].sig).unwrap();
    raw[40] ^= 1;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    let mut signatures = vec![
        Signature {
            keyid: junk_keyid.to_owned(),
            sig: b64,
        };
        junk
    ];
    signatures.push(honest.signatures[0].clone());
    write_envelope(
        dir,
        &Envelope {
            signatures,
            ..honest
        },
    );
}

#[test]
fn an_envelope_of_thousands_of_junk_signatures_is_refused_before_any_is_checked() {
    // Inside the 1 MiB envelope cap: a 350 KB statement and 5,500 junk signatures with no
    // keyid, each tried against every trusted key (two here) before the real one.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let key = key(24);
    padded_with_junk_signatures(&bundle, &key, 350_000, 5_500, "");
    let size = std::fs::metadata(bundle.join("signature.dsse.json"))
        .unwrap()
        .len();
    assert!(size <= rapha_bundle::dsse::MAX_ENVELOPE_BYTES, "{size}");
    let store = trust(&tmp.path().join("store"), &key, 1);
    let (err, took) = refusal(&bundle, &store);
    eprintln!("FIGURES 5,500 junk signatures over a 350 KB statement, 2 trusted keys: refused in {took:?}");
    assert!(
        matches!(
            err,
            BundleError::TooManySignatures {
                signatures: 5_501,
                limit: 4
            }
        ),
        "{err}"
    );
    assert!(took < FAST, "the refusal took {took:?}");
}

#[test]
fn a_signature_without_a_keyid_is_not_tried_against_the_trusted_keys() {
    let f = Fixture::new();
    let path = f.bundle().join("signature.dsse.json");
    let mut env = Envelope::parse(&std::fs::read(&path).unwrap()).unwrap();
    env.signatures[0].keyid.clear();
    std::fs::write(&path, serde_json::to_vec(&env).unwrap()).unwrap();
    let err = verify_bundle(&f.bundle(), &f.store()).unwrap_err();
    assert!(matches!(err, BundleError::MissingKeyId), "{err}");
}

#[test]
fn a_signature_is_checked_only_against_the_key_its_keyid_names() {
    // The real signature, relabelled with another trusted publisher's key id: it is checked
    // against that key alone (and fails), never against the key that made it.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let key = key(25);
    layout_listing(&bundle, 4096, 1);
    let mut env = sign_in_place(&key, &bundle, &predicate());
    let store = trust(&tmp.path().join("store"), &key, 1);
    let other = store
        .publishers()
        .iter()
        .find(|p| p.name == "supplier-0")
        .unwrap()
        .keyid();
    env.signatures[0].keyid = other;
    write_envelope(&bundle, &env);
    let err = verify_bundle(&bundle, &store).unwrap_err();
    assert!(
        matches!(err, BundleError::BadSignature { ref publisher } if publisher == "supplier-0"),
        "{err}"
    );
}

#[test]
fn four_signatures_verify_and_a_fifth_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key(26);
    let store = trust(&tmp.path().join("store"), &key, 0);
    let keyid = key.public_key().keyid();
    let four = tmp.path().join("four");
    padded_with_junk_signatures(&four, &key, 0, 3, &keyid);
    assert_eq!(verify_bundle(&four, &store).unwrap().publisher(), "acme-ai");
    let five = tmp.path().join("five");
    padded_with_junk_signatures(&five, &key, 0, 4, &keyid);
    let err = verify_bundle(&five, &store).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::TooManySignatures {
                signatures: 5,
                limit: 4
            }
        ),
        "{err}"
    );
}

/// What a hostile publisher trusted for `*` names its trainer: a forged review and prompt for
/// the DPO's terminal, then SGR 8 (conceal) over the real lines that follow.
const SPOOFING_NAME: &str = "x\n  fee:               0.01 USDC (chain 137)\nApprove this job? Type 'yes' to sign: \u{1b}[8m";

fn signed_with(tmp: &Path, edit: impl FnOnce(&mut TrainerPredicate)) -> BundleError {
    let bundle = tmp.join("bundle");
    let key = key(27);
    layout_listing(&bundle, 4096, 1);
    let mut p = predicate();
    edit(&mut p);
    sign_in_place(&key, &bundle, &p);
    let store = trust(&tmp.join("store"), &key, 0);
    verify_bundle(&bundle, &store).unwrap_err()
}

#[test]
fn a_trainer_name_with_a_newline_and_an_ansi_escape_is_refused_at_verification() {
    let tmp = tempfile::tempdir().unwrap();
    let err = signed_with(tmp.path(), |p| p.trainer.name = SPOOFING_NAME.into());
    match &err {
        BundleError::UnsafeName { field, value, .. } => {
            assert_eq!((*field, value.as_str()), ("trainer name", SPOOFING_NAME));
        }
        other => panic!("{other}"),
    }
    // The refusal's own text shows the name escaped (it reaches logs and the API).
    let text = err.to_string();
    assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
}

#[test]
fn a_trainer_version_output_name_or_field_with_control_characters_is_refused() {
    type Edit = Box<dyn FnOnce(&mut TrainerPredicate)>;
    let cases: [(&str, Edit); 3] = [
        (
            "trainer version",
            Box::new(|p| p.trainer.version = "1.0\u{1b}[2J".into()),
        ),
        (
            "output name",
            Box::new(|p| p.outputs[0].name = "model\r.safetensors".into()),
        ),
        (
            "requested field",
            Box::new(|p| p.requested_fields = vec!["Body\u{7}Part".into()]),
        ),
    ];
    for (what, edit) in cases {
        let tmp = tempfile::tempdir().unwrap();
        match signed_with(tmp.path(), edit) {
            BundleError::UnsafeName { field, .. } => assert_eq!(field, what),
            other => panic!("{what}: {other}"),
        }
    }
}

#[test]
fn sign_bundle_refuses_a_name_the_node_would_refuse() {
    let f = Fixture::new();
    let mut s = spec();
    s.name = "Lesion Classifier".into();
    let err = rapha_bundle::sign_bundle(&f.key, &f.path("layout"), &s, &f.path("b")).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::UnsafeName {
                field: "trainer name",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !f.path("b").exists(),
        "a half-signed bundle was left behind"
    );
}

#[test]
fn a_verification_stops_soon_after_it_is_cancelled() {
    // A 1 GiB layer takes about a second to hash; the flag is checked between blocks.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    layout_listing(&bundle, 1 << 30, 1);
    let key = key(28);
    sign_in_place(&key, &bundle, &predicate());
    let store = trust(&tmp.path().join("store"), &key, 0);
    let cancel = rapha_bundle::Cancel::new();
    let guard = cancel.on_drop();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drop(guard);
    });
    let t = Instant::now();
    let err = rapha_bundle::verify_bundle_cancellable(&bundle, &store, &cancel).unwrap_err();
    let took = t.elapsed();
    stopper.join().unwrap();
    assert!(matches!(err, BundleError::Cancelled), "{err}");
    assert!(took < Duration::from_millis(600), "stopped after {took:?}");
}

#[test]
fn a_tensor_name_with_free_text_or_an_overflowing_shape_is_refused_at_verification() {
    use rapha_core::release::{TensorDecl, TensorDtype};
    let cases: [(&str, TensorDecl); 3] = [
        (
            "tensor name",
            TensorDecl {
                name: "w\u{1b}[2J Approve this job".into(),
                dtype: TensorDtype::F32,
                shape: vec![2],
            },
        ),
        (
            "max_bytes",
            TensorDecl {
                name: "w".into(),
                dtype: TensorDtype::F64,
                shape: vec![1 << 32, 1 << 32],
            },
        ),
        (
            "at least 1",
            TensorDecl {
                name: "w".into(),
                dtype: TensorDtype::F32,
                shape: vec![0],
            },
        ),
    ];
    for (what, t) in cases {
        let tmp = tempfile::tempdir().unwrap();
        match signed_with(tmp.path(), |p| p.outputs[0].tensors = vec![t]) {
            BundleError::StatementMalformed(m) => assert!(m.contains(what), "{what}: {m}"),
            other => panic!("{what}: {other}"),
        }
    }
}

#[test]
fn declared_tensors_are_read_from_trainer_toml_and_checked() {
    let with = |tensors: &str| {
        rapha_bundle::TrainerSpec::from_toml(&format!(
            "publisher = \"p\"\nname = \"t\"\nversion = \"1\"\n[[outputs]]\nname = \"m.safetensors\"\n\
             kind = \"safetensors\"\nmax_bytes = 1024\n{tensors}"
        ))
    };
    let s = with("[[outputs.tensors]]\nname = \"fc.weight\"\ndtype = \"F32\"\nshape = [64, 3]\n")
        .unwrap();
    assert_eq!(s.outputs[0].tensors[0].shape, vec![64, 3]);
    let e = with("[[outputs.tensors]]\nname = \"w\"\ndtype = \"BOOL\"\nshape = [1]\n").unwrap_err();
    assert!(e.to_string().contains("BOOL"), "{e}");
    // 64 * 4 F32 = 1024 bytes fits; one more row does not.
    with("[[outputs.tensors]]\nname = \"w\"\ndtype = \"F32\"\nshape = [64, 4]\n").unwrap();
    let e =
        with("[[outputs.tensors]]\nname = \"w\"\ndtype = \"F32\"\nshape = [65, 4]\n").unwrap_err();
    assert!(e.to_string().contains("max_bytes"), "{e}");
}
