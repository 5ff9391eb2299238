//! Fuzz target `udp`: every UDP message (`proto/udp.rs`) on both transports: the SOCKS5 UDP
//! header applications send, the datagram frame of UDP-over-TCP (a stream of frames, as
//! `remote/src/udp/tcp.rs` reads it), and the plaintext of an encrypted UDP packet, plus the
//! packet opened under a fixed key. The first byte picks the message.

use crate::crypto::{Key, Purpose};
use crate::proto::udp::{DatagramFrame, Packet, PacketPlaintext, Socks5Datagram};
use crate::proto::{decode_exact, decode_prefix};
use crate::udp_session::{open_packet, seal_packet, PacketSessions, Refusal, PACKET_HEADER_LEN};

use super::{round_trip, selector};

/// Decodes one UDP message chosen by `data[0]` from the rest; checks round trips.
pub fn udp(data: &[u8]) {
    let Some((which, bytes)) = selector(data) else {
        return;
    };
    match which % 5 {
        // A datagram fills its container: no prefix property, the data is the rest.
        0 => drop(round_trip::<Socks5Datagram>(bytes, false)),
        1 => frames(bytes),
        2 => drop(round_trip::<PacketPlaintext>(bytes, false)),
        3 => drop(round_trip::<Packet>(bytes, false)),
        _ => packet(bytes),
    }
}

/// A UDP-over-TCP stream: frames one after another until the bytes run out or one is invalid.
fn frames(mut bytes: &[u8]) {
    loop {
        match decode_prefix::<DatagramFrame>(bytes) {
            Ok((frame, used)) => {
                let mut wire = Vec::new();
                assert_eq!(frame.encode(&mut wire), Some(()), "a decoded frame fits its LEN");
                assert_eq!(decode_exact::<DatagramFrame>(&wire), Ok(frame));
                bytes = bytes.get(used..).unwrap_or_default();
            }
            Err(_) => return,
        }
    }
}

/// The fixed key every encrypted-packet input is opened under.
fn key() -> Key {
    Key::from_bytes([7; 32])
}

/// `bytes` as a whole packet on the wire (session ID, packet number, sealed plaintext, tag)
/// under a fixed key, opened alone and through a session table; and, so the fuzzer reaches the
/// decoder behind the AEAD, `bytes` as a plaintext sealed here and opened again: once it opens
/// (if it is stamped inside the window), a second time it is a replay.
fn packet(bytes: &[u8]) {
    for purpose in [Purpose::UdpToRemote, Purpose::UdpToLocal] {
        if let Ok((_, _, plaintext)) = open_packet(&key(), purpose, bytes) {
            let _ = decode_exact::<Packet>(&plaintext);
        }
        let mut table = PacketSessions::new(purpose, 4, 0);
        let _ = table.open(&key(), &mut bytes.to_vec(), 1_700_000_000);
        let Ok(sealed) = seal_packet(&key(), purpose, &[1; 16], 9, bytes) else {
            continue;
        };
        let (id, number, plaintext) = open_packet(&key(), purpose, &sealed).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((id, number, plaintext.as_slice()), ([1; 16], 9, bytes));
        let _ = round_trip::<Packet>(&plaintext, false);
        // Stamped "now" as far as the table knows: the packet's own TIMESTAMP, if it has one.
        let Some(now) = bytes.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else {
            continue;
        };
        let mut table = PacketSessions::new(purpose, 4, 0);
        let mut copy = sealed.clone();
        let first = table.open(&key(), &mut copy, now).map(<[u8]>::to_vec);
        assert_eq!(first, Ok(bytes.to_vec()), "a fresh packet opens");
        assert_eq!(table.open(&key(), &mut sealed.clone(), now), Err(Refusal::Replay));
        assert_eq!(sealed.get(PACKET_HEADER_LEN - 1), Some(&9));
    }
}
