//! UTC dates from seconds since the epoch, without a clock library: the days by Howard
//! Hinnant's civil-from-days algorithm.

/// A moment in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Civil {
    pub fn from_unix(seconds: u64) -> Civil {
        let (days, rest) = ((seconds / 86_400) as i64, (seconds % 86_400) as u32);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
        Civil {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rest / 3600,
            minute: rest / 60 % 60,
            second: rest % 60,
        }
    }
}

impl Civil {
    /// Seconds since the epoch (Hinnant's days-from-civil).
    pub fn to_unix(&self) -> u64 {
        let year = self.year - i64::from(self.month <= 2);
        let era = year.div_euclid(400);
        let yoe = year - era * 400;
        let mp = i64::from((self.month + 9) % 12);
        let doy = (153 * mp + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        (days.max(0) as u64) * 86_400
            + u64::from(self.hour) * 3600
            + u64::from(self.minute) * 60
            + u64::from(self.second)
    }

    /// A time written `YYYYMMDDTHHMMSSZ` (zlive's snapshot names).
    pub fn parse_stamp(text: &str) -> Option<Civil> {
        let b = text.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let n = |r: std::ops::Range<usize>| text.get(r)?.parse::<u32>().ok();
        let civil = Civil {
            year: i64::from(n(0..4)?),
            month: n(4..6)?,
            day: n(6..8)?,
            hour: n(9..11)?,
            minute: n(11..13)?,
            second: n(13..15)?,
        };
        let valid = (1..=12).contains(&civil.month)
            && (1..=31).contains(&civil.day)
            && civil.hour < 24
            && civil.minute < 60
            && civil.second < 61;
        valid.then_some(civil)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_months_and_leap_years() {
        let c = Civil::from_unix(951_782_400 + 3600 + 61);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second),
            (2000, 2, 29, 1, 1, 1)
        );
        assert_eq!(Civil::from_unix(0).year, 1970);
        let end = Civil::from_unix(4_102_444_799);
        assert_eq!((end.year, end.month, end.day), (2099, 12, 31));
    }

    #[test]
    fn stamps_read_back_to_the_second() {
        for t in [0, 951_782_400 + 3661, 1_796_644_588, 4_102_444_799] {
            assert_eq!(Civil::from_unix(t).to_unix(), t);
        }
        let c = Civil::parse_stamp("20001229T010101Z").unwrap();
        assert_eq!((c.year, c.month, c.day, c.hour), (2000, 12, 29, 1));
        for bad in [
            "20001329T010101Z",
            "2000122T010101Z",
            "20001229 010101Z",
            "x",
        ] {
            assert_eq!(Civil::parse_stamp(bad), None, "{bad}");
        }
    }
}
