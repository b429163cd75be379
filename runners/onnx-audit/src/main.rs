//! The audit runner: `runner [--in DIR]` (default `/in`). See the crate documentation
//! (`src/lib.rs`) and README.md for its contract with the node.

use std::path::PathBuf;

use onnx_audit::declaration::{Declaration, Input};
use onnx_audit::graph::{Scorer, BATCH};
use onnx_audit::{read_capped, weights, Refusal, MAX_GRAPH_BYTES, MAX_WEIGHTS_BYTES};
use rapha_trainer_sdk::{preprocess, Client, SdkError};

/// `audit.json` is a few lines: anything larger is not a declaration.
const MAX_DECLARATION_BYTES: u64 = 4096;

fn parse_args() -> Result<PathBuf, Refusal> {
    let mut dir = PathBuf::from("/in");
    let mut it = std::env::args_os().skip(1);
    while let Some(flag) = it.next() {
        match flag.to_str() {
            Some("--in") => {
                dir = it
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| Refusal::declaration("--in needs a directory"))?;
            }
            _ => return Err(Refusal::declaration("usage: runner [--in DIR]")),
        }
    }
    Ok(dir)
}

/// Everything the publisher chose is checked before the feed is touched.
fn prepare(dir: &std::path::Path) -> Result<Scorer, Refusal> {
    let declaration = read_capped(&dir.join("audit.json"), MAX_DECLARATION_BYTES, "audit.json")
        .map_err(|e| Refusal::declaration(e.reason))?;
    let declaration = Declaration::parse(&declaration)?;
    let weights = weights::parse(&read_capped(
        &dir.join("model.safetensors"),
        MAX_WEIGHTS_BYTES,
        "weights file",
    )?)?;
    let graph = read_capped(&dir.join("model.onnx"), MAX_GRAPH_BYTES, "graph")?;
    Scorer::load(&graph, &weights, declaration)
}

fn feed_error(e: SdkError) -> Refusal {
    Refusal::scoring(format!("record feed: {e}"))
}

/// Scores every record the feed lists and reports the scores batch by batch.
fn run(dir: &std::path::Path) -> Result<(), Refusal> {
    let scorer = prepare(dir)?;
    let Input::GreyV1 { side } = scorer.input();
    let mut client = Client::connect("onnx-audit 0.1").map_err(feed_error)?;
    let metas = client.list_all().map_err(feed_error)?;
    let (mut scored, mut unavailable) = (0usize, 0usize);
    for chunk in metas.chunks(BATCH) {
        let mut indices = Vec::with_capacity(chunk.len());
        let mut images = Vec::with_capacity(chunk.len());
        for (meta, fetched) in chunk
            .iter()
            .zip(client.records(chunk.iter().map(|m| m.index)))
        {
            match fetched {
                Ok(r) => {
                    indices.push(meta.index);
                    images.push(preprocess::grey_v1(meta, &r.pixels.to_f32(), side));
                }
                // The node could not decode this record: it gets no score (never a made-up one).
                Err(SdkError::Refused { error, .. }) if error == "unavailable" => unavailable += 1,
                Err(e) => return Err(feed_error(e)),
            }
        }
        if images.is_empty() {
            continue;
        }
        let views: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
        let scores = scorer.score(&views)?;
        let pairs: Vec<(u32, f64)> = indices.into_iter().zip(scores).collect();
        client.predict(&pairs).map_err(feed_error)?;
        scored += pairs.len();
    }
    client.done().map_err(feed_error)?;
    eprintln!("onnx-audit: scored {scored} records, {unavailable} unavailable");
    Ok(())
}

fn main() {
    let result = parse_args().and_then(|dir| run(&dir));
    if let Err(e) = result {
        eprintln!("onnx-audit: {e}");
        std::process::exit(e.code);
    }
}
