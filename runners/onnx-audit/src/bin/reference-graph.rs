//! Writes the reference trainer's pinned graph: `reference-graph PATH` (the committed one is
//! `trainers/lesion-classifier/model.onnx`; a test checks it equals what this writes).

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: reference-graph PATH");
        std::process::exit(2);
    };
    if let Err(e) = std::fs::write(&path, onnx_audit::reference::reference_graph()) {
        eprintln!("reference-graph: {e}");
        std::process::exit(1);
    }
}
