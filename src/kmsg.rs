//! The generator's logger: one record per write to `/dev/kmsg` as `<PRI>zlive[PID]: text`,
//! so journald files it under `SYSLOG_IDENTIFIER=zlive`; stderr when kmsg is not writable.
//! The kernel drops records beyond about ten per five seconds per open file, so the logger
//! keeps a budget and ends with one line saying how many it held back.

use std::fs::{File, OpenOptions};
use std::io::Write;

/// Syslog levels.
pub const ERR: u8 = 3;
pub const WARNING: u8 = 4;
pub const NOTICE: u8 = 5;
pub const INFO: u8 = 6;
pub const DEBUG: u8 = 7;

/// Records written before the budget runs out (the last one is kept for the summary).
const BUDGET: usize = 9;
const FACILITY_DAEMON: u8 = 3 << 3;
pub const IDENT: &str = "zlive";

#[derive(Debug)]
pub struct Logger {
    kmsg: Option<File>,
    max_level: u8,
    written: usize,
    held_back: usize,
}

/// Parse a systemd log level (`debug`, `info`, … or a number).
pub fn parse_level(text: &str) -> Option<u8> {
    Some(match text {
        "emerg" => 0,
        "alert" => 1,
        "crit" => 2,
        "err" => ERR,
        "warning" => WARNING,
        "notice" => NOTICE,
        "info" => INFO,
        "debug" => DEBUG,
        n => n.parse::<u8>().ok().filter(|n| *n <= 7)?,
    })
}

impl Logger {
    /// `use_kmsg` is false in tests; `max_level` from `SYSTEMD_LOG_LEVEL` or `systemd.log_level=`.
    pub fn new(use_kmsg: bool, max_level: u8) -> Self {
        let kmsg = if use_kmsg {
            OpenOptions::new().write(true).open("/dev/kmsg").ok()
        } else {
            None
        };
        Logger {
            kmsg,
            max_level,
            written: 0,
            held_back: 0,
        }
    }

    pub fn log(&mut self, level: u8, text: &str) {
        if level > self.max_level {
            return;
        }
        if self.written + 1 >= BUDGET && level > ERR {
            self.held_back += 1;
            return;
        }
        self.emit(level, text);
    }

    fn emit(&mut self, level: u8, text: &str) {
        self.written += 1;
        // One line per record: never let a newline split it.
        let text: String = text
            .chars()
            .map(|c| if c == '\n' { ' ' } else { c })
            .collect();
        match &mut self.kmsg {
            Some(f) => {
                let record = format!(
                    "<{}>{IDENT}[{}]: generator: {text}\n",
                    FACILITY_DAEMON | level,
                    std::process::id()
                );
                let _ = f.write_all(record.as_bytes());
            }
            None => eprintln!("zlive-generator: {text}"),
        }
    }

    /// Say how many records were held back, if any.
    pub fn finish(&mut self) {
        if self.held_back > 0 {
            let n = self.held_back;
            self.held_back = 0;
            self.emit(
                NOTICE,
                &format!("{n} more messages not shown here; 'journalctl -t zlive' and 'zlive plan' show all"),
            );
        }
    }
}
