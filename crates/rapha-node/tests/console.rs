//! The DPO console (`rapha_node::console`) served in-process beside the API, attacked from
//! the sides the brief names: a publisher with an API token, a page that tries CSRF (no
//! token, a wrong token, a foreign Origin), an admin trying the DPO's decision, PHI leaking
//! into HTML; and the honest paths: login and logout with a strict cookie, the CSP on every
//! page with no inline script or style, a DPO's rejection ending the job as the API's does,
//! the TLS listener with a test certificate, and the refusal of a non-loopback listener
//! without TLS at configuration load.

use std::path::Path;

use rapha_node::api::ApiState;
use rapha_node::config::{Config, ConsoleConfig};
use rapha_node::console::{self, ConsoleState};
use reqwest::blocking::Client;
use reqwest::StatusCode;

use crate::api::{serve_state, tokens, Served, ADMIN_TOKEN, DPO_TOKEN, PUBLISHER_TOKEN};
use crate::pipeline_e2e::{all_files, phi_in, world, Chain, PUBLISHER};

/// The console's configuration for a test: loopback, plain http.
fn loopback_config() -> ConsoleConfig {
    let text = rapha_node::init::DEMO_TEMPLATE;
    Config::parse(text).unwrap().console.unwrap()
}

/// A console served on 127.0.0.1:0 beside the API `s` (the same node and tokens).
struct Console {
    _rt: tokio::runtime::Runtime,
    base: String,
    http: Client,
}

fn no_redirects() -> reqwest::blocking::ClientBuilder {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
}

pub fn serve_console(
    state: &ApiState,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> (tokio::runtime::Runtime, std::net::SocketAddr) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = loopback_config();
    config.listen = addr;
    let state = ConsoleState::new(state.clone(), &config);
    rt.spawn(console::serve(listener, tls, state));
    (rt, addr)
}

impl Console {
    fn over(s: &Served) -> Self {
        let (rt, addr) = serve_console(s.state(), None);
        Self {
            _rt: rt,
            base: format!("http://{addr}"),
            http: no_redirects().build().unwrap(),
        }
    }

    fn origin(&self) -> String {
        self.base.clone()
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::blocking::Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.header("cookie", format!("rapha_console={c}"));
        }
        req.send().unwrap()
    }

    /// Posts a form (`fields` already encoded) with an Origin header.
    fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
        fields: &str,
    ) -> reqwest::blocking::Response {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(fields.to_owned());
        if let Some(c) = cookie {
            req = req.header("cookie", format!("rapha_console={c}"));
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send().unwrap()
    }

    /// Logs in with `token`; the session cookie's value and the Set-Cookie line.
    fn login(&self, token: &str) -> (String, String) {
        let r = self.post(
            "/login",
            None,
            Some(&self.origin()),
            &format!("token={token}"),
        );
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "login with a hospital token"
        );
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        let value = set
            .strip_prefix("rapha_console=")
            .and_then(|v| v.split(';').next())
            .unwrap()
            .to_owned();
        (value, set)
    }

    /// A page's HTML, checked for the console's headers and the absence of inline script and
    /// style.
    fn page(&self, path: &str, cookie: &str) -> String {
        let r = self.get(path, Some(cookie));
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        check_headers(&r, path, true);
        let html = r.text().unwrap();
        check_no_inline(&html, path);
        html
    }
}

fn check_headers(r: &reqwest::blocking::Response, what: &str, no_store: bool) {
    let h = r.headers();
    assert_eq!(h["content-security-policy"], console::CSP, "{what}");
    assert!(
        console::CSP.starts_with("default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; form-action 'self'; frame-ancestors 'none'")
    );
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
    if no_store {
        assert_eq!(h["cache-control"], "no-store", "{what}");
    }
}

/// No inline script (a `<script>` without `src`, an `on…=` handler, a `javascript:` URL) and
/// no inline style (`<style>`, `style=`) in a page.
fn check_no_inline(html: &str, what: &str) {
    let lower = html.to_ascii_lowercase();
    for bad in [
        "<script",
        "<style",
        "style=",
        "javascript:",
        " onclick=",
        " onload=",
        " onsubmit=",
    ] {
        assert!(!lower.contains(bad), "{what} has {bad:?}: {html}");
    }
}

/// The CSRF token in a page's forms.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with the CSRF token");
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Waits until the audit trail holds a line containing every one of `needles`.
fn wait_audit(path: &Path, needles: &[&str]) -> String {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "no audit line with {needles:?} in {}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

#[test]
fn console_sessions_csrf_headers_and_roles_hold_against_a_publisher_a_foreign_page_and_an_admin() {
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let s = serve_state(ApiState::new(
        crate::api::node(tmp.path(), &chain),
        tmp.path().join("jobs.sqlite"),
        tokens(),
    ));
    let c = Console::over(&s);
    let audit = tmp.path().join("audit.jsonl");

    // Without a session every page sends the browser to the login page.
    for path in ["/", "/jobs", "/log", "/audit", "/trust", "/health"] {
        let r = c.get(path, None);
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()["location"], "/login", "{path}");
        check_headers(&r, path, true);
    }
    let r = c.get("/login", None);
    assert_eq!(r.status(), StatusCode::OK);
    check_headers(&r, "/login", true);
    check_no_inline(&r.text().unwrap(), "/login");
    // The stylesheet is the console's own file.
    let r = c.get("/static/console.css", None);
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    assert_eq!(r.text().unwrap(), console::STYLESHEET);

    // A publisher's API token is refused at login, and so are an unknown token and a login
    // posted from another origin (with the DPO's own token).
    let r = c.post(
        "/login",
        None,
        Some(&c.origin()),
        &format!("token={PUBLISHER_TOKEN}"),
    );
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("set-cookie").is_none());
    let r = c.post(
        "/login",
        None,
        Some(&c.origin()),
        "token=not-a-token-of-this-node-0123456789abcdef",
    );
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("set-cookie").is_none());
    let r = c.post(
        "/login",
        None,
        Some("https://evil.example"),
        &format!("token={DPO_TOKEN}"),
    );
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("set-cookie").is_none());
    wait_audit(
        &audit,
        &[
            "console /login refused",
            "role may not log in to the console",
            "publisher",
        ],
    );
    wait_audit(
        &audit,
        &["console /login refused", "missing or unknown token"],
    );
    wait_audit(&audit, &["console /login refused", "foreign Origin"]);

    // The DPO logs in: a session cookie no script can read, sent only over a secure context
    // to this site.
    let (dpo, set_cookie) = c.login(DPO_TOKEN);
    assert_eq!(dpo.len(), 64);
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    let login = wait_audit(&audit, &["console login", "\"dpo\""]);
    assert!(
        login.contains("\"NetworkAccessPointId\":\"127.0.0.1\""),
        "{login}"
    );

    // Every page the DPO may see carries the headers and no inline script or style.
    let queue = c.page("/", &dpo);
    assert!(
        queue.contains("Approval queue") && queue.contains("0 job(s) waiting"),
        "{queue}"
    );
    for path in ["/jobs", "/log", "/audit", "/trust"] {
        c.page(path, &dpo);
    }
    // Node health is the admin's (as /metrics is): the DPO is refused and audited.
    let r = c.get("/health", Some(&dpo));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    check_headers(&r, "/health refused", true);
    wait_audit(&audit, &["console /health refused", "\"dpo\""]);
    // The DPO has no revoke form: changing the trust store is the admin's.
    let trust = c.page("/trust", &dpo);
    assert!(
        trust.contains(PUBLISHER) && !trust.contains("/revoke"),
        "{trust}"
    );

    // CSRF: logging out needs the session's token, from the console's own origin.
    let csrf = csrf_of(&queue);
    let r = c.post("/logout", Some(&dpo), Some(&c.origin()), "");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    let wrong = "0".repeat(64);
    let r = c.post(
        "/logout",
        Some(&dpo),
        Some(&c.origin()),
        &format!("csrf={wrong}"),
    );
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a wrong CSRF token");
    let r = c.post(
        "/logout",
        Some(&dpo),
        Some("https://evil.example"),
        &format!("csrf={csrf}"),
    );
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a foreign Origin");
    wait_audit(
        &audit,
        &["console /logout refused", "missing or wrong CSRF token"],
    );
    // A browser posting from a page whose referrer policy hides its origin sends `Origin:
    // null`: its Sec-Fetch-Site decides, and another site is refused even with the token.
    let r = c
        .http
        .post(format!("{}/logout", c.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("rapha_console={dpo}"))
        .header("origin", "null")
        .header("sec-fetch-site", "cross-site")
        .body(format!("csrf={csrf}"))
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "Origin null from another site"
    );
    wait_audit(
        &audit,
        &["console /logout refused", "another site (Sec-Fetch-Site)"],
    );
    // The session survived every refused attempt.
    c.page("/", &dpo);
    let r = c.post(
        "/logout",
        Some(&dpo),
        Some(&c.origin()),
        &format!("csrf={csrf}"),
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    wait_audit(&audit, &["console logout", "\"dpo\""]);
    let r = c.get("/", Some(&dpo));
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "the session ended at logout"
    );

    // An admin may read health and revoke a publisher, but not take the DPO's decision.
    let (admin, _) = c.login(ADMIN_TOKEN);
    let health = c.page("/health", &admin);
    assert!(health.contains("Jobs by state"), "{health}");
    let trust = c.page("/trust", &admin);
    let csrf = csrf_of(&trust);
    let job = rapha_core::JobId::random();
    let r = c.post(
        &format!("/jobs/{job}/reject"),
        Some(&admin),
        Some(&c.origin()),
        &format!("csrf={csrf}&reason=no"),
    );
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "an admin rejecting a job"
    );
    wait_audit(&audit, &["console /jobs/{id}/reject refused", "\"admin\""]);
    // The revoke form needs the token too.
    let r = c.post(
        &format!("/trust/{PUBLISHER}/revoke"),
        Some(&admin),
        Some(&c.origin()),
        "",
    );
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(c.page("/trust", &admin).contains("/revoke"));
    let r = c.post(
        &format!("/trust/{PUBLISHER}/revoke"),
        Some(&admin),
        Some(&c.origin()),
        &format!("csrf={csrf}"),
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let trust = c.page("/trust", &admin);
    assert!(
        trust.contains("revoked") && !trust.contains("/revoke\""),
        "{trust}"
    );
    wait_audit(
        &audit,
        &["trusted publisher revoked in the console", PUBLISHER],
    );

    // The audit trail reads back filtered, and exports as JSON.
    let r = c.get("/audit?action=console%20login&format=json", Some(&admin));
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    let events: Vec<serde_json::Value> = r.json().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events
        .iter()
        .all(|e| e["EventOutcomeDescription"] == "console login"));
    let page = c.page("/audit?actor=admin&outcome=0", &admin);
    assert!(
        page.contains("trusted publisher revoked in the console"),
        "{page}"
    );
    assert!(
        !page.contains("\"dpo\"") && !page.contains(">dpo<"),
        "{page}"
    );
    let r = c.get("/audit?from=yesterday", Some(&admin));
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn a_dpo_rejects_in_the_console_the_job_ends_as_an_api_rejection_and_no_page_shows_phi() {
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let job = w.submit_to_review("console");
    let other = w.submit_to_review("console-kept");
    let phi = w.manifest.phi.clone();
    assert!(phi.iter().any(|p| p.len() >= 4), "the cohort plants PHI");
    // Control: the search finds the planted values where they are.
    let in_cohort: usize = all_files(&tmp.join("cohort/dicom"))
        .iter()
        .map(|f| phi_in(&phi, &std::fs::read(f).unwrap()).len())
        .sum();
    assert!(in_cohort > 0, "the PHI search finds nothing in the cohort");

    let s = serve_state(ApiState::new(w.node, tmp.join("jobs.sqlite"), tokens()));
    let c = Console::over(&s);
    let (dpo, _) = c.login(DPO_TOKEN);
    let mut pages: Vec<(String, String)> = Vec::new();

    let queue = c.page("/", &dpo);
    assert!(queue.contains("2 job(s) waiting"), "{queue}");
    assert!(queue.contains(&job.to_string()) && queue.contains(&other.to_string()));
    pages.push(("queue".into(), queue));
    let page = c.page(&format!("/jobs/{job}"), &dpo);
    // Everything the decision needs is on the job's page.
    for needle in [
        "awaiting-approval",
        PUBLISHER,
        "signer key id",
        "trust expires",
        "bundle manifest (image) digest",
        "job digest (what an approval signs)",
        "requested metadata fields",
        "GPUs",
        "wall time (s)",
        "hospital's payout (70%)",
        "leakage bound per job (bits)",
        "publisher's total with this job (bits)",
        "Admission gate",
        "Instances by modality",
        "Instances excluded, by reason",
        "Patients by sex",
        "<th scope=\"row\">female (F)</th>",
        "Patients by age at their first study (years)",
        "<th scope=\"row\">90+</th>",
        "counts below 5 are shown as &lt;5",
        "patients by sex:   female (F) ",
        "<svg",
        "rapha-node approve",
        "id=\"passkey-approval\"",
        "action=\"/jobs/",
    ] {
        assert!(page.contains(needle), "job page lacks {needle:?}: {page}");
    }
    pages.push(("job".into(), page.clone()));
    for path in [
        "/jobs",
        "/log",
        "/audit",
        "/trust",
        &format!("/jobs/{other}"),
    ] {
        pages.push((path.to_owned(), c.page(path, &dpo)));
    }
    let r = c.get("/audit?format=json", Some(&dpo));
    assert_eq!(r.status(), StatusCode::OK);
    pages.push(("audit export".into(), r.text().unwrap()));

    // A rejection without the session's CSRF token changes nothing.
    let r = c.post(
        &format!("/jobs/{job}/reject"),
        Some(&dpo),
        Some(&c.origin()),
        "reason=cross-site",
    );
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let csrf = csrf_of(&page);
    let r = c.post(
        &format!("/jobs/{job}/reject"),
        Some(&dpo),
        Some(&c.origin()),
        &format!("csrf={csrf}&reason=the+cohort+is+not+the+one+agreed"),
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], format!("/jobs/{job}").as_str());
    // The job ends as the API's reject ends it: refused, reason code dpo-rejected, the DPO's
    // words in the hospital's detail; the other job still waits.
    let mut status = serde_json::Value::Null;
    for _ in 0..240 {
        let (st, text) = s.call("get", &format!("/v1/jobs/{job}"), Some(ADMIN_TOKEN), None);
        assert_eq!(st, StatusCode::OK, "{text}");
        status = serde_json::from_str(&text).unwrap();
        if status["finished"] == true {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(status["finished"], true, "{status}");
    assert_eq!(status["outcome"], "refused", "{status}");
    assert_eq!(status["reason"], "dpo-rejected", "{status}");
    assert!(
        status["detail"]
            .as_str()
            .unwrap()
            .contains("rejected by the DPO: the cohort is not the one agreed"),
        "{status}"
    );
    let (_, text) = s.call("get", "/v1/approvals/pending", Some(DPO_TOKEN), None);
    assert!(
        text.contains(&other.to_string()) && !text.contains(&job.to_string()),
        "{text}"
    );
    let audit = tmp.join("audit.jsonl");
    wait_audit(
        &audit,
        &["job rejected in the console", &job.to_string(), "127.0.0.1"],
    );
    // A second rejection of the ended job is refused with the API's conflict.
    let r = c.post(
        &format!("/jobs/{job}/reject"),
        Some(&dpo),
        Some(&c.origin()),
        &format!("csrf={csrf}&reason=again"),
    );
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // The admin reads the receipt, verified against the log's current head.
    let (admin, _) = c.login(ADMIN_TOKEN);
    let receipt = c.page(&format!("/jobs/{job}/receipt"), &admin);
    assert!(
        receipt.contains("Verified: signed by this node"),
        "{receipt}"
    );
    assert!(receipt.contains("dpo-rejected"), "{receipt}");
    pages.push(("receipt".into(), receipt));
    pages.push(("ended job".into(), c.page(&format!("/jobs/{job}"), &admin)));
    pages.push(("health".into(), c.page("/health", &admin)));
    pages.push(("queue after".into(), c.page("/", &admin)));
    // The DPO who decided reads the receipt too (as on the API).
    let receipt = c.page(&format!("/jobs/{job}/receipt"), &dpo);
    assert!(
        receipt.contains("Verified: signed by this node"),
        "{receipt}"
    );
    pages.push(("receipt (DPO)".into(), receipt));

    for (what, html) in &pages {
        let found = phi_in(&phi, html.as_bytes());
        assert!(
            found.is_empty(),
            "PHI {found:?} in the console's {what} page"
        );
    }
    // Control: a page that had carried a planted value would have been caught.
    let planted = phi.iter().find(|p| p.len() >= 4).unwrap();
    let mut leaky = pages[1].1.clone();
    leaky.push_str(planted);
    assert!(phi_in(&phi, leaky.as_bytes()).contains(planted));
}

#[test]
fn a_console_off_loopback_without_tls_is_refused_at_configuration_load() {
    let demo = rapha_node::init::DEMO_TEMPLATE;
    assert!(demo.contains("listen = \"127.0.0.1:8421\""));
    let lan = demo.replace("listen = \"127.0.0.1:8421\"", "listen = \"10.0.0.5:8421\"");
    let (field, msg) = Config::parse(&lan).expect_err("a LAN listener without TLS");
    assert_eq!(field, "console.listen");
    assert!(
        msg.contains("10.0.0.5:8421 is not a loopback address and the console has no TLS"),
        "{msg}"
    );
    let with_tls = lan.replace(
        "rp_id = \"localhost\"",
        "rp_id = \"rapha.hospital.example\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"",
    );
    let console = Config::parse(&with_tls).unwrap().console.unwrap();
    assert!(console.tls().is_some());
    assert_eq!(
        console.allowed_origins(),
        ["https://10.0.0.5:8421".to_owned()]
    );
    let half = lan.replace("rp_id = \"localhost\"", "tls_cert_file = \"c.pem\"");
    let (field, _) = Config::parse(&half).expect_err("a certificate without its key");
    assert_eq!(field, "console.tls_key_file");
    let long = demo.replace("session_minutes = 30", "session_minutes = 100000");
    let (field, _) = Config::parse(&long).expect_err("a session of 69 days");
    assert_eq!(field, "console.session_minutes");
    // Loopback in the demo: plain http, the listener's own origins.
    let console = loopback_config();
    assert_eq!(
        console.allowed_origins(),
        [
            "http://127.0.0.1:8421".to_owned(),
            "http://localhost:8421".to_owned()
        ]
    );
}

/// A self-signed certificate for `localhost` and its key (mode 0600), made by the openssl
/// command; `None` when it is not installed and services are not required.
fn test_certificate(dir: &Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("console.crt"), dir.join("console.key"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        // An end-entity certificate: webpki refuses a CA certificate as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        other => {
            assert!(
                !crate::pipeline_e2e::required(),
                "openssl could not make a test certificate: {other:?}"
            );
            return None;
        }
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    Some((cert, key))
}

#[test]
fn the_tls_listener_serves_the_console_with_a_test_certificate_and_refuses_a_readable_key() {
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let Some((cert, key)) = test_certificate(tmp.path()) else {
        return;
    };
    let tls = console::tls::server_config(&cert, &key).unwrap();
    let s = serve_state(ApiState::new(
        crate::api::node(tmp.path(), &chain),
        tmp.path().join("jobs.sqlite"),
        tokens(),
    ));
    let (_rt, addr) = serve_console(s.state(), Some(tls));
    let client = no_redirects()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let r = client
        .get(format!("https://localhost:{}/login", addr.port()))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    check_headers(&r, "https /login", true);
    assert!(r.text().unwrap().contains("Log in"));
    // The TLS port speaks nothing else.
    let plain = no_redirects().build().unwrap();
    assert!(plain
        .get(format!("http://{addr}/login"))
        .send()
        .and_then(|r| r.error_for_status())
        .is_err());
    // A key file others may read is refused, naming the file.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = console::tls::server_config(&cert, &key)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("console TLS key") && err.contains("console.key"),
        "{err}"
    );
    // A certificate file without a certificate is refused too.
    std::fs::write(tmp.path().join("empty.pem"), "").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = console::tls::server_config(&tmp.path().join("empty.pem"), &key)
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds no CERTIFICATE block"), "{err}");
}

#[test]
fn rapha_node_serve_serves_the_console_from_its_configuration_and_refuses_a_lan_one_in_clear() {
    let Some(trainer) = crate::pipeline_e2e::sandbox_ready() else {
        return;
    };
    let Some(orthanc) = rapha_testkit::require!(rapha_testkit::services::Orthanc::start()) else {
        return;
    };
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fixture = crate::pipeline_e2e::NodeFixture::new(t, &orthanc, &chain, &trainer, 47);
    let console_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut child, port) = crate::publisher_probes::spawn_serve(
        t,
        &fixture,
        &chain,
        &format!("dpo {DPO_TOKEN}\nadmin {ADMIN_TOKEN}\npublisher {PUBLISHER_TOKEN} {PUBLISHER}\n"),
        &format!("\n[console]\nlisten = \"127.0.0.1:{console_port}\"\nsession_minutes = 5\n"),
    );
    let healthy = crate::publisher_probes::wait_healthy(&mut child, port);
    let base = format!("http://127.0.0.1:{console_port}");
    let http = no_redirects().build().unwrap();
    let result = (|| {
        let r = http.get(format!("{base}/login")).send().ok()?;
        let login_ok = r.status() == StatusCode::OK
            && r.headers()
                .get("content-security-policy")
                .map(|v| v.as_bytes())
                == Some(console::CSP.as_bytes());
        let r = http
            .post(format!("{base}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", &base)
            .body(format!("token={DPO_TOKEN}"))
            .send()
            .ok()?;
        let cookie = r.headers().get("set-cookie")?.to_str().ok()?.to_owned();
        assert!(cookie.contains("Max-Age=300"), "{cookie}");
        let id = cookie
            .strip_prefix("rapha_console=")?
            .split(';')
            .next()?
            .to_owned();
        let queue = http
            .get(format!("{base}/"))
            .header("cookie", format!("rapha_console={id}"))
            .send()
            .ok()?
            .text()
            .ok()?;
        let refused = http
            .post(format!("{base}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", &base)
            .body(format!("token={PUBLISHER_TOKEN}"))
            .send()
            .ok()?
            .status();
        // The admin's health page runs doctor's local checks on the node's configuration.
        let r = http
            .post(format!("{base}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", &base)
            .body(format!("token={ADMIN_TOKEN}"))
            .send()
            .ok()?;
        let cookie = r.headers().get("set-cookie")?.to_str().ok()?.to_owned();
        let id = cookie
            .strip_prefix("rapha_console=")?
            .split(';')
            .next()?
            .to_owned();
        let health = http
            .get(format!("{base}/health"))
            .header("cookie", format!("rapha_console={id}"))
            .send()
            .ok()?
            .text()
            .ok()?;
        Some((login_ok, queue, refused, health))
    })();
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(t.join("serve.log")).unwrap_or_default();
    assert!(healthy, "serve did not start: {log}");
    let (login_ok, queue, refused, health) =
        result.unwrap_or_else(|| panic!("the console did not answer: {log}"));
    assert!(login_ok, "{log}");
    assert!(queue.contains("Approval queue"), "{queue}");
    assert_eq!(refused, StatusCode::FORBIDDEN);
    assert!(health.contains("Local doctor checks"), "{health}");
    for check in [
        "HMAC key (keys.hmac_key_file)",
        "API tokens ([api])",
        "data directories ([paths])",
    ] {
        assert!(health.contains(check), "health lacks {check}: {health}");
    }
    assert!(
        log.contains(&format!(
            "rapha-node console listening on http://127.0.0.1:{console_port}"
        )),
        "{log}"
    );

    // The same node with its console on every address and no TLS does not start.
    let config = std::fs::read_to_string(t.join("node.toml"))
        .unwrap()
        .replace(
            &format!("listen = \"127.0.0.1:{console_port}\""),
            &format!("listen = \"0.0.0.0:{console_port}\""),
        );
    std::fs::write(t.join("lan.toml"), config).unwrap();
    let out =
        crate::node_common::node(&["serve", "--config", t.join("lan.toml").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = crate::node_common::stderr(&out);
    assert!(
        err.contains("console.listen") && err.contains("is not a loopback address"),
        "{err}"
    );
}
