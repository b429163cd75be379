"""Trainer protocol v1 constants, generated from crates/rapha-protocol: do not edit.

A deliberate duplicate of rapha-protocol's constants (issue 23): the Python SDK links
no Rust, so they are written out here, and a rapha-protocol test fails when this file
is not what the crate generates. Regenerate with
    cargo run -p rapha-protocol --example python_constants > sdk/python/rapha_trainer/_protocol.py
"""

PROTOCOL_VERSION = 1
SOCKET_PATH_IN_CONTAINER = "/rapha/data.sock"
SOCKET_ENV = "RAPHA_DATA_SOCKET"
OUT_DIR_IN_CONTAINER = "/out"
OUT_ENV = "RAPHA_OUT"
PROTOCOL_ENV = "RAPHA_PROTOCOL"
MAX_REQUEST_HEADER = 1048576
MAX_RESPONSE_HEADER = 4194304
MAX_PAYLOAD = 536870912
MAX_IN_FLIGHT = 16
MAX_PAGE = 1000
MAX_TRAINER_NAME = 128
MAX_CURVE = 10000

# dtype name -> numpy type string (little-endian)
DTYPES = {
    "u8": "<u1",
    "u16": "<u2",
    "i16": "<i2",
    "u32": "<u4",
    "i32": "<i4",
    "f32": "<f4",
}

SPLITS = ("train", "validation")

ERROR_CODES = (
    "bad_request",
    "protocol",
    "no_such_record",
    "not_validation",
    "duplicate_prediction",
    "bad_score",
    "unavailable",
    "finished",
)

METRICS_KEYS = (
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
)
