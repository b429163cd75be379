//! Reference trainer for Rapha: a small CNN that learns to detect the synthetic cohort's lesion.
//!
//! Runs inside the node's sandbox, gets records over the record feed (rapha-trainer-sdk), never
//! sees a DICOM object, an identifier or a validation label. Writes `model.safetensors` and a
//! self-reported `metrics.json` to `/out`; the node computes the real metrics from the
//! validation scores this trainer submits.
//!
//! Modes:
//! - `trainer [--epochs N] [--seed S]`: train, then score the validation records (the seed sets
//!   the initial weights and the shuffling: the same seed and records give the same model);
//! - `trainer --predict WEIGHTS`: load weights, score the validation records (no training), so
//!   released weights can be scored on a fresh cohort through the same runtime.

use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{conv2d, linear, Conv2d, Conv2dConfig, Linear, Optimizer, VarBuilder, VarMap};
use rapha_trainer_sdk::{outputs, preprocess, Client, Cohort, Progress, RecordMeta, SdkError};

/// Side of the square the records are resized to: the input is the SDK's canonical `grey-v1`
/// preprocessing at this side, so the hospital's audit runner can feed the pinned graph
/// (`model.onnx`, input `[N, 1, 64, 64]`) exactly what this trainer trained on.
const SIDE: usize = 64;

#[derive(Debug)]
struct Args {
    epochs: u64,
    seed: u64,
    predict: Option<String>,
    batch: usize,
    lr: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        epochs: 25,
        seed: 7,
        predict: None,
        batch: 16,
        lr: 1e-3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--epochs" => a.epochs = val()?.parse().map_err(|e| format!("--epochs: {e}"))?,
            "--seed" => a.seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--batch" => a.batch = val()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--lr" => a.lr = val()?.parse().map_err(|e| format!("--lr: {e}"))?,
            "--predict" => a.predict = Some(val()?),
            "--help" | "-h" => return Err(
                "usage: trainer [--epochs N] [--seed S] [--batch B] [--lr LR] | --predict WEIGHTS"
                    .into(),
            ),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

struct Net {
    c1: Conv2d,
    c2: Conv2d,
    c3: Conv2d,
    fc: Linear,
}

impl Net {
    fn new(vb: &VarBuilder<'_>) -> candle_core::Result<Self> {
        let cfg = Conv2dConfig::default();
        Ok(Self {
            c1: conv2d(1, 8, 3, cfg, vb.pp("c1"))?,
            c2: conv2d(8, 16, 3, cfg, vb.pp("c2"))?,
            c3: conv2d(16, 32, 3, cfg, vb.pp("c3"))?,
            fc: linear(64, 1, vb.pp("fc"))?,
        })
    }

    /// `[batch, 1, SIDE, SIDE]` -> logits `[batch]`. Global max and mean pooling: the lesion
    /// can be anywhere, and its presence is what matters.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.c1.forward(x)?.relu()?.max_pool2d(2)?;
        let x = self.c2.forward(&x)?.relu()?.max_pool2d(2)?;
        let x = self.c3.forward(&x)?.relu()?;
        let x = x.flatten_from(2)?;
        let pooled = Tensor::cat(&[x.max(D::Minus1)?, x.mean(D::Minus1)?], 1)?;
        self.fc.forward(&pooled)?.squeeze(1)
    }
}

fn load_images(
    client: &mut Client,
    metas: &[&RecordMeta],
) -> Result<Vec<Option<Vec<f32>>>, SdkError> {
    // Several fetches in flight: the node decodes the next records while this one is
    // preprocessed. Items come back in the order asked.
    metas
        .iter()
        .zip(client.records(metas.iter().map(|m| m.index)))
        .map(|(m, fetched)| match fetched {
            Ok(r) => Ok(Some(preprocess::grey_v1(m, &r.pixels.to_f32(), SIDE))),
            // The node could not decode this record: skip it, as the protocol allows.
            Err(SdkError::Refused { error, .. }) if error == "unavailable" => Ok(None),
            Err(e) => Err(e),
        })
        .collect()
}

fn batch_tensor(images: &[&[f32]], flips: &[u8], dev: &Device) -> candle_core::Result<Tensor> {
    let mut data = Vec::with_capacity(images.len() * SIDE * SIDE);
    for (img, &flip) in images.iter().zip(flips) {
        for r in 0..SIDE {
            for c in 0..SIDE {
                let rr = if flip & 1 == 1 { SIDE - 1 - r } else { r };
                let cc = if flip & 2 == 2 { SIDE - 1 - c } else { c };
                data.push(img[rr * SIDE + cc]);
            }
        }
    }
    Tensor::from_vec(data, (images.len(), 1, SIDE, SIDE), dev)
}

/// Class-weighted binary cross-entropy on logits, numerically stable.
fn weighted_bce(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> candle_core::Result<Tensor> {
    let softplus = (logits.relu()? + ((logits.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    let per = (softplus - (targets * logits)?)?;
    (per * weights)?.sum_all()? / weights.sum_all()?.to_scalar::<f32>()? as f64
}

fn score(net: &Net, images: &[Option<Vec<f32>>], dev: &Device) -> candle_core::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(64) {
        let present: Vec<&[f32]> = chunk.iter().flatten().map(Vec::as_slice).collect();
        let probs = if present.is_empty() {
            Vec::new()
        } else {
            let x = batch_tensor(&present, &vec![0; present.len()], dev)?;
            candle_nn::ops::sigmoid(&net.forward(&x)?)?.to_vec1::<f32>()?
        };
        let mut it = probs.into_iter();
        for img in chunk {
            // A record the node could not decode gets the uninformative score.
            out.push(if img.is_some() {
                f64::from(it.next().unwrap_or(0.5))
            } else {
                0.5
            });
        }
    }
    Ok(out)
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Sets every weight from `seed`, so the same seed starts from the same network: convolution
/// kernels uniform in +-sqrt(6 / fan_in) (He, for ReLU), biases zero, and the final layer
/// zero, so training starts at logit 0 (loss ln 2) instead of from large random logits that
/// some initialisations never recover from.
fn init_weights(varmap: &VarMap, seed: u64, dev: &Device) -> candle_core::Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("weights lock poisoned".into()))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut rng = Lcg(seed ^ 0x1e51_0ace);
    for name in names {
        let var = &vars[name];
        let shape = var.as_tensor().dims().to_vec();
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.starts_with("fc.") || name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            let fan_in: usize = shape.iter().skip(1).product();
            let bound = (6.0 / fan_in.max(1) as f32).sqrt();
            (0..n)
                .map(|_| (rng.next() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0) * bound)
                .collect()
        };
        var.set(&Tensor::from_vec(values, shape, dev)?)?;
    }
    Ok(())
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let dev = Device::Cpu;
    let mut client = Client::connect("lesion-classifier 0.1")?;
    let cohort = Cohort::load(&mut client)?;
    let val_meta: Vec<&RecordMeta> = cohort.validation().collect();

    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let net = Net::new(&vb)?;
    init_weights(&varmap, args.seed, &dev)?;

    let mut self_reported: Vec<(&str, f64)> = Vec::new();
    if let Some(weights) = &args.predict {
        varmap.load(weights)?;
    } else {
        let train_meta: Vec<&RecordMeta> = cohort.train().collect();
        let train_imgs = load_images(&mut client, &train_meta)?;
        let train: Vec<(&[f32], f32)> = train_imgs
            .iter()
            .zip(&train_meta)
            .filter_map(|(img, m)| Some((img.as_deref()?, f32::from(m.label?))))
            .collect();
        let pos = train.iter().filter(|t| t.1 > 0.5).count().max(1) as f32;
        eprintln!(
            "training on {} records ({} positive), {} validation records",
            train.len(),
            pos,
            val_meta.len()
        );
        let neg = (train.len() as f32 - pos).max(1.0);
        // Balance the classes: each class carries half of the loss.
        let (w_pos, w_neg) = (
            train.len() as f32 / (2.0 * pos),
            train.len() as f32 / (2.0 * neg),
        );
        let mut opt = candle_nn::AdamW::new(
            varmap.all_vars(),
            candle_nn::ParamsAdamW {
                lr: args.lr,
                weight_decay: 1e-4,
                ..Default::default()
            },
        )?;
        let mut rng = Lcg(args.seed);
        let mut order: Vec<usize> = (0..train.len()).collect();
        let mut last_loss = f64::NAN;
        let mut curve = Vec::new();
        for epoch in 0..args.epochs {
            for i in (1..order.len()).rev() {
                order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
            }
            let (mut sum, mut n) = (0.0, 0usize);
            for chunk in order.chunks(args.batch.max(1)) {
                let imgs: Vec<&[f32]> = chunk.iter().map(|&i| train[i].0).collect();
                let flips: Vec<u8> = chunk.iter().map(|_| (rng.next() % 4) as u8).collect();
                let y: Vec<f32> = chunk.iter().map(|&i| train[i].1).collect();
                let w: Vec<f32> = y
                    .iter()
                    .map(|&l| if l > 0.5 { w_pos } else { w_neg })
                    .collect();
                let x = batch_tensor(&imgs, &flips, &dev)?;
                let y = Tensor::from_vec(y, chunk.len(), &dev)?;
                let w = Tensor::from_vec(w, chunk.len(), &dev)?;
                let loss = weighted_bce(&net.forward(&x)?, &y, &w)?;
                opt.backward_step(&loss)?;
                sum += f64::from(loss.to_scalar::<f32>()?) * chunk.len() as f64;
                n += chunk.len();
            }
            last_loss = sum / n.max(1) as f64;
            curve.push(last_loss);
            client.progress(&Progress {
                epoch: Some(epoch + 1),
                loss: Some(last_loss),
                ..Default::default()
            })?;
            eprintln!(
                "epoch {}/{}: train loss {last_loss:.4}",
                epoch + 1,
                args.epochs
            );
        }
        varmap.save(outputs::out_dir().join("model.safetensors"))?;
        self_reported.extend([
            ("epochs", args.epochs as f64),
            ("train_loss", last_loss),
            ("train_records", train.len() as f64),
        ]);
        let metrics_path = outputs::out_dir().join("metrics.json");
        self_reported.push(("seconds", started.elapsed().as_secs_f64()));
        outputs::write_metrics_with_curves(
            &metrics_path,
            &self_reported,
            &[("loss_curve", &curve)],
        )?;
    }

    let val_imgs = load_images(&mut client, &val_meta)?;
    let scores = score(&net, &val_imgs, &dev)?;
    let preds: Vec<(u32, f64)> = val_meta
        .iter()
        .zip(scores)
        .map(|(m, s)| (m.index, s))
        .collect();
    let ack = client.predict(&preds)?;
    eprintln!(
        "submitted {} validation scores ({} remaining)",
        ack.accepted, ack.remaining
    );
    client.done()?;
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("lesion-classifier: {e}");
        std::process::exit(1);
    }
}
