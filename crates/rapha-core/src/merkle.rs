//! RFC 9162 §2.1 Merkle tree hashing, shared by the cohort commitment and the receipt log.
//!
//! - leaf hash `SHA-256(0x00 || d)`, node hash `SHA-256(0x01 || left || right)`;
//! - the root of `n` leaves splits at `k`, the largest power of two smaller than `n`;
//! - inclusion proofs (§2.1.3) and consistency proofs (§2.1.4), generated and verified.
//!
//! Generation is written against a [`RangeHasher`]: anything that can give the root of the
//! leaves `[start, end)`. [`LeafHashes`] does it by recomputation (fine for a cohort); the
//! receipt log answers from stored subtree hashes so proofs stay fast at millions of leaves.

use sha2::{Digest as _, Sha256};

use crate::error::CoreError;
use crate::Digest;

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    Digest::from_bytes(h.finalize().into())
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.as_bytes());
    h.update(right.as_bytes());
    Digest::from_bytes(h.finalize().into())
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Digest {
    Digest::of(b"")
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
pub fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Gives the Merkle root of the leaves `[start, end)`, `start < end`.
pub trait RangeHasher {
    /// Root of the subtree over leaves `start..end`.
    fn range_root(&mut self, start: u64, end: u64) -> Digest;
}

/// A [`RangeHasher`] over leaf hashes in memory, recomputing each range.
#[derive(Debug, Clone, Copy)]
pub struct LeafHashes<'a>(pub &'a [Digest]);

impl RangeHasher for LeafHashes<'_> {
    fn range_root(&mut self, start: u64, end: u64) -> Digest {
        root_of_leaf_hashes(&self.0[start as usize..end as usize])
    }
}

/// Root of a list of leaf hashes (MTH of RFC 9162 §2.1.1).
pub fn root_of_leaf_hashes(leaves: &[Digest]) -> Digest {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(
                &root_of_leaf_hashes(&leaves[..k]),
                &root_of_leaf_hashes(&leaves[k..]),
            )
        }
    }
}

/// Root of a list of leaf data items (each is hashed with [`leaf_hash`]).
pub fn root<T: AsRef<[u8]>>(items: &[T]) -> Digest {
    let hashes: Vec<Digest> = items.iter().map(|d| leaf_hash(d.as_ref())).collect();
    root_of_leaf_hashes(&hashes)
}

/// Inclusion proof (audit path) for leaf `index` in a tree of `size` leaves, leaf-side first.
///
/// # Errors
/// [`CoreError::InvalidProof`] if `index >= size`.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    tree: &mut impl RangeHasher,
) -> Result<Vec<Digest>, CoreError> {
    if index >= size {
        return Err(CoreError::InvalidProof(
            "leaf index is not below the tree size",
        ));
    }
    let mut path = Vec::new();
    path_rec(index, 0, size, tree, &mut path);
    Ok(path)
}

fn path_rec(m: u64, start: u64, end: u64, tree: &mut impl RangeHasher, out: &mut Vec<Digest>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < k {
        path_rec(m, start, start + k, tree, out);
        out.push(tree.range_root(start + k, end));
    } else {
        path_rec(m - k, start + k, end, tree, out);
        out.push(tree.range_root(start, start + k));
    }
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
///
/// # Errors
/// [`CoreError::InvalidProof`] naming what did not hold.
pub fn verify_inclusion(
    leaf: &Digest,
    index: u64,
    size: u64,
    path: &[Digest],
    root: &Digest,
) -> Result<(), CoreError> {
    if index >= size {
        return Err(CoreError::InvalidProof(
            "leaf index is not below the tree size",
        ));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return Err(CoreError::InvalidProof(
                "audit path is longer than the tree allows",
            ));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(CoreError::InvalidProof(
            "audit path is shorter than the tree requires",
        ));
    }
    if r != *root {
        return Err(CoreError::InvalidProof(
            "audit path does not lead to the signed root",
        ));
    }
    Ok(())
}

/// Consistency proof between the first `old` leaves and the first `new` leaves
/// (RFC 9162 §2.1.4.1). Empty when `old == new`.
///
/// # Errors
/// [`CoreError::InvalidProof`] unless `0 < old <= new`.
pub fn consistency_proof(
    old: u64,
    new: u64,
    tree: &mut impl RangeHasher,
) -> Result<Vec<Digest>, CoreError> {
    if old == 0 || old > new {
        return Err(CoreError::InvalidProof(
            "consistency needs 0 < old size <= new size",
        ));
    }
    let mut out = Vec::new();
    if old < new {
        subproof(old, 0, new, true, tree, &mut out);
    }
    Ok(out)
}

fn subproof(
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    tree: &mut impl RangeHasher,
    out: &mut Vec<Digest>,
) {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(tree.range_root(start, end));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, start, start + k, complete, tree, out);
        out.push(tree.range_root(start + k, end));
    } else {
        subproof(m - k, start + k, end, false, tree, out);
        out.push(tree.range_root(start, start + k));
    }
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
///
/// # Errors
/// [`CoreError::InvalidProof`] naming what did not hold.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Digest,
    new_root: &Digest,
    proof: &[Digest],
) -> Result<(), CoreError> {
    if old == 0 || old > new {
        return Err(CoreError::InvalidProof(
            "consistency needs 0 < old size <= new size",
        ));
    }
    if old == new {
        if !proof.is_empty() {
            return Err(CoreError::InvalidProof("equal sizes need an empty proof"));
        }
        if old_root != new_root {
            return Err(CoreError::InvalidProof("equal sizes but different roots"));
        }
        return Ok(());
    }
    let mut path: Vec<Digest> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(CoreError::InvalidProof("empty consistency proof"));
    };
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return Err(CoreError::InvalidProof(
                "consistency proof is longer than needed",
            ));
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(CoreError::InvalidProof(
            "consistency proof is shorter than needed",
        ));
    }
    if fr != *old_root {
        return Err(CoreError::InvalidProof(
            "proof does not reproduce the old root",
        ));
    }
    if sr != *new_root {
        return Err(CoreError::InvalidProof(
            "proof does not reproduce the new root",
        ));
    }
    Ok(())
}
