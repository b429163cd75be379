use std::collections::{BTreeMap, VecDeque};
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use rapha_protocol::{Dtype, Prediction, Request, MAX_REQUEST_HEADER, MAX_TRAINER_NAME};

use crate::cohort::RecordMeta;
use crate::pixels::{Pixels, Record};
use crate::{
    SdkError, MAX_IN_FLIGHT, MAX_PAGE, MAX_PAYLOAD, MAX_RESPONSE_HEADER, PROTOCOL_VERSION,
};

/// Where the socket is mounted inside the trainer's container.
pub const DEFAULT_SOCKET: &str = rapha_protocol::SOCKET_PATH_IN_CONTAINER;

/// What `hello` tells the trainer about its job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    pub job: String,
    pub records: u32,
    pub train: u32,
    pub validation: u32,
    /// `none-development` or `gramine-sgx`; a trainer must not change behaviour on it.
    pub confinement: String,
}

/// A progress report (self-reported: never used as the job's metrics).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Progress {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// The node's answer to `predict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PredictAck {
    pub accepted: u32,
    /// Validation records still without a prediction.
    pub remaining: u32,
}

/// The node's answer to `done`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoneAck {
    pub predicted: u32,
    pub validation: u32,
}

/// Fetch requests [`Client::records`] keeps in flight: enough to hide the round trip and let
/// the node decode while the trainer works, well under the protocol's limit.
pub const PREFETCH_DEPTH: usize = 8;

/// A connection to the record feed.
#[derive(Debug)]
pub struct Client<S = UnixStream> {
    /// Reads go through a buffer (length, header and small payloads in one `read`); writes
    /// go straight to the stream.
    stream: BufReader<S>,
    info: JobInfo,
    /// Set when a pipelined read failed mid-stream: responses still on the wire would be taken
    /// for answers to later requests, so every later call fails instead.
    desynchronised: bool,
}

impl Client<UnixStream> {
    /// Connects to `$RAPHA_DATA_SOCKET` (default `/rapha/data.sock`) and says hello.
    ///
    /// # Errors
    /// [`SdkError::Connect`] if the socket is not there, or any protocol error.
    pub fn connect(trainer: &str) -> Result<Self, SdkError> {
        let path =
            std::env::var(rapha_protocol::SOCKET_ENV).unwrap_or_else(|_| DEFAULT_SOCKET.into());
        Self::connect_to(Path::new(&path), trainer)
    }

    /// Connects to the socket at `path` and says hello.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn connect_to(path: &Path, trainer: &str) -> Result<Self, SdkError> {
        let stream = UnixStream::connect(path).map_err(|source| SdkError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        Self::over(stream, trainer)
    }
}

impl<S: Read + Write> Client<S> {
    /// Says hello over an already connected stream (any `Read + Write`, e.g. for tests).
    ///
    /// # Errors
    /// [`SdkError::Version`] if the node speaks another protocol, or any protocol error.
    pub fn over(stream: S, trainer: &str) -> Result<Self, SdkError> {
        let mut client = Self {
            stream: BufReader::with_capacity(64 << 10, stream),
            info: JobInfo {
                job: String::new(),
                records: 0,
                train: 0,
                validation: 0,
                confinement: String::new(),
            },
            desynchronised: false,
        };
        // The limit is in bytes: cut at the last character boundary within it.
        let mut end = trainer.len().min(MAX_TRAINER_NAME);
        while !trainer.is_char_boundary(end) {
            end -= 1;
        }
        let trainer = trainer[..end].to_owned();
        let (h, _) = client.call(
            "hello",
            &request(&Request::Hello {
                protocol: PROTOCOL_VERSION,
                trainer,
            })?,
        )?;
        let protocol = u64_field(&h, "protocol")?;
        if protocol != u64::from(PROTOCOL_VERSION) {
            return Err(SdkError::Version(protocol));
        }
        client.info = JobInfo {
            job: str_field(&h, "job")?.to_owned(),
            records: u32_field(&h, "records")?,
            train: u32_field(&h, "train")?,
            validation: u32_field(&h, "validation")?,
            confinement: str_field(&h, "confinement")?.to_owned(),
        };
        Ok(client)
    }

    /// What the node said about the job.
    pub fn info(&self) -> &JobInfo {
        &self.info
    }

    /// One page of record metadata, `offset .. offset + limit` (limit at most 1000).
    ///
    /// # Errors
    /// Any protocol error; [`SdkError::BadFrame`] for a record that does not parse.
    pub fn list(&mut self, offset: u32, limit: u32) -> Result<Vec<RecordMeta>, SdkError> {
        let limit = limit.clamp(1, MAX_PAGE as u32);
        let (h, _) = self.call(
            "list",
            &request(&Request::List {
                offset: offset as usize,
                limit: limit as usize,
            })?,
        )?;
        let records = h
            .get("records")
            .and_then(Value::as_array)
            .ok_or_else(|| SdkError::BadFrame("list response has no records array".into()))?;
        records.iter().map(RecordMeta::from_json).collect()
    }

    /// Every record's metadata, page by page.
    ///
    /// # Errors
    /// As [`Client::list`].
    pub fn list_all(&mut self) -> Result<Vec<RecordMeta>, SdkError> {
        let mut out = Vec::with_capacity(self.info.records as usize);
        while out.len() < self.info.records as usize {
            let page = self.list(out.len() as u32, MAX_PAGE as u32)?;
            if page.is_empty() {
                return Err(SdkError::BadFrame(format!(
                    "node announced {} records but listed only {}",
                    self.info.records,
                    out.len()
                )));
            }
            out.extend(page);
        }
        Ok(out)
    }

    /// Fetches one record's decoded pixels (one request, one round trip; to read many records
    /// use [`Client::records`], which keeps several requests in flight).
    ///
    /// # Errors
    /// [`SdkError::Refused`] with `unavailable` when the node could not decode that record (a
    /// trainer may skip it); [`SdkError::PayloadMismatch`] when the payload does not match the
    /// announced shape.
    pub fn fetch(&mut self, index: u32) -> Result<Record, SdkError> {
        self.check_synchronised()?;
        self.send_fetch(index)?;
        self.recv_fetch(index)
    }

    /// Fetches the records `indices` in that order, keeping up to [`PREFETCH_DEPTH`] fetch
    /// requests in flight: the node decodes and sends the next records while the trainer
    /// works on this one. Items come in the order of `indices`, each as [`Client::fetch`]
    /// would return it (an `unavailable` record is an `Err` item and the iteration goes on).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), rapha_trainer_sdk::SdkError> {
    /// # let mut client = rapha_trainer_sdk::Client::connect("t")?;
    /// # let cohort = rapha_trainer_sdk::Cohort::load(&mut client)?;
    /// for batch in cohort.train_batches(32, 0) {
    ///     for record in client.records(batch.iter().map(|m| m.index)) {
    ///         let record = record?;
    ///         // ... train on record.pixels ...
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// Dropping the iterator early reads and discards the answers still in flight, so the
    /// connection stays usable.
    pub fn records<I: IntoIterator<Item = u32>>(
        &mut self,
        indices: I,
    ) -> Records<'_, S, I::IntoIter> {
        self.records_with_depth(indices, PREFETCH_DEPTH)
    }

    /// [`Client::records`] with `depth` requests in flight (clamped to `1..=16`, the
    /// protocol's limit; 1 is lock-step).
    pub fn records_with_depth<I: IntoIterator<Item = u32>>(
        &mut self,
        indices: I,
        depth: usize,
    ) -> Records<'_, S, I::IntoIter> {
        Records {
            client: self,
            indices: indices.into_iter(),
            in_flight: VecDeque::new(),
            depth: depth.clamp(1, MAX_IN_FLIGHT),
            stopped: false,
        }
    }

    fn check_synchronised(&self) -> Result<(), SdkError> {
        if self.desynchronised {
            return Err(SdkError::Desynchronised);
        }
        Ok(())
    }

    fn send(&mut self, req: &Value) -> Result<(), SdkError> {
        let mut frame = Vec::new();
        push_frame(&mut frame, req)?;
        self.write(&frame)
    }

    fn write(&mut self, frames: &[u8]) -> Result<(), SdkError> {
        let stream = self.stream.get_mut();
        stream.write_all(frames)?;
        stream.flush()?;
        Ok(())
    }

    fn send_fetch(&mut self, index: u32) -> Result<(), SdkError> {
        self.send(&fetch_request(index)?)
    }

    fn recv(&mut self, op: &'static str) -> Result<(Value, Vec<u8>), SdkError> {
        let (h, n) = self.recv_header(op)?;
        Ok((h, read_payload(&mut self.stream, n)?))
    }

    /// Reads one answer's header and checks `ok`, leaving its `n` payload bytes (returned)
    /// on the stream. A refusal's payload, if it has one, is read and dropped.
    fn recv_header(&mut self, op: &'static str) -> Result<(Value, usize), SdkError> {
        let (h, n) = read_header(&mut self.stream)?;
        match h.get("ok").and_then(Value::as_bool) {
            Some(true) => Ok((h, n)),
            Some(false) => {
                skip_payload(&mut self.stream, n)?;
                Err(SdkError::Refused {
                    op,
                    error: h
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .chars()
                        .take(64)
                        .collect(),
                    message: h
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .chars()
                        .take(1024)
                        .collect(),
                })
            }
            None => {
                skip_payload(&mut self.stream, n)?;
                Err(SdkError::BadFrame(format!(
                    "{op} response has no boolean \"ok\""
                )))
            }
        }
    }

    /// One fetch answer; its pixel payload is read straight into the typed array. An answer
    /// that is refused or does not check out is read whole, so the connection stays in step.
    fn recv_fetch(&mut self, index: u32) -> Result<Record, SdkError> {
        let (h, n) = self.recv_header("fetch")?;
        let checked = (|| {
            if h.get("index").and_then(Value::as_u64) != Some(u64::from(index)) {
                return Err(SdkError::BadFrame(format!(
                    "fetch response is not for record {index}"
                )));
            }
            let dtype = Dtype::parse(str_field(&h, "dtype")?)?;
            let shape = shape_field(&h)?;
            let expected = shape
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d));
            if expected != Some(n) {
                return Err(SdkError::PayloadMismatch {
                    index,
                    got: n,
                    dtype: dtype.to_string(),
                    shape: shape.to_vec(),
                });
            }
            Ok((dtype, shape))
        })();
        let (dtype, shape) = match checked {
            Ok(v) => v,
            Err(e) => {
                skip_payload(&mut self.stream, n)?;
                return Err(e);
            }
        };
        Ok(Record {
            index,
            shape,
            pixels: Pixels::read_le(dtype, &mut self.stream, n)?,
        })
    }

    /// Reports progress (kept by the node as self-reported figures).
    ///
    /// # Errors
    /// Any protocol error (e.g. a non-finite loss is `bad_request`).
    pub fn progress(&mut self, p: &Progress) -> Result<(), SdkError> {
        let mut v = serde_json::to_value(p).map_err(|e| SdkError::BadFrame(e.to_string()))?;
        if let Value::Object(m) = &mut v {
            m.insert("op".into(), json!("progress"));
        }
        self.call("progress", &v).map(|_| ())
    }

    /// Submits validation scores (probability of label 1), in requests of at most 1000.
    ///
    /// # Errors
    /// [`SdkError::Refused`] with `not_validation`, `duplicate_prediction`, `bad_score`…
    pub fn predict(&mut self, scores: &[(u32, f64)]) -> Result<PredictAck, SdkError> {
        let mut ack = PredictAck {
            accepted: 0,
            remaining: self.info.validation,
        };
        for chunk in scores.chunks(MAX_PAGE) {
            let predictions = chunk
                .iter()
                .map(|&(index, score)| Prediction {
                    index: index as usize,
                    score,
                })
                .collect();
            let (h, _) = self.call("predict", &request(&Request::Predict { predictions })?)?;
            ack.accepted += u32_field(&h, "accepted")?;
            ack.remaining = u32_field(&h, "remaining")?;
        }
        Ok(ack)
    }

    /// Tells the node the trainer is finished; the node closes the connection.
    ///
    /// # Errors
    /// Any protocol error.
    pub fn done(mut self) -> Result<DoneAck, SdkError> {
        let (h, _) = self.call("done", &request(&Request::Done)?)?;
        Ok(DoneAck {
            predicted: u32_field(&h, "predicted")?,
            validation: u32_field(&h, "validation")?,
        })
    }

    fn call(&mut self, op: &'static str, req: &Value) -> Result<(Value, Vec<u8>), SdkError> {
        self.check_synchronised()?;
        self.send(req)?;
        self.recv(op)
    }
}

/// Records fetched with several requests in flight: see [`Client::records`].
#[derive(Debug)]
pub struct Records<'c, S: Read + Write, I: Iterator<Item = u32>> {
    client: &'c mut Client<S>,
    indices: I,
    /// Indices requested and not yet read, oldest first (the node answers in order).
    in_flight: VecDeque<u32>,
    depth: usize,
    /// A framing or I/O failure ended the stream.
    stopped: bool,
}

impl<S: Read + Write, I: Iterator<Item = u32>> Records<'_, S, I> {
    fn fail(&mut self, e: SdkError) -> Option<Result<Record, SdkError>> {
        self.stopped = true;
        if !self.in_flight.is_empty() {
            self.client.desynchronised = true;
        }
        Some(Err(e))
    }
}

impl<S: Read + Write, I: Iterator<Item = u32>> Iterator for Records<'_, S, I> {
    type Item = Result<Record, SdkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.stopped {
            return None;
        }
        if let Err(e) = self.client.check_synchronised() {
            return self.fail(e);
        }
        // Top up when half the requests are answered, all in one write: fewer system calls
        // on both sides, and the node still always has the next requests queued.
        if self.in_flight.len() <= self.depth / 2 {
            let mut frames = Vec::new();
            while self.in_flight.len() < self.depth {
                let Some(index) = self.indices.next() else {
                    break;
                };
                if let Err(e) = fetch_request(index).and_then(|req| push_frame(&mut frames, &req)) {
                    return self.fail(e);
                }
                self.in_flight.push_back(index);
            }
            if let Err(e) = self.client.write(&frames) {
                return self.fail(e);
            }
        }
        let index = self.in_flight.pop_front()?;
        match self.client.recv_fetch(index) {
            Ok(r) => Some(Ok(r)),
            // ok:false for this record (e.g. unavailable) or a payload that does not match
            // its shape: the frame was read whole, the connection is still in step.
            Err(e @ (SdkError::Refused { .. } | SdkError::PayloadMismatch { .. })) => Some(Err(e)),
            Err(e) => {
                self.client.desynchronised = true;
                self.fail(e)
            }
        }
    }
}

impl<S: Read + Write, I: Iterator<Item = u32>> Drop for Records<'_, S, I> {
    fn drop(&mut self) {
        // Answers already requested are read and discarded so the next call gets its own.
        while !self.stopped && !self.client.desynchronised {
            if self.in_flight.pop_front().is_none() {
                break;
            }
            if read_frame(&mut self.client.stream).is_err() {
                self.client.desynchronised = true;
            }
        }
    }
}

/// A request as the JSON object written on the wire. Going through a `Value` writes its keys
/// in the order serde_json writes any object in this build (sorted, or as declared when a
/// crate enables `preserve_order`), the bytes the SDK has always sent.
fn request(req: &Request) -> Result<Value, SdkError> {
    serde_json::to_value(req).map_err(|e| SdkError::BadFrame(e.to_string()))
}

fn fetch_request(index: u32) -> Result<Value, SdkError> {
    request(&Request::Fetch {
        index: index as usize,
    })
}

/// Appends one request frame (length and JSON header) to `out`.
fn push_frame(out: &mut Vec<u8>, req: &Value) -> Result<(), SdkError> {
    let header = serde_json::to_vec(req).map_err(|e| SdkError::BadFrame(e.to_string()))?;
    let len = u32::try_from(header.len())
        .map_err(|_| SdkError::HeaderTooLarge(header.len(), MAX_REQUEST_HEADER))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&header);
    Ok(())
}

/// Reads one frame from the node, enforcing the protocol's limits before allocating.
///
/// # Errors
/// [`SdkError::Closed`], [`SdkError::HeaderTooLarge`], [`SdkError::PayloadTooLarge`],
/// [`SdkError::BadFrame`].
pub(crate) fn read_frame(r: &mut impl Read) -> Result<(Value, Vec<u8>), SdkError> {
    let (h, n) = read_header(r)?;
    Ok((h, read_payload(r, n)?))
}

/// Reads one frame's header; returns it and its payload size, checked against the protocol's
/// limit (the payload is still on the stream).
///
/// # Errors
/// As [`read_frame`].
pub(crate) fn read_header(r: &mut impl Read) -> Result<(Value, usize), SdkError> {
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len) {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            SdkError::Closed
        } else {
            e.into()
        });
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_RESPONSE_HEADER {
        return Err(SdkError::HeaderTooLarge(len, MAX_RESPONSE_HEADER));
    }
    let mut header = vec![0u8; len];
    r.read_exact(&mut header).map_err(eof_is_closed)?;
    let h: Value = serde_json::from_slice(&header)
        .map_err(|e| SdkError::BadFrame(format!("header is not JSON: {e}")))?;
    if !h.is_object() {
        return Err(SdkError::BadFrame("header is not a JSON object".into()));
    }
    let n = match h.get("payload") {
        None => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| SdkError::BadFrame("payload is not a count".into()))?,
    };
    if n > MAX_PAYLOAD as u64 {
        return Err(SdkError::PayloadTooLarge(n as usize, MAX_PAYLOAD));
    }
    Ok((h, n as usize))
}

/// Reads `n` payload bytes (`n` within the protocol's limit).
///
/// # Errors
/// [`SdkError::Closed`] if the stream ends first, an I/O error.
pub(crate) fn read_payload(r: &mut impl Read, n: usize) -> Result<Vec<u8>, SdkError> {
    let mut payload = Vec::with_capacity(n);
    // Reads straight into the allocation (no zeroing pass over up to 512 MiB first).
    r.take(n as u64).read_to_end(&mut payload)?;
    if payload.len() != n {
        return Err(SdkError::Closed);
    }
    Ok(payload)
}

/// Reads and drops `n` payload bytes.
fn skip_payload(r: &mut impl Read, n: usize) -> Result<(), SdkError> {
    let skipped = std::io::copy(&mut r.take(n as u64), &mut std::io::sink())?;
    if skipped != n as u64 {
        return Err(SdkError::Closed);
    }
    Ok(())
}

pub(crate) fn eof_is_closed(e: std::io::Error) -> SdkError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        SdkError::Closed
    } else {
        e.into()
    }
}

pub(crate) fn str_field<'a>(h: &'a Value, key: &str) -> Result<&'a str, SdkError> {
    h.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| SdkError::BadFrame(format!("missing string field {key:?}")))
}

pub(crate) fn u64_field(h: &Value, key: &str) -> Result<u64, SdkError> {
    h.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| SdkError::BadFrame(format!("missing integer field {key:?}")))
}

pub(crate) fn u32_field(h: &Value, key: &str) -> Result<u32, SdkError> {
    u32::try_from(u64_field(h, key)?)
        .map_err(|_| SdkError::BadFrame(format!("field {key:?} out of range")))
}

pub(crate) fn shape_field(h: &Value) -> Result<[usize; 4], SdkError> {
    let arr = h
        .get("shape")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 4)
        .ok_or_else(|| {
            SdkError::BadFrame("shape must be [frames, rows, columns, samples]".into())
        })?;
    let mut out = [0usize; 4];
    for (o, v) in out.iter_mut().zip(arr) {
        *o = v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .filter(|&x| x <= 1 << 20)
            .ok_or_else(|| SdkError::BadFrame("shape entries must be integers <= 2^20".into()))?;
    }
    Ok(out)
}
