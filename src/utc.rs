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
}
