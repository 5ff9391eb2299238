//! HTTP proxy rules of RFC 9110/9112 that real clients run into, each through real sockets
//! (a scripted origin, warren-local and warren-remote on loopback): no 1xx to an HTTP/1.0
//! client, no automatic retry of a non-idempotent request, empty lines before a request line
//! and lower-case methods, and a finished exchange's tunnel closed cleanly (the remote's log
//! says `end=closed`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warren_common::proto::http::{RequestHead, ResponseHead};
use warren_tests::*;

/// The request lines an origin saw, with the number of the connection each came on.
type Seen = Arc<Mutex<Vec<(usize, String)>>>;

/// An origin that runs `script(connection number, stream, seen)` for each connection
/// (numbered from 1) and records what the script reports in `seen`.
async fn scripted<F, Fut>(script: F) -> (SocketAddr, Seen)
where
    F: Fn(usize, TcpStream, Seen) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((stream, _)) = listener.accept().await {
            n += 1;
            tokio::spawn(script(n, stream, log.clone()));
        }
    });
    (addr, seen)
}

/// Reads one request head and records its request line; `None` once the peer closed.
async fn next_request(n: usize, stream: &mut TcpStream, buf: &mut BytesMut, seen: &Seen) -> Option<RequestHead> {
    let head: RequestHead = read_message(stream, buf).await.ok()?;
    let line = format!("{} {} HTTP/1.{}", head.method, head.target, head.minor);
    seen.lock().unwrap().push((n, line));
    Some(head)
}

/// An origin that answers every request on a kept-alive connection with `answer`.
async fn answering(answer: &'static [u8]) -> (SocketAddr, Seen) {
    scripted(move |n, mut stream, seen| async move {
        let mut buf = BytesMut::new();
        while next_request(n, &mut stream, &mut buf, &seen).await.is_some() {
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// RFC 9110 §15.2: a 1xx is forwarded to an HTTP/1.1 client but never to an HTTP/1.0 one,
/// which still gets the final response.
#[tokio::test]
async fn interim_responses_reach_http_1_1_clients_only() {
    let pair = start_pair("", "").await;
    let (origin, _) = answering(
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;

    let old = send_raw(
        pair.local.addr,
        format!("GET http://{origin}/hints HTTP/1.0\r\n\r\n").as_bytes(),
    )
    .await;
    let old = String::from_utf8_lossy(&old);
    assert!(old.starts_with("HTTP/1.1 200 OK\r\n"), "{old}");
    assert!(!old.contains("103"), "{old}");
    assert!(old.ends_with("\r\n\r\nok"), "{old}");

    let new = send_raw(
        pair.local.addr,
        format!("GET http://{origin}/hints HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let new = String::from_utf8_lossy(&new);
    assert!(new.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{new}");
    assert!(
        new.contains("\r\n\r\nHTTP/1.1 200 OK\r\n") && new.ends_with("\r\n\r\nok"),
        "{new}"
    );
}

/// An origin whose first connection answers one request ("first") and then takes the next
/// request in full and closes without answering; later connections answer "second".
async fn closes_after_first() -> (SocketAddr, Seen) {
    scripted(|n, mut stream, seen| async move {
        let mut buf = BytesMut::new();
        if next_request(n, &mut stream, &mut buf, &seen).await.is_none() {
            return;
        }
        if n == 1 {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
                .await;
            let _ = next_request(n, &mut stream, &mut buf, &seen).await;
        } else {
            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecond";
            let _ = stream.write_all(answer).await;
        }
    })
    .await
}

/// Sends `GET` then `method` (empty body) on one kept-alive client connection to an origin
/// that drops the second request unanswered; returns what came after the first response and
/// the request lines the origin saw.
async fn second_request_dropped(method: &str) -> (String, Vec<(usize, String)>) {
    let pair = start_pair("", "").await;
    let (origin, seen) = closes_after_first().await;
    let mut client = TcpStream::connect(pair.local.addr).await.unwrap();
    client
        .write_all(format!("GET http://{origin}/a HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let head: ResponseHead = within(20, "first response", read_message(&mut client, &mut buf))
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    while buf.len() < 5 {
        within(20, "first body", client.read_buf(&mut buf)).await.unwrap();
    }
    assert_eq!(&buf[..], b"first");
    let request =
        format!("{method} http://{origin}/b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let rest = read_until_closed(&mut client).await;
    let seen = seen.lock().unwrap().clone();
    (String::from_utf8_lossy(&rest).into_owned(), seen)
}

/// RFC 9110 §9.2.2, RFC 9112 §9.3.1.1: a POST the origin took and then closed on is not sent
/// again (the origin may have acted on it): the client gets a 502. A GET still is (control).
#[tokio::test]
async fn non_idempotent_requests_are_never_retried() {
    let (answer, seen) = second_request_dropped("POST").await;
    assert!(answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{answer}");
    assert!(!answer.contains("second"), "{answer}");
    let posts = seen.iter().filter(|(_, line)| line.starts_with("POST")).count();
    assert_eq!(posts, 1, "{seen:?}");

    let (answer, seen) = second_request_dropped("GET").await;
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("second"),
        "{answer}"
    );
    assert_eq!(seen.last().map(|(n, _)| *n), Some(2), "{seen:?}");
}

/// RFC 9112 §2.2: empty lines before the request line are ignored (up to 8; more is a 400);
/// RFC 9110 §9.1: a lower-case method is a valid token, forwarded as sent. Neither is closed
/// without an answer.
#[tokio::test]
async fn empty_lines_and_lower_case_methods_are_answered() {
    let pair = start_pair("", "").await;
    let (origin, seen) = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;

    let answer = send_raw(
        pair.local.addr,
        format!("\r\n\nGET http://{origin}/x HTTP/1.0\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let answer = send_raw(
        pair.local.addr,
        format!("get http://{origin}/y HTTP/1.0\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let lines: Vec<String> = seen.lock().unwrap().iter().map(|(_, l)| l.clone()).collect();
    assert_eq!(lines, ["GET /x HTTP/1.0", "get /y HTTP/1.0"]);

    let many = format!("{}GET http://{origin}/z HTTP/1.1\r\n\r\n", "\r\n".repeat(9));
    let answer = send_raw(pair.local.addr, many.as_bytes()).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// Item 5: a plain-HTTP request that went well is logged by the remote as a normal close. The
/// local used to drop the tunnel without its end-of-stream chunk when the client left, which
/// the remote logged as `end=error: tunnel closed without an end-of-stream chunk`.
#[tokio::test]
async fn a_finished_exchange_ends_its_tunnel_cleanly() {
    capture_logs();
    let pair = start_pair("", "").await;
    let (origin, _) = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let mut client = TcpStream::connect(pair.local.addr).await.unwrap();
    client
        .write_all(format!("GET http://{origin}/ HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let head: ResponseHead = within(20, "the response", read_message(&mut client, &mut buf))
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    drop(client);
    let target = format!("target={origin}");
    let line = log_line(&["connection finished", &target]).await;
    assert!(line.contains("end=closed"), "{line}");
}

/// A request-target with userinfo is refused (400), and the password in it never reaches a log
/// line, even at debug level: the target is logged with `***@` in its place.
#[tokio::test]
async fn a_refused_target_keeps_its_password_out_of_the_log() {
    capture_logs();
    let pair = start_pair("", "").await;
    let mut client = TcpStream::connect(pair.local.addr).await.unwrap();
    client
        .write_all(b"GET http://user:hunter2@127.0.0.1:9/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let head: ResponseHead = within(20, "the response", read_message(&mut client, &mut buf))
        .await
        .unwrap();
    assert_eq!(head.status, 400);
    let line = log_line(&["HTTP request refused", "***@127.0.0.1:9"]).await;
    assert!(!line.contains("hunter2"), "{line}");
    let all = all_lines();
    assert!(!all.contains("hunter2"), "the password reached the log");
}
