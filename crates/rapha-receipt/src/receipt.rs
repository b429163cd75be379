//! The receipt file: signed body bytes, the decoded copy, and the log proofs; issuing and
//! verifying one.
//!
//! ```text
//!  body ──JCS──▶ bytes ──SHA-256──▶ receiptDigest ─┐
//!                  │                               ├─ EIP-712 Settlement ──node key──▶ signature
//!                  └──append──▶ log (size, root) ──┘
//!  file = { body_b64: bytes, body: copy, signature, log_at_signing, inclusion, sth, consistency }
//! ```

use std::collections::HashMap;

use base64::Engine as _;
use rapha_core::merkle;
use rapha_core::Digest;
use serde::{Deserialize, Serialize};

use rapha_eth::{
    escrow_settlement_digest, recover_signer, settlement_digest, Address, EscrowSettlement,
    Settlement, SettlementDomain, Signature, B256, U256,
};

use crate::body::{DpoApproval, ReceiptBody};
use crate::credentials::{CredentialEntry, CredentialSet};
use crate::error::{ReceiptError, Result};
use crate::log::{ReceiptLog, SignedTreeHead};
use crate::webauthn::{approval_challenge, Origins, RelyingParty, WebauthnError};
use crate::NodeKey;

/// Format identifier of the receipt file.
pub const FILE_FORMAT: &str = "rapha-receipt-file/1";

/// The log size and root right after the receipt's leaf was appended (signed in the EIP-712
/// message as `logSize`, `logRoot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogPosition {
    pub tree_size: u64,
    pub root_hash: Digest,
}

/// RFC 9162 inclusion proof of the receipt's leaf, as any RFC 9162 implementation reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inclusion {
    pub leaf_index: u64,
    pub tree_size: u64,
    pub root_hash: Digest,
    pub audit_path: Vec<Digest>,
}

/// RFC 9162 consistency proof from `from_size` to the inclusion proof's tree size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consistency {
    pub from_size: u64,
    pub proof: Vec<Digest>,
}

/// A receipt as handed to the AI company, the auditor and the escrow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptFile {
    /// Always [`FILE_FORMAT`].
    pub format: String,
    /// The canonical body bytes, base64 (standard alphabet, padded). The only thing verified.
    pub body_b64: String,
    /// A decoded copy for people. Verification refuses a file where it differs from the bytes.
    pub body: serde_json::Value,
    /// SHA-256 of the body bytes (the EIP-712 `receiptDigest`), for convenience.
    pub receipt_digest: Digest,
    /// EIP-712 `Settlement` signature by the node key.
    pub signature: Signature,
    pub log_at_signing: LogPosition,
    pub inclusion: Inclusion,
    /// The signed head the inclusion proof leads to.
    pub sth: SignedTreeHead,
    /// Consistency proofs to `inclusion.tree_size` from earlier sizes: from
    /// `log_at_signing.tree_size` when the proof is for a later head, and from any older head
    /// an auditor asked about.
    #[serde(default)]
    pub consistency: Vec<Consistency>,
    /// For a passkey approval: the DPO credential entries of the log from the first to the
    /// body's `credentials_at`, oldest first, each proven included in the log the node signed
    /// with the receipt (`log_at_signing`). Absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_log: Vec<LoggedCredential>,
}

/// A DPO credential entry of the log with its RFC 9162 inclusion proof in the tree of
/// `log_at_signing.tree_size` leaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedCredential {
    pub leaf_index: u64,
    /// The entry's canonical bytes, base64 (standard alphabet, padded).
    pub entry_b64: String,
    pub audit_path: Vec<Digest>,
}

/// The credential chain ending at leaf `last` of `log`, oldest first, proven in the tree of
/// `tree_size` leaves.
fn credential_chain(log: &ReceiptLog, last: u64, tree_size: u64) -> Result<Vec<LoggedCredential>> {
    let mut chain = Vec::new();
    let mut index = last;
    loop {
        if index >= tree_size {
            return Err(ReceiptError::InconsistentBody(format!(
                "credential entry {index} is not before the receipt (log size {tree_size})"
            )));
        }
        let data = log.leaf(index)?;
        let entry = CredentialEntry::from_leaf(&data)?.ok_or_else(|| {
            ReceiptError::InconsistentBody(format!("log leaf {index} is not a credential entry"))
        })?;
        chain.push(LoggedCredential {
            leaf_index: index,
            entry_b64: base64::engine::general_purpose::STANDARD.encode(&data),
            audit_path: log.inclusion_proof(index, tree_size)?,
        });
        match entry.previous {
            None => break,
            Some(p) if p < index => index = p,
            Some(p) => {
                return Err(ReceiptError::InconsistentBody(format!(
                    "credential entry {index} names a later previous entry {p}"
                )))
            }
        }
    }
    chain.reverse();
    Ok(chain)
}

/// What verification established.
#[derive(Clone, Debug)]
pub struct VerifiedReceipt {
    pub body: ReceiptBody,
    pub body_bytes: Vec<u8>,
    pub receipt_digest: Digest,
    /// The node that signed (the recovered address).
    pub signer: Address,
    /// Whether the signer was pinned by the caller (`--node-address`) rather than taken from
    /// the body's own claim.
    pub signer_pinned: bool,
    pub settlement_digest: B256,
    pub leaf_index: u64,
    /// The head the receipt was shown to be included in.
    pub head: SignedTreeHead,
    /// An older head shown to be consistent with `head`, if one was given.
    pub consistent_with: Option<SignedTreeHead>,
}

/// What the caller brings to verification (all optional).
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The node address the caller trusts. Without it the body's own claim is used.
    pub node_address: Option<Address>,
    /// A signed head obtained independently, which the receipt must be included in.
    pub sth: Option<SignedTreeHead>,
    /// An older signed head the log must have grown from.
    pub consistency_from: Option<SignedTreeHead>,
}

/// The EIP-712 domain and message for a body.
pub fn settlement_for(
    body: &ReceiptBody,
    receipt_digest: &Digest,
    at: &LogPosition,
) -> (SettlementDomain, Settlement) {
    let p = &body.payment;
    (
        SettlementDomain {
            chain_id: p.chain_id,
            verifying_contract: p.escrow,
        },
        Settlement {
            jobId: B256::from(body.job_id.to_bytes32()),
            outcome: body.outcome.code(),
            receiptDigest: B256::from(*receipt_digest.as_bytes()),
            payout: p.payout,
            fee: U256::from(p.fee.base_units()),
            token: p.token,
            logSize: at.tree_size,
            logRoot: B256::from(*at.root_hash.as_bytes()),
        },
    )
}

/// Canonicalizes `body`, appends it to `log`, signs the settlement message and a tree head,
/// and returns the receipt file. Issuing the same body again returns the same log position
/// and signature (the log de-duplicates, signing is deterministic per RFC 6979).
///
/// # Errors
/// [`ReceiptError::InconsistentBody`] if the body names another node or fails its checks;
/// storage and signing errors.
pub fn issue(
    body: &ReceiptBody,
    key: &NodeKey,
    log: &mut ReceiptLog,
    now_ms: u64,
) -> Result<ReceiptFile> {
    if body.node.address != key.address() {
        return Err(ReceiptError::InconsistentBody(format!(
            "the body names node {} but the signing key is {}",
            body.node.address,
            key.address()
        )));
    }
    let bytes = body.canonical_bytes()?;
    let appended = log.append(&bytes)?;
    let at = LogPosition {
        tree_size: appended.tree_size,
        root_hash: appended.root,
    };
    let receipt_digest = Digest::of(&bytes);
    let (domain, msg) = settlement_for(body, &receipt_digest, &at);
    let signature = key.sign(&settlement_digest(&domain, &msg))?;
    let sth = log.sign_head(key, now_ms)?;
    let mut file = ReceiptFile {
        format: FILE_FORMAT.to_owned(),
        body_b64: base64::engine::general_purpose::STANDARD.encode(&bytes),
        body: serde_json::from_slice(&bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))?,
        receipt_digest,
        signature,
        log_at_signing: at,
        inclusion: Inclusion {
            leaf_index: appended.index,
            tree_size: 0,
            root_hash: sth.root_hash,
            audit_path: vec![],
        },
        sth,
        consistency: vec![],
        credential_log: vec![],
    };
    if let Some(p) = body.dpo_approval.as_ref().and_then(|a| a.passkey.as_ref()) {
        file.credential_log = credential_chain(log, p.credentials_at, at.tree_size)?;
    }
    file.prove_at(log, sth, &[])?;
    tracing::info!(job = %body.job_id, outcome = ?body.outcome, leaf = appended.index, "receipt issued");
    Ok(file)
}

/// Signs the settlement the escrow takes for a receipt this node issued into `log`, over the
/// log's head now: the receipt's job, outcome, digest and payment terms, `depositor` (whose
/// deposit for the job it settles), and the log's current size and root. The head is never
/// below the receipt's own position, nor below a head this node signed any settlement at
/// before, so the escrow's anchor never refuses it as a rewrite. The receipt's own signature
/// is left as it is: it stays the receipt's proof.
///
/// # Errors
/// [`ReceiptError::Malformed`] for a body that is not canonical or a digest that is not its
/// SHA-256, [`ReceiptError::InconsistentBody`] for a receipt of another node key,
/// [`ReceiptError::NotInLog`] when the log does not hold the receipt's signed position;
/// storage and signing errors.
pub fn sign_escrow_settlement(
    file: &ReceiptFile,
    depositor: Address,
    key: &NodeKey,
    log: &ReceiptLog,
) -> Result<(EscrowSettlement, Signature)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(file.body_b64.as_bytes())
        .map_err(|e| ReceiptError::Malformed(format!("body_b64 is not base64: {e}")))?;
    let (body, _) = ReceiptBody::parse_canonical(&bytes)?;
    let receipt_digest = Digest::of(&bytes);
    if receipt_digest != file.receipt_digest {
        return Err(ReceiptError::Malformed(
            "receipt_digest is not the SHA-256 of the body bytes".into(),
        ));
    }
    if body.node.address != key.address() {
        return Err(ReceiptError::InconsistentBody(format!(
            "the receipt names node {} but the signing key is {}",
            body.node.address,
            key.address()
        )));
    }
    let at = &file.log_at_signing;
    if at.tree_size > log.size() || log.root_at(at.tree_size)? != at.root_hash {
        return Err(ReceiptError::NotInLog(format!(
            "the receipt was signed at log size {} with root {}, which this log (size {}) does \
             not hold",
            at.tree_size,
            at.root_hash,
            log.size()
        )));
    }
    let (domain, receipt_msg) = settlement_for(&body, &receipt_digest, at);
    let msg = EscrowSettlement {
        jobId: receipt_msg.jobId,
        depositor,
        outcome: receipt_msg.outcome,
        receiptDigest: receipt_msg.receiptDigest,
        payout: receipt_msg.payout,
        fee: receipt_msg.fee,
        token: receipt_msg.token,
        logSize: log.size(),
        logRoot: B256::from(*log.root().as_bytes()),
    };
    let signature = key.sign(&escrow_settlement_digest(&domain, &msg))?;
    Ok((msg, signature))
}

impl ReceiptFile {
    /// Re-proves the receipt against `head` (a later head of `log`), with consistency proofs
    /// from the signed log position and from each of `old_sizes`.
    ///
    /// # Errors
    /// [`ReceiptError::LogRequest`] if `head` is not a head of this log that contains the leaf.
    pub fn prove_at(
        &mut self,
        log: &ReceiptLog,
        head: SignedTreeHead,
        old_sizes: &[u64],
    ) -> Result<()> {
        if log.root_at(head.tree_size)? != head.root_hash {
            return Err(ReceiptError::LogRequest(
                "the head is not a head of this log".into(),
            ));
        }
        let index = self.inclusion.leaf_index;
        self.inclusion = Inclusion {
            leaf_index: index,
            tree_size: head.tree_size,
            root_hash: head.root_hash,
            audit_path: log.inclusion_proof(index, head.tree_size)?,
        };
        self.sth = head;
        self.consistency.clear();
        let mut froms: Vec<u64> = old_sizes.to_vec();
        froms.push(self.log_at_signing.tree_size);
        froms.sort_unstable();
        froms.dedup();
        for from in froms.into_iter().filter(|f| *f < head.tree_size && *f > 0) {
            self.consistency.push(Consistency {
                from_size: from,
                proof: log.consistency_proof(from, head.tree_size)?,
            });
        }
        Ok(())
    }

    /// Serialises the file (pretty JSON, for people and tools).
    ///
    /// # Errors
    /// [`ReceiptError::Malformed`] (cannot happen for a file built by [`issue`]).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| ReceiptError::Malformed(e.to_string()))
    }

    /// Parses a receipt file.
    ///
    /// # Errors
    /// [`ReceiptError::Malformed`].
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))
    }
}

/// Parses and verifies a receipt file offline. See [`verify_file`].
///
/// # Errors
/// As [`verify_file`], plus [`ReceiptError::Malformed`] for unparseable JSON.
pub fn verify(bytes: &[u8], opts: &VerifyOptions) -> Result<VerifiedReceipt> {
    verify_file(&ReceiptFile::from_json(bytes)?, opts)
}

/// Verifies a receipt offline, in this order: the body bytes (canonical, schema, the copy
/// matches), the node signature over the EIP-712 settlement message, the signed head, the
/// inclusion proof, the link between the signed log position and the head, and an optional
/// older head's consistency.
///
/// # Errors
/// One [`ReceiptError`] per failed check; [`ReceiptError::class`] groups them.
pub fn verify_file(file: &ReceiptFile, opts: &VerifyOptions) -> Result<VerifiedReceipt> {
    verify_with(file, opts, &mut HeadCache::default())
}

/// Heads whose signatures were already checked, with their signers.
#[derive(Debug, Default)]
struct HeadCache(HashMap<SignedTreeHead, Address>);

impl HeadCache {
    fn check(&mut self, head: &SignedTreeHead, node: &Address) -> Result<()> {
        let found = match self.0.get(head) {
            Some(a) => *a,
            None => {
                let a = head.signer()?;
                self.0.insert(*head, a);
                a
            }
        };
        if found != *node {
            return Err(ReceiptError::HeadSigner {
                tree_size: head.tree_size,
                found,
                expected: *node,
            });
        }
        Ok(())
    }
}

/// Verifies many receipts with the same options, checking each distinct signed head's
/// signature once: the way an auditor walks a whole log at one head. Each receipt gets exactly
/// the checks of [`verify_file`].
#[derive(Debug)]
pub struct Verifier {
    opts: VerifyOptions,
    heads: HeadCache,
}

impl Verifier {
    /// A verifier with `opts`.
    pub fn new(opts: VerifyOptions) -> Self {
        Self {
            opts,
            heads: HeadCache::default(),
        }
    }

    /// Verifies one receipt file (JSON bytes).
    ///
    /// # Errors
    /// As [`verify_file`].
    pub fn verify(&mut self, bytes: &[u8]) -> Result<VerifiedReceipt> {
        verify_with(&ReceiptFile::from_json(bytes)?, &self.opts, &mut self.heads)
    }
}

fn verify_with(
    file: &ReceiptFile,
    opts: &VerifyOptions,
    heads: &mut HeadCache,
) -> Result<VerifiedReceipt> {
    if file.format != FILE_FORMAT {
        return Err(ReceiptError::Malformed(format!(
            "file format {:?} is not {FILE_FORMAT:?}",
            file.format.chars().take(60).collect::<String>()
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(file.body_b64.as_bytes())
        .map_err(|e| ReceiptError::Malformed(format!("body_b64 is not base64: {e}")))?;
    let (body, _) = ReceiptBody::parse_canonical(&bytes)?;
    // The copy matches when its canonical form is the signed bytes: compared as values, a
    // metric the bytes carry as `1` (JCS) and the typed body holds as `1.0` would differ.
    if crate::jcs::to_vec(&file.body).ok().as_deref() != Some(bytes.as_slice()) {
        return Err(ReceiptError::CopyMismatch);
    }
    let receipt_digest = Digest::of(&bytes);

    // The node signature over everything the escrow acts on.
    let (domain, msg) = settlement_for(&body, &receipt_digest, &file.log_at_signing);
    let sdigest = settlement_digest(&domain, &msg);
    let signer = recover_signer(&sdigest, &file.signature)?;
    if signer != body.node.address {
        return Err(ReceiptError::SignerMismatch {
            recovered: signer,
            claimed: body.node.address,
        });
    }
    if let Some(expected) = opts.node_address {
        if signer != expected {
            return Err(ReceiptError::WrongSigner {
                found: signer,
                expected,
            });
        }
    }
    if file.receipt_digest != receipt_digest {
        return Err(ReceiptError::Malformed(
            "receipt_digest is not the SHA-256 of the body bytes".into(),
        ));
    }

    // The head: the caller's own, or the one in the file; either way signed by the node.
    let head = opts.sth.unwrap_or(file.sth);
    heads.check(&head, &signer)?;
    let inc = &file.inclusion;
    if inc.tree_size != head.tree_size || inc.root_hash != head.root_hash {
        return Err(ReceiptError::NotInLog(format!(
            "the inclusion proof is for tree size {} with root {}, but the head checked has size {} \
             with root {}; ask the node for a proof at that head",
            inc.tree_size, inc.root_hash, head.tree_size, head.root_hash
        )));
    }
    let leaf = merkle::leaf_hash(&bytes);
    merkle::verify_inclusion(
        &leaf,
        inc.leaf_index,
        inc.tree_size,
        &inc.audit_path,
        &inc.root_hash,
    )
    .map_err(|e| ReceiptError::NotInLog(e.to_string()))?;

    // The position the node signed must be this leaf's, and a prefix of the head.
    let at = &file.log_at_signing;
    if at.tree_size != inc.leaf_index + 1 {
        return Err(ReceiptError::NotInLog(format!(
            "the node signed log size {} for this receipt, but its leaf index is {}",
            at.tree_size, inc.leaf_index
        )));
    }
    check_consistent(file, at.tree_size, &at.root_hash, &head, true)?;

    let consistent_with = match opts.consistency_from {
        None => None,
        Some(old) => {
            heads.check(&old, &signer)?;
            if old.tree_size > head.tree_size {
                return Err(ReceiptError::MalformedHead(format!(
                    "the older head has size {} but the receipt's head only {}; ask the node for \
                     a proof at a newer head",
                    old.tree_size, head.tree_size
                )));
            }
            check_consistent(file, old.tree_size, &old.root_hash, &head, false)?;
            Some(old)
        }
    };

    if let Some(approval) = &body.dpo_approval {
        verify_passkey(file, approval)?;
    }

    Ok(VerifiedReceipt {
        body,
        body_bytes: bytes,
        receipt_digest,
        signer,
        signer_pinned: opts.node_address.is_some(),
        settlement_digest: sdigest,
        leaf_index: inc.leaf_index,
        head,
        consistent_with,
    })
}

fn check_consistent(
    file: &ReceiptFile,
    old_size: u64,
    old_root: &Digest,
    head: &SignedTreeHead,
    signed_position: bool,
) -> Result<()> {
    if old_size == 0 {
        return Err(ReceiptError::MalformedHead(
            "a head of size 0 proves nothing".into(),
        ));
    }
    if old_size == head.tree_size {
        if *old_root != head.root_hash {
            return Err(ReceiptError::Inconsistent(format!(
                "two different roots signed for tree size {old_size}: {old_root} and {}",
                head.root_hash
            )));
        }
        return Ok(());
    }
    let Some(c) = file.consistency.iter().find(|c| c.from_size == old_size) else {
        let msg = format!(
            "the file carries no consistency proof from size {old_size} to {}; ask the node for one",
            head.tree_size
        );
        return Err(if signed_position {
            ReceiptError::NotInLog(msg)
        } else {
            ReceiptError::MalformedHead(msg)
        });
    };
    merkle::verify_consistency(
        old_size,
        head.tree_size,
        old_root,
        &head.root_hash,
        &c.proof,
    )
    .map_err(|e| {
        ReceiptError::Inconsistent(format!("from size {old_size} to {}: {e}", head.tree_size))
    })
}

/// Checks a passkey approval offline (docs/receipts.md, "Passkey approvals"): the chain of
/// credential entries the file carries is in the log the node signed with the receipt and
/// replays to a set holding the approving credential; the assertion verifies under that
/// credential's key; its challenge is the one recomputed from the approval's job digest,
/// nonce and time. An Ed25519 key-file approval has nothing of this to check here.
fn verify_passkey(file: &ReceiptFile, approval: &DpoApproval) -> Result<()> {
    let Some(p) = &approval.passkey else {
        return Ok(());
    };
    let a = &p.assertion;
    if approval.signer != DpoApproval::passkey_signer(&a.credential_id)
        || approval.signature != a.signature.encode()
    {
        return Err(ReceiptError::InconsistentBody(
            "the approval's signer and signature are not its passkey assertion's".into(),
        ));
    }
    let at = &file.log_at_signing;
    let mut entries: Vec<(u64, CredentialEntry)> = Vec::with_capacity(file.credential_log.len());
    for logged in &file.credential_log {
        let chain = |why: String| ReceiptError::CredentialChain {
            index: logged.leaf_index,
            why,
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(logged.entry_b64.as_bytes())
            .map_err(|e| chain(format!("entry_b64 is not base64: {e}")))?;
        merkle::verify_inclusion(
            &merkle::leaf_hash(&bytes),
            logged.leaf_index,
            at.tree_size,
            &logged.audit_path,
            &at.root_hash,
        )
        .map_err(|e| chain(format!("not in the log the receipt was signed at: {e}")))?;
        let entry = CredentialEntry::from_leaf(&bytes)
            .map_err(|e| chain(e.to_string()))?
            .ok_or_else(|| chain("the leaf is not a credential entry".into()))?;
        // Each entry names the one before it: the carried entries must be that whole chain.
        let expected_previous = entries.last().map(|(i, _)| *i);
        if entry.previous != expected_previous {
            return Err(chain(format!(
                "it names previous entry {:?}, but the entry before it in the chain is {:?}",
                entry.previous, expected_previous
            )));
        }
        entries.push((logged.leaf_index, entry));
    }
    let not_enrolled = |why: String| ReceiptError::PasskeyNotEnrolled {
        credential: a.credential_id.encode(),
        at: p.credentials_at,
        why,
    };
    match entries.last() {
        Some((last, _)) if *last == p.credentials_at => {}
        _ => {
            return Err(not_enrolled(format!(
                "the receipt carries no credential chain ending at log entry {}",
                p.credentials_at
            )))
        }
    }
    let set = CredentialSet::replay(entries.iter().map(|(i, e)| (*i, e)), &Origins::OfRpId)
        .map_err(|(index, e)| ReceiptError::CredentialChain {
            index,
            why: e.to_string(),
        })?;
    let enrolled = set.get(&a.credential_id).ok_or_else(|| {
        not_enrolled("no enrolment of it is in the chain, or it was revoked".into())
    })?;
    if enrolled.rp_id != p.rp_id {
        return Err(not_enrolled(format!(
            "it was enrolled for relying party {:?}, not {:?}",
            enrolled.rp_id, p.rp_id
        )));
    }
    let rp = RelyingParty {
        rp_id: p.rp_id.clone(),
        origins: Origins::OfRpId,
    };
    let challenge = approval_challenge(&p.job_digest, &a.nonce, a.issued_at);
    match a.verify(&rp, &enrolled.public_key, &challenge) {
        Ok(_) => Ok(()),
        Err(WebauthnError::ChallengeMismatch) => Err(ReceiptError::PasskeyOtherJob {
            job_digest: p.job_digest,
        }),
        Err(e) => Err(ReceiptError::PasskeyTampered(e)),
    }
}

/// Refuses `receipt` when its passkey approval's (credential, nonce) also approved another of
/// `others` (receipts of the same node the caller holds, each verified): a nonce is single
/// use, so a second approval with it is a captured assertion replayed. The same receipt
/// given twice is not a replay.
///
/// # Errors
/// [`ReceiptError::PasskeyReplayed`].
pub fn check_passkey_replay(receipt: &VerifiedReceipt, others: &[VerifiedReceipt]) -> Result<()> {
    let key = |v: &VerifiedReceipt| {
        v.body
            .dpo_approval
            .as_ref()
            .and_then(|a| a.passkey.as_ref())
            .map(|p| (p.assertion.credential_id.clone(), p.assertion.nonce))
    };
    let Some(mine) = key(receipt) else {
        return Ok(());
    };
    for other in others {
        if other.receipt_digest != receipt.receipt_digest && key(other).as_ref() == Some(&mine) {
            return Err(ReceiptError::PasskeyReplayed {
                credential: mine.0.encode(),
                nonce: hex::encode(mine.1),
                other_job: other.body.job_id,
                other_receipt: other.receipt_digest,
            });
        }
    }
    Ok(())
}
