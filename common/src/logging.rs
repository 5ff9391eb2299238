//! Logging setup: `tracing` to stderr. `--log-level` wins over `RUST_LOG`; the default is info.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(level: Option<&str>) {
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
