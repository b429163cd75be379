//! `rapha keygen` and `rapha bundle build|sign|verify|inspect`: glue over `rapha-bundle`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use rapha_bundle::keys::{public_path, write_keypair};
use rapha_bundle::{BuildSpec, SigningKey, TrainerSpec, TrustStore};

/// `rapha keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Private key file to create (mode 0600); the public key goes to KEY.pub.
    #[arg(long, value_name = "KEY")]
    out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `rapha bundle ...`.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Build a single-layer OCI image layout from a directory (deterministic).
    #[command(after_help = crate::exit::help())]
    Build {
        /// Directory that becomes the image's root filesystem.
        #[arg(long)]
        rootfs: PathBuf,
        /// Path of the trainer executable inside the image, e.g. /trainer.
        #[arg(long, value_name = "PATH")]
        entrypoint: String,
        /// Environment variable for the trainer (repeatable).
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// Output OCI layout directory (must not exist or be empty).
        #[arg(long, value_name = "LAYOUT")]
        out: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sign an OCI layout or oci-archive tar with a trainer predicate into a bundle.
    #[command(after_help = crate::exit::help())]
    Sign {
        /// Private signing key (from `rapha keygen`).
        #[arg(long)]
        key: PathBuf,
        /// OCI image layout directory or oci-archive tar.
        #[arg(long)]
        image: PathBuf,
        /// trainer.toml: publisher, name, version, outputs, resources, requested fields.
        #[arg(long)]
        predicate: PathBuf,
        /// Output bundle directory (must not exist or be empty).
        #[arg(long, value_name = "BUNDLE")]
        out: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle against a trust store, as the hospital node does.
    #[command(after_help = crate::exit::help())]
    Verify {
        /// Trust store directory (managed with `rapha-node trust`).
        #[arg(long, value_name = "DIR")]
        trust_store: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
    },
    /// Show what a bundle claims (NOT verified).
    #[command(after_help = crate::exit::help())]
    Inspect {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
    },
}

/// Runs `rapha keygen`.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let public = write_keypair(&SigningKey::generate_ed25519(), &args.out)?;
    if args.json {
        let out = serde_json::json!({
            "private_key": args.out.display().to_string(),
            "public_key": public_path(&args.out).display().to_string(),
            "algorithm": public.algorithm().name(),
            "keyid": public.keyid(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "private key: {} (mode 0600, keep it secret)",
        args.out.display()
    );
    println!("public key:  {}", public_path(&args.out).display());
    println!("algorithm:   {}", public.algorithm().name());
    println!("keyid:       {}", public.keyid());
    Ok(())
}

/// Runs `rapha bundle ...`.
pub fn run(cmd: BundleCommand) -> anyhow::Result<()> {
    match cmd {
        BundleCommand::Build {
            rootfs,
            entrypoint,
            env,
            out,
            json,
        } => {
            let built = rapha_bundle::build_image_counted(
                &BuildSpec {
                    rootfs,
                    entrypoint: vec![entrypoint],
                    env,
                },
                &out,
            )?;
            let digest = built.manifest_digest;
            if json {
                let v = serde_json::json!({
                    "layout": out.display().to_string(),
                    "manifest": digest.to_oci(),
                    "setuid_cleared": built.setuid_cleared,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("built {}", out.display());
                println!("manifest: {}", digest.to_oci());
                if built.setuid_cleared > 0 {
                    println!(
                        "setuid/setgid bits cleared on {} files or directories (the trainer \
                         runs without capabilities)",
                        built.setuid_cleared
                    );
                }
            }
        }
        BundleCommand::Sign {
            key,
            image,
            predicate,
            out,
            json,
        } => {
            let key = SigningKey::load(&key)?;
            let text = std::fs::read_to_string(&predicate)
                .with_context(|| format!("reading {}", predicate.display()))?;
            let spec = TrainerSpec::from_toml(&text)
                .with_context(|| format!("in {}", predicate.display()))?;
            let digest = rapha_bundle::sign_bundle(&key, &image, &spec, &out)?;
            if json {
                let v = serde_json::json!({
                    "bundle": out.display().to_string(),
                    "publisher": spec.publisher,
                    "trainer": spec.name,
                    "version": spec.version,
                    "manifest": digest.to_oci(),
                    "keyid": key.public_key().keyid(),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("signed {}", out.display());
                println!("trainer:  {} {}", spec.name, spec.version);
                println!("manifest: {}", digest.to_oci());
                println!("keyid:    {}", key.public_key().keyid());
            }
        }
        BundleCommand::Verify {
            trust_store,
            json,
            bundle,
        } => {
            let store = TrustStore::open(&trust_store)?;
            let vb = rapha_bundle::verify_bundle(&bundle, &store)?;
            if json {
                let out = serde_json::json!({
                    "verified": true,
                    "publisher": vb.publisher(),
                    "keyid": vb.keyid(),
                    "trainer": vb.trainer_name(),
                    "version": vb.trainer_version(),
                    "manifest": vb.manifest_digest().to_oci(),
                    "predicate": vb.predicate(),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("verified");
                println!("publisher: {}", vb.publisher());
                println!("trainer:   {} {}", vb.trainer_name(), vb.trainer_version());
                println!("manifest:  {}", vb.manifest_digest().to_oci());
                println!("keyid:     {}", vb.keyid());
            }
        }
        BundleCommand::Inspect { json, bundle } => {
            let ins = rapha_bundle::inspect_bundle(&bundle)?;
            // What the layers hold (blobs and diff_ids checked, signature not); a bundle whose
            // layers cannot be read is still shown, with the reason.
            let contents = rapha_bundle::survey_image(&bundle, &rapha_bundle::Limits::default())
                .map_err(|e| e.to_string());
            if json {
                let mut v = serde_json::to_value(&ins)?;
                if let Some(obj) = v.as_object_mut() {
                    let c = match &contents {
                        Ok(c) => serde_json::to_value(c)?,
                        Err(e) => serde_json::json!({ "error": e }),
                    };
                    obj.insert("contents".into(), c);
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_inspection(&ins);
                print_contents(&contents);
            }
        }
    }
    Ok(())
}

fn print_contents(contents: &Result<rapha_bundle::ImageContents, String>) {
    let c = match contents {
        Ok(c) => c,
        Err(e) => {
            println!("contents:        unreadable: {e}");
            return;
        }
    };
    println!(
        "contents:        {} entries, {} bytes in {} layers: {} files, {} directories, \
         {} symlinks ({} absolute), {} hard links, {} whiteouts",
        c.entries,
        c.bytes,
        c.layers,
        c.files,
        c.directories,
        c.symlinks,
        c.absolute_symlinks,
        c.hard_links,
        c.whiteouts
    );
    println!(
        "setuid/setgid:   {} (cleared when the node unpacks the image)",
        c.setuid_setgid
    );
    if c.special_files > 0 {
        println!(
            "devices/FIFOs:   {} (the node refuses to unpack this image)",
            c.special_files
        );
    }
}

fn print_inspection(ins: &rapha_bundle::Inspection) {
    println!("NOT VERIFIED: this shows what the bundle claims; use `rapha bundle verify`.");
    println!(
        "manifest:        {}",
        ins.manifest_digest.as_deref().unwrap_or("-")
    );
    for (i, l) in ins.layers.iter().enumerate() {
        println!(
            "layer {i}:         {} ({} bytes, {})",
            l.digest, l.size, l.media_type
        );
    }
    if !ins.signed {
        println!("signature:       none (unsigned bundle)");
        return;
    }
    println!(
        "signed manifest: {}",
        ins.signed_manifest.as_deref().unwrap_or("-")
    );
    println!(
        "payload type:    {}",
        ins.payload_type.as_deref().unwrap_or("-")
    );
    println!("key ids:         {}", ins.keyids.join(", "));
    let Some(p) = &ins.predicate else {
        println!("predicate:       unreadable");
        return;
    };
    println!("publisher:       {}", p.publisher);
    println!("trainer:         {} {}", p.trainer.name, p.trainer.version);
    println!("entrypoint:      {}", p.entrypoint.join(" "));
    if !p.env.is_empty() {
        println!("env:             {}", p.env.join(" "));
    }
    let r = &p.resources;
    println!(
        "resources:       {} MB memory, {} cpus, {} pids, {} s wall, {} MiB /tmp, {} gpus",
        r.memory_mb, r.cpus, r.pids, r.wall_seconds, r.tmp_mb, r.gpus
    );
    for o in &p.outputs {
        println!(
            "output:          {} ({:?}, max {} bytes)",
            o.name, o.kind, o.max_bytes
        );
    }
    if !p.requested_fields.is_empty() {
        println!("requested:       {}", p.requested_fields.join(", "));
    }
}
