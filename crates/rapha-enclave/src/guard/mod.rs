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

use rapha_core::release::ReleaseTransform;
use rapha_core::{Digest, OutputDecl, OutputKind};
use serde::Serialize;

use crate::fingerprint::Fingerprints;
use crate::formats;
use crate::identifiers::{IdentifierHit, IdentifierKind, IdentifierSearcher, Search};

mod budget;
mod rejection;
pub mod release;

pub use budget::{BudgetKind, GuardBudget};
use budget::{Spent, Work};
pub use rejection::{Place, Rejection};

/// Streams at least this long are searched for identifiers and pixel blocks in parallel.
pub const PARALLEL_SCAN_BYTES: usize = 4 << 20;

/// Most directory entries examined in `/out`; more is itself a rejection.
pub const MAX_ENTRIES: usize = 256;

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

    /// Re-serialises an accepted set ([`release`]): returns the verdict on what leaves (the
    /// node's files, their sizes and digests; or the rejections that refuse the set) and the
    /// node's bytes of each file, in the verdict's order. A refused `verdict` is returned as
    /// it is.
    pub fn release(&self, out_dir: &Path, verdict: Verdict) -> (Verdict, Vec<Vec<u8>>) {
        self.release_at(out_dir, verdict, ReleaseTransform::DECLARED)
    }

    /// [`Guard::release`] with the declared float tensors rounded and noised as `transform`
    /// says (the DPO's `[policy.outputs] release_precision` and `release_noise_k`,
    /// [`release::transform_tensor`]): the released bytes and digests are the transformed ones.
    pub fn release_at(
        &self,
        out_dir: &Path,
        verdict: Verdict,
        transform: ReleaseTransform,
    ) -> (Verdict, Vec<Vec<u8>>) {
        release::release(self.outputs, out_dir, verdict, transform)
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
