//! Integration tests for rapha-testkit.

