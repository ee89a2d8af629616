//! Times as stored: `YYYY-MM-DD HH:MM:SS` UTC text (DATETIME in MySQL), written by
//! [`datetime`] and read back by [`parse_datetime`].
//!
//! No time zones, no fractional seconds kept, nothing before 1970.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a time: how times are stored.
pub fn datetime(t: SystemTime) -> String {
    let crate::utc::Utc {
        date: (y, m, d),
        secs: rem,
        ..
    } = crate::utc::utc(t);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The time of a stored `YYYY-MM-DD HH:MM:SS` (UTC); None when it does not parse.
pub fn parse_datetime(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T']).unwrap_or((s, "00:00:00"));
    let mut dp = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, d) = (dp.next()??, dp.next()??, dp.next()??);
    let mut tp = time
        .trim_end_matches('Z')
        .split(':')
        .map(|x| x.split('.').next().and_then(|v| v.parse::<i64>().ok()));
    let (h, mi, se) = (
        tp.next()??,
        tp.next().flatten().unwrap_or(0),
        tp.next().flatten().unwrap_or(0),
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_039_197_370);
        assert_eq!(datetime(t), "2002-12-06 17:56:10");
        assert_eq!(parse_datetime("2002-12-06 17:56:10"), Some(t));
        assert_eq!(parse_datetime("garbage"), None);
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(parse_datetime(&datetime(leap)), Some(leap));
    }
}
