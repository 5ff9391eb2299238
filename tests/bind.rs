//! SOCKS5 BIND through the tunnel: the listening socket opens on the remote, the first reply
//! names it, the second names the peer that connected (DST.ADDR 0.0.0.0: any peer the ACL
//! allows); mismatched or ACL-denied peers, timeouts, ACL and malformed requests are refused
//! while the servers keep serving.

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use warren_common::proto::address::Address;
use warren_common::proto::socks5::{Command, Reply, ReplyCode};
use warren_tests::*;

fn loopback(port: u16) -> Address {
    Address::Ip(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Sends BIND for `expected` and returns the control socket, the first reply and its buffer.
async fn bind(proxy: SocketAddr, expected: &Address) -> (TcpStream, Reply, BytesMut) {
    within(20, "first BIND reply", socks5_request(proxy, Command::Bind, expected))
        .await
        .expect("BIND request")
}

async fn second_reply(control: &mut TcpStream, buf: &mut BytesMut) -> Reply {
    within(20, "second BIND reply", read_message::<Reply>(control, buf))
        .await
        .expect("second reply")
}

/// Connects to `to` from `source` (an IP on lo; port chosen by the system).
async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket
        .connect(to)
        .await
        .expect("peer connects to the announced address")
}

async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = within(20, "reading until close", stream.read_to_end(&mut got)).await;
    got
}

#[tokio::test]
async fn bind_announces_remote_listener_then_the_peer_and_relays_both_ways() {
    let pair = start_pair("", "").await;
    let (mut control, first, mut buf) = bind(pair.socks(), &loopback(0)).await;
    assert_eq!(first.code, ReplyCode::Succeeded);
    let Address::Ip(listening) = first.bound else {
        panic!("first reply names an IP: {:?}", first.bound)
    };
    assert_eq!(listening.ip().to_string(), "127.0.0.1", "the remote's listen IP");
    assert_ne!(listening.port(), 0);

    let mut peer = connect_from([127, 0, 0, 1], listening).await;
    let second = second_reply(&mut control, &mut buf).await;
    assert_eq!(second.code, ReplyCode::Succeeded);
    assert_eq!(
        second.bound,
        Address::Ip(peer.local_addr().unwrap()),
        "second reply names the peer"
    );
    assert!(buf.is_empty());

    let up = pattern(100_000);
    let down = pattern(70_000).into_iter().rev().collect::<Vec<_>>();
    control.write_all(&up).await.unwrap();
    peer.write_all(&down).await.unwrap();
    let mut got_up = vec![0u8; up.len()];
    within(20, "peer reads", peer.read_exact(&mut got_up)).await.unwrap();
    assert_eq!(got_up, up);
    let mut got_down = vec![0u8; down.len()];
    within(20, "client reads", control.read_exact(&mut got_down))
        .await
        .unwrap();
    assert_eq!(got_down, down);
    // Half-close crosses in both directions.
    control.shutdown().await.unwrap();
    assert!(read_to_end(&mut peer).await.is_empty());
    peer.shutdown().await.unwrap();
    assert!(read_to_end(&mut control).await.is_empty());
}

#[tokio::test]
async fn bytes_pipelined_after_the_bind_request_reach_the_peer() {
    let pair = start_pair("", "").await;
    let mut control = TcpStream::connect(pair.socks()).await.unwrap();
    control
        .write_all(&[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 0, b'e', b'a', b'r', b'l', b'y'])
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let _: warren_common::proto::socks5::MethodSelection = within(20, "method", read_message(&mut control, &mut buf))
        .await
        .unwrap();
    let first: Reply = within(20, "first reply", read_message(&mut control, &mut buf))
        .await
        .unwrap();
    let Address::Ip(listening) = first.bound else { panic!() };
    let mut peer = connect_from([127, 0, 0, 1], listening).await;
    assert_eq!(second_reply(&mut control, &mut buf).await.code, ReplyCode::Succeeded);
    let mut got = [0u8; 5];
    within(20, "peer reads", peer.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"early");
}

#[tokio::test]
async fn bind_with_domain_peer_accepts_a_matching_address() {
    let pair = start_pair("", "").await;
    let (mut control, first, mut buf) = bind(pair.socks(), &Address::domain("localhost", 0).unwrap()).await;
    assert_eq!(first.code, ReplyCode::Succeeded);
    let Address::Ip(listening) = first.bound else { panic!() };
    let mut peer = connect_from([127, 0, 0, 1], listening).await;
    let second = second_reply(&mut control, &mut buf).await;
    assert_eq!(second.code, ReplyCode::Succeeded);
    peer.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    within(20, "client reads", control.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"hello");
}

#[tokio::test]
async fn mismatched_peer_is_refused_and_both_connections_close() {
    let pair = start_pair("", "").await;
    let (mut control, first, mut buf) = bind(pair.socks(), &loopback(0)).await;
    assert_eq!(first.code, ReplyCode::Succeeded);
    let Address::Ip(listening) = first.bound else { panic!() };
    let mut wrong = connect_from([127, 0, 0, 2], listening).await;
    let second = second_reply(&mut control, &mut buf).await;
    assert_eq!(second.code, ReplyCode::NotAllowed);
    assert_eq!(second.bound, Address::Ip(wrong.local_addr().unwrap()));
    assert!(
        read_to_end(&mut control).await.is_empty(),
        "control closed after the refusal"
    );
    let mut sink = Vec::new();
    let closed = within(20, "wrong peer closed", wrong.read_to_end(&mut sink)).await;
    assert!(closed.map_or(true, |n| n == 0), "wrong peer gets nothing");

    // The servers keep serving.
    let (_c, again, _) = bind(pair.socks(), &loopback(0)).await;
    assert_eq!(again.code, ReplyCode::Succeeded);
}

#[tokio::test]
async fn bind_times_out_with_ttl_expired_when_no_peer_comes() {
    let pair = start_pair("bind_timeout: 0.3", "").await;
    let (mut control, first, mut buf) = bind(pair.socks(), &loopback(0)).await;
    assert_eq!(first.code, ReplyCode::Succeeded);
    let Address::Ip(listening) = first.bound else { panic!() };
    let second = second_reply(&mut control, &mut buf).await;
    assert_eq!(second.code, ReplyCode::TtlExpired);
    assert_eq!(second.bound, Address::UNSPECIFIED);
    assert!(read_to_end(&mut control).await.is_empty());
    // The listener is gone.
    assert!(
        TcpStream::connect(listening).await.is_err(),
        "listener closed after the timeout"
    );
}

#[tokio::test]
async fn bind_for_a_denied_peer_is_refused_by_the_acl() {
    let pair = start_pair(
        "acl:\n  - deny: blocked.test\n  - allow: \"127.0.0.0/8\"\n  - deny: \"10.0.0.0/8\"",
        "",
    )
    .await;
    let (mut control, first, _) = bind(pair.socks(), &Address::Ip("10.1.2.3:0".parse().unwrap())).await;
    assert_eq!(first.code, ReplyCode::NotAllowed);
    assert!(read_to_end(&mut control).await.is_empty());
    let (_c, first, _) = bind(pair.socks(), &Address::domain("blocked.test", 0).unwrap()).await;
    assert_eq!(first.code, ReplyCode::NotAllowed);
}

#[tokio::test]
async fn malformed_bind_requests_are_refused_and_service_continues() {
    let pair = start_pair("", "").await;
    // Bad address type, then an empty domain: each gets a refusal, then close.
    for (request, code) in [
        (vec![5, 2, 0, 9, 1, 2, 3, 4, 0, 0], 0x08u8),
        (vec![5, 2, 0, 3, 0, 0, 0], 0x01),
    ] {
        let mut s = TcpStream::connect(pair.socks()).await.unwrap();
        s.write_all(&[5, 1, 0]).await.unwrap();
        s.write_all(&request).await.unwrap();
        let got = read_to_end(&mut s).await;
        assert_eq!(got[..2], [5, 0], "method chosen");
        assert_eq!(got[2..4], [5, code], "refusal for {request:?}");
    }
    // A client that leaves while BIND waits does not disturb the next one.
    let (control, first, _) = bind(pair.socks(), &loopback(0)).await;
    assert_eq!(first.code, ReplyCode::Succeeded);
    drop(control);
    let (mut control, first, mut buf) = bind(pair.socks(), &loopback(0)).await;
    let Address::Ip(listening) = first.bound else { panic!() };
    let _peer = connect_from([127, 0, 0, 1], listening).await;
    assert_eq!(second_reply(&mut control, &mut buf).await.code, ReplyCode::Succeeded);
}

#[tokio::test]
async fn remote_listening_on_an_unspecified_address_announces_the_tunnel_ip() {
    let key = new_key();
    let yaml = format!("key: \"{key}\"\nremote:\n  listen: \"0.0.0.0:0\"\n  acl:\n    - allow: \"127.0.0.0/8\"\n");
    let config = warren_common::config::RemoteConfig::try_from(&parse(&yaml)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote_addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(warren_remote::run(listener, config, shutdown.clone()));
    let local = start_local(&key, remote_addr, "").await;

    let (mut control, first, mut buf) = bind(local.addr, &loopback(0)).await;
    assert_eq!(first.code, ReplyCode::Succeeded);
    let Address::Ip(listening) = first.bound else { panic!() };
    assert_eq!(
        listening.ip().to_string(),
        "127.0.0.1",
        "the IP the tunnel reached, not 0.0.0.0"
    );
    let _peer = connect_from([127, 0, 0, 1], listening).await;
    assert_eq!(second_reply(&mut control, &mut buf).await.code, ReplyCode::Succeeded);
    shutdown.cancel();
}

/// README: with DST.ADDR 0.0.0.0 "any peer the ACL allows" may connect. A peer from 127.0.0.2
/// (not the client's IP, not the remote's) is announced in the second reply and relayed.
#[tokio::test]
async fn bind_for_0_0_0_0_accepts_a_peer_from_any_allowed_ip() {
    let pair = start_pair("", "").await;
    let any = Address::Ip(SocketAddr::from(([0, 0, 0, 0], 0)));
    let (mut control, first, mut buf) = bind(pair.socks(), &any).await;
    assert_eq!(first.code, ReplyCode::Succeeded);
    let Address::Ip(listening) = first.bound else { panic!() };
    let mut peer = connect_from([127, 0, 0, 2], listening).await;
    let second = second_reply(&mut control, &mut buf).await;
    assert_eq!(second.code, ReplyCode::Succeeded);
    assert_eq!(second.bound, Address::Ip(peer.local_addr().unwrap()));
    peer.write_all(b"from .2").await.unwrap();
    let mut got = [0u8; 7];
    within(20, "client reads", control.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"from .2");
}

/// README: for DST.ADDR 0.0.0.0 the ACL still decides. A peer the remote's ACL denies gets
/// exactly what a mismatched peer gets: a second reply 0x02 naming it, then both close.
#[tokio::test]
async fn bind_for_0_0_0_0_refuses_a_peer_the_acl_denies() {
    let pair = start_pair("acl:\n  - deny: \"127.0.0.2\"\n  - allow: \"127.0.0.0/8\"", "").await;
    let any = Address::Ip(SocketAddr::from(([0, 0, 0, 0], 0)));
    let (mut control, first, mut buf) = bind(pair.socks(), &any).await;
    assert_eq!(first.code, ReplyCode::Succeeded);
    let Address::Ip(listening) = first.bound else { panic!() };
    let mut denied = connect_from([127, 0, 0, 2], listening).await;
    let second = second_reply(&mut control, &mut buf).await;
    assert_eq!(second.code, ReplyCode::NotAllowed);
    assert_eq!(second.bound, Address::Ip(denied.local_addr().unwrap()));
    assert!(
        read_to_end(&mut control).await.is_empty(),
        "control closed after the refusal"
    );
    assert!(
        read_to_end(&mut denied).await.is_empty(),
        "the denied peer gets nothing"
    );
}
