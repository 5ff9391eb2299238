//! Failures along the path, over real loopback sockets: a target that never answers a SYN, a
//! client that leaves (resets) while the remote is still connecting, a remote that never answers or is
//! not there, and a remote that stops in the middle of a relay. Each ends in the right SOCKS5
//! reply or a closed connection within generous bounds, never in a hang or a leaked socket.

use std::net::SocketAddr;
use std::time::Duration;
use warren_common::proto::Encode;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use warren_common::proto::address::Address;
use warren_common::proto::socks5::{Command, Greeting, MethodSelection, ReplyCode, Request};
use warren_tests::*;

/// Upper bound for anything the tests wait for.
const BOUND: Duration = Duration::from_secs(10);
/// TCP states as /proc/net/tcp numbers them.
const ESTABLISHED: u8 = 0x01;
const SYN_SENT: u8 = 0x02;
const CLOSE_WAIT: u8 = 0x08;

/// Every TCP socket on this host (IPv4 and IPv6) as (local port, remote port, state).
fn tcp_sockets() -> Vec<(u16, u16, u8)> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 {
                continue;
            }
            let port = |f: &str| f.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if let (Some(local), Some(remote), Ok(state)) =
                (port(fields[1]), port(fields[2]), u8::from_str_radix(fields[3], 16))
            {
                out.push((local, remote, state));
            }
        }
    }
    out
}

/// Polls /proc/net/tcp (every 50 ms, up to 5 s) until `done` holds for the socket list.
async fn wait_for_sockets(what: &str, done: impl Fn(&[(u16, u16, u8)]) -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let sockets = tcp_sockets();
        if done(&sockets) {
            return;
        }
        assert!(Instant::now() < until, "after 5 s, still not: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A SOCKS5 CONNECT through `socks` answered within 10 s; returns the reply code.
async fn connect_code(socks: SocketAddr, target: SocketAddr) -> ReplyCode {
    let (_stream, reply) = timeout(BOUND, socks5_connect(socks, &Address::Ip(target), None))
        .await
        .expect("a SOCKS5 reply within 10 s")
        .expect("SOCKS5 CONNECT");
    if reply.code != ReplyCode::Succeeded {
        assert_eq!(reply.bound, Address::UNSPECIFIED);
    }
    reply.code
}

// An outbound connect that gets no answer ends, at the remote's connect_timeout, in reply
// TtlExpired (0x06).
#[tokio::test(flavor = "multi_thread")]
async fn unanswered_target_gets_reply_0x06() {
    let hole = black_hole().await;
    let pair = start_pair("connect_timeout: 1", "").await;
    assert_eq!(connect_code(pair.socks(), hole.addr).await, ReplyCode::TtlExpired);
    pair.local.stop().await;
    pair.remote.stop().await;
}

// A client that leaves (resets) while the remote is still connecting makes both ends give up at
// once: the remote's SYN-SENT socket towards the target and the tunnel connection both
// disappear, long before the 30 s connect_timeout. (A FIN alone is a half-close, still answered:
// see half_close.rs.)
#[tokio::test(flavor = "multi_thread")]
async fn client_leaving_during_connect_abandons_the_outbound_attempt() {
    let hole = black_hole().await;
    // No warm connections: the test counts the local's open connections to the remote.
    let pair = start_pair("connect_timeout: 30", "warm_connections: 0").await;
    let (hole_port, remote_port) = (hole.addr.port(), pair.remote.addr.port());

    let mut client = TcpStream::connect(pair.socks()).await.unwrap();
    let mut out = Vec::new();
    Greeting { methods: vec![0x00] }.encode(&mut out);
    client.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let MethodSelection(method) = read_message(&mut client, &mut buf).await.unwrap();
    assert_eq!(method, 0x00);
    out.clear();
    Request {
        command: Command::Connect,
        target: Address::Ip(hole.addr),
    }
    .encode(&mut out);
    client.write_all(&out).await.unwrap();

    let connecting = |s: &[(u16, u16, u8)]| s.iter().any(|&(_, r, st)| r == hole_port && st == SYN_SENT);
    let tunnel_open = |s: &[(u16, u16, u8)]| {
        s.iter()
            .any(|&(l, r, st)| (l == remote_port || r == remote_port) && (st == ESTABLISHED || st == CLOSE_WAIT))
    };
    wait_for_sockets("the remote is connecting to the black hole", |s| {
        connecting(s) && tunnel_open(s)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SO_LINGER 0: the close sends RST, which is how a client abandons; a FIN would only say
    // "no more data from me" and the local would go on waiting for the connect to answer.
    client.set_zero_linger().unwrap();
    drop(client);

    wait_for_sockets("no SYN-SENT socket towards the black hole", |s| !connecting(s)).await;
    wait_for_sockets("no open tunnel connection to the remote", |s| !tunnel_open(s)).await;
    pair.local.stop().await;
    pair.remote.stop().await;
}

// A "remote" that accepts the tunnel connection and never answers: the local gives up at its
// connect_timeout and replies GeneralFailure (0x01).
#[tokio::test(flavor = "multi_thread")]
async fn silent_remote_gets_reply_0x01() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = silent.accept().await {
            // Keep the connection open, never write.
            let _ = accepted_tx.send(stream);
        }
    });
    let local = start_local(&new_key(), silent_addr, "connect_timeout: 2").await;
    let target = echo_server("127.0.0.1:0").await;
    assert_eq!(connect_code(local.addr, target).await, ReplyCode::GeneralFailure);
    let held = timeout(BOUND, accepted_rx.recv()).await;
    assert!(matches!(held, Ok(Some(_))), "the local never reached the silent remote");
    local.stop().await;
}

// A remote address nothing listens on: the local replies GeneralFailure (0x01) as soon as the
// connection is refused, not after its (here 30 s) connect_timeout.
#[tokio::test(flavor = "multi_thread")]
async fn unreachable_remote_gets_reply_0x01_without_waiting() {
    let closed_port = closed_port(); // held closed (bound, never listening) for the whole test
    let closed = closed_port.addr;
    let local = start_local(&new_key(), closed, "connect_timeout: 30").await;
    let target = echo_server("127.0.0.1:0").await;
    assert_eq!(connect_code(local.addr, target).await, ReplyCode::GeneralFailure);
    local.stop().await;
}

// Stopping the remote in the middle of a relay ends the client's connection (EOF or error)
// within bounds, and later CONNECTs get GeneralFailure (0x01) instead of hanging.
#[tokio::test(flavor = "multi_thread")]
async fn remote_stopped_mid_relay_ends_the_client_connection() {
    let target = echo_server("127.0.0.1:0").await;
    let pair = start_pair("shutdown_grace: 0.2", "connect_timeout: 3").await;
    let (mut client, reply) = socks5_connect(pair.socks(), &Address::Ip(target), None).await.unwrap();
    assert_eq!(reply.code, ReplyCode::Succeeded);
    client.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    timeout(BOUND, client.read_exact(&mut got))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(&got, b"ping");

    timeout(BOUND, pair.remote.stop())
        .await
        .expect("the remote stops within 10 s");
    let mut buf = [0u8; 64];
    match timeout(BOUND, client.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!("{n} unexpected bytes after the remote stopped"),
        Err(_) => panic!("the client's connection is still open 10 s after the remote stopped"),
    }

    assert_eq!(connect_code(pair.local.addr, target).await, ReplyCode::GeneralFailure);
    pair.local.stop().await;
}
