//! metrics tests
