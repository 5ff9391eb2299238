//! Logging setup: `tracing` to stderr, as text or (`--log-format json`) one JSON object per
//! line. `--log-level` wins over `RUST_LOG`, which wins over the config file's `log_level`
//! (applied, and re-applied on reload, through [`LogHandle`]); the default is info.
//!
//! The value is checked before use: `tracing`'s own filter reads an unknown word such as
//! `warning` as a *target* name, which silenced every line without a word of warning. Here a
//! value is comma-separated directives, each a level or `target=level`, with the level one of
//! [`LEVELS`] (any case; `warning` is taken as `warn`); anything else stops the binary.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The levels a `--log-level` or `RUST_LOG` directive may name, as the error lists them.
pub const LEVELS: &str = "error, warn (or warning), info, debug, trace, off";

/// Why logging was not set up: the binary prints it and exits 2.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter names no known level.
    #[error("{origin} {value:?} is not a log level: expected one of {LEVELS}, or target=level directives separated by commas")]
    Invalid {
        /// `--log-level` or `RUST_LOG`.
        origin: &'static str,
        value: String,
    },
}

/// The canonical name of a level word, if it is one (`warning` is `warn`).
fn level(word: &str) -> Option<&'static str> {
    Some(match word.trim().to_ascii_lowercase().as_str() {
        "error" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        "off" => "off",
        _ => return None,
    })
}

/// `value` as `tracing` filter directives with canonical level names, or `None` if a
/// directive is neither a level nor `target=level`, or there is none.
pub fn directives(value: &str) -> Option<String> {
    let mut out = Vec::new();
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.rsplit_once('=') {
            Some((target, word)) if !target.trim().is_empty() => {
                out.push(format!("{}={}", target.trim(), level(word)?));
            }
            Some(_) => return None,
            None => out.push(level(directive)?.to_owned()),
        }
    }
    (!out.is_empty()).then(|| out.join(","))
}

/// How each log line is written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-01T05:43:31.037769Z  WARN target: message key=value`, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's format): `timestamp`, `level`, `target`,
    /// `fields` (with `message`) and `spans`, for journald, Loki or jq.
    Json,
}

/// Where the running filter came from, and how to change it when the config file's
/// `log_level` is (re)read.
pub struct LogHandle {
    /// `--log-level` or `RUST_LOG` when one of them set the filter (the file's `log_level` is
    /// then ignored); `None` when the default (info) is in force.
    pub fixed_by: Option<&'static str>,
    set: Box<dyn Fn(EnvFilter) -> bool + Send + Sync>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle").field("fixed_by", &self.fixed_by).finish()
    }
}

impl LogHandle {
    /// Applies the config file's `log_level` (already checked by [`directives`]), or info when
    /// the file has none, unless a flag or `RUST_LOG` fixed the filter. Returns what it did, for
    /// the log: `None` when nothing changed.
    pub fn apply_file_level(&self, level: Option<&str>) -> Option<String> {
        if self.fixed_by.is_some() {
            return None;
        }
        let value = level.and_then(directives).unwrap_or_else(|| "info".to_owned());
        let filter = EnvFilter::try_new(&value).ok()?;
        (self.set)(filter).then_some(value)
    }
}

/// Sets up logging to stderr in `format` from `level` (`--log-level`), else `RUST_LOG`, else
/// info (which the config file's `log_level` may change later, through the returned handle).
pub fn init(level: Option<&str>, format: LogFormat) -> Result<LogHandle, LogError> {
    let (origin, value) = match level {
        Some(level) => ("--log-level", level.to_owned()),
        None => match std::env::var("RUST_LOG") {
            Ok(value) if !value.trim().is_empty() => ("RUST_LOG", value),
            Ok(_) | Err(std::env::VarError::NotPresent) => ("default", "info".to_owned()),
            Err(std::env::VarError::NotUnicode(value)) => {
                let value = value.to_string_lossy().into_owned();
                return Err(LogError::Invalid {
                    origin: "RUST_LOG",
                    value,
                });
            }
        },
    };
    let invalid = || LogError::Invalid {
        origin,
        value: value.clone(),
    };
    let filter = directives(&value)
        .and_then(|d| EnvFilter::try_new(d).ok())
        .ok_or_else(invalid)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init fails only if a subscriber is already set (a test that started a server twice):
    // that one is kept, and the handle then changes nothing that matters.
    let set: Box<dyn Fn(EnvFilter) -> bool + Send + Sync> = match format {
        LogFormat::Text => {
            let builder = builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = builder.try_init();
            Box::new(move |filter| handle.reload(filter).is_ok())
        }
        LogFormat::Json => {
            let builder = builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = builder.try_init();
            Box::new(move |filter| handle.reload(filter).is_ok())
        }
    };
    Ok(LogHandle {
        fixed_by: (origin != "default").then_some(origin),
        set,
    })
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn levels_and_target_directives_are_checked() {
        assert_eq!(directives("warning").as_deref(), Some("warn"));
        assert_eq!(directives("INFO").as_deref(), Some("info"));
        assert_eq!(
            directives("info, warren_local=Debug").as_deref(),
            Some("info,warren_local=debug")
        );
        for bad in ["", "warnings", "verbose", "warren_local", "=info", "warren_local=loud"] {
            assert_eq!(directives(bad), None, "{bad:?}");
        }
    }
}
