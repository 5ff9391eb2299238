//! HTTP/1.x message heads (RFC 9112) as warren-local's HTTP proxy reads and writes them: the
//! request head a client sends, the response head an origin answers, and message body framing;
//! request targets and `Proxy-Authorization: Basic` credentials are in [`target`] (re-exported
//! here). Bodies are never parsed here except for chunked framing (see [`super::chunked`]).
//!
//! ```text
//! request head    METHOD SP request-target SP HTTP/1.x CRLF
//!                 *( field-name ":" OWS field-value OWS CRLF )
//!                 CRLF
//! response head   HTTP/1.x SP 3DIGIT SP [reason-phrase] CRLF  *( field-line CRLF )  CRLF
//!
//! request-target  CONNECT  host:port                    (authority-form)
//!                 GET      http://host[:port]/path?q    (absolute-form, port 80 by default)
//!                 GET      /path?q                      (origin-form: not a proxy request)
//! ```
//!
//! A bare LF is accepted as a line end; up to [`MAX_EMPTY_LINES`] empty lines before the start
//! line are ignored (RFC 9112 §2.2). A head larger than [`MAX_HEAD`] bytes, more than
//! [`MAX_HEADERS`] fields, obsolete line folding, whitespace before a colon, or a version other
//! than 1.0/1.1 is an error, never a longer wait.

pub mod target;

use bytes::{Buf, BufMut};

pub use target::{basic_credentials, parse_authority, redact_userinfo, Target};

use super::{Decode, DecodeError, Encode};

/// Largest head (request or status line, fields, blank line) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one head.
pub const MAX_HEADERS: usize = 128;
/// Most empty lines ignored before a start line (RFC 9112 §2.2 asks for at least one); more
/// is an error (answered 400) rather than a wait for a head that may never come.
pub const MAX_EMPTY_LINES: usize = 8;
/// The `BadField` name for a head over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields (answered
/// with 431 rather than 400).
pub const FIELD_HEAD_SIZE: &str = "header section size";

/// Hop-by-hop fields a proxy removes before forwarding (besides those `Connection` names).
/// `Transfer-Encoding` stays: warren forwards bodies with their framing unchanged.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// One header field; the value keeps its bytes (obs-text is legal in values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// Header fields in their original order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// Values of every field called `name` (case-insensitive), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// The comma-separated tokens of every `name` field, lower-cased.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.get_all(name)
            .flat_map(|v| v.split(|b| *b == b','))
            .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name).iter().any(|t| t == token)
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    pub fn push(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.0.push(Header {
            name: name.to_owned(),
            value: value.into(),
        });
    }

    /// Removes the hop-by-hop fields: [`HOP_BY_HOP`] and every field `Connection` names.
    pub fn remove_hop_by_hop(&mut self) {
        let named = self.tokens("connection");
        self.0.retain(|h| {
            let name = h.name.to_ascii_lowercase();
            !HOP_BY_HOP.contains(&name.as_str()) && !named.contains(&name)
        });
    }

    fn encode(&self, buf: &mut impl BufMut) {
        for h in &self.0 {
            buf.put_slice(h.name.as_bytes());
            buf.put_slice(b": ");
            buf.put_slice(&h.value);
            buf.put_slice(b"\r\n");
        }
        buf.put_slice(b"\r\n");
    }
}

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// Exactly this many bytes (0: no body).
    Fixed(u64),
    /// Chunked transfer coding, forwarded with its framing.
    Chunked,
    /// Until the sender closes (responses only).
    ToClose,
}

/// Splits the head off the front of `buf`: returns its lines (without line ends) and consumes
/// the head and its blank line. The head is looked for in `buf.chunk()`, which is the whole
/// buffer for the byte slices [`super::decode_prefix`] passes.
fn take_lines(buf: &mut impl Buf) -> Result<Vec<Vec<u8>>, DecodeError> {
    let chunk = buf.chunk();
    let window = chunk.len().min(MAX_HEAD);
    let bytes = &chunk[..window];
    let mut lines = Vec::new();
    let mut start = 0;
    let mut end = None;
    let mut empty = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b != b'\n' {
            continue;
        }
        let mut line = &bytes[start..i];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        start = i + 1;
        if line.is_empty() {
            if lines.is_empty() {
                // RFC 9112 §2.2: ignore empty lines before the start line, a few of them.
                empty += 1;
                if empty > MAX_EMPTY_LINES {
                    return Err(DecodeError::BadField("empty lines before the start line"));
                }
                continue;
            }
            end = Some(start);
            break;
        }
        if lines.len() > MAX_HEADERS {
            return Err(DecodeError::BadField(FIELD_HEAD_SIZE));
        }
        lines.push(line.to_vec());
    }
    match end {
        Some(used) => {
            buf.advance(used);
            Ok(lines)
        }
        None if window >= MAX_HEAD => Err(DecodeError::BadField(FIELD_HEAD_SIZE)),
        None => Err(DecodeError::Incomplete),
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_version(text: &[u8]) -> Result<u8, DecodeError> {
    match text {
        b"HTTP/1.1" => Ok(1),
        b"HTTP/1.0" => Ok(0),
        _ => Err(DecodeError::BadField("HTTP-version")),
    }
}

fn parse_headers(lines: &[Vec<u8>]) -> Result<Headers, DecodeError> {
    let mut headers = Headers::default();
    for line in lines {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(DecodeError::BadField("obsolete line folding"));
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or(DecodeError::BadField("field-line"))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(DecodeError::BadField("field-name"));
        }
        let value = value.trim_ascii();
        if value
            .iter()
            .any(|b| (b.is_ascii_control() && *b != b'\t') || *b == 0x7f)
        {
            return Err(DecodeError::BadField("field-value"));
        }
        headers.push(&String::from_utf8_lossy(name), value);
    }
    Ok(headers)
}

/// A request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Headers,
}

/// Takes one head off the front of `buf` and builds a message from its start line and its
/// field lines (the builder parses the fields last, so start-line errors are reported first).
fn decode_head<T>(
    buf: &mut impl Buf,
    build: impl FnOnce(&[u8], &[Vec<u8>]) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let lines = take_lines(buf)?;
    let (start, fields) = lines.split_first().ok_or(DecodeError::Incomplete)?;
    build(start, fields)
}

impl Decode for RequestHead {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        decode_head(buf, |start, fields| {
            let parts: Vec<&[u8]> = start.split(|b| *b == b' ').collect();
            let [method, target, version] = parts[..] else {
                return Err(DecodeError::BadField("request-line"));
            };
            if method.is_empty() || !method.iter().all(|b| is_tchar(*b)) {
                return Err(DecodeError::BadField("method"));
            }
            if target.is_empty() || target.iter().any(|b| !b.is_ascii_graphic()) {
                return Err(DecodeError::BadField("request-target"));
            }
            Ok(RequestHead {
                method: String::from_utf8_lossy(method).into_owned(),
                target: String::from_utf8_lossy(target).into_owned(),
                minor: parse_version(version)?,
                headers: parse_headers(fields)?,
            })
        })
    }
}

/// `METHOD SP request-target SP HTTP/1.x CRLF`, the fields, and the blank line.
impl Encode for RequestHead {
    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(format!("{} {} HTTP/1.{}\r\n", self.method, self.target, self.minor).as_bytes());
        self.headers.encode(buf);
    }
}

/// `HTTP/1.x SP status SP reason CRLF`, the fields, and the blank line.
impl Encode for ResponseHead {
    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(format!("HTTP/1.{} {:03} {}\r\n", self.minor, self.status, self.reason).as_bytes());
        self.headers.encode(buf);
    }
}

impl RequestHead {
    /// The request body's framing. Both `Transfer-Encoding` and `Content-Length`, a transfer
    /// coding that does not end in chunked, or conflicting lengths are errors (answered 400).
    pub fn body_length(&self) -> Result<BodyLength, DecodeError> {
        let codings = self.headers.tokens("transfer-encoding");
        if !codings.is_empty() {
            if self.headers.get("content-length").is_some() {
                return Err(DecodeError::BadField("Content-Length with Transfer-Encoding"));
            }
            return match codings.last().map(String::as_str) {
                Some("chunked") => Ok(BodyLength::Chunked),
                _ => Err(DecodeError::BadField("Transfer-Encoding")),
            };
        }
        Ok(content_length(&self.headers)?.map_or(BodyLength::Fixed(0), BodyLength::Fixed))
    }

    /// Whether the client wants the connection kept open after this exchange.
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.minor, &self.headers)
    }
}

fn keep_alive(minor: u8, headers: &Headers) -> bool {
    if headers.has_token("connection", "close") {
        return false;
    }
    minor >= 1 || headers.has_token("connection", "keep-alive")
}

/// `Content-Length`: every value (repeated fields or comma lists) must be the same number.
fn content_length(headers: &Headers) -> Result<Option<u64>, DecodeError> {
    let mut length = None;
    for value in headers.tokens("content-length") {
        let n = match value.bytes().all(|b| b.is_ascii_digit()) {
            true => value.parse::<u64>().ok(),
            false => None,
        };
        match (n, length) {
            (Some(n), None) => length = Some(n),
            (Some(n), Some(prev)) if n == prev => {}
            _ => return Err(DecodeError::BadField("Content-Length")),
        }
    }
    Ok(length)
}

/// A response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub minor: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
}

impl Decode for ResponseHead {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        decode_head(buf, |start, fields| {
            let mut parts = start.splitn(3, |b| *b == b' ');
            let minor = parse_version(parts.next().unwrap_or_default())?;
            let status = parts.next().unwrap_or_default();
            if status.len() != 3 || !status.iter().all(u8::is_ascii_digit) {
                return Err(DecodeError::BadField("status-code"));
            }
            let status = status.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
            if status < 100 {
                return Err(DecodeError::BadField("status-code"));
            }
            Ok(ResponseHead {
                minor,
                status,
                reason: String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned(),
                headers: parse_headers(fields)?,
            })
        })
    }
}

impl ResponseHead {
    /// A response with no fields yet.
    pub fn new(status: u16, reason: &str) -> ResponseHead {
        ResponseHead {
            minor: 1,
            status,
            reason: reason.to_owned(),
            headers: Headers::default(),
        }
    }

    /// The body's framing, given whether the request was HEAD (RFC 9112 §6.3).
    pub fn body_length(&self, head_request: bool) -> Result<BodyLength, DecodeError> {
        if head_request || self.status < 200 || self.status == 204 || self.status == 304 {
            return Ok(BodyLength::Fixed(0));
        }
        let codings = self.headers.tokens("transfer-encoding");
        if !codings.is_empty() {
            return Ok(match codings.last().map(String::as_str) {
                Some("chunked") => BodyLength::Chunked,
                _ => BodyLength::ToClose,
            });
        }
        Ok(content_length(&self.headers)?.map_or(BodyLength::ToClose, BodyLength::Fixed))
    }

    /// Whether the origin will keep the connection open after this response.
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.minor, &self.headers)
    }
}

#[cfg(test)]
mod tests;
