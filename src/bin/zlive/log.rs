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
