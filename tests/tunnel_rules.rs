//! PROTOCOL.md §9–§11 through real sockets, for the cases tests/security.rs does not cover: a
//! request that authenticates but does not decode gets the silence of a probe; two copies of one
//! request sent at once are served once; the timestamp window's edges.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_common::crypto::{frame_len, random_salt, Key, Purpose, SessionCipher, LEN_BLOCK};
use warren_common::proto::address::Address;
use warren_common::proto::header::{RequestHeader, TIMESTAMP_WINDOW_SECS};
use warren_common::proto::status::Status;
use warren_common::time::unix_now;
use warren_common::tunnel::PendingTunnel;
use warren_tests::*;

/// A remote that holds silent connections briefly (0.57–1.0 × 1.5 s) and may reach loopback.
const REMOTE_EXTRA: &str = "handshake_timeout: 1.5\nacl:\n  - allow: \"127.0.0.0/8\"";

/// Reads until the remote closes; the bytes it sent first (a silent remote sends none).
async fn bytes_before_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    within(20, "the remote closes", stream.read_to_end(&mut got))
        .await
        .unwrap_or_default();
    got
}

/// How many bytes the remote sends before its first pause or its close: 0 for a silent remote
/// (it closes at its hold time), more for an answer.
async fn first_read(stream: &mut TcpStream) -> usize {
    let mut buf = [0u8; 4096];
    within(20, "an answer or a close", stream.read(&mut buf))
        .await
        .unwrap_or(0)
}

/// The bytes a local sends for a CONNECT to `to` stamped `timestamp`.
async fn request_bytes(key: &Key, to: SocketAddr, timestamp: u64) -> Vec<u8> {
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let header = RequestHeader::connect(Address::Ip(to), timestamp);
    let _pending = PendingTunnel::send_request(ours, key, &header, b"ping")
        .await
        .expect("send");
    let mut buf = vec![0u8; 1 << 16];
    let n = within(5, "the request bytes", theirs.read(&mut buf))
        .await
        .expect("read");
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn a_request_that_authenticates_but_does_not_decode_gets_silence() {
    let target = target("127.0.0.1:0").await;
    let key_text = new_key();
    let key = Key::from_base64(&key_text).unwrap();
    let remote = start_remote(&key_text, REMOTE_EXTRA).await;
    // CMD 0x7f (no such command), then a plausible rest: sealed with the right key, so it passes
    // authentication and fails only in the decoder.
    let mut plaintext = vec![0x7f];
    plaintext.extend_from_slice(&unix_now().to_be_bytes());
    plaintext.extend_from_slice(&[0x01, 127, 0, 0, 1]);
    plaintext.extend_from_slice(&target.addr.port().to_be_bytes());
    plaintext.extend_from_slice(&[0, 0]);
    let salt = random_salt();
    let mut frame = vec![0u8; frame_len(plaintext.len())];
    frame[LEN_BLOCK..LEN_BLOCK + plaintext.len()].copy_from_slice(&plaintext);
    SessionCipher::new(&key, Purpose::TcpRequest, &salt)
        .seal_frame(&mut frame)
        .unwrap();
    let mut stream = TcpStream::connect(remote.addr).await.unwrap();
    stream.write_all(&salt).await.unwrap();
    stream.write_all(&frame).await.unwrap();
    assert!(
        bytes_before_close(&mut stream).await.is_empty(),
        "the remote answered an undecodable request"
    );
    assert_eq!(target.connections().await, 0);
    remote.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_copies_of_one_request_at_once_are_served_once() {
    let target = target("127.0.0.1:0").await;
    let key_text = new_key();
    let key = Key::from_base64(&key_text).unwrap();
    let remote = start_remote(&key_text, REMOTE_EXTRA).await;
    let bytes = request_bytes(&key, target.addr, unix_now()).await;
    let (mut a, mut b) = (
        TcpStream::connect(remote.addr).await.unwrap(),
        TcpStream::connect(remote.addr).await.unwrap(),
    );
    let (wa, wb) = tokio::join!(a.write_all(&bytes), b.write_all(&bytes));
    wa.unwrap();
    wb.unwrap();
    let (ga, gb) = tokio::join!(first_read(&mut a), first_read(&mut b));
    let answered = [ga, gb].iter().filter(|n| **n > 0).count();
    assert_eq!(answered, 1, "exactly one copy is answered, the other gets silence");
    assert_eq!(target.connections().await, 1, "the target is reached once");
    remote.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timestamp_window_is_inclusive_to_its_edge() {
    let target = target("127.0.0.1:0").await;
    let key_text = new_key();
    let key = Key::from_base64(&key_text).unwrap();
    // Up for a while, so a stamp in the past is after its start (§10).
    let remote = start_remote_since(&key_text, REMOTE_EXTRA, unix_now() - 1000).await;
    let window = TIMESTAMP_WINDOW_SECS as i64;
    // Two seconds inside each edge: served. Two seconds outside: silence. (Two, not one: the
    // clock may tick between stamping and checking.)
    for (offset, served) in [
        (-(window - 2), true),
        (window - 2, true),
        (-(window + 2), false),
        (window + 2, false),
    ] {
        let stamp = unix_now().checked_add_signed(offset).unwrap();
        let mut stream = TcpStream::connect(remote.addr).await.unwrap();
        let header = RequestHeader::connect(Address::Ip(target.addr), stamp);
        let pending = PendingTunnel::send_request(&mut stream, &key, &header, b"")
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(20), pending.read_response()).await;
        match (answer, served) {
            (Ok(Ok((response, _))), true) => assert_eq!(response.status, Status::Succeeded, "at {offset:+} s"),
            (Ok(Err(_)), false) => {}
            (other, _) => panic!(
                "at {offset:+} s: expected served = {served}, got {:?}",
                other.map(|r| r.map(|(h, _)| h.status))
            ),
        }
    }
    assert_eq!(target.connections().await, 2);
    remote.stop().await;
}
