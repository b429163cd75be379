//! Checks the v1 receipts with the verifier of commit 665d500 (`rapha_receipt::verify`, what
//! `rapha verify` runs), pinned to the fixture node's address. Run as an example of `rapha-demo`
//! in a worktree at 665d500 (see run.sh); prints one line per receipt, exits non-zero on failure.

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "testdata/v1".into()));
    let fixture: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("fixture.json"))?)?;
    let node: rapha_receipt::Address = fixture["node"]["address"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("fixture.json has no node address"))?
        .parse()?;
    for outcome in ["completed", "refused", "failed"] {
        let bytes = std::fs::read(dir.join(format!("receipts/{outcome}.json")))?;
        let v = rapha_receipt::verify(
            &bytes,
            &rapha_receipt::VerifyOptions {
                node_address: Some(node),
                ..Default::default()
            },
        )?;
        println!(
            "{outcome}: VERIFIED job {} outcome {:?} leaf {} head {} signer {}",
            v.body.job_id, v.body.outcome, v.leaf_index, v.head.tree_size, v.signer
        );
    }
    Ok(())
}
