//! Reloading on SIGHUP (Unix): the same file is read again, with the same flags over it, and
//! checked as at start. A valid file replaces the running config for what starts from then on
//! (each server decides what that covers; open connections keep the config they started with);
//! an invalid one is refused with its field-named error and the running config stays. What a
//! reload cannot change (the listener, the connection caps) is logged as needing a restart and
//! keeps its running value until then.
//!
//! ```text
//! SIGHUP ─▶ load(path, flags) ─┬─ error ─▶ ERROR "reload refused ...: <field>: <why>"   (config unchanged)
//!                              └─ ok ────▶ WARN per field needing a restart, WARN per warning,
//!                                          configs.send(new), INFO "config reloaded",
//!                                          the file's log_level applied (unless a flag or
//!                                          RUST_LOG set the level)
//! ```
//!
//! Windows has no SIGHUP: there a change takes a restart.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{paths, with_causes, ServerConfig};
use crate::config::RawConfig;
use crate::logging::LogHandle;

/// Reloads `path` into `configs` at every SIGHUP until `shutdown`. The handler is installed
/// before this returns, so a SIGHUP sent right after is caught (it used to kill the process).
pub(super) fn on_sighup<C>(
    path: PathBuf,
    flags: impl Fn(&mut RawConfig) + Send + Sync + 'static,
    configs: watch::Sender<Arc<C>>,
    log: LogHandle,
    shutdown: CancellationToken,
) where
    C: ServerConfig + Send + Sync + 'static,
{
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!("cannot catch SIGHUP ({e}): the config cannot be reloaded, only restarted");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    got = hangups.recv() => if got.is_none() { return },
                }
                reload(&path, &flags, &configs, &log);
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (path, flags, configs, log, shutdown);
    }
}

/// One reload; see the module's diagram.
fn reload<C: ServerConfig>(
    path: &std::path::Path,
    flags: &dyn Fn(&mut RawConfig),
    configs: &watch::Sender<Arc<C>>,
    log: &LogHandle,
) {
    tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
    let loaded = match paths::load::<C>(Some(path), flags) {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!("reload refused, the running config stays: {}", with_causes(&e));
            return;
        }
    };
    let running = configs.borrow().clone();
    for field in running.restart_needed(&loaded.config) {
        tracing::warn!("{field} changed: that takes a restart; until then the running value stays");
    }
    for warning in loaded.config.warnings() {
        tracing::warn!("{warning}");
    }
    configs.send_replace(Arc::new(loaded.config));
    // Said before the file's log level applies, so the line shows whatever that level is.
    tracing::info!("config reloaded: new connections use it; open ones keep the config they started with");
    if let Some(level) = log.apply_file_level(loaded.log_level.as_deref()) {
        // At debug: seen only when the new level lets debug lines through.
        tracing::debug!("log level is now {level} (the config file's log_level)");
    }
}
