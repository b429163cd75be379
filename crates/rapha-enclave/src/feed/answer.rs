//! What each request gets (protocol v1's operations, `docs/trainer-protocol.md`): `hello`,
//! `list` (hashed identifiers, allow-listed attributes, labels of training records only:
//! **I1**), `fetch` (decoded pixels, counted and fingerprinted on their first feed for the
//! guard: **I4**), `progress` (self-reported, kept apart), `predict` (validation scores only;
//! the labels stay here) and `done`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::cache::PixelCache;
use super::connection::Answer;
use super::{Feed, SelfReported};
use crate::protocol::{self, ErrorCode, Request, MAX_PAGE, MAX_PAYLOAD};
use crate::split::Split;

/// What a trainer is told of a record that could not be fetched or decoded (the reason stays
/// in the node's log).
/// Bytes of records a `list` page holds at most (beyond its first record): half the response
/// header limit, so a page always fits it.
const LIST_PAGE_BYTES: usize = protocol::MAX_RESPONSE_HEADER / 2;

const UNAVAILABLE: &str = "the node could not fetch or decode this record";

impl Feed<'_> {
    pub(super) fn answer(&self, req: &Request, greeted: &mut bool, cache: &PixelCache) -> Answer {
        let records = self.source.records();
        let ok = |v: serde_json::Value| Answer::plain(serde_json::to_vec(&v).unwrap_or_default());
        let err = |c: ErrorCode, m: String| Answer::error(c, &m);
        match req {
            Request::Hello {
                protocol: v,
                trainer,
            } => {
                if *v != protocol::PROTOCOL_VERSION {
                    return err(
                        ErrorCode::Protocol,
                        format!("this node speaks protocol 1, not {v}"),
                    );
                }
                if trainer.len() > protocol::MAX_TRAINER_NAME {
                    return err(ErrorCode::BadRequest, "trainer name over 128 bytes".into());
                }
                *greeted = true;
                let val = self
                    .splits
                    .iter()
                    .filter(|s| **s == Split::Validation)
                    .count();
                ok(
                    json!({"ok": true, "protocol": 1, "job": self.job.to_string(),
                    "records": records.len(), "train": records.len() - val, "validation": val,
                    "confinement": self.confinement, "max_payload": MAX_PAYLOAD}),
                )
            }
            Request::List { offset, limit } => {
                if *limit == 0 || *limit > MAX_PAGE || *offset > records.len() {
                    return err(
                        ErrorCode::BadRequest,
                        format!(
                            "list needs offset <= {} and limit 1..={MAX_PAGE}",
                            records.len()
                        ),
                    );
                }
                let end = (*offset + *limit).min(records.len());
                // A page holds fewer records than asked when they would pass LIST_PAGE_BYTES
                // (records of enhanced objects carry per-frame attributes), never none: the
                // trainer asks again from where it ended.
                let mut bytes = 0usize;
                let page: Vec<serde_json::Value> = (*offset..end)
                    .map(|i| {
                        let r = &records[i];
                        let split = self.splits.get(i).copied().unwrap_or(Split::Validation);
                        let mut v = json!({"index": i, "instance": r.instance.to_hex(),
                            "series": r.series.to_hex(), "study": r.study.to_hex(),
                            "patient": r.patient.to_hex(), "split": split,
                            "modality": r.modality, "dtype": r.dtype, "shape": r.shape,
                            "attributes": r.attributes});
                        // I1 + the metrics promise: labels go out for training records only.
                        if let (Split::Train, Some(label)) = (split, r.label) {
                            v["label"] = json!(label);
                        }
                        v
                    })
                    .take_while(|v| {
                        let first = bytes == 0;
                        bytes = bytes.saturating_add(serde_json::to_vec(v).map_or(0, |b| b.len()));
                        first || bytes <= LIST_PAGE_BYTES
                    })
                    .collect();
                ok(json!({"ok": true, "total": records.len(), "records": page}))
            }
            // Pipelined fetches go to the decoder threads instead ([`Queues::decode`]).
            Request::Fetch { index } => self.fetch_caught(*index, cache),
            Request::Progress {
                epoch,
                step,
                loss,
                metrics,
            } => {
                let keys_ok = metrics.len() <= 32
                    && metrics.keys().all(|k| {
                        (1..=32).contains(&k.len())
                            && k.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    });
                if !keys_ok {
                    return err(
                        ErrorCode::BadRequest,
                        "at most 32 metrics with keys [a-z0-9_]{1,32}".into(),
                    );
                }
                self.lock().self_reported = Some(SelfReported {
                    epoch: *epoch,
                    step: *step,
                    loss: *loss,
                    metrics: metrics.clone(),
                });
                ok(json!({"ok": true}))
            }
            Request::Predict { predictions } => {
                if predictions.len() > MAX_PAGE {
                    return err(
                        ErrorCode::BadRequest,
                        format!("at most {MAX_PAGE} predictions per request"),
                    );
                }
                let mut st = self.lock();
                let mut seen = BTreeSet::new();
                for p in predictions {
                    if p.index >= records.len() {
                        return err(
                            ErrorCode::NoSuchRecord,
                            format!(
                                "record index {} is out of range (0..{})",
                                p.index,
                                records.len()
                            ),
                        );
                    }
                    if self.splits.get(p.index) != Some(&Split::Validation) {
                        return err(
                            ErrorCode::NotValidation,
                            format!("record {} is a training record", p.index),
                        );
                    }
                    if st.predictions.contains_key(&p.index) || !seen.insert(p.index) {
                        return err(
                            ErrorCode::DuplicatePrediction,
                            format!("record {} already has a prediction", p.index),
                        );
                    }
                    if !(p.score.is_finite() && (0.0..=1.0).contains(&p.score)) {
                        return err(
                            ErrorCode::BadScore,
                            format!("score for record {} is not in [0, 1]", p.index),
                        );
                    }
                }
                for p in predictions {
                    st.predictions.insert(p.index, p.score);
                }
                let val = self
                    .splits
                    .iter()
                    .filter(|s| **s == Split::Validation)
                    .count();
                ok(
                    json!({"ok": true, "accepted": predictions.len(), "remaining": val - st.predictions.len()}),
                )
            }
            Request::Done => {
                let mut st = self.lock();
                st.done = true;
                let val = self
                    .splits
                    .iter()
                    .filter(|s| **s == Split::Validation)
                    .count();
                ok(json!({"ok": true, "predicted": st.predictions.len(), "validation": val}))
            }
        }
    }

    /// [`Feed::fetch`], with a panic while fetching or decoding (a bug, say in a decoder on
    /// a malformed instance) answered as `unavailable`, like any record that cannot be
    /// decoded: the trainer gets no pixels for it, the connection stays in step, and the
    /// other records are still served.
    pub(super) fn fetch_caught(&self, index: usize, cache: &PixelCache) -> Answer {
        let fetched =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.fetch(index, cache)));
        fetched.unwrap_or_else(|_| {
            tracing::error!(
                record = index,
                "decoding the record panicked; answered unavailable"
            );
            Answer::error(ErrorCode::Unavailable, UNAVAILABLE)
        })
    }

    /// The answer to a fetch of `index`: the record's header and pixels (and its index when
    /// this is its first feed), or an error.
    fn fetch(&self, index: usize, cache: &PixelCache) -> Answer {
        let records = self.source.records();
        let Some(rec) = records.get(index) else {
            return Answer::error(
                ErrorCode::NoSuchRecord,
                &format!(
                    "record index {index} is out of range (0..{})",
                    records.len()
                ),
            );
        };
        let pixels = match cache.get(index) {
            Some(bytes) => bytes,
            None => match self.source.pixels(index) {
                Ok(p)
                    if p.dtype == rec.dtype
                        && p.shape == rec.shape
                        && p.bytes.len() <= MAX_PAYLOAD =>
                {
                    let bytes = Arc::new(p.bytes);
                    if self.lock().fed.contains(&index) {
                        cache.keep(index, &bytes);
                    }
                    bytes
                }
                Ok(_) => {
                    tracing::warn!(record = %rec.instance, "decoded pixels do not match the listed shape");
                    return Answer::error(
                        ErrorCode::Unavailable,
                        "record pixels do not match their listed shape",
                    );
                }
                Err(e) => {
                    tracing::warn!(record = %rec.instance, error = %e, "record unavailable");
                    return Answer::error(ErrorCode::Unavailable, UNAVAILABLE);
                }
            },
        };
        let first_feed = {
            let mut st = self.lock();
            st.first_fetch.get_or_insert_with(Instant::now);
            st.bytes_fed += pixels.len() as u64;
            st.records_fed += 1;
            // u32 suffices: cohorts are far below 4 billion records.
            st.fed
                .insert(index)
                .then(|| u32::try_from(index).unwrap_or(u32::MAX))
        };
        // Written directly (numbers and a fixed dtype name only): no JSON tree per record.
        let [f, r, c, s] = rec.shape;
        let header = format!(
            r#"{{"ok":true,"index":{index},"dtype":"{}","shape":[{f},{r},{c},{s}],"payload":{}}}"#,
            rec.dtype.name(),
            pixels.len()
        );
        Answer {
            header: header.into_bytes(),
            payload: Some(pixels),
            first_feed,
        }
    }
}
