//! Integration tests for rapha-dicom (one binary per crate keeps link time down).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod archive;
mod cohort_file;
mod common;
mod corpus;
mod demographics;
mod hostile_dicom;
mod hostile_pacs;
mod j2k;
mod json;
mod lists;
mod orthanc;
mod records;
mod scope;
mod tls;
