//! Calendar time in UTC without a time-zone database: the split of a `SystemTime` into days,
//! date and seconds of the day, C's `ctime` format (SER's FIFO `uptime`), used by management
//! and by the database's DATETIME text.

use std::time::{SystemTime, UNIX_EPOCH};

/// A time as C's `ctime` prints it, in UTC: `Fri Dec  6 17:56:10 2002`.
pub fn ctime(t: SystemTime) -> String {
    let Utc {
        days,
        date: (y, mo, d),
        secs: rem,
    } = utc(t);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        WD[days.rem_euclid(7) as usize],
        MON[(mo as usize).saturating_sub(1).min(11)],
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        y
    )
}

/// A time's UTC calendar fields.
pub struct Utc {
    /// Days since 1970-01-01.
    pub days: i64,
    /// (year, month 1-12, day 1-31).
    pub date: (i64, u32, u32),
    /// Seconds since midnight.
    pub secs: u64,
}

/// `t` in UTC (times before 1970 count as 1970-01-01 00:00:00).
pub fn utc(t: SystemTime) -> Utc {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    Utc {
        days,
        date: civil_from_days(days),
        secs: secs % 86_400,
    }
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ctime_formats_like_c() {
        // 2002-12-06 17:56:10 UTC, the seeds' `serctl fifo uptime` example.
        let t = UNIX_EPOCH + Duration::from_secs(1_039_197_370);
        assert_eq!(ctime(t), "Fri Dec  6 17:56:10 2002");
        assert_eq!(ctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(ctime(leap), "Tue Feb 29 00:00:00 2000");
    }
}
