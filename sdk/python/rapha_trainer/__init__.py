"""Trainer-side SDK for the Rapha trainer protocol v1 (docs/trainer-protocol.md).

The same shape as the Rust SDK (crates/rapha-trainer-sdk): connect to the record feed, load the
cohort's metadata, fetch records as numpy arrays, report progress, submit validation scores,
write outputs. Standard library and numpy only.

    from rapha_trainer import Client, Cohort, outputs

    client = Client.connect("my-trainer 1.0")      # $RAPHA_DATA_SOCKET or /rapha/data.sock
    cohort = Cohort.load(client)
    for epoch in range(3):
        for batch in cohort.train_batches(32, epoch):
            labels = {m.index: m.label for m in batch}
            # records() keeps several fetches in flight (client.fetch(i) does one at a time)
            for rec in client.records(m.index for m in batch):
                x = rec.pixels                         # numpy array [frames, rows, cols, samples]
                ...                                    # train on x with labels[rec.index]
        client.progress(epoch=epoch + 1, loss=0.3)
    client.predict([(m.index, 0.5) for m in cohort.validation()])
    outputs.write_metrics(outputs.out_dir() / "metrics.json", {"epochs": 3})
    client.done()

The trainer never receives validation labels, raw identifiers, DICOM objects or a network; the
node computes the released metrics from the submitted scores.
"""

from .client import (  # noqa: F401
    Client,
    Cohort,
    JobInfo,
    Record,
    RecordMeta,
    SdkError,
    RefusedError,
    FrameError,
    PROTOCOL_VERSION,
    MAX_IN_FLIGHT,
    PREFETCH_DEPTH,
)
from . import outputs  # noqa: F401
