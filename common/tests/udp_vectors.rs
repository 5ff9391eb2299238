//! The BIND and UDP test vectors of docs/PROTOCOL.md (§16), checked against the public API.
//! The expected bytes were computed independently, in Python with the `cryptography` package
//! (the script is PROTOCOL.md appendix B); if they disagree, the script is the reference.

use std::net::SocketAddr;
use warren_common::proto::Encode;

use warren_common::crypto::{open_packet, seal_packet, Key, Purpose, SALT_LEN};
use warren_common::proto::address::Address;
use warren_common::proto::bind::BindNotice;
use warren_common::proto::status::Status;
use warren_common::proto::udp::{DatagramFrame, Packet, PacketPlaintext, Socks5Datagram};
use warren_common::proto::{decode_exact, decode_prefix};

fn key() -> Key {
    Key::from_bytes(std::array::from_fn(|i| i as u8))
}

fn salt(first: u8) -> [u8; SALT_LEN] {
    std::array::from_fn(|i| first + i as u8)
}

fn example_dns() -> Address {
    Address::domain("example.com", 53).unwrap()
}

const NOTICE_OK: &str = "0001c00002091388";
const NOTICE_TIMEOUT: &str = "0601000000000000";
const SOCKS5_DATAGRAM: &str = "000000030b6578616d706c652e636f6d003570696e67";
const FRAME_UP: &str = "0013030b6578616d706c652e636f6d003570696e67";
const FRAME_DOWN: &str = "00170420010db80000000000000000000000010035706f6e67";
const SUBKEY_UP: &str = "b39a7e01d25f7fa94a44e9c62b5ab9cb51d5470181ca513a2c896f7ceab8e3d2";
const SUBKEY_DOWN: &str = "0e43ebe6ae85d04277b736164482727b4c970029633f6a7089e345411e196c24";
const PLAINTEXT_UP: &str = "01000000006553f100030b6578616d706c652e636f6d003570696e67";
const PACKET_UP: &str = concat!(
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f",
    "7840cc9e469072e9797b2b5309d69351dbd8a3308273539ccb4c52f573c52cea",
    "a8b9cdf4df13918657421e24",
);
const PLAINTEXT_DOWN: &str = "01000000006553f10101c00002350035706f6e67";
const PACKET_DOWN: &str = concat!(
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
    "c577c370cf6cf1b37dcaa4a9d4b5f05a0d8f234fdb359b417e5ee6fc0f88e2d0",
    "4c7060fd",
);
const PLAINTEXT_END: &str = "02000000006553f102";
const PACKET_END: &str = concat!(
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
    "1683e158ede68ed6917570a13397a820e5b7212dc0bf75f71a",
);
const TO_REMOTE: Purpose = Purpose::UdpToRemote;
const TO_LOCAL: Purpose = Purpose::UdpToLocal;

fn encoded(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut buf = Vec::new();
    f(&mut buf);
    hex::encode(buf)
}

#[test]
fn bind_notices() {
    let ok = BindNotice {
        status: Status::Succeeded,
        peer: Address::Ip(SocketAddr::from(([192, 0, 2, 9], 5000))),
    };
    assert_eq!(encoded(|b| ok.encode(b)), NOTICE_OK);
    assert_eq!(
        decode_prefix::<BindNotice>(&hex::decode(NOTICE_OK).unwrap()),
        Ok((ok, 8))
    );
    let timeout = BindNotice {
        status: Status::TtlExpired,
        peer: Address::UNSPECIFIED,
    };
    assert_eq!(encoded(|b| timeout.encode(b)), NOTICE_TIMEOUT);
}

#[test]
fn socks5_udp_header() {
    let d = Socks5Datagram {
        frag: 0,
        address: example_dns(),
        data: b"ping".to_vec(),
    };
    assert_eq!(encoded(|b| d.encode(b)), SOCKS5_DATAGRAM);
    assert_eq!(decode_exact(&hex::decode(SOCKS5_DATAGRAM).unwrap()), Ok(d));
}

#[test]
fn udp_over_tcp_frames() {
    let up = DatagramFrame {
        address: example_dns(),
        data: b"ping".to_vec(),
    };
    assert_eq!(encoded(|b| up.encode(b).unwrap()), FRAME_UP);
    let down = DatagramFrame {
        address: Address::Ip("[2001:db8::1]:53".parse().unwrap()),
        data: b"pong".to_vec(),
    };
    assert_eq!(encoded(|b| down.encode(b).unwrap()), FRAME_DOWN);
    assert_eq!(decode_exact(&hex::decode(FRAME_DOWN).unwrap()), Ok(down));
}

#[test]
fn encrypted_udp_packets() {
    assert_eq!(hex::encode(key().subkey(TO_REMOTE, &salt(0x60))), SUBKEY_UP);
    assert_eq!(hex::encode(key().subkey(TO_LOCAL, &salt(0x80))), SUBKEY_DOWN);
    let up = PacketPlaintext {
        timestamp: 1_700_000_000,
        address: example_dns(),
        data: b"ping".to_vec(),
    };
    assert_eq!(encoded(|b| up.encode(b)), PLAINTEXT_UP);
    let sealed = seal_packet(&key(), TO_REMOTE, &salt(0x60), &hex::decode(PLAINTEXT_UP).unwrap()).unwrap();
    assert_eq!(hex::encode(&sealed), PACKET_UP);
    let (got_salt, plaintext) = open_packet(&key(), TO_REMOTE, &hex::decode(PACKET_UP).unwrap()).unwrap();
    assert_eq!(got_salt, salt(0x60));
    assert_eq!(decode_exact(&plaintext), Ok(up));

    let down = PacketPlaintext {
        timestamp: 1_700_000_001,
        address: Address::Ip(SocketAddr::from(([192, 0, 2, 53], 53))),
        data: b"pong".to_vec(),
    };
    assert_eq!(encoded(|b| down.encode(b)), PLAINTEXT_DOWN);
    let sealed = seal_packet(&key(), TO_LOCAL, &salt(0x80), &hex::decode(PLAINTEXT_DOWN).unwrap()).unwrap();
    assert_eq!(hex::encode(&sealed), PACKET_DOWN);
    let (_, plaintext) = open_packet(&key(), TO_LOCAL, &sealed).unwrap();
    assert_eq!(decode_exact(&plaintext), Ok(down));

    // Bound to their direction: neither packet opens as the other direction's.
    assert!(open_packet(&key(), TO_LOCAL, &hex::decode(PACKET_UP).unwrap()).is_err());
    assert!(open_packet(&key(), TO_REMOTE, &sealed).is_err());
}

#[test]
fn end_of_association_packet() {
    let end = Packet::End {
        timestamp: 1_700_000_002,
    };
    assert_eq!(encoded(|b| end.encode(b)), PLAINTEXT_END);
    let sealed = seal_packet(&key(), TO_REMOTE, &salt(0x80), &hex::decode(PLAINTEXT_END).unwrap()).unwrap();
    assert_eq!(hex::encode(&sealed), PACKET_END);
    let (_, plaintext) = open_packet(&key(), TO_REMOTE, &sealed).unwrap();
    assert_eq!(decode_exact::<Packet>(&plaintext), Ok(end));
}
