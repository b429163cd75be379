//! USDC escrow bindings, the exact 70/30 fee split and the settlement ledger.
//!
//! Enforces **I7** (money moves exactly once): integer base units, settlement keyed by job id,
//! idempotent across crashes, paid only for a completed receipt, refunded otherwise.
