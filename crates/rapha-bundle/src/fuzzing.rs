//! Entry points for the fuzz targets (`crates/rapha-bundle/fuzz`) and the proptests that drive
//! the same code on stable. Each takes arbitrary bytes and must return, never panic.

use std::path::Path;

use crate::unpack::Limits;

/// Unpacks `bytes` as an uncompressed tar layer into `dest` with small limits.
pub fn unpack_tar_bytes(bytes: &[u8], dest: &Path) -> crate::Result<()> {
    let limits = Limits {
        max_blob_bytes: 1 << 20,
        max_layer_bytes: 1 << 20,
        max_rootfs_bytes: 1 << 20,
        max_entries: 256,
    };
    let mut r = bytes;
    crate::unpack::unpack_layer_tar(&mut r, dest, &limits).map(|_| ())
}

/// Feeds `bytes` to every JSON parser of outside input: DSSE envelope, in-toto statement,
/// OCI index, manifest and config. Returns how many accepted the input.
pub fn parse_all(bytes: &[u8]) -> usize {
    let mut ok = 0;
    if let Ok(env) = crate::dsse::Envelope::parse(bytes) {
        ok += 1;
        let _ = env.payload_bytes();
    }
    ok += usize::from(crate::statement::Statement::parse_trainer(bytes).is_ok());
    ok += usize::from(crate::oci::parse_json::<crate::oci::Index>("index", bytes).is_ok());
    ok += usize::from(crate::oci::parse_json::<crate::oci::Manifest>("manifest", bytes).is_ok());
    ok += usize::from(crate::oci::parse_json::<crate::oci::ImageConfig>("config", bytes).is_ok());
    if let Ok(text) = std::str::from_utf8(bytes) {
        ok += usize::from(crate::statement::TrainerSpec::from_toml(text).is_ok());
    }
    ok
}

/// Unpacks `bytes` as a bundle archive (what a node receives on `POST /v1/bundles`) into
/// `dest`, which must not exist or be empty, with small limits.
pub fn unpack_bundle_archive_bytes(
    bytes: &[u8],
    dest: &Path,
) -> crate::Result<crate::ArchiveSummary> {
    let limits = crate::ArchiveLimits {
        max_entries: 64,
        max_file_bytes: 1 << 20,
        max_total_bytes: 4 << 20,
    };
    let mut r = bytes;
    crate::archive::unpack_bundle_archive(&mut r, dest, &limits)
}
