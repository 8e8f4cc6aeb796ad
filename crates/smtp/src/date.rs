//! Dates in mail headers (RFC 5322 §3.3), and the RFC 3339 form log lines
//! carry.
//!
//! Pure functions of the time they are given: this crate never reads a clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// `Sun, 22 Nov 2026 20:46:37 +0000`: RFC 5322 §3.3 in UTC.
pub fn rfc5322_date(time: SystemTime) -> String {
    Rfc5322Date(time).to_string()
}

/// [`rfc5322_date`] written where it is formatted, without a string of its
/// own (the `Received:` field of every message).
#[derive(Debug, Clone, Copy)]
pub struct Rfc5322Date(pub SystemTime);

impl Rfc5322Date {
    /// Appends the date to `out` (the `Received:` field of every message:
    /// digits by hand, no formatting machinery).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.text().as_bytes());
    }

    fn text(&self) -> DateText {
        let secs = self.0.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        // 1970-01-01 was a Thursday.
        let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
        let month_name = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ][(month - 1) as usize];
        let mut text = DateText::new();
        text.push(weekday.as_bytes());
        text.push(b", ");
        text.number(u64::from(day), 2);
        text.push(b" ");
        text.push(month_name.as_bytes());
        text.push(b" ");
        // Never before 1970: the seconds are counted from then.
        text.number(year.unsigned_abs(), 1);
        text.push(b" ");
        text.number(rem / 3600, 2);
        text.push(b":");
        text.number(rem / 60 % 60, 2);
        text.push(b":");
        text.number(rem % 60, 2);
        text.push(b" +0000");
        text
    }
}

impl std::fmt::Display for Rfc5322Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// A date's text, on the stack: `Thu, 01 Jan `, a year of up to 20
/// digits, ` 00:00:00 +0000`.
type DateText = crate::stack_text::StackText<48>;

/// `2026-11-22T20:46:37`: RFC 3339 in UTC to the second, for a caller that
/// appends the fraction and the `Z` (log lines, which format each second once).
pub fn rfc3339_seconds(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar; Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_match_known_instants() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(rfc5322_date(at(0)), "Thu, 01 Jan 1970 00:00:00 +0000");
        // `date -u -d @1795380397`
        assert_eq!(
            rfc5322_date(at(1_795_380_397)),
            "Sun, 22 Nov 2026 20:46:37 +0000"
        );
        // A leap day.
        assert_eq!(
            rfc5322_date(at(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
    }

    #[test]
    fn a_date_written_to_bytes_is_its_text() {
        for secs in [
            0,
            59,
            951_782_400,
            1_795_380_397,
            1_798_761_599,
            253_402_300_800,
        ] {
            let date = Rfc5322Date(UNIX_EPOCH + Duration::from_secs(secs));
            let mut out = b"Date: ".to_vec();
            date.write_to(&mut out);
            assert_eq!(out, format!("Date: {date}").into_bytes(), "{secs}");
        }
        // The year 10000 has five digits.
        assert_eq!(
            rfc5322_date(UNIX_EPOCH + Duration::from_secs(253_402_300_800)),
            "Sat, 01 Jan 10000 00:00:00 +0000"
        );
    }

    #[test]
    fn rfc3339_seconds_match_known_instants() {
        assert_eq!(rfc3339_seconds(0), "1970-01-01T00:00:00");
        assert_eq!(rfc3339_seconds(1_795_380_397), "2026-11-22T20:46:37");
        assert_eq!(rfc3339_seconds(951_782_400), "2000-02-29T00:00:00");
        // The last second of a year.
        assert_eq!(rfc3339_seconds(1_798_761_599), "2026-12-31T23:59:59");
    }
}
