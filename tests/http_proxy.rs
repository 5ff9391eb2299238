//! The HTTP proxy on warren-local's shared port, seen from curl and raw clients: absolute-form
//! forwarding and CONNECT (also through `https_proxy` to a loopback TLS server), keep-alive to
//! one and to several origins, response framing (Content-Length, chunked, HEAD, 204, 304,
//! read-to-close), request bodies, Basic proxy login, the status for each failure, and
//! malformed or stalled requests answered with their status then a close.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warren_common::proto::chunked::ChunkedTracker;
use warren_common::proto::decode_prefix;
use warren_common::proto::http::{BodyLength, RequestHead, ResponseHead};
use warren_tests::*;

const ALICE: &str = "users:\n  - {username: alice, password: \"s3cret\"}";
/// The exact response warren-local makes itself for a refusal.
fn canned(status_line: &str, message: &str, extra: &str) -> Vec<u8> {
    let body = format!("{status_line}: {message}\n");
    format!(
        "HTTP/1.1 {status_line}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A response as text without its `Date` line (warren's own answers carry one: RFC 9110
/// §6.6.1), to compare with [`canned`].
fn without_date(response: &[u8]) -> String {
    let text = String::from_utf8_lossy(response);
    match text.find("\r\nDate: ") {
        Some(at) => {
            let end = text[at + 2..].find("\r\n").map_or(text.len(), |e| at + 2 + e + 2);
            format!("{}{}", &text[..at + 2], &text[end..])
        }
        None => text.into_owned(),
    }
}

/// The status line of a response.
fn status_line(response: &[u8]) -> String {
    let end = response.windows(2).position(|w| w == b"\r\n").unwrap_or(response.len());
    String::from_utf8_lossy(&response[..end]).into_owned()
}

/// An HTTP/1.1 origin with keep-alive that records (connection number, request line, body) for
/// every request. Paths: `/chunked` (chunked with a trailer), `/204`, `/304`, `/close` (no
/// length: read to close), `/echo` (answers the request body); anything else answers
/// "<method> <path> #<n>" where n counts requests on that connection. HEAD gets headers only.
struct Origin {
    addr: SocketAddr,
    log: RequestLog,
}

/// (origin connection number, request line and Host, body) per request.
type RequestLog = Arc<Mutex<Vec<(usize, String, Vec<u8>)>>>;

impl Origin {
    fn requests(&self) -> Vec<(usize, String, Vec<u8>)> {
        self.log.lock().unwrap().clone()
    }
}

async fn origin() -> Origin {
    origin_on("127.0.0.1:0").await
}

async fn origin_on(bind: &str) -> Origin {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let shared = log.clone();
    tokio::spawn(async move {
        let mut conn = 0;
        while let Ok((stream, _)) = listener.accept().await {
            conn += 1;
            tokio::spawn(serve_origin(stream, conn, shared.clone()));
        }
    });
    Origin { addr, log }
}

async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> bool {
    buf.reserve(8192);
    matches!(stream.read_buf(buf).await, Ok(n) if n > 0)
}

async fn serve_origin(mut stream: TcpStream, conn: usize, log: RequestLog) {
    let mut buf = BytesMut::new();
    for n in 1.. {
        let head = loop {
            if let Ok((head, used)) = decode_prefix::<RequestHead>(&buf) {
                buf.advance(used);
                break head;
            }
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        let mut body = Vec::new();
        match head.body_length().unwrap() {
            BodyLength::Fixed(len) => {
                while (buf.len() as u64) < len {
                    if !read_more(&mut stream, &mut buf).await {
                        return;
                    }
                }
                body = buf.split_to(len as usize).to_vec();
            }
            BodyLength::Chunked => {
                let mut tracker = ChunkedTracker::new();
                loop {
                    let used = tracker.advance(&buf).unwrap();
                    body.extend_from_slice(&buf.split_to(used));
                    if tracker.is_done() {
                        break;
                    }
                    if !read_more(&mut stream, &mut buf).await {
                        return;
                    }
                }
            }
            BodyLength::ToClose => unreachable!(),
        }
        let line = format!("{} {} HTTP/1.{}", head.method, head.target, head.minor);
        let host = String::from_utf8_lossy(head.headers.get("host").unwrap_or_default()).into_owned();
        let names: Vec<&str> = head.headers.0.iter().map(|h| h.name.as_str()).collect();
        let fields = names.join(",");
        log.lock()
            .unwrap()
            .push((conn, format!("{line} host={host} fields={fields}"), body.clone()));
        let is_head = head.method == "HEAD";
        let text = format!("{} {} #{n}", head.method, head.target);
        let response: Vec<u8> = match head.target.as_str() {
            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
                            5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nchunks\r\n0\r\nX-Sum: 12\r\n\r\n"
                .to_vec(),
            "/204" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            "/304" => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n".to_vec(),
            "/close" => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the origin closes")
                    .await;
                return;
            }
            "/echo" => {
                let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                r.extend_from_slice(&body);
                r
            }
            _ if is_head => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", text.len()).into_bytes(),
            _ => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nKeep-Alive: timeout=5\r\n\r\n{text}",
                text.len()
            )
            .into_bytes(),
        };
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// Reads one response (head and body, framed as for a request with `method`) from `stream`.
async fn read_response(stream: &mut TcpStream, buf: &mut BytesMut, method: &str) -> (ResponseHead, Vec<u8>) {
    within(20, "response", async {
        let head = loop {
            if let Ok((head, used)) = decode_prefix::<ResponseHead>(buf) {
                buf.advance(used);
                break head;
            }
            assert!(read_more(stream, buf).await, "closed before a response head");
        };
        let mut body = Vec::new();
        match head.body_length(method == "HEAD").unwrap() {
            BodyLength::Fixed(len) => {
                while (buf.len() as u64) < len {
                    assert!(read_more(stream, buf).await, "closed mid-body");
                }
                body = buf.split_to(len as usize).to_vec();
            }
            BodyLength::Chunked => {
                let mut tracker = ChunkedTracker::new();
                loop {
                    let used = tracker.advance(buf).unwrap();
                    body.extend_from_slice(&buf.split_to(used));
                    if tracker.is_done() {
                        break;
                    }
                    assert!(read_more(stream, buf).await, "closed mid-chunked-body");
                }
            }
            BodyLength::ToClose => {
                body = buf.split().to_vec();
                body.extend_from_slice(&read_until_closed(stream).await);
            }
        }
        (head, body)
    })
    .await
}

// curl -x http://… fetches 1 MiB byte-exact with an absolute-form GET.
#[tokio::test(flavor = "multi_thread")]
async fn curl_absolute_form_fetches_byte_exact() {
    let body = pattern(1024 * 1024 + 3);
    let site = http_server("127.0.0.1:0", body.clone()).await;
    let pair = start_pair("", "").await;
    let proxy = format!("http://{}", pair.socks());
    let url = format!("http://127.0.0.1:{}/file", site.port());
    let out = curl_env(&[], &["-x", &proxy, &url]).await;
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == body, "body differs ({} bytes)", out.stdout.len());
}

// curl -p -x http://… (CONNECT, then HTTP inside the tunnel) fetches byte-exact; the name is
// resolved by the remote.
#[tokio::test(flavor = "multi_thread")]
async fn curl_proxytunnel_connect_fetches_byte_exact() {
    let body = pattern(512 * 1024 + 5);
    let site = http_server("127.0.0.1:0", body.clone()).await;
    let pair = start_pair("", "").await;
    let proxy = format!("http://{}", pair.socks());
    let url = format!("http://localhost:{}/file", site.port());
    let out = curl_env(&[], &["-p", "-x", &proxy, &url]).await;
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == body, "body differs ({} bytes)", out.stdout.len());
}

/// A loopback HTTPS server (python3's http.server with a fresh self-signed certificate from
/// openssl) serving `body` as /file.bin; killed on drop.
struct TlsServer {
    port: u16,
    child: std::process::Child,
    _dir: TempDir,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TLS_SERVER: &str = r#"
import http.server, ssl, sys, os
os.chdir(sys.argv[1])
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("cert.pem", "key.pem")
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

fn tls_server(body: &[u8]) -> TlsServer {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("warren-tls-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = TempDir(dir);
    std::fs::write(dir.0.join("file.bin"), body).unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args([
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .current_dir(&dir.0)
        .output()
        .expect("openssl must be installed (apt-get install -y openssl)");
    assert!(
        made.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", TLS_SERVER])
        .arg(&dir.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 must be installed (apt-get install -y python3)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("TLS server port, got {line:?}"));
    TlsServer { port, child, _dir: dir }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

// curl honours https_proxy=http://<local>: it CONNECTs through warren to a loopback TLS
// server and fetches the file byte-exact over TLS.
#[tokio::test(flavor = "multi_thread")]
async fn https_proxy_env_connects_to_a_tls_server() {
    let body = pattern(300 * 1024 + 11);
    let tls = tokio::task::spawn_blocking({
        let body = body.clone();
        move || tls_server(&body)
    })
    .await
    .unwrap();
    let pair = start_pair("", "").await;
    let env = [("https_proxy", format!("http://{}", pair.socks()))];
    let url = format!("https://localhost:{}/file.bin", tls.port);
    let out = curl_env(&env, &["-k", "-v", &url]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl: {stderr}");
    assert!(
        stderr.contains("CONNECT localhost:"),
        "curl did not use the proxy: {stderr}"
    );
    assert!(out.stdout == body, "body differs ({} bytes)", out.stdout.len());
}

// Two URLs on one curl command line to the same origin: both answered, over one client
// connection and one tunnel (the origin sees two requests on one connection, Host set).
#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_two_requests_share_one_connection() {
    let origin = origin().await;
    let pair = start_pair("", "").await;
    let proxy = format!("http://{}", pair.socks());
    let a = format!("http://127.0.0.1:{}/a", origin.addr.port());
    let b = format!("http://127.0.0.1:{}/b", origin.addr.port());
    let out = curl_env(&[], &["-v", "-x", &proxy, &a, &b]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "GET /a #1GET /b #2", "{stderr}");
    let host = format!(
        "host=127.0.0.1:{} fields=Host,User-Agent,Accept,Via",
        origin.addr.port()
    );
    let seen: Vec<(usize, String)> = origin.requests().into_iter().map(|(c, l, _)| (c, l)).collect();
    assert_eq!(
        seen,
        [
            (1, format!("GET /a HTTP/1.1 {host}")),
            (1, format!("GET /b HTTP/1.1 {host}"))
        ]
    );
}

// One client connection, requests to two different origins and back: each answered by its
// own origin (a new tunnel when the target changes), and the connection stays usable.
#[tokio::test]
async fn keep_alive_across_different_hosts() {
    let (one, two) = (origin().await, origin().await);
    let pair = start_pair("", "").await;
    let mut stream = TcpStream::connect(pair.socks()).await.unwrap();
    let mut buf = BytesMut::new();
    for (origin, path) in [(&one, "/x"), (&two, "/y"), (&one, "/z")] {
        let request = format!(
            "GET http://127.0.0.1:{}{path} HTTP/1.1\r\nHost: wrong.example\r\nProxy-Connection: keep-alive\r\n\
             Connection: X-Private\r\nX-Private: 1\r\nProxy-Authorization: Basic YTpi\r\nTE: trailers\r\n\
             Upgrade: h2c\r\nAccept: */*\r\n\r\n",
            origin.addr.port()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut stream, &mut buf, "GET").await;
        assert_eq!(head.status, 200);
        assert_eq!(String::from_utf8_lossy(&body), format!("GET {path} #1"));
        assert!(
            head.headers.get("keep-alive").is_none(),
            "hop-by-hop Keep-Alive forwarded"
        );
    }
    assert_eq!(one.requests().len(), 2);
    assert_eq!(two.requests().len(), 1);
    // Host comes from the URL; hop-by-hop fields (and those Connection names) are not forwarded.
    let expected = format!(
        "GET /x HTTP/1.1 host=127.0.0.1:{} fields=Host,Accept,Via",
        one.addr.port()
    );
    assert_eq!(one.requests()[0].1, expected);
}

// On one connection: chunked (with trailer), HEAD, 204 and 304 (no body despite a length),
// request bodies by Content-Length and chunked, then a response delimited by the origin's
// close, after which the proxy closes the client connection too.
#[tokio::test]
async fn response_framing_and_request_bodies_on_one_connection() {
    let origin = origin().await;
    let pair = start_pair("", "").await;
    let base = format!("http://127.0.0.1:{}", origin.addr.port());
    let mut stream = TcpStream::connect(pair.socks()).await.unwrap();
    let mut buf = BytesMut::new();
    let chunked_body = b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nchunks\r\n0\r\nX-Sum: 12\r\n\r\n";
    let big = pattern(200 * 1024);
    let mut posted = format!(
        "POST {base}/echo HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    posted.extend_from_slice(&big);
    let steps: Vec<(&str, Vec<u8>, u16, Vec<u8>)> = vec![
        (
            "GET",
            format!("GET {base}/chunked HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes(),
            200,
            chunked_body.to_vec(),
        ),
        (
            "HEAD",
            format!("HEAD {base}/head HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes(),
            200,
            vec![],
        ),
        (
            "GET",
            format!("GET {base}/204 HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes(),
            204,
            vec![],
        ),
        (
            "GET",
            format!("GET {base}/304 HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes(),
            304,
            vec![],
        ),
        ("POST", posted, 200, big.clone()),
        (
            "POST",
            format!("POST {base}/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
                .into_bytes(),
            200,
            b"3\r\nabc\r\n0\r\n\r\n".to_vec(),
        ),
    ];
    for (i, (method, request, status, body)) in steps.into_iter().enumerate() {
        stream.write_all(&request).await.unwrap();
        let (head, got) = read_response(&mut stream, &mut buf, method).await;
        assert_eq!(head.status, status, "step {i}");
        assert!(got == body, "step {i}: body differs ({} bytes)", got.len());
    }
    let requests = origin.requests();
    assert!(
        requests.iter().all(|(conn, _, _)| *conn == 1),
        "one origin connection: {requests:?}"
    );
    assert!(requests[4].2 == big, "Content-Length request body reached the origin");
    stream
        .write_all(format!("GET {base}/close HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (head, got) = read_response(&mut stream, &mut buf, "GET").await;
    assert_eq!(head.headers.get("connection"), Some(&b"close"[..]));
    assert_eq!(got, b"until the origin closes");
}

// With users set: curl with the right login gets the body (absolute-form and CONNECT); a wrong
// or missing login gets 407 with Proxy-Authenticate, and nothing reaches the target.
#[tokio::test(flavor = "multi_thread")]
async fn basic_proxy_login() {
    let body = pattern(64 * 1024);
    let site = http_server("127.0.0.1:0", body.clone()).await;
    let pair = start_pair("", ALICE).await;
    let url = format!("http://127.0.0.1:{}/file", site.port());
    for tunnel in [false, true] {
        let proxy = format!("http://alice:s3cret@{}", pair.socks());
        let mut args = vec!["-x", &proxy, &url];
        if tunnel {
            args.insert(0, "-p");
        }
        let out = curl_env(&[], &args).await;
        assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == body, "body differs (tunnel: {tunnel})");
    }
    let wrong = format!("http://alice:wrong@{}", pair.socks());
    let out = curl_env(&[], &["-x", &wrong, "-o", "/dev/null", "-w", "%{http_code}", &url]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "407");
    let out = curl_env(&[], &["-p", "-x", &wrong, &url]).await;
    assert!(!out.status.success(), "CONNECT with a wrong password succeeded");

    let target = target("127.0.0.1:0").await;
    let challenge = "Proxy-Authenticate: Basic realm=\"warren\"\r\n";
    let expected = canned(
        "407 Proxy Authentication Required",
        "log in to use this proxy",
        challenge,
    );
    for request in [
        format!("CONNECT {} HTTP/1.1\r\nHost: h\r\n\r\n", target.addr),
        format!("GET http://{}/ HTTP/1.1\r\nHost: h\r\n\r\n", target.addr),
        format!(
            "GET http://{}/ HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic YWxpY2U6d3Jvbmc=\r\n\r\n",
            target.addr
        ),
        format!(
            "GET http://{}/ HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Bearer abc\r\n\r\n",
            target.addr
        ),
    ] {
        let answer = send_raw(pair.socks(), request.as_bytes()).await;
        assert_eq!(without_date(&answer), String::from_utf8_lossy(&expected), "{request}");
    }
    assert_eq!(
        target.connections().await,
        0,
        "a request without a valid login reached the target"
    );
}
// Failures map to statuses, for CONNECT and absolute-form alike: 403 for an ACL-denied target,
// 502 for a refused connection or a name that does not resolve, 504 for a target that does not
// answer within remote.connect_timeout. Each is a complete response with a one-line body.
#[tokio::test(flavor = "multi_thread")]
async fn failures_map_to_403_502_504() {
    let denied = start_pair("acl:\n  - deny: \"127.0.0.2\"\n  - allow: \"127.0.0.0/8\"", "").await;
    let pair = start_pair("connect_timeout: 1", "").await;
    let hole = black_hole().await;
    let closed_port = closed_port(); // held closed (bound, never listening) for the whole test
    let closed = closed_port.addr;
    let unresolvable = format!("{}.test:80", "a".repeat(64));
    let cases = [
        (
            denied.socks(),
            "127.0.0.2:80".to_owned(),
            "403 Forbidden",
            "not allowed by ruleset",
        ),
        (
            pair.socks(),
            closed.to_string(),
            "502 Bad Gateway",
            "connection refused",
        ),
        (pair.socks(), unresolvable, "502 Bad Gateway", "host unreachable"),
        (
            pair.socks(),
            hole.addr.to_string(),
            "504 Gateway Timeout",
            "connect timed out",
        ),
    ];
    for (proxy, target, status, message) in cases {
        for request in [
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
            format!("GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        ] {
            let answer = send_raw(proxy, request.as_bytes()).await;
            assert_eq!(
                without_date(&answer),
                String::from_utf8_lossy(&canned(status, message, "")),
                "{request}"
            );
        }
    }
}

// A remote that is not there: 502 at once.
#[tokio::test]
async fn unreachable_remote_gets_502() {
    let closed_port = closed_port(); // held closed (bound, never listening) for the whole test
    let closed = closed_port.addr;
    let local = start_local(&new_key(), closed, "").await;
    let answer = send_raw(local.addr, b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(status_line(&answer), "HTTP/1.1 502 Bad Gateway");
}

/// The proxy still forwards a request after a refused one.
async fn assert_still_serves(proxy: SocketAddr, site: SocketAddr) {
    let request = format!("GET http://{site}/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    let answer = send_raw(proxy, request.as_bytes()).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK", "a request after a refused one");
    assert!(answer.ends_with(b"still serving"));
}

// Malformed requests get 400 (431 for a head over 64 KiB) then the close, and the proxy goes
// on serving: a path instead of a URL, a broken request line, HTTP/2.0, an https:// URL,
// CONNECT without a port, a field with whitespace before the colon, obsolete line folding,
// Content-Length with Transfer-Encoding, conflicting lengths.
#[tokio::test]
async fn malformed_requests_get_400_or_431() {
    let site = http_server("127.0.0.1:0", b"still serving".to_vec()).await;
    let pair = start_pair("", "").await;
    let huge = format!(
        "GET http://{site}/ HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let cases = [
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(), "400 Bad Request"),
        ("GET\r\n\r\n".to_owned(), "400 Bad Request"),
        (format!("GET http://{site}/ HTTP/2.0\r\n\r\n"), "400 Bad Request"),
        (
            format!("GET https://{site}/ HTTP/1.1\r\nHost: h\r\n\r\n"),
            "400 Bad Request",
        ),
        (
            "CONNECT 127.0.0.1 HTTP/1.1\r\nHost: h\r\n\r\n".to_owned(),
            "400 Bad Request",
        ),
        (
            format!("GET http://{site}/ HTTP/1.1\r\nHost : x\r\n\r\n"),
            "400 Bad Request",
        ),
        (
            format!("GET http://{site}/ HTTP/1.1\r\nHost: h\r\nA: b\r\n  c\r\n\r\n"),
            "400 Bad Request",
        ),
        (
            format!(
                "POST http://{site}/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            "400 Bad Request",
        ),
        (
            format!("POST http://{site}/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
            "400 Bad Request",
        ),
        (huge, "431 Request Header Fields Too Large"),
    ];
    for (request, status) in cases {
        let answer = send_raw(pair.socks(), request.as_bytes()).await;
        assert_eq!(status_line(&answer), format!("HTTP/1.1 {status}"), "{:.60}", request);
        assert!(answer.windows(19).any(|w| w == b"Connection: close\r\n"));
        assert_still_serves(pair.socks(), site).await;
    }
    // The exact bytes of one: a path on the proxy itself that it does not serve (it serves
    // /proxy.pac: tests/routing.rs).
    let answer = send_raw(pair.socks(), b"GET /index.html HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let message = "this is a proxy: ask for an absolute URL (GET http://host/path) or use CONNECT";
    assert_eq!(
        without_date(&answer),
        String::from_utf8_lossy(&canned("400 Bad Request", message, ""))
    );
}

// A head cut short by the client's close gets nothing back; a head that stalls gets 408 at the
// handshake timeout, then the close; others are served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn truncated_and_stalled_heads() {
    let site = http_server("127.0.0.1:0", b"still serving".to_vec()).await;
    let pair = start_pair("", "handshake_timeout: 1").await;
    let mut truncated = TcpStream::connect(pair.socks()).await.unwrap();
    truncated.write_all(b"GET http://127.0.0.1/ HTT").await.unwrap();
    truncated.shutdown().await.unwrap();
    assert_eq!(read_until_closed(&mut truncated).await, b"");

    let mut stalled = TcpStream::connect(pair.socks()).await.unwrap();
    stalled
        .write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127")
        .await
        .unwrap();
    assert_still_serves(pair.socks(), site).await;
    let expected = canned("408 Request Timeout", "the request head did not arrive in time", "");
    assert_eq!(
        without_date(&read_until_closed(&mut stalled).await),
        String::from_utf8_lossy(&expected)
    );
}

// IPv6 literal targets: CONNECT [::1]:port tunnels to an echo server, and
// GET http://[::1]:port/ is forwarded with Host "[::1]:port".
#[tokio::test]
async fn ipv6_targets_for_connect_and_absolute_form() {
    let echo = echo_server("[::1]:0").await;
    let origin = origin_on("[::1]:0").await;
    let pair = start_pair("", "").await;
    let mut stream = TcpStream::connect(pair.socks()).await.unwrap();
    stream
        .write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    let mut answer = vec![0u8; established.len()];
    within(10, "CONNECT answer", stream.read_exact(&mut answer))
        .await
        .unwrap();
    assert_eq!(answer, established);
    stream.write_all(b"over IPv6").await.unwrap();
    let mut got = [0u8; 9];
    within(10, "echo", stream.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"over IPv6");

    let request = format!(
        "GET http://{}/v6 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        origin.addr
    );
    let answer = send_raw(pair.socks(), request.as_bytes()).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK");
    assert!(answer.ends_with(b"GET /v6 #1"));
    assert_eq!(
        origin.requests()[0].1,
        format!("GET /v6 HTTP/1.1 host={} fields=Host,Via", origin.addr)
    );
}
