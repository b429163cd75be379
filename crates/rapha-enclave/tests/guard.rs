//! guard tests
