//! `rapha bundle build`: a single-layer OCI image from a directory.
//!
//! The layer is deterministic: entries sorted by name, mtime 0, uid/gid 0, no user names,
//! gzip header without a timestamp. The same directory therefore always gives the same
//! layer, config and manifest digests, so a hospital can rebuild and compare.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rapha_core::Digest;

use rapha_core::DigestWriter;

use crate::error::{BundleError, Result};
use crate::oci::{
    fresh_dir, write_layout_skeleton, Descriptor, ExecConfig, ImageConfig, Manifest, OciLayout,
    RootFs, MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_MANIFEST,
};
use crate::unpack::check_symlink_target;

/// Counts and hashes bytes on their way to `inner`.
struct HashTee<W> {
    inner: W,
    hasher: DigestWriter,
    count: u64,
}

impl<W: Write> Write for HashTee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildSpec {
    /// The directory that becomes the image's root filesystem.
    pub rootfs: PathBuf,
    /// argv of the trainer, e.g. `["/trainer"]`.
    pub entrypoint: Vec<String>,
    /// Environment, `K=V`.
    pub env: Vec<String>,
}

/// What [`build_image_counted`] made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// The image manifest's digest.
    pub manifest_digest: Digest,
    /// Files and directories whose setuid or setgid bit was cleared in the layer.
    pub setuid_cleared: u64,
}

/// Builds the image into the fresh layout directory `out`; returns the manifest digest.
/// setuid/setgid bits are cleared in the layer (the source directory is not changed); use
/// [`build_image_counted`] to learn how many.
///
/// # Errors
/// As [`build_image_counted`].
pub fn build_image(spec: &BuildSpec, out: &Path) -> Result<Digest> {
    build_image_counted(spec, out).map(|b| b.manifest_digest)
}

/// Builds the image into the fresh layout directory `out`; says how many setuid/setgid
/// bits it cleared (the trainer runs without capabilities and with `noNewPrivileges`, so the
/// bits would do nothing; they are dropped rather than refused so that a distro rootfs
/// builds).
///
/// # Errors
/// [`BundleError::UnsupportedSource`] for devices, FIFOs or sockets in the rootfs,
/// [`BundleError::SymlinkEscape`] for a relative symlink climbing above the rootfs, I/O
/// errors.
pub fn build_image_counted(spec: &BuildSpec, out: &Path) -> Result<BuiltImage> {
    if spec.entrypoint.is_empty() {
        return Err(BundleError::Predicate(
            "the entrypoint must not be empty".into(),
        ));
    }
    for kv in &spec.env {
        if !kv.contains('=') {
            return Err(BundleError::Predicate(format!(
                "env entry {kv:?} is not K=V"
            )));
        }
    }
    fresh_dir(out)?;
    let blobs = out.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(BundleError::io(&blobs))?;

    // Layer: tar -> (diff_id hash) -> gzip -> (blob hash) -> file.
    let tmp = blobs.join(".tmp-layer");
    let file = File::create(&tmp).map_err(BundleError::io(&tmp))?;
    let blob_tee = HashTee {
        inner: std::io::BufWriter::new(file),
        hasher: DigestWriter::default(),
        count: 0,
    };
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(blob_tee, flate2::Compression::default());
    let tar_tee = HashTee {
        inner: gz,
        hasher: DigestWriter::default(),
        count: 0,
    };
    let mut builder = tar::Builder::new(tar_tee);
    let mut setuid_cleared = 0u64;
    append_tree(
        &mut builder,
        &spec.rootfs,
        Path::new(""),
        &mut setuid_cleared,
    )?;
    let tar_tee = builder.into_inner().map_err(BundleError::io(&tmp))?;
    let diff_id = tar_tee.hasher.finish();
    let mut blob_tee = tar_tee.inner.finish().map_err(BundleError::io(&tmp))?;
    blob_tee.flush().map_err(BundleError::io(&tmp))?;
    let layer_digest = blob_tee.hasher.finish();
    let layer_size = blob_tee.count;
    let file = blob_tee
        .inner
        .into_inner()
        .map_err(|e| BundleError::io(&tmp)(e.into_error()))?;
    file.sync_all().map_err(BundleError::io(&tmp))?;
    let layer_path = blobs.join(layer_digest.to_hex());
    std::fs::rename(&tmp, &layer_path).map_err(BundleError::io(&layer_path))?;

    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ExecConfig {
            entrypoint: Some(spec.entrypoint.clone()),
            cmd: None,
            env: if spec.env.is_empty() {
                None
            } else {
                Some(spec.env.clone())
            },
            working_dir: Some("/".into()),
        }),
        rootfs: RootFs {
            type_: "layers".into(),
            diff_ids: vec![diff_id.to_oci()],
        },
    };
    let config_desc = write_blob(&blobs, MEDIA_CONFIG, &config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.into()),
        config: config_desc,
        layers: vec![Descriptor {
            media_type: MEDIA_LAYER_GZIP.into(),
            digest: layer_digest.to_oci(),
            size: layer_size,
            annotations: None,
        }],
    };
    let manifest_desc = write_blob(&blobs, MEDIA_MANIFEST, &manifest)?;
    let digest = manifest_desc.sha256()?;
    write_layout_skeleton(out, &manifest_desc)?;
    OciLayout::open(out)?;
    Ok(BuiltImage {
        manifest_digest: digest,
        setuid_cleared,
    })
}

fn write_blob<T: serde::Serialize>(
    blobs: &Path,
    media_type: &str,
    value: &T,
) -> Result<Descriptor> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| BundleError::Layout(format!("cannot serialise {media_type}: {e}")))?;
    let digest = Digest::of(&bytes);
    let path = blobs.join(digest.to_hex());
    std::fs::write(&path, &bytes).map_err(BundleError::io(&path))?;
    Ok(Descriptor {
        media_type: media_type.into(),
        digest: digest.to_oci(),
        size: bytes.len() as u64,
        annotations: None,
    })
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_tree<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    setuid_cleared: &mut u64,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(BundleError::io(&dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(BundleError::io(&dir))?;
    names.sort();
    for name in names {
        let rel_path = rel.join(&name);
        let path = root.join(&rel_path);
        let meta = std::fs::symlink_metadata(&path).map_err(BundleError::io(&path))?;
        let mut mode = meta.permissions().mode() & 0o7777;
        let shown = rel_path.display().to_string();
        let ft = meta.file_type();
        if mode & 0o6000 != 0 && (ft.is_dir() || ft.is_file()) {
            mode &= !0o6000;
            *setuid_cleared += 1;
        }
        if ft.is_dir() {
            let mut h = header(tar::EntryType::Directory, mode, 0);
            b.append_data(&mut h, &rel_path, std::io::empty())
                .map_err(BundleError::io(&path))?;
            append_tree(b, root, &rel_path, setuid_cleared)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(BundleError::io(&path))?;
            check_symlink_target(&shown, &target.to_string_lossy())?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, &rel_path, &target)
                .map_err(BundleError::io(&path))?;
        } else if ft.is_file() {
            let f = File::open(&path).map_err(BundleError::io(&path))?;
            let mut h = header(tar::EntryType::Regular, mode, meta.size());
            b.append_data(&mut h, &rel_path, f)
                .map_err(BundleError::io(&path))?;
        } else {
            use std::os::unix::fs::FileTypeExt as _;
            let kind = if ft.is_char_device() {
                "character device"
            } else if ft.is_block_device() {
                "block device"
            } else if ft.is_fifo() {
                "FIFO"
            } else {
                "socket"
            };
            return Err(BundleError::UnsupportedSource { path, kind });
        }
    }
    Ok(())
}
