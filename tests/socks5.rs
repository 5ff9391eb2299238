//! SOCKS5 behaviour of warren-local (RFC 1928, RFC 1929) seen from raw clients and curl:
//! address types, the bound address in replies, login, refusals of malformed input,
//! pipelining, half-close and many connections at once.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use warren_common::proto::address::Address;
use warren_common::proto::socks5::ReplyCode;
use warren_tests::*;

/// The complete error reply for `code`: VER REP RSV ATYP=1 0.0.0.0:0.
fn error_reply(code: u8) -> Vec<u8> {
    vec![0x05, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0]
}

/// A target that first writes the peer address it accepted (as text and a newline), then echoes.
async fn reporting_echo_server(bind: &str) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.expect("bind reporting echo");
    let addr = listener.local_addr().expect("reporting echo addr");
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            tokio::spawn(async move {
                if stream.write_all(format!("{peer}\n").as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Reads the newline-terminated peer address a reporting target sends first.
async fn read_reported_peer(stream: &mut TcpStream) -> SocketAddr {
    let mut line = Vec::new();
    for _ in 0..64 {
        let byte = stream.read_u8().await.expect("reported peer address");
        if byte == b'\n' {
            let text = String::from_utf8(line).expect("utf-8 peer address");
            return text.parse().expect("peer address parses");
        }
        line.push(byte);
    }
    panic!("no newline after 64 bytes of reported peer address");
}

/// Writes `data` then half-closes, while reading everything that comes back until EOF.
async fn round_trip(stream: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.expect("write payload");
        w.shutdown().await.expect("half-close");
        w
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.expect("read echo");
    drop(writer.await.expect("writer task"));
    got
}

/// Completes a no-auth greeting, then sends `request` and returns the answer up to the close.
async fn send_request(proxy: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(proxy).await.expect("connect to local");
    stream.write_all(&[0x05, 0x01, 0x00]).await.expect("greeting");
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await.expect("method choice");
    assert_eq!(choice, [0x05, 0x00], "no-auth should be chosen");
    stream.write_all(request).await.expect("write request");
    read_until_closed(&mut stream).await
}

/// A normal CONNECT through `proxy` to `echo` still works and echoes.
async fn assert_still_serves(proxy: SocketAddr, echo: SocketAddr) {
    let (stream, reply) = socks5_connect(proxy, &Address::Ip(echo), None)
        .await
        .expect("CONNECT after a refused client");
    assert_eq!(reply.code, ReplyCode::Succeeded);
    let got = within(10, "echo", round_trip(stream, b"still serving".to_vec())).await;
    assert_eq!(got, b"still serving");
}

/// Runs a CONNECT to `target` and checks the reply names the remote's outbound socket, as the
/// target saw it, and that 1 MiB comes back byte-exact.
async fn connect_reports_bound_and_echoes(target: Address) {
    let pair = start_pair("", "").await;
    let (mut stream, reply) = socks5_connect(pair.socks(), &target, None).await.expect("CONNECT");
    assert_eq!(reply.code, ReplyCode::Succeeded, "target {target}");
    let seen = read_reported_peer(&mut stream).await;
    assert_eq!(reply.bound, Address::Ip(seen), "BND for target {target}");
    let data = pattern(1024 * 1024);
    let got = within(60, "1 MiB echo", round_trip(stream, data.clone())).await;
    assert!(got == data, "echo differs for {target} ({} bytes)", got.len());
    pair.local.stop().await;
    pair.remote.stop().await;
}

// An IPv4 literal target: echoed byte-exact, and BND.ADDR:PORT is the address the target saw.
#[tokio::test]
async fn ipv4_target_echoes_and_reply_carries_outbound_address() {
    let target = reporting_echo_server("127.0.0.1:0").await;
    connect_reports_bound_and_echoes(Address::Ip(target)).await;
}

// An IPv6 literal target ([::1]): echoed byte-exact, and the reply carries an IPv6 BND address.
#[tokio::test]
async fn ipv6_target_echoes_and_reply_carries_outbound_address() {
    let target = reporting_echo_server("[::1]:0").await;
    assert!(target.is_ipv6());
    connect_reports_bound_and_echoes(Address::Ip(target)).await;
}

// A domain target ("localhost") is resolved by the remote and echoed byte-exact.
#[tokio::test]
async fn domain_target_echoes() {
    let target = reporting_echo_server("127.0.0.1:0").await;
    connect_reports_bound_and_echoes(Address::domain("localhost", target.port()).unwrap()).await;
}

const ALICE: &str = "users:\n  - {username: alice, password: \"s3cret\"}";

// curl logs in with RFC 1929 and fetches byte-exact; with a wrong password it fails.
#[tokio::test(flavor = "multi_thread")]
async fn curl_logs_in_with_username_and_password() {
    let body = pattern(512 * 1024 + 3);
    let site = http_server("127.0.0.1:0", body.clone()).await;
    let pair = start_pair("", ALICE).await;
    let proxy = pair.socks().to_string();
    let url = format!("http://localhost:{}/file", site.port());
    let ok = curl(&["--socks5-hostname", &proxy, "--proxy-user", "alice:s3cret", &url]).await;
    assert!(
        ok.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(ok.stdout == body, "body differs ({} bytes)", ok.stdout.len());
    let bad = curl(&["--socks5-hostname", &proxy, "--proxy-user", "alice:wrong", &url]).await;
    assert!(!bad.status.success(), "curl succeeded with a wrong password");
    assert!(bad.stdout.is_empty(), "a body arrived with a wrong password");
    pair.local.stop().await;
    pair.remote.stop().await;
}

// A wrong password gets the RFC 1929 failure status [0x01, non-zero], then the close.
#[tokio::test]
async fn wrong_password_gets_rfc1929_failure_then_close() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", ALICE).await;
    let mut stream = TcpStream::connect(pair.socks()).await.unwrap();
    stream.write_all(&[0x05, 0x01, 0x02]).await.unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer, [0x05, 0x02], "username/password should be chosen");
    stream.write_all(b"\x01\x05alice\x05wrong").await.unwrap();
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], 0x01, "RFC 1929 reply version");
    assert_ne!(answer[1], 0x00, "a wrong password must not succeed");
    assert_eq!(read_until_closed(&mut stream).await, b"");
    // The right login still works on the same local.
    let (_s, reply) = socks5_connect(pair.socks(), &Address::Ip(echo), Some(("alice", "s3cret")))
        .await
        .expect("login with the right password");
    assert_eq!(reply.code, ReplyCode::Succeeded);
}

// With users configured, a client offering only no-auth gets METHOD 0xFF, then the close.
#[tokio::test]
async fn no_auth_only_client_is_refused_when_users_are_configured() {
    let pair = start_pair("", ALICE).await;
    assert_eq!(send_raw(pair.socks(), &[0x05, 0x01, 0x00]).await, [0x05, 0xFF]);
}

// Without users, a client offering only username/password gets METHOD 0xFF, then the close.
#[tokio::test]
async fn user_pass_only_client_is_refused_without_users() {
    let pair = start_pair("", "").await;
    assert_eq!(send_raw(pair.socks(), &[0x05, 0x01, 0x02]).await, [0x05, 0xFF]);
}

// A request with version byte 0x04 gets a general-failure reply, then the close.
#[tokio::test]
async fn request_with_wrong_version_is_refused() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    let answer = send_request(pair.socks(), &[0x04, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0, 80]).await;
    assert_eq!(answer, error_reply(0x01));
    assert_still_serves(pair.socks(), echo).await;
}

// Unknown commands get the full 10-byte reply 0x07 (BIND and UDP ASSOCIATE: tests/bind.rs, udp.rs).
#[tokio::test]
async fn unsupported_commands_get_reply_0x07() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    for command in [0x09, 0x00, 0x04] {
        let request = [0x05, command, 0x00, 0x01, 127, 0, 0, 1, 0, 80];
        let answer = send_request(pair.socks(), &request).await;
        assert_eq!(answer, error_reply(0x07), "command {command:#04x}");
        assert_still_serves(pair.socks(), echo).await;
    }
}

// An unknown address type 0x05 gets reply 0x08, then the close.
#[tokio::test]
async fn unknown_address_type_gets_reply_0x08() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    let answer = send_request(pair.socks(), &[0x05, 0x01, 0x00, 0x05, 1, 2, 3, 4, 0, 80]).await;
    assert_eq!(answer, error_reply(0x08));
    assert_still_serves(pair.socks(), echo).await;
}

// A domain target of length 0 gets a general-failure reply, then the close.
#[tokio::test]
async fn empty_domain_is_refused() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    let answer = send_request(pair.socks(), &[0x05, 0x01, 0x00, 0x03, 0x00, 0, 80]).await;
    assert_eq!(answer, error_reply(0x01));
    assert_still_serves(pair.socks(), echo).await;
}

// A greeting offering no methods (NMETHODS=0) gets METHOD 0xFF, then the close.
#[tokio::test]
async fn greeting_without_methods_gets_0xff() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    assert_eq!(send_raw(pair.socks(), &[0x05, 0x00]).await, [0x05, 0xFF]);
    assert_still_serves(pair.socks(), echo).await;
}

// A greeting cut short by the client's close gets nothing back and harms nothing.
#[tokio::test]
async fn truncated_greeting_then_close_is_survived() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    let mut stream = TcpStream::connect(pair.socks()).await.unwrap();
    stream.write_all(&[0x05, 0x03, 0x00]).await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, b"");
    drop(stream);
    assert_still_serves(pair.socks(), echo).await;
    assert!(!pair.local.task.is_finished(), "the local stopped");
}

// A SOCKS4 client whose CONNECT fails (nothing listens on the port) gets the 8-byte SOCKS4
// rejection (VN=0, CD=91), then the close. (SOCKS4 itself: tests/socks4.rs.)
#[tokio::test]
async fn socks4_client_gets_socks4_rejection() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    let closed_port = closed_port(); // held closed (bound, never listening) for the whole test
    let closed = closed_port.addr.port();
    let [hi, lo] = closed.to_be_bytes();
    let socks4_connect = [0x04, 0x01, hi, lo, 127, 0, 0, 1, 0x00];
    let answer = send_raw(pair.socks(), &socks4_connect).await;
    assert_eq!(answer, [0x00, 0x5B, 0, 0, 0, 0, 0, 0]);
    assert_still_serves(pair.socks(), echo).await;
}

// Bytes that are neither SOCKS nor HTTP (a TLS ClientHello's start) are closed without an answer.
// (An HTTP request gets an HTTP answer: tests/http_proxy.rs.)
#[tokio::test]
async fn garbage_is_closed_without_an_answer() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    assert_eq!(send_raw(pair.socks(), b"\x16\x03\x01\x00\x05hello").await, b"");
    assert_still_serves(pair.socks(), echo).await;
}

// Greeting, request and the first payload in one write, before reading anything, all relay.
#[tokio::test]
async fn pipelined_greeting_request_and_payload_are_relayed() {
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    let payload = pattern(1000);
    let mut first = vec![0x05, 0x01, 0x00];
    let SocketAddr::V4(v4) = echo else {
        unreachable!("IPv4 echo server")
    };
    first.extend_from_slice(&[0x05, 0x01, 0x00, 0x01]);
    first.extend_from_slice(&v4.ip().octets());
    first.extend_from_slice(&v4.port().to_be_bytes());
    first.extend_from_slice(&payload);
    let mut stream = TcpStream::connect(pair.socks()).await.unwrap();
    stream.write_all(&first).await.unwrap();
    let mut head = [0u8; 12];
    within(10, "replies", stream.read_exact(&mut head)).await.unwrap();
    assert_eq!(head[..2], [0x05, 0x00], "method choice");
    assert_eq!(head[2..6], [0x05, 0x00, 0x00, 0x01], "success reply, IPv4 BND");
    let mut echoed = vec![0u8; payload.len()];
    within(10, "pipelined echo", stream.read_exact(&mut echoed))
        .await
        .unwrap();
    assert!(echoed == payload, "pipelined payload differs");
    // The connection goes on relaying normally afterwards.
    let more = pattern(256 * 1024);
    assert!(within(60, "echo", round_trip(stream, more.clone())).await == more);
}

// A client that sends its request and shuts its write side still gets the whole answer.
#[tokio::test]
async fn half_closed_client_receives_the_whole_answer() {
    let answer = pattern(1024 * 1024);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (request_tx, request_rx) = oneshot::channel();
    let reply_body = answer.clone();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.unwrap();
        let _ = request_tx.send(request);
        stream.write_all(&reply_body).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    let pair = start_pair("", "").await;
    let (mut stream, reply) = socks5_connect(pair.socks(), &Address::Ip(target), None).await.unwrap();
    assert_eq!(reply.code, ReplyCode::Succeeded);
    stream.write_all(b"question").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut got = Vec::new();
    within(60, "answer", stream.read_to_end(&mut got)).await.unwrap();
    assert_eq!(within(10, "request", request_rx).await.unwrap(), b"question");
    assert!(got == answer, "answer differs ({} bytes)", got.len());
}

// 200 simultaneous sessions of 64 KiB each all echo byte-exact, none mixed with another.
#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_connections_echo_byte_exact() {
    warren_common::net::raise_fd_limit();
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    let base = pattern(64 * 1024);
    let mut sessions = JoinSet::new();
    for i in 0..200u32 {
        let data: Vec<u8> = base.iter().map(|b| b ^ (i as u8)).collect();
        let proxy = pair.socks();
        sessions.spawn(async move {
            let (stream, reply) = socks5_connect(proxy, &Address::Ip(echo), None)
                .await
                .unwrap_or_else(|e| panic!("session {i}: {e}"));
            assert_eq!(reply.code, ReplyCode::Succeeded, "session {i}");
            let got = round_trip(stream, data.clone()).await;
            assert!(got == data, "session {i}: echo differs ({} bytes)", got.len());
        });
    }
    let mut done = 0;
    while let Some(result) = within(120, "sessions", sessions.join_next()).await {
        result.expect("session task");
        done += 1;
    }
    assert_eq!(done, 200);
    pair.local.stop().await;
    pair.remote.stop().await;
}
