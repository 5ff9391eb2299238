//! A client that sends its request and first bytes, then half-closes (`shutdown(SHUT_WR)`)
//! BEFORE warren has answered, still gets its reply and the target's answer: a FIN means only
//! "no more data from me" (RFC 9293 §3.6). The half-close is passed on to the target after the
//! bytes, so a target that reads to EOF before answering answers.
//!
//! Deterministic order: every test runs on a current-thread runtime, and the client writes its
//! request, its bytes and its FIN without yielding in between, so warren-local finds the FIN
//! already there at its first look at the client while opening, long before any answer can
//! come back from the remote (or BIND's peer, which the test connects only afterwards).
//!
//! The remote's side of the rule (`remote_*`): a raw tunnel client sends its request, data and
//! end-of-stream chunk, then FIN, before the response; the remote must still answer. There the
//! target is a black hole until the remote's SYN is in flight (CONNECT), or the peer connects
//! only after the response (BIND).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warren_common::crypto::{frame_len, random_salt, Key, Purpose, SessionCipher, LEN_BLOCK, SALT_LEN, TAG_LEN};
use warren_common::proto::address::Address;
use warren_common::proto::bind::BindNotice;
use warren_common::proto::header::{Command, RequestHeader, ResponseHeader};
use warren_common::proto::socks5::ReplyCode;
use warren_common::proto::status::Status;
use warren_common::proto::Encode;
use warren_common::proto::{decode_exact, decode_prefix};
use warren_common::time::unix_now;
use warren_tests::*;

/// Bytes the client sends after its request, before half-closing.
const SENT: usize = 1000;

/// A target that reads each connection to its EOF, then answers `got N bytes` and closes: it
/// answers only if the client's half-close is passed on.
async fn counting_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
    let addr = listener.local_addr().expect("target addr");
    serve_counting(listener);
    addr
}

/// Serves [`count_then_answer`] on every connection `listener` accepts.
fn serve_counting(listener: TcpListener) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(count_then_answer(stream));
        }
    });
}

async fn count_then_answer(mut stream: TcpStream) {
    let mut got = Vec::new();
    if stream.read_to_end(&mut got).await.is_ok() {
        let _ = stream.write_all(format!("got {} bytes", got.len()).as_bytes()).await;
    }
    let _ = stream.shutdown().await;
}

/// Sends `request` and [`SENT`] bytes through `proxy`, half-closes without yielding in between,
/// and returns everything the client receives until warren closes. `greeting` is written and
/// its answer read first (SOCKS5's method negotiation).
async fn half_close_early(proxy: SocketAddr, greeting: Option<(&[u8], &[u8])>, request: &[u8]) -> Vec<u8> {
    let mut client = TcpStream::connect(proxy).await.expect("connect to local");
    if let Some((hello, answer)) = greeting {
        client.write_all(hello).await.expect("greeting");
        let mut got = vec![0u8; answer.len()];
        within(20, "method selection", client.read_exact(&mut got))
            .await
            .expect("method selection");
        assert_eq!(got, answer);
    }
    let mut out = request.to_vec();
    out.extend_from_slice(&pattern(SENT));
    client.write_all(&out).await.expect("request and data");
    client.shutdown().await.expect("half-close");
    read_until_closed(&mut client).await
}

fn ipv4_port(addr: SocketAddr) -> ([u8; 4], [u8; 2]) {
    let SocketAddr::V4(v4) = addr else {
        panic!("an IPv4 target")
    };
    (v4.ip().octets(), v4.port().to_be_bytes())
}

fn answer() -> Vec<u8> {
    format!("got {SENT} bytes").into_bytes()
}

#[tokio::test]
async fn socks5_client_that_half_closes_before_the_reply_gets_reply_and_answer() {
    let target = counting_target().await;
    let pair = start_pair("", "").await;
    let (ip, port) = ipv4_port(target);
    let mut request = vec![5, 1, 0, 1];
    request.extend_from_slice(&ip);
    request.extend_from_slice(&port);
    let got = half_close_early(pair.socks(), Some((&[5, 1, 0], &[5, 0])), &request).await;
    assert!(got.len() >= 10, "a SOCKS5 reply: {got:?}");
    assert_eq!(got[..2], [5, ReplyCode::Succeeded as u8], "reply: {got:?}");
    assert_eq!(got[10..], answer(), "the target's answer after the reply");
    pair.local.stop().await;
    pair.remote.stop().await;
}

// The same with the greeting, the request, the bytes and the FIN all sent at once, before even
// the method selection.
#[tokio::test]
async fn socks5_client_that_sends_everything_at_once_then_half_closes_gets_reply_and_answer() {
    let target = counting_target().await;
    let pair = start_pair("", "").await;
    let (ip, port) = ipv4_port(target);
    let mut request = vec![5, 1, 0, 5, 1, 0, 1];
    request.extend_from_slice(&ip);
    request.extend_from_slice(&port);
    let got = half_close_early(pair.socks(), None, &request).await;
    assert!(got.len() >= 12, "method selection and a SOCKS5 reply: {got:?}");
    assert_eq!(got[..4], [5, 0, 5, ReplyCode::Succeeded as u8], "replies: {got:?}");
    assert_eq!(got[12..], answer(), "the target's answer after the reply");
    pair.local.stop().await;
    pair.remote.stop().await;
}

#[tokio::test]
async fn socks4_client_that_half_closes_before_the_reply_gets_reply_and_answer() {
    let target = counting_target().await;
    let pair = start_pair("", "").await;
    let (ip, port) = ipv4_port(target);
    let mut request = vec![4, 1];
    request.extend_from_slice(&port);
    request.extend_from_slice(&ip);
    request.push(0); // empty USERID
    let got = half_close_early(pair.socks(), None, &request).await;
    assert!(got.len() >= 8, "a SOCKS4 reply: {got:?}");
    assert_eq!(got[..2], [0, 0x5A], "reply: {got:?}");
    assert_eq!(got[8..], answer(), "the target's answer after the reply");
    pair.local.stop().await;
    pair.remote.stop().await;
}

#[tokio::test]
async fn http_connect_client_that_half_closes_before_the_reply_gets_reply_and_answer() {
    let target = counting_target().await;
    let pair = start_pair("", "").await;
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let got = half_close_early(pair.socks(), None, request.as_bytes()).await;
    let head = b"HTTP/1.1 200 Connection established\r\n\r\n";
    assert!(got.starts_with(head), "a 200: {:?}", String::from_utf8_lossy(&got));
    assert_eq!(got[head.len()..], answer(), "the target's answer after the 200");
    pair.local.stop().await;
    pair.remote.stop().await;
}

// Through a chain (local → A → B → target, a key per hop): the half-close waits for both hops'
// responses, then travels as end-of-stream chunks hop by hop to the target.
#[tokio::test]
async fn socks5_client_that_half_closes_before_the_reply_through_a_chain() {
    let target = counting_target().await;
    let (key_a, key_b) = (new_key(), new_key());
    let acl = "acl:\n  - allow: \"127.0.0.0/8\"\n";
    let (a, b) = (start_remote(&key_a, acl).await, start_remote(&key_b, acl).await);
    let yaml = format!(
        "key: \"{}\"\nlocal:\n  remotes:\n    a: {{ address: \"{}\", key: \"{key_a}\" }}\n    b: {{ address: \"{}\", key: \"{key_b}\" }}\n  chains:\n    c: [a, b]\n  default: c\n",
        new_key(),
        a.addr,
        b.addr
    );
    let (local, _health) = start_local_yaml(&yaml).await;
    let (ip, port) = ipv4_port(target);
    let mut request = vec![5, 1, 0, 1];
    request.extend_from_slice(&ip);
    request.extend_from_slice(&port);
    let got = half_close_early(local.addr, Some((&[5, 1, 0], &[5, 0])), &request).await;
    assert!(got.len() >= 10, "a SOCKS5 reply: {got:?}");
    assert_eq!(got[..2], [5, ReplyCode::Succeeded as u8], "reply: {got:?}");
    assert_eq!(got[10..], answer(), "the target's answer after the reply");
    local.stop().await;
    a.stop().await;
    b.stop().await;
}

/// An origin that reads one request head, then answers `hello` (keeping its connection open,
/// so only the proxy's framing ends the exchange).
async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                    .await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_forward_client_that_half_closes_before_the_response_gets_it() {
    let site = origin().await;
    let pair = start_pair("", "").await;
    let mut client = TcpStream::connect(pair.socks()).await.expect("connect to local");
    let request = format!("GET http://{site}/x HTTP/1.1\r\nHost: {site}\r\n\r\n");
    client.write_all(request.as_bytes()).await.expect("request");
    client.shutdown().await.expect("half-close");
    let got = read_until_closed(&mut client).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "a 200: {text:?}");
    assert!(text.ends_with("\r\n\r\nhello"), "the body: {text:?}");
    pair.local.stop().await;
    pair.remote.stop().await;
}

// BIND: the client sends its request, its bytes for the peer and its FIN at once, so the FIN is
// there while BIND waits for the peer (the test connects the peer only after the first reply).
// The peer still gets the bytes and EOF, and its answer reaches the client after reply 2.
#[tokio::test]
async fn socks5_bind_client_that_half_closes_while_waiting_gets_the_peer() {
    let pair = start_pair("", "").await;
    let mut control = TcpStream::connect(pair.socks()).await.expect("connect to local");
    let mut out = vec![5, 1, 0]; // greeting: no authentication
    out.extend_from_slice(&[5, 2, 0, 1, 127, 0, 0, 1, 0, 0]); // BIND, expecting 127.0.0.1
    out.extend_from_slice(&pattern(SENT));
    control.write_all(&out).await.expect("greeting, BIND and data");
    control.shutdown().await.expect("half-close");
    let mut first = [0u8; 12];
    within(20, "method selection and first reply", control.read_exact(&mut first))
        .await
        .expect("first BIND reply (a closed connection here is the bug)");
    assert_eq!(
        first[..6],
        [5, 0, 5, 0, 0, 1],
        "no auth, then success with an IPv4 address"
    );
    let listening = SocketAddr::from((
        [first[6], first[7], first[8], first[9]],
        u16::from_be_bytes([first[10], first[11]]),
    ));
    let peer = TcpStream::connect(listening).await.expect("peer connects");
    let answering = tokio::spawn(count_then_answer(peer));
    let got = read_until_closed(&mut control).await;
    assert!(got.len() >= 10, "a second reply: {got:?}");
    assert_eq!(got[..2], [5, ReplyCode::Succeeded as u8], "second reply: {got:?}");
    assert_eq!(got[10..], answer(), "the peer's answer after the second reply");
    let _ = answering.await;
    pair.local.stop().await;
    pair.remote.stop().await;
}

/// Whether a socket on this host is in SYN-SENT towards `port` (/proc/net/tcp, state 02).
fn syn_sent_to(port: u16) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let port = format!(":{port:04X}");
    text.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(2).is_some_and(|remote| remote.ends_with(&port)) && fields.get(3) == Some(&"02")
    })
}

/// Reads one sealed chunk of the remote's stream and returns its plaintext (empty: the
/// end-of-stream chunk).
async fn read_chunk(stream: &mut TcpStream, recv: &mut SessionCipher) -> Vec<u8> {
    let mut block = [0u8; LEN_BLOCK];
    stream.read_exact(&mut block).await.expect("a length block");
    let n = recv.open_length(&mut block).expect("an authentic length block");
    let mut sealed = vec![0u8; n + TAG_LEN];
    stream.read_exact(&mut sealed).await.expect("a payload");
    recv.open_payload(&mut sealed).expect("an authentic payload");
    sealed.truncate(n);
    sealed
}

/// What a local whose client half-closed at once may send: its salt, the request with `data`
/// in the first chunk, and the end-of-stream chunk.
fn request_then_end(key: &Key, header: &RequestHeader, data: &[u8]) -> Vec<u8> {
    let salt = random_salt();
    let mut send = SessionCipher::new(key, Purpose::TcpRequest, &salt);
    let mut plaintext = Vec::new();
    header.encode(&mut plaintext);
    plaintext.extend_from_slice(data);
    let mut wire = salt.to_vec();
    for payload in [plaintext.as_slice(), &[]] {
        let start = wire.len();
        wire.resize(start + frame_len(payload.len()), 0);
        wire[start + LEN_BLOCK..start + LEN_BLOCK + payload.len()].copy_from_slice(payload);
        send.seal_frame(&mut wire[start..]).expect("seal");
    }
    wire
}

/// Sends [`request_then_end`] to `remote` and half-closes.
async fn send_then_end(remote: SocketAddr, key: &Key, header: &RequestHeader) -> TcpStream {
    let mut stream = TcpStream::connect(remote).await.expect("connect to the remote");
    stream
        .write_all(&request_then_end(key, header, &pattern(SENT)))
        .await
        .expect("request, data and end of stream");
    stream.shutdown().await.expect("half-close");
    stream
}

/// Reads the remote's response; returns it and the state that opens the stream after it.
async fn read_response(stream: &mut TcpStream, key: &Key) -> (ResponseHeader, SessionCipher) {
    let mut salt_r = [0u8; SALT_LEN];
    within(20, "the response", stream.read_exact(&mut salt_r))
        .await
        .expect("a response (a closed connection here is the bug)");
    let mut recv = SessionCipher::new(key, Purpose::TcpResponse, &salt_r);
    let response = decode_exact(&read_chunk(stream, &mut recv).await).expect("a response header");
    (response, recv)
}

/// The remote's plaintext up to its end-of-stream chunk.
async fn read_to_end_of_stream(stream: &mut TcpStream, recv: &mut SessionCipher) -> Vec<u8> {
    within(20, "the remote's end of stream", async {
        let mut got = Vec::new();
        loop {
            let chunk = read_chunk(stream, recv).await;
            if chunk.is_empty() {
                return got;
            }
            got.extend_from_slice(&chunk);
        }
    })
    .await
}

const LOOPBACK_ACL: &str = "acl:\n  - allow: \"127.0.0.0/8\"\n";

// The remote side of the same rule: a local that sends its request, bytes and end-of-stream
// chunk, then FIN, all before the response (as a client's half-close may make it), still gets
// the response and the target's answer; the target sees the bytes, then EOF. The target is a
// black hole until the remote's SYN is in flight, so the remote surely reads the end first.
#[tokio::test]
async fn remote_answers_a_local_that_ends_its_stream_before_the_response() {
    let hole = black_hole().await;
    let target = hole.addr;
    let key_text = new_key();
    let remote = start_remote(&key_text, LOOPBACK_ACL).await;
    let key = Key::from_base64(&key_text).expect("key");
    let header = RequestHeader::connect(Address::Ip(target), unix_now());
    let mut stream = send_then_end(remote.addr, &key, &header).await;
    // The hole opens once the remote's SYN is in flight: its retransmission (about 1 s later)
    // then connects, long after the remote has read the end of stream (microseconds). A remote
    // that took the FIN for a local that left has given up by then (and closed the tunnel).
    within(20, "the remote connects towards the target", async {
        while !syn_sent_to(target.port()) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    serve_counting(hole.open());
    let (response, mut recv) = read_response(&mut stream, &key).await;
    assert_eq!(response.status, Status::Succeeded);
    let got = read_to_end_of_stream(&mut stream, &mut recv).await;
    assert_eq!(got, answer(), "the target's answer, then the end-of-stream chunk");
    remote.stop().await;
}

// BIND on the remote: the end of stream comes with the request, so it is there while the remote
// waits for the peer (which the test connects only after the response). The peer still gets
// the bytes, then EOF, and its answer follows the notice (BIND's second reply).
#[tokio::test]
async fn remote_bind_answers_a_local_that_ends_its_stream_while_waiting() {
    let key_text = new_key();
    let remote = start_remote(&key_text, LOOPBACK_ACL).await;
    let key = Key::from_base64(&key_text).expect("key");
    let expected = Address::Ip(SocketAddr::from(([127, 0, 0, 1], 0)));
    let header = RequestHeader::new(Command::Bind, expected, unix_now());
    let mut stream = send_then_end(remote.addr, &key, &header).await;
    let (response, mut recv) = read_response(&mut stream, &key).await;
    assert_eq!(response.status, Status::Succeeded);
    let Address::Ip(listening) = response.bound else {
        panic!("the response names the listening IP: {:?}", response.bound)
    };
    let peer = TcpStream::connect(listening)
        .await
        .expect("the peer connects (refused: the remote gave up)");
    let answering = tokio::spawn(count_then_answer(peer));
    let got = read_to_end_of_stream(&mut stream, &mut recv).await;
    let (notice, used) = decode_prefix::<BindNotice>(&got).expect("a BIND notice");
    assert_eq!(notice.status, Status::Succeeded);
    assert_eq!(
        got.get(used..),
        Some(answer().as_slice()),
        "the peer's answer after the notice"
    );
    let _ = answering.await;
    remote.stop().await;
}
