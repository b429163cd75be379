//! Integration tests for the `rapha-node` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod trust;
mod v1_stores;

mod api;
mod api_bundles;
mod api_live;
mod api_phi;
mod api_reads;
mod approvals_cli;
mod archive_e2e;
mod backup;
mod bundle_cost;
mod cohort_preview;
mod config_errors;
mod console;
mod console_browser;
mod crash;
mod demo_isolation;
mod doctor_production;
mod exhaustion;
mod keys_cli;
mod node_common;
mod passkeys;
mod pipeline_e2e;
mod pipeline_pytorch;
mod policy_config;
mod privacy_audit;
mod production_node;
mod publisher_channels;
mod publisher_policy;
mod publisher_probes;
mod settlement;
