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
