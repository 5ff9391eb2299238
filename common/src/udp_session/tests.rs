use super::*;
use crate::crypto::Key;

const UP: Purpose = Purpose::UdpToRemote;
const NOW: u64 = 1_700_000_000;

/// A datagram plaintext stamped `stamp`: KIND 0x01, TIMESTAMP, then a few body bytes.
fn plaintext(stamp: u64) -> Vec<u8> {
    let mut p = vec![0x01];
    p.extend_from_slice(&stamp.to_be_bytes());
    p.extend_from_slice(b"body");
    p
}

#[test]
fn packets_round_trip_and_any_changed_byte_fails() {
    let key = Key::generate();
    let id = random_session_id();
    let packet = seal_packet(&key, UP, &id, 7, b"datagram").unwrap();
    assert_eq!(packet.len(), PACKET_OVERHEAD + 8);
    assert_eq!(open_packet(&key, UP, &packet), Ok((id, 7, b"datagram".to_vec())));
    // Session ID, packet number, body and tag are all authenticated.
    for i in [
        0,
        SESSION_ID_LEN - 1,
        SESSION_ID_LEN,
        PACKET_HEADER_LEN - 1,
        PACKET_HEADER_LEN,
        packet.len() - 1,
    ] {
        let mut bad = packet.clone();
        bad[i] ^= 1;
        assert_eq!(
            open_packet(&key, UP, &bad),
            Err(CryptoError::Authentication),
            "byte {i}"
        );
    }
    assert!(open_packet(&Key::generate(), UP, &packet).is_err(), "another key");
    assert!(
        open_packet(&key, Purpose::UdpToLocal, &packet).is_err(),
        "the other direction"
    );
    for len in [0, PACKET_OVERHEAD - 1, packet.len() - 1] {
        assert!(open_packet(&key, UP, &packet[..len]).is_err(), "truncated to {len}");
    }
}

#[test]
fn a_sealer_numbers_its_packets_from_zero() {
    let key = Key::generate();
    let mut sealer = PacketSealer::new(&key, UP);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut packet = vec![0u8; PACKET_OVERHEAD + 4];
        sealer.seal_in_place(&mut packet).unwrap();
        let (id, number, plain) = open_packet(&key, UP, &packet).unwrap();
        assert_eq!(plain, [0; 4]);
        ids.push((id, number));
    }
    assert!(ids.iter().all(|(id, _)| *id == ids[0].0), "one session");
    assert_eq!(ids.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(
        sealer.seal_in_place(&mut [0u8; PACKET_OVERHEAD - 1]),
        Err(CryptoError::BadChunkLength(PACKET_OVERHEAD - 1))
    );
    let mut last = PacketSealer::with_id(&key, UP, [0; 16], u64::MAX);
    assert_eq!(
        last.seal_in_place(&mut [0u8; PACKET_OVERHEAD]),
        Err(CryptoError::NonceExhausted)
    );
}

#[test]
fn the_window_accepts_each_number_once_and_tolerates_reordering() {
    let mut w = ReplayWindow::default();
    for n in [0, 1, 5, 3, 2, 4] {
        assert!(w.is_fresh(n), "{n}");
        w.accept(n);
        assert!(!w.is_fresh(n), "{n} again");
    }
    assert!(w.is_fresh(6));
    // A jump: the numbers it skipped stay acceptable while inside the window.
    w.accept(1000);
    assert!(w.is_fresh(999) && w.is_fresh(6));
    assert!(!w.is_fresh(5), "5 was seen (and is still inside the window)");
    w.accept(1000 + ReplayWindow::BITS - 1);
    assert!(!w.is_fresh(999), "now too old to tell: refused");
    assert!(w.is_fresh(1001) && !w.is_fresh(1000));
    // A jump past the whole window clears it.
    let far = 10 * ReplayWindow::BITS;
    w.accept(far);
    assert!(!w.is_fresh(far) && w.is_fresh(far - 1) && !w.is_fresh(far - ReplayWindow::BITS - 1));
    assert!(!w.is_fresh(u64::MAX), "the last number is never used");
}

#[test]
fn the_window_agrees_with_a_set_under_any_order() {
    // Exhaustive against a model: every number once, shuffled within reorder distance < BITS.
    use std::collections::HashSet;
    let mut w = ReplayWindow::default();
    let mut seen = HashSet::new();
    let mut state = 12345u64;
    for i in 0..20_000u64 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = (i + (state >> 33) % 700).saturating_sub(350);
        let top = seen.iter().max().copied().map_or(0, |m: u64| m + 1);
        let expect = !seen.contains(&n) && (n >= top || top - n <= ReplayWindow::BITS);
        assert_eq!(w.is_fresh(n), expect, "number {n} at step {i}");
        if expect {
            w.accept(n);
            seen.insert(n);
        }
    }
}

#[test]
fn sessions_refuse_replays_bad_stamps_and_strangers() {
    let key = Key::generate();
    let mut table = PacketSessions::new(UP, 2, NOW - 10);
    let id = random_session_id();
    let first = seal_packet(&key, UP, &id, 0, &plaintext(NOW)).unwrap();
    assert_eq!(table.open(&key, &mut first.clone(), NOW), Ok(&plaintext(NOW)[..]));
    assert_eq!(table.open(&key, &mut first.clone(), NOW), Err(Refusal::Replay));
    let second = seal_packet(&key, UP, &id, 1, &plaintext(NOW)).unwrap();
    assert!(table.open(&key, &mut second.clone(), NOW + 1).is_ok());
    let stale = seal_packet(&key, UP, &id, 2, &plaintext(NOW - 200)).unwrap();
    assert_eq!(table.open(&key, &mut stale.clone(), NOW), Err(Refusal::OutsideWindow));
    let early = seal_packet(&key, UP, &random_session_id(), 0, &plaintext(NOW - 11)).unwrap();
    assert_eq!(table.open(&key, &mut early.clone(), NOW), Err(Refusal::BeforeStart));
    let stranger = seal_packet(&Key::generate(), UP, &random_session_id(), 0, &plaintext(NOW)).unwrap();
    assert_eq!(
        table.open(&key, &mut stranger.clone(), NOW),
        Err(Refusal::Authentication)
    );
    let reflected = seal_packet(&key, Purpose::UdpToLocal, &id, 5, &plaintext(NOW)).unwrap();
    assert_eq!(
        table.open(&key, &mut reflected.clone(), NOW),
        Err(Refusal::Authentication)
    );
    assert_eq!(table.len(), 1, "refused packets leave no session behind");
}

#[test]
fn sessions_are_capped_and_forgotten_only_when_their_packets_have_expired() {
    let key = Key::generate();
    let mut table = PacketSessions::new(UP, 2, 0);
    let ids: Vec<_> = (0..3).map(|_| random_session_id()).collect();
    let packet = |i: usize, stamp| seal_packet(&key, UP, &ids[i], 0, &plaintext(stamp)).unwrap();
    assert!(table.open(&key, &mut packet(0, NOW), NOW).is_ok());
    assert!(table.open(&key, &mut packet(1, NOW), NOW).is_ok());
    assert_eq!(table.open(&key, &mut packet(2, NOW), NOW), Err(Refusal::Full));
    // Still inside the timestamp window: remembered, so the replay is refused.
    let later = NOW + TIMESTAMP_WINDOW_SECS;
    assert_eq!(table.open(&key, &mut packet(0, NOW), later), Err(Refusal::Replay));
    // Past it: forgotten (room for a new session), and the old packet fails on its stamp.
    let gone = later + PRUNE_EVERY_SECS + 1;
    assert!(table.open(&key, &mut packet(2, gone), gone).is_ok());
    assert_eq!(table.len(), 1);
    assert_eq!(table.open(&key, &mut packet(0, NOW), gone), Err(Refusal::OutsideWindow));
}

#[test]
fn append_datagram_adds_one_sealed_packet_after_what_is_there() {
    let key = Key::generate();
    let mut sealer = PacketSealer::new(&key, UP);
    let to = Address::Ip(([192, 0, 2, 1], 53).into());
    let mut buf = b"earlier".to_vec();
    assert!(sealer.append_datagram(&mut buf, NOW, &to, b"one"));
    let first_end = buf.len();
    assert!(sealer.append_datagram(&mut buf, NOW, &to, b"two"));
    assert_eq!(&buf[..7], b"earlier");
    for (packet, number, data) in [(&buf[7..first_end], 0, b"one"), (&buf[first_end..], 1, b"two")] {
        let (_, n, plain) = open_packet(&key, UP, packet).unwrap();
        assert_eq!(n, number);
        let mut want = Vec::new();
        PacketPlaintext::encode_parts(NOW, &to, data, &mut want);
        assert_eq!(plain, want);
    }
}
