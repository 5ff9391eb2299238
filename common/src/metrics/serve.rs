//! The scrape endpoint: `GET /metrics` over HTTP/1.x (RFC 9112), answered with the registry as
//! OpenMetrics text and the connection closed. Anything else gets 404 or 405, a malformed or
//! oversized request head 400; a read that waits 5 s, or a scrape that takes 10 s in all,
//! gets nothing. At most 16
//! scrapes are served at once; more wait in the listen backlog.
//!
//! Hand-written over httparse (which does the parsing) rather than an HTTP server crate:
//! one fixed response per request, and the exporter crates bring a whole HTTP stack for it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Longest request head read, in bytes.
const MAX_HEAD: usize = 8 * 1024;
/// Scrapes served at once.
const MAX_SCRAPES: usize = 16;
/// How long a scraper has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves scrapes on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            permit = slots.clone().acquire_owned() => permit,
        };
        // The semaphore is never closed, so this is always Ok.
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(READ_TIMEOUT * 2, answer(stream)).await;
                    drop(permit);
                });
            }
            // Out of fds or similar: a short pause, as the main accept loop does.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The response to one request head, as (status line, content type, body).
fn respond(head: &[u8]) -> Option<(&'static str, &'static str, String)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(("400 Bad Request", "text/plain", "bad request\n".to_owned())),
    }
    let path = request.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    Some(match (request.method, path) {
        (Some("GET" | "HEAD"), "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            super::get().encode(),
        ),
        (_, "/metrics") => ("405 Method Not Allowed", "text/plain", "GET /metrics\n".to_owned()),
        _ => ("404 Not Found", "text/plain", "metrics are at /metrics\n".to_owned()),
    })
}

async fn answer(mut stream: TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let response = loop {
        if head.len() >= MAX_HEAD {
            break ("400 Bad Request", "text/plain", "request head too large\n".to_owned());
        }
        let mut buf = [0u8; 1024];
        let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        if let Some(response) = respond(&head) {
            break response;
        }
    };
    let (status, content_type, body) = response;
    let head_only = head.starts_with(b"HEAD ");
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::respond;

    #[test]
    fn only_get_metrics_is_answered_with_the_registry() {
        let ok = respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(ok.0, "200 OK");
        assert!(ok.2.ends_with("# EOF\n"), "{}", ok.2);
        assert_eq!(
            respond(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap().0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond(b"GET / HTTP/1.1\r\n\r\n").unwrap().0, "404 Not Found");
        assert_eq!(respond(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").unwrap().0, "200 OK");
        assert_eq!(respond(b"\x00\x01garbage\r\n\r\n").unwrap().0, "400 Bad Request");
        assert!(respond(b"GET /metr").is_none(), "a partial head waits for more");
    }

    proptest::proptest! {
        // Whatever a scraper (or anyone who reaches the port) sends, the parser answers or waits
        // for more, and never panics; a whole head always gets a status line.
        #[test]
        fn any_bytes_get_an_answer_or_a_wait(head in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Some((status, _, _)) = respond(&head) {
                proptest::prop_assert!(["200 OK", "400 Bad Request", "404 Not Found", "405 Method Not Allowed"].contains(&status));
            }
        }
    }
}
