//! The BIND and UDP test vectors of docs/PROTOCOL.md (§16), checked against the public API.
//! The expected bytes were computed independently, in Python with the `cryptography` package
//! (the script is PROTOCOL.md appendix B); if they disagree, the script is the reference.

use std::net::SocketAddr;
use warren_common::proto::Encode;

use warren_common::crypto::{Key, Purpose};
use warren_common::proto::address::Address;
use warren_common::proto::bind::BindNotice;
use warren_common::proto::status::Status;
use warren_common::proto::udp::{DatagramFrame, Packet, PacketPlaintext, Socks5Datagram};
use warren_common::proto::{decode_exact, decode_prefix};
use warren_common::udp_session::{open_packet, seal_packet, SessionId};

fn key() -> Key {
    Key::from_bytes(std::array::from_fn(|i| i as u8))
}

fn session(first: u8) -> SessionId {
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
const SUBKEY_UP: &str = "1bcb2c82bb7151c9638032a385c670cd45dd17a5a9cb7d9ea82739f29ab9e8bb";
const SUBKEY_DOWN: &str = "2b33ca56b0433a0525241df27cf47e066fb3a651baeb2503cac774f2db67edf0";
const PLAINTEXT_UP: &str = "01000000006553f100030b6578616d706c652e636f6d003570696e67";
const PACKET_UP: &str = concat!(
    "606162636465666768696a6b6c6d6e6f0000000000000005f6bd963ed96fd02f",
    "ec5eb26575eae3a0cf90a403fb57d86680fc5bb51026fde2b258487a02ed59b2",
    "d285c7de",
);
const PLAINTEXT_DOWN: &str = "01000000006553f10101c00002350035706f6e67";
const PACKET_DOWN: &str = concat!(
    "808182838485868788898a8b8c8d8e8f0000000000000000faaa32664a8a65b2",
    "5f076a38197dfd29f75d09956ac4d1936f496b0c6f54ea5b957bdc41",
);
const PLAINTEXT_END: &str = "02000000006553f102";
const PACKET_END: &str = concat!(
    "606162636465666768696a6b6c6d6e6f0000000000000006be686564b5fe9acf",
    "2b8ffaeba5c7e6c63d40415cb05102e256",
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
    assert_eq!(hex::encode(key().subkey(TO_REMOTE, &session(0x60))), SUBKEY_UP);
    assert_eq!(hex::encode(key().subkey(TO_LOCAL, &session(0x80))), SUBKEY_DOWN);
    let up = PacketPlaintext {
        timestamp: 1_700_000_000,
        address: example_dns(),
        data: b"ping".to_vec(),
    };
    assert_eq!(encoded(|b| up.encode(b)), PLAINTEXT_UP);
    let sealed = seal_packet(
        &key(),
        TO_REMOTE,
        &session(0x60),
        5,
        &hex::decode(PLAINTEXT_UP).unwrap(),
    )
    .unwrap();
    assert_eq!(hex::encode(&sealed), PACKET_UP);
    let (id, number, plaintext) = open_packet(&key(), TO_REMOTE, &hex::decode(PACKET_UP).unwrap()).unwrap();
    assert_eq!((id, number), (session(0x60), 5));
    assert_eq!(decode_exact(&plaintext), Ok(up));

    let down = PacketPlaintext {
        timestamp: 1_700_000_001,
        address: Address::Ip(SocketAddr::from(([192, 0, 2, 53], 53))),
        data: b"pong".to_vec(),
    };
    assert_eq!(encoded(|b| down.encode(b)), PLAINTEXT_DOWN);
    let sealed = seal_packet(
        &key(),
        TO_LOCAL,
        &session(0x80),
        0,
        &hex::decode(PLAINTEXT_DOWN).unwrap(),
    )
    .unwrap();
    assert_eq!(hex::encode(&sealed), PACKET_DOWN);
    let (_, _, plaintext) = open_packet(&key(), TO_LOCAL, &sealed).unwrap();
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
    let sealed = seal_packet(
        &key(),
        TO_REMOTE,
        &session(0x60),
        6,
        &hex::decode(PLAINTEXT_END).unwrap(),
    )
    .unwrap();
    assert_eq!(hex::encode(&sealed), PACKET_END);
    let (_, _, plaintext) = open_packet(&key(), TO_REMOTE, &sealed).unwrap();
    assert_eq!(decode_exact::<Packet>(&plaintext), Ok(end));
}
