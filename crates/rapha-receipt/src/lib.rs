//! Signed proof receipts, the RFC 9162 transparency log and offline verification.
//!
//! Enforces **I6** (every job is provable): each finished or refused job yields a receipt
//! signed by the node key and appended as a leaf of an append-only Merkle log.
