//! A cohort on disk: one JSON line per kept [`CohortEntry`], written while the build runs and
//! read back one entry at a time, so neither the build nor the feed holds the whole cohort.
//!
//! ```text
//!  build ─keep─▶ .NAME.spool (entry + study day, per patient: earliest day in memory)
//!        finish ─second pass: day offsets─▶ .NAME.tmp ─fsync, rename─▶ NAME  (+ CohortFileRef)
//!  run   ─CohortFile::open(NAME, ref): whole-file digest checked, line index kept─▶ get(i)
//! ```
//!
//! What stays in memory is per patient (its earliest study day) while building and per line
//! (offset, length, SHA-256: 44 bytes) while reading. The file is written atomically (a crash
//! leaves no file or the whole previous one); [`CohortFileRef`] (entries and the file's
//! SHA-256) is what the caller commits, and [`CohortFile::open`] refuses a file that does
//! not match it. Each line's own digest is checked again whenever it is read, so a file
//! changed in place after it was opened is refused too, never parsed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rapha_core::{Digest, HashedId};
use serde::{Deserialize, Serialize};

use crate::cohort::CohortEntry;
use crate::date::Date;
use crate::{DicomError, Result};

/// Longest line (one entry) a cohort file may hold: an entry is a few kilobytes; a longer
/// line is refused before it is read whole.
pub const MAX_LINE_BYTES: u64 = 1 << 20;

/// What a caller commits for a written cohort file: how many entries it holds and its SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortFileRef {
    pub entries: u64,
    pub sha256: Digest,
}

/// A spooled entry: the entry and its study's day (Julian day number), for the day offsets
/// computed when the file is finished.
#[derive(Serialize, Deserialize)]
struct Spooled {
    entry: CohortEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    study_day: Option<i32>,
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> DicomError + '_ {
    move |source| DicomError::Io {
        path: path.to_owned(),
        source,
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> DicomError {
    DicomError::CohortFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// `.NAME.suffix` beside `path`.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(suffix);
    path.with_file_name(name)
}

/// A new private (mode 0600) file, replacing any left by an earlier, interrupted build.
fn create_private(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at(path))
}

/// Writes a cohort file while the build keeps entries ([`crate::cohort::CohortBuilder`]).
pub struct CohortFileWriter {
    path: PathBuf,
    spool_path: PathBuf,
    /// `None` once finished.
    spool: Option<BufWriter<File>>,
    kept: u64,
    /// Per patient: the earliest study day kept.
    first: HashMap<HashedId, i32>,
}

impl std::fmt::Debug for CohortFileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CohortFileWriter")
            .field("path", &self.path)
            .field("kept", &self.kept)
            .finish_non_exhaustive()
    }
}

impl CohortFileWriter {
    /// Starts the file that [`CohortFileWriter::finish`] will put at `path` (nothing is at
    /// `path` until then).
    ///
    /// # Errors
    /// [`DicomError::Io`] when the spool file cannot be created.
    pub fn create(path: &Path) -> Result<Self> {
        let spool_path = beside(path, ".spool");
        let spool = BufWriter::new(create_private(&spool_path)?);
        Ok(Self {
            path: path.to_owned(),
            spool_path,
            spool: Some(spool),
            kept: 0,
            first: HashMap::new(),
        })
    }

    /// Entries kept so far.
    pub fn len(&self) -> u64 {
        self.kept
    }

    /// Whether no entry was kept.
    pub fn is_empty(&self) -> bool {
        self.kept == 0
    }

    /// Spools one kept entry.
    pub(crate) fn push(&mut self, entry: CohortEntry, study_date: Option<Date>) -> Result<()> {
        let study_day = study_date.map(Date::to_julian_day);
        if let Some(d) = study_day {
            let e = self.first.entry(entry.record.patient).or_insert(d);
            *e = (*e).min(d);
        }
        let mut line = serde_json::to_vec(&Spooled { entry, study_day })
            .map_err(|e| bad(&self.spool_path, e.to_string()))?;
        line.push(b'\n');
        let spool = self
            .spool
            .as_mut()
            .ok_or_else(|| bad(&self.spool_path, "already finished"))?;
        spool.write_all(&line).map_err(io_at(&self.spool_path))?;
        self.kept += 1;
        Ok(())
    }

    /// Second pass: each entry's day offset from its patient's earliest study, written to the
    /// file at `path` atomically (temporary file, fsync, rename, directory fsync). Returns what
    /// to commit.
    ///
    /// # Errors
    /// [`DicomError::Io`] or [`DicomError::CohortFile`]; the spool and temporary files are
    /// removed either way.
    pub fn finish(mut self) -> Result<CohortFileRef> {
        let (path, spool_path, kept) = (self.path.clone(), self.spool_path.clone(), self.kept);
        let first = std::mem::take(&mut self.first);
        let spool = self.spool.take();
        let tmp = beside(&path, ".tmp");
        let result = (|| {
            spool
                .ok_or_else(|| bad(&spool_path, "already finished"))?
                .into_inner()
                .map_err(|e| io_at(&spool_path)(e.into_error()))?;
            let mut reader = BufReader::new(File::open(&spool_path).map_err(io_at(&spool_path))?);
            let mut out = BufWriter::new(create_private(&tmp)?);
            let mut hash = Digest::hasher();
            let mut line = Vec::new();
            let mut n = 0u64;
            loop {
                line.clear();
                if read_line(&mut reader, &mut line, &spool_path)? == 0 {
                    break;
                }
                let Spooled {
                    mut entry,
                    study_day,
                } = serde_json::from_slice(&line).map_err(|e| bad(&spool_path, e.to_string()))?;
                entry.record.days_since_first_study =
                    match (study_day, first.get(&entry.record.patient)) {
                        (Some(d), Some(f)) => u32::try_from(i64::from(d) - i64::from(*f)).ok(),
                        _ => None,
                    };
                let mut bytes = serde_json::to_vec(&entry).map_err(|e| bad(&tmp, e.to_string()))?;
                bytes.push(b'\n');
                hash.update(&bytes);
                out.write_all(&bytes).map_err(io_at(&tmp))?;
                n += 1;
            }
            if n != kept {
                return Err(bad(
                    &spool_path,
                    format!("{n} entries spooled, {kept} kept"),
                ));
            }
            let f = out.into_inner().map_err(|e| io_at(&tmp)(e.into_error()))?;
            f.sync_all().map_err(io_at(&tmp))?;
            drop(f);
            std::fs::rename(&tmp, &path).map_err(io_at(&path))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_at(dir))?;
            }
            Ok(CohortFileRef {
                entries: n,
                sha256: hash.finish(),
            })
        })();
        let _ = std::fs::remove_file(&spool_path);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

impl Drop for CohortFileWriter {
    fn drop(&mut self) {
        // An abandoned build (an error, the instance cap) leaves no spool behind. After
        // `finish` the spool is already gone and this finds nothing.
        let _ = std::fs::remove_file(&self.spool_path);
    }
}

/// Reads one `\n`-terminated line (at most [`MAX_LINE_BYTES`]) into `line`, without the
/// newline. Returns the bytes consumed (0 at the end).
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, path: &Path) -> Result<usize> {
    let n = std::io::Read::take(&mut *reader, MAX_LINE_BYTES + 1)
        .read_until(b'\n', line)
        .map_err(io_at(path))?;
    if n == 0 {
        return Ok(0);
    }
    if line.last() != Some(&b'\n') {
        return Err(bad(
            path,
            if n as u64 > MAX_LINE_BYTES {
                format!("a line is longer than {MAX_LINE_BYTES} bytes")
            } else {
                "the last line is not terminated".to_owned()
            },
        ));
    }
    line.pop();
    Ok(n)
}

/// One line of an open cohort file.
#[derive(Clone, Copy)]
struct Line {
    offset: u64,
    len: u32,
    sha256: [u8; 32],
}

/// A written cohort file, checked against its [`CohortFileRef`] and read an entry at a time.
pub struct CohortFile {
    path: PathBuf,
    file: File,
    lines: Vec<Line>,
}

impl std::fmt::Debug for CohortFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CohortFile")
            .field("path", &self.path)
            .field("entries", &self.lines.len())
            .finish_non_exhaustive()
    }
}

impl CohortFile {
    /// Opens the file at `path` and checks it whole against `expected` (entry count and
    /// SHA-256) before any entry is used.
    ///
    /// # Errors
    /// [`DicomError::Io`], or [`DicomError::CohortFile`] when the file is not the committed one.
    pub fn open(path: &Path, expected: &CohortFileRef) -> Result<Self> {
        let file = File::open(path).map_err(io_at(path))?;
        let mut reader = BufReader::new(&file);
        let mut hash = Digest::hasher();
        let mut lines = Vec::new();
        let mut line = Vec::new();
        let mut offset = 0u64;
        loop {
            line.clear();
            let n = read_line(&mut reader, &mut line, path)?;
            if n == 0 {
                break;
            }
            if lines.len() as u64 >= expected.entries {
                return Err(bad(path, "it holds more entries than were committed"));
            }
            hash.update(&line);
            hash.update(b"\n");
            lines.push(Line {
                offset,
                len: u32::try_from(line.len()).map_err(|_| bad(path, "a line is too long"))?,
                sha256: *Digest::of(&line).as_bytes(),
            });
            offset += n as u64;
        }
        if lines.len() as u64 != expected.entries || hash.finish() != expected.sha256 {
            return Err(bad(path, "it is not the cohort file that was committed"));
        }
        drop(reader);
        Ok(Self {
            path: path.to_owned(),
            file,
            lines,
        })
    }

    /// Entries (after [`CohortFile::retain`]).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Entry `index`, read from the file and checked against the digest its line had when the
    /// file was opened.
    ///
    /// # Errors
    /// [`DicomError::Io`], or [`DicomError::CohortFile`] for an index past the end or a line
    /// that changed.
    pub fn get(&self, index: usize) -> Result<CohortEntry> {
        let l = self
            .lines
            .get(index)
            .ok_or_else(|| bad(&self.path, format!("no entry {index}")))?;
        let mut bytes = vec![0; l.len as usize];
        self.file
            .read_exact_at(&mut bytes, l.offset)
            .map_err(io_at(&self.path))?;
        if Digest::of(&bytes).as_bytes() != &l.sha256 {
            return Err(bad(
                &self.path,
                format!("entry {index} changed after it was opened"),
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| bad(&self.path, e.to_string()))
    }

    /// Calls `f` with every entry in order.
    ///
    /// # Errors
    /// The first error of [`CohortFile::get`] or of `f`.
    pub fn try_for_each(&self, mut f: impl FnMut(usize, CohortEntry) -> Result<()>) -> Result<()> {
        for i in 0..self.lines.len() {
            f(i, self.get(i)?)?;
        }
        Ok(())
    }

    /// Keeps only the entries for which `keep` is true (the file is not changed: the dropped
    /// entries are left out of this reader). Returns how many were dropped.
    ///
    /// # Errors
    /// The first error of [`CohortFile::get`].
    pub fn retain(&mut self, mut keep: impl FnMut(&CohortEntry) -> bool) -> Result<u64> {
        let mut kept = Vec::with_capacity(self.lines.len());
        for i in 0..self.lines.len() {
            if keep(&self.get(i)?) {
                kept.push(self.lines[i]);
            }
        }
        let dropped = (self.lines.len() - kept.len()) as u64;
        kept.shrink_to_fit();
        self.lines = kept;
        Ok(dropped)
    }

    /// Drops the entries of patients on the opt-out list as it is now (re-read from its
    /// file, like [`crate::cohort::drop_opted_out_now`]). Returns how many were dropped.
    ///
    /// # Errors
    /// [`DicomError::ListFile`] when the list cannot be re-read; the reading errors of
    /// [`CohortFile::get`].
    pub fn drop_opted_out_now(&mut self, optouts: &crate::exclusion::OptOuts) -> Result<u64> {
        let current = optouts.reload()?;
        self.retain(|e| !e.opted_out(&current))
    }
}

/// A cohort's entries for a run: held in memory, or read from a [`CohortFile`] on demand.
#[derive(Debug)]
pub enum Entries {
    Held(Vec<CohortEntry>),
    File(CohortFile),
}

impl Entries {
    /// Entries.
    pub fn len(&self) -> usize {
        match self {
            Self::Held(v) => v.len(),
            Self::File(f) => f.len(),
        }
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `index` (`Ok(None)` past the end).
    ///
    /// # Errors
    /// Those of [`CohortFile::get`].
    pub fn get(&self, index: usize) -> Result<Option<std::borrow::Cow<'_, CohortEntry>>> {
        use std::borrow::Cow;
        match self {
            Self::Held(v) => Ok(v.get(index).map(Cow::Borrowed)),
            Self::File(f) if index < f.len() => f.get(index).map(|e| Some(Cow::Owned(e))),
            Self::File(_) => Ok(None),
        }
    }

    /// Drops the entries of patients on the opt-out list as it is now
    /// ([`crate::cohort::drop_opted_out_now`]). Returns how many were dropped.
    ///
    /// # Errors
    /// [`DicomError::ListFile`] when the list cannot be re-read; reading the file.
    pub fn drop_opted_out_now(&mut self, optouts: &crate::exclusion::OptOuts) -> Result<u64> {
        match self {
            Self::Held(v) => crate::cohort::drop_opted_out_now(v, optouts),
            Self::File(f) => f.drop_opted_out_now(optouts),
        }
    }
}
