//! DSSE v1 against the specification's published test vectors (see data/dsse/ORIGIN.md).

use std::collections::HashSet;

use rapha_bundle::dsse::{decode_b64, pae, Envelope, IN_TOTO_PAYLOAD_TYPE};
use rapha_bundle::{PublicKey, SigningKey};

fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("data/dsse/vectors.json")).unwrap()
}

fn vector_key(v: &serde_json::Value, name: &str) -> SigningKey {
    let seed: [u8; 32] = hex::decode(v["keys"][name]["seed"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    SigningKey::ed25519_from_seed(&seed)
}

#[test]
fn pae_matches_the_protocol_worked_example() {
    assert_eq!(
        pae(b"http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
    );
}

#[test]
fn pae_matches_every_published_vector_byte_for_byte() {
    let v = vectors();
    for vec in v["vectors"].as_array().unwrap() {
        let env: Envelope = serde_json::from_value(vec["envelope"].clone()).unwrap();
        let body = env.payload_bytes().unwrap();
        let expected = hex::decode(vec["pae"].as_str().unwrap()).unwrap();
        // The payload-type-swapped vector's PAE is over the type that was signed, not the
        // relabelled one; every other vector's PAE is over the envelope's own type.
        let signed_type = if vec["id"] == "payload-type-swapped" {
            IN_TOTO_PAYLOAD_TYPE.to_owned()
        } else {
            env.payload_type.clone()
        };
        assert_eq!(
            pae(signed_type.as_bytes(), &body),
            expected,
            "vector {}",
            vec["id"]
        );
    }
}

#[test]
fn vector_keys_derive_the_published_public_keys() {
    let v = vectors();
    for name in ["A", "B"] {
        let PublicKey::Ed25519(pk) = vector_key(&v, name).public_key() else {
            panic!("ed25519")
        };
        assert_eq!(
            hex::encode(pk.as_bytes()),
            v["keys"][name]["public"].as_str().unwrap()
        );
    }
}

#[test]
fn signing_reproduces_the_published_signatures_bit_for_bit() {
    let v = vectors();
    let mut checked = 0;
    for vec in v["vectors"].as_array().unwrap() {
        if vec["id"] == "payload-type-swapped" {
            continue;
        }
        let env: Envelope = serde_json::from_value(vec["envelope"].clone()).unwrap();
        let body = env.payload_bytes().unwrap();
        for (i, s) in env.signatures.iter().enumerate() {
            let signer = match (s.keyid.as_str(), i) {
                ("A", _) | ("", 0) => "A",
                _ => "B",
            };
            let ours = Envelope::sign(&env.payload_type, &body, &vector_key(&v, signer));
            assert_eq!(
                decode_b64(&ours.signatures[0].sig).unwrap(),
                decode_b64(&s.sig).unwrap(),
                "vector {}",
                vec["id"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 8);
}

/// The DSSE threshold verification, built from the library's primitives exactly as the
/// protocol describes it.
fn dsse_verdict(v: &serde_json::Value, vec: &serde_json::Value) -> bool {
    let env: Envelope = serde_json::from_value(vec["envelope"].clone()).unwrap();
    let trusted: Vec<(String, PublicKey)> = vec["trustedKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let n = n.as_str().unwrap();
            (n.to_owned(), vector_key(v, n).public_key())
        })
        .collect();
    let mut accepted = HashSet::new();
    for s in &env.signatures {
        for (name, k) in &trusted {
            if (s.keyid.is_empty() || s.keyid == *name) && env.signature_verifies(s, k) {
                accepted.insert(name.clone());
            }
        }
    }
    let threshold = vec["threshold"].as_u64().unwrap() as usize;
    let supported = vec["supportedPayloadTypes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == &env.payload_type);
    accepted.len() >= threshold && supported
}

#[test]
fn verdicts_match_every_published_vector() {
    let v = vectors();
    for vec in v["vectors"].as_array().unwrap() {
        let expect = vec["expect"] == "accept";
        assert_eq!(dsse_verdict(&v, vec), expect, "vector {}", vec["id"]);
    }
}

#[test]
fn relabelled_payload_type_breaks_the_signature() {
    let v = vectors();
    let vec = v["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "payload-type-swapped")
        .unwrap();
    let env: Envelope = serde_json::from_value(vec["envelope"].clone()).unwrap();
    assert!(!env.signature_verifies(&env.signatures[0], &vector_key(&v, "A").public_key()));
    let mut fixed = env.clone();
    fixed.payload_type = IN_TOTO_PAYLOAD_TYPE.into();
    assert!(fixed.signature_verifies(&fixed.signatures[0], &vector_key(&v, "A").public_key()));
}

#[test]
fn url_safe_and_unpadded_base64_are_accepted() {
    assert_eq!(
        decode_b64("-_-_Pj8=").unwrap(),
        vec![0xfb, 0xff, 0xbf, 0x3e, 0x3f]
    );
    assert_eq!(
        decode_b64("-_-_Pj8").unwrap(),
        vec![0xfb, 0xff, 0xbf, 0x3e, 0x3f]
    );
    assert_eq!(
        decode_b64("+/+/Pj8=").unwrap(),
        vec![0xfb, 0xff, 0xbf, 0x3e, 0x3f]
    );
    assert!(
        decode_b64("+_+/Pj8=").is_none(),
        "mixed alphabets are not base64"
    );
}

/// Big-endian 32 bytes of a decimal number (the protocol example gives its key in decimal).
fn dec_to_be32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for d in s.bytes() {
        let mut carry = u32::from(d - b'0');
        for byte in out.iter_mut().rev() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0, "overflow");
    }
    out
}

/// The ECDSA P-256 worked example of the DSSE protocol (protocol.md "Test Vectors"): key as
/// decimal X/Y, raw r||s signature. Loaded through an SPKI PEM, as a cosign public key would be.
fn protocol_example() -> (PublicKey, Envelope) {
    let mut sec1 = vec![0x04];
    sec1.extend(dec_to_be32(
        "46950820868899156662930047687818585632848591499744589407958293238635476079160",
    ));
    sec1.extend(dec_to_be32(
        "5640078356564379163099075877009565129882514886557779369047442380624545832820",
    ));
    let pem = PublicKey::ecdsa_p256_from_sec1(&sec1).unwrap().to_pem();
    let key = PublicKey::from_pem(&pem, std::path::Path::new("example.pub")).unwrap();
    let env = Envelope::parse(
        br#"{"payload": "aGVsbG8gd29ybGQ=",
 "payloadType": "http://example.com/HelloWorld",
 "signatures": [{"sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="}]}"#,
    )
    .unwrap();
    (key, env)
}

#[test]
fn ecdsa_p256_protocol_example_verifies_through_an_spki_key() {
    let (key, env) = protocol_example();
    assert_eq!(key.algorithm(), rapha_bundle::keys::Algorithm::EcdsaP256);
    assert_eq!(env.payload_bytes().unwrap(), b"hello world");
    assert!(env.signature_verifies(&env.signatures[0], &key));
}

#[test]
fn ecdsa_p256_protocol_example_fails_when_type_or_body_change() {
    let (key, env) = protocol_example();
    let mut t = env.clone();
    t.payload_type = "http://example.com/HelloWorlds".into();
    assert!(!t.signature_verifies(&t.signatures[0], &key));
    let mut b = env.clone();
    b.payload = "aGVsbG8gd29ybGQh".into(); // "hello world!"
    assert!(!b.signature_verifies(&b.signatures[0], &key));
    let ed = SigningKey::ed25519_from_seed(&[1; 32]).public_key();
    assert!(
        !env.signature_verifies(&env.signatures[0], &ed),
        "wrong algorithm's key"
    );
}
