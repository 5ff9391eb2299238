//! Fuzz target `http`: the HTTP/1.x heads warren-local reads (`proto/http/`), what it derives
//! from them (body framing, request target, proxy credentials, keep-alive, the redacted target
//! it logs), and the chunked-body tracker fed the bytes in arbitrary pieces.

use crate::proto::chunked::ChunkedTracker;
use crate::proto::http::{basic_credentials, parse_authority, redact_userinfo, RequestHead, ResponseHead};
use crate::proto::DecodeError;

use super::{round_trip, selector};

/// Runs the decoder chosen by `data[0]` over the rest.
pub fn http(data: &[u8]) {
    let Some((which, bytes)) = selector(data) else {
        return;
    };
    match which % 4 {
        0 => request(bytes),
        1 => response(bytes),
        2 => chunked(bytes),
        _ => strings(bytes),
    }
}

fn request(bytes: &[u8]) {
    let Some(head) = round_trip::<RequestHead>(bytes, true) else {
        return;
    };
    let _ = head.body_length();
    let _ = head.keep_alive();
    let _ = head.parse_target();
    if let Some(value) = head.headers.get("proxy-authorization") {
        let _ = basic_credentials(value);
    }
    redaction(&head.target);
    let mut copy = head.headers.clone();
    copy.remove_hop_by_hop();
}

/// The authority part of an absolute-form or authority-form target (after `://`, before the
/// path, query or fragment).
fn authority_of(target: &str) -> Option<&str> {
    let rest = target
        .find("://")
        .map_or(target, |i| target.get(i + 3..).unwrap_or_default());
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest.get(..end)
}

fn response(bytes: &[u8]) {
    if let Some(head) = round_trip::<ResponseHead>(bytes, true) {
        let _ = head.body_length(false);
        let _ = head.body_length(true);
        let _ = head.keep_alive();
    }
}

/// Byte 0 of `bytes` seeds where the body is cut; the tracker must reach the same verdict
/// (bytes used, done or error) however the body arrives.
fn chunked(bytes: &[u8]) {
    let Some((seed, body)) = selector(bytes) else {
        return;
    };
    let whole = track(body, &mut std::iter::repeat(usize::MAX));
    let step = usize::from(seed % 16) + 1;
    let mut sizes = std::iter::successors(Some(step), |n| Some(n % 7 + step));
    assert_eq!(track(body, &mut sizes), whole, "pieces of {step}…");
    assert_eq!(track(body, &mut std::iter::repeat(1)), whole, "byte by byte");
}

/// Feeds `body` to a fresh tracker in pieces of the given sizes: the bytes it used up to the
/// end of the body (or the error), and whether it saw the end.
fn track(body: &[u8], sizes: &mut dyn Iterator<Item = usize>) -> (Result<usize, DecodeError>, bool) {
    let mut tracker = ChunkedTracker::new();
    let mut used = 0;
    let mut rest = body;
    while !rest.is_empty() && !tracker.is_done() {
        let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
        let (piece, after) = rest.split_at(n);
        match tracker.advance(piece) {
            Ok(k) => {
                assert!(k <= piece.len());
                assert!(k == piece.len() || tracker.is_done(), "stopped early without the end");
                used += k;
            }
            Err(e) => return (Err(e), false),
        }
        rest = after;
    }
    (Ok(used), tracker.is_done())
}

/// The string-level parsers on arbitrary text: authorities, credentials, redaction.
fn strings(bytes: &[u8]) {
    let _ = basic_credentials(bytes);
    let text = String::from_utf8_lossy(bytes);
    let _ = parse_authority(&text, None);
    let _ = parse_authority(&text, Some(80));
    redaction(&text);
}

/// What warren logs of a target: any userinfo in its authority replaced by `***`, the rest kept.
fn redaction(target: &str) {
    let shown = redact_userinfo(target);
    let Some(host) = authority_of(target).and_then(|a| a.rfind('@').and_then(|at| a.get(at..))) else {
        assert_eq!(shown, target, "nothing to redact");
        return;
    };
    assert_eq!(
        authority_of(&shown),
        Some(format!("***{host}").as_str()),
        "{target:?} shown as {shown:?}"
    );
}
