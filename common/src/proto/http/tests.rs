//! Unit and property tests for `proto::http` (kept apart so the codec stays short).

use super::*;
use crate::proto::address::Address;
use crate::proto::{decode_exact, decode_prefix};
use proptest::prelude::*;

fn request(text: &str) -> Result<RequestHead, DecodeError> {
    decode_exact(text.as_bytes())
}

#[test]
fn absolute_form_request() {
    let head = request(
        "GET http://Example.com:8080/a/b?c=1 HTTP/1.1\r\nHost: example.com:8080\r\nProxy-Connection: keep-alive\r\n\
         Connection: X-Private\r\nX-Private: 1\r\nAccept:  */* \r\n\r\n",
    )
    .unwrap();
    assert_eq!(head.method, "GET");
    assert_eq!(head.minor, 1);
    assert_eq!(head.headers.get("accept"), Some(&b"*/*"[..]));
    assert_eq!(
        head.parse_target(),
        Ok(Target::Forward {
            address: Address::domain("Example.com", 8080).unwrap(),
            authority: "Example.com:8080".into(),
            path: "/a/b?c=1".into(),
        })
    );
    let mut headers = head.headers.clone();
    headers.remove_hop_by_hop();
    let names: Vec<&str> = headers.0.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["Host", "Accept"]);
    assert!(head.keep_alive());
    assert_eq!(head.body_length(), Ok(BodyLength::Fixed(0)));
}

#[test]
fn targets() {
    let target = |t: &str| {
        RequestHead {
            method: if t.contains("://") || t.starts_with('/') {
                "GET"
            } else {
                "CONNECT"
            }
            .into(),
            target: t.into(),
            minor: 1,
            headers: Headers::default(),
        }
        .parse_target()
    };
    assert_eq!(
        target("127.0.0.1:443"),
        Ok(Target::Tunnel(Address::Ip("127.0.0.1:443".parse().unwrap())))
    );
    assert_eq!(
        target("[::1]:22"),
        Ok(Target::Tunnel(Address::Ip("[::1]:22".parse().unwrap())))
    );
    assert_eq!(
        target("localhost:1"),
        Ok(Target::Tunnel(Address::domain("localhost", 1).unwrap()))
    );
    assert_eq!(target("/proxy.pac"), Ok(Target::Origin("/proxy.pac".into())));
    let Ok(Target::Forward { address, path, .. }) = target("http://[::1]?q") else {
        panic!("IPv6 absolute-form")
    };
    assert_eq!(
        (address, path.as_str()),
        (Address::Ip("[::1]:80".parse().unwrap()), "/?q")
    );
    for bad in [
        "example.com",       // CONNECT needs a port
        "example.com:",      // empty port
        "example.com:99999", // port out of range
        "example.com:0",     // port 0
        "[::1:443",          // unclosed bracket
        "[x]:443",           // not an IPv6 address
        "http://u@host/",    // userinfo
        "https://host/",     // not http
        "*",                 // asterisk-form
        "http://ho st/",     // space in host
        "http:///path",      // empty host
        "http://a,b/",       // not a host character
    ] {
        assert!(target(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn malformed_heads() {
    assert_eq!(request("GET / HTTP/1.1\r\nHost: x\r\n"), Err(DecodeError::Incomplete));
    assert_eq!(
        request("GET / HTTP/2.0\r\n\r\n"),
        Err(DecodeError::BadField("HTTP-version"))
    );
    // Two spaces: the version is then " HTTP/1.1" (RFC 9112 §3 lets a server refuse it).
    assert_eq!(
        request("GET /  HTTP/1.1\r\n\r\n"),
        Err(DecodeError::BadField("HTTP-version"))
    );
    assert_eq!(
        request("G(T / HTTP/1.1\r\n\r\n"),
        Err(DecodeError::BadField("request-line"))
    );
    assert_eq!(
        request("GET /é HTTP/1.1\r\n\r\n"),
        Err(DecodeError::BadField("request-target"))
    );
    assert_eq!(
        request("GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
        Err(DecodeError::BadField("field-name"))
    );
    assert_eq!(
        request("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"),
        Err(DecodeError::BadField("field-name"))
    );
    assert_eq!(
        request("GET / HTTP/1.1\r\nNoColon\r\n\r\n"),
        Err(DecodeError::BadField("field-name"))
    );
    assert_eq!(
        request("GET / HTTP/1.1\r\nA: b\x01\r\n\r\n"),
        Err(DecodeError::BadField("field-value"))
    );
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    assert_eq!(request(&huge), Err(DecodeError::BadField(FIELD_HEAD_SIZE)));
    // Still incomplete, but already over the limit: an error, not a longer wait.
    assert_eq!(
        decode_prefix::<RequestHead>(&huge.as_bytes()[..MAX_HEAD + 10]).map(|_| ()),
        Err(DecodeError::BadField(FIELD_HEAD_SIZE))
    );
    let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(MAX_HEADERS + 1));
    assert_eq!(request(&many), Err(DecodeError::BadField(FIELD_HEAD_SIZE)));
    // Empty lines before the request line are skipped (RFC 9112 §2.2); bare LF is accepted.
    assert_eq!(
        request("\r\nGET / HTTP/1.0\nA: b\n\n").unwrap().headers.get("a"),
        Some(&b"b"[..])
    );
    let empties = |n: usize| format!("{}GET / HTTP/1.1\r\n\r\n", "\r\n".repeat(n));
    assert!(request(&empties(MAX_EMPTY_LINES)).is_ok());
    assert_eq!(
        request(&empties(MAX_EMPTY_LINES + 1)),
        Err(DecodeError::BadField("empty lines before the start line"))
    );
    assert_eq!(request("\r\n\r"), Err(DecodeError::Incomplete));
}

#[test]
fn response_heads_are_repaired_where_rfc_9112_allows() {
    let response = |text: &str| decode_exact::<ResponseHead>(text.as_bytes());
    // §5.1: whitespace before the colon is removed; §5.2: obs-fold becomes spaces.
    let head = response("HTTP/1.1 200 OK\r\nX-A : one\r\nX-B: two\r\n three\r\n\r\n").unwrap();
    assert_eq!(head.headers.get("x-a"), Some(&b"one"[..]));
    assert_eq!(head.headers.get("x-b"), Some(&b"two   three"[..]));
    for bad in [
        "HTTP/1.1 099 x\r\n\r\n",
        "HTTP/1.1 600 x\r\n\r\n",
        "HTTP/1.1 2000 x\r\n\r\n",
    ] {
        assert_eq!(response(bad), Err(DecodeError::BadField("status-code")), "{bad:?}");
    }
    assert_eq!(
        response("HTTP/1.1 200 OK\r\nA: b\x00c\r\n\r\n"),
        Err(DecodeError::BadField("field-value"))
    );
}

#[test]
fn request_framing() {
    let framing = |fields: &str| {
        request(&format!("POST http://h/ HTTP/1.1\r\n{fields}\r\n"))
            .unwrap()
            .body_length()
    };
    assert_eq!(framing("Content-Length: 5\r\n"), Ok(BodyLength::Fixed(5)));
    assert_eq!(
        framing("Content-Length: 5\r\nContent-Length: 5\r\n"),
        Ok(BodyLength::Fixed(5))
    );
    assert_eq!(framing("Transfer-Encoding: gzip, chunked\r\n"), Ok(BodyLength::Chunked));
    assert!(framing("Content-Length: 5\r\nContent-Length: 6\r\n").is_err());
    assert!(framing("Content-Length: -1\r\n").is_err());
    assert!(framing("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n").is_err());
    assert!(framing("Transfer-Encoding: gzip\r\n").is_err());
}

#[test]
fn responses() {
    let head: ResponseHead = decode_exact(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n").unwrap();
    assert_eq!((head.status, head.reason.as_str()), (200, "OK"));
    assert_eq!(head.body_length(false), Ok(BodyLength::Fixed(3)));
    assert_eq!(head.body_length(true), Ok(BodyLength::Fixed(0)));
    let framing = |text: &str| {
        decode_exact::<ResponseHead>(text.as_bytes())
            .unwrap()
            .body_length(false)
    };
    assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n"), Ok(BodyLength::Fixed(0)));
    assert_eq!(
        framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
        Ok(BodyLength::Fixed(0))
    );
    assert_eq!(framing("HTTP/1.1 100 Continue\r\n\r\n"), Ok(BodyLength::Fixed(0)));
    assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), Ok(BodyLength::ToClose));
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Ok(BodyLength::Chunked)
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
        Ok(BodyLength::ToClose)
    );
    let head: ResponseHead = decode_exact(b"HTTP/1.0 200\r\n\r\n").unwrap();
    assert_eq!((head.minor, head.reason.as_str(), head.keep_alive()), (0, "", false));
    assert!(decode_exact::<ResponseHead>(b"HTTP/1.1 20 OK\r\n\r\n").is_err());
    assert!(decode_exact::<ResponseHead>(b"HTTP/1.1 099 OK\r\n\r\n").is_err());
    let mut out = Vec::new();
    let mut reply = ResponseHead::new(407, "Proxy Authentication Required");
    reply.headers.push("Proxy-Authenticate", "Basic realm=\"warren\"");
    reply.encode(&mut out);
    assert_eq!(
        out,
        b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"warren\"\r\n\r\n"
    );
}

#[test]
fn basic_auth() {
    // RFC 7617 §2's example: Aladdin / open sesame.
    assert_eq!(
        basic_credentials(b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        Some((b"Aladdin".to_vec(), b"open sesame".to_vec()))
    );
    assert_eq!(
        basic_credentials(b"basic YTpiOmM="),
        Some((b"a".to_vec(), b"b:c".to_vec()))
    );
    assert_eq!(basic_credentials(b"Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ=="), None);
    assert_eq!(basic_credentials(b"Basic !!!"), None);
    assert_eq!(basic_credentials(b"Basic YWJj"), None); // no colon
}

proptest! {
    #[test]
    fn request_heads_round_trip(method in "[A-Z]{1,10}", path in "/[a-zA-Z0-9/?=&.-]{0,50}",
                                fields in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,20}", "[ -~]{0,40}"), 0..10)) {
        let mut head = RequestHead { method, target: path, minor: 1, headers: Headers::default() };
        for (name, value) in fields {
            head.headers.push(&name, value.trim());
        }
        let mut buf = Vec::new();
        head.encode(&mut buf);
        prop_assert_eq!(decode_exact::<RequestHead>(&buf), Ok(head));
        for cut in 0..buf.len() {
            prop_assert_eq!(decode_prefix::<RequestHead>(&buf[..cut]).map(|_| ()), Err(DecodeError::Incomplete));
        }
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        if let Ok((head, _)) = decode_prefix::<RequestHead>(&bytes) {
            let _ = head.parse_target();
            let _ = head.body_length();
        }
        if let Ok((head, _)) = decode_prefix::<ResponseHead>(&bytes) {
            let _ = head.body_length(false);
        }
        let _ = basic_credentials(&bytes);
    }

    #[test]
    fn authorities_never_panic(text in "[\\[\\]:a-z0-9.@%]{0,40}") {
        let _ = parse_authority(&text, Some(80));
    }
}

/// RFC 9112 §2.2: a few empty lines before the request line are ignored; more are refused.
#[test]
fn leading_empty_lines_are_bounded() {
    let head = request("\r\n\nGET http://a/ HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(head.method, "GET");
    let most = "\r\n".repeat(MAX_EMPTY_LINES);
    assert!(request(&format!("{most}GET http://a/ HTTP/1.1\r\n\r\n")).is_ok());
    let too_many = "\r\n".repeat(MAX_EMPTY_LINES + 1);
    assert_eq!(
        request(&format!("{too_many}GET http://a/ HTTP/1.1\r\n\r\n")),
        Err(DecodeError::BadField("empty lines before the start line"))
    );
}
