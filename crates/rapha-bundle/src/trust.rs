//! The hospital's trust store: which publishers' keys may sign which trainers, until when.
//!
//! A directory with one TOML file per publisher, `<name>.toml`, so an admin can read, diff and
//! back it up:
//!
//! ```toml
//! name = "acme-ai"
//! key = """
//! -----BEGIN PUBLIC KEY-----
//! MCowBQYDK2VwAyEA...
//! -----END PUBLIC KEY-----
//! """
//! keyid = "3f1c..."              # informational; recomputed from `key` on load
//! trainers = ["lesion-classifier"] # or ["*"] for any trainer
//! expires = "2027-06-30T00:00:00Z" # optional
//! revoked = false                  # `rapha-node trust remove --revoke` sets it
//! ```
//!
//! Revocation either deletes the file (the key becomes unknown) or marks it revoked, which
//! keeps the record and makes every bundle it signed fail with a revoked-key error.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{BundleError, Result};
use crate::keys::PublicKey;

/// The wildcard in `trainers` that allows any trainer name.
pub const ANY_TRAINER: &str = "*";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    name: String,
    key: String,
    #[serde(default)]
    keyid: String,
    trainers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(default)]
    revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
}

/// One trusted publisher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedPublisher {
    pub name: String,
    pub key: PublicKey,
    /// Trainer names this key may sign; `*` allows any.
    pub trainers: Vec<String>,
    pub expires: Option<OffsetDateTime>,
    pub revoked: bool,
}

impl TrustedPublisher {
    /// Whether this publisher may sign `trainer`.
    pub fn allows(&self, trainer: &str) -> bool {
        self.trainers
            .iter()
            .any(|t| t == ANY_TRAINER || t == trainer)
    }

    /// The key id.
    pub fn keyid(&self) -> String {
        self.key.keyid()
    }
}

/// A loaded trust store.
#[derive(Clone, Debug)]
pub struct TrustStore {
    dir: PathBuf,
    publishers: Vec<TrustedPublisher>,
}

/// Checks a publisher name (it is also a file name).
///
/// # Errors
/// [`BundleError::InvalidName`].
pub fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(BundleError::InvalidName(name.to_owned()))
    }
}

/// Parses an RFC 3339 time.
///
/// # Errors
/// [`BundleError::InvalidExpiry`].
pub fn parse_time(s: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| BundleError::InvalidExpiry(s.to_owned()))
}

pub(crate) fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

impl TrustStore {
    /// Loads every `*.toml` in `dir`.
    ///
    /// # Errors
    /// [`BundleError::Io`] if the directory cannot be read, [`BundleError::TrustEntry`] for a
    /// malformed entry, [`BundleError::DuplicateKey`] if one key is trusted under two names.
    pub fn open(dir: &Path) -> Result<Self> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(BundleError::io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut publishers: Vec<TrustedPublisher> = Vec::new();
        for path in paths {
            let p = load_entry(&path)?;
            if let Some(first) = publishers.iter().find(|q| q.key == p.key) {
                return Err(BundleError::DuplicateKey {
                    first: first.name.clone(),
                    second: p.name,
                });
            }
            publishers.push(p);
        }
        Ok(Self {
            dir: dir.to_owned(),
            publishers,
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// All publishers, sorted by name.
    pub fn publishers(&self) -> &[TrustedPublisher] {
        &self.publishers
    }

    /// The publisher whose key has the key id `keyid` (no two entries share a key).
    pub fn by_keyid(&self, keyid: &str) -> Option<&TrustedPublisher> {
        if keyid.is_empty() {
            return None;
        }
        self.publishers.iter().find(|p| p.keyid() == keyid)
    }

    /// Adds a publisher, creating the directory if needed.
    ///
    /// # Errors
    /// [`BundleError::InvalidName`], [`BundleError::PublisherExists`],
    /// [`BundleError::DuplicateKey`], I/O errors.
    pub fn add(
        dir: &Path,
        name: &str,
        key: &PublicKey,
        trainers: &[String],
        expires: Option<OffsetDateTime>,
    ) -> Result<TrustedPublisher> {
        check_name(name)?;
        std::fs::create_dir_all(dir).map_err(BundleError::io(dir))?;
        let store = Self::open(dir)?;
        if let Some(p) = store.publishers.iter().find(|p| p.key == *key) {
            return Err(BundleError::DuplicateKey {
                first: p.name.clone(),
                second: name.into(),
            });
        }
        let trainers = if trainers.is_empty() {
            vec![ANY_TRAINER.to_owned()]
        } else {
            trainers.to_vec()
        };
        let entry = EntryFile {
            name: name.into(),
            key: key.to_pem(),
            keyid: key.keyid(),
            trainers: trainers.clone(),
            expires: expires.map(fmt_time),
            revoked: false,
            revoked_at: None,
        };
        let path = dir.join(format!("{name}.toml"));
        let text = toml::to_string(&entry).map_err(|e| BundleError::TrustEntry {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => BundleError::PublisherExists(name.into()),
                _ => BundleError::Io {
                    path: path.clone(),
                    source: e,
                },
            })?;
        f.write_all(text.as_bytes())
            .map_err(BundleError::io(&path))?;
        f.sync_all().map_err(BundleError::io(&path))?;
        tracing::info!(publisher = name, keyid = %key.keyid(), "trusted publisher added");
        Ok(TrustedPublisher {
            name: name.into(),
            key: key.clone(),
            trainers,
            expires,
            revoked: false,
        })
    }

    /// Deletes a publisher's entry: its key becomes unknown.
    ///
    /// # Errors
    /// [`BundleError::PublisherNotFound`], I/O errors.
    pub fn remove(dir: &Path, name: &str) -> Result<()> {
        check_name(name)?;
        let path = dir.join(format!("{name}.toml"));
        std::fs::remove_file(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BundleError::PublisherNotFound(name.into()),
            _ => BundleError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        tracing::info!(publisher = name, "trusted publisher removed");
        Ok(())
    }

    /// Marks a publisher's key revoked, keeping the record.
    ///
    /// # Errors
    /// [`BundleError::PublisherNotFound`], I/O errors.
    pub fn revoke(dir: &Path, name: &str, now: OffsetDateTime) -> Result<()> {
        check_name(name)?;
        let path = dir.join(format!("{name}.toml"));
        if !path.exists() {
            return Err(BundleError::PublisherNotFound(name.into()));
        }
        let text = std::fs::read_to_string(&path).map_err(BundleError::io(&path))?;
        let mut entry: EntryFile = toml::from_str(&text).map_err(|e| BundleError::TrustEntry {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        entry.revoked = true;
        entry.revoked_at = Some(fmt_time(now));
        let text = toml::to_string(&entry).map_err(|e| BundleError::TrustEntry {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        rapha_core::fs::write_atomic(&path, text.as_bytes()).map_err(BundleError::io(&path))?;
        tracing::info!(publisher = name, "trusted publisher revoked");
        Ok(())
    }
}

fn load_entry(path: &Path) -> Result<TrustedPublisher> {
    let bad = |reason: String| BundleError::TrustEntry {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(BundleError::io(path))?;
    let e: EntryFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    check_name(&e.name).map_err(|err| bad(err.to_string()))?;
    if path.file_stem().is_none_or(|s| s != e.name.as_str()) {
        return Err(bad(format!(
            "the file name does not match name = {:?}",
            e.name
        )));
    }
    let key = PublicKey::from_pem(&e.key, path)?;
    if !e.keyid.is_empty() && e.keyid != key.keyid() {
        return Err(bad(format!(
            "keyid {} does not match the key ({})",
            e.keyid,
            key.keyid()
        )));
    }
    if e.trainers.is_empty() {
        return Err(bad("trainers is empty; list trainer names or \"*\"".into()));
    }
    let expires = e.expires.as_deref().map(parse_time).transpose()?;
    Ok(TrustedPublisher {
        name: e.name,
        key,
        trainers: e.trainers,
        expires,
        revoked: e.revoked,
    })
}
