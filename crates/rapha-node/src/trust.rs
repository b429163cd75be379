//! `rapha-node trust add|list|remove|verify`: the hospital's trust store of publisher keys.
//! Glue over `rapha_bundle::trust`; verification is the same code `rapha bundle verify` runs.

use std::path::PathBuf;

use clap::Subcommand;
use rapha_bundle::trust::parse_time;
use rapha_bundle::{PublicKey, TrustStore};

/// `rapha-node trust ...`.
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust a publisher's public key (KEY.pub from `rapha keygen`).
    Add {
        /// Trust store directory (created if missing).
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// The publisher's public key file.
        #[arg(long, value_name = "KEY.pub")]
        key: PathBuf,
        /// Publisher name; bundles must name this publisher in their predicate.
        #[arg(long)]
        name: String,
        /// Trainer names this key may sign, comma-separated (default: any).
        #[arg(long, value_delimiter = ',')]
        trainers: Vec<String>,
        /// Expiry time, RFC 3339 (e.g. 2027-01-31T00:00:00Z).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List trusted publishers.
    List {
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a publisher (its key becomes unknown), or with --revoke mark it revoked.
    Remove {
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        #[arg(long)]
        name: String,
        /// Keep the entry but mark the key revoked.
        #[arg(long)]
        revoke: bool,
    },
    /// Verify a bundle against the store.
    Verify {
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
    },
}

/// Runs `rapha-node trust ...`.
pub fn run(cmd: TrustCommand) -> anyhow::Result<()> {
    match cmd {
        TrustCommand::Add {
            store,
            key,
            name,
            trainers,
            expires,
        } => {
            let public = PublicKey::load(&key)?;
            let expires = expires.as_deref().map(parse_time).transpose()?;
            let p = TrustStore::add(&store, &name, &public, &trainers, expires)?;
            println!(
                "trusted {} (keyid {}) for trainers {}",
                p.name,
                p.keyid(),
                p.trainers.join(",")
            );
        }
        TrustCommand::List { store, json } => {
            let store = TrustStore::open(&store)?;
            let now = time::OffsetDateTime::now_utc();
            let rows: Vec<serde_json::Value> = store
                .publishers()
                .iter()
                .map(|p| {
                    let status = if p.revoked {
                        "revoked"
                    } else if p.expires.is_some_and(|e| now >= e) {
                        "expired"
                    } else {
                        "active"
                    };
                    serde_json::json!({
                        "name": p.name,
                        "keyid": p.keyid(),
                        "algorithm": p.key.algorithm().name(),
                        "trainers": p.trainers,
                        "expires": p.expires.map(|e| e.to_string()),
                        "status": status,
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for r in &rows {
                    println!(
                        "{}\t{}\t{}\ttrainers={}\texpires={}",
                        r["name"].as_str().unwrap_or_default(),
                        r["status"].as_str().unwrap_or_default(),
                        r["keyid"].as_str().unwrap_or_default(),
                        r["trainers"]
                            .as_array()
                            .map(|a| a
                                .iter()
                                .filter_map(|t| t.as_str())
                                .collect::<Vec<_>>()
                                .join(","))
                            .unwrap_or_default(),
                        r["expires"].as_str().unwrap_or("never"),
                    );
                }
            }
        }
        TrustCommand::Remove {
            store,
            name,
            revoke,
        } => {
            if revoke {
                TrustStore::revoke(&store, &name, time::OffsetDateTime::now_utc())?;
                println!("revoked {name}");
            } else {
                TrustStore::remove(&store, &name)?;
                println!("removed {name}");
            }
        }
        TrustCommand::Verify { store, bundle } => {
            let store = TrustStore::open(&store)?;
            let vb = rapha_bundle::verify_bundle(&bundle, &store)?;
            println!("verified");
            println!("publisher: {}", vb.publisher());
            println!("trainer:   {} {}", vb.trainer_name(), vb.trainer_version());
            println!("manifest:  {}", vb.manifest_digest().to_oci());
        }
    }
    Ok(())
}
