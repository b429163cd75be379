//! Receipt vocabulary shared by the node, the receipt log and settlement. The full receipt body
//! lives in `rapha-receipt`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a job ended. Settlement pays the split only for [`Outcome::Completed`] (**I7**).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Completed,
    Refused,
    Failed,
}

impl Outcome {
    /// The code the escrow contract uses: 1 completed, 2 refused, 3 failed.
    pub const fn code(self) -> u8 {
        match self {
            Self::Completed => 1,
            Self::Refused => 2,
            Self::Failed => 3,
        }
    }
}

/// Counts of excluded instances by reason (`burned-in-annotation`, `opted-out`, …). Never names
/// a patient.
pub type ExclusionCounts = BTreeMap<String, u64>;
