//! The v1 fixture's failing trainer: exits with status 3 as soon as it starts, before it reads
//! a single record. Built as a static binary (run.sh) and signed as `exit-nonzero`.

fn main() {
    eprintln!("exit-nonzero: this fixture trainer always exits with status 3");
    std::process::exit(3);
}
