//! The audit trail: one append-only JSON line per security-relevant event, with the fields of
//! an IHE ATNA / DICOM PS3.15 audit message (EventIdentification, ActiveParticipant,
//! ParticipantObjectIdentification), and optionally the same event as an RFC 5424 syslog line
//! for the hospital's security monitoring.
//!
//! Events name jobs, hashed ids and digests only. A query is recorded by the digest of its
//! parameters, never by the parameters (an accession number or a patient id is PHI).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Errors of the audit trail. A node that cannot write its audit trail must stop the step
/// being audited: the event is written before the step's effect is committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("cannot open audit log {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot append to audit log {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the syslog target {target}: {source}")]
    Syslog {
        target: String,
        #[source]
        source: std::io::Error,
    },
}

/// What happened, as a DICOM (DCM) EventID code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditKind {
    /// A QIDO-RS search of the PACS (DCM 110112 "Query").
    PacsQuery,
    /// WADO-RS retrieval of instances for a run (DCM 110103 "DICOM Instances Accessed").
    PacsRetrieve,
    /// A DPO review submission, approval or rejection (DCM 110110 "Patient Record").
    DpoAction,
    /// An administrative action on the node (DCM 110100 "Application Activity").
    AdminAction,
    /// A job refused or failed (DCM 110113 "Security Alert").
    Refusal,
    /// Outputs leaving the hospital (DCM 110106 "Export").
    Release,
}

impl AuditKind {
    /// (code, display name) of the EventID in the DCM coding scheme.
    pub const fn event_id(self) -> (&'static str, &'static str) {
        match self {
            Self::PacsQuery => ("110112", "Query"),
            Self::PacsRetrieve => ("110103", "DICOM Instances Accessed"),
            Self::DpoAction => ("110110", "Patient Record"),
            Self::AdminAction => ("110100", "Application Activity"),
            Self::Refusal => ("110113", "Security Alert"),
            Self::Release => ("110106", "Export"),
        }
    }

    /// EventActionCode: C(reate), R(ead), U(pdate), D(elete), E(xecute).
    pub const fn action_code(self) -> &'static str {
        match self {
            Self::PacsQuery | Self::Refusal => "E",
            Self::PacsRetrieve | Self::Release => "R",
            Self::DpoAction | Self::AdminAction => "U",
        }
    }
}

/// EventOutcomeIndicator of PS3.15.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditOutcome {
    /// 0: success.
    Success,
    /// 4: minor failure (a refusal by policy: the system worked as designed).
    MinorFailure,
    /// 8: serious failure (a step failed).
    SeriousFailure,
}

impl AuditOutcome {
    pub const fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::MinorFailure => 4,
            Self::SeriousFailure => 8,
        }
    }
}

/// ActiveParticipant: who acted. `user_id` is a role or service name, never a person's PHI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActiveParticipant {
    #[serde(rename = "UserID")]
    pub user_id: String,
    #[serde(rename = "UserIsRequestor")]
    pub user_is_requestor: bool,
    #[serde(rename = "RoleIDCode")]
    pub role_id_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_access_point_id: Option<String>,
}

/// ParticipantObjectIdentification: what was acted on, by id type and a non-PHI id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ParticipantObject {
    /// e.g. `job`, `cohort-commitment`, `query-digest`, `output-manifest`.
    #[serde(rename = "ParticipantObjectIDTypeCode")]
    pub id_type_code: String,
    #[serde(rename = "ParticipantObjectID")]
    pub id: String,
    /// Free detail: counts, a reason, a digest. Never PHI.
    #[serde(
        rename = "ParticipantObjectDetail",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub detail: Option<String>,
}

/// One audit event (one JSON line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(rename = "EventID")]
    pub event_id: String,
    #[serde(rename = "EventIDDisplay")]
    pub event_display: String,
    #[serde(rename = "EventActionCode")]
    pub action_code: String,
    #[serde(rename = "EventDateTime")]
    pub date_time: String,
    #[serde(rename = "EventOutcomeIndicator")]
    pub outcome: u8,
    #[serde(rename = "EventOutcomeDescription")]
    pub outcome_description: String,
    #[serde(rename = "AuditSourceID")]
    pub source: String,
    #[serde(rename = "ActiveParticipant")]
    pub participants: Vec<ActiveParticipant>,
    #[serde(rename = "ParticipantObjectIdentification")]
    pub objects: Vec<ParticipantObject>,
}

impl AuditEvent {
    /// An event of `kind` now, by `actor` (role `role`), about `objects`.
    pub fn new(
        kind: AuditKind,
        outcome: AuditOutcome,
        description: impl Into<String>,
        actor: (&str, &str),
        objects: Vec<ParticipantObject>,
    ) -> Self {
        let (code, display) = kind.event_id();
        Self {
            event_id: code.to_owned(),
            event_display: display.to_owned(),
            action_code: kind.action_code().to_owned(),
            date_time: OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned()),
            outcome: outcome.code(),
            outcome_description: description.into(),
            source: String::new(),
            participants: vec![ActiveParticipant {
                user_id: actor.0.to_owned(),
                user_is_requestor: true,
                role_id_code: actor.1.to_owned(),
                network_access_point_id: None,
            }],
            objects,
        }
    }

    /// The event as an RFC 5424 syslog line: facility authpriv (10), severity notice (5)
    /// for success and warning (4) otherwise, the JSON event as MSG.
    pub fn to_syslog(&self, hostname: &str) -> String {
        let severity = if self.outcome == 0 { 5 } else { 4 };
        let pri = 10 * 8 + severity;
        let msg = serde_json::to_string(self).unwrap_or_default();
        let host = if hostname.is_empty() { "-" } else { hostname };
        format!(
            "<{pri}>1 {} {host} rapha-node {} ATNA{} - {msg}",
            self.date_time,
            std::process::id(),
            self.event_id
        )
    }
}

/// A job id as an audit object.
pub fn job_object(job: rapha_core::JobId, detail: Option<String>) -> ParticipantObject {
    ParticipantObject {
        id_type_code: "job".into(),
        id: job.to_string(),
        detail,
    }
}

/// Where syslog lines go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyslogTarget {
    /// `host:port` over UDP (RFC 5426).
    Udp(String),
    /// A local unix datagram socket such as `/dev/log`.
    Unix(PathBuf),
}

enum SyslogSink {
    Udp(UdpSocket, String),
    Unix(UnixDatagram, PathBuf),
}

/// Size at which the audit log is rotated by default (64 MiB).
pub const ROTATE_BYTES: u64 = 64 << 20;

/// The append-only audit log file, plus an optional syslog sink. When the file passes its
/// rotation size it is renamed `<name>.<UTC time>` (kept: the node deletes no audit record;
/// archiving rotated files is the hospital's log management) and a fresh file is started
/// whose first event names the file it continues.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
    rotate_bytes: u64,
    source: String,
    syslog: Option<SyslogSink>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

impl AuditLog {
    /// Opens `path` for appending (created mode 0600 if missing). `source` is the
    /// AuditSourceID (the node's name).
    ///
    /// # Errors
    /// [`AuditError::Open`], or [`AuditError::Syslog`] if the socket cannot be made.
    pub fn open(
        path: &Path,
        source: &str,
        syslog: Option<SyslogTarget>,
    ) -> Result<Self, AuditError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| AuditError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let syslog = match syslog {
            None => None,
            Some(SyslogTarget::Udp(addr)) => {
                let s = UdpSocket::bind("0.0.0.0:0").map_err(|source| AuditError::Syslog {
                    target: addr.clone(),
                    source,
                })?;
                Some(SyslogSink::Udp(s, addr))
            }
            Some(SyslogTarget::Unix(p)) => {
                let s = UnixDatagram::unbound().map_err(|source| AuditError::Syslog {
                    target: p.display().to_string(),
                    source,
                })?;
                Some(SyslogSink::Unix(s, p))
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            rotate_bytes: ROTATE_BYTES,
            source: source.to_owned(),
            syslog,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rotates the file once it passes `bytes` (default [`ROTATE_BYTES`]).
    #[must_use]
    pub fn with_rotation(mut self, bytes: u64) -> Self {
        self.rotate_bytes = bytes;
        self
    }

    /// Renames the full file aside and opens a fresh one (the lock is held by the caller).
    /// Returns the name the old file now has.
    fn rotate(&self, file: &mut File) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt;
        let stamp = OffsetDateTime::now_utc();
        let base = format!(
            "{}.{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            self.path.display(),
            stamp.year(),
            u8::from(stamp.month()),
            stamp.day(),
            stamp.hour(),
            stamp.minute(),
            stamp.second()
        );
        let mut aside = PathBuf::from(&base);
        let mut n = 1;
        while aside.exists() {
            aside = PathBuf::from(format!("{base}-{n}"));
            n += 1;
        }
        std::fs::rename(&self.path, &aside)?;
        *file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        Ok(aside)
    }

    /// Appends one event (and syncs it to disk), then sends it to syslog if configured. A
    /// syslog failure is logged, not fatal: the local file is the record.
    ///
    /// # Errors
    /// [`AuditError::Write`].
    pub fn record(&self, mut event: AuditEvent) -> Result<(), AuditError> {
        event.source.clone_from(&self.source);
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        {
            // A poisoned lock only means another thread panicked mid-write; the file handle
            // itself is still usable and appends are line-atomic for our sizes.
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            let write_err = |source| AuditError::Write {
                path: self.path.clone(),
                source,
            };
            f.write_all(&line)
                .and_then(|()| f.sync_data())
                .map_err(write_err)?;
            if f.metadata().map_err(write_err)?.len() >= self.rotate_bytes {
                let aside = self.rotate(&mut f).map_err(write_err)?;
                let mut next = AuditEvent::new(
                    AuditKind::AdminAction,
                    AuditOutcome::Success,
                    "audit log rotated: this file continues the one named",
                    ("rapha-node", "application"),
                    vec![ParticipantObject {
                        id_type_code: "audit-log".into(),
                        id: aside
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        detail: None,
                    }],
                );
                next.source.clone_from(&self.source);
                let mut first = serde_json::to_vec(&next).unwrap_or_default();
                first.push(b'\n');
                f.write_all(&first)
                    .and_then(|()| f.sync_data())
                    .map_err(write_err)?;
            }
        }
        if let Some(sink) = &self.syslog {
            let msg = event.to_syslog(&self.source);
            let sent = match sink {
                SyslogSink::Udp(s, addr) => s.send_to(msg.as_bytes(), addr.as_str()).map(|_| ()),
                SyslogSink::Unix(s, p) => s.send_to(msg.as_bytes(), p).map(|_| ()),
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, "audit event not delivered to syslog (kept in the local audit log)");
            }
        }
        Ok(())
    }

    /// Reads every event back (for tests and the auditor's tooling).
    ///
    /// # Errors
    /// [`AuditError::Open`] if the file cannot be read; malformed lines are skipped.
    pub fn read_all(path: &Path) -> Result<Vec<AuditEvent>, AuditError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_append_as_json_lines_with_atna_fields_and_reach_a_udp_syslog() {
        let dir = tempfile::tempdir().unwrap();
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let log = AuditLog::open(
            &dir.path().join("audit.jsonl"),
            "node-a",
            Some(SyslogTarget::Udp(addr)),
        )
        .unwrap();
        let job = rapha_core::JobId::random();
        log.record(AuditEvent::new(
            AuditKind::Release,
            AuditOutcome::Success,
            "2 files released",
            ("rapha-node", "application"),
            vec![job_object(job, None)],
        ))
        .unwrap();
        log.record(AuditEvent::new(
            AuditKind::Refusal,
            AuditOutcome::MinorFailure,
            "scope",
            ("rapha-node", "application"),
            vec![job_object(job, None)],
        ))
        .unwrap();
        let events = AuditLog::read_all(log.path()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_id, "110106");
        assert_eq!(events[0].action_code, "R");
        assert_eq!(events[1].outcome, 4);
        assert_eq!(events[0].source, "node-a");
        assert_eq!(events[0].objects[0].id, job.to_string());
        let raw = std::fs::read_to_string(log.path()).unwrap();
        assert!(raw.contains("\"EventOutcomeIndicator\":0"), "{raw}");
        let mut buf = [0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let line = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(line.starts_with("<85>1 "), "authpriv.notice PRI: {line}");
        assert!(line.contains("ATNA110106"), "{line}");
    }

    #[test]
    fn a_full_log_is_renamed_aside_and_the_fresh_one_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, "node-a", None)
            .unwrap()
            .with_rotation(2000);
        let job = rapha_core::JobId::random();
        for _ in 0..12 {
            log.record(AuditEvent::new(
                AuditKind::Release,
                AuditOutcome::Success,
                "1 file released",
                ("rapha-node", "application"),
                vec![job_object(job, None)],
            ))
            .unwrap();
        }
        let mut aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "audit.jsonl")
            .collect();
        aside.sort();
        assert!(!aside.is_empty(), "the log was rotated");
        assert!(
            aside.iter().all(|n| n.starts_with("audit.jsonl.2")),
            "{aside:?}"
        );
        // Nothing is lost: every release event is in one of the files.
        let mut releases = 0;
        for name in aside.iter().map(String::as_str).chain(["audit.jsonl"]) {
            let events = AuditLog::read_all(&dir.path().join(name)).unwrap();
            releases += events.iter().filter(|e| e.event_id == "110106").count();
            let size = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(size < 2000 + 1000, "{name}: {size} bytes");
        }
        assert_eq!(releases, 12);
        let current = AuditLog::read_all(&path).unwrap();
        assert_eq!(current[0].event_id, "110100");
        assert_eq!(&current[0].objects[0].id, aside.last().unwrap());
        assert_eq!(current[0].source, "node-a");
    }
}
