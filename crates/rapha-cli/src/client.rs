//! The node's HTTP API as the AI company calls it: a bearer token read from a private file
//! or `RAPHA_TOKEN` (never from argv, never printed), and every answer mapped to a
//! [`Failure`] with its exit code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use reqwest::blocking::{Client, RequestBuilder, Response};
use zeroize::Zeroizing;

use crate::exit::Failure;

/// Largest JSON answer or receipt read from a node.
pub const MAX_ANSWER: u64 = 16 << 20;

/// The environment variable holding the API token when no `--token-file` is given.
pub const TOKEN_ENV: &str = "RAPHA_TOKEN";

/// Where the node is and how to authenticate (shared by every job command).
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's API base URL, e.g. https://node.hospital.example:8420
    #[arg(long, value_name = "URL", env = "RAPHA_NODE")]
    pub node: String,
    /// File holding your publisher API token (one line; mode 0600 or stricter). Without it the
    /// token is read from the RAPHA_TOKEN environment variable. Never pass a token in argv.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Seconds to wait for one request (large outputs need more).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub http_timeout: u64,
}

/// A bearer token; zeroized on drop, never shown.
struct Token(Zeroizing<String>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

fn read_token(file: Option<&Path>) -> anyhow::Result<Token> {
    let text = match file {
        Some(path) => rapha_core::fs::read_secret_text(path, 64 * 1024)
            .map_err(|e| anyhow::anyhow!("token file {}: {e}", path.display()))?,
        None => Zeroizing::new(std::env::var(TOKEN_ENV).map_err(|_| {
            anyhow::anyhow!(
                "no API token: pass --token-file FILE (mode 0600) or set {TOKEN_ENV}; \
                 the hospital's admin issues publisher tokens"
            )
        })?),
    };
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        anyhow::bail!("the API token must be a single word on one line");
    }
    Ok(Token(Zeroizing::new(token.to_owned())))
}

/// An authenticated connection to one node.
#[derive(Debug)]
pub struct NodeClient {
    base: String,
    token: Token,
    http: Client,
}

impl NodeClient {
    /// Reads the token and builds the HTTP client (rustls; no request is made yet).
    ///
    /// # Errors
    /// A loose or unreadable token file, no token, a URL that is not http(s).
    pub fn new(args: &NodeArgs) -> anyhow::Result<Self> {
        let base = args.node.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            anyhow::bail!("--node {base:?} is not an http(s) URL");
        }
        let token = read_token(args.token_file.as_deref())?;
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(args.http_timeout))
            .build()
            .context("building the HTTP client")?;
        Ok(Self { base, token, http })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn send(&self, req: RequestBuilder) -> Result<Response, Failure> {
        let resp = req
            .bearer_auth(self.token.0.as_str())
            .send()
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text =
            String::from_utf8_lossy(&self.read_capped(resp).unwrap_or_default()).into_owned();
        let (code, message) = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => (
                v["error"].as_str().unwrap_or("unknown").to_owned(),
                v["message"].as_str().unwrap_or("").to_owned(),
            ),
            Err(_) => ("not-json".to_owned(), text.chars().take(200).collect()),
        };
        if status.is_client_error() {
            Err(Failure::NodeRefused {
                status: status.as_u16(),
                code,
                message,
            })
        } else {
            Err(Failure::NodeError {
                url: self.base.clone(),
                status: status.as_u16(),
                code,
                message,
            })
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> Failure {
        // reqwest's Display names the URL but never the Authorization header.
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        Failure::Unreachable {
            url: self.base.clone(),
            detail,
        }
    }

    fn json(&self, resp: Response) -> Result<serde_json::Value, Failure> {
        let status = resp.status().as_u16();
        let bytes = self.read_capped(resp)?;
        serde_json::from_slice(&bytes).map_err(|e| Failure::NodeError {
            url: self.base.clone(),
            status,
            code: "bad-response".into(),
            message: format!("the answer is not the JSON the API documents: {e}"),
        })
    }

    /// Reads an answer of at most [`MAX_ANSWER`] bytes (receipts and JSON documents are a few
    /// KiB; outputs are streamed with their own bound).
    fn read_capped(&self, resp: Response) -> Result<Vec<u8>, Failure> {
        use std::io::Read as _;
        let status = resp.status().as_u16();
        let mut bytes = Vec::new();
        let broke = |message: String| Failure::NodeError {
            url: self.base.clone(),
            status,
            code: "bad-response".into(),
            message,
        };
        resp.take(MAX_ANSWER + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| broke(format!("the answer broke off: {e}")))?;
        if bytes.len() as u64 > MAX_ANSWER {
            return Err(broke(format!(
                "the answer is larger than {MAX_ANSWER} bytes; refused"
            )));
        }
        Ok(bytes)
    }

    /// `GET path` → JSON.
    ///
    /// # Errors
    /// [`Failure`] by HTTP outcome.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value, Failure> {
        let resp = self.send(self.http.get(self.url(path)))?;
        self.json(resp)
    }

    /// `GET path` → bytes.
    ///
    /// # Errors
    /// [`Failure`] by HTTP outcome.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, Failure> {
        let resp = self.send(self.http.get(self.url(path)))?;
        self.read_capped(resp)
    }

    /// `POST path` with a JSON body → JSON.
    ///
    /// # Errors
    /// [`Failure`] by HTTP outcome.
    pub fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, Failure> {
        let resp = self.send(self.http.post(self.url(path)).json(body))?;
        self.json(resp)
    }

    /// `POST path` streaming `file` (`len` bytes) as the body → JSON.
    ///
    /// A node that refuses the caller (401/403, a size or type it will not take) answers
    /// before reading the body and closes the connection, which the sending side sees as a
    /// broken upload. Then an empty request of the same kind asks the node why, so the
    /// caller gets the node's refusal rather than "unreachable".
    ///
    /// # Errors
    /// [`Failure`] by HTTP outcome.
    pub fn post_file(
        &self,
        path: &str,
        content_type: &str,
        file: std::fs::File,
        len: u64,
    ) -> Result<serde_json::Value, Failure> {
        let post = |body: reqwest::blocking::Body| {
            self.http
                .post(self.url(path))
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body)
        };
        match self.send(post(reqwest::blocking::Body::sized(file, len))) {
            Ok(resp) => self.json(resp),
            Err(upload @ Failure::Unreachable { .. }) => {
                match self.send(post(reqwest::blocking::Body::from(Vec::new()))) {
                    Err(
                        refused @ Failure::NodeRefused {
                            status: 401 | 403 | 413 | 415,
                            ..
                        },
                    ) => Err(refused),
                    _ => Err(upload),
                }
            }
            Err(other) => Err(other),
        }
    }

    /// `GET path` → the response, to read as a stream.
    ///
    /// # Errors
    /// [`Failure`] by HTTP outcome.
    pub fn get_stream(&self, path: &str) -> Result<Response, Failure> {
        self.send(self.http.get(self.url(path)))
    }
}
