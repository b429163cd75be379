//! Signed proof receipts, the RFC 9162 transparency log and offline verification.
//!
//! Enforces **I6** (every job is provable): each finished, refused or failed job yields a
//! receipt whose body is serialised once to RFC 8785 canonical JSON ([`jcs`]); those bytes are
//! appended as a leaf of an append-only RFC 9162 Merkle log ([`ReceiptLog`], SQLite, every
//! acknowledged append durable), and the node key signs an EIP-712 `Settlement` message over
//! the job id, outcome, body digest, payment terms and the log head right after the append:
//! the receipt's proof. When the node settles the job it signs the escrow's own settlement
//! ([`sign_escrow_settlement`], **I7**: the same terms, the depositor, and the log head at
//! that moment), which the escrow checks with `ecrecover` before it pays. Signed tree heads use
//! the same key.
//!
//! ```text
//!  node:    ReceiptBody ─canonical_bytes─▶ bytes ─append─▶ ReceiptLog ─▶ (size, root)
//!                                           │                              │
//!                                           └─SHA-256─▶ Settlement ◀───────┘ ─NodeKey─▶ sig
//!  auditor: receipt file ─verify()─▶ bytes canonical? signature? head signed? included?
//! ```
//!
//! Verification uses the signed bytes only; the decoded copy in the file is for people and a
//! file whose copy differs from its bytes is refused. The wire formats are specified in
//! `docs/receipts.md`.

pub mod body;
pub mod credentials;
mod error;
pub mod jcs;
mod key;
pub mod log;
mod receipt;
pub mod webauthn;

pub use body::ReceiptBody;
pub use error::{ErrorClass, ReceiptError, Result};
pub use key::NodeKey;
pub use log::{Appended, ReceiptLog, SignedTreeHead};
/// The EIP-712 messages, domains and type strings (the one definition, in rapha-eth).
pub use rapha_eth::eip712;
pub use rapha_eth::{
    address_of, escrow_settlement_digest, parse_address, recover_signer, settlement_digest,
    Address, EscrowSettlement, Settlement, SettlementDomain, Signature, B256,
};
pub use receipt::{
    check_passkey_replay, issue, settlement_for, sign_escrow_settlement, verify, verify_file,
    Consistency, Inclusion, LogPosition, LoggedCredential, ReceiptFile, VerifiedReceipt, Verifier,
    VerifyOptions, FILE_FORMAT,
};
