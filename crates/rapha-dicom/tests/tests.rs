//! Integration tests for rapha-dicom (one binary per crate keeps link time down).
