//! Where a binary looks for its config file when started without `-c`, and the loading of
//! that file: parsed, overridden by the binary's flags, checked.

use std::path::{Path, PathBuf};

use super::{ServerConfig, StartError};
use crate::config::RawConfig;

/// A config file loaded and checked: the server's config, the file it came from, and the
/// file's `log_level` (checked, canonical).
pub(super) struct Loaded<C> {
    pub path: PathBuf,
    pub config: C,
    pub log_level: Option<String>,
}

/// The config file (`path`, else the first of [`default_config_paths`] that exists), parsed,
/// with the binary's `flags` written over it, and checked.
pub(super) fn load<C: ServerConfig>(
    path: Option<&Path>,
    flags: &dyn Fn(&mut RawConfig),
) -> Result<Loaded<C>, StartError> {
    let path = match path {
        Some(path) => path.to_owned(),
        None => {
            let tried = default_config_paths(|name| std::env::var_os(name));
            // A path that exists but cannot be read (permissions, a directory, a dangling link) is
            // chosen, so its error is reported, rather than silently passed over for the next.
            let found = tried
                .iter()
                .find(|p| !matches!(std::fs::metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound))
                .cloned();
            match found {
                Some(found) => {
                    tracing::info!(config = %found.display(), "no -c given: using the config file found here");
                    found
                }
                None => return Err(StartError::NoConfig { tried }),
            }
        }
    };
    let mut raw = RawConfig::load(&path)?;
    flags(&mut raw);
    let config = C::try_from(&raw)?;
    let log_level = raw.log_level()?;
    Ok(Loaded {
        path,
        config,
        log_level,
    })
}

/// Where a binary started without `-c` looks for its config, in order (the first that exists
/// is used): on Unix `$XDG_CONFIG_HOME/warren/config.yaml` (or `$HOME/.config/warren/...` when
/// XDG_CONFIG_HOME is unset or empty), then `/etc/warren/config.yaml`; on Windows
/// `%APPDATA%\warren\config.yaml`, then `%PROGRAMDATA%\warren\config.yaml`; a variable that
/// is unset, empty or not an absolute path is skipped. `env` reads
/// an environment variable (a parameter, so tests need not change the process's own).
pub fn default_config_paths(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Vec<PathBuf> {
    config_paths_for(cfg!(windows), env)
}

/// [`default_config_paths`] for Windows (`windows`) or Unix: a parameter, so the unit tests
/// check both lists on any platform.
fn config_paths_for(windows: bool, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Vec<PathBuf> {
    // Unset, empty and relative values are ignored (the XDG Base Directory spec's rule).
    let set = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    let mut paths = Vec::new();
    if windows {
        for var in ["APPDATA", "PROGRAMDATA"] {
            if let Some(dir) = set(var) {
                paths.push(dir.join("warren").join("config.yaml"));
            }
        }
    } else {
        if let Some(dir) = set("XDG_CONFIG_HOME").or_else(|| set("HOME").map(|home| home.join(".config"))) {
            paths.push(dir.join("warren").join("config.yaml"));
        }
        paths.push(PathBuf::from("/etc/warren/config.yaml"));
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        move |name: &str| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.into())
    }

    #[test]
    fn default_config_paths_on_windows_are_appdata_then_programdata() {
        // Absolute on the platform the test runs on.
        let (a, p) = if cfg!(windows) {
            ("C:\\A", "C:\\P")
        } else {
            ("/A", "/P")
        };
        let paths = config_paths_for(true, env(&[("APPDATA", a), ("PROGRAMDATA", p), ("HOME", "/h")]));
        assert_eq!(
            paths,
            [
                PathBuf::from(a).join("warren").join("config.yaml"),
                PathBuf::from(p).join("warren").join("config.yaml")
            ]
        );
        assert!(config_paths_for(true, env(&[])).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn default_config_paths_follow_xdg_then_home_then_etc() {
        let paths = |pairs: &[(&str, &str)]| config_paths_for(false, env(pairs));
        let etc = PathBuf::from("/etc/warren/config.yaml");
        assert_eq!(
            paths(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]),
            [PathBuf::from("/x/warren/config.yaml"), etc.clone()]
        );
        // An empty XDG_CONFIG_HOME counts as unset (the XDG Base Directory spec).
        assert_eq!(
            paths(&[("XDG_CONFIG_HOME", ""), ("HOME", "/h")]),
            [PathBuf::from("/h/.config/warren/config.yaml"), etc.clone()]
        );
        // A relative XDG_CONFIG_HOME is ignored too.
        assert_eq!(
            paths(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")]),
            [PathBuf::from("/h/.config/warren/config.yaml"), etc.clone()]
        );
        assert_eq!(paths(&[]), [etc]);
    }
}
