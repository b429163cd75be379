//! The static test trainer (`crates/rapha-enclave/testdata/trainer.c`) that the enclave, node,
//! CLI and bench tests run in the sandbox, the compiler of the C test trainers (each includes
//! `c/feed.h`), and the host checks that decide whether they can run.

use std::path::Path;
use std::process::Command;

/// Compiles the test trainer statically (`gcc -static -O1 … -lm`) to `out`; false when gcc or
/// a static libc is missing or the build fails.
pub fn compile_test_trainer(out: &Path) -> bool {
    compile_c_trainer(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../rapha-enclave/testdata/trainer.c"),
        out,
    )
}

/// Compiles a C test trainer `src` statically (`gcc -static -O1 … -lm`) to `out`, with
/// `c/feed.h` (the trainers' side of protocol v1) on the include path; false when gcc or a
/// static libc is missing or the build fails.
pub fn compile_c_trainer(src: &Path, out: &Path) -> bool {
    Command::new("gcc")
        .args(["-static", "-O1", "-I"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("c"))
        .arg("-o")
        .arg(out)
        .arg(src)
        .arg("-lm")
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `runc` runs and this process is root, as the sandbox needs.
pub fn runc_as_root() -> bool {
    let runc = Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    runc && root
}
