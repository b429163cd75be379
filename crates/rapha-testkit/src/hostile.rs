//! A hostile DICOMweb server on loopback: the adversary of the PACS-client tests, not a stand-in
//! for a PACS (Orthanc is the PACS). It answers every request the way a slow, broken or
//! malicious PACS could:
//!
//! - [`Behaviour::Silent`]: accepts the connection, reads the request, never answers;
//! - [`Behaviour::Trickle`]: a valid status line and headers, then one body byte per interval;
//! - [`Behaviour::EndlessBody`]: a 200 answer whose body never ends (sent at a bounded rate, so
//!   a client without a cap fills its memory slowly enough for a watchdog to see it);
//! - [`Behaviour::IgnoresOffset`]: QIDO-RS answers that ignore `offset`: the study search
//!   answers one study, and every series page is the same full page;
//! - [`Behaviour::Static`]: the same answer to every request (e.g. crafted DICOM JSON);
//! - [`Behaviour::Routes`]: a fixed answer per path (e.g. a crafted instance over WADO-RS),
//!   404 for any other path.
//!
//! Dropping the server stops every connection thread (their sockets close).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the server answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    Silent,
    Trickle {
        every: Duration,
    },
    EndlessBody {
        /// The Content-Type sent (e.g. `application/dicom+json`, or a multipart one).
        content_type: String,
        /// Bytes per second, at most.
        rate: usize,
    },
    IgnoresOffset {
        /// StudyInstanceUID of the one study the search answers.
        study_uid: String,
        /// StudyDate of that study (inside the query's range).
        study_date: String,
    },
    Static {
        content_type: String,
        body: Arc<Vec<u8>>,
    },
    /// `(path suffix, content type, body)`: the first route whose suffix ends the request
    /// path answers.
    Routes(Arc<Vec<(String, String, Vec<u8>)>>),
}

/// A WADO-RS answer: `part10` as the one part of a `multipart/related` body with boundary
/// `B`, and the Content-Type to send with it.
pub fn multipart_instance(part10: &[u8]) -> (String, Vec<u8>) {
    let mut body = b"--B\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend_from_slice(part10);
    body.extend_from_slice(b"\r\n--B--\r\n");
    (
        "multipart/related; type=\"application/dicom\"; boundary=B".to_owned(),
        body,
    )
}

/// The running server.
pub struct HostilePacs {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HostilePacs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostilePacs")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl HostilePacs {
    /// Listens on a free loopback port.
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub fn start(behaviour: Behaviour) -> std::io::Result<HostilePacs> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let stop = Arc::clone(&stop);
            let requests = Arc::clone(&requests);
            std::thread::spawn(move || {
                let mut conns = Vec::new();
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (stop, requests, b) =
                        (Arc::clone(&stop), Arc::clone(&requests), behaviour.clone());
                    conns.push(std::thread::spawn(move || {
                        let _ = serve(conn, &b, &stop, &requests);
                    }));
                }
                for c in conns {
                    let _ = c.join();
                }
            })
        };
        Ok(HostilePacs {
            port,
            stop,
            requests,
            acceptor: Some(acceptor),
        })
    }

    /// `http://127.0.0.1:PORT/dicom-web`.
    pub fn dicomweb_url(&self) -> String {
        format!("http://127.0.0.1:{}/dicom-web", self.port)
    }

    /// The request lines received so far (`GET /dicom-web/studies?… HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for HostilePacs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the acceptor, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn serve(
    conn: TcpStream,
    b: &Behaviour,
    stop: &AtomicBool,
    requests: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        // One request: the request line and headers up to the empty line.
        let mut line = String::new();
        let mut request_line = None;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Ok(_) if request_line.is_none() => request_line = Some(line.trim().to_owned()),
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        let request_line = request_line.unwrap_or_default();
        requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(request_line.clone());
        match b {
            Behaviour::Silent => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Ok(());
            }
            Behaviour::Trickle { every } => {
                out.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n\
                      Content-Length: 1048576\r\n\r\n",
                )?;
                while !stop.load(Ordering::Relaxed) {
                    out.write_all(b" ")?;
                    sleep_unless(stop, *every);
                }
                return Ok(());
            }
            Behaviour::EndlessBody { content_type, rate } => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n"
                )?;
                if content_type.starts_with("multipart/") {
                    out.write_all(b"--B\r\nContent-Type: application/dicom\r\n\r\n")?;
                } else {
                    out.write_all(b"[")?;
                }
                let chunk = vec![b' '; 64 * 1024];
                let pause = Duration::from_secs_f64(chunk.len() as f64 / (*rate).max(1) as f64);
                while !stop.load(Ordering::Relaxed) {
                    out.write_all(&chunk)?;
                    sleep_unless(stop, pause);
                }
                return Ok(());
            }
            Behaviour::Static { content_type, body } => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                )?;
                out.write_all(body)?;
            }
            Behaviour::Routes(routes) => {
                let target = request_line.split_whitespace().nth(1).unwrap_or("");
                let path = target.split('?').next().unwrap_or("");
                match routes
                    .iter()
                    .find(|(suffix, _, _)| path.ends_with(suffix.as_str()))
                {
                    Some((_, content_type, body)) => {
                        write!(
                            out,
                            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\
                             Content-Length: {}\r\n\r\n",
                            body.len()
                        )?;
                        out.write_all(body)?;
                    }
                    None => {
                        out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?
                    }
                }
            }
            Behaviour::IgnoresOffset {
                study_uid,
                study_date,
            } => {
                let body = ignores_offset_answer(&request_line, study_uid, study_date);
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                )?;
                out.write_all(body.as_bytes())?;
            }
        }
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = std::time::Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = std::time::Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// The answer of a PACS that ignores `offset`: whatever the offset, the same first page.
fn ignores_offset_answer(request_line: &str, study_uid: &str, study_date: &str) -> String {
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let limit: usize = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .min(1000);
    if path.ends_with("/studies") {
        return format!(
            r#"[{{"0020000D":{{"vr":"UI","Value":["{study_uid}"]}},"00080020":{{"vr":"DA","Value":["{study_date}"]}},"00080061":{{"vr":"CS","Value":["CT"]}}}}]"#
        );
    }
    if path.ends_with("/series") {
        let items: Vec<String> = (0..limit)
            .map(|i| {
                format!(
                    r#"{{"0020000E":{{"vr":"UI","Value":["{study_uid}.{}"]}},"00080060":{{"vr":"CS","Value":["CT"]}}}}"#,
                    i + 1
                )
            })
            .collect();
        return format!("[{}]", items.join(","));
    }
    "[]".to_owned()
}
