//! Ordinary distro images and the layers an attacker builds against them.
//!
//! A Debian-style image (usrmerge links, absolute links such as `/usr/bin/python3` and
//! `/etc/alternatives/*`, setuid `su`/`passwd`, hard links, whiteouts, an opaque whiteout)
//! must verify and unpack with its links kept as links and its setuid/setgid bits cleared
//! and counted. Each hostile layer — one that would write, white out or hard-link through a
//! symlink, including an absolute one that names a real directory of this machine — must be
//! refused with its own error, and the sentinel directory beside the rootfs (the place such a
//! link points at) must be exactly as it was.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use rapha_bundle::BundleError;

use crate::common::*;

/// Real bytes of a host file (a binary of this machine's distro) or a stand-in.
fn host_bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|_| b"\x7fELF stand-in".to_vec())
}

/// A name in the sentinel: path, type, mode, content, link count, mtime.
type SentinelEntry = (String, &'static str, u32, Vec<u8>, u64, i64);

/// A rootfs location with a sentinel directory beside it: what a link out would reach.
struct Jail {
    tmp: tempfile::TempDir,
}

impl Jail {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let s = tmp.path().join("sentinel");
        std::fs::create_dir(&s).unwrap();
        write_mode(&s.join("passwd"), b"root:x:0:0::/root:/bin/sh\n", 0o644);
        write_mode(&s.join("secret"), b"host secret", 0o600);
        write_mode(&s.join("victim"), b"must survive", 0o644);
        std::fs::create_dir(s.join("sub")).unwrap();
        write_mode(&s.join("sub/keep"), b"keep", 0o644);
        Self { tmp }
    }
    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }
    /// The sentinel's absolute path: the target of every hostile link below.
    fn sentinel(&self) -> String {
        self.tmp.path().join("sentinel").display().to_string()
    }
    /// Every name in the sentinel with type, mode, content, link count and mtime.
    fn sentinel_state(&self) -> Vec<SentinelEntry> {
        let base = self.tmp.path().join("sentinel");
        snapshot(&base)
            .into_iter()
            .map(|(name, kind, mode, bytes)| {
                let m = std::fs::symlink_metadata(base.join(&name)).unwrap();
                (name, kind, mode, bytes, m.nlink(), m.mtime())
            })
            .collect()
    }
    fn beside(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// Signs an image of `layers`, unpacks it next to the sentinel and returns the refusal,
/// after checking that no partial rootfs is left and nothing outside it changed.
fn hostile(jail: &Jail, layers: &[Vec<RawEntry>]) -> BundleError {
    let before = jail.sentinel_state();
    let tars: Vec<Vec<u8>> = layers.iter().map(|l| raw_tar(l)).collect();
    let (_bundle_tmp, vb) = signed_from_tars(&tars);
    let err = vb.unpack_rootfs(&jail.root()).unwrap_err();
    assert!(!jail.root().exists(), "partial rootfs left behind");
    assert_eq!(
        jail.beside(),
        ["sentinel"],
        "a name was created beside the rootfs"
    );
    assert_eq!(
        jail.sentinel_state(),
        before,
        "a file outside the rootfs was created or changed"
    );
    err
}

fn through(e: &BundleError, entry: &str, link: &str) -> bool {
    matches!(e, BundleError::PathThroughSymlink { path, through } if path == entry && through == link)
}

fn debian_base_layer() -> Vec<RawEntry> {
    vec![
        dir("etc", 0o755),
        file("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n", 0o644),
        dir("etc/alternatives", 0o755),
        symlink("etc/alternatives/awk", "/usr/bin/mawk"),
        symlink("etc/alternatives/pager", "/bin/more"),
        dir("usr", 0o755),
        dir("usr/bin", 0o755),
        dir("usr/lib", 0o755),
        dir("usr/lib/x86_64-linux-gnu", 0o755),
        file(
            "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            b"ld",
            0o755,
        ),
        dir("usr/lib64", 0o755),
        symlink(
            "usr/lib64/ld-linux-x86-64.so.2",
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        ),
        symlink("bin", "usr/bin"),
        symlink("lib", "usr/lib"),
        symlink("lib64", "usr/lib64"),
        file("usr/bin/python3.11", &host_bytes("/bin/true"), 0o755),
        symlink("usr/bin/python3", "/usr/bin/python3.11"),
        file("usr/bin/mawk", &host_bytes("/bin/true"), 0o755),
        symlink("usr/bin/awk", "/etc/alternatives/awk"),
        file("usr/bin/more", b"more", 0o755),
        file("usr/bin/su", &host_bytes("/usr/bin/su"), 0o4755),
        file("usr/bin/passwd", &host_bytes("/usr/bin/passwd"), 0o4755),
        file("usr/bin/chage", b"chage", 0o2755),
        file("usr/bin/perl5.36.0", b"perl", 0o755),
        hardlink("usr/bin/perl", "usr/bin/perl5.36.0"),
        dir("usr/share", 0o755),
        dir("usr/share/doc", 0o755),
        file("usr/share/doc/old-changelog", b"old", 0o644),
        dir("var", 0o755),
        dir("var/mail", 0o2775),
        dir("var/cache", 0o755),
        dir("var/cache/apt", 0o755),
        file("var/cache/apt/pkgcache.bin", b"stale", 0o644),
        file("var/cache/apt/srcpkgcache.bin", b"stale", 0o644),
        dir("tmp", 0o1777),
    ]
}

fn debian_app_layer() -> Vec<RawEntry> {
    vec![
        file("usr/share/doc/.wh.old-changelog", b"", 0o644),
        file("var/cache/apt/.wh..wh..opq", b"", 0o644),
        file("var/cache/apt/pkgcache.bin", b"fresh", 0o644),
        symlink("etc/alternatives/python", "/usr/bin/python3"),
        file("usr/bin/newgrp", b"newgrp", 0o6755),
        file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/bash\ntrainer:x:1000:1000::/:\n",
            0o644,
        ),
        hardlink("usr/bin/python", "usr/bin/python3.11"),
    ]
}

#[test]
fn a_debian_style_image_unpacks_with_absolute_links_kept_and_setuid_cleared_and_counted() {
    let jail = Jail::new();
    let before = jail.sentinel_state();
    let (_b, vb) = signed_from_tars(&[raw_tar(&debian_base_layer()), raw_tar(&debian_app_layer())]);
    let out = vb.unpack_rootfs(&jail.root()).unwrap();
    // su, passwd, chage, /var/mail, newgrp.
    assert_eq!(out.setuid_cleared, 5);
    // What the reviewer and `rapha bundle inspect` are shown, counted without unpacking.
    let c = vb.contents().unwrap();
    assert_eq!(
        (
            c.layers,
            c.entries,
            c.bytes,
            c.setuid_setgid,
            c.special_files
        ),
        (2, out.entries, out.bytes, 5, 0)
    );
    assert_eq!(
        (c.symlinks, c.absolute_symlinks, c.hard_links, c.whiteouts),
        (9, 6, 2, 2)
    );
    let root = jail.root();
    let link = |p: &str| {
        std::fs::read_link(root.join(p))
            .unwrap()
            .display()
            .to_string()
    };
    assert_eq!(link("usr/bin/python3"), "/usr/bin/python3.11");
    assert_eq!(link("etc/alternatives/awk"), "/usr/bin/mawk");
    assert_eq!(link("etc/alternatives/python"), "/usr/bin/python3");
    assert_eq!(link("usr/bin/awk"), "/etc/alternatives/awk");
    assert_eq!(link("bin"), "usr/bin");
    assert_eq!(
        link("usr/lib64/ld-linux-x86-64.so.2"),
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    );
    let mode = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("usr/bin/su"), 0o755);
    assert_eq!(mode("usr/bin/passwd"), 0o755);
    assert_eq!(mode("usr/bin/chage"), 0o755);
    assert_eq!(mode("usr/bin/newgrp"), 0o755);
    assert_eq!(mode("var/mail"), 0o775);
    assert_eq!(mode("tmp"), 0o1777, "the sticky bit is kept");
    assert_eq!(
        std::fs::read(root.join("usr/bin/su")).unwrap(),
        host_bytes("/usr/bin/su")
    );
    let ino = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap().ino();
    assert_eq!(ino("usr/bin/perl"), ino("usr/bin/perl5.36.0"));
    assert_eq!(ino("usr/bin/python"), ino("usr/bin/python3.11"));
    assert!(!root.join("usr/share/doc/old-changelog").exists());
    let apt: Vec<_> = snapshot(&root.join("var/cache/apt"));
    assert_eq!(
        apt,
        vec![("pkgcache.bin".to_string(), "file", 0o644, b"fresh".to_vec())]
    );
    assert!(std::fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .contains("trainer"));
    assert_eq!(jail.sentinel_state(), before);
    assert_eq!(jail.beside(), ["root", "sentinel"]);
}

#[test]
fn a_layer_making_etc_an_absolute_link_out_then_writing_etc_passwd_is_refused() {
    let jail = Jail::new();
    let e = hostile(
        &jail,
        &[vec![
            symlink("etc", &jail.sentinel()),
            file("etc/passwd", b"pwned::0:0::/:/bin/sh\n", 0o644),
        ]],
    );
    assert!(through(&e, "etc/passwd", "etc"), "{e}");
}

#[test]
fn a_link_made_of_dot_dots_from_the_root_is_kept_but_never_written_through() {
    let jail = Jail::new();
    let e = hostile(
        &jail,
        &[vec![
            symlink("etc", "/../../host"),
            file("etc/passwd", b"pwned", 0o644),
        ]],
    );
    assert!(through(&e, "etc/passwd", "etc"), "{e}");
}

#[test]
fn a_later_layer_turning_a_directory_into_a_link_then_writing_beneath_it_is_refused() {
    let jail = Jail::new();
    let e = hostile(
        &jail,
        &[
            vec![
                dir("usr", 0o755),
                dir("usr/lib", 0o755),
                file("usr/lib/a", b"a", 0o644),
            ],
            vec![symlink("usr/lib", &jail.sentinel())],
            vec![file("usr/lib/victim", b"overwritten", 0o644)],
        ],
    );
    assert!(through(&e, "usr/lib/victim", "usr/lib"), "{e}");
}

#[test]
fn a_directory_entry_beneath_a_link_is_refused() {
    let jail = Jail::new();
    let e = hostile(
        &jail,
        &[
            vec![symlink("opt", &jail.sentinel())],
            vec![dir("opt/sub/new", 0o777)],
        ],
    );
    assert!(through(&e, "opt/sub/new", "opt"), "{e}");
}

#[test]
fn a_symlink_entry_beneath_a_link_is_refused() {
    let jail = Jail::new();
    let e = hostile(
        &jail,
        &[
            vec![symlink("opt", &jail.sentinel())],
            vec![symlink("opt/planted", "/etc/shadow")],
        ],
    );
    assert!(through(&e, "opt/planted", "opt"), "{e}");
}

#[test]
fn a_whiteout_whose_parent_is_a_link_is_refused() {
    let jail = Jail::new();
    let e = hostile(
        &jail,
        &[
            vec![symlink("cache", &jail.sentinel())],
            vec![file("cache/.wh.victim", b"", 0o644)],
        ],
    );
    assert!(through(&e, "cache/.wh.victim", "cache"), "{e}");
}

#[test]
fn an_opaque_whiteout_whose_parent_is_a_link_is_refused() {
    let jail = Jail::new();
    let e = hostile(
        &jail,
        &[
            vec![symlink("cache", &jail.sentinel())],
            vec![file("cache/.wh..wh..opq", b"", 0o644)],
        ],
    );
    assert!(through(&e, "cache/.wh..wh..opq", "cache"), "{e}");
}

#[test]
fn an_opaque_whiteout_below_a_linked_grandparent_is_refused() {
    let jail = Jail::new();
    let e = hostile(
        &jail,
        &[
            vec![symlink("var", &jail.sentinel())],
            vec![file("var/sub/.wh..wh..opq", b"", 0o644)],
        ],
    );
    assert!(through(&e, "var/sub/.wh..wh..opq", "var"), "{e}");
}

#[test]
fn a_hard_link_whose_target_goes_through_a_link_is_refused() {
    let jail = Jail::new();
    let e = hostile(
        &jail,
        &[
            vec![symlink("host", &jail.sentinel())],
            vec![hardlink("stolen", "host/secret")],
        ],
    );
    assert!(
        matches!(e, BundleError::HardLinkEscape { ref path, ref target } if path == "stolen" && target == "host/secret"),
        "{e}"
    );
}

#[test]
fn a_hard_link_to_a_link_that_points_outside_is_refused() {
    let jail = Jail::new();
    let secret = format!("{}/secret", jail.sentinel());
    let e = hostile(&jail, &[vec![symlink("s", &secret), hardlink("h", "s")]]);
    assert!(
        matches!(e, BundleError::HardLinkEscape { ref path, .. } if path == "h"),
        "{e}"
    );
}

#[test]
fn a_hard_link_to_a_file_outside_the_rootfs_is_refused() {
    let jail = Jail::new();
    let secret = format!("{}/secret", jail.sentinel());
    let e = hostile(&jail, &[vec![hardlink("stolen", &secret)]]);
    assert!(matches!(e, BundleError::HardLinkEscape { .. }), "{e}");
    let e = hostile(&jail, &[vec![hardlink("stolen", "../sentinel/secret")]]);
    assert!(matches!(e, BundleError::HardLinkEscape { .. }), "{e}");
}

#[test]
fn entries_over_existing_links_replace_the_links_and_never_write_through_them() {
    // Layer 1 plants links to the sentinel under names that layer 2 then fills: a file, a
    // directory (with a mode), a hard link and a whiteout. Each must act on the link itself.
    let jail = Jail::new();
    let before = jail.sentinel_state();
    let s = jail.sentinel();
    let (_b, vb) = signed_from_tars(&[
        raw_tar(&[
            file("real", b"real", 0o644),
            symlink("passwd", &format!("{s}/passwd")),
            symlink("dir", &format!("{s}/sub")),
            symlink("hl", &format!("{s}/secret")),
            symlink("gone", &format!("{s}/victim")),
            dir("tree", 0o755),
            symlink("tree/out", &s),
            symlink("tree/secret", &format!("{s}/secret")),
            dir("opq", 0o755),
            symlink("opq/out", &s),
            symlink("opq/sub", &format!("{s}/sub")),
        ]),
        raw_tar(&[
            file("passwd", b"inside", 0o600),
            dir("dir", 0o700),
            hardlink("hl", "real"),
            file(".wh.gone", b"", 0o644),
            // A file over a directory holding links out: the links go, not their targets.
            file("tree", b"t", 0o644),
            // An opaque whiteout over links out: likewise.
            file("opq/.wh..wh..opq", b"", 0o644),
        ]),
    ]);
    let out = vb.unpack_rootfs(&jail.root()).unwrap();
    assert_eq!(out.setuid_cleared, 0);
    let snap = snapshot(&jail.root());
    assert_eq!(
        snap,
        vec![
            ("dir".to_string(), "dir", 0o700, vec![]),
            ("hl".to_string(), "file", 0o644, b"real".to_vec()),
            ("opq".to_string(), "dir", 0o755, vec![]),
            ("passwd".to_string(), "file", 0o600, b"inside".to_vec()),
            ("real".to_string(), "file", 0o644, b"real".to_vec()),
            ("tree".to_string(), "file", 0o644, b"t".to_vec()),
        ]
    );
    assert_eq!(jail.sentinel_state(), before);
}

#[test]
fn device_fifo_traversal_and_absolute_entries_keep_their_own_errors() {
    let jail = Jail::new();
    let (_b, vb) = signed_from_tars(&[raw_tar(&[
        special("dev/null", tar::EntryType::Char),
        special("fifo", tar::EntryType::Fifo),
    ])]);
    assert_eq!(
        vb.contents().unwrap().special_files,
        2,
        "shown before unpacking"
    );
    let e = hostile(&jail, &[vec![special("dev/null", tar::EntryType::Char)]]);
    assert!(
        matches!(
            e,
            BundleError::SpecialFile {
                kind: "character device",
                ..
            }
        ),
        "{e}"
    );
    let e = hostile(&jail, &[vec![special("sda", tar::EntryType::Block)]]);
    assert!(
        matches!(
            e,
            BundleError::SpecialFile {
                kind: "block device",
                ..
            }
        ),
        "{e}"
    );
    let e = hostile(&jail, &[vec![special("initctl", tar::EntryType::Fifo)]]);
    assert!(
        matches!(e, BundleError::SpecialFile { kind: "FIFO", .. }),
        "{e}"
    );
    let e = hostile(&jail, &[vec![file("../sentinel/victim", b"x", 0o644)]]);
    assert!(matches!(e, BundleError::PathTraversal(_)), "{e}");
    let abs = format!("{}/victim", jail.sentinel());
    let e = hostile(&jail, &[vec![file(&abs, b"x", 0o644)]]);
    assert!(
        matches!(e, BundleError::AbsolutePath(ref p) if *p == abs),
        "{e}"
    );
}

#[test]
fn build_clears_and_counts_setuid_bits_instead_of_refusing() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("usr/bin")).unwrap();
    write_mode(&rootfs.join("trainer"), b"#!/bin/sh\n", 0o755);
    write_mode(
        &rootfs.join("usr/bin/su"),
        &host_bytes("/usr/bin/su"),
        0o4755,
    );
    write_mode(&rootfs.join("usr/bin/chage"), b"chage", 0o2755);
    std::os::unix::fs::symlink("/usr/bin/su", rootfs.join("usr/bin/su-link")).unwrap();
    let out = tmp.path().join("image");
    let built = rapha_bundle::build_image_counted(
        &rapha_bundle::BuildSpec {
            rootfs: rootfs.clone(),
            entrypoint: vec!["/trainer".into()],
            env: vec![],
        },
        &out,
    )
    .unwrap();
    assert_eq!(built.setuid_cleared, 2);
    // The host's files are not changed by the build.
    assert_eq!(
        std::fs::metadata(rootfs.join("usr/bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(built.manifest_digest.to_oci().len(), 71);
}

/// Appends the host tree `src` as `name` (symlinks kept, no file over 1 MiB so the image
/// stays small); returns how many files and directories carry a setuid/setgid bit.
fn append_host_tree(b: &mut tar::Builder<&mut Vec<u8>>, src: &Path, name: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(src) else {
        return 0;
    };
    let ft = meta.file_type();
    if !(ft.is_dir() || ft.is_symlink() || ft.is_file()) || (ft.is_file() && meta.len() > 1 << 20) {
        return 0;
    }
    let mut n = u64::from(meta.mode() & 0o6000 != 0 && !ft.is_symlink());
    b.append_path_with_name(src, name).unwrap();
    if ft.is_dir() {
        let mut kids: Vec<_> = std::fs::read_dir(src)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        kids.sort();
        for k in kids {
            n += append_host_tree(b, &src.join(&k), &name.join(&k));
        }
    }
    n
}

/// Opt-in (`RAPHA_SLOW=1`): this machine's own Debian tree (`/etc`, `/usr/bin`, `/usr/sbin`,
/// `/usr/lib/python3.11`; files up to 1 MiB) as a two-layer image, unpacked with every
/// symlink kept as it is on the host and every setuid/setgid bit cleared and counted; prints
/// the unpack time next to GNU tar's extraction of the same layers.
#[test]
fn the_hosts_own_debian_tree_unpacks_with_links_kept_and_setuid_cleared() {
    if std::env::var_os("RAPHA_SLOW").is_none() {
        eprintln!("skipped: set RAPHA_SLOW=1");
        return;
    }
    let mut l1 = Vec::new();
    let mut l2 = Vec::new();
    let mut setuid = 0;
    {
        let mut b = tar::Builder::new(&mut l1);
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Complete);
        for (src, name) in [
            ("/etc", "etc"),
            ("/usr/bin", "usr/bin"),
            ("/usr/sbin", "usr/sbin"),
        ] {
            setuid += append_host_tree(&mut b, Path::new(src), Path::new(name));
        }
        b.finish().unwrap();
    }
    {
        let mut b = tar::Builder::new(&mut l2);
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Complete);
        let src = Path::new("/usr/lib/python3.11");
        setuid += append_host_tree(&mut b, src, Path::new("usr/lib/python3.11"));
        b.finish().unwrap();
    }
    let jail = Jail::new();
    let (_b, vb) = signed_from_tars(&[l1.clone(), l2.clone()]);
    let t = std::time::Instant::now();
    let out = vb.unpack_rootfs(&jail.root()).unwrap();
    let ours = t.elapsed();
    assert_eq!(out.setuid_cleared, setuid);
    assert!(setuid > 0, "the host has setuid binaries");
    let mut links = 0;
    let mut absolute = 0;
    for (path, kind, mode, bytes) in snapshot(&jail.root()) {
        assert_eq!(mode & 0o6000, 0, "{path}");
        let host = Path::new("/").join(&path);
        if kind == "symlink" {
            let target = std::fs::read_link(&host).unwrap();
            assert_eq!(bytes, target.as_os_str().as_encoded_bytes(), "{path}");
            links += 1;
            absolute += usize::from(target.is_absolute());
        } else if kind == "file" {
            assert_eq!(
                bytes.len() as u64,
                std::fs::symlink_metadata(&host).unwrap().len()
            );
        }
    }
    let tar_dir = jail.tmp.path().join("gnu-tar");
    std::fs::create_dir(&tar_dir).unwrap();
    let t = std::time::Instant::now();
    for layer in [&l1, &l2] {
        let mut child = std::process::Command::new("tar")
            .args(["-x", "-C"])
            .arg(&tar_dir)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), layer).unwrap();
        assert!(child.wait().unwrap().success());
    }
    let gnu = t.elapsed();
    eprintln!(
        "host tree: {} entries, {} MB, {links} symlinks ({absolute} absolute), {setuid} \
         setuid/setgid cleared; unpack (re-hash + verify diff_ids) {:.2?}, GNU tar -x {:.2?}",
        out.entries,
        out.bytes >> 20,
        ours,
        gnu
    );
}
