//! The hospital node as a library: the job store and state machine that `rapha-node serve`
//! drives, also used in-process by `rapha-demo`.
//!
//! Every step of ARCHITECTURE.md's data flow writes its state here before the next begins, in
//! one SQLite transaction per transition, so a crash at any point resumes or fails the job
//! cleanly (**I6**, **I7**): never a second payment, never a half-released output.

pub mod store;

// The job pipeline over the store, and its audit trail.
pub mod audit;
pub mod node_build;
pub mod pipeline;
pub mod progress;
pub mod run_job;

// The HTTP API over the pipeline (`rapha-node serve`), and the DPO console beside it.
pub mod api;
pub mod console;

// Configuration, keys, DPO approvals, policy and the production preflight (`doctor`).
pub mod approvals;
pub mod config;
pub mod doctor;
pub mod hmac_key;
pub mod init;
pub mod keygen;
pub mod passkeys;
pub mod policy_cmd;
pub mod publishers;

// Backup and restore of the node's state (keys excluded).
pub mod backup;
