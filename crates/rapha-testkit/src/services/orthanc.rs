//! Orthanc with the DICOMweb plugin, configured from a generated JSON file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::{find_binary, free_port, Proc, Workdir};
use super::{missing, with_http, HarnessError, START_ATTEMPTS};

const PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Orthanc (HTTP REST + DICOMweb at `/dicom-web/`), dropped = stopped.
pub struct Orthanc {
    // Field order matters: processes stop before their directory is removed.
    tls_front: Option<(Proc, u16)>,
    proc: Proc,
    dir: Workdir,
    http_port: u16,
    dicom_port: u16,
    storage: PathBuf,
}

impl std::fmt::Debug for Orthanc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orthanc")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

impl Orthanc {
    /// Orthanc + DICOMweb on free loopback ports (HTTP and DICOM), own storage in a tempdir.
    /// Ready once `GET /system` answers.
    pub fn start() -> Result<Option<Orthanc>, HarnessError> {
        Self::start_inner(None, None)
    }

    /// Same, answering DICOMweb requests (`/dicom-web/...`) only when they carry the header
    /// `name: value` (403 otherwise), as a hospital PACS behind an API key does. Orthanc's
    /// own REST routes, which the harness uploads through, stay open. `name` and `value` are
    /// ASCII letters, digits and '-' (they are written into a Lua filter).
    pub fn start_requiring_header(
        name: &str,
        value: &str,
    ) -> Result<Option<Orthanc>, HarnessError> {
        let plain =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        assert!(
            plain(name) && plain(value),
            "header name and value: letters, digits, '-'"
        );
        Self::start_inner(None, Some((name, value)))
    }

    /// Same, serving HTTPS with the given certificate and private key (PEM files). Orthanc
    /// wants both in one file; the harness writes that file into its own directory.
    pub fn start_tls(cert_pem: &Path, key_pem: &Path) -> Result<Option<Orthanc>, HarnessError> {
        Self::start_inner(Some((cert_pem, key_pem)), None)
    }

    fn start_inner(
        tls: Option<(&Path, &Path)>,
        header: Option<(&str, &str)>,
    ) -> Result<Option<Orthanc>, HarnessError> {
        let Some(bin) = find_binary(Some("RAPHA_ORTHANC"), "Orthanc", &["/usr/sbin/Orthanc"])
        else {
            return missing("Orthanc", "no Orthanc binary in /usr/sbin or PATH".into());
        };
        if !Path::new(PLUGIN).is_file() {
            return missing("Orthanc DICOMweb plugin", format!("{PLUGIN} is missing"));
        }
        let socat = match tls {
            None => None,
            Some(_) => match find_binary(None, "socat", &[]) {
                Some(s) => Some(s),
                None => return missing("socat", "no socat in PATH (TLS front of Orthanc)".into()),
            },
        };
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let started = Self::try_start(&bin, header).and_then(|mut o| {
                if let (Some(socat), Some((cert, key))) = (&socat, tls) {
                    o.front_with_tls(socat, cert, key)?;
                }
                Ok(o)
            });
            match started {
                Ok(o) => return Ok(Some(o)),
                Err(e @ (HarnessError::Exited { .. } | HarnessError::NotReady { .. })) => {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(HarnessError::NoFreePort))
    }

    fn try_start(bin: &Path, header: Option<(&str, &str)>) -> Result<Orthanc, HarnessError> {
        let mut dir = Workdir::new("orthanc")?;
        let http_port = free_port()?;
        let mut dicom_port = free_port()?;
        while dicom_port == http_port {
            dicom_port = free_port()?;
        }
        let storage = dir.path().join("storage");
        let index = dir.path().join("index");
        for d in [&storage, &index] {
            std::fs::create_dir_all(d)
                .map_err(|e| HarnessError::io(format!("create {}", d.display()), e))?;
        }
        let mut config = serde_json::json!({
            "Name": "rapha-test",
            "StorageDirectory": storage,
            "IndexDirectory": index,
            "HttpServerEnabled": true,
            "HttpPort": http_port,
            "DicomServerEnabled": true,
            "DicomPort": dicom_port,
            "DicomAet": "RAPHATEST",
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "HttpDescribeErrors": true,
            "Plugins": [PLUGIN],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
            "StableAge": 1,
            "ConcurrentJobs": 1,
            "SaveJobs": false,
        });
        if let Some((name, value)) = header {
            // Orthanc hands the filter the request's headers with lower-case names.
            let filter = dir.path().join("require-header.lua");
            let lua = format!(
                "function IncomingHttpRequestFilter(method, uri, ip, username, headers)\n\
                 \x20 if string.sub(uri, 1, 11) == '/dicom-web/' then\n\
                 \x20   return headers['{}'] == '{value}'\n\
                 \x20 end\n\
                 \x20 return true\n\
                 end\n",
                name.to_ascii_lowercase()
            );
            std::fs::write(&filter, lua)
                .map_err(|e| HarnessError::io(format!("write {}", filter.display()), e))?;
            config["LuaScripts"] = serde_json::json!([filter]);
        }
        let config_path = dir.path().join("orthanc.json");
        std::fs::write(&config_path, config.to_string())
            .map_err(|e| HarnessError::io(format!("write {}", config_path.display()), e))?;

        let mut proc = Proc::spawn(
            "Orthanc",
            bin,
            &[config_path.into_os_string()],
            dir.path(),
            dir.log(),
        )?;
        let url = format!("http://127.0.0.1:{http_port}/system");
        if let Err(e) = proc.wait_ready(READY_TIMEOUT, || get_ok(&url, false)) {
            dir.keep();
            return Err(e);
        }
        Ok(Orthanc {
            tls_front: None,
            proc,
            dir,
            http_port,
            dicom_port,
            storage,
        })
    }

    /// Puts a TLS terminator (socat, OpenSSL) on its own loopback port in front of the HTTP
    /// port. Orthanc's own `"SslEnabled"` cannot be used: Debian's Orthanc 1.10.1 with the
    /// system civetweb crashes (a null SSL function pointer in a civetweb worker) on the first
    /// TLS handshake. A TLS front is also how Orthanc is usually deployed.
    fn front_with_tls(
        &mut self,
        socat: &Path,
        cert: &Path,
        key: &Path,
    ) -> Result<(), HarnessError> {
        for p in [cert, key] {
            if !p.is_file() {
                return Err(HarnessError::io(
                    format!("read {}", p.display()),
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ));
            }
        }
        let port = free_port()?;
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
            cert.display(),
            key.display()
        );
        let target = format!("TCP:127.0.0.1:{}", self.http_port);
        let log = self.dir.path().join("tls-front.log");
        let mut front = Proc::spawn(
            "socat",
            socat,
            &["-d".into(), listen.into(), target.into()],
            self.dir.path(),
            &log,
        )?;
        let url = format!("https://127.0.0.1:{port}/system");
        if let Err(e) = front.wait_ready(READY_TIMEOUT, || get_ok(&url, true)) {
            self.dir.keep();
            return Err(e);
        }
        self.tls_front = Some((front, port));
        Ok(())
    }

    /// `http://127.0.0.1:PORT` (`https://` for [`Orthanc::start_tls`]).
    pub fn base_url(&self) -> String {
        match &self.tls_front {
            Some((_, port)) => format!("https://127.0.0.1:{port}"),
            None => format!("http://127.0.0.1:{}", self.http_port),
        }
    }

    fn tls(&self) -> bool {
        self.tls_front.is_some()
    }

    /// `http://127.0.0.1:PORT/dicom-web`.
    pub fn dicomweb_url(&self) -> String {
        format!("{}/dicom-web", self.base_url())
    }

    /// The port of [`Orthanc::base_url`] (the TLS front's for [`Orthanc::start_tls`]).
    pub fn http_port(&self) -> u16 {
        match &self.tls_front {
            Some((_, port)) => *port,
            None => self.http_port,
        }
    }

    /// Orthanc's own plain-HTTP port (behind the TLS front, if any).
    pub fn plain_http_port(&self) -> u16 {
        self.http_port
    }

    /// The DICOM (DIMSE) port, AE title `RAPHATEST`.
    pub fn dicom_port(&self) -> u16 {
        self.dicom_port
    }

    /// `POST /instances` of one Part 10 file; returns Orthanc's instance id.
    pub fn upload_file(&self, path: &Path) -> Result<String, HarnessError> {
        let url = format!("{}/instances", self.base_url());
        with_http(self.tls(), |c| upload(c, &url, path))
    }

    /// `POST /instances` of Part 10 bytes held in memory; returns Orthanc's instance id.
    pub fn upload_bytes(&self, bytes: &[u8]) -> Result<String, HarnessError> {
        let url = format!("{}/instances", self.base_url());
        let body = bytes.to_vec();
        with_http(self.tls(), |c| {
            post_instance(c, &url, body, Path::new("<memory>"))
        })
    }

    /// `DELETE /instances/{id}`: removes one instance (by Orthanc id) from the PACS.
    pub fn delete_instance(&self, orthanc_id: &str) -> Result<(), HarnessError> {
        let url = format!("{}/instances/{orthanc_id}", self.base_url());
        with_http(self.tls(), |c| {
            let r = c
                .delete(&url)
                .send()
                .map_err(|e| HarnessError::http(format!("DELETE {url}"), e))?;
            if !r.status().is_success() {
                return Err(HarnessError::http(format!("DELETE {url}"), r.status()));
            }
            Ok(())
        })
    }

    /// Stores the instance with this SOP Instance UID again in transfer syntax `ts`, every
    /// UID kept, as an archive that compressed it on ingest would hold it: Orthanc transcodes
    /// (`POST /instances/{id}/modify` with `Transcode`), the original is deleted and the
    /// transcoded object stored. Returns the new Orthanc id.
    pub fn transcode_in_place(
        &self,
        sop_instance_uid: &str,
        ts: &str,
    ) -> Result<String, HarnessError> {
        let id = self.instance_id(sop_instance_uid)?.ok_or_else(|| {
            HarnessError::http(
                format!("lookup {sop_instance_uid}"),
                "no such instance in Orthanc",
            )
        })?;
        let url = format!("{}/instances/{id}/modify", self.base_url());
        let body = serde_json::json!({
            "Transcode": ts,
            "Keep": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
            "Force": true,
        })
        .to_string();
        let transcoded = with_http(self.tls(), |c| {
            let r = c
                .post(&url)
                .body(body)
                .send()
                .map_err(|e| HarnessError::http(format!("POST {url}"), e))?;
            if !r.status().is_success() {
                return Err(HarnessError::http(format!("POST {url}"), r.status()));
            }
            r.bytes()
                .map(|b| b.to_vec())
                .map_err(|e| HarnessError::http(format!("POST {url}"), e))
        })?;
        self.delete_instance(&id)?;
        self.upload_bytes(&transcoded)
    }

    /// Orthanc's id of the instance with this SOP Instance UID (`POST /tools/lookup`).
    pub fn instance_id(&self, sop_instance_uid: &str) -> Result<Option<String>, HarnessError> {
        let url = format!("{}/tools/lookup", self.base_url());
        let body = sop_instance_uid.to_owned();
        with_http(self.tls(), |c| {
            let r = c
                .post(&url)
                .body(body)
                .send()
                .map_err(|e| HarnessError::http(format!("POST {url}"), e))?;
            let v: serde_json::Value = r
                .json()
                .map_err(|e| HarnessError::http(format!("POST {url}"), e))?;
            Ok(v.as_array().and_then(|hits| {
                hits.iter()
                    .find(|h| h["Type"] == "Instance")
                    .and_then(|h| h["ID"].as_str())
                    .map(str::to_owned)
            }))
        })
    }

    /// Uploads every regular file under `dir` (recursively, in name order); returns
    /// (accepted, rejected). Transport failures are errors, not rejections.
    pub fn upload_dir(&self, dir: &Path) -> Result<(usize, usize), HarnessError> {
        let files = rapha_core::fs::walk_files(dir)
            .map_err(|e| HarnessError::io(format!("list {}", e.path.display()), e.source))?;
        let url = format!("{}/instances", self.base_url());
        with_http(self.tls(), |c| {
            let (mut ok, mut bad) = (0, 0);
            for f in &files {
                match upload(c, &url, f) {
                    Ok(_) => ok += 1,
                    Err(HarnessError::Rejected { .. }) => bad += 1,
                    Err(e) => return Err(e),
                }
            }
            Ok((ok, bad))
        })
    }

    /// `GET` a path below [`Orthanc::base_url`] and parse the JSON answer (test convenience,
    /// e.g. `get_json("/dicom-web/studies?PatientID=X")`).
    pub fn get_json(&self, path_and_query: &str) -> Result<serde_json::Value, HarnessError> {
        let url = format!("{}{path_and_query}", self.base_url());
        with_http(self.tls(), |c| {
            let r = c
                .get(&url)
                .send()
                .map_err(|e| HarnessError::http(format!("GET {url}"), e))?;
            let status = r.status();
            if !status.is_success() {
                return Err(HarnessError::http(format!("GET {url}"), status));
            }
            let bytes = r
                .bytes()
                .map_err(|e| HarnessError::http(format!("GET {url}"), e))?;
            if bytes.is_empty() {
                // DICOMweb answers 204 / empty body for "no match".
                return Ok(serde_json::Value::Array(Vec::new()));
            }
            serde_json::from_slice(&bytes).map_err(|e| HarnessError::http(format!("GET {url}"), e))
        })
    }

    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    pub fn log_path(&self) -> &Path {
        self.dir.log()
    }

    /// Whether the Orthanc process is still running.
    pub fn is_running(&mut self) -> bool {
        self.proc.check_alive().is_ok()
    }
}

fn get_ok(url: &str, accept_invalid_certs: bool) -> bool {
    with_http(accept_invalid_certs, |c| {
        Ok(c.get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .is_ok_and(|r| r.status().is_success()))
    })
    .unwrap_or(false)
}

fn read(path: &Path) -> Result<Vec<u8>, HarnessError> {
    std::fs::read(path).map_err(|e| HarnessError::io(format!("read {}", path.display()), e))
}

fn upload(c: &reqwest::blocking::Client, url: &str, path: &Path) -> Result<String, HarnessError> {
    post_instance(c, url, read(path)?, path)
}

fn post_instance(
    c: &reqwest::blocking::Client,
    url: &str,
    body: Vec<u8>,
    path: &Path,
) -> Result<String, HarnessError> {
    let what = || format!("POST {url} ({})", path.display());
    let r = c
        .post(url)
        .header("Content-Type", "application/dicom")
        .body(body)
        .send()
        .map_err(|e| HarnessError::http(what(), e))?;
    let status = r.status();
    let text = r.text().map_err(|e| HarnessError::http(what(), e))?;
    if status.is_client_error() {
        return Err(HarnessError::Rejected {
            path: path.to_path_buf(),
            status: status.as_u16(),
            body: text,
        });
    }
    if !status.is_success() {
        return Err(HarnessError::http(what(), status));
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| HarnessError::http(what(), e))?;
    v.get("ID")
        .and_then(|id| id.as_str())
        .map(str::to_owned)
        .ok_or_else(|| HarnessError::http(what(), format!("no ID in answer {text}")))
}
