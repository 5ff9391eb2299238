//! Secrets in the config: a [`Secret`] never shows itself in `Debug` output (so a logged config
//! or a panic message cannot leak a password), and the SOCKS5 [`User`] list built from
//! `local.users`.

/// A secret string whose Debug output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret's bytes, for the one place that compares or sends them.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A username/password pair a SOCKS5 or HTTP client may log in with (RFC 1929, Basic auth).
#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub password: Secret,
}
