//! fuzz tests
