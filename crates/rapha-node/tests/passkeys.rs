//! Issue 20, item 3: DPO passkeys through the real node's HTTP API (Orthanc + DICOMweb, swtpm,
//! anvil, runc), with a software authenticator producing what a browser would. Attacker's side
//! first: an admin token without the one-time code or a DPO's assertion enrols nobody, a
//! key-file approval is refused when passkeys are required, a captured assertion approves
//! nothing twice; then a job approved by passkey runs, and its receipt verifies offline with
//! the assertion in it.

use rapha_core::Digest;
use rapha_node::api::ApiState;
use rapha_node::passkeys::Passkeys;
use rapha_receipt::webauthn::B64u;
use rapha_testkit::passkey::{Alg, Format, SoftAuthenticator};
use reqwest::StatusCode;
use serde_json::json;

use crate::api::{error_code, serve_state, tokens, Served, ADMIN_TOKEN, DPO_TOKEN};
use crate::pipeline_e2e::{bundle, world};
use crate::publisher_channels::{get_json, submit, wait_receipt, wait_status};

const ORIGIN: &str = "http://localhost:8443";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn post(
    s: &Served,
    path: &str,
    token: &str,
    body: &serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let (st, text) = s.call(
        "post",
        path,
        Some(token),
        Some(&serde_json::to_vec(body).unwrap()),
    );
    (
        st,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn code_of(v: &serde_json::Value) -> String {
    error_code(&v.to_string())
}

/// The challenge in a response: (challenge bytes, nonce hex, issued_at).
fn challenge(v: &serde_json::Value) -> ([u8; 32], [u8; 32], u64) {
    let c = &v["challenge"];
    let bytes = B64u::decode("challenge", c["challenge"].as_str().unwrap())
        .unwrap()
        .0;
    let nonce = hex::decode(c["nonce"].as_str().unwrap()).unwrap();
    (
        bytes.try_into().unwrap(),
        nonce.try_into().unwrap(),
        c["issued_at"].as_u64().unwrap(),
    )
}

/// A registration through the API's options, with `authority` members added.
fn registration(
    s: &Served,
    token: &str,
    a: &mut SoftAuthenticator,
    authority: serde_json::Value,
) -> serde_json::Value {
    let (st, opts) = post(s, "/v1/dpo/credentials/options", token, &json!({}));
    assert_eq!(st, StatusCode::OK, "{opts}");
    let (c, nonce, at) = challenge(&opts);
    let (obj, client) = a.register(&c, Format::PackedSelf);
    let mut body = json!({
        "attestation_object": B64u(obj),
        "client_data_json": B64u(client),
        "nonce": hex::encode(nonce),
        "issued_at": at,
        "label": "dpo",
    });
    body.as_object_mut()
        .unwrap()
        .extend(authority.as_object().unwrap().clone());
    body
}

#[test]
fn passkey_enrolment_and_approval_through_the_node_end_in_a_receipt_that_verifies_offline() {
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let keys = Passkeys::open(
        &tmp.join("passkeys.sqlite"),
        "localhost",
        vec![ORIGIN.into()],
        w.node.receipt_log(),
    )
    .unwrap();
    let code = keys.new_enrolment_code(now()).unwrap();
    w.node.set_passkeys(keys, true);
    let (dir, manifest) = bundle(&tmp, &w.trainer, "passkey", "honest", &w.publisher_key);
    let request = w.request(manifest, w.scoped_query());
    let job = request.job_id.to_string();
    let node = w.node;
    let s = serve_state(ApiState::new(node, tmp.join("jobs.sqlite"), tokens()));

    let mut first = SoftAuthenticator::new(Alg::Es256, 1, "localhost", ORIGIN);
    let mut second = SoftAuthenticator::new(Alg::EdDsa, 2, "localhost", ORIGIN);
    let mut admin = SoftAuthenticator::new(Alg::Es256, 3, "localhost", ORIGIN);

    // The admin, without the code: a wrong code is refused, nothing enrolled.
    let body = registration(
        &s,
        ADMIN_TOKEN,
        &mut admin,
        json!({ "code": "NOT-THE-CODE" }),
    );
    let (st, v) = post(&s, "/v1/dpo/credentials", ADMIN_TOKEN, &body);
    assert_eq!(
        (st, code_of(&v).as_str()),
        (StatusCode::FORBIDDEN, "bad-enrolment-code"),
        "{v}"
    );
    // The first DPO with the code printed on the node's console.
    let body = registration(&s, DPO_TOKEN, &mut first, json!({ "code": code }));
    let (st, v) = post(&s, "/v1/dpo/credentials", DPO_TOKEN, &body);
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // The same code again, by the admin: used, and a DPO is enrolled now.
    let body = registration(&s, ADMIN_TOKEN, &mut admin, json!({ "code": code }));
    let (st, v) = post(&s, "/v1/dpo/credentials", ADMIN_TOKEN, &body);
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    // The admin's own passkey vouching for itself: not an enrolled DPO.
    let admin_c =
        json!({ "credential_id": admin.id(), "public_key": B64u(admin.public_key_cose()) });
    let (st, v) = post(
        &s,
        "/v1/dpo/credentials/enrol-challenge",
        DPO_TOKEN,
        &admin_c,
    );
    assert_eq!(st, StatusCode::OK, "{v}");
    let (c, nonce, at) = challenge(&v);
    let own = admin.clone().assertion(&c, nonce, at);
    let body = registration(&s, ADMIN_TOKEN, &mut admin, json!({ "dpo_assertion": own }));
    let (st, v) = post(&s, "/v1/dpo/credentials", ADMIN_TOKEN, &body);
    assert_eq!(
        (st, code_of(&v).as_str()),
        (StatusCode::FORBIDDEN, "credential-not-enrolled"),
        "{v}"
    );
    // The second DPO, admitted by the first's assertion over its id and key.
    let second_c =
        json!({ "credential_id": second.id(), "public_key": B64u(second.public_key_cose()) });
    let (_, v) = post(
        &s,
        "/v1/dpo/credentials/enrol-challenge",
        DPO_TOKEN,
        &second_c,
    );
    let (c, nonce, at) = challenge(&v);
    let by_first = first.assertion(&c, nonce, at);
    let body = registration(
        &s,
        DPO_TOKEN,
        &mut second,
        json!({ "dpo_assertion": by_first }),
    );
    let (st, v) = post(&s, "/v1/dpo/credentials", DPO_TOKEN, &body);
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let list = get_json(&s, "/v1/dpo/credentials", ADMIN_TOKEN);
    assert_eq!(list["credentials"].as_array().unwrap().len(), 2, "{list}");

    // The job to its review.
    let (st, text) = submit(&s, &dir, &request);
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    crate::api::wait_pending(&s, &job, 120);
    // A key-file approval is refused: passkeys are required.
    let digest: Digest = get_json(&s, "/v1/approvals/pending", DPO_TOKEN)["pending"][0]
        ["job_digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let key_file = w.dpo.approve(digest, now(), now() + 3600).unwrap();
    let (st, v) = post(
        &s,
        &format!("/v1/jobs/{job}/approve"),
        DPO_TOKEN,
        &serde_json::to_value(&key_file).unwrap(),
    );
    assert_eq!(
        (st, code_of(&v).as_str()),
        (StatusCode::FORBIDDEN, "passkey-required"),
        "{v}"
    );
    // The second DPO approves by passkey.
    let (st, v) = post(
        &s,
        &format!("/v1/jobs/{job}/approval-challenge"),
        DPO_TOKEN,
        &json!({}),
    );
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["job_digest"], json!(digest));
    let (c, nonce, at) = challenge(&v);
    let approval = second.assertion(&c, nonce, at);
    let (st, v) = post(
        &s,
        &format!("/v1/jobs/{job}/approve"),
        DPO_TOKEN,
        &json!({ "passkey": approval }),
    );
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    // The captured assertion, replayed: its nonce is used.
    let (st, v) = post(
        &s,
        &format!("/v1/jobs/{job}/approve"),
        DPO_TOKEN,
        &json!({ "passkey": approval }),
    );
    assert_eq!(
        (st, code_of(&v).as_str()),
        (StatusCode::CONFLICT, "challenge-replayed"),
        "{v}"
    );

    wait_status(&s, &job, 60, |v| v["state"] == "awaiting-deposit");
    w.chain.deposit(&request.job_id);
    let receipt = wait_receipt(&s, &job);

    let v = rapha_receipt::verify(receipt.as_bytes(), &rapha_receipt::VerifyOptions::default())
        .unwrap();
    assert_eq!(v.body.outcome, rapha_core::Outcome::Completed, "{receipt}");
    let p = v
        .body
        .dpo_approval
        .as_ref()
        .unwrap()
        .passkey
        .as_ref()
        .unwrap();
    assert_eq!(p.assertion.credential_id, second.id());
    assert_eq!(p.job_digest, digest);
    let file = rapha_receipt::ReceiptFile::from_json(receipt.as_bytes()).unwrap();
    assert_eq!(
        file.credential_log.len(),
        2,
        "both enrolments are in the chain"
    );
    // The first DPO revokes the second (a leaf of the log); the revoked one can revoke nothing.
    let path = format!("/v1/dpo/credentials/{}/revoke", second.id());
    let (st, v) = post(
        &s,
        &format!("/v1/dpo/credentials/{}/revoke-challenge", second.id()),
        DPO_TOKEN,
        &json!({}),
    );
    assert_eq!(st, StatusCode::OK, "{v}");
    let (c, nonce, at) = challenge(&v);
    let by_first = first.assertion(&c, nonce, at);
    let (st, v) = post(&s, &path, DPO_TOKEN, &json!({ "assertion": by_first }));
    assert_eq!(st, StatusCode::OK, "{v}");
    let list = get_json(&s, "/v1/dpo/credentials", DPO_TOKEN);
    assert_eq!(list["credentials"].as_array().unwrap().len(), 1, "{list}");
    let (_, v) = post(
        &s,
        &format!("/v1/dpo/credentials/{}/revoke-challenge", first.id()),
        DPO_TOKEN,
        &json!({}),
    );
    let (c, nonce, at) = challenge(&v);
    let by_revoked = second.assertion(&c, nonce, at);
    let (st, v) = post(
        &s,
        &format!("/v1/dpo/credentials/{}/revoke", first.id()),
        DPO_TOKEN,
        &json!({ "assertion": by_revoked }),
    );
    assert_eq!(
        (st, code_of(&v).as_str()),
        (StatusCode::FORBIDDEN, "credential-not-enrolled"),
        "{v}"
    );

    // The audit trail has the ceremonies.
    let audit = std::fs::read_to_string(tmp.join("audit.jsonl")).unwrap();
    for want in [
        "DPO credential revocation: accepted",
        "DPO credential enrolment: accepted",
        "bad-enrolment-code",
        "DPO passkey approval: accepted",
        "challenge-replayed",
    ] {
        assert!(audit.contains(want), "audit lacks {want:?}");
    }
}
