//! Round trips and truncated prefixes for the codecs every connection starts with: the tunnel's
//! request and response headers (PROTOCOL.md §7) and the SOCKS5 request and reply (RFC 1928 §4,
//! §6). For any message: decoding its encoding gives it back and uses every byte; every strict
//! prefix of the encoding is "need more bytes" (`DecodeError::Incomplete`), never another
//! message, another error or a panic, so a reader that waits for more bytes on `Incomplete` is
//! always right to.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use warren_common::proto::address::Address;
use warren_common::proto::header::{Command as TunnelCommand, RequestHeader, ResponseHeader, MAX_PADDING};
use warren_common::proto::socks5::{Command, Reply, ReplyCode, Request};
use warren_common::proto::status::Status;
use warren_common::proto::{decode_prefix, Decode, DecodeError, Encode};

/// Addresses of every type. Names are letters and dots only, so none is an IP literal spelled as
/// a name (those decode to `Address::Ip`, by design: common/tests/address_model.rs).
fn address() -> impl Strategy<Value = Address> {
    prop_oneof![
        (any::<u32>(), any::<u16>()).prop_map(|(ip, port)| Address::Ip(SocketAddr::from((Ipv4Addr::from(ip), port)))),
        (any::<u128>(), any::<u16>()).prop_map(|(ip, port)| {
            let ip = Ipv6Addr::from(ip);
            // An IPv4-mapped IPv6 address is that IPv4 address (the address model).
            let ip = ip
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(ip), std::net::IpAddr::V4);
            Address::Ip(SocketAddr::new(ip, port))
        }),
        ("[a-z]{1,20}(\\.[a-z]{1,12}){0,4}", any::<u16>())
            .prop_map(|(name, port)| Address::domain(&name, port).unwrap()),
    ]
}

/// `msg` survives encode → decode whole, and every strict prefix of its encoding is Incomplete.
fn round_trips_and_prefixes_need_more<T>(msg: &T) -> Result<(), TestCaseError>
where
    T: Encode + Decode + PartialEq + std::fmt::Debug,
{
    let mut bytes = Vec::new();
    msg.encode(&mut bytes);
    prop_assert_eq!(bytes.len(), msg.encoded_len());
    let (back, used) = decode_prefix::<T>(&bytes).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    prop_assert_eq!(&back, msg);
    prop_assert_eq!(used, bytes.len());
    for cut in 0..bytes.len() {
        let got = decode_prefix::<T>(&bytes[..cut]).map(|(m, _)| m);
        prop_assert_eq!(got, Err(DecodeError::Incomplete), "prefix of {} bytes", cut);
    }
    Ok(())
}

proptest! {
    #[test]
    fn tunnel_request_headers(command in 0..4usize, timestamp in any::<u64>(), target in address(),
                              padding in 0..=MAX_PADDING as u16) {
        let command = [TunnelCommand::Connect, TunnelCommand::Bind, TunnelCommand::UdpOverTcp, TunnelCommand::Agent][command];
        let mut header = RequestHeader::new(command, target, timestamp);
        header.padding_len = padding;
        round_trips_and_prefixes_need_more(&header)?;
    }

    #[test]
    fn tunnel_response_headers(salt in any::<[u8; 32]>(), status in 0..9usize, timestamp in any::<u64>(),
                               bound in address(), padding in 0..=MAX_PADDING as u16) {
        let mut header = ResponseHeader::new(salt, Status::ALL[status], timestamp, bound);
        header.padding_len = padding;
        round_trips_and_prefixes_need_more(&header)?;
    }

    #[test]
    fn socks5_requests(command in 0..3usize, target in address()) {
        let command = [Command::Connect, Command::Bind, Command::UdpAssociate][command];
        round_trips_and_prefixes_need_more(&Request { command, target })?;
    }

    #[test]
    fn socks5_replies(code in 0..9u8, bound in address()) {
        let code = ReplyCode::from_u8(code).ok_or_else(|| TestCaseError::fail("code"))?;
        round_trips_and_prefixes_need_more(&Reply { code, bound })?;
    }
}
