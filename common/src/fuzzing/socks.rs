//! Fuzz target `socks`: every SOCKS5 (RFC 1928, RFC 1929) and SOCKS4/4a message, and the
//! address encoding they share (`proto/address.rs`). The first byte picks the message.

use crate::proto::address::Address;
use crate::proto::{socks4, socks5};

use super::{round_trip, selector};

/// Decodes one SOCKS message chosen by `data[0]` from the rest; checks round trips.
pub fn socks(data: &[u8]) {
    let Some((which, bytes)) = selector(data) else {
        return;
    };
    match which % 9 {
        0 => drop(round_trip::<socks5::Greeting>(bytes, true)),
        1 => drop(round_trip::<socks5::MethodSelection>(bytes, true)),
        2 => drop(round_trip::<socks5::UserPassRequest>(bytes, true)),
        3 => drop(round_trip::<socks5::UserPassReply>(bytes, true)),
        4 => drop(round_trip::<socks5::Request>(bytes, true)),
        5 => drop(round_trip::<socks5::Reply>(bytes, true)),
        6 => drop(round_trip::<socks4::Request>(bytes, true)),
        7 => drop(round_trip::<socks4::Reply>(bytes, true)),
        _ => drop(round_trip::<Address>(bytes, true)),
    }
}
