//! Replays across a remote restart (PROTOCOL.md §10), through real sockets: a request a real
//! warren-local sent, recorded by a TCP relay on its way to the remote, and a recorded UDP
//! packet, played to a new remote on the same key after the first one was shut down, reach
//! nothing. The new remote is started with `run_since` at the next second, standing for a
//! restart after the recording without waiting for the clock; a fresh request and packet stamped
//! that second still get through it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use warren_common::crypto::{Key, Purpose};
use warren_common::proto::address::Address;
use warren_common::proto::header::RequestHeader;
use warren_common::proto::socks5::ReplyCode;
use warren_common::proto::status::Status;
use warren_common::proto::udp::PacketPlaintext;
use warren_common::time::unix_now;
use warren_common::tunnel::PendingTunnel;
use warren_common::udp_session::{random_session_id, seal_packet};
use warren_tests::*;

const ACL: &str = "handshake_timeout: 1\nacl:\n  - allow: \"127.0.0.0/8\"";

/// A TCP relay to `upstream` that records the bytes its first client sends.
async fn recording_relay(upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let record = recorded.clone();
    tokio::spawn(async move {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let up = async {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = cr.read(&mut buf).await {
                if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                record.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let _ = sw.shutdown().await;
        };
        let down = async {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
            let _ = cw.shutdown().await;
        };
        tokio::join!(up, down);
    });
    (addr, recorded)
}

#[tokio::test]
async fn a_request_recorded_before_a_restart_does_not_reach_the_target_after_it() {
    let key = new_key();
    let target = target("127.0.0.1:0").await;
    let first = start_remote(&key, ACL).await;
    let (relay, recorded) = recording_relay(first.addr).await;
    let local = start_local(&key, relay, "").await;
    let (mut client, reply) = within(
        20,
        "CONNECT through the relay",
        socks5_connect(local.addr, &Address::Ip(target.addr), None),
    )
    .await
    .unwrap();
    assert_eq!(reply.code, ReplyCode::Succeeded);
    client.write_all(b"hello").await.unwrap();
    let mut echo = [0u8; 5];
    within(20, "the echo", client.read_exact(&mut echo)).await.unwrap();
    client.shutdown().await.unwrap();
    read_until_closed(&mut client).await;
    assert_eq!(target.connections().await, 1);
    let recorded = recorded.lock().unwrap().clone();
    assert!(!recorded.is_empty());
    first.stop().await;

    // The restart: same key, a new process state, started after the recording's second.
    let second = start_remote_since(&key, ACL, unix_now() + 1).await;
    let mut replay = TcpStream::connect(second.addr).await.unwrap();
    replay.write_all(&recorded).await.unwrap();
    // Silence until the handshake deadline (§11): no response, and the target sees nothing.
    assert!(
        read_until_closed(&mut replay).await.is_empty(),
        "the new remote answered a replay"
    );
    assert_eq!(target.connections().await, 1, "the replayed request reached the target");

    // The new remote serves a fresh request stamped at its start second.
    let k = Key::from_base64(&key).unwrap();
    let conn = TcpStream::connect(second.addr).await.unwrap();
    let header = RequestHeader::connect(Address::Ip(target.addr), unix_now() + 1);
    let pending = PendingTunnel::send_request(conn, &k, &header, b"").await.unwrap();
    let (response, _stream) = within(20, "a fresh request's response", pending.read_response())
        .await
        .unwrap();
    assert_eq!(response.status, Status::Succeeded);
    assert_eq!(target.connections().await, 2);
    second.stop().await;
}

/// Waits until something listens on UDP `addr` (the remote binds its UDP socket when its task
/// first runs, after the test may already be sending): a garbage datagram to a port nobody
/// holds comes back as ICMP port unreachable (ECONNREFUSED on a connected socket); the remote
/// drops garbage silently.
async fn until_udp_bound(addr: SocketAddr) {
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    probe.connect(addr).await.unwrap();
    within(20, "the remote's UDP socket", async {
        let mut buf = [0u8; 16];
        loop {
            let refused = |e: &std::io::Error| e.kind() == std::io::ErrorKind::ConnectionRefused;
            if probe.send(b"garbage").await.as_ref().is_err_and(refused) {
                continue;
            }
            match tokio::time::timeout(std::time::Duration::from_millis(50), probe.recv(&mut buf)).await {
                Ok(Err(e)) if refused(&e) => continue,
                _ => return,
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_udp_packet_recorded_before_a_restart_is_dropped_after_it() {
    let key_text = new_key();
    let key = Key::from_base64(&key_text).unwrap();
    let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let packet = |stamp: u64, data: &[u8]| {
        let mut plaintext = Vec::new();
        PacketPlaintext::encode_parts(stamp, &Address::Ip(target_addr), data, &mut plaintext);
        seal_packet(&key, Purpose::UdpToRemote, &random_session_id(), 0, &plaintext).unwrap()
    };
    let mut buf = vec![0u8; 65536];

    let first = start_remote(&key_text, ACL).await;
    until_udp_bound(first.addr).await;
    let recorded = packet(unix_now(), b"recorded");
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sender.send_to(&recorded, first.addr).await.unwrap();
    let (n, _) = within(20, "the first datagram", target.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"recorded");
    first.stop().await;

    // After the restart, the recording and then a fresh packet from the same socket: one
    // source's packets are forwarded in order, so a replay would arrive first.
    let second = start_remote_since(&key_text, ACL, unix_now() + 1).await;
    until_udp_bound(second.addr).await;
    sender.send_to(&recorded, second.addr).await.unwrap();
    sender
        .send_to(&packet(unix_now() + 1, b"fresh"), second.addr)
        .await
        .unwrap();
    let (n, _) = within(20, "the fresh datagram", target.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"fresh", "the recorded packet was forwarded again");
    second.stop().await;
}
