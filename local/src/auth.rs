//! Checking a client's login against `local.users`: the one comparison behind SOCKS5's
//! username/password method (RFC 1929) and HTTP's `Proxy-Authorization: Basic`.

use subtle::ConstantTimeEq;
use warren_common::config::User;

/// Whether `username`/`password` belong to one of `users`. Every user is compared, each in
/// constant time, so timing does not reveal which part of a guess was right.
pub fn check_login(users: &[User], username: &[u8], password: &[u8]) -> bool {
    let mut ok = subtle::Choice::from(0u8);
    for user in users {
        let name = user.username.as_bytes().ct_eq(username);
        let pass = user.password.expose().ct_eq(password);
        ok |= name & pass;
    }
    ok.into()
}
