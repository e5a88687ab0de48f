//! Messages for the user that planning produces and the binaries log: the generator to kmsg,
//! the helper to the journal. One type, so that a level means the same everywhere.

use std::fmt;

/// How loud a notice is; maps onto syslog priorities when logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warning,
    Notice,
}

/// Something the user should know: an ignored or refused parameter, a file not used, …
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub level: Level,
    pub text: String,
}

impl Notice {
    pub fn error(text: String) -> Notice {
        Notice {
            level: Level::Error,
            text,
        }
    }
    pub fn warning(text: String) -> Notice {
        Notice {
            level: Level::Warning,
            text,
        }
    }
    /// At [`Level::Notice`]: worth knowing, not a problem.
    pub fn info(text: String) -> Notice {
        Notice {
            level: Level::Notice,
            text,
        }
    }
}

impl Level {
    /// The syslog priority (`LOG_ERR`, `LOG_WARNING`, `LOG_NOTICE`).
    pub fn syslog_priority(self) -> u8 {
        match self {
            Level::Error => 3,
            Level::Warning => 4,
            Level::Notice => 5,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(Level::Error.syslog_priority(), 3);
        assert_eq!(Level::Warning.syslog_priority(), 4);
        assert_eq!(Level::Notice.syslog_priority(), 5);
        assert_eq!(Notice::error("x".into()).level, Level::Error);
    }
}
