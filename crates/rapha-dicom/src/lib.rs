//! DICOMweb client, scope guard, metadata extraction and pseudonymizer.
//!
//! Enforces **I1** (no raw PHI reaches the trainer: identifiers become
//! `HMAC-SHA256(key, domain || 0x00 || value)`, free text is suppressed, only allow-listed
//! technical attributes survive), **I2** (a query that does not narrow the cohort is refused
//! before any request is built) and the DICOM half of **I3** (instances with burned-in-PHI
//! risk are excluded from the cohort).
