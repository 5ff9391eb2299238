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
//! The heads are tokenised by `httparse` (maintained, fuzzed, and ~4× faster than the parser it
//! replaced on the same 498-byte browser head: docs/HTTP.md); this module adds what it leaves to
//! its caller. A bare LF is accepted as a line end; up to [`MAX_EMPTY_LINES`] empty lines before
//! the start line are ignored (RFC 9112 §2.2). A head larger than [`MAX_HEAD`] bytes, more than
//! [`MAX_HEADERS`] fields, a non-ASCII request-target, a control byte in a field value, or a
//! version other than 1.0/1.1 is an error, never a longer wait. A request with obsolete line
//! folding or whitespace before a colon is an error (RFC 9112 §5.1, §5.2); a response with
//! either is repaired, as those sections allow a proxy to do.

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
/// The `BadField` name for a request line that does not end within [`MAX_HEAD`] bytes
/// (answered 414: RFC 9112 §3 asks a server to answer a target too long to parse so).
pub const FIELD_TARGET_SIZE: &str = "request-target size";

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

/// Where a head's field lines go while `httparse` reads them ([`MAX_HEADERS`] slots: one more
/// field is `TooManyHeaders`, answered 431).
type FieldSlots<'b> = [httparse::Header<'b>; MAX_HEADERS];

/// The part of `buf.chunk()` a head may occupy (for the byte slices [`super::decode_prefix`]
/// passes, the whole buffer) after the empty lines before the start line, and how many bytes
/// those empty lines took. RFC 9112 §2.2: up to [`MAX_EMPTY_LINES`] are ignored, more is an
/// error rather than a wait for a head that may never come.
fn head_window(chunk: &[u8]) -> Result<(usize, &[u8]), DecodeError> {
    let mut skipped = 0;
    for _ in 0..=MAX_EMPTY_LINES {
        let rest = chunk.get(skipped..).unwrap_or_default();
        skipped += match rest {
            [b'\r', b'\n', ..] => 2,
            [b'\n', ..] => 1,
            [b'\r'] | [] => return Err(DecodeError::Incomplete),
            _ => {
                let window = rest.len().min(MAX_HEAD);
                return Ok((skipped, rest.get(..window).unwrap_or_default()));
            }
        };
    }
    Err(DecodeError::BadField("empty lines before the start line"))
}

/// What an `httparse` verdict on `window` means here: the head's length, more bytes needed, or
/// the field the error is in.
fn head_length(verdict: httparse::Result<usize>, window: &[u8]) -> Result<usize, DecodeError> {
    match verdict {
        Ok(httparse::Status::Complete(used)) => Ok(used),
        Ok(httparse::Status::Partial) if window.len() >= MAX_HEAD => Err(DecodeError::BadField(FIELD_HEAD_SIZE)),
        Ok(httparse::Status::Partial) => Err(DecodeError::Incomplete),
        Err(e) => Err(DecodeError::BadField(match e {
            httparse::Error::HeaderName => "field-name",
            httparse::Error::HeaderValue => "field-value",
            httparse::Error::NewLine => "line end",
            httparse::Error::Status => "status-code",
            httparse::Error::Token => "request-line",
            httparse::Error::TooManyHeaders => FIELD_HEAD_SIZE,
            httparse::Error::Version => "HTTP-version",
        })),
    }
}

fn minor_version(version: Option<u8>) -> Result<u8, DecodeError> {
    match version {
        Some(minor @ (0 | 1)) => Ok(minor),
        _ => Err(DecodeError::BadField("HTTP-version")),
    }
}

/// Owns the fields `httparse` found. In a response, an obs-fold `httparse` let through (see
/// [`ResponseHead`]'s decoder) is replaced by spaces, as RFC 9112 §5.2 allows a proxy to do.
fn own_fields(fields: &[httparse::Header<'_>]) -> Result<Headers, DecodeError> {
    let mut headers = Headers::default();
    for field in fields {
        let value: Vec<u8> = field
            .value
            .trim_ascii()
            .iter()
            .map(|b| if matches!(b, b'\r' | b'\n') { b' ' } else { *b })
            .collect();
        // httparse accepts any byte but CR, LF and DEL-less controls; RFC 9110 §5.5 wants
        // none of NUL, CR, LF, and warren refuses every control but HTAB.
        if value
            .iter()
            .any(|b| (b.is_ascii_control() && *b != b'\t') || *b == 0x7f)
        {
            return Err(DecodeError::BadField("field-value"));
        }
        headers.push(field.name, value);
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

impl Decode for RequestHead {
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        let (skipped, window) = head_window(buf.chunk())?;
        let mut slots: FieldSlots<'_> = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut slots);
        let verdict = request.parse(window);
        if window.len() >= MAX_HEAD && !window.contains(&b'\n') {
            return Err(DecodeError::BadField(FIELD_TARGET_SIZE));
        }
        let used = head_length(verdict, window)?;
        let (Some(method), Some(target)) = (request.method, request.path) else {
            return Err(DecodeError::BadField("request-line"));
        };
        // httparse lets obs-text (bytes over 0x7f) into a target; a URI has none (RFC 3986 §2).
        if !target.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DecodeError::BadField("request-target"));
        }
        let head = RequestHead {
            method: method.to_owned(),
            target: target.to_owned(),
            minor: minor_version(request.version)?,
            headers: own_fields(request.headers)?,
        };
        buf.advance(skipped + used);
        Ok(head)
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
    /// coding list that does not end in a single chunked, or conflicting lengths are errors
    /// (answered 400).
    pub fn body_length(&self) -> Result<BodyLength, DecodeError> {
        let codings = self.headers.tokens("transfer-encoding");
        if !codings.is_empty() {
            if self.headers.get("content-length").is_some() {
                return Err(DecodeError::BadField("Content-Length with Transfer-Encoding"));
            }
            // RFC 9112 §6.1: chunked is applied once, and last.
            let chunked = codings.iter().filter(|c| *c == "chunked").count();
            return match codings.last().map(String::as_str) {
                Some("chunked") if chunked == 1 => Ok(BodyLength::Chunked),
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
    /// Decodes a response head, repairing what RFC 9112 lets a proxy repair rather than refuse:
    /// whitespace between a field name and its colon is removed (§5.1: a proxy MUST remove it
    /// before forwarding) and obs-fold becomes spaces (§5.2).
    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        let (skipped, window) = head_window(buf.chunk())?;
        let mut slots: FieldSlots<'_> = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut slots);
        let verdict = httparse::ParserConfig::default()
            .allow_spaces_after_header_name_in_responses(true)
            .allow_obsolete_multiline_headers_in_responses(true)
            .parse_response(&mut response, window);
        let used = head_length(verdict, window)?;
        let status = response.code.ok_or(DecodeError::BadField("status-code"))?;
        // RFC 9110 §15: three digits, the first 1 to 5; httparse reads any three digits.
        if !(100..=599).contains(&status) {
            return Err(DecodeError::BadField("status-code"));
        }
        let head = ResponseHead {
            minor: minor_version(response.version)?,
            status,
            reason: response.reason.unwrap_or_default().to_owned(),
            headers: own_fields(response.headers)?,
        };
        buf.advance(skipped + used);
        Ok(head)
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
            // RFC 9112 §6.3: chunked last means chunked framing; a coding list without it is
            // read to the close; chunked anywhere else, or twice, is an error (502).
            let chunked = codings.iter().filter(|c| *c == "chunked").count();
            return match (codings.last().map(String::as_str), chunked) {
                (Some("chunked"), 1) => Ok(BodyLength::Chunked),
                (_, 0) => Ok(BodyLength::ToClose),
                _ => Err(DecodeError::BadField("Transfer-Encoding")),
            };
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
