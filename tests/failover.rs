//! Failover lists on the local, the README's promises (Routing, failover and chains) each
//! through real sockets: a remote the health checker marks down is tried only after the others,
//! `udp_transport: udp` sends an association's datagrams to the first remote of the default
//! list that is up, and a target's own refusal is the answer: the next remote is never asked.
//!
//! A "down" remote here is an [`Unanswered`] port: the health check's TCP connect times out, and
//! so would a tunnel dialled there (the local's `connect_timeout` is longer than the tests'
//! hang bounds), so a local that dials it first fails the test instead of failing over.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use warren_common::proto::address::Address;
use warren_common::proto::socks5::ReplyCode;
use warren_common::proto::udp::Socks5Datagram;
use warren_common::proto::{decode_exact, Encode};
use warren_local::Health;
use warren_tests::*;

/// A local whose default is `proxy: [a, b]`, health-checked every 0.2 s, with a 60 s connect
/// timeout (far above the hang bounds below).
async fn local_over(key: &str, a: SocketAddr, b: SocketAddr, extra: &str) -> (Server, Arc<Health>) {
    let yaml = format!(
        r#"key: "{key}"
local:
  remotes:
    a: {{ address: "{a}" }}
    b: {{ address: "{b}" }}
  default: {{ proxy: [a, b] }}
  health_interval: 0.2
  connect_timeout: 60
{extra}"#
    );
    start_local_yaml(&yaml).await
}

/// Polls `health` until the remote named `remote` reads down (bounded: 20 s).
async fn wait_down(health: &Health, remote: &str) {
    within(20, "the health checker marks the remote down", async {
        while health.is_up(remote) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The README: a remote that fails its health check is "tried only after the others". The
/// first remote of the list is down (its connects hang), so only that order answers at all.
#[tokio::test]
async fn a_down_remote_is_tried_after_the_others() {
    let key = new_key();
    let down = unanswered_port();
    let live = start_remote(&key, "acl:\n  - allow: \"127.0.0.0/8\"\noutbound_source: \"127.0.0.3\"").await;
    let (local, health) = local_over(&key, down.addr, live.addr, "").await;
    wait_down(&health, "a").await;
    let target = target("127.0.0.1:0").await;
    let (mut s, reply) = within(
        20,
        "CONNECT",
        socks5_connect(local.addr, &Address::Ip(target.addr), None),
    )
    .await
    .unwrap();
    assert_eq!(reply.code, ReplyCode::Succeeded);
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    within(20, "echo", s.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"ping");
    assert_eq!(ips(&target.peers().await), ["127.0.0.3"], "served by the live remote");
}

/// The README: with `udp_transport: udp` an association's datagrams go to "the first remote of
/// the default list that is up". The first is down (TCP hangs) and a UDP socket on its port
/// counts what reaches it; the target answers each datagram with the source it saw, so an echo
/// can only have come through the live remote.
#[tokio::test]
async fn udp_packets_go_to_the_first_remote_that_is_up() {
    let key = new_key();
    let down = unanswered_port();
    let down_udp = UdpSocket::bind(down.addr).await.expect("UDP on the down remote's port");
    let reached_down = Arc::new(AtomicUsize::new(0));
    let counter = reached_down.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while down_udp.recv_from(&mut buf).await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let live = start_remote(&key, "acl:\n  - allow: \"127.0.0.0/8\"").await;
    let (local, health) = local_over(&key, down.addr, live.addr, "  udp_transport: udp\n").await;
    wait_down(&health, "a").await;
    assert!(health.is_up("b"));

    let echo = udp_echo_server("127.0.0.1:0").await;
    let (_control, relay) = udp_associate(local.addr).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..5u8 {
        let mut out = Vec::new();
        Socks5Datagram {
            frag: 0,
            address: Address::Ip(echo),
            data: vec![i; 10],
        }
        .encode(&mut out);
        client.send_to(&out, relay).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let n = within(20, "the echo through the live remote", client.recv(&mut buf))
            .await
            .unwrap();
        let back: Socks5Datagram = decode_exact(&buf[..n]).expect("a SOCKS5 UDP datagram");
        assert_eq!((back.address, back.data), (Address::Ip(echo), vec![i; 10]));
    }
    assert_eq!(
        reached_down.load(Ordering::SeqCst),
        0,
        "nothing went to the down remote"
    );
}

/// A listener standing in for a remote that counts the connections that send it a byte (a
/// tunnel request) and never answers; the health checker's connects send nothing.
async fn counting_remote() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                if matches!(stream.read(&mut byte).await, Ok(1)) {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                // Hold the connection open, unanswered, until the local gives up on it.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            });
        }
    });
    (addr, requests)
}

/// The README: "an answer about the target (refused, unresolvable, denied) does not" pass the
/// request on. The first remote reaches the target, which refuses (a port held closed): the
/// client gets exactly 0x05, and the second remote never sees a request (were it asked, it would
/// hold the request unanswered past the hang bound).
#[tokio::test]
async fn a_targets_refusal_does_not_fail_over() {
    let key = new_key();
    let first = start_remote(&key, "acl:\n  - allow: \"127.0.0.0/8\"").await;
    let (second, requests) = counting_remote().await;
    let (local, _) = local_over(&key, first.addr, second, "").await;
    let closed = closed_port();
    for _ in 0..3 {
        let (_s, reply) = within(
            20,
            "CONNECT",
            socks5_connect(local.addr, &Address::Ip(closed.addr), None),
        )
        .await
        .unwrap();
        assert_eq!(reply.code, ReplyCode::ConnectionRefused);
    }
    assert_eq!(requests.load(Ordering::SeqCst), 0, "the second remote was never asked");
}
