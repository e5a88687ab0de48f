//! Logging for the helper services: the journal's native protocol with structured fields
//! (`SYSLOG_IDENTIFIER=zlive`, `ZLIVE_*`, `OBJECT_SYSTEMD_UNIT`), or stderr when journald is
//! not there (stderr of a service still reaches the journal, without the fields).

use tracing_subscriber::prelude::*;

pub fn init() {
    let journald = if std::env::var_os("ZLIVE_LOG_STDERR").is_none() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    match journald {
        Some(layer) => {
            let layer = layer
                .with_syslog_identifier("zlive".to_owned())
                .with_field_prefix(None);
            tracing_subscriber::registry().with(layer).init();
        }
        None => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .without_time()
                .with_target(false);
            tracing_subscriber::registry().with(layer).init();
        }
    }
}

/// Log a planning notice at its own level.
pub fn notice(notice: &zlive::notice::Notice) {
    use zlive::notice::Level;
    match notice.level {
        Level::Error => tracing::error!("{}", notice.text),
        Level::Warning => tracing::warn!("{}", notice.text),
        Level::Notice => tracing::info!("{}", notice.text),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use zlive::notice::Notice;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(notice: Notice) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, || super::notice(&notice));
        let text = captured.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn each_level_keeps_its_level() {
        assert!(logged(Notice::error("e".into())).starts_with("ERROR"));
        assert!(logged(Notice::warning("w".into())).starts_with(" WARN"));
        assert!(logged(Notice::info("n".into())).starts_with(" INFO"));
    }
}
