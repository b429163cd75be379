//! The guard's own work, bounded (**I4** against a trainer that would exhaust the guard):
//! bytes inflated from zip entries, bytes searched and wall time over the whole output set.
//! Past any budget the set is refused by that budget's rule.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::Rejection;

/// Which of the guard's budgets ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BudgetKind {
    /// Bytes inflated from zip entries.
    Inflate,
    /// Bytes searched for identifiers and pixel blocks.
    Scan,
    /// Wall time.
    Time,
}

impl BudgetKind {
    pub(super) const fn label(self) -> &'static str {
        match self {
            Self::Inflate => "inflate",
            Self::Scan => "scan",
            Self::Time => "time",
        }
    }

    pub(super) const fn unit(self) -> &'static str {
        match self {
            Self::Inflate | Self::Scan => "bytes",
            Self::Time => "seconds",
        }
    }
}

/// Bounds on the guard's work over one output set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardBudget {
    /// Bytes read out of zip entries (stored or deflated), across every archive.
    pub inflate_bytes: u64,
    /// Bytes searched for identifiers and pixel blocks, across every stream.
    pub scan_bytes: u64,
    /// Wall time for the whole check.
    pub wall: Duration,
}

impl GuardBudget {
    /// The slowest rate the time budget allows for scanning (the guard scans ~700 MB/s on
    /// a quiet machine in a release build, docs/performance.md), so an honest set is never
    /// stopped by a busy node.
    pub const MIN_SCAN_RATE: u64 = 16 << 20;
    /// Time allowed on top of the scan itself (opening files, parsing headers).
    pub const BASE_WALL: Duration = Duration::from_secs(30);

    /// The budget for an output set under `total_cap` with `log_bytes` of captured logs:
    /// an honest set inflates at most its own size (torch archives are stored, not
    /// compressed) and is searched about three times over at most (the file, its zip entries,
    /// a pickle's strings).
    pub fn for_outputs(total_cap: u64, log_bytes: u64) -> Self {
        let scan_bytes = total_cap
            .saturating_mul(3)
            .saturating_add(log_bytes)
            .saturating_add(1 << 20);
        Self {
            inflate_bytes: total_cap.max(1 << 20),
            scan_bytes,
            wall: Self::BASE_WALL
                .saturating_add(Duration::from_secs(scan_bytes / Self::MIN_SCAN_RATE)),
        }
    }
}

/// Work done so far against the budget.
pub(super) struct Work {
    pub(super) budget: GuardBudget,
    pub(super) deadline: Option<Instant>,
    pub(super) inflate_left: u64,
    pub(super) scanned: u64,
}

/// The budget that ran out (the check stops there).
pub(super) type Spent<T = ()> = Result<T, Rejection>;

impl Work {
    pub(super) fn new(budget: GuardBudget) -> Self {
        Self {
            budget,
            // A wall too long to represent is no limit on time; the byte budgets still hold.
            deadline: Instant::now().checked_add(budget.wall),
            inflate_left: budget.inflate_bytes,
            scanned: 0,
        }
    }

    pub(super) fn out_of_time(&self) -> Rejection {
        Rejection::Budget {
            what: BudgetKind::Time,
            limit: self.budget.wall.as_secs(),
        }
    }

    pub(super) fn time(&self) -> Spent {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(self.out_of_time());
        }
        Ok(())
    }

    /// Accounts for searching `n` more bytes.
    pub(super) fn scan(&mut self, n: usize) -> Spent {
        self.time()?;
        self.scanned = self.scanned.saturating_add(n as u64);
        if self.scanned > self.budget.scan_bytes {
            return Err(Rejection::Budget {
                what: BudgetKind::Scan,
                limit: self.budget.scan_bytes,
            });
        }
        Ok(())
    }
}
