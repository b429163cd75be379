//! DPO passkey routes (issue 20): the approval challenge, and the DPO credentials (registration
//! options, the enrolment challenge an enrolled DPO signs, enrolment, list, revocation). The
//! ceremonies are `crate::passkeys`; every enrolment and revocation is a leaf of the receipt log
//! and a line of the audit trail.

use rapha_receipt::webauthn::{Assertion, B64u};

use super::*;
use crate::passkeys::{Authority, PasskeyError, Purpose, Registration};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The HTTP status of a ceremony's refusal.
fn refused(e: &PasskeyError) -> HttpError {
    let status = match e {
        PasskeyError::Store(_) | PasskeyError::Log(_) | PasskeyError::Version(_) => {
            return HttpError::internal(e.to_string())
        }
        PasskeyError::NotConfigured => StatusCode::NOT_FOUND,
        PasskeyError::NonceUsed | PasskeyError::SignCount { .. } => StatusCode::CONFLICT,
        PasskeyError::BadCode | PasskeyError::NotEnrolled(_) | PasskeyError::Credential(_) => {
            StatusCode::FORBIDDEN
        }
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    HttpError::new(status, e.code(), e.to_string())
}

fn not_configured() -> HttpError {
    refused(&PasskeyError::NotConfigured)
}

fn audit(n: &Node, outcome: AuditOutcome, what: &str, actor: &str) -> ApiResult<()> {
    n.audit(AuditEvent::new(
        AuditKind::DpoAction,
        outcome,
        what,
        (actor, "dpo"),
        vec![],
    ))
    .map_err(HttpError::internal)
}

/// Audits a ceremony's result (`what: accepted`, or refused with its code) and answers it.
fn audited<T>(n: &Node, result: Result<T, PasskeyError>, what: &str, actor: &str) -> ApiResult<T> {
    match result {
        Ok(v) => {
            audit(
                n,
                AuditOutcome::Success,
                &format!("{what}: accepted"),
                actor,
            )?;
            Ok(v)
        }
        Err(e) => {
            let line = format!("{what}: refused, {}", e.code());
            audit(n, AuditOutcome::MinorFailure, &line, actor)?;
            Err(refused(&e))
        }
    }
}

/// `POST /v1/jobs/{id}/approval-challenge`: a single-use challenge bound to the job's digest.
pub(super) async fn approval_challenge(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let (_, job) = authorize_job(
        &state,
        &headers,
        "/v1/jobs/{id}/approval-challenge",
        super::auth::roles::DPO,
        &id,
    )
    .await?;
    with_node(&state, move |n| {
        let digest = n
            .review_digest(job)
            .map_err(HttpError::internal)?
            .ok_or_else(|| not_found("no-review", "this job has no cohort under review"))?;
        let keys = n.passkeys().ok_or_else(not_configured)?;
        let c = keys
            .challenge(&Purpose::Approve { job_digest: digest }, now())
            .map_err(|e| refused(&e))?;
        Ok(Json(json!({ "job_digest": digest, "challenge": c })))
    })
    .await
}

/// The passkey shape of `POST /v1/jobs/{id}/approve`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PasskeyApprove {
    pub passkey: Assertion,
}

/// Verifies and records a passkey approval of `job`.
pub(super) async fn approve_passkey(
    state: &ApiState,
    job: JobId,
    body: PasskeyApprove,
) -> ApiResult<()> {
    with_node(state, move |n| {
        let actor = format!("dpo-passkey:{}", body.passkey.credential_id);
        let result = n
            .approve_with_passkey(job, body.passkey, now())
            .map_err(HttpError::internal)?;
        audited(n, result, "DPO passkey approval", &actor)
    })
    .await
}

/// `POST /v1/dpo/credentials/options`: the challenge of a new credential's registration.
pub(super) async fn registration_options(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(
        &state,
        &headers,
        "/v1/dpo/credentials/options",
        super::auth::roles::CREDENTIAL_VIEWERS,
    )?;
    with_node(&state, move |n| {
        let keys = n.passkeys().ok_or_else(not_configured)?;
        let c = keys
            .challenge(&Purpose::Register, now())
            .map_err(|e| refused(&e))?;
        Ok(Json(json!({
            "challenge": c,
            "user_verification": "required",
            "algorithms": [-7, -8],
            "attestation": "none",
        })))
    })
    .await
}

/// `POST /v1/dpo/credentials/enrol-challenge` body: the new credential an enrolled DPO admits.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnrolChallenge {
    credential_id: B64u,
    public_key: B64u,
}

/// `POST /v1/dpo/credentials/enrol-challenge`: the challenge an enrolled DPO signs to admit
/// the credential named (its id and COSE public key).
pub(super) async fn enrol_challenge(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(
        &state,
        &headers,
        "/v1/dpo/credentials/enrol-challenge",
        super::auth::roles::DPO,
    )?;
    let body: EnrolChallenge = parse_json(&headers, body)?;
    with_node(&state, move |n| {
        let keys = n.passkeys().ok_or_else(not_configured)?;
        let purpose = Purpose::Enrol {
            credential_id: body.credential_id,
            public_key: body.public_key,
        };
        let c = keys.challenge(&purpose, now()).map_err(|e| refused(&e))?;
        Ok(Json(json!({ "challenge": c })))
    })
    .await
}

/// `POST /v1/dpo/credentials` body: a registration and its authority.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Enrol {
    attestation_object: B64u,
    client_data_json: B64u,
    #[serde(with = "hex::serde")]
    nonce: [u8; 32],
    issued_at: u64,
    label: String,
    /// The one-time enrolment code (first credential only).
    #[serde(default)]
    code: Option<String>,
    /// An enrolled DPO's assertion over the enrolment challenge.
    #[serde(default)]
    dpo_assertion: Option<Assertion>,
}

/// `POST /v1/dpo/credentials`: enrols a DPO credential (appends the entry to the log).
pub(super) async fn enrol(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let caller = authorize(
        &state,
        &headers,
        "/v1/dpo/credentials",
        super::auth::roles::CREDENTIAL_VIEWERS,
    )?;
    let body: Enrol = parse_json(&headers, body)?;
    let authority = match (body.code, body.dpo_assertion) {
        (Some(code), None) => Authority::Code(code),
        (None, Some(a)) => Authority::Dpo(a),
        _ => {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "bad-authority",
                "an enrolment needs exactly one of `code` (the first DPO) and `dpo_assertion`",
            ))
        }
    };
    let reg = Registration {
        attestation_object: body.attestation_object.0,
        client_data_json: body.client_data_json.0,
        nonce: body.nonce,
        issued_at: body.issued_at,
        label: body.label,
    };
    let actor = format!("{:?}", caller.role).to_lowercase();
    let index = with_node(&state, move |n| {
        let result = match n.passkeys_and_log() {
            None => return Err(not_configured()),
            Some((keys, log)) => keys.enrol(log, &reg, authority, now()),
        };
        audited(n, result, "DPO credential enrolment", &actor)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "log_index": index }))).into_response())
}

/// `GET /v1/dpo/credentials`: the enrolled credentials (ids, algorithms, labels, log entries).
pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(
        &state,
        &headers,
        "/v1/dpo/credentials",
        super::auth::roles::CREDENTIAL_VIEWERS,
    )?;
    with_node(&state, move |n| {
        let keys = n.passkeys().ok_or_else(not_configured)?;
        let list: Vec<_> = keys
            .credentials()
            .iter()
            .map(|(id, e)| {
                json!({
                    "credential_id": id,
                    "algorithm": e.public_key.algorithm(),
                    "label": e.label,
                    "enrolled_at": e.enrolled_at,
                })
            })
            .collect();
        Ok(Json(json!({
            "rp_id": keys.rp_id(),
            "credentials": list,
            "last_entry": keys.last_entry(),
            "require_passkey": n.passkey_required(),
        })))
    })
    .await
}

/// `POST /v1/dpo/credentials/{id}/revoke-challenge`: the challenge a DPO signs to revoke it.
pub(super) async fn revoke_challenge(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(
        &state,
        &headers,
        "/v1/dpo/credentials/{id}/revoke-challenge",
        super::auth::roles::DPO,
    )?;
    let id = credential_id(&id)?;
    with_node(&state, move |n| {
        let keys = n.passkeys().ok_or_else(not_configured)?;
        let c = keys
            .challenge(&Purpose::Revoke { credential_id: id }, now())
            .map_err(|e| refused(&e))?;
        Ok(Json(json!({ "challenge": c })))
    })
    .await
}

fn credential_id(id: &str) -> ApiResult<B64u> {
    B64u::decode("credential id", id)
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, "bad-credential-id", e.to_string()))
}

/// `POST /v1/dpo/credentials/{id}/revoke` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Revoke {
    assertion: Assertion,
}

/// `POST /v1/dpo/credentials/{id}/revoke`: revokes a credential by a DPO's assertion.
pub(super) async fn revoke(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    authorize(
        &state,
        &headers,
        "/v1/dpo/credentials/{id}/revoke",
        super::auth::roles::DPO,
    )?;
    let id = credential_id(&id)?;
    let body: Revoke = parse_json(&headers, body)?;
    let actor = format!("dpo-passkey:{}", body.assertion.credential_id);
    let index = with_node(&state, move |n| {
        let result = match n.passkeys_and_log() {
            None => return Err(not_configured()),
            Some((keys, log)) => keys.revoke(log, &id, body.assertion, now()),
        };
        audited(n, result, "DPO credential revocation", &actor)
    })
    .await?;
    Ok((StatusCode::OK, Json(json!({ "log_index": index }))).into_response())
}
