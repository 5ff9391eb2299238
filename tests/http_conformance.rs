//! The rows of docs/HTTP.md's conformance table, each through real sockets: a client on raw
//! TCP, warren-local and warren-remote on loopback, and a recording origin that answers what
//! each test scripts. What reaches the origin is checked byte for byte where the row is about
//! the request, and what reaches the client where it is about the response.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warren_common::proto::chunked::ChunkedTracker;
use warren_common::proto::http::{BodyLength, RequestHead, ResponseHead};
use warren_common::proto::Encode;
use warren_tests::*;

/// Every request an origin received: its head as it arrived (re-encoded) and its body.
type Received = Arc<Mutex<Vec<(RequestHead, Vec<u8>)>>>;

/// What the origin answers to a request (its head and body).
type Script = fn(&RequestHead, &[u8]) -> Vec<u8>;

/// An origin that reads request after request on each connection (bodies framed by
/// Content-Length or chunked), records them, and writes `script`'s answer to each.
async fn origin(script: Script) -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                while let Ok(head) = read_message::<RequestHead>(&mut stream, &mut buf).await {
                    let Some(body) = read_body(&mut stream, &mut buf, &head).await else {
                        return;
                    };
                    let answer = script(&head, &body);
                    log.lock().unwrap().push((head, body));
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, received)
}

/// Reads a request body as its head frames it (chunked framing kept); `None` on a close.
async fn read_body(stream: &mut TcpStream, buf: &mut BytesMut, head: &RequestHead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let mut tracker = ChunkedTracker::new();
    let mut left = match head.body_length().ok()? {
        BodyLength::Fixed(n) => usize::try_from(n).ok()?,
        _ => usize::MAX,
    };
    for _ in 0..10_000 {
        let take = match head.body_length().ok()? {
            BodyLength::Chunked if tracker.is_done() => return Some(body),
            BodyLength::Chunked => tracker.advance(buf).ok()?,
            _ if left == 0 => return Some(body),
            _ => left.min(buf.len()),
        };
        body.extend_from_slice(&buf[..take]);
        buf.advance(take);
        left = left.saturating_sub(take);
        if buf.is_empty() && !(tracker.is_done() || left == 0) && stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
    None
}

/// A response with `fields` and `body` (fields given whole, e.g. "Content-Length: 2\r\n").
fn answer(status_line: &str, fields: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status_line}\r\n{fields}\r\n{body}").into_bytes()
}

/// The head of a response as text, and the rest of the bytes.
fn split_response(response: &[u8]) -> (String, Vec<u8>) {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4);
    (
        String::from_utf8_lossy(&response[..end]).into_owned(),
        response[end..].to_vec(),
    )
}

/// A request head as the origin received it, as text.
fn text(head: &RequestHead) -> String {
    let mut out = Vec::new();
    head.encode(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 9110 §7.6.1 (hop-by-hop and Connection-named fields removed), §7.6.3 (Via), §8.6 (one
/// Content-Length), RFC 9112 §3.2.2 (Host from the URL) on the request; on the response the same
/// field rules, plus RFC 9112 §6.3: Content-Length removed beside Transfer-Encoding.
#[tokio::test]
async fn heads_are_rewritten_as_an_intermediary_must() {
    let pair = start_pair("", "").await;
    let (site, received) = origin(|_, _| {
        answer(
            "200 OK",
            "Connection: X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-End: kept\r\n\
             Content-Length: 99\r\nTransfer-Encoding: chunked\r\n",
            "2\r\nok\r\n0\r\n\r\n",
        )
    })
    .await;
    let request = format!(
        "POST http://{site}/path?q=1 HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: X-Secret, close\r\n\
         X-Secret: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\n\
         Proxy-Authorization: Basic YTpi\r\nX-Keep: yes\r\nContent-Length: 3, 3\r\nVia: 1.1 first\r\n\r\nabc"
    );
    let mut stream = TcpStream::connect(pair.socks()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = BytesMut::new();
    let response: ResponseHead = within(10, "response", read_message(&mut stream, &mut buf))
        .await
        .unwrap();
    let seen = received.lock().unwrap().clone();
    let (head, body) = &seen[0];
    assert_eq!(
        text(head),
        format!(
            "POST /path?q=1 HTTP/1.1\r\nHost: {site}\r\nX-Keep: yes\r\nVia: 1.1 first\r\nContent-Length: 3\r\n\
             Via: 1.1 warren\r\n\r\n"
        )
    );
    assert_eq!(body, b"abc");
    let names: Vec<&str> = response.headers.0.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        ["X-End", "Transfer-Encoding", "Connection", "Via"],
        "{response:?}"
    );
    assert_eq!(response.headers.get("via"), Some(&b"1.1 warren"[..]));
    // The chunked body arrives as sent, then the close the client asked for.
    let mut rest = buf.to_vec();
    rest.extend_from_slice(&read_until_closed(&mut stream).await);
    assert_eq!(String::from_utf8_lossy(&rest), "2\r\nok\r\n0\r\n\r\n");
    assert_eq!(response.headers.get("connection"), Some(&b"close"[..]));
}
