//! Calendar dates as days since 1970-01-01, enough for DICOM DA values, ages and day offsets.

/// A proleptic Gregorian date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// Parses DICOM DA `YYYYMMDD` (also the legacy `YYYY.MM.DD`), rejecting impossible dates.
    pub fn parse_dicom(s: &str) -> Option<Self> {
        let s = s.trim();
        let digits: String = match s.len() {
            8 => s.to_owned(),
            10 if s.as_bytes()[4] == b'.' && s.as_bytes()[7] == b'.' => s.replace('.', ""),
            _ => return None,
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() != 8 {
            return None;
        }
        let year: i32 = digits[..4].parse().ok()?;
        let month: u8 = digits[4..6].parse().ok()?;
        let day: u8 = digits[6..8].parse().ok()?;
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Self { year, month, day })
    }

    /// `YYYYMMDD`.
    pub fn to_dicom(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }

    /// Days since 1970-01-01 (negative before).
    pub fn days(&self) -> i64 {
        // Howard Hinnant's days_from_civil.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// Whole years from `birth` to `self` (the age on this date).
    pub fn years_since(&self, birth: &Date) -> i32 {
        let mut y = self.year - birth.year;
        if (self.month, self.day) < (birth.month, birth.day) {
            y -= 1;
        }
        y
    }
}

fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}
