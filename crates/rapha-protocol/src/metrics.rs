//! The `metrics.json` schema a trainer may write: the output guard refuses any other key, and
//! the SDKs refuse to write one.

/// Keys allowed in `metrics.json`. Keys ending in `_curve` hold arrays of numbers, the others
/// one number.
// A deliberate duplicate (issue 23): sdk/python/rapha_trainer/_protocol.py holds the same list,
// generated from this one by `python::module` (the Python SDK links no Rust); a test of this
// crate fails when the two differ.
pub const METRICS_KEYS: [&str; 17] = [
    "epochs",
    "steps",
    "loss",
    "train_loss",
    "val_loss",
    "accuracy",
    "auc",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "learning_rate",
    "train_records",
    "seconds",
    "loss_curve",
    "accuracy_curve",
    "val_loss_curve",
];

/// Longest `*_curve` array.
pub const MAX_CURVE: usize = 10_000;
