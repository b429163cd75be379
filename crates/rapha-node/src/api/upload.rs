//! `POST /v1/bundles`: a bundle archive, streamed, unpacked strictly and verified (see
//! [`super::bundles`]).

use super::*;

/// `POST /v1/bundles`: a bundle archive (`application/x-tar`), streamed to a staging
/// directory, unpacked strictly, verified against the trust store and stored by publisher and
/// manifest digest. 201 when stored now, 200 when this exact bundle was already stored.
pub(super) async fn upload_bundle(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    const ROUTE: &str = "/v1/bundles";
    let caller = authorize(&state, &headers, ROUTE, &[Role::Publisher, Role::Admin])?;
    if !super::media_type_is(&headers, "application/x-tar") {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "a bundle upload is a bundle archive with Content-Type: application/x-tar",
        ));
    }
    let limit = state.bundle_limit;
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("a bundle upload is limited to {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    // A publisher's stored bundles and its uploads under way count against its quota: the
    // upload reserves what it may stage (its declared length, or as much of what is left as an
    // upload may carry), checked
    // before a byte is received and held until its staging directory is gone.
    let (limit, reservation) = match caller.publisher.clone() {
        None => (limit, None),
        Some(publisher) => {
            let store = Arc::clone(&state.bundles);
            let quota = state.quotas.max_bundle_bytes;
            let held = blocking(move || {
                store
                    .reserve(&publisher, declared, limit, quota)
                    .map_err(|e| {
                        HttpError::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            ReasonCode::QuotaExceeded.as_str(),
                            e.to_string(),
                        )
                    })
            })
            .await?;
            (limit.min(held.bytes()), Some(held))
        }
    };
    // Dropped with this request (its time ran out, its client went away): stops the unpacking
    // or verification on the blocking thread, which then removes the staging directory.
    let cancel = rapha_bundle::Cancel::new();
    let _stop_on_drop = cancel.on_drop();
    let _permit = Arc::clone(&state.uploads)
        .try_acquire_owned()
        .map_err(|_| {
            HttpError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-uploads",
                "the node is receiving other bundles; retry in a minute",
            )
        })?;

    let store = Arc::clone(&state.bundles);
    let staging = blocking(move || store.staging().map_err(HttpError::internal)).await?;
    let path = staging.archive();
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(HttpError::internal)?;
    let mut body = body;
    let mut received: u64 = 0;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                "bad-body",
                format!("the upload broke off: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            received += data.len() as u64;
            if received > limit {
                return Err(too_large());
            }
            file.write_all(&data).await.map_err(HttpError::internal)?;
        }
    }
    file.sync_all().await.map_err(HttpError::internal)?;
    drop(file);

    let store = Arc::clone(&state.bundles);
    let token_publisher = caller.publisher.clone();
    let limits = rapha_bundle::ArchiveLimits {
        max_entries: BUNDLE_MAX_ENTRIES,
        max_file_bytes: limit,
        max_total_bytes: limit,
    };
    let outcome = blocking(move || {
        let result = store.accept(&staging, &limits, token_publisher.as_deref(), &cancel);
        drop(staging);
        // Given back once the staging directory is gone.
        drop(reservation);
        Ok(result)
    })
    .await?;
    let role = caller.role.as_str();
    let stored = match outcome {
        Ok(stored) => stored,
        Err(e) => {
            let (status, code) = match &e {
                bundles::UploadError::Archive(_) => (StatusCode::BAD_REQUEST, "bad-archive"),
                bundles::UploadError::Refused(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "bundle-refused")
                }
                bundles::UploadError::OtherPublisher { .. } => (StatusCode::FORBIDDEN, "forbidden"),
                _ => return Err(HttpError::internal(e)),
            };
            tracing::warn!(route = ROUTE, role, code, error = %e, "bundle upload refused");
            let st = state.clone();
            let event = AuditEvent::new(
                AuditKind::Refusal,
                AuditOutcome::MinorFailure,
                format!("bundle upload refused ({code})"),
                ("api-client", role),
                Vec::new(),
            );
            blocking(move || {
                audit_later(&st, event);
                Ok(())
            })
            .await?;
            return Err(HttpError::new(status, code, e.to_string()));
        }
    };
    let digest = stored.manifest.to_oci();
    tracing::info!(
        manifest = %digest,
        publisher = %stored.publisher,
        created = stored.created,
        "bundle uploaded"
    );
    let event = AuditEvent::new(
        AuditKind::AdminAction,
        AuditOutcome::Success,
        if stored.created {
            "bundle uploaded and stored through the API"
        } else {
            "bundle uploaded through the API (already stored)"
        },
        ("api-client", role),
        vec![crate::audit::ParticipantObject {
            id_type_code: "bundle-manifest".into(),
            id: digest.clone(),
            detail: Some(format!(
                "publisher {} trainer {} {}",
                stored.publisher, stored.trainer, stored.trainer_version
            )),
        }],
    );
    let st = state.clone();
    blocking(move || {
        audit_later(&st, event);
        Ok(())
    })
    .await?;
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "bundle_manifest": digest,
            "publisher": stored.publisher,
            "trainer": stored.trainer,
            "trainer_version": stored.trainer_version,
        })),
    )
        .into_response())
}
