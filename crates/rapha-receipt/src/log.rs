//! The append-only RFC 9162 receipt log, persisted in SQLite.
//!
//! ```text
//!  leaves(idx, hash, data)        one row per receipt body (leaf hash = SHA-256(0x00||data))
//!  nodes(level, idx, hash)        every complete perfect subtree: leaves [idx*2^level, (idx+1)*2^level)
//!  heads(tree_size, root, ts, sig) signed tree heads
//! ```
//!
//! Each append is one SQLite transaction in WAL mode with `synchronous=FULL`: when
//! [`ReceiptLog::append`] returns, the leaf and the subtree hashes it completed are on disk, and
//! a crash before that leaves the log exactly as it was (SQLite rolls a torn WAL frame back).
//! Proofs are answered from stored perfect subtrees, so an inclusion proof costs O(log² n)
//! indexed lookups at most, whatever the size.

use std::path::{Path, PathBuf};

use rapha_core::merkle::{self, RangeHasher};
use rapha_core::Digest;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use rapha_eth::{recover_signer, tree_head_digest, Address, Signature, B256};

use crate::error::{ReceiptError, Result};
use crate::NodeKey;

/// A signed tree head: the log's size and root at a moment, signed by the node key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTreeHead {
    pub tree_size: u64,
    /// RFC 9162 root, hex.
    pub root_hash: Digest,
    /// Unix time in milliseconds.
    pub timestamp: u64,
    /// EIP-712 signature over `TreeHead(treeSize, rootHash, timestamp)`.
    pub signature: Signature,
}

impl SignedTreeHead {
    /// Signs a head.
    ///
    /// # Errors
    /// [`ReceiptError::Signing`].
    pub fn sign(key: &NodeKey, tree_size: u64, root_hash: Digest, timestamp: u64) -> Result<Self> {
        let signature = key.sign(&tree_head_digest(
            tree_size,
            B256::from(*root_hash.as_bytes()),
            timestamp,
        ))?;
        Ok(Self {
            tree_size,
            root_hash,
            timestamp,
            signature,
        })
    }

    /// The address that signed this head.
    ///
    /// # Errors
    /// [`ReceiptError::BadSignature`].
    pub fn signer(&self) -> Result<Address> {
        Ok(recover_signer(
            &tree_head_digest(
                self.tree_size,
                B256::from(*self.root_hash.as_bytes()),
                self.timestamp,
            ),
            &self.signature,
        )?)
    }

    /// Checks the head is signed by `node`.
    ///
    /// # Errors
    /// [`ReceiptError::BadSignature`], [`ReceiptError::HeadSigner`].
    pub fn verify(&self, node: &Address) -> Result<()> {
        let found = self.signer()?;
        if found != *node {
            return Err(ReceiptError::HeadSigner {
                tree_size: self.tree_size,
                found,
                expected: *node,
            });
        }
        Ok(())
    }

    /// Parses a head from JSON.
    ///
    /// # Errors
    /// [`ReceiptError::MalformedHead`].
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| ReceiptError::MalformedHead(e.to_string()))
    }
}

/// Where a leaf landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub index: u64,
    /// Log size right after the append (`index + 1` unless the leaf was already present).
    pub tree_size: u64,
    /// Root at `tree_size`.
    pub root: Digest,
    /// False when the same bytes were already in the log (idempotent re-issue).
    pub new: bool,
}

/// The persistent log.
pub struct ReceiptLog {
    conn: Connection,
    path: PathBuf,
    size: u64,
    /// Right edge of the tree: roots of the perfect subtrees that make up `size`, left to
    /// right, with their levels (the binary decomposition of `size`).
    frontier: Vec<(u32, Digest)>,
}

impl std::fmt::Debug for ReceiptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptLog")
            .field("path", &self.path)
            .field("size", &self.size)
            .finish()
    }
}

/// The log's schema history (`PRAGMA user_version`, `rapha_migrate`): version 1 is the layout
/// of the first release; a log written before versions existed is version 1.
pub const SCHEMA: rapha_migrate::sqlite::Schema = rapha_migrate::sqlite::Schema {
    store: "receipt log",
    create_v1: SCHEMA_V1,
    migrations: &[],
};

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS leaves(idx INTEGER PRIMARY KEY, hash BLOB NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS leaves_by_hash ON leaves(hash);
CREATE TABLE IF NOT EXISTS nodes(level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY(level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heads(tree_size INTEGER PRIMARY KEY, root BLOB NOT NULL,
    timestamp INTEGER NOT NULL, signature BLOB NOT NULL);
";

fn blob_digest(b: Vec<u8>) -> Option<Digest> {
    <[u8; 32]>::try_from(b.as_slice())
        .ok()
        .map(Digest::from_bytes)
}

impl ReceiptLog {
    /// Opens (creating if needed) the log at `path` and checks its shape: leaf indices are
    /// contiguous, every stored perfect subtree the size needs is present, and the latest
    /// signed head's root is what the stored tree gives at that size.
    ///
    /// # Errors
    /// [`ReceiptError::Store`], [`ReceiptError::Corrupt`].
    pub fn open(path: &Path) -> Result<Self> {
        let store = |source| ReceiptError::Store {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(store)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(store)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(store)?;
        let opened = rapha_migrate::sqlite::open(&mut conn, path, &SCHEMA)?;
        if opened.changed() {
            tracing::info!(store = SCHEMA.store, path = %path.display(), from = opened.found, to = opened.now, "store version migrated");
        }
        Self::load(conn, path)
    }

    /// Opens an existing log read-only, as it stands now: for readers beside the writer
    /// (the node's API serves heads and proofs while a job holds the writable log). The shape
    /// is checked as by [`ReceiptLog::open`], inside one read transaction, so an append or a
    /// head signed meanwhile is either wholly seen or not at all. Writes (`append`,
    /// `sign_head`) fail with [`ReceiptError::Store`].
    ///
    /// # Errors
    /// [`ReceiptError::Store`] (also for a missing file), [`ReceiptError::Corrupt`].
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let store = |source| ReceiptError::Store {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(store)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(store)?;
        conn.execute_batch("BEGIN DEFERRED").map_err(store)?;
        rapha_migrate::sqlite::check(&conn, path, &SCHEMA)?;
        let log = Self::load(conn, path)?;
        log.conn.execute_batch("COMMIT").map_err(store)?;
        Ok(log)
    }

    /// The file the log is stored in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(conn: Connection, path: &Path) -> Result<Self> {
        let store = |source| ReceiptError::Store {
            path: path.to_owned(),
            source,
        };
        let (count, max): (i64, Option<i64>) = conn
            .query_row("SELECT COUNT(*), MAX(idx) FROM leaves", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(store)?;
        let size = u64::try_from(count).unwrap_or(0);
        if max.map_or(0, |m| m + 1) != count {
            return Err(ReceiptError::Corrupt {
                path: path.to_owned(),
                reason: format!(
                    "leaf indices are not contiguous ({count} leaves, highest index {max:?})"
                ),
            });
        }
        let mut log = Self {
            conn,
            path: path.to_owned(),
            size,
            frontier: Vec::new(),
        };
        log.frontier = log.load_frontier()?;
        if let Some(head) = log.latest_head()? {
            let root = log.root_at(head.tree_size)?;
            if head.tree_size > log.size || root != head.root_hash {
                return Err(ReceiptError::Corrupt {
                    path: path.to_owned(),
                    reason: format!(
                        "the stored tree does not match its signed head of size {}",
                        head.tree_size
                    ),
                });
            }
        }
        Ok(log)
    }

    fn store_err(&self) -> impl Fn(rusqlite::Error) -> ReceiptError + '_ {
        move |source| ReceiptError::Store {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, reason: String) -> ReceiptError {
        ReceiptError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    fn load_frontier(&self) -> Result<Vec<(u32, Digest)>> {
        let mut out = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            let width = 1u64 << level;
            if self.size & width != 0 {
                let h = self.node(level, start / width)?;
                out.push((level, h));
                start += width;
            }
        }
        Ok(out)
    }

    /// The stored hash of the perfect subtree at `level` covering leaves from `idx * 2^level`.
    fn node(&self, level: u32, idx: u64) -> Result<Digest> {
        let found: Option<Vec<u8>> = if level == 0 {
            self.conn
                .prepare_cached("SELECT hash FROM leaves WHERE idx = ?1")
                .and_then(|mut s| s.query_row(params![idx as i64], |r| r.get(0)).optional())
        } else {
            self.conn
                .prepare_cached("SELECT hash FROM nodes WHERE level = ?1 AND idx = ?2")
                .and_then(|mut s| {
                    s.query_row(params![level, idx as i64], |r| r.get(0))
                        .optional()
                })
        }
        .map_err(self.store_err())?;
        found.and_then(blob_digest).ok_or_else(|| {
            self.corrupt(format!(
                "missing subtree hash at level {level}, index {idx}"
            ))
        })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Current root (`SHA-256("")` when empty).
    pub fn root(&self) -> Digest {
        let mut it = self.frontier.iter().rev();
        match it.next() {
            None => merkle::empty_root(),
            Some((_, last)) => it.fold(*last, |acc, (_, left)| merkle::node_hash(left, &acc)),
        }
    }

    /// Appends one leaf durably. If the same bytes are already in the log, returns where they
    /// are instead of appending twice (a retried job gets its original position).
    ///
    /// # Errors
    /// [`ReceiptError::Store`]; the log is unchanged on error.
    pub fn append(&mut self, data: &[u8]) -> Result<Appended> {
        let hash = merkle::leaf_hash(data);
        if let Some(index) = self.index_of(&hash, data)? {
            let tree_size = index + 1;
            return Ok(Appended {
                index,
                tree_size,
                root: self.root_at(tree_size)?,
                new: false,
            });
        }
        let index = self.size;
        self.append_batch(&[data])?;
        Ok(Appended {
            index,
            tree_size: self.size,
            root: self.root(),
            new: true,
        })
    }

    /// Appends many leaves in one durable transaction (no de-duplication). Returns the index of
    /// the first.
    ///
    /// # Errors
    /// [`ReceiptError::Store`]; nothing is appended on error.
    pub fn append_batch<T: AsRef<[u8]>>(&mut self, items: &[T]) -> Result<u64> {
        let first = self.size;
        let mut frontier = self.frontier.clone();
        let path = self.path.clone();
        let store = |source| ReceiptError::Store {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(store)?;
        {
            let mut put_leaf = tx
                .prepare_cached("INSERT INTO leaves(idx, hash, data) VALUES (?1, ?2, ?3)")
                .map_err(store)?;
            let mut put_node = tx
                .prepare_cached("INSERT INTO nodes(level, idx, hash) VALUES (?1, ?2, ?3)")
                .map_err(store)?;
            let mut size = first;
            for item in items {
                let data = item.as_ref();
                let h = merkle::leaf_hash(data);
                put_leaf
                    .execute(params![size as i64, &h.as_bytes()[..], data])
                    .map_err(store)?;
                size += 1;
                frontier.push((0, h));
                // Merge equal-level subtrees on the right edge; each merge completes a stored
                // perfect subtree.
                while frontier.len() >= 2
                    && frontier[frontier.len() - 1].0 == frontier[frontier.len() - 2].0
                {
                    let (Some((level, right)), Some((_, left))) = (frontier.pop(), frontier.pop())
                    else {
                        break; // unreachable: the loop condition saw two entries
                    };
                    let parent = merkle::node_hash(&left, &right);
                    let level = level + 1;
                    let idx = (size >> level) - 1;
                    put_node
                        .execute(params![level, idx as i64, &parent.as_bytes()[..]])
                        .map_err(store)?;
                    frontier.push((level, parent));
                }
            }
        }
        tx.commit().map_err(store)?;
        self.size = first + items.len() as u64;
        self.frontier = frontier;
        Ok(first)
    }

    fn index_of(&self, hash: &Digest, data: &[u8]) -> Result<Option<u64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT idx, data FROM leaves WHERE hash = ?1 ORDER BY idx LIMIT 1")
            .map_err(self.store_err())?;
        let row: Option<(i64, Vec<u8>)> = stmt
            .query_row(params![&hash.as_bytes()[..]], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(self.store_err())?;
        Ok(row.filter(|(_, d)| d == data).map(|(i, _)| i as u64))
    }

    /// The bytes of leaf `index`.
    ///
    /// # Errors
    /// [`ReceiptError::LogRequest`] past the end, [`ReceiptError::Store`].
    pub fn leaf(&self, index: u64) -> Result<Vec<u8>> {
        if index >= self.size {
            return Err(ReceiptError::LogRequest(format!(
                "leaf {index} is past the log size {}",
                self.size
            )));
        }
        self.conn
            .prepare_cached("SELECT data FROM leaves WHERE idx = ?1")
            .and_then(|mut s| s.query_row(params![index as i64], |r| r.get(0)))
            .map_err(self.store_err())
    }

    /// Root of the first `size` leaves.
    ///
    /// # Errors
    /// [`ReceiptError::LogRequest`] for a size past the log, storage errors.
    pub fn root_at(&self, size: u64) -> Result<Digest> {
        if size > self.size {
            return Err(ReceiptError::LogRequest(format!(
                "size {size} is past the log size {}",
                self.size
            )));
        }
        if size == 0 {
            return Ok(merkle::empty_root());
        }
        let mut t = self.tree();
        let r = t.range_root(0, size);
        t.finish(r)
    }

    /// RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves.
    ///
    /// # Errors
    /// [`ReceiptError::LogRequest`] unless `index < size <= self.size()`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Digest>> {
        if size > self.size || index >= size {
            return Err(ReceiptError::LogRequest(format!(
                "no inclusion proof for leaf {index} in size {size} (log size {})",
                self.size
            )));
        }
        let mut t = self.tree();
        let p = merkle::inclusion_proof(index, size, &mut t)
            .map_err(|e| ReceiptError::LogRequest(e.to_string()));
        t.finish(p?)
    }

    /// RFC 9162 consistency proof from `old` to `new` leaves.
    ///
    /// # Errors
    /// [`ReceiptError::LogRequest`] unless `0 < old <= new <= self.size()`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Digest>> {
        if new > self.size || old == 0 || old > new {
            return Err(ReceiptError::LogRequest(format!(
                "no consistency proof from {old} to {new} (log size {})",
                self.size
            )));
        }
        let mut t = self.tree();
        let p = merkle::consistency_proof(old, new, &mut t)
            .map_err(|e| ReceiptError::LogRequest(e.to_string()));
        t.finish(p?)
    }

    /// Signs and stores a head for the current size. A head already stored for this size is
    /// returned unchanged.
    ///
    /// # Errors
    /// [`ReceiptError::Signing`], [`ReceiptError::Store`].
    pub fn sign_head(&self, key: &NodeKey, timestamp: u64) -> Result<SignedTreeHead> {
        if let Some(h) = self.head_at(self.size)? {
            return Ok(h);
        }
        let head = SignedTreeHead::sign(key, self.size, self.root(), timestamp)?;
        self.conn
            .execute(
                "INSERT INTO heads(tree_size, root, timestamp, signature) VALUES (?1, ?2, ?3, ?4)",
                params![
                    head.tree_size as i64,
                    &head.root_hash.as_bytes()[..],
                    head.timestamp as i64,
                    &head.signature.0[..]
                ],
            )
            .map_err(self.store_err())?;
        Ok(head)
    }

    fn head_from_row(&self, r: (i64, Vec<u8>, i64, Vec<u8>)) -> Result<SignedTreeHead> {
        let root = blob_digest(r.1)
            .ok_or_else(|| self.corrupt("a stored head root is not 32 bytes".into()))?;
        let sig = <[u8; 65]>::try_from(r.3.as_slice())
            .map_err(|_| self.corrupt("a stored head signature is not 65 bytes".into()))?;
        Ok(SignedTreeHead {
            tree_size: r.0 as u64,
            root_hash: root,
            timestamp: r.2 as u64,
            signature: Signature(sig),
        })
    }

    /// The stored head of exactly `size`, if one was signed.
    ///
    /// # Errors
    /// Storage errors.
    pub fn head_at(&self, size: u64) -> Result<Option<SignedTreeHead>> {
        let row = self
            .conn
            .query_row(
                "SELECT tree_size, root, timestamp, signature FROM heads WHERE tree_size = ?1",
                params![size as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(self.store_err())?;
        row.map(|r| self.head_from_row(r)).transpose()
    }

    /// The largest signed head.
    ///
    /// # Errors
    /// Storage errors.
    pub fn latest_head(&self) -> Result<Option<SignedTreeHead>> {
        let row = self
            .conn
            .query_row(
                "SELECT tree_size, root, timestamp, signature FROM heads ORDER BY tree_size DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(self.store_err())?;
        row.map(|r| self.head_from_row(r)).transpose()
    }

    fn tree(&self) -> StoredTree<'_> {
        StoredTree {
            log: self,
            error: None,
        }
    }
}

/// [`RangeHasher`] over the stored perfect subtrees. A storage error is remembered and turned
/// into the call's result by [`StoredTree::finish`].
struct StoredTree<'a> {
    log: &'a ReceiptLog,
    error: Option<ReceiptError>,
}

impl StoredTree<'_> {
    fn finish<T>(self, value: T) -> Result<T> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(value),
        }
    }
}

impl RangeHasher for StoredTree<'_> {
    fn range_root(&mut self, start: u64, end: u64) -> Digest {
        let n = end - start;
        if n.is_power_of_two() && start % n == 0 {
            match self.log.node(n.trailing_zeros(), start / n) {
                Ok(d) => return d,
                Err(e) => {
                    self.error.get_or_insert(e);
                    return Digest::from_bytes([0; 32]);
                }
            }
        }
        let k = merkle::split_point(n);
        let left = self.range_root(start, start + k);
        let right = self.range_root(start + k, end);
        merkle::node_hash(&left, &right)
    }
}
