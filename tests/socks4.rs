//! SOCKS4 and SOCKS4a on warren-local's shared port, seen from curl and raw clients: CONNECT
//! through the tunnel (IPv4 and remote-resolved names), the reply format, refusals (users
//! configured, BIND not wired yet, failed connects) and malformed or stalled requests, each
//! answered with the 8-byte rejection 00 5B … then a close, while other clients keep being served.

use std::net::SocketAddr;
use warren_common::proto::Encode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warren_common::proto::address::Address;
use warren_common::proto::socks4::{Command, Request};
use warren_tests::*;

/// The rejection every refusal gets: VN=0, CD=0x5B, port and address zero.
const REJECTED: [u8; 8] = [0x00, 0x5B, 0, 0, 0, 0, 0, 0];
const ALICE: &str = "users:\n  - {username: alice, password: \"s3cret\"}";

/// The bytes of a SOCKS4 (IPv4) or SOCKS4a (domain) request.
fn request(command: Command, target: Address, userid: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Request {
        command,
        target,
        userid: userid.to_vec(),
    }
    .encode(&mut out);
    out
}
/// A SOCKS4(a) CONNECT; returns the stream and the 8-byte reply.
async fn socks4_connect(proxy: SocketAddr, target: Address) -> (TcpStream, [u8; 8]) {
    let mut stream = TcpStream::connect(proxy).await.expect("connect to local");
    stream
        .write_all(&request(Command::Connect, target, b"tester"))
        .await
        .expect("send request");
    let mut reply = [0u8; 8];
    within(10, "SOCKS4 reply", stream.read_exact(&mut reply))
        .await
        .expect("SOCKS4 reply");
    (stream, reply)
}

/// A SOCKS4 CONNECT through `proxy` to `echo` still works and echoes.
async fn assert_still_serves(proxy: SocketAddr, echo: SocketAddr) {
    let (mut stream, reply) = socks4_connect(proxy, Address::Ip(echo)).await;
    assert_eq!(reply[..2], [0x00, 0x5A], "CONNECT after a refused client");
    stream.write_all(b"still serving").await.unwrap();
    let mut got = [0u8; 13];
    within(10, "echo", stream.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"still serving");
}

// curl --socks4 (the client resolves, sends an IPv4 address) fetches 1 MiB byte-exact.
#[tokio::test(flavor = "multi_thread")]
async fn curl_socks4_fetches_byte_exact() {
    let body = pattern(1024 * 1024 + 7);
    let site = http_server("127.0.0.1:0", body.clone()).await;
    let pair = start_pair("", "").await;
    let url = format!("http://127.0.0.1:{}/file", site.port());
    let out = curl(&["--socks4", &pair.socks().to_string(), &url]).await;
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == body, "body differs ({} bytes)", out.stdout.len());
}

// curl --socks4a sends the name; the remote resolves it ("localhost") and the body is byte-exact.
#[tokio::test(flavor = "multi_thread")]
async fn curl_socks4a_fetches_byte_exact() {
    let body = pattern(256 * 1024 + 1);
    let site = http_server("127.0.0.1:0", body.clone()).await;
    let pair = start_pair("", "").await;
    let url = format!("http://localhost:{}/file", site.port());
    let out = curl(&["--socks4a", &pair.socks().to_string(), &url]).await;
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == body, "body differs ({} bytes)", out.stdout.len());
}

// A SOCKS4 CONNECT gets 00 5A with the remote's outbound IPv4 address (as the target saw it),
// and the USERID does not get in the way of the relay.
#[tokio::test]
async fn socks4_reply_carries_outbound_address_and_relays() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let pair = start_pair("", "").await;
    let (mut stream, reply) = socks4_connect(pair.socks(), Address::Ip(target)).await;
    let (mut accepted, seen) = within(10, "accept", listener.accept()).await.unwrap();
    assert_eq!(reply[..2], [0x00, 0x5A]);
    let SocketAddr::V4(seen) = seen else {
        panic!("IPv4 peer")
    };
    assert_eq!(reply[2..4], seen.port().to_be_bytes(), "DSTPORT is the outbound port");
    assert_eq!(reply[4..], seen.ip().octets(), "DSTIP is the outbound address");
    stream.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    within(10, "relay", accepted.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"ping");
}

// A SOCKS4a request for a name the remote cannot resolve (a 64-character label) gets 00 5B;
// a SOCKS4a request for "localhost" reaches the target.
#[tokio::test]
async fn socks4a_name_is_resolved_by_the_remote() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    let unresolvable = format!("{}.test", "a".repeat(64));
    let (_s, reply) = socks4_connect(pair.socks(), Address::domain(&unresolvable, 80).unwrap()).await;
    assert_eq!(reply, REJECTED);
    let (mut stream, reply) = socks4_connect(pair.socks(), Address::domain("localhost", echo.port()).unwrap()).await;
    assert_eq!(reply[..2], [0x00, 0x5A]);
    stream.write_all(b"4a").await.unwrap();
    let mut got = [0u8; 2];
    within(10, "echo", stream.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"4a");
}

// A CONNECT to a port nothing listens on gets 00 5B, then the close.
#[tokio::test]
async fn socks4_refused_connect_gets_0x5b() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    let closed = closed_port(); // held closed (bound, never listening) for the whole test
    let target = Address::Ip(closed.addr);
    assert_eq!(
        send_raw(pair.socks(), &request(Command::Connect, target, b"")).await,
        REJECTED
    );
    assert_still_serves(pair.socks(), echo).await;
}

// With local.users set, SOCKS4 and SOCKS4a get 00 5B (they cannot carry a password) and no
// outbound connection is made; curl --socks4 fails.
#[tokio::test(flavor = "multi_thread")]
async fn socks4_refused_when_users_are_configured() {
    let target = target("127.0.0.1:0").await;
    let pair = start_pair("", ALICE).await;
    let v4 = request(Command::Connect, Address::Ip(target.addr), b"alice");
    assert_eq!(send_raw(pair.socks(), &v4).await, REJECTED);
    let v4a = request(
        Command::Connect,
        Address::domain("localhost", target.addr.port()).unwrap(),
        b"alice",
    );
    assert_eq!(send_raw(pair.socks(), &v4a).await, REJECTED);
    let url = format!("http://127.0.0.1:{}/", target.addr.port());
    let out = curl(&["--socks4", &pair.socks().to_string(), &url]).await;
    assert!(!out.status.success(), "curl --socks4 succeeded with users configured");
    assert_eq!(
        target.connections().await,
        0,
        "a refused SOCKS4 request reached the target"
    );
}

// SOCKS4 BIND (CD=2) through the tunnel: the first reply (00 5A) names the listening socket on
// the remote's side; a peer from the expected IP connects; the second reply names that peer;
// then data flows both ways. A peer from another IP (127.0.0.2) gets 00 5B and both close.
#[tokio::test]
async fn socks4_bind_announces_listener_then_peer_and_relays() {
    let pair = start_pair("", "").await;
    for (source, accepted) in [([127, 0, 0, 1], true), ([127, 0, 0, 2], false)] {
        let mut control = TcpStream::connect(pair.socks()).await.unwrap();
        let expected: SocketAddr = "127.0.0.1:0".parse().unwrap();
        control
            .write_all(&request(Command::Bind, Address::Ip(expected), b""))
            .await
            .unwrap();
        let mut first = [0u8; 8];
        within(10, "first reply", control.read_exact(&mut first)).await.unwrap();
        assert_eq!(&first[..2], &[0x00, 0x5A], "first reply grants");
        let port = u16::from_be_bytes([first[2], first[3]]);
        let ip = std::net::Ipv4Addr::new(first[4], first[5], first[6], first[7]);
        assert_eq!(ip.to_string(), "127.0.0.1");
        let listening = SocketAddr::from((ip, port));
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let mut peer = socket.connect(listening).await.unwrap();
        let mut second = [0u8; 8];
        within(10, "second reply", control.read_exact(&mut second))
            .await
            .unwrap();
        if !accepted {
            assert_eq!(&second[..2], &[0x00, 0x5B], "a peer from another IP is refused");
            let mut rest = Vec::new();
            let _ = within(10, "close", control.read_to_end(&mut rest)).await;
            assert!(rest.is_empty());
            continue;
        }
        assert_eq!(&second[..2], &[0x00, 0x5A], "second reply grants");
        let named = SocketAddr::from((
            std::net::Ipv4Addr::new(second[4], second[5], second[6], second[7]),
            u16::from_be_bytes([second[2], second[3]]),
        ));
        assert_eq!(named, peer.local_addr().unwrap(), "second reply names the peer");
        control.write_all(b"from the client").await.unwrap();
        let mut got = [0u8; 15];
        within(10, "peer reads", peer.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"from the client");
        peer.write_all(b"from the peer").await.unwrap();
        let mut got = [0u8; 13];
        within(10, "client reads", control.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"from the peer");
    }
}

// Malformed requests each get exactly 00 5B then the close, and the server keeps serving:
// unknown command, USERID or SOCKS4a name over 255 bytes, empty or non-UTF-8 name.
#[tokio::test]
async fn malformed_socks4_requests_get_0x5b() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    let mut long_userid = vec![0x04, 0x01, 0x00, 0x50, 127, 0, 0, 1];
    long_userid.extend(std::iter::repeat_n(b'u', 300));
    let mut long_name = vec![0x04, 0x01, 0x00, 0x50, 0, 0, 0, 1, 0x00];
    long_name.extend(std::iter::repeat_n(b'n', 300));
    let cases: [(&str, Vec<u8>); 5] = [
        ("unknown command 3", vec![0x04, 0x03, 0x00, 0x50, 127, 0, 0, 1, 0x00]),
        ("USERID over 255 bytes", long_userid),
        ("SOCKS4a name over 255 bytes", long_name),
        (
            "empty SOCKS4a name",
            vec![0x04, 0x01, 0x00, 0x50, 0, 0, 0, 1, 0x00, 0x00],
        ),
        (
            "non-UTF-8 SOCKS4a name",
            vec![0x04, 0x01, 0x00, 0x50, 0, 0, 0, 1, 0x00, 0xff, 0xfe, 0x00],
        ),
    ];
    for (what, bytes) in cases {
        assert_eq!(send_raw(pair.socks(), &bytes).await, REJECTED, "{what}");
        assert_still_serves(pair.socks(), echo).await;
    }
}

// A request cut short by the client's close gets nothing back and harms nothing.
#[tokio::test]
async fn truncated_socks4_request_then_close_is_survived() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    let mut stream = TcpStream::connect(pair.socks()).await.unwrap();
    stream.write_all(&[0x04, 0x01, 0x00, 0x50, 127]).await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, b"");
    assert_still_serves(pair.socks(), echo).await;
}

// A request that stalls (no NUL after the USERID) gets 00 5B at the handshake timeout, then
// the close; a client that connects and sends nothing is closed without an answer.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_socks4_request_times_out_with_0x5b() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "handshake_timeout: 1").await;
    let mut stalled = TcpStream::connect(pair.socks()).await.unwrap();
    stalled
        .write_all(&[0x04, 0x01, 0x00, 0x50, 127, 0, 0, 1, b'u'])
        .await
        .unwrap();
    let mut silent = TcpStream::connect(pair.socks()).await.unwrap();
    assert_still_serves(pair.socks(), echo).await;
    assert_eq!(read_until_closed(&mut stalled).await, REJECTED);
    assert_eq!(read_until_closed(&mut silent).await, b"");
}
