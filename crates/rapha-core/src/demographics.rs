//! The cohort's patients by sex and by age at study, as the DPO reads them in the cohort
//! summary: counts of pseudonymous patients in fixed bins, never a date or an age. The
//! summary is hospital-side only (no receipt and no publisher-facing answer carries it), and
//! wherever a person reads these counts a count below [`SMALL_CELL`] is shown as "<5"
//! ([`shown_count`]).

use serde::{Deserialize, Serialize};

/// Counts below this are shown as "<5" (small cells: a rare combination in a small cohort
/// points at a person).
pub const SMALL_CELL: u64 = 5;

/// A count as a person reads it: the number, or "<5" below [`SMALL_CELL`].
pub fn shown_count(n: u64) -> String {
    if n < SMALL_CELL {
        format!("<{SMALL_CELL}")
    } else {
        n.to_string()
    }
}

/// One patient's sex as the cohort's instances state it (PatientSex).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SexBin {
    Female,
    Male,
    Other,
    /// Absent, not M/F/O, or stated differently by the patient's instances.
    Unknown,
}

/// Patients by sex and by age at study: each kept patient counted once in each.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demographics {
    pub sex: SexCounts,
    pub age: AgeCounts,
}

/// Patients by PatientSex.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SexCounts {
    pub female: u64,
    pub male: u64,
    pub other: u64,
    pub unknown: u64,
}

/// Patients by age at study in decades (0-9 … 80-89), 90 and over together, and unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeCounts {
    /// `decades[d]`: patients aged `10 d` to `10 d + 9`.
    pub decades: [u64; 9],
    pub ninety_plus: u64,
    pub unknown: u64,
}

impl Demographics {
    /// Counts one patient: `decade` is the age at study divided by ten (9 for 90 and over;
    /// larger values count as 90 and over), `None` when unknown.
    pub fn add(&mut self, sex: SexBin, decade: Option<u8>) {
        let s = &mut self.sex;
        let n = match sex {
            SexBin::Female => &mut s.female,
            SexBin::Male => &mut s.male,
            SexBin::Other => &mut s.other,
            SexBin::Unknown => &mut s.unknown,
        };
        *n += 1;
        let a = &mut self.age;
        let n = match decade {
            Some(d) => a
                .decades
                .get_mut(usize::from(d))
                .unwrap_or(&mut a.ninety_plus),
            None => &mut a.unknown,
        };
        *n += 1;
    }

    /// Patients counted.
    pub fn patients(&self) -> u64 {
        let s = &self.sex;
        s.female + s.male + s.other + s.unknown
    }
}

impl SexCounts {
    /// (label, count) in display order.
    pub fn rows(&self) -> Vec<(String, u64)> {
        vec![
            ("female (F)".into(), self.female),
            ("male (M)".into(), self.male),
            ("other (O)".into(), self.other),
            ("unknown".into(), self.unknown),
        ]
    }
}

impl AgeCounts {
    /// (label, count) in display order: "0-9" … "80-89", "90+", "unknown".
    pub fn rows(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = (0u64..)
            .zip(self.decades)
            .map(|(d, n)| (format!("{}-{}", d * 10, d * 10 + 9), n))
            .collect();
        v.push(("90+".into(), self.ninety_plus));
        v.push(("unknown".into(), self.unknown));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_patient_is_counted_once_in_each_histogram() {
        let mut d = Demographics::default();
        d.add(SexBin::Female, Some(0));
        d.add(SexBin::Male, Some(8));
        d.add(SexBin::Unknown, Some(9));
        d.add(SexBin::Other, Some(200));
        d.add(SexBin::Female, None);
        assert_eq!(d.patients(), 5);
        assert_eq!(
            d.sex,
            SexCounts {
                female: 2,
                male: 1,
                other: 1,
                unknown: 1
            }
        );
        assert_eq!(d.age.decades, [1, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!((d.age.ninety_plus, d.age.unknown), (2, 1));
        let rows = d.age.rows();
        assert_eq!(rows.len(), 11);
        assert_eq!(rows[0], ("0-9".to_owned(), 1));
        assert_eq!(rows[8], ("80-89".to_owned(), 1));
        assert_eq!(rows[9], ("90+".to_owned(), 2));
        assert_eq!(rows[10], ("unknown".to_owned(), 1));
    }

    #[test]
    fn counts_below_five_are_shown_as_small() {
        assert_eq!(shown_count(0), "<5");
        assert_eq!(shown_count(4), "<5");
        assert_eq!(shown_count(5), "5");
        assert_eq!(shown_count(1234), "1234");
    }
}
