//! The enclave runtime: record feed, isolated trainer launch, output guard.
//!
//! Enforces **I1** on the trainer side (the trainer receives records, never a DICOM object,
//! path or network route), **I3** (pixels stay in runtime memory) and **I4** (only vetted
//! outputs leave: the guard rejects the whole output set on any violation).
