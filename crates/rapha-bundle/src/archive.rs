//! The bundle archive: how a signed bundle travels to a hospital node (`POST /v1/bundles`).
//!
//! A plain POSIX (ustar) tar of the bundle directory, holding only the bundle layout:
//!
//! ```text
//! oci-layout  index.json  signature.dsse.json     regular files
//! blobs/  blobs/sha256/                           directories (optional in the archive)
//! blobs/sha256/<64 lowercase hex>                 regular files hashing to their name
//! ```
//!
//! [`pack_bundle`] writes it deterministically (sorted, mtime 0, uid/gid 0, fixed modes).
//! [`unpack_bundle_archive`] reads the bytes an outsider sent, so it reads the tar blocks
//! itself rather than trusting a general-purpose extractor, and refuses — each with its own
//! [`BundleError`] variant — absolute paths, `..`, names outside the layout, symlinks, hard
//! links, devices, FIFOs, extension headers, duplicate entries, bad header checksums, a
//! truncated stream, data after the end marker, and more entries or bytes than the
//! [`ArchiveLimits`]. Files are created with fixed modes in a fresh directory and never through
//! an existing name. The archive carries no trust: the unpacked directory still has to pass
//! [`crate::verify_bundle`].
//!
//! # Why its own block loop
//!
//! Writing uses the `tar` crate, and reading uses its header layout (`tar::Header`); only the
//! loop over the 512-byte blocks is ours. `tar::Archive::entries` is built to extract what it
//! can: by default it folds GNU long-name and PAX extension headers into the entry that
//! follows, and it ends at the first zero block without looking at what comes after. A
//! reader of an outsider's bytes must refuse those instead. The loop can go if the crate's raw
//! entries (`Entries::raw`, which hands over extension headers as entries) together with a
//! check of the bytes after the end marker give every refusal above, with the hostile-archive
//! tests (`tests/archive.rs`) passing unchanged.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use crate::error::{BundleError, Result};
use crate::ENVELOPE_FILE;
use rapha_core::DigestWriter;

/// Tar block size.
const BLOCK: usize = 512;

/// The regular files of a bundle besides its blobs.
const TOP_FILES: [&str; 3] = ["oci-layout", "index.json", ENVELOPE_FILE];

/// Limits on an archive from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Most entries (files and directories).
    pub max_entries: u64,
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Largest sum of file sizes.
    pub max_total_bytes: u64,
}

impl Default for ArchiveLimits {
    /// 1024 entries, 2 GiB per file and in total.
    fn default() -> Self {
        Self {
            max_entries: 1024,
            max_file_bytes: 2 << 30,
            max_total_bytes: 2 << 30,
        }
    }
}

/// What an unpacked archive held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Entries read (files and directories).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Sum of the files' sizes.
    pub bytes: u64,
}

/// Where an entry name puts it in the bundle layout.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Slot {
    /// The bundle root (`./`), the `blobs` or `blobs/sha256` directory.
    Dir(&'static str),
    /// A top-level file or `blobs/sha256/<hex>`.
    File(String),
}

/// Maps an entry name onto the layout, refusing everything else.
fn slot(raw: &[u8]) -> Result<Slot> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    if raw.first() == Some(&b'/') {
        return Err(BundleError::ArchiveAbsolutePath(shown()));
    }
    if raw.split(|b| *b == b'/').any(|c| c == b"..") {
        return Err(BundleError::ArchivePathTraversal(shown()));
    }
    let unexpected = || BundleError::ArchiveUnexpectedEntry {
        path: shown(),
        reason: "a bundle archive holds only oci-layout, index.json, signature.dsse.json \
                 and blobs/sha256/<hex>",
    };
    let name = std::str::from_utf8(raw).map_err(|_| unexpected())?;
    let name = name.strip_prefix("./").unwrap_or(name);
    Ok(match name {
        "" | "." => Slot::Dir(""),
        "blobs" | "blobs/" => Slot::Dir("blobs"),
        "blobs/sha256" | "blobs/sha256/" => Slot::Dir("blobs/sha256"),
        n if TOP_FILES.contains(&n) => Slot::File(n.to_owned()),
        n => match n.strip_prefix("blobs/sha256/") {
            Some(hex)
                if hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Slot::File(n.to_owned())
            }
            _ => return Err(unexpected()),
        },
    })
}

/// Writes the bundle at `dir` to `out` as a bundle archive; returns the bytes written.
///
/// # Errors
/// [`BundleError::ArchiveUnexpectedEntry`] if the directory holds anything besides the bundle
/// layout (a stray file would be refused by the node, so it is refused here first),
/// [`BundleError::UnsupportedSource`] for a link or special file in place of a bundle file,
/// I/O errors.
pub fn pack_bundle(dir: &Path, out: impl Write) -> Result<u64> {
    let mut files: Vec<String> = Vec::new();
    for name in sorted_names(dir)? {
        let path = dir.join(&name);
        let meta = std::fs::symlink_metadata(&path).map_err(BundleError::io(&path))?;
        if name == "blobs" && meta.is_dir() {
            for sub in sorted_names(&path)? {
                let sub_path = path.join(&sub);
                let m = std::fs::symlink_metadata(&sub_path).map_err(BundleError::io(&sub_path))?;
                if sub != "sha256" || !m.is_dir() {
                    return Err(BundleError::ArchiveUnexpectedEntry {
                        path: format!("blobs/{sub}"),
                        reason: "a bundle's blobs directory holds only sha256/",
                    });
                }
                for blob in sorted_names(&sub_path)? {
                    files.push(format!("blobs/sha256/{blob}"));
                }
            }
            continue;
        }
        files.push(name);
    }
    let mut counted = CountingWriter { inner: out, n: 0 };
    let mut builder = tar::Builder::new(&mut counted);
    for d in ["blobs", "blobs/sha256"] {
        if dir.join(d).is_dir() {
            let mut h = ustar_header(tar::EntryType::Directory, 0o755, 0);
            builder
                .append_data(&mut h, format!("{d}/"), std::io::empty())
                .map_err(BundleError::io(dir.join(d)))?;
        }
    }
    for name in files {
        if !matches!(slot(name.as_bytes())?, Slot::File(_)) {
            return Err(BundleError::ArchiveUnexpectedEntry {
                path: name,
                reason: "not a file of the bundle layout",
            });
        }
        let path = dir.join(&name);
        let meta = std::fs::symlink_metadata(&path).map_err(BundleError::io(&path))?;
        if !meta.file_type().is_file() {
            return Err(BundleError::UnsupportedSource {
                path,
                kind: "link, directory or special file",
            });
        }
        let file = File::open(&path).map_err(BundleError::io(&path))?;
        let mut h = ustar_header(tar::EntryType::Regular, 0o644, meta.len());
        builder
            .append_data(&mut h, &name, file)
            .map_err(BundleError::io(&path))?;
    }
    builder.finish().map_err(BundleError::io(dir))?;
    drop(builder);
    counted.inner.flush().map_err(BundleError::io(dir))?;
    Ok(counted.n)
}

/// [`pack_bundle`] into memory.
///
/// # Errors
/// As [`pack_bundle`].
pub fn pack_bundle_to_vec(dir: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    pack_bundle(dir, &mut out)?;
    Ok(out)
}

fn sorted_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(BundleError::io(dir))? {
        let e = e.map_err(BundleError::io(dir))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return Err(BundleError::ArchiveUnexpectedEntry {
                path: name.to_string_lossy().into_owned(),
                reason: "not a file of the bundle layout",
            });
        };
        names.push(name.to_owned());
    }
    names.sort();
    Ok(names)
}

fn ustar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

struct CountingWriter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads exactly one block; `Ok(false)` at a clean end of input before any byte of it.
fn read_block(r: &mut dyn Read, buf: &mut [u8; BLOCK]) -> Result<bool> {
    let mut got = 0;
    while got < BLOCK {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BundleError::ArchiveRead(e.to_string())),
        }
    }
    match got {
        0 => Ok(false),
        BLOCK => Ok(true),
        _ => Err(BundleError::ArchiveTruncated),
    }
}

/// The header checksum as POSIX defines it: the byte sum with the checksum field as spaces.
fn checksum_ok(block: &[u8; BLOCK], header: &tar::Header) -> bool {
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    header.cksum().is_ok_and(|c| u64::from(c) == sum)
}

/// Unpacks a bundle archive from `input` into `dest`, which must not exist or be empty; on
/// any error `dest` is removed, so no partial bundle is left behind.
///
/// # Errors
/// One variant per refusal: [`BundleError::ArchiveAbsolutePath`],
/// [`BundleError::ArchivePathTraversal`], [`BundleError::ArchiveUnexpectedEntry`],
/// [`BundleError::ArchiveSymlink`], [`BundleError::ArchiveHardLink`],
/// [`BundleError::ArchiveSpecialFile`], [`BundleError::ArchiveUnsupportedType`],
/// [`BundleError::ArchiveDuplicateEntry`], [`BundleError::ArchiveBadHeader`],
/// [`BundleError::ArchiveTruncated`], [`BundleError::ArchiveTrailingData`],
/// [`BundleError::ArchiveTooManyEntries`], [`BundleError::ArchiveFileTooLarge`],
/// [`BundleError::ArchiveTooLarge`], [`BundleError::BlobDigestMismatch`],
/// [`BundleError::OutputExists`], I/O errors.
pub fn unpack_bundle_archive(
    input: &mut dyn Read,
    dest: &Path,
    limits: &ArchiveLimits,
) -> Result<ArchiveSummary> {
    crate::oci::fresh_dir(dest)?;
    let result = unpack_into(input, dest, limits);
    if result.is_err() {
        if let Err(e) = std::fs::remove_dir_all(dest) {
            tracing::warn!(path = %dest.display(), error = %e, "cannot remove a partial bundle");
        }
    }
    result
}

fn unpack_into(
    input: &mut dyn Read,
    dest: &Path,
    limits: &ArchiveLimits,
) -> Result<ArchiveSummary> {
    let mut summary = ArchiveSummary {
        entries: 0,
        files: 0,
        bytes: 0,
    };
    let mut seen: HashSet<Slot> = HashSet::new();
    let mut block = [0u8; BLOCK];
    loop {
        if !read_block(input, &mut block)? {
            // End of input without the two zero blocks that close a tar.
            return Err(BundleError::ArchiveTruncated);
        }
        if block.iter().all(|b| *b == 0) {
            if !read_block(input, &mut block)? {
                return Err(BundleError::ArchiveTruncated);
            }
            if block.iter().any(|b| *b != 0) {
                return Err(BundleError::ArchiveBadHeader(
                    "a zero block followed by a header: the end marker is two zero blocks".into(),
                ));
            }
            break;
        }
        summary.entries += 1;
        if summary.entries > limits.max_entries {
            return Err(BundleError::ArchiveTooManyEntries {
                limit: limits.max_entries,
            });
        }
        let header = tar::Header::from_byte_slice(&block);
        if !checksum_ok(&block, header) {
            return Err(BundleError::ArchiveBadHeader(format!(
                "entry {} has a bad header checksum",
                summary.entries
            )));
        }
        if header.as_ustar().is_none() {
            return Err(BundleError::ArchiveBadHeader(format!(
                "entry {} is not a POSIX ustar header (pack the bundle with `rapha job submit` \
                 or `tar --format=ustar`)",
                summary.entries
            )));
        }
        let raw = header.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let size = header
            .entry_size()
            .map_err(|e| BundleError::ArchiveBadHeader(format!("{shown:?}: {e}")))?;
        match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Directory => {}
            tar::EntryType::Symlink => return Err(BundleError::ArchiveSymlink(shown)),
            tar::EntryType::Link => return Err(BundleError::ArchiveHardLink(shown)),
            tar::EntryType::Char => {
                return Err(BundleError::ArchiveSpecialFile {
                    path: shown,
                    kind: "character device",
                })
            }
            tar::EntryType::Block => {
                return Err(BundleError::ArchiveSpecialFile {
                    path: shown,
                    kind: "block device",
                })
            }
            tar::EntryType::Fifo => {
                return Err(BundleError::ArchiveSpecialFile {
                    path: shown,
                    kind: "FIFO",
                })
            }
            other => {
                return Err(BundleError::ArchiveUnsupportedType {
                    path: shown,
                    kind: char::from(other.as_byte()),
                })
            }
        }
        let slot = slot(&raw)?;
        let is_dir = header.entry_type() == tar::EntryType::Directory;
        match (&slot, is_dir) {
            (Slot::Dir(_), true) if size == 0 => {}
            (Slot::File(_), false) => {}
            _ => {
                return Err(BundleError::ArchiveUnexpectedEntry {
                    path: shown,
                    reason: "a directory of the bundle layout must be a directory entry and a \
                             file a regular file",
                })
            }
        }
        if !seen.insert(slot.clone()) {
            return Err(BundleError::ArchiveDuplicateEntry(shown));
        }
        if let Slot::File(name) = slot {
            if size > limits.max_file_bytes {
                return Err(BundleError::ArchiveFileTooLarge {
                    path: shown,
                    limit: limits.max_file_bytes,
                });
            }
            summary.bytes = summary.bytes.saturating_add(size);
            if summary.bytes > limits.max_total_bytes {
                return Err(BundleError::ArchiveTooLarge {
                    limit: limits.max_total_bytes,
                });
            }
            write_file(input, dest, &name, size)?;
            summary.files += 1;
        }
    }
    // Writers pad a tar to a record size with zeros; anything else after the end is refused.
    let mut rest = [0u8; 8192];
    loop {
        let n = match input.read(&mut rest) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BundleError::ArchiveRead(e.to_string())),
        };
        if n == 0 {
            break;
        }
        if rest[..n].iter().any(|b| *b != 0) {
            return Err(BundleError::ArchiveTrailingData);
        }
    }
    Ok(summary)
}

/// Copies `size` bytes (plus the padding to the next block) from `input` to `dest/name`,
/// checking a blob's content against its name.
fn write_file(input: &mut dyn Read, dest: &Path, name: &str, size: u64) -> Result<()> {
    let path = dest.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(BundleError::io(parent))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(BundleError::io(&path))?;
    let mut hasher = DigestWriter::default();
    let mut left = size;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = match input.read(&mut buf[..want]) {
            Ok(0) => return Err(BundleError::ArchiveTruncated),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BundleError::ArchiveRead(e.to_string())),
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(BundleError::io(&path))?;
        left -= n as u64;
    }
    let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
    let mut padding = [0u8; BLOCK];
    let mut got = 0;
    while got < pad {
        match input.read(&mut padding[got..pad]) {
            Ok(0) => return Err(BundleError::ArchiveTruncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BundleError::ArchiveRead(e.to_string())),
        }
    }
    file.sync_all().map_err(BundleError::io(&path))?;
    if let Some(hex) = name.strip_prefix("blobs/sha256/") {
        let actual = hasher.finish();
        if actual.to_hex() != hex {
            return Err(BundleError::BlobDigestMismatch {
                expected: format!("sha256:{hex}"),
                actual,
            });
        }
    }
    Ok(())
}
