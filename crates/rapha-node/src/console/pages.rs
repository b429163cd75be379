//! The console's pages: the approval queue, a job with everything the DPO's decision needs,
//! the jobs, a receipt with its verification, the receipt log, the audit trail, node health
//! and the trust store. Each reads through the API's shared state (its readers, reviews, job
//! views and receipt log) and checks the role list of the API route it mirrors.

use std::fmt::Write as _;

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use rapha_core::JobId;
use rapha_policy::ReviewRequest;

use super::html::Html;
use super::{allow, chart, csrf_field, document, require_session, PageError, PageResult};
use super::{ConsoleState, Session};
use crate::api::{roles, HttpError, Role};
use crate::approvals::format_time as time;
use crate::audit::AuditEvent;
use crate::store::JobState;

/// Jobs the job list shows at most (newest first).
pub const JOBS_LISTED: u32 = 500;

/// Audit events a page shows at most (the newest matching ones; the JSON export has all).
pub const AUDIT_SHOWN: usize = 500;

macro_rules! session_or_login {
    ($state:expr, $headers:expr) => {
        match require_session(&$state, &$headers) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        }
    };
}

fn parse_job(id: &str) -> PageResult<JobId> {
    id.parse()
        .map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "not a job id"))
}

fn job_link(h: &mut Html, job: JobId) {
    h.raw("<a href=\"/jobs/")
        .text(job)
        .raw("\"><code>")
        .text(job)
        .raw("</code></a>");
}

/// `GET /`: the jobs waiting for a DPO's decision (the roles of `/v1/approvals/pending`).
pub(super) async fn queue(State(state): State<ConsoleState>, headers: HeaderMap) -> PageResult {
    let session = session_or_login!(state, headers);
    allow(&session, "console /", roles::REVIEWERS)?;
    let reviews = crate::api::pending_reviews(&state.api).await?;
    Ok(document(
        "Approval queue",
        Some(&session),
        queue_body(&reviews),
    ))
}

/// The queue's table (also what the benchmark renders).
pub fn queue_body(reviews: &[(JobId, ReviewRequest)]) -> Html {
    let mut h = Html::new();
    h.raw("<h1>Approval queue</h1>\n<p>")
        .text(reviews.len())
        .raw(" job(s) waiting for a DPO's decision, oldest first.</p>\n");
    if reviews.is_empty() {
        return h;
    }
    h.raw("<table class=\"list\"><thead><tr><th scope=\"col\">Job</th>")
        .raw("<th scope=\"col\">Publisher</th><th scope=\"col\">Trainer</th>")
        .raw("<th scope=\"col\">Patients</th><th scope=\"col\">Instances</th>")
        .raw("<th scope=\"col\">GPUs</th><th scope=\"col\">Fee (USDC)</th>")
        .raw("<th scope=\"col\">Leakage bound (bits)</th></tr></thead><tbody>\n");
    for (job, r) in reviews {
        h.raw("<tr><td>");
        job_link(&mut h, *job);
        h.raw("</td><td>")
            .text(&r.job.publisher)
            .raw("</td><td>")
            .text(&r.job.trainer)
            .raw("</td><td>")
            .text(r.cohort.patients)
            .raw("</td><td>")
            .text(r.cohort.instances)
            .raw("</td><td>")
            .text(r.resources.as_ref().map_or(0, |x| x.requested.gpus))
            .raw("</td><td>")
            .text(r.job.fee)
            .raw("</td><td>");
        match r.release.as_ref().and_then(|x| x.bound.as_ref()) {
            Some(b) => h.text(b.total),
            None => h.raw("—"),
        };
        h.raw("</td></tr>\n");
    }
    h.raw("</tbody></table>\n");
    h
}

/// `GET /jobs`: the newest jobs with their state and, while a trainer runs, its progress.
pub(super) async fn jobs(State(state): State<ConsoleState>, headers: HeaderMap) -> PageResult {
    let session = session_or_login!(state, headers);
    allow(&session, "console /jobs", roles::REVIEWERS)?;
    let readers = std::sync::Arc::clone(&state.api.readers);
    let rows = crate::api::blocking(move || {
        readers.with(|r| r.recent(JOBS_LISTED).map_err(HttpError::internal))
    })
    .await?;
    let mut h = Html::new();
    h.raw("<h1>Jobs</h1>\n<p>The ")
        .text(rows.len())
        .raw(" newest jobs. Progress is shown while a trainer runs.</p>\n")
        .raw("<table class=\"list\"><thead><tr><th scope=\"col\">Job</th>")
        .raw("<th scope=\"col\">Publisher</th><th scope=\"col\">Trainer</th>")
        .raw("<th scope=\"col\">State</th><th scope=\"col\">Outcome</th>")
        .raw("<th scope=\"col\">Records fed</th><th scope=\"col\">Elapsed / wall limit (s)</th>")
        .raw("<th scope=\"col\">Updated</th></tr></thead><tbody>\n");
    for row in &rows {
        let live = (row.state == JobState::Running)
            .then(|| state.api.live.get(row.id))
            .flatten();
        h.raw("<tr><td>");
        job_link(&mut h, row.id);
        h.raw("</td><td>")
            .text(&row.request.publisher)
            .raw("</td><td>")
            .text(&row.request.trainer)
            .raw("</td><td>")
            .text(row.state.as_str())
            .raw("</td><td>")
            .text(row.outcome.map(|o| o.to_string()).unwrap_or_default())
            .raw("</td><td>");
        match &live {
            Some(run) => h
                .text(run.progress.distinct_fed)
                .raw("</td><td>")
                .text(run.elapsed_secs())
                .raw(" / ")
                .text(run.progress.wall_limit.as_secs()),
            None => h.raw("</td><td>"),
        };
        h.raw("</td><td>")
            .text(time(row.updated_at))
            .raw("</td></tr>\n");
    }
    h.raw("</tbody></table>\n");
    Ok(document("Jobs", Some(&session), h))
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `GET /jobs/{id}`: the job's state and, while it waits or after, everything the DPO's
/// decision rests on; the DPO's rejection form while it waits.
pub(super) async fn job(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> PageResult {
    let session = session_or_login!(state, headers);
    allow(&session, "console /jobs/{id}", roles::REVIEWERS)?;
    let job = parse_job(&id)?;
    let api = state.api.clone();
    let view = crate::api::blocking(move || crate::api::hospital_view(&api, job)).await?;
    let review = crate::api::job_review(&state.api, job).await?;
    let readers = std::sync::Arc::clone(&state.api.readers);
    let admission = crate::api::blocking(move || {
        readers.with(|r| {
            r.artifact(job, crate::pipeline::artifact::ADMISSION)
                .map_err(HttpError::internal)
        })
    })
    .await?
    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let trust = rapha_bundle::TrustStore::open(state.api.bundles.trust_dir()).ok();
    let mut h = Html::new();
    h.raw("<h1>Job <code>").text(job).raw("</code></h1>\n");
    h.raw("<section><h2>State</h2><table class=\"facts\"><tbody>\n")
        .row("state", json_text(&view["state"]))
        .row(
            "step",
            format!(
                "{} of {}",
                json_text(&view["progress"]["step"]),
                json_text(&view["progress"]["of"])
            ),
        )
        .row("cohort instances", json_text(&view["records"]["cohort"]))
        .row("records fed", json_text(&view["records"]["fed"]));
    if view["run"].is_object() {
        let run = &view["run"];
        h.row(
            "distinct records fed",
            json_text(&run["distinct_records_fed"]),
        )
        .row("elapsed (s)", json_text(&run["elapsed_secs"]))
        .row("wall limit (s)", json_text(&run["wall_limit_secs"]));
    }
    h.row("outcome", json_text(&view["outcome"]))
        .row("reason", json_text(&view["reason"]))
        .row("the hospital's detail", json_text(&view["detail"]))
        .row("created", time(view["created_at"].as_u64().unwrap_or(0)))
        .row("updated", time(view["updated_at"].as_u64().unwrap_or(0)))
        .raw("</tbody></table>\n");
    if matches!(session.role, Role::Admin) && view["outcome"].is_string() {
        h.raw("<p><a href=\"/jobs/")
            .text(job)
            .raw("/receipt\">Receipt and its verification</a></p>\n");
    }
    h.raw("</section>\n");
    if let Some(a) = &admission {
        h.raw("<section><h2>Admission gate</h2><table class=\"facts\"><tbody>\n")
            .row(
                "decision",
                if a["allow"] == true {
                    "allowed"
                } else {
                    "refused"
                },
            )
            .row("policy decision digest", json_text(&a["digest"]));
        let reasons = a["reasons"].as_array().cloned().unwrap_or_default();
        h.row(
            "rules that refused",
            if reasons.is_empty() {
                "none (every rule passed)".to_owned()
            } else {
                reasons.iter().map(json_text).collect::<Vec<_>>().join(", ")
            },
        );
        h.raw("</tbody></table></section>\n");
    }
    match &review {
        Some(r) => review_sections(&mut h, r, trust.as_ref()),
        None => {
            h.raw("<p class=\"muted\">No cohort under review for this job (its cohort is not built yet, or the job ended before review).</p>\n");
        }
    }
    let awaiting = view["state"] == JobState::AwaitingApproval.as_str();
    if awaiting {
        decision_section(&mut h, job, &session);
    }
    Ok(document("Job", Some(&session), h))
}

/// Everything the DPO's decision rests on, from the job's review.
fn review_sections(h: &mut Html, r: &ReviewRequest, trust: Option<&rapha_bundle::TrustStore>) {
    let j = &r.job;
    h.raw("<section><h2>Publisher and trainer</h2><table class=\"facts\"><tbody>\n")
        .row("publisher", &j.publisher);
    match trust.and_then(|t| t.publishers().iter().find(|p| p.name == j.publisher)) {
        Some(p) => {
            h.row("signer key id", p.keyid())
                .row("trainers it may sign", p.trainers.join(", "))
                .row(
                    "trust expires",
                    p.expires
                        .and_then(|e| {
                            e.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                        .unwrap_or_else(|| "never".into()),
                )
                .row("revoked", if p.revoked { "YES" } else { "no" });
        }
        None => {
            h.row(
                "trust-store entry",
                "none (the publisher is no longer trusted)",
            );
        }
    }
    h.row("trainer", &j.trainer)
        .row("bundle manifest (image) digest", j.bundle_manifest)
        .row("job digest version", format!("{:?}", r.digest_version));
    if let Ok(d) = r.job_digest() {
        h.row("job digest (what an approval signs)", d);
    }
    h.raw("</tbody></table></section>\n");

    h.raw("<section><h2>Request</h2><table class=\"facts\"><tbody>\n");
    let q = &j.query;
    h.row("named studies", q.study_uids.len())
        .row("accession numbers", q.accession_numbers.len())
        .row("study dates", q.study_date.as_deref().unwrap_or("(none)"))
        .row("modalities", q.modalities.join(", "))
        .row(
            "limit",
            q.limit.map_or_else(|| "(none)".into(), |l| l.to_string()),
        )
        .row(
            "requested metadata fields",
            if j.requested_fields.is_empty() {
                "(none)".to_owned()
            } else {
                j.requested_fields.join(", ")
            },
        )
        .row("validation split (%)", j.validation_percent)
        .row(
            "pseudonyms",
            j.linkage.as_ref().map_or_else(
                || "this job's own (join no other job)".to_owned(),
                |g| format!("shared with linkage group '{}'", g.as_str()),
            ),
        );
    for l in &r.linkage_jobs {
        h.row(
            "linked job",
            format!(
                "{} ({}), {}",
                l.job_id,
                l.state,
                if l.same_query {
                    "the same query".to_owned()
                } else {
                    format!("ANOTHER QUERY (digest {})", l.query_digest)
                }
            ),
        );
    }
    let split = rapha_core::FeeSplit::of(j.fee);
    h.row("fee (USDC)", j.fee)
        .row("hospital's payout (70%)", split.hospital)
        .row("protocol (30%)", split.protocol)
        .row("chain", j.chain_id)
        .raw("</tbody></table></section>\n");

    if let Some(res) = &r.resources {
        let (q, b) = (&res.requested, &res.bounds);
        h.raw("<section><h2>Resources</h2><table class=\"facts\"><thead><tr><th scope=\"col\"></th><th scope=\"col\">requested</th><th scope=\"col\">node's range</th></tr></thead><tbody>\n");
        let mut row = |label: &'static str, a: String, b: String| {
            h.raw("<tr><th scope=\"row\">")
                .raw(label)
                .raw("</th><td>")
                .text(a)
                .raw("</td><td>")
                .text(b)
                .raw("</td></tr>\n");
        };
        row(
            "memory (MiB)",
            q.memory_mb.to_string(),
            b.memory_mb.to_string(),
        );
        row("CPUs", q.cpus.to_string(), b.cpus.to_string());
        row("processes", q.pids.to_string(), b.pids.to_string());
        row(
            "wall time (s)",
            q.wall_seconds.to_string(),
            b.wall_seconds.to_string(),
        );
        row("/tmp (MiB)", q.tmp_mb.to_string(), b.tmp_mb.to_string());
        row("GPUs", q.gpus.to_string(), b.gpu_bound().to_string());
        h.raw("</tbody></table>\n");
        if q.gpus > 0 {
            h.raw("<p class=\"warning\">This job asks for a GPU: GPU memory is outside any enclave, so the pixels the trainer copies there leave the runtime's locked memory.</p>\n");
        }
        h.raw("</section>\n");
    }

    if let Some(rel) = &r.release {
        h.raw("<section><h2>Declared outputs and the leakage bound</h2><table class=\"facts\"><tbody>\n")
            .row("declared parameters", rel.parameters)
            .row("bits at their declared dtypes", rel.bits)
            .row(
                "this hospital's cap (max_release_bits)",
                rel.max_bits
                    .map_or_else(|| "(none)".into(), |m| m.to_string()),
            );
        if let Some(released) = rel.released_bits {
            h.row("release precision", rel.precision.as_str())
                .row("node noise k", rel.noise_k.get())
                .row("bits the released tensors can carry", released);
        }
        if let Some(b) = &rel.bound {
            h.row("leakage bound per job (bits)", b.total)
                .row("… tensors", b.tensors)
                .row("… files written", b.files)
                .row("… metrics.json", b.metrics_file)
                .row("… node metrics", b.node_metrics)
                .row("… outcome", b.outcome)
                .row("… run length", b.run_length);
            if let Some(n) = b.per_patient(r.cohort.patients) {
                h.row("per patient (bits)", n);
            }
        }
        if let Some(p) = &rel.publisher {
            h.row(
                "publisher's total with this job (bits)",
                format!("{} of {} (max_publisher_bits)", p.bits, p.cap),
            );
        }
        h.raw("</tbody></table></section>\n");
    }

    if let Some(i) = &r.image {
        h.raw("<section><h2>Trainer image</h2><table class=\"facts\"><tbody>\n")
            .row("layers", i.layers)
            .row("bytes", i.bytes)
            .row("entries", i.entries)
            .row(
                "files / directories",
                format!("{} / {}", i.files, i.directories),
            )
            .row(
                "symlinks (absolute)",
                format!("{} ({})", i.symlinks, i.absolute_symlinks),
            )
            .row("hard links", i.hard_links)
            .row("whiteouts", i.whiteouts)
            .row("setuid/setgid bits cleared", i.setuid_setgid_cleared)
            .raw("</tbody></table></section>\n");
    }

    let c = &r.cohort;
    h.raw("<section><h2>Cohort (counts only)</h2><table class=\"facts\"><tbody>\n")
        .row("commitment", c.commitment)
        .row(
            "patients",
            format!(
                "{} ({} train, {} validation)",
                c.patients, c.train_patients, c.validation_patients
            ),
        )
        .row("studies", c.studies)
        .row("instances", c.instances)
        .raw("</tbody></table>\n<div class=\"charts\">\n");
    let modalities: Vec<(String, u64)> =
        c.modalities.iter().map(|(m, n)| (m.clone(), *n)).collect();
    let exclusions: Vec<(String, u64)> =
        c.exclusions.iter().map(|(m, n)| (m.clone(), *n)).collect();
    h.push(chart::bars("Instances by modality", &modalities))
        .push(chart::bars("Instances excluded, by reason", &exclusions));
    match &c.demographics {
        Some(d) => {
            h.push(chart::patient_bars("Patients by sex", &d.sex.rows()))
                .push(chart::patient_bars(
                    "Patients by age at their first study (years)",
                    &d.age.rows(),
                ))
                .raw("</div>\n<p class=\"muted\">Each patient counted once; counts below ")
                .text(rapha_core::demographics::SMALL_CELL)
                .raw(" are shown as &lt;")
                .text(rapha_core::demographics::SMALL_CELL)
                .raw(".</p>\n");
        }
        None => {
            h.raw("</div>\n<p class=\"muted\">Sex and age were not counted for this job ")
                .raw("(its cohort was summarised before the node counted them).</p>\n");
        }
    }
    h.raw("</section>\n");

    h.raw("<section><h2>The review as <code>rapha-node approve</code> prints it</h2><pre>")
        .text(crate::approvals::summary(r))
        .raw("</pre></section>\n");
}

/// The DPO's decision: rejection with a reason now; approval is the passkey step.
fn decision_section(h: &mut Html, job: JobId, session: &Session) {
    h.raw("<section id=\"decision\"><h2>Decision</h2>\n");
    if session.role != Role::Dpo {
        h.raw("<p>Only a DPO decides on a job.</p></section>\n");
        return;
    }
    // Passkey approval (issue 20, item 3): the WebAuthn assertion over the job digest goes
    // here, in <div id="passkey-approval">, once the passkey core is merged.
    h.raw("<div id=\"passkey-approval\"><h3>Approve</h3><p>Approval uses a passkey, or ")
        .raw("<code>rapha-node approve &lt;job digest&gt; --key &lt;DPO key file&gt;</code> ")
        .raw("on the node.</p></div>\n")
        .raw("<form method=\"post\" action=\"/jobs/")
        .text(job)
        .raw("/reject\" class=\"reject\"><h3>Reject</h3>")
        .push(csrf_field(session))
        .raw("<label for=\"reason\">Reason, for the AI company (no patient data; up to ")
        .text(crate::api::MAX_REASON)
        .raw(" bytes)</label>\n<textarea id=\"reason\" name=\"reason\" required maxlength=\"")
        .text(crate::api::MAX_REASON)
        .raw("\" rows=\"3\"></textarea>\n<button type=\"submit\">Reject this job</button></form>\n")
        .raw("</section>\n");
}

/// `GET /jobs/{id}/receipt`: the receipt, re-proved against the log's current signed head and
/// verified against the node's own address (the roles of `/v1/jobs/{id}/receipt`).
pub(super) async fn receipt(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> PageResult {
    let session = session_or_login!(state, headers);
    allow(
        &session,
        "console /jobs/{id}/receipt",
        roles::RECEIPT_READERS,
    )?;
    let job = parse_job(&id)?;
    let readers = std::sync::Arc::clone(&state.api.readers);
    let file = crate::api::blocking(move || {
        readers.with(|r| {
            r.artifact(job, crate::pipeline::artifact::RECEIPT)
                .map_err(HttpError::internal)
        })
    })
    .await?
    .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "this job has no receipt (yet)"))?;
    let mut file = rapha_receipt::ReceiptFile::from_json(&file)
        .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let node = state.api.node_address;
    let (file, checked) = crate::api::with_log(&state.api, move |log| {
        let head = log.latest_head().map_err(HttpError::internal)?;
        let reproved = match head {
            Some(head) => file.prove_at(log, head, &[]).map_err(|e| e.to_string()),
            None => Err("the log has no signed head".into()),
        };
        let opts = rapha_receipt::VerifyOptions {
            node_address: Some(node),
            sth: None,
            consistency_from: None,
        };
        let verified = reproved
            .and_then(|()| rapha_receipt::verify_file(&file, &opts).map_err(|e| e.to_string()));
        Ok((file, verified.map(|v| v.leaf_index)))
    })
    .await?;
    let mut h = Html::new();
    h.raw("<h1>Receipt of job <code>")
        .text(job)
        .raw("</code></h1>\n");
    match &checked {
        Ok(_) => h
            .raw("<p class=\"ok\">Verified: signed by this node's key (")
            .text(node)
            .raw("), included in the log at its current signed head.</p>\n"),
        Err(e) => h.el("<p class=\"error\">Not verified: ", e, "</p>\n"),
    };
    h.raw("<table class=\"facts\"><tbody>\n")
        .row("receipt digest", file.receipt_digest)
        .row("leaf index", file.inclusion.leaf_index)
        .row("tree size of the head", file.inclusion.tree_size)
        .row("root hash", file.inclusion.root_hash)
        .row("head signed at (unix ms)", file.sth.timestamp)
        .raw("</tbody></table>\n<h2>Inclusion proof</h2><ol class=\"proof\">\n");
    for p in &file.inclusion.audit_path {
        h.el("<li><code>", p, "</code></li>\n");
    }
    h.raw("</ol>\n<h2>Signed body</h2><pre>")
        .text(serde_json::to_string_pretty(&file.body).unwrap_or_default())
        .raw("</pre>\n");
    Ok(document("Receipt", Some(&session), h))
}

/// `GET /log`: the receipt log's signed head, its signer checked.
pub(super) async fn log(State(state): State<ConsoleState>, headers: HeaderMap) -> PageResult {
    let session = session_or_login!(state, headers);
    allow(&session, "console /log", roles::LOG_READERS)?;
    let head = crate::api::with_log(&state.api, |log| {
        log.latest_head().map_err(HttpError::internal)
    })
    .await?;
    let mut h = Html::new();
    h.raw("<h1>Receipt log</h1>\n");
    match head {
        None => {
            h.raw("<p>The log is empty: no job has ended yet.</p>\n");
        }
        Some(head) => {
            let signer = head.signer().map_err(|e| e.to_string());
            let by_node = signer.as_ref().is_ok_and(|a| *a == state.api.node_address);
            h.raw("<table class=\"facts\"><tbody>\n")
                .row("tree size", head.tree_size)
                .row("root hash", head.root_hash)
                .row("signed at (unix ms)", head.timestamp)
                .row(
                    "signer",
                    match &signer {
                        Ok(a) => a.to_string(),
                        Err(e) => e.clone(),
                    },
                )
                .row(
                    "signed by this node's key",
                    if by_node { "yes" } else { "NO" },
                )
                .raw("</tbody></table>\n")
                .raw("<p>Consistency between heads: <code>GET /v1/log/consistency?old=&amp;new=</code> on the API, or <code>rapha verify</code>.</p>\n");
        }
    }
    Ok(document("Receipt log", Some(&session), h))
}

/// Filters of the audit page, from its query string: the actor's user id (a role or service
/// name), the action (an EventID code, its display name, or the start of the event's
/// description), the outcome code, and a first and last day.
#[derive(Debug, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<u8>,
    /// `YYYY-MM-DD`, inclusive.
    pub from: Option<String>,
    pub to: Option<String>,
    pub json: bool,
}

impl AuditFilter {
    fn parse(query: Option<&str>) -> PageResult<Self> {
        let mut f = Self::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = rapha_core::percent::decode(v).map_err(|_| {
                PageError::new(StatusCode::BAD_REQUEST, "a filter is not well encoded")
            })?;
            let v = v.trim().to_owned();
            if v.is_empty() {
                continue;
            }
            let date = |v: String| -> PageResult<String> {
                let ok = v.len() == 10
                    && v.bytes().enumerate().all(|(i, b)| {
                        if i == 4 || i == 7 {
                            b == b'-'
                        } else {
                            b.is_ascii_digit()
                        }
                    });
                if ok {
                    Ok(v)
                } else {
                    Err(PageError::new(
                        StatusCode::BAD_REQUEST,
                        "a date filter is YYYY-MM-DD",
                    ))
                }
            };
            match k {
                "actor" => f.actor = Some(v),
                "action" => f.action = Some(v),
                "outcome" => {
                    f.outcome = Some(v.parse().map_err(|_| {
                        PageError::new(StatusCode::BAD_REQUEST, "the outcome filter is 0, 4 or 8")
                    })?);
                }
                "from" => f.from = Some(date(v)?),
                "to" => f.to = Some(date(v)?),
                "format" => f.json = v == "json",
                _ => {
                    return Err(PageError::new(
                        StatusCode::BAD_REQUEST,
                        "unknown filter (actor, action, outcome, from, to, format)",
                    ))
                }
            }
        }
        Ok(f)
    }

    /// Whether `e` passes every filter set.
    pub fn matches(&self, e: &AuditEvent) -> bool {
        let day = e.date_time.get(..10).unwrap_or("");
        self.actor
            .as_ref()
            .is_none_or(|a| e.participants.iter().any(|p| &p.user_id == a))
            && self.action.as_ref().is_none_or(|a| {
                e.event_display.eq_ignore_ascii_case(a)
                    || e.event_id == *a
                    || e.outcome_description.starts_with(a.as_str())
            })
            && self.outcome.is_none_or(|o| e.outcome == o)
            && self.from.as_ref().is_none_or(|f| day >= f.as_str())
            && self.to.as_ref().is_none_or(|t| day <= t.as_str())
    }
}

/// `GET /audit?actor=&action=&outcome=&from=&to=[&format=json]`: the audit trail, filtered;
/// `format=json` exports every matching event.
pub(super) async fn audit(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> PageResult {
    let session = session_or_login!(state, headers);
    allow(&session, "console /audit", roles::REVIEWERS)?;
    let filter = AuditFilter::parse(query.as_deref())?;
    let path = std::sync::Arc::clone(&state.api.audit_path);
    let events = crate::api::blocking(move || match crate::audit::AuditLog::read_all(&path) {
        Ok(e) => Ok(e),
        Err(crate::audit::AuditError::Open { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(HttpError::internal(e)),
    })
    .await?;
    let matching: Vec<&AuditEvent> = events.iter().filter(|e| filter.matches(e)).collect();
    if filter.json {
        let body = serde_json::to_vec_pretty(&matching)
            .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        return Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"rapha-audit.json\""),
                ),
            ],
            body,
        )
            .into_response());
    }
    let mut h = Html::new();
    h.raw("<h1>Audit trail</h1>\n")
        .raw("<form method=\"get\" action=\"/audit\" class=\"filters\">")
        .raw("<label>Actor <input name=\"actor\" value=\"")
        .text(filter.actor.as_deref().unwrap_or(""))
        .raw("\"></label> <label>Action <input name=\"action\" value=\"")
        .text(filter.action.as_deref().unwrap_or(""))
        .raw("\"></label> <label>Outcome <select name=\"outcome\">")
        .raw("<option value=\"\">any</option>");
    for (code, label) in [(0u8, "0 success"), (4, "4 refused"), (8, "8 failed")] {
        h.raw("<option value=\"").text(code).raw("\"");
        if filter.outcome == Some(code) {
            h.raw(" selected");
        }
        h.raw(">").text(label).raw("</option>");
    }
    h.raw("</select></label> <label>From <input name=\"from\" type=\"date\" value=\"")
        .text(filter.from.as_deref().unwrap_or(""))
        .raw("\"></label> <label>To <input name=\"to\" type=\"date\" value=\"")
        .text(filter.to.as_deref().unwrap_or(""))
        .raw("\"></label> <button type=\"submit\">Filter</button> ")
        .raw("<button type=\"submit\" name=\"format\" value=\"json\">Export JSON</button></form>\n")
        .raw("<p>")
        .text(matching.len())
        .raw(" matching event(s) of ")
        .text(events.len())
        .raw("; the newest ")
        .text(AUDIT_SHOWN.min(matching.len()))
        .raw(" shown.</p>\n")
        .raw("<table class=\"list\"><thead><tr><th scope=\"col\">Time</th><th scope=\"col\">Event</th>")
        .raw("<th scope=\"col\">Outcome</th><th scope=\"col\">Description</th><th scope=\"col\">Actor</th>")
        .raw("<th scope=\"col\">Address</th><th scope=\"col\">Objects</th></tr></thead><tbody>\n");
    for e in matching.iter().rev().take(AUDIT_SHOWN) {
        let actor = e.participants.first();
        let mut objects = String::new();
        for o in &e.objects {
            let _ = write!(objects, "{} {}", o.id_type_code, o.id);
            if let Some(d) = &o.detail {
                let _ = write!(objects, " ({d})");
            }
            objects.push_str("; ");
        }
        h.raw("<tr><td>")
            .text(&e.date_time)
            .raw("</td><td>")
            .text(&e.event_display)
            .raw("</td><td>")
            .text(e.outcome)
            .raw("</td><td>")
            .text(&e.outcome_description)
            .raw("</td><td>")
            .text(actor.map_or("", |a| a.user_id.as_str()))
            .raw("</td><td>")
            .text(
                actor
                    .and_then(|a| a.network_access_point_id.as_deref())
                    .unwrap_or(""),
            )
            .raw("</td><td>")
            .text(objects)
            .raw("</td></tr>\n");
    }
    h.raw("</tbody></table>\n");
    Ok(document("Audit trail", Some(&session), h))
}

/// `GET /health`: what the node can tell of itself without touching the PACS or the chain
/// (the roles of `/metrics`); `rapha-node doctor` runs every check.
pub(super) async fn health(State(state): State<ConsoleState>, headers: HeaderMap) -> PageResult {
    let session = session_or_login!(state, headers);
    allow(&session, "console /health", roles::ADMIN)?;
    let path = std::sync::Arc::clone(&state.api.store_path);
    let counts = crate::api::blocking(move || {
        crate::store::JobStore::open(&path)
            .and_then(|s| s.counts_by_state())
            .map_err(HttpError::internal)
    })
    .await?;
    let log_size = crate::api::with_log(&state.api, |log| Ok(log.size())).await?;
    let audit_bytes = std::fs::metadata(&*state.api.audit_path).map_or(0, |m| m.len());
    let free = rustix::fs::statvfs(&*state.api.work_dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .ok();
    let mut h = Html::new();
    h.raw("<h1>Node health</h1>\n<table class=\"facts\"><tbody>\n")
        .row("trainers running", state.api.live.running())
        .row("receipts in the log", log_size)
        .row("audit trail size (bytes)", audit_bytes)
        .row(
            "free space in the working directory (bytes)",
            free.map_or_else(|| "unknown".into(), |f| f.to_string()),
        )
        .row("console relying-party id", state.rp_id())
        .raw("</tbody></table>\n<h2>Jobs by state</h2><table class=\"list\"><tbody>\n");
    for (s, n) in &counts {
        h.raw("<tr><th scope=\"row\">")
            .text(s.as_str())
            .raw("</th><td>")
            .text(n)
            .raw("</td></tr>\n");
    }
    h.raw("</tbody></table>\n");
    match state.config.clone() {
        Some(config) => {
            let report =
                crate::api::blocking(move || Ok(crate::doctor::run_local_checks(&config))).await?;
            h.raw("<h2>Local doctor checks</h2>\n<p>")
                .text(report.failures().count())
                .raw(" of ")
                .text(report.checks.len())
                .raw(" failed.</p>\n<table class=\"list\"><thead><tr><th scope=\"col\">Check</th>")
                .raw("<th scope=\"col\">Status</th><th scope=\"col\">Detail</th>")
                .raw("<th scope=\"col\">Fix</th></tr></thead><tbody>\n");
            for c in &report.checks {
                h.raw("<tr><td>")
                    .text(&c.name)
                    .raw("</td><td>")
                    .text(match c.status {
                        crate::doctor::Status::Pass => "PASS",
                        crate::doctor::Status::Fail => "FAIL",
                    })
                    .raw("</td><td>")
                    .text(&c.detail)
                    .raw("</td><td>")
                    .text(c.fix.as_deref().unwrap_or(""))
                    .raw("</td></tr>\n");
            }
            h.raw("</tbody></table>\n");
        }
        None => {
            h.raw("<p class=\"muted\">This console was started without the node's configuration: no doctor checks.</p>\n");
        }
    }
    h.raw("<p>The checks that reach the PACS, the TPM, the chain and the trainer runtime are <code>rapha-node doctor --config</code>'s; run it on the node.</p>\n");
    Ok(document("Node health", Some(&session), h))
}

/// `GET /trust`: the trusted publishers, their keys and expiry; the admin's revoke forms.
pub(super) async fn trust(State(state): State<ConsoleState>, headers: HeaderMap) -> PageResult {
    let session = session_or_login!(state, headers);
    allow(&session, "console /trust", roles::REVIEWERS)?;
    let store = rapha_bundle::TrustStore::open(state.api.bundles.trust_dir())
        .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let admin = roles::ADMIN.contains(&session.role);
    let mut h = Html::new();
    h.raw("<h1>Trust store</h1>\n<table class=\"list\"><thead><tr><th scope=\"col\">Publisher</th>")
        .raw("<th scope=\"col\">Key id</th><th scope=\"col\">Trainers</th><th scope=\"col\">Expires</th>")
        .raw("<th scope=\"col\">Status</th>");
    if admin {
        h.raw("<th scope=\"col\">Revoke</th>");
    }
    h.raw("</tr></thead><tbody>\n");
    for p in store.publishers() {
        h.raw("<tr><td>")
            .text(&p.name)
            .raw("</td><td><code>")
            .text(p.keyid())
            .raw("</code></td><td>")
            .text(p.trainers.join(", "))
            .raw("</td><td>")
            .text(
                p.expires
                    .and_then(|e| {
                        e.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_else(|| "never".into()),
            )
            .raw("</td><td>")
            .text(if p.revoked { "revoked" } else { "trusted" })
            .raw("</td>");
        if admin {
            h.raw("<td>");
            if !p.revoked {
                h.raw("<form method=\"post\" action=\"/trust/")
                    .text(&p.name)
                    .raw("/revoke\">")
                    .push(super::csrf_field(&session))
                    .raw("<button type=\"submit\">Revoke</button></form>");
            }
            h.raw("</td>");
        }
        h.raw("</tr>\n");
    }
    h.raw("</tbody></table>\n");
    Ok(document("Trust store", Some(&session), h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditKind, AuditOutcome};

    #[test]
    fn audit_filters_select_by_actor_action_outcome_and_day_and_refuse_bad_input() {
        let mut e = AuditEvent::new(
            AuditKind::AdminAction,
            AuditOutcome::Success,
            "console login",
            ("dpo", "dpo"),
            vec![],
        );
        e.date_time = "2026-12-08T01:02:03Z".into();
        let f = |q: &str| AuditFilter::parse(Some(q)).unwrap();
        assert!(f("").matches(&e));
        assert!(f("actor=dpo&action=console+login&outcome=0").matches(&e));
        assert!(f("action=110100&from=2026-12-08&to=2026-12-08").matches(&e));
        assert!(f("action=Application%20Activity").matches(&e));
        assert!(!f("actor=admin").matches(&e));
        assert!(
            !f("action=login").matches(&e),
            "an action is a description's start"
        );
        assert!(!f("outcome=4").matches(&e));
        assert!(!f("from=2026-12-09").matches(&e));
        assert!(!f("to=2026-12-07").matches(&e));
        assert!(f("format=json").json);
        for bad in ["from=08-12-2026", "outcome=x", "sort=desc", "actor=%zz"] {
            assert!(AuditFilter::parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
