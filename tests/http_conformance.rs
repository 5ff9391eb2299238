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
         X-Secret: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-Sum\r\nUpgrade: h2c\r\n\
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

/// Request smuggling shapes (RFC 9112 §6.1, §6.3, §11.2) and the Host rule (§3.2): each is a
/// 400 with `Connection: close`, and the origin never sees any of them.
#[tokio::test]
async fn ambiguous_requests_are_refused_before_the_origin() {
    let pair = start_pair("", "").await;
    let (site, received) = origin(|_, _| answer("200 OK", "Content-Length: 0\r\n", "")).await;
    let post = |fields: &str| format!("POST http://{site}/ HTTP/1.1\r\nHost: h\r\n{fields}\r\n");
    let cases = [
        post("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
        post("Transfer-Encoding: chunked, chunked\r\n"),
        post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        post("Transfer-Encoding: gzip\r\n"),
        post("Transfer-Encoding: chunked, gzip\r\n"),
        post("Content-Length: 3, 4\r\n"),
        post("Content-Length: +3\r\n"),
        format!("POST http://{site}/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
        format!("GET http://{site}/ HTTP/1.1\r\n\r\n"),
        format!("GET http://{site}/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        format!("CONNECT {site} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ];
    for request in cases {
        let response = send_raw(pair.socks(), request.as_bytes()).await;
        let (head, _) = split_response(&response);
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{request:?}: {head}");
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    }
    assert!(
        received.lock().unwrap().is_empty(),
        "an ambiguous request reached the origin"
    );
    // An HTTP/1.0 request needs no Host.
    let response = send_raw(pair.socks(), format!("GET http://{site}/ HTTP/1.0\r\n\r\n").as_bytes()).await;
    assert!(split_response(&response).0.starts_with("HTTP/1.1 200 OK\r\n"));
}

/// A chunked request body whose chunk size does not parse, in a shape parsers disagree on
/// (RFC 9112 §7.1, §11.2), is answered 400 and the connection closed: nothing after it is read
/// as a request.
#[tokio::test]
async fn a_malformed_chunked_body_is_answered_400() {
    let pair = start_pair("", "").await;
    let (site, received) = origin(|_, _| answer("200 OK", "Content-Length: 0\r\n", "")).await;
    for size in [" 3", "0x3", "3 3", ""] {
        let request = format!(
            "POST http://{site}/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n\
             GET http://{site}/smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
        );
        let response = send_raw(pair.socks(), request.as_bytes()).await;
        let (head, _) = split_response(&response);
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{size:?}: {head}");
    }
    let smuggled = received
        .lock()
        .unwrap()
        .iter()
        .any(|(h, _)| h.target.contains("smuggled"));
    assert!(!smuggled, "a request hidden in a body reached the origin");
}

/// RFC 9110 §7.6.2 and RFC 9112 §3.2.4: OPTIONS and TRACE with `Max-Forwards: 0` are answered by
/// the proxy (TRACE reflects the request without its credentials), a larger value is
/// decremented, `OPTIONS *` is answered by the proxy, and `OPTIONS http://host:port` (no path)
/// reaches the origin as `OPTIONS *`.
#[tokio::test]
async fn max_forwards_and_asterisk_form() {
    let pair = start_pair("", "").await;
    let (site, received) = origin(|_, _| answer("200 OK", "Content-Length: 0\r\n", "")).await;

    let request = format!("OPTIONS http://{site}/ HTTP/1.1\r\nHost: h\r\nMax-Forwards: 0\r\n\r\n");
    let (head, body) = split_response(&send_raw(pair.socks(), request.as_bytes()).await);
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("\r\nAllow: "),
        "{head}"
    );
    assert!(body.is_empty());

    let request = format!(
        "TRACE http://{site}/t HTTP/1.1\r\nHost: h\r\nMax-Forwards: 0\r\nCookie: c=secret\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\nX-Mine: 1\r\n\r\n"
    );
    let (head, body) = split_response(&send_raw(pair.socks(), request.as_bytes()).await);
    assert!(head.contains("\r\nContent-Type: message/http\r\n"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("TRACE http://{site}/t HTTP/1.1\r\nHost: h\r\nMax-Forwards: 0\r\nX-Mine: 1\r\n\r\n")
    );
    assert!(received.lock().unwrap().is_empty(), "Max-Forwards: 0 was forwarded");

    let request = format!("TRACE http://{site}/t HTTP/1.1\r\nHost: h\r\nMax-Forwards: 5\r\nConnection: close\r\n\r\n");
    let (head, _) = split_response(&send_raw(pair.socks(), request.as_bytes()).await);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let request = format!("OPTIONS http://{site} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    send_raw(pair.socks(), request.as_bytes()).await;
    let seen: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|(h, _)| format!("{} {} {:?}", h.method, h.target, h.headers.get("max-forwards")))
        .collect();
    assert_eq!(seen, ["TRACE /t Some([52])", "OPTIONS * None"]);

    let (head, _) = split_response(&send_raw(pair.socks(), b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").await);
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("\r\nAllow: "),
        "{head}"
    );
    // Warren's own answers carry a Date (RFC 9110 §6.6.1) that parses as an HTTP-date.
    let date = head
        .split("\r\nDate: ")
        .nth(1)
        .and_then(|d| d.split("\r\n").next())
        .unwrap();
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
}

/// RFC 9110 §10.1.1: `Expect: 100-continue` is forwarded and the origin's 100 reaches the
/// client before it sends the body; the body then reaches the origin whole.
#[tokio::test]
async fn expect_100_continue_reaches_the_origin_and_back() {
    let pair = start_pair("", "").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = listener.local_addr().unwrap();
    let origin = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let head: RequestHead = read_message(&mut stream, &mut buf).await.unwrap();
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
        while buf.len() < 5 && stream.read_buf(&mut buf).await.unwrap() > 0 {}
        stream
            .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nstored")
            .await
            .unwrap();
        (head.headers.get("expect").map(<[u8]>::to_vec), buf.to_vec())
    });
    let mut client = TcpStream::connect(pair.socks()).await.unwrap();
    let request = format!(
        "PUT http://{site}/f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let mut buf = BytesMut::new();
    let interim: ResponseHead = within(10, "100 Continue", read_message(&mut client, &mut buf))
        .await
        .unwrap();
    assert_eq!(interim.status, 100);
    client.write_all(b"hello").await.unwrap();
    let fin: ResponseHead = within(10, "final", read_message(&mut client, &mut buf)).await.unwrap();
    assert_eq!(fin.status, 201);
    let (expect, body) = within(10, "origin", origin).await.unwrap();
    assert_eq!(expect.as_deref(), Some(&b"100-continue"[..]));
    assert_eq!(body, b"hello");
}

/// RFC 9112 §9.3.2: pipelined requests (three in one write, HEAD among them) are answered in
/// order on one connection, and a HEAD response's Content-Length frames no body.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let pair = start_pair("", "").await;
    let (site, received) = origin(|head, _| {
        let body = format!("answer to {}", head.target);
        let fields = format!("Content-Length: {}\r\n", body.len());
        match head.method.as_str() {
            "HEAD" => answer("200 OK", &fields, ""),
            _ => answer("200 OK", &fields, &body),
        }
    })
    .await;
    let mut requests = String::new();
    for (method, path) in [("GET", "/1"), ("HEAD", "/2"), ("GET", "/3")] {
        requests.push_str(&format!("{method} http://{site}{path} HTTP/1.1\r\nHost: h\r\n\r\n"));
    }
    requests.push_str(&format!(
        "GET http://{site}/4 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    ));
    let response = send_raw(pair.socks(), requests.as_bytes()).await;
    let text = String::from_utf8_lossy(&response);
    let bodies: Vec<&str> = text
        .split("\r\n\r\n")
        .skip(1)
        .map(|b| b.split("HTTP/1.1").next().unwrap_or(b))
        .collect();
    assert_eq!(bodies, ["answer to /1", "", "answer to /3", "answer to /4"], "{text}");
    let seen: Vec<String> = received.lock().unwrap().iter().map(|(h, _)| h.target.clone()).collect();
    assert_eq!(seen, ["/1", "/2", "/3", "/4"]);
}

/// RFC 9112 §5.1/§5.2: a response with whitespace before a colon or obs-fold is repaired before
/// it is forwarded; RFC 9110 §15: a status outside 100–599, conflicting lengths (RFC 9112 §6.3)
/// or chunked applied twice is a 502 to the client, never forwarded; so is a 101 the client
/// never asked for (RFC 9110 §15.2.2: `Upgrade` is hop-by-hop and warren never forwards it).
#[tokio::test]
async fn response_heads_are_repaired_or_refused() {
    let pair = start_pair("", "").await;
    let (site, _) = origin(|head, _| match head.target.as_str() {
        "/repair" => answer(
            "200 OK",
            "X-Space : 1\r\nX-Fold: a\r\n b\r\nContent-Length: 2\r\n",
            "ok",
        ),
        "/600" => b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n".to_vec(),
        "/lengths" => answer("200 OK", "Content-Length: 2\r\nContent-Length: 3\r\n", "abc"),
        "/twice" => answer("200 OK", "Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"),
        "/101" => answer(
            "101 Switching Protocols",
            "Upgrade: other\r\nConnection: upgrade\r\n",
            "",
        ),
        _ => answer("404 Not Found", "Content-Length: 0\r\n", ""),
    })
    .await;
    let get = |path: &str| format!("GET http://{site}{path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    let (head, body) = split_response(&send_raw(pair.socks(), get("/repair").as_bytes()).await);
    assert!(
        head.contains("\r\nX-Space: 1\r\n") && head.contains("\r\nX-Fold: a   b\r\n"),
        "{head}"
    );
    assert_eq!(body, b"ok");
    for path in ["/600", "/lengths", "/twice", "/101"] {
        let (head, _) = split_response(&send_raw(pair.socks(), get(path).as_bytes()).await);
        assert!(head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{path}: {head}");
    }
}

/// RFC 9112 §3: a request line too long to parse is answered 414; a header section over the
/// limit is 431 (tests/http_proxy.rs::malformed_requests_get_400_or_431).
#[tokio::test]
async fn a_request_line_too_long_is_414() {
    let pair = start_pair("", "").await;
    let request = format!("GET http://h/{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(70 * 1024));
    let (head, _) = split_response(&send_raw(pair.socks(), request.as_bytes()).await);
    assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
}
