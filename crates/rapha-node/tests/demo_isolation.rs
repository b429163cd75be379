//! I8: the production binary links neither the demo crate nor the test kit.

use std::process::Command;

#[test]
fn rapha_node_does_not_depend_on_demo_or_testkit() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tree = |extra: &[&str]| {
        Command::new(&cargo)
            .args([
                "tree",
                "-p",
                "rapha-node",
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    // Offline first (the build already fetched everything); online if the cache lacks an index.
    let mut out = tree(&["--offline"]);
    if !out.status.success() {
        out = tree(&[]);
    }
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.lines().any(|l| l.starts_with("rapha-node ")),
        "unexpected cargo tree output:\n{tree}"
    );
    assert!(
        tree.lines().any(|l| l.starts_with("rapha-policy ")),
        "the tree lists dependencies:\n{tree}"
    );
    for forbidden in ["rapha-demo ", "rapha-testkit "] {
        let hits: Vec<&str> = tree.lines().filter(|l| l.starts_with(forbidden)).collect();
        assert!(hits.is_empty(), "rapha-node links {forbidden}: {hits:?}");
    }
}
