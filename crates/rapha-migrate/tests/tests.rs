//! Store versions: stamping, forward migration in one transaction, refusal of newer stores.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use rapha_migrate::sqlite::{self, Migration, Schema};
use rapha_migrate::{dir, Opened, VersionError};
use rusqlite::{Connection, Transaction};

const V1: &str = "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);";

fn add_note(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch("ALTER TABLE items ADD COLUMN note TEXT; UPDATE items SET note = 'moved';")
}

fn broken(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch("CREATE TABLE half_done (x); INSERT INTO items (name) VALUES ('ghost');")?;
    tx.execute_batch("SELECT no_such_function()")
}

const ONE: Schema = Schema {
    store: "test store",
    create_v1: V1,
    migrations: &[],
};
const TWO: Schema = Schema {
    store: "test store",
    create_v1: V1,
    migrations: &[add_note as Migration],
};
const THREE_BROKEN: Schema = Schema {
    store: "test store",
    create_v1: V1,
    migrations: &[add_note as Migration, broken as Migration],
};

fn version(c: &Connection) -> i64 {
    c.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

fn tables(c: &Connection) -> Vec<String> {
    let mut s = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    s.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_new_store_is_created_at_the_current_version() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("s.db");
    let mut c = Connection::open(&path).unwrap();
    let o = sqlite::open(&mut c, &path, &TWO).unwrap();
    assert_eq!(o, Opened { found: 0, now: 2 });
    assert_eq!(version(&c), 2);
    assert_eq!(tables(&c), ["items"]);
    // Opening again changes nothing.
    assert!(!sqlite::open(&mut c, &path, &TWO).unwrap().changed());
}

#[test]
fn an_unversioned_store_is_version_one_and_is_stamped_on_open() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("s.db");
    let mut c = Connection::open(&path).unwrap();
    c.execute_batch(V1).unwrap();
    c.execute("INSERT INTO items (name) VALUES ('kept')", [])
        .unwrap();
    assert_eq!(version(&c), 0);
    assert_eq!(
        sqlite::open(&mut c, &path, &ONE).unwrap(),
        Opened { found: 0, now: 1 }
    );
    assert_eq!(version(&c), 1);
    // And migrates forward from there, keeping its rows.
    assert_eq!(
        sqlite::open(&mut c, &path, &TWO).unwrap(),
        Opened { found: 1, now: 2 }
    );
    let note: String = c
        .query_row("SELECT note FROM items WHERE name = 'kept'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(note, "moved");
}

#[test]
fn a_store_newer_than_the_code_is_refused_and_left_untouched() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("s.db");
    let mut c = Connection::open(&path).unwrap();
    c.execute_batch(V1).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = sqlite::open(&mut c, &path, &TWO).unwrap_err();
    assert!(
        matches!(
            err,
            VersionError::TooNew {
                found: 99,
                supported: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("the test store at ")
            && msg.contains("is version 99, newer than this node supports (version 2)"),
        "{msg}"
    );
    assert_eq!(version(&c), 99);
    drop(c);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Read-only openers refuse it too.
    let c = Connection::open(&path).unwrap();
    assert!(matches!(
        sqlite::check(&c, &path, &TWO),
        Err(VersionError::TooNew { found: 99, .. })
    ));
}

#[test]
fn a_failing_migration_leaves_the_store_as_it_was() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("s.db");
    let mut c = Connection::open(&path).unwrap();
    c.execute_batch(V1).unwrap();
    c.execute("INSERT INTO items (name) VALUES ('kept')", [])
        .unwrap();
    let err = sqlite::open(&mut c, &path, &THREE_BROKEN).unwrap_err();
    assert!(
        matches!(err, VersionError::Migration { from: 2, to: 3, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("the store was left as it was"),
        "{err}"
    );
    // Neither the first (successful) migration, nor the broken one's partial work, nor a
    // version stamp survived: one transaction.
    assert_eq!(version(&c), 0);
    assert_eq!(tables(&c), ["items"]);
    let cols: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_info('items')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(cols, ["id", "name"]);
    let n: i64 = c
        .query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_reader_refuses_a_store_not_yet_migrated() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("s.db");
    let mut c = Connection::open(&path).unwrap();
    sqlite::open(&mut c, &path, &ONE).unwrap();
    assert_eq!(sqlite::check(&c, &path, &ONE).unwrap(), 1);
    assert!(matches!(
        sqlite::check(&c, &path, &TWO),
        Err(VersionError::NotMigrated {
            found: 1,
            supported: 2,
            ..
        })
    ));
}

fn rename_files(d: &std::path::Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(d)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "old") {
            std::fs::rename(&p, p.with_extension("new"))?;
        }
    }
    Ok(())
}

#[test]
fn a_directory_store_is_stamped_migrated_and_a_newer_one_refused() {
    const D1: dir::Schema = dir::Schema {
        store: "approval store",
        migrations: &[],
    };
    const D2: dir::Schema = dir::Schema {
        store: "approval store",
        migrations: &[rename_files as dir::Migration],
    };
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.old"), b"x").unwrap();
    assert_eq!(
        dir::open(d.path(), &D1).unwrap(),
        Opened { found: 0, now: 1 }
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join(dir::VERSION_FILE)).unwrap(),
        "1\n"
    );
    assert_eq!(
        dir::open(d.path(), &D2).unwrap(),
        Opened { found: 1, now: 2 }
    );
    assert!(d.path().join("a.new").exists());
    std::fs::write(d.path().join(dir::VERSION_FILE), b"99\n").unwrap();
    let err = dir::open(d.path(), &D2).unwrap_err();
    assert!(
        matches!(
            err,
            VersionError::TooNew {
                found: 99,
                supported: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join(dir::VERSION_FILE)).unwrap(),
        "99\n"
    );
}
