//! The output guard (**I4**): accepts or rejects a trainer's whole output set.
//!
//! Runs on `/out` after the trainer has exited — whether it succeeded or not — and on its
//! captured stdout/stderr. Every check that fails adds a [`Rejection`]; one rejection refuses
//! everything. Rejections name the place and the rule, never the leaked value. Places are
//! built from structure ([`Place`]: a file, and a zip entry by its index, never by its name);
//! a file's name is the trainer's own choice unless it is a declared output. So only
//! [`Rejection::rule`] (a fixed vocabulary) goes where the publisher can read it, and only
//! [`Rejection::audit_line`] (the node's words) to the hospital's audit trail; the `Display`
//! text, which quotes the trainer's names and parsers' details, is never persisted or logged.
//!
//! ```text
//!  /out entry ─▶ name rules ─▶ lstat: regular file, nlink 1 ─▶ declared? size cap
//!            ─▶ bytes: DICM@128 / dataset sniff ─▶ kind check (safetensors, onnx, zip, metrics)
//!            ─▶ streams (file + inflated zip entries + logs): identifiers, fed pixel blocks
//! ```
//!
//! The guard's own work is bounded ([`GuardBudget`]): bytes inflated from zip entries and
//! bytes searched, across every file, entry and log of the set, and wall time. A trainer can
//! make any of them large (hundreds of zip bombs, each under the output cap); past its budget
//! the guard stops and refuses the set with that budget's rule.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use rapha_core::{Digest, OutputDecl, OutputKind};
use serde::Serialize;

use crate::fingerprint::Fingerprints;
use crate::formats;
use crate::identifiers::{IdentifierHit, IdentifierKind, IdentifierSearcher, Search};

/// Streams at least this long are searched for identifiers and pixel blocks in parallel.
pub const PARALLEL_SCAN_BYTES: usize = 4 << 20;

/// Most directory entries examined in `/out`; more is itself a rejection.
pub const MAX_ENTRIES: usize = 256;

/// Where in the output set a rule fired, as the guard builds it: a file of `/out` or a
/// captured log stream, and a zip entry of it by its index in the archive. An entry's name is
/// the trainer's choice and is never part of a place, so nothing derived from a place can
/// carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Place {
    /// The file's name in `/out` (the trainer's choice unless it is a declared output), or
    /// `stdout` / `stderr`.
    pub file: String,
    /// The zip entry, by its index in the archive.
    pub entry: Option<usize>,
    /// The finding is in the entry's name rather than its bytes.
    pub in_name: bool,
}

impl Place {
    /// A whole file (or captured log stream).
    pub fn file(name: impl Into<String>) -> Self {
        Self {
            file: name.into(),
            entry: None,
            in_name: false,
        }
    }

    /// The bytes of entry `index` of the zip archive `file`.
    pub fn entry(file: impl Into<String>, index: usize) -> Self {
        Self {
            entry: Some(index),
            ..Self::file(file)
        }
    }

    /// The name of entry `index` of the zip archive `file`.
    pub fn entry_name(file: impl Into<String>, index: usize) -> Self {
        Self {
            in_name: true,
            ..Self::entry(file, index)
        }
    }

    /// The place as the audit trail shows it: the file as a declared output's name or a log
    /// stream's, else `sha256:<16 hex>` of the name the trainer chose; then `!"<entry N>"` and
    /// ` name` as the node built them.
    pub fn audit_name(&self, outputs: &[OutputDecl]) -> String {
        let node_made = outputs.iter().any(|d| d.name == self.file)
            || self.file == "stdout"
            || self.file == "stderr";
        let mut shown = if node_made {
            format!("{:?}", self.file)
        } else {
            format!(
                "sha256:{}",
                &Digest::of(self.file.as_bytes()).to_hex()[..16]
            )
        };
        if let Some(i) = self.entry {
            shown.push_str(&format!("!\"<entry {i}>\""));
        }
        if self.in_name {
            shown.push_str(" name");
        }
        shown
    }
}

/// The hospital's in-memory wording (trainer-chosen file names included): never persisted.
impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file)?;
        if let Some(i) = self.entry {
            write!(f, "!<entry {i}>")?;
        }
        if self.in_name {
            f.write_str(" name")?;
        }
        Ok(())
    }
}

/// A whole file (or log stream) of this name.
impl PartialEq<str> for Place {
    fn eq(&self, other: &str) -> bool {
        self.entry.is_none() && !self.in_name && self.file == other
    }
}

/// One reason the output set was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "rule", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rejection {
    #[error("{name:?}: DICOM file names (.dcm/.dicom) are never released")]
    DicomName { name: String },
    #[error("an output name contains a path separator, control character or is not UTF-8")]
    BadName { shown: String },
    #[error("{name:?} is not a declared output of this bundle")]
    Undeclared { name: String },
    #[error("{name:?} is a {kind}, not a regular file")]
    NotRegular { name: String, kind: String },
    #[error("{name:?} has {links} hard links; outputs must be single regular files")]
    HardLink { name: String, links: u64 },
    #[error("{name:?} is {size} bytes, over its declared cap of {cap}")]
    TooLarge { name: String, size: u64, cap: u64 },
    #[error("outputs total {size} bytes, over the bundle's total cap of {cap}")]
    TotalTooLarge { size: u64, cap: u64 },
    #[error("more than {max} entries in /out")]
    TooManyEntries { max: usize },
    #[error("{name} contains a DICOM object ({how})")]
    DicomContent { name: Place, how: String },
    #[error("{name:?} is not a valid {kind:?} file: {detail}")]
    BadFormat {
        name: String,
        kind: OutputKind,
        detail: String,
    },
    #[error("{stream} contains a raw {} of this cohort (offset {offset})", kind.label())]
    Identifier {
        stream: Place,
        kind: IdentifierKind,
        offset: usize,
    },
    #[error("{stream} contains a verbatim block of a fed record's pixels (offset {offset})")]
    PixelBlock { stream: Place, offset: usize },
    #[error("{name:?} could not be read: {detail}")]
    Unreadable { name: String, detail: String },
    #[error("{stream} exceeded its capture cap of {cap} bytes")]
    LogOverflow { stream: String, cap: usize },
    #[error(
        "the guard's {} budget ({limit} {}) ran out before the whole output set was checked",
        what.label(),
        what.unit()
    )]
    Budget { what: BudgetKind, limit: u64 },
}

impl Rejection {
    /// Every rule code [`Rejection::rule`] returns.
    pub const RULES: [&'static str; 17] = [
        "dicom-name",
        "bad-name",
        "undeclared-output",
        "not-regular-file",
        "hard-link",
        "output-over-cap",
        "outputs-over-total-cap",
        "too-many-entries",
        "dicom-content",
        "bad-format",
        "identifier",
        "pixel-block",
        "unreadable-output",
        "log-overflow",
        "inflate-budget",
        "scan-budget",
        "time-budget",
    ];

    /// The rule that refused the output, from a fixed vocabulary ([`Rejection::RULES`]):
    /// what may be recorded where the trainer's own strings (file, entry and tensor names,
    /// offsets, which identifier) must not go. The `Display` text has those details and is
    /// for the hospital's audit trail only.
    pub const fn rule(&self) -> &'static str {
        match self {
            Self::DicomName { .. } => "dicom-name",
            Self::BadName { .. } => "bad-name",
            Self::Undeclared { .. } => "undeclared-output",
            Self::NotRegular { .. } => "not-regular-file",
            Self::HardLink { .. } => "hard-link",
            Self::TooLarge { .. } => "output-over-cap",
            Self::TotalTooLarge { .. } => "outputs-over-total-cap",
            Self::TooManyEntries { .. } => "too-many-entries",
            Self::DicomContent { .. } => "dicom-content",
            Self::BadFormat { .. } => "bad-format",
            Self::Identifier { .. } => "identifier",
            Self::PixelBlock { .. } => "pixel-block",
            Self::Unreadable { .. } => "unreadable-output",
            Self::LogOverflow { .. } => "log-overflow",
            Self::Budget {
                what: BudgetKind::Inflate,
                ..
            } => "inflate-budget",
            Self::Budget {
                what: BudgetKind::Scan,
                ..
            } => "scan-budget",
            Self::Budget {
                what: BudgetKind::Time,
                ..
            } => "time-budget",
        }
    }
}

impl Rejection {
    /// The rejection as one line for the hospital's audit trail and the DPO's view: the rule,
    /// and where it fired ([`Place::audit_name`]: a declared output's name, a captured log
    /// stream, a zip entry's index, or the SHA-256 prefix of a file name the trainer chose),
    /// never the trainer's bytes: a file or entry name can carry an identifier or pixel
    /// values, and the audit trail may be shipped to an audit repository outside the PACS
    /// network. Parser details, which can quote a file's content, are withheld.
    pub fn audit_line(&self, outputs: &[OutputDecl]) -> String {
        let named = |n: &str| Place::file(n).audit_name(outputs);
        let rule = self.rule();
        match self {
            Self::DicomName { name }
            | Self::Undeclared { name }
            | Self::NotRegular { name, .. }
            | Self::HardLink { name, .. }
            | Self::TooLarge { name, .. }
            | Self::Unreadable { name, .. } => format!("{rule}: {}", named(name)),
            Self::BadName { .. } => format!("{rule}: a name that is not clean UTF-8"),
            Self::TotalTooLarge { size, cap } => format!("{rule}: {size} bytes, cap {cap}"),
            Self::TooManyEntries { max } => format!("{rule}: more than {max}"),
            Self::DicomContent { name, how } => {
                format!("{rule}: {} ({how})", name.audit_name(outputs))
            }
            Self::BadFormat { name, kind, .. } => {
                format!("{rule}: {} is not a valid {kind:?} file", named(name))
            }
            Self::Identifier {
                stream,
                kind,
                offset,
            } => format!(
                "{rule}: a raw {} in {} at offset {offset}",
                kind.label(),
                stream.audit_name(outputs)
            ),
            Self::PixelBlock { stream, offset } => {
                format!("{rule}: {} at offset {offset}", stream.audit_name(outputs))
            }
            Self::LogOverflow { stream, cap } => {
                format!("{rule}: {} over {cap} bytes", named(stream))
            }
            Self::Budget { limit, what } => format!("{rule}: {limit} {}", what.unit()),
        }
    }
}

/// Which of the guard's budgets ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BudgetKind {
    /// Bytes inflated from zip entries.
    Inflate,
    /// Bytes searched for identifiers and pixel blocks.
    Scan,
    /// Wall time.
    Time,
}

impl BudgetKind {
    const fn label(self) -> &'static str {
        match self {
            Self::Inflate => "inflate",
            Self::Scan => "scan",
            Self::Time => "time",
        }
    }

    const fn unit(self) -> &'static str {
        match self {
            Self::Inflate | Self::Scan => "bytes",
            Self::Time => "seconds",
        }
    }
}

/// Bounds on the guard's work over one output set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardBudget {
    /// Bytes read out of zip entries (stored or deflated), across every archive.
    pub inflate_bytes: u64,
    /// Bytes searched for identifiers and pixel blocks, across every stream.
    pub scan_bytes: u64,
    /// Wall time for the whole check.
    pub wall: Duration,
}

impl GuardBudget {
    /// The slowest rate the time budget allows for scanning (the guard scans ~700 MB/s on
    /// a quiet machine in a release build, docs/performance.md), so an honest set is never
    /// stopped by a busy node.
    pub const MIN_SCAN_RATE: u64 = 16 << 20;
    /// Time allowed on top of the scan itself (opening files, parsing headers).
    pub const BASE_WALL: Duration = Duration::from_secs(30);

    /// The budget for an output set under `total_cap` with `log_bytes` of captured logs:
    /// an honest set inflates at most its own size (torch archives are stored, not
    /// compressed) and is searched about three times over at most (the file, its zip entries,
    /// a pickle's strings).
    pub fn for_outputs(total_cap: u64, log_bytes: u64) -> Self {
        let scan_bytes = total_cap
            .saturating_mul(3)
            .saturating_add(log_bytes)
            .saturating_add(1 << 20);
        Self {
            inflate_bytes: total_cap.max(1 << 20),
            scan_bytes,
            wall: Self::BASE_WALL
                .saturating_add(Duration::from_secs(scan_bytes / Self::MIN_SCAN_RATE)),
        }
    }
}

/// An accepted output file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutputFile {
    pub name: String,
    pub kind: OutputKind,
    pub size: u64,
    pub digest: Digest,
}

/// The guard's decision on a whole output set, in full: for the hospital's audit trail (the
/// rejections carry trainer-chosen names and offsets; [`Verdict::rules`] does not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub accepted: bool,
    pub files: Vec<OutputFile>,
    pub rejections: Vec<Rejection>,
}

impl Verdict {
    /// The rule codes that fired, sorted and without repeats.
    pub fn rules(&self) -> Vec<&'static str> {
        let set: std::collections::BTreeSet<&'static str> =
            self.rejections.iter().map(Rejection::rule).collect();
        set.into_iter().collect()
    }
}

/// What the guard checks against.
#[derive(Debug)]
pub struct Guard<'a> {
    pub outputs: &'a [OutputDecl],
    pub total_cap: u64,
    pub identifiers: &'a IdentifierSearcher,
    pub fingerprints: &'a Fingerprints,
}

/// A captured log stream.
#[derive(Debug, Clone, Copy)]
pub struct LogStream<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
    pub overflowed: bool,
    pub cap: usize,
}

fn file_kind_name(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

fn name_is_clean(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

fn is_dicom_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".dcm") || lower.ends_with(".dicom")
}

/// Work done so far against the budget.
struct Work {
    budget: GuardBudget,
    deadline: Option<Instant>,
    inflate_left: u64,
    scanned: u64,
}

/// The budget that ran out (the check stops there).
type Spent<T = ()> = Result<T, Rejection>;

impl Work {
    fn new(budget: GuardBudget) -> Self {
        Self {
            budget,
            // A wall too long to represent is no limit on time; the byte budgets still hold.
            deadline: Instant::now().checked_add(budget.wall),
            inflate_left: budget.inflate_bytes,
            scanned: 0,
        }
    }

    fn out_of_time(&self) -> Rejection {
        Rejection::Budget {
            what: BudgetKind::Time,
            limit: self.budget.wall.as_secs(),
        }
    }

    fn time(&self) -> Spent {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(self.out_of_time());
        }
        Ok(())
    }

    /// Accounts for searching `n` more bytes.
    fn scan(&mut self, n: usize) -> Spent {
        self.time()?;
        self.scanned = self.scanned.saturating_add(n as u64);
        if self.scanned > self.budget.scan_bytes {
            return Err(Rejection::Budget {
                what: BudgetKind::Scan,
                limit: self.budget.scan_bytes,
            });
        }
        Ok(())
    }
}

impl Guard<'_> {
    /// Checks the output directory and the logs within [`GuardBudget::for_outputs`]; the
    /// whole set is accepted only if nothing is rejected.
    pub fn check(&self, out_dir: &Path, logs: &[LogStream<'_>]) -> Verdict {
        let log_bytes = logs.iter().map(|l| l.bytes.len() as u64).sum();
        self.check_within(
            out_dir,
            logs,
            GuardBudget::for_outputs(self.total_cap, log_bytes),
        )
    }

    /// [`Guard::check`] within `budget`: when a budget runs out the check stops, and the set
    /// is refused with a [`Rejection::Budget`] next to what was found until then.
    pub fn check_within(
        &self,
        out_dir: &Path,
        logs: &[LogStream<'_>],
        budget: GuardBudget,
    ) -> Verdict {
        let mut rejections = Vec::new();
        let mut files = Vec::new();
        let mut work = Work::new(budget);
        if let Err(spent) = self.check_all(out_dir, logs, &mut work, &mut files, &mut rejections) {
            tracing::warn!(
                scanned = work.scanned,
                inflated = budget.inflate_bytes - work.inflate_left,
                "the output guard stopped at its budget"
            );
            rejections.push(spent);
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Verdict {
            accepted: rejections.is_empty(),
            files,
            rejections,
        }
    }

    fn check_all(
        &self,
        out_dir: &Path,
        logs: &[LogStream<'_>],
        work: &mut Work,
        files: &mut Vec<OutputFile>,
        rejections: &mut Vec<Rejection>,
    ) -> Spent {
        let mut total = 0u64;
        let decls: BTreeMap<&str, &OutputDecl> =
            self.outputs.iter().map(|d| (d.name.as_str(), d)).collect();

        let entries = match fs::read_dir(out_dir) {
            Ok(e) => e,
            Err(e) => {
                rejections.push(Rejection::Unreadable {
                    name: "/out".into(),
                    detail: e.to_string(),
                });
                return Ok(());
            }
        };
        for (n, entry) in entries.enumerate() {
            work.time()?;
            if n >= MAX_ENTRIES {
                rejections.push(Rejection::TooManyEntries { max: MAX_ENTRIES });
                break;
            }
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    rejections.push(Rejection::Unreadable {
                        name: "/out".into(),
                        detail: e.to_string(),
                    });
                    continue;
                }
            };
            let os_name = entry.file_name();
            let Some(name) = os_name
                .to_str()
                .filter(|n| name_is_clean(n))
                .map(str::to_owned)
            else {
                rejections.push(Rejection::BadName {
                    shown: os_name
                        .to_string_lossy()
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(64)
                        .collect(),
                });
                continue;
            };
            if is_dicom_name(&name) {
                rejections.push(Rejection::DicomName { name: name.clone() });
            }
            let meta = match fs::symlink_metadata(entry.path()) {
                Ok(m) => m,
                Err(e) => {
                    rejections.push(Rejection::Unreadable {
                        name,
                        detail: e.to_string(),
                    });
                    continue;
                }
            };
            if !meta.file_type().is_file() {
                rejections.push(Rejection::NotRegular {
                    name,
                    kind: file_kind_name(&meta.file_type()).into(),
                });
                continue;
            }
            if meta.nlink() > 1 {
                rejections.push(Rejection::HardLink {
                    name: name.clone(),
                    links: meta.nlink(),
                });
            }
            let Some(decl) = decls.get(name.as_str()) else {
                rejections.push(Rejection::Undeclared { name: name.clone() });
                // Still scanned below: an undeclared file's content is evidence too.
                self.scan_file(&entry.path(), &name, None, meta.len(), work, rejections)?;
                continue;
            };
            total = total.saturating_add(meta.len());
            if meta.len() > decl.max_bytes {
                rejections.push(Rejection::TooLarge {
                    name,
                    size: meta.len(),
                    cap: decl.max_bytes,
                });
                continue;
            }
            if let Some(digest) = self.scan_file(
                &entry.path(),
                &name,
                Some(decl),
                meta.len(),
                work,
                rejections,
            )? {
                files.push(OutputFile {
                    name,
                    kind: decl.kind,
                    size: meta.len(),
                    digest,
                });
            }
        }
        if total > self.total_cap {
            rejections.push(Rejection::TotalTooLarge {
                size: total,
                cap: self.total_cap,
            });
        }
        for log in logs {
            if log.overflowed {
                rejections.push(Rejection::LogOverflow {
                    stream: log.name.into(),
                    cap: log.cap,
                });
            }
            self.scan_stream(&Place::file(log.name), log.bytes, false, work, rejections)?;
        }
        Ok(())
    }

    /// Reads one file (no symlink following, never blocking on a FIFO) and checks its bytes.
    fn scan_file(
        &self,
        path: &Path,
        name: &str,
        decl: Option<&OutputDecl>,
        size: u64,
        work: &mut Work,
        rejections: &mut Vec<Rejection>,
    ) -> Spent<Option<Digest>> {
        // Undeclared files are read only up to the total cap: enough to find leaks, bounded.
        let limit = decl.map_or(self.total_cap, |d| d.max_bytes).min(size);
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .open(path);
        // One allocation of the known size (bounded by the cap), not repeated doubling.
        let mut bytes = Vec::with_capacity(usize::try_from(limit).unwrap_or(0));
        if let Err(e) = opened.and_then(|f| f.take(limit).read_to_end(&mut bytes)) {
            rejections.push(Rejection::Unreadable {
                name: name.into(),
                detail: e.to_string(),
            });
            return Ok(None);
        }
        let before = rejections.len();
        let place = Place::file(name);
        if formats::has_dicm_magic(&bytes) {
            rejections.push(Rejection::DicomContent {
                name: place.clone(),
                how: "DICM magic at offset 128".into(),
            });
        } else if formats::looks_like_dicom_dataset(&bytes) {
            rejections.push(Rejection::DicomContent {
                name: place.clone(),
                how: "a DICOM dataset without preamble".into(),
            });
        }
        let mut digest = None;
        // Each part is searched where identifiers can be written in it: text parts for every
        // identifier, binary parts for the longer ones, and a model file's structure (tensor
        // shapes and offsets, storage keys) not for numbers (see `crate::identifiers`). The
        // digest is computed beside the search.
        match decl.map(|d| d.kind) {
            Some(OutputKind::Safetensors) if formats::check_safetensors(&bytes).is_ok() => {
                let split = formats::safetensors_data_start(&bytes);
                // The header's strings (tensor names, metadata) one by one, its numbers not;
                // its raw bytes for pixel blocks.
                work.scan(split)?;
                let mut hits = Vec::new();
                for (at, s) in formats::json_strings(&bytes[8..split]) {
                    merge_hits(&mut hits, 8 + at, self.identifiers.search(&s, Search::Text));
                }
                self.report(
                    &place,
                    hits,
                    self.fingerprints.find(&bytes[..split]),
                    rejections,
                );
                work.scan(bytes.len() - split)?;
                let (hits, pixel, d) = self.search(&bytes[split..], true, || Digest::of(&bytes));
                digest = Some(d);
                self.report(
                    &place,
                    hits.into_iter()
                        .map(|h| IdentifierHit {
                            offset: h.offset + split,
                            ..h
                        })
                        .collect(),
                    pixel,
                    rejections,
                );
            }
            Some(OutputKind::Onnx | OutputKind::PytorchZip) => {
                work.scan(bytes.len())?;
                let (hits, pixel, d) = self.search(&bytes, true, || Digest::of(&bytes));
                digest = Some(d);
                self.report(&place, hits, pixel, rejections);
            }
            _ => self.scan_stream(&place, &bytes, false, work, rejections)?,
        }
        let mut zip_entries = None;
        if formats::is_zip(&bytes) {
            let read = formats::read_zip_within(
                &bytes,
                self.total_cap,
                &mut work.inflate_left,
                work.deadline,
            );
            match read {
                Ok(entries) => {
                    self.scan_zip_entries(name, &entries, work, rejections)?;
                    zip_entries = Some(entries);
                }
                Err(formats::ZipError::Malformed(detail)) => {
                    rejections.push(Rejection::BadFormat {
                        name: name.into(),
                        kind: decl.map_or(OutputKind::PytorchZip, |d| d.kind),
                        detail,
                    })
                }
                Err(formats::ZipError::Inflate) => {
                    return Err(Rejection::Budget {
                        what: BudgetKind::Inflate,
                        limit: work.budget.inflate_bytes,
                    })
                }
                Err(formats::ZipError::Time) => return Err(work.out_of_time()),
            }
        }
        if let Some(decl) = decl {
            let format = match decl.kind {
                OutputKind::Safetensors => formats::check_safetensors(&bytes),
                OutputKind::Onnx => formats::check_onnx(&bytes),
                OutputKind::MetricsJson => formats::check_metrics_json(&bytes),
                OutputKind::PytorchZip => match &zip_entries {
                    Some(e) => formats::check_pytorch_entries(e),
                    None if formats::is_zip(&bytes) => Ok(()), // already rejected above
                    None => Err("not a zip archive".into()),
                },
                _ => Err("this output kind is not supported by this node".into()),
            };
            if let Err(detail) = format {
                rejections.push(Rejection::BadFormat {
                    name: name.into(),
                    kind: decl.kind,
                    detail,
                });
            }
        }
        Ok((rejections.len() == before).then(|| digest.unwrap_or_else(|| Digest::of(&bytes))))
    }

    /// Checks each entry of a zip archive: its name (a name the trainer chose, searched like
    /// text), DICOM content, and its bytes: pickles by their strings, JSON and version files
    /// as text, anything else (tensor storages) as binary. The archive's storage keys are its
    /// structure, not searched for numbers.
    fn scan_zip_entries(
        &self,
        name: &str,
        entries: &[formats::ZipEntry],
        work: &mut Work,
        rejections: &mut Vec<Rejection>,
    ) -> Spent {
        let keys = formats::torch_storage_keys(entries);
        for (i, e) in entries.iter().enumerate() {
            work.scan(e.name.len())?;
            let name_hits = self
                .identifiers
                .search(e.name.as_bytes(), Search::TextExcept(&keys));
            // The entry is labelled by its index: its name is the trainer's choice.
            let stream = Place::entry(name, i);
            if !name_hits.is_empty() {
                self.report(&Place::entry_name(name, i), name_hits, None, rejections);
            }
            if formats::has_dicm_magic(&e.data) || formats::looks_like_dicom_dataset(&e.data) {
                rejections.push(Rejection::DicomContent {
                    name: stream.clone(),
                    how: "a DICOM object inside a zip entry".into(),
                });
            }
            if e.name.ends_with(".pkl") {
                if let Some(strings) = formats::pickle_strings(&e.data) {
                    // Each string whole (a name glued to an opcode byte is still found), and
                    // the raw bytes for identifiers that are found anywhere.
                    work.scan(e.data.len())?;
                    work.scan(strings.iter().map(|(_, s)| s.len()).sum())?;
                    let mut hits = self.identifiers.search(&e.data, Search::AnywhereOnly);
                    for (at, s) in strings {
                        merge_hits(
                            &mut hits,
                            at,
                            self.identifiers.search(s, Search::TextExcept(&keys)),
                        );
                    }
                    self.report(&stream, hits, self.fingerprints.find(&e.data), rejections);
                    continue;
                }
            }
            let binary = !(e.name.ends_with(".pkl")
                || e.name.ends_with(".json")
                || e.name.ends_with("/version"));
            self.scan_stream(&stream, &e.data, binary, work, rejections)?;
        }
        Ok(())
    }

    /// Searches one byte stream for identifiers and fed pixel blocks.
    /// Identifier and pixel-block search over one stream; `also` (the file digest) runs beside
    /// the pixel search, which has a thread of its own for large streams.
    fn search<T: Send>(
        &self,
        bytes: &[u8],
        binary: bool,
        also: impl FnOnce() -> T + Send,
    ) -> (Vec<IdentifierHit>, Option<crate::fingerprint::PixelHit>, T) {
        if bytes.len() >= PARALLEL_SCAN_BYTES {
            std::thread::scope(|s| {
                // The pixel search is the slower one; the identifier search and `also` share
                // the other core.
                let px = s.spawn(|| self.fingerprints.find(bytes));
                let hits = self.identifiers.find_each_kind(bytes, binary);
                let t = also();
                match px.join() {
                    Ok(pixel) => (hits, pixel, t),
                    // A panic in the search thread is a bug: the stream is not cleared.
                    Err(p) => std::panic::resume_unwind(p),
                }
            })
        } else {
            let t = also();
            (
                self.identifiers.find_each_kind(bytes, binary),
                self.fingerprints.find(bytes),
                t,
            )
        }
    }

    fn scan_stream(
        &self,
        stream: &Place,
        bytes: &[u8],
        binary: bool,
        work: &mut Work,
        rejections: &mut Vec<Rejection>,
    ) -> Spent {
        work.scan(bytes.len())?;
        let (hits, pixel, ()) = self.search(bytes, binary, || ());
        self.report(stream, hits, pixel, rejections);
        Ok(())
    }

    fn report(
        &self,
        stream: &Place,
        hits: Vec<IdentifierHit>,
        pixel: Option<crate::fingerprint::PixelHit>,
        rejections: &mut Vec<Rejection>,
    ) {
        for hit in hits {
            if hit.kind == IdentifierKind::DicomMagic {
                rejections.push(Rejection::DicomContent {
                    name: stream.clone(),
                    how: format!(
                        "an embedded DICOM file meta header at offset {}",
                        hit.offset
                    ),
                });
            } else {
                rejections.push(Rejection::Identifier {
                    stream: stream.clone(),
                    kind: hit.kind,
                    offset: hit.offset,
                });
            }
        }
        if let Some(hit) = pixel {
            rejections.push(Rejection::PixelBlock {
                stream: stream.clone(),
                offset: hit.offset,
            });
        }
    }
}

/// Adds `more` (offsets relative to `base`) to `hits`, keeping the first hit of each kind.
fn merge_hits(hits: &mut Vec<IdentifierHit>, base: usize, more: Vec<IdentifierHit>) {
    for h in more {
        let offset = base.saturating_add(h.offset);
        match hits.iter_mut().find(|x| x.kind == h.kind) {
            Some(x) if x.offset <= offset => {}
            Some(x) => x.offset = offset,
            None => hits.push(IdentifierHit {
                kind: h.kind,
                offset,
            }),
        }
    }
    hits.sort_by_key(|h| h.offset);
}
