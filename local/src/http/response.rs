//! The answers warren-local writes itself to an HTTP client (every one closes the connection),
//! and the one table from an outbound that did not open to its status:
//!
//! ```text
//! 403 Forbidden          blocked by local.routes, or the remote's ACL denies the target
//! 502 Bad Gateway        refused, unreachable, no such name, the tunnel to the remote failed
//! 504 Gateway Timeout    the target (remote.connect_timeout) or the remote (local.connect_timeout)
//!                        did not answer in time
//! ```

use warren_common::proto::http::ResponseHead;
use warren_common::proto::status::Status;
use warren_common::proto::Encode;

use crate::outbound::OpenError;

/// A complete response warren-local makes itself: `status reason`, `Date` (RFC 9110 §6.6.1: a
/// server with a clock sends it), a one-line plain-text body, and `Connection: close`, plus
/// `extra` header fields.
pub fn canned(status: u16, reason: &str, message: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{status} {reason}: {message}\n");
    let mut head = ResponseHead::new(status, reason);
    head.headers
        .push("Date", httpdate::fmt_http_date(std::time::SystemTime::now()));
    head.headers.push("Content-Type", "text/plain; charset=utf-8");
    head.headers.push("Content-Length", body.len().to_string());
    head.headers.push("Connection", "close");
    for (name, value) in extra {
        head.headers.push(name, *value);
    }
    let mut out = Vec::with_capacity(256);
    head.encode(&mut out);
    out.extend_from_slice(body.as_bytes());
    out
}

/// The answer to a request whose outbound did not open: status by the table above, and a
/// one-line explanation.
pub fn refusal(error: &OpenError) -> Vec<u8> {
    let (status, reason) = failure_status(error);
    canned(status, reason, &failure_message(error), &[])
}

/// The status for an outbound that did not open: the outcome's HTTP column in
/// `warren_common::proto::status`, except that the remote itself not answering in time
/// (local.connect_timeout) is also a gateway timeout.
fn failure_status(error: &OpenError) -> (u16, &'static str) {
    if error.is_timeout() {
        return Status::TtlExpired.http();
    }
    error.status().http()
}

/// The one-line explanation of an outbound failure for a response body.
fn failure_message(error: &OpenError) -> String {
    match error {
        OpenError::Blocked => "blocked by warren-local's routing rules (local.routes)".to_owned(),
        e if e.is_timeout() => "warren-remote did not answer in time (see warren-local's log)".to_owned(),
        e if e.is_about_target() => e.status().describe().to_owned(),
        _ => "the tunnel to warren-remote failed (see warren-local's log)".to_owned(),
    }
}
