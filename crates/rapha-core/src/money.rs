use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// USDC has 6 decimals on every chain Rapha settles on.
pub const USDC_DECIMALS: u32 = 6;
const SCALE: u64 = 1_000_000;

/// An amount of USDC in integer base units (1 USDC = 1,000,000 units).
///
/// Parsed from decimal strings exactly, never through floating point; more than 6 decimal
/// places is refused rather than rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Usdc(u64);

impl Usdc {
    /// From base units.
    pub const fn from_base_units(units: u64) -> Self {
        Self(units)
    }

    /// Base units.
    pub const fn base_units(self) -> u64 {
        self.0
    }
}

impl FromStr for Usdc {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| CoreError::InvalidAmount {
            input: s.chars().take(40).collect(),
            reason,
        };
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(
                "expected digits, optionally followed by '.' and up to 6 decimals",
            ));
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || (s.contains('.') && frac.is_empty()) {
            return Err(bad("expected digits after the decimal point"));
        }
        if frac.len() > USDC_DECIMALS as usize {
            return Err(bad(
                "USDC has 6 decimals; more precision than that is refused",
            ));
        }
        let whole: u64 = whole.parse().map_err(|_| bad("amount too large"))?;
        let mut frac_units: u64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_units += u64::from(b - b'0') * 10u64.pow(USDC_DECIMALS - 1 - i as u32);
        }
        whole
            .checked_mul(SCALE)
            .and_then(|w| w.checked_add(frac_units))
            .map(Self)
            .ok_or_else(|| bad("amount too large"))
    }
}

impl fmt::Display for Usdc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / SCALE, self.0 % SCALE)
    }
}

/// The fee split of **I7**: hospital = fee * 70 / 100 rounded down, protocol = the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeSplit {
    pub fee: Usdc,
    pub hospital: Usdc,
    pub protocol: Usdc,
}

impl FeeSplit {
    /// Hospital share in percent. The escrow contract uses the same constant.
    pub const HOSPITAL_PERCENT: u64 = 70;

    /// Splits `fee`. Computed in u128 so no fee overflows.
    pub fn of(fee: Usdc) -> Self {
        let hospital = (u128::from(fee.0) * u128::from(Self::HOSPITAL_PERCENT) / 100) as u64;
        Self {
            fee,
            hospital: Usdc(hospital),
            protocol: Usdc(fee.0 - hospital),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!("120.00".parse::<Usdc>().unwrap().base_units(), 120_000_000);
        assert_eq!("0.000001".parse::<Usdc>().unwrap().base_units(), 1);
        assert_eq!("7".parse::<Usdc>().unwrap().base_units(), 7_000_000);
        assert_eq!("0.1".parse::<Usdc>().unwrap().base_units(), 100_000);
    }

    #[test]
    fn refuses_more_than_six_decimals_and_junk() {
        for s in [
            "0.0000001",
            "",
            ".5",
            "1.",
            "-1",
            "1e6",
            "1,5",
            " 1",
            "18446744073709.551616",
        ] {
            assert!(s.parse::<Usdc>().is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn split_rounds_hospital_down_and_sums_to_fee() {
        for (fee, h) in [
            (1u64, 0u64),
            (7, 4),
            (10, 7),
            (999_999_999, 699_999_999),
            (u64::MAX, 12_912_720_851_596_686_130),
        ] {
            let s = FeeSplit::of(Usdc(fee));
            assert_eq!(s.hospital.0, h, "fee {fee}");
            assert_eq!(s.hospital.0 + s.protocol.0, fee);
        }
    }

    #[test]
    fn display_round_trips() {
        for units in [0u64, 1, 999_999, 1_000_000, 120_000_000, 123_456_789] {
            let s = Usdc(units).to_string();
            assert_eq!(s.parse::<Usdc>().unwrap().0, units);
        }
    }
}
