//! The console in a real browser (issue 20, item 6; this slice: reading and rejecting, the
//! passkey steps come with the WebAuthn core): headless Chromium driven over WebDriver's HTTP
//! protocol by `chromedriver` (Debian's `chromium` and `chromium-driver`), against the real
//! node of the test world. A DPO logs in, reads the queue, opens the pending job with its
//! charts, rejects it with a reason; the admin reads the receipt, verified. Each page is
//! checked with axe-core (npm, injected from its local file; 0 serious or critical
//! violations) and photographed into docs/console/.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rapha_node::api::ApiState;
use serde_json::{json, Value};

use crate::api::{serve_state, tokens, ADMIN_TOKEN, DPO_TOKEN};
use crate::pipeline_e2e::{required, world};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and its browser session.
struct Browser {
    driver: Child,
    http: reqwest::blocking::Client,
    base: String,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// axe-core's file: `RAPHA_AXE_JS`, else the npm cache's (scripts/lib.sh installs it).
fn axe_js() -> Option<PathBuf> {
    let path = std::env::var_os("RAPHA_AXE_JS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("RAPHA_NODE_MODULES")
                .map(|m| PathBuf::from(m).join("axe-core/axe.min.js"))
        })?;
    path.is_file().then_some(path)
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `None` (or a failure when services
    /// are required) if either is not installed.
    fn start() -> Option<Self> {
        let found = Path::new("/usr/bin/chromedriver").is_file()
            && Path::new("/usr/bin/chromium").is_file();
        if !found {
            assert!(
                !required(),
                "chromium and chromium-driver are required (scripts/lib.sh installs them)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http
            .get(format!("{base}/status"))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .is_none_or(|v| v["value"]["ready"] != true)
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,1000",
                         "--host-resolver-rules=MAP localhost 127.0.0.1"],
            },
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        Some(Self {
            driver,
            http,
            base,
            session,
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = match method {
            "get" => self.http.get(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let v: Value = req.send().unwrap().json().unwrap();
        assert!(
            v["value"].get("error").is_none(),
            "WebDriver {method} {path}: {v}"
        );
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("post", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "post",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}; page {}", self.source()))
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "post",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("post", &format!("/element/{e}/click"), None);
    }

    /// Clicks a submit button and waits until the browser has left `from` for a URL ending
    /// in `to` (a form's navigation may still be starting when the click returns).
    fn submit(&self, css: &str, to: &str) {
        self.click(css);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let url = self.url();
            if url.ends_with(to) && self.ready() {
                return;
            }
            assert!(Instant::now() < deadline, "still at {url}, not {to}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ready(&self) -> bool {
        self.call(
            "post",
            "/execute/sync",
            Some(json!({"script": "return document.readyState;", "args": []})),
        ) == "complete"
    }

    fn source(&self) -> String {
        self.call("get", "/source", None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn url(&self) -> String {
        self.call("get", "/url", None).as_str().unwrap().to_owned()
    }

    /// A picture of the whole page (the window grown to the page's height, at most 6000 px).
    fn screenshot(&self, name: &str) {
        let height = self.call(
            "post",
            "/execute/sync",
            Some(json!({"script": "return document.documentElement.scrollHeight;", "args": []})),
        );
        let height = height.as_u64().unwrap_or(1000).clamp(600, 6000);
        self.call(
            "post",
            "/window/rect",
            Some(json!({ "width": 1200, "height": height + 140 })),
        );
        let png = self.call("get", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    /// axe-core's serious and critical violations on the current page.
    fn axe(&self, axe: &str) -> Vec<Value> {
        self.call(
            "post",
            "/execute/sync",
            Some(json!({ "script": format!("{axe}\n;return 1;"), "args": [] })),
        );
        let v = self.call(
            "post",
            "/execute/async",
            Some(json!({
                "script": "const done = arguments[arguments.length - 1];\
                    axe.run(document, {resultTypes: ['violations']})\
                      .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, \
                         help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))))\
                      .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e)}]));",
                "args": [],
            })),
        );
        v.as_array()
            .unwrap()
            .iter()
            .filter(|x| x["impact"] == "serious" || x["impact"] == "critical")
            .cloned()
            .collect()
    }
}

#[test]
fn a_dpo_reads_the_queue_and_rejects_a_job_in_headless_chromium_with_no_serious_axe_violation() {
    let Some(axe) = axe_js() else {
        assert!(
            !required(),
            "axe-core is required (RAPHA_AXE_JS, or RAPHA_NODE_MODULES/axe-core)"
        );
        return;
    };
    let axe = std::fs::read_to_string(axe).unwrap();
    let Some(browser) = Browser::start() else {
        return;
    };
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let job = w.submit_to_review("browser");
    let s = serve_state(ApiState::new(w.node, tmp.join("jobs.sqlite"), tokens()));
    let (_rt, addr) = crate::console::serve_console(s.state(), None);
    let base = format!("http://localhost:{}", addr.port());
    let mut violations: Vec<(String, Vec<Value>)> = Vec::new();
    let mut check = |page: &str, name: &str| {
        browser.screenshot(name);
        let found = browser.axe(&axe);
        if !found.is_empty() {
            violations.push((page.to_owned(), found));
        }
    };

    browser.go(&format!("{base}/"));
    assert!(browser.url().ends_with("/login"), "{}", browser.url());
    check("login", "login");
    browser.type_into("#token", DPO_TOKEN);
    browser.submit("form.login button", "/");
    let queue = browser.source();
    assert!(queue.contains("1 job(s) waiting"), "{queue}");
    check("queue", "queue");

    browser.submit(&format!("a[href=\"/jobs/{job}\"]"), &format!("/jobs/{job}"));
    let page = browser.source();
    assert!(
        page.contains("Instances by modality") && page.contains("<svg"),
        "{page}"
    );
    assert!(page.contains("passkey-approval"), "{page}");
    check("job", "job");

    browser.type_into("#reason", "the cohort is not the one agreed");
    browser.click("form.reject button");
    // The rejection is committed before the answer redirects back to the job's page, which
    // then has no decision form any more.
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = browser.source();
        if browser.ready() && page.contains("dpo-rejected") {
            break page;
        }
        assert!(Instant::now() < deadline, "the job did not end: {page}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        browser.url().ends_with(&format!("/jobs/{job}")),
        "{}",
        browser.url()
    );
    assert!(
        page.contains("rejected by the DPO: the cohort is not the one agreed"),
        "{page}"
    );
    assert!(!page.contains("id=\"reason\""), "{page}");
    check("rejected job", "job-rejected");
    for (path, name) in [
        ("/jobs", "jobs"),
        ("/audit", "audit"),
        ("/log", "log"),
        ("/trust", "trust"),
    ] {
        browser.go(&format!("{base}{path}"));
        check(path, name);
    }
    browser.submit("form.logout button", "/login");

    browser.type_into("#token", ADMIN_TOKEN);
    browser.submit("form.login button", "/");
    browser.go(&format!("{base}/jobs/{job}/receipt"));
    let receipt = browser.source();
    assert!(
        receipt.contains("Verified: signed by this node"),
        "{receipt}"
    );
    check("receipt", "receipt");
    browser.go(&format!("{base}/health"));
    check("health", "health");
    assert!(
        violations.is_empty(),
        "axe serious/critical violations: {violations:#?}"
    );
    drop(browser);
    drop(s);
}
