//! DICOM DA dates on `time::Date`.
//!
//! The calendar (month lengths, leap years, day counts) is `time`'s. The spelling check stays
//! here because DA is stricter than any `time` format description: exactly eight ASCII digits
//! `YYYYMMDD`, or the legacy ACR-NEMA `YYYY.MM.DD`, after trimming DICOM padding; no sign, no
//! other separator, no fewer digits.

pub use time::Date;

/// Parses DICOM DA `YYYYMMDD` (also the legacy `YYYY.MM.DD`), rejecting impossible dates.
pub fn parse_da(s: &str) -> Option<Date> {
    let s = s.trim();
    let digits: String = match s.len() {
        8 => s.to_owned(),
        10 if s.as_bytes()[4] == b'.' && s.as_bytes()[7] == b'.' => s.replace('.', ""),
        _ => return None,
    };
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = digits[..4].parse().ok()?;
    let month: u8 = digits[4..6].parse().ok()?;
    let day: u8 = digits[6..8].parse().ok()?;
    Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()
}

/// `YYYYMMDD`.
pub fn to_da(d: Date) -> String {
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Whole years from `birth` to `on` (the age on that date).
pub fn whole_years(birth: Date, on: Date) -> i32 {
    let before_birthday = (u8::from(on.month()), on.day()) < (u8::from(birth.month()), birth.day());
    on.year() - birth.year() - i32::from(before_birthday)
}

/// Days from `from` to `to`, both ends counted (1 for the same day).
pub fn days_inclusive(from: Date, to: Date) -> i64 {
    (to - from).whole_days() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ymd(s: &str) -> Option<(i32, u8, u8)> {
        parse_da(s).map(|d| (d.year(), u8::from(d.month()), d.day()))
    }

    #[test]
    fn da_and_the_legacy_dotted_form_parse() {
        assert_eq!(ymd("20240131"), Some((2024, 1, 31)));
        assert_eq!(ymd("2024.01.31"), Some((2024, 1, 31)));
        assert_eq!(
            ymd(" 20240131 "),
            Some((2024, 1, 31)),
            "DICOM padding is trimmed"
        );
        assert_eq!(ymd("20240229"), Some((2024, 2, 29)));
        assert_eq!(ymd("20000229"), Some((2000, 2, 29)));
        assert_eq!(ymd("00000101"), Some((0, 1, 1)));
        assert_eq!(ymd("99991231"), Some((9999, 12, 31)));
    }

    #[test]
    fn impossible_dates_and_other_spellings_are_refused() {
        for bad in [
            "20230229",
            "19000229",
            "20241301",
            "20240001",
            "20240100",
            "20240132",
            "20240431",
            "2024-01-31",
            "2024/01/31",
            "2024.01-31",
            "2024.0131",
            "2024..1.31",
            "2024.01.3a",
            "+2024013",
            "-2024013",
            "2024013a",
            "202401311",
            "2024013",
            "",
            "        ",
            "２０２４０１３１",
            "2024 131",
        ] {
            assert_eq!(ymd(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn da_round_trips() {
        for s in ["20240131", "00010101", "19610407"] {
            assert_eq!(parse_da(s).map(to_da).as_deref(), Some(s));
        }
        assert_eq!(
            parse_da("2024.01.31").map(to_da).as_deref(),
            Some("20240131")
        );
    }

    #[test]
    fn whole_years_turn_on_the_birthday() {
        let d = |s| parse_da(s).unwrap_or_else(|| panic!("{s}"));
        assert_eq!(whole_years(d("19610407"), d("20240406")), 62);
        assert_eq!(whole_years(d("19610407"), d("20240407")), 63);
        assert_eq!(whole_years(d("20000229"), d("20230228")), 22);
        assert_eq!(whole_years(d("20000229"), d("20230301")), 23);
        assert_eq!(whole_years(d("20240101"), d("20231231")), -1);
    }

    #[test]
    fn days_between_counts_both_ends() {
        let d = |s| parse_da(s).unwrap_or_else(|| panic!("{s}"));
        assert_eq!(days_inclusive(d("20240101"), d("20240101")), 1);
        assert_eq!(days_inclusive(d("20240101"), d("20241231")), 366);
        assert_eq!(days_inclusive(d("19691231"), d("19700101")), 2);
    }
}
