use std::os::unix::fs::symlink;

use rapha_core::fs::{walk_files, write_atomic};

#[test]
fn walk_lists_every_regular_file_below_sorted_and_skips_links() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("b/c")).unwrap();
    std::fs::write(d.join("b/c/z"), b"1").unwrap();
    std::fs::write(d.join("b/a"), b"2").unwrap();
    std::fs::write(d.join("a"), b"3").unwrap();
    symlink(d.join("a"), d.join("link-to-a")).unwrap();
    symlink(d.join("b"), d.join("link-to-b")).unwrap();
    let files = walk_files(d).unwrap();
    assert_eq!(files, [d.join("a"), d.join("b/a"), d.join("b/c/z")]);
}

#[test]
fn walk_of_a_missing_directory_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = walk_files(&missing).unwrap_err();
    assert_eq!(err.path, missing);
    assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("state.json");
    write_atomic(&f, b"old").unwrap();
    write_atomic(&f, b"new").unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"new");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state.json"]);
}

// A key file is opened once without following links, and its type, mode, owner and size are
// checked on that open handle: nothing the checks saw can be swapped before the read.

mod secret_files {
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::Path;
    use std::time::Duration;

    use rapha_core::fs::{read_secret, SecretFileError};
    use rapha_core::{CoreError, HmacKey};

    fn private_file(path: &Path, bytes: &[u8]) {
        rapha_core::fs::write_new_secret(path, bytes).unwrap();
    }

    #[test]
    fn a_private_regular_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        private_file(&f, &[7u8; 32]);
        assert_eq!(read_secret(&f, 32).unwrap().as_slice(), &[7u8; 32]);
        assert!(HmacKey::load(&f).is_ok());
    }

    #[test]
    fn a_symlink_to_a_private_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        private_file(&f, &[7u8; 32]);
        let link = dir.path().join("link");
        symlink(&f, &link).unwrap();
        assert!(matches!(
            read_secret(&link, 32),
            Err(SecretFileError::Symlink)
        ));
        let Err(err) = HmacKey::load(&link) else {
            panic!("the HMAC key loader followed the link")
        };
        assert!(
            err.to_string().contains("symbolic link"),
            "the HMAC key loader refuses the link and says why: {err}"
        );
    }

    #[test]
    fn a_loose_mode_is_refused_with_the_mode_found() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        private_file(&f, &[7u8; 32]);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            read_secret(&f, 32),
            Err(SecretFileError::Loose(0o640))
        ));
        assert!(matches!(
            HmacKey::load(&f),
            Err(CoreError::HmacKeyPermissions { mode: 0o640, .. })
        ));
    }

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_blocking_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("key");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || tx.send(read_secret(&path, 32).map(|_| ())));
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("reading a FIFO as a key file blocked: nobody writes to it");
        assert!(matches!(got, Err(SecretFileError::NotRegular)), "{got:?}");
    }

    #[test]
    fn a_directory_is_not_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            read_secret(dir.path(), 32),
            Err(SecretFileError::NotRegular)
        ));
    }

    #[test]
    fn a_file_larger_than_any_key_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        private_file(&f, b"");
        // Sparse: 4 GiB on the inode, nothing on disk. Reading it whole would allocate 4 GiB.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(4 << 30)
            .unwrap();
        assert!(matches!(
            read_secret(&f, 4096),
            Err(SecretFileError::TooLarge { max: 4096 })
        ));
    }

    #[test]
    fn a_key_file_owned_by_another_user_is_refused() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        private_file(&f, &[7u8; 32]);
        // A new file is owned by the user who made it: the reader.
        if std::fs::metadata(&f).unwrap().uid() != 0 {
            // Only root can give a file to another user; CI runs as root.
            assert!(
                std::env::var_os("RAPHA_REQUIRE_SERVICES").is_none(),
                "this test needs root"
            );
            return;
        }
        std::os::unix::fs::chown(&f, Some(4242), None).unwrap();
        match read_secret(&f, 32) {
            Err(SecretFileError::Owner {
                owner: 4242,
                reader: 0,
            }) => {}
            other => panic!("a key owned by uid 4242 was not refused: {other:?}"),
        }
        let Err(err) = HmacKey::load(&f) else {
            panic!("the HMAC key loader read a key owned by uid 4242")
        };
        let err = err.to_string();
        assert!(err.contains("owned by uid 4242"), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_not_found() {
        let dir = tempfile::tempdir().unwrap();
        match read_secret(&dir.path().join("nope"), 32) {
            Err(SecretFileError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
    }
}
