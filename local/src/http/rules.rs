//! What RFC 9110 and RFC 9112 ask of an intermediary's message heads, in one place: which
//! requests are refused before anything is opened, which ones the proxy answers itself
//! (`Max-Forwards: 0`, `OPTIONS *`), and how a request head and a response head are rewritten
//! on their way through. docs/HTTP.md lists every rule with the test that proves it.
//!
//! ```text
//! client ─ request head ─→ check() ─→ own_answer()? ─→ to_origin()  ─→ origin
//! client ←──────────────── to_client() ←──────────────── response head ─ origin
//! ```

use warren_common::proto::http::{BodyLength, Header, Headers, RequestHead, ResponseHead};
use warren_common::proto::Encode;

use super::response::canned;

/// The pseudonym warren puts in `Via` (RFC 9110 §7.6.3 allows one in place of a host name,
/// so the field tells nothing about the machine).
pub const VIA_NAME: &str = "warren";

/// The methods named in `Allow` when warren answers `OPTIONS` itself.
const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH";

/// Fields a TRACE echo never reflects (RFC 9110 §9.3.8: fields likely to hold secrets).
const NOT_REFLECTED: &[&str] = &["proxy-authorization", "authorization", "cookie"];

/// A request refused before anything is opened: status, reason phrase, one-line explanation.
pub type Refusal = (u16, &'static str, String);

/// Checks the `Host` rule every request must satisfy, whatever its target (RFC 9112 §3.2): an
/// HTTP/1.1 request without `Host`, or any request with more than one, is a 400.
pub fn check_host(head: &RequestHead) -> Result<(), Refusal> {
    let bad = |message: &str| Err((400, "Bad Request", message.to_owned()));
    match head.headers.get_all("host").count() {
        0 if head.minor >= 1 => bad("an HTTP/1.1 request needs a Host field (RFC 9112 §3.2)"),
        0 | 1 => Ok(()),
        _ => bad("more than one Host field (RFC 9112 §3.2)"),
    }
}

/// Checks a request to forward and returns its body framing:
/// - RFC 9112 §6.1: `Transfer-Encoding` in an HTTP/1.0 request is faulty framing, a 400;
/// - RFC 9112 §6.3: `Content-Length` beside `Transfer-Encoding`, a coding list that does not
///   end in a single `chunked`, or conflicting lengths are a 400 (request smuggling, §11.2).
pub fn check(head: &RequestHead) -> Result<BodyLength, Refusal> {
    let bad = |message: &str| (400, "Bad Request", message.to_owned());
    if head.minor == 0 && head.headers.get("transfer-encoding").is_some() {
        return Err(bad("Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)"));
    }
    head.body_length().map_err(|e| bad(&e.to_string()))
}

/// The complete answer warren gives itself, instead of forwarding, to a request that asks the
/// proxy rather than the origin: `OPTIONS` or `TRACE` whose `Max-Forwards` is 0 (RFC 9110
/// §7.6.2: the recipient MUST NOT forward it and responds as the final recipient). `OPTIONS`
/// gets `200` with `Allow`; `TRACE` gets `200` with the request as received, as
/// `message/http`, minus [`NOT_REFLECTED`] fields (§9.3.8). `None`: forward it.
pub fn own_answer(head: &RequestHead) -> Option<Vec<u8>> {
    if !matches!(head.method.as_str(), "OPTIONS" | "TRACE") || max_forwards(&head.headers) != Some(0) {
        return None;
    }
    let (content_type, body) = match head.method.as_str() {
        "TRACE" => {
            let mut echo = head.clone();
            echo.headers
                .0
                .retain(|h| !NOT_REFLECTED.iter().any(|n| h.name.eq_ignore_ascii_case(n)));
            let mut body = Vec::with_capacity(512);
            echo.encode(&mut body);
            ("message/http", body)
        }
        _ => ("text/plain; charset=utf-8", Vec::new()),
    };
    let mut response = ResponseHead::new(200, "OK");
    response
        .headers
        .push("Date", httpdate::fmt_http_date(std::time::SystemTime::now()));
    response.headers.push("Allow", ALLOW);
    response.headers.push("Content-Type", content_type);
    response.headers.push("Content-Length", body.len().to_string());
    response.headers.push("Connection", "close");
    let mut out = Vec::with_capacity(256 + body.len());
    response.encode(&mut out);
    out.extend_from_slice(&body);
    Some(out)
}

/// `Max-Forwards` as a number, if present and valid (RFC 9110 §7.6.2: 1*DIGIT).
fn max_forwards(headers: &Headers) -> Option<u64> {
    let value = headers.get("max-forwards")?.trim_ascii();
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The request head as sent to the origin (RFC 9112 §3.2.2, §7.6):
/// - the target in origin-form, or `*` for an `OPTIONS` whose URL has an empty path and no
///   query (RFC 9112 §3.2.4);
/// - `Host` set to the URL's authority, replacing whatever the client sent;
/// - hop-by-hop fields and those `Connection` names removed (RFC 9110 §7.6.1);
/// - a valid repeated `Content-Length` sent once (RFC 9110 §8.6);
/// - `Max-Forwards` of an OPTIONS or TRACE decremented (§7.6.2);
/// - `Via: 1.x warren` appended (§7.6.3: a proxy MUST send Via in each message it forwards).
///
/// The version stays the client's: the origin then answers what the client can read (no
/// chunked coding or 1xx to an HTTP/1.0 client), the downgrade RFC 9110 §2.5 allows.
pub fn to_origin(mut head: RequestHead, authority: String, path: String, body: BodyLength) -> RequestHead {
    // `path` is "/" both for `http://h/` and for `http://h`; only the latter is asterisk-form.
    let empty_path = path == "/" && !head.target.ends_with('/');
    head.target = match head.method.as_str() {
        "OPTIONS" if empty_path => "*".to_owned(),
        _ => path,
    };
    if matches!(head.method.as_str(), "OPTIONS" | "TRACE") {
        if let Some(n) = max_forwards(&head.headers) {
            head.headers.remove("max-forwards");
            head.headers.push("Max-Forwards", n.saturating_sub(1).to_string());
        }
    }
    head.headers.remove_hop_by_hop();
    head.headers.remove("host");
    head.headers.0.insert(
        0,
        Header {
            name: "Host".into(),
            value: authority.into_bytes(),
        },
    );
    if body != BodyLength::Chunked {
        one_content_length(&mut head.headers);
    }
    let via = format!("1.{} {VIA_NAME}", head.minor);
    head.headers.push("Via", via);
    head
}

/// The response head as sent to the client: hop-by-hop fields removed, framing fields made
/// unambiguous (RFC 9112 §6.3: `Content-Length` removed beside `Transfer-Encoding`, a repeated
/// one sent once), `Connection` saying whether the client connection stays open (an HTTP/1.0
/// client is told `keep-alive` explicitly), `Via: 1.x warren` appended, and warren's own
/// version (RFC 9110 §2.5).
pub fn to_client(head: &mut ResponseHead, keep_client: bool, client_minor: u8) {
    let received = head.minor;
    head.headers.remove_hop_by_hop();
    if head.headers.get("transfer-encoding").is_some() {
        head.headers.remove("content-length");
    } else {
        one_content_length(&mut head.headers);
    }
    if !keep_client {
        head.headers.push("Connection", "close");
    } else if client_minor == 0 {
        head.headers.push("Connection", "keep-alive");
    }
    head.headers.push("Via", format!("1.{received} {VIA_NAME}"));
    head.minor = 1;
}

/// Sends a repeated `Content-Length` (several fields, or a list) once when every value is the
/// same (RFC 9110 §8.6 lets a recipient do so), and not at all when they differ (only in a
/// response to HEAD or a 204/304, whose framing ignores it: anything else with conflicting
/// lengths was refused before).
fn one_content_length(headers: &mut Headers) {
    let values = headers.tokens("content-length");
    if values.len() < 2 {
        return;
    }
    headers.remove("content-length");
    if let Some(first) = values.first().filter(|v| values.iter().all(|w| w == *v)) {
        headers.push("Content-Length", first.clone());
    }
}

/// The answer to `OPTIONS *` sent to the proxy (RFC 9112 §3.2.4: asterisk-form asks the server
/// itself): `200` with `Allow`, no body.
pub fn options_asterisk() -> Vec<u8> {
    let mut response = ResponseHead::new(200, "OK");
    response
        .headers
        .push("Date", httpdate::fmt_http_date(std::time::SystemTime::now()));
    response.headers.push("Allow", ALLOW);
    response.headers.push("Content-Length", "0");
    response.headers.push("Connection", "close");
    let mut out = Vec::with_capacity(256);
    response.encode(&mut out);
    out
}

/// A refusal as a complete response (see [`canned`]).
pub fn refusal((status, reason, message): &Refusal) -> Vec<u8> {
    canned(*status, reason, message, &[])
}
