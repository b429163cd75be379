//! docs/configuration.md's demo walkthrough, run exactly as written: `rapha-node init --demo
//! --dir`, `rapha-demo up`, `rapha-node serve` answering /healthz, and one job through the
//! `rapha` CLI to a verified receipt. The block is taken from the document itself, so the
//! document cannot drift from what works. It runs in a network namespace of its own (the
//! walkthrough's fixed ports, 8042, 8545 and 8420, never meet another test's), as root, with
//! runc and anvil; skipped loudly without them unless RAPHA_REQUIRE_SERVICES=1.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::{have, ready, skip};

const MARKER: &str = "<!-- walkthrough -->";

/// The fenced `sh` block after [`MARKER`] in docs/configuration.md.
fn documented_block(root: &Path) -> String {
    let doc = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let (_, after) = doc
        .split_once(MARKER)
        .expect("docs/configuration.md marks its walkthrough");
    let body = after
        .trim_start()
        .strip_prefix("```sh\n")
        .expect("the walkthrough is a ```sh block right after its marker");
    let (block, _) = body.split_once("\n```").expect("the block is closed");
    block.to_owned()
}

/// The directory holding this build's binaries, with `rapha-node` and `rapha` in it (the
/// workspace's test build makes them; a package-only build gets them built here).
fn binaries(root: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_rapha-demo"))
        .parent()
        .unwrap()
        .to_owned();
    if !(dir.join("rapha-node").is_file() && dir.join("rapha").is_file()) {
        let target = dir.parent().unwrap();
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--locked", "-p", "rapha-node", "-p", "rapha-cli"])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(root)
            .status()
            .unwrap();
        assert!(status.success(), "building rapha-node and rapha");
    }
    dir
}

#[test]
fn the_documented_demo_walkthrough_serves_a_node_and_completes_a_job() {
    let Some(trainer) = ready() else { return };
    for (tool, arg) in [
        ("curl", "--version"),
        ("unshare", "--version"),
        ("ip", "-V"),
    ] {
        if !have(tool, arg) {
            skip(&format!("{tool} is not installed"));
            return;
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = std::fs::canonicalize(root).unwrap();
    let block = documented_block(&root);
    let bins = binaries(&root);
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("walkthrough.sh");
    // Only the harness is added around the block: strict mode, and every background process
    // stopped however the block ends.
    std::fs::write(
        &script,
        format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{block}\n"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("unshare")
        .args([
            "--net",
            "--",
            "bash",
            "-c",
            "ip link set lo up && exec bash \"$0\"",
        ])
        .arg(&script)
        .current_dir(tmp.path())
        .env("PATH", path)
        .env("REPO", &root)
        .env("TRAINER", &trainer)
        .env_remove("RAPHA_NODE")
        .env_remove("RAPHA_TOKEN")
        .env_remove("RAPHA_NODE_CONFIG")
        .stdout(Stdio::from(
            std::fs::File::create(tmp.path().join("out.log")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(tmp.path().join("err.log")).unwrap(),
        ))
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-TERM", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let log = |name: &str| std::fs::read_to_string(tmp.path().join(name)).unwrap_or_default();
    let logs = format!(
        "stdout:\n{}\nstderr:\n{}\nup.log:\n{}\nserve.log:\n{}",
        log("out.log"),
        log("err.log"),
        log("up.log"),
        log("serve.log")
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the walkthrough ended {status:?}\n{logs}"
    );
    // serve answered /healthz, and the job completed: its outputs and receipt were fetched
    // and verified against the node's address.
    let out = log("out.log");
    assert!(out.contains("{\"status\":\"ok\"}"), "{logs}");
    assert!(out.contains("outcome completed"), "{logs}");
    let results = tmp.path().join("company/results");
    for f in ["receipt.json", "model.safetensors", "metrics.json"] {
        assert!(results.join(f).is_file(), "{f} fetched\n{logs}");
    }
    // The configuration names real contracts now, and `up` left no placeholder behind.
    let config = std::fs::read_to_string(tmp.path().join("demo-node/node.toml")).unwrap();
    assert!(
        !config.contains("\"0x0000000000000000000000000000000000000000\""),
        "{config}"
    );
}
