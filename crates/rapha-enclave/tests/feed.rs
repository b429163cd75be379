//! feed tests
