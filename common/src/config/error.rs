//! The one error type of the config layer. Every message starts with the field it is about
//! (`local.routes[2].proxy: ...`), so a user can find the line to fix; the binaries print it and
//! exit before binding anything.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read. The cause is part of the message and deliberately
    /// not a `source` (a field named `source` would be one): the binaries print an error's
    /// sources after it, which printed the cause twice.
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    /// The YAML does not parse, or has an unknown or mistyped field (serde names it); the
    /// cause is in the message, not a `source`, as for `Read`.
    #[error("{path}: {cause}")]
    Syntax { path: String, cause: serde_yaml::Error },
    /// A field is missing or has an invalid value.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

/// A [`ConfigError::Invalid`] for `field` (its dotted path, as written in the YAML).
pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}
