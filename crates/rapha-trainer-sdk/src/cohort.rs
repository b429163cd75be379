use rapha_protocol::{Dtype, Split};
use serde_json::Value;

use crate::client::{shape_field, str_field, u32_field, Client};
use crate::SdkError;

/// A record's metadata as listed by the node. `label` is only ever present on training
/// records; validation labels stay with the node.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordMeta {
    pub index: u32,
    pub instance: String,
    pub series: String,
    pub study: String,
    pub patient: String,
    pub split: Split,
    pub label: Option<u8>,
    pub modality: String,
    pub dtype: Dtype,
    /// `[frames, rows, columns, samples_per_pixel]`.
    pub shape: [usize; 4],
    /// Allow-listed technical attributes (snake_case name, e.g. `rescale_slope`, `window_center`,
    /// -> number, short string or array of numbers).
    pub attributes: serde_json::Map<String, Value>,
}

impl RecordMeta {
    pub(crate) fn from_json(v: &Value) -> Result<Self, SdkError> {
        let split = str_field(v, "split")?;
        let split = Split::parse(split).ok_or_else(|| {
            SdkError::BadFrame(format!(
                "unknown split {:?}",
                split.chars().take(16).collect::<String>()
            ))
        })?;
        let label = match v.get("label") {
            None | Some(Value::Null) => None,
            Some(l) => Some(
                l.as_u64()
                    .filter(|&x| x <= 1)
                    .ok_or_else(|| SdkError::BadFrame("label must be 0 or 1".into()))?
                    as u8,
            ),
        };
        Ok(Self {
            index: u32_field(v, "index")?,
            instance: str_field(v, "instance")?.to_owned(),
            series: str_field(v, "series")?.to_owned(),
            study: str_field(v, "study")?.to_owned(),
            patient: str_field(v, "patient")?.to_owned(),
            split,
            label,
            modality: str_field(v, "modality")?.to_owned(),
            dtype: Dtype::parse(str_field(v, "dtype")?)?,
            shape: shape_field(v)?,
            attributes: v
                .get("attributes")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// A numeric attribute by its snake_case name, if present (first element for arrays).
    pub fn attr_f64(&self, keyword: &str) -> Option<f64> {
        match self.attributes.get(keyword)? {
            Value::Number(n) => n.as_f64(),
            Value::Array(a) => a.first()?.as_f64(),
            _ => None,
        }
    }
}

/// Every record of the job, with train and validation views and shuffled epochs.
#[derive(Clone, Debug, PartialEq)]
pub struct Cohort {
    records: Vec<RecordMeta>,
}

impl Cohort {
    /// Lists every record from the node.
    ///
    /// # Errors
    /// Any protocol error.
    pub fn load<S: std::io::Read + std::io::Write>(
        client: &mut Client<S>,
    ) -> Result<Self, SdkError> {
        Ok(Self {
            records: client.list_all()?,
        })
    }

    /// Wraps already listed records.
    pub fn from_records(records: Vec<RecordMeta>) -> Self {
        Self { records }
    }

    /// All records.
    pub fn records(&self) -> &[RecordMeta] {
        &self.records
    }

    /// Training records that carry a label.
    pub fn train(&self) -> impl Iterator<Item = &RecordMeta> {
        self.records
            .iter()
            .filter(|r| r.split == Split::Train && r.label.is_some())
    }

    /// Validation records (to predict; never labelled).
    pub fn validation(&self) -> impl Iterator<Item = &RecordMeta> {
        self.records.iter().filter(|r| r.split == Split::Validation)
    }

    /// The labelled training records of `epoch`, shuffled reproducibly (the same epoch number
    /// gives the same order), in batches of `batch` (the last may be shorter).
    pub fn train_batches(&self, batch: usize, epoch: u64) -> Vec<Vec<&RecordMeta>> {
        let mut order: Vec<&RecordMeta> = self.train().collect();
        shuffle(&mut order, 0x5241_5048_4100_0000 ^ epoch);
        order.chunks(batch.max(1)).map(<[_]>::to_vec).collect()
    }
}

/// Fisher-Yates with splitmix64: reproducible across platforms, no dependency.
pub(crate) fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}
