//! Forwarding absolute-form HTTP requests (`GET http://host/path HTTP/1.1`) through the tunnel
//! with keep-alive on both sides: one tunnel per target, reused while the client's requests go
//! to the same host:port and the origin keeps its connection open, replaced when the target
//! changes.
//!
//! Per request: rewrite the head (origin-form target, `Host` from the URL, hop-by-hop fields
//! removed), send it (as the tunnel's first chunk when the tunnel is new), then at once copy the
//! request body to the origin and the response back to the client, each framed by its
//! Content-Length or chunked coding (forwarded unchanged) or, for a response, the origin's
//! close. Interim 1xx responses (100 Continue) pass through to HTTP/1.1 clients only (RFC 9110
//! §15.2). A reused tunnel found closed is retried once only for an idempotent request without
//! a body (RFC 9112 §9.3.1.1). Every read and write has the idle timeout as its deadline; a
//! tunnel given up is closed with its end-of-stream chunk ([`close`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use warren_common::proto::Encode;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_common::proto::address::Address;
use warren_common::proto::http::{BodyLength, RequestHead, ResponseHead};

use super::response::{canned, refusal};
use super::rules;
use super::wire::{copy_body, read_head, within, write_all, HttpError};
use crate::outbound::{Outbound, Outbounds};
use crate::session::{self, answer_and_close, Failure};

/// An open tunnel to the target of earlier requests on this client connection.
pub struct Upstream {
    address: Address,
    stream: Outbound,
    /// Bytes read from the origin and not yet forwarded.
    buf: BytesMut,
}

/// Longest a closed tunnel waits for the remote's end-of-stream chunk (see [`close`]).
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Ends the tunnel in `upstream`, if any, the way a finished exchange should: with its
/// end-of-stream chunk (a shutdown), then waiting (in the background, at most
/// [`CLOSE_LINGER`] or the idle timeout) for the remote's own, so that warren-remote logs
/// the connection as `end=closed` rather than as a tunnel cut without an end-of-stream chunk.
pub fn close(upstream: &mut Option<Upstream>, idle: Duration) {
    let Some(mut up) = upstream.take() else {
        return;
    };
    tokio::spawn(async move {
        let linger = async {
            up.stream.shutdown().await?;
            // Unread response bytes do not matter any more: read to the remote's end.
            let mut sink = [0u8; 4096];
            while up.stream.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        };
        if let Ok(Err(e)) = tokio::time::timeout(CLOSE_LINGER.min(idle), linger).await {
            tracing::debug!("tunnel of a finished HTTP exchange closed uncleanly: {e}");
        }
    });
}

/// An absolute-form request and its parsed target.
pub struct Request {
    pub head: RequestHead,
    pub address: Address,
    /// The URL's `host[:port]`, sent as `Host`.
    pub authority: String,
    /// The origin-form target (`/path?query`).
    pub path: String,
}

/// What of the client's request shapes the response forwarded to it.
struct Meta {
    /// The request method, for the log.
    method: String,
    /// A HEAD request: the response has no body whatever its fields say.
    is_head: bool,
    /// The client wants its connection kept open after this exchange.
    keep_alive: bool,
    /// The client's HTTP/1.x minor version (an HTTP/1.0 client is told `keep-alive` explicitly,
    /// and is never sent a 1xx: RFC 9110 §15.2).
    minor: u8,
}

/// Whether `method` is idempotent (RFC 9110 §9.2.2: the safe GET, HEAD, OPTIONS and TRACE, plus
/// PUT and DELETE; methods are case-sensitive, §9.1). Only such a request may be sent again on
/// a fresh tunnel after a reused one broke (RFC 9112 §9.3.1.1); any other one gets a 502.
fn idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

/// What the client connection does after a request.
pub enum Next {
    /// Read the client's next request.
    KeepAlive,
    /// Close the client connection.
    Close,
}

/// How one request/response exchange over a tunnel ended.
enum Exchange {
    /// The response was forwarded completely.
    Done {
        status: u16,
        keep_client: bool,
        keep_upstream: bool,
    },
    /// A reused tunnel ended before any byte of a response (the origin had closed it).
    Stale,
    /// Nothing was sent to the client yet: answer this status and close.
    Refuse(u16, &'static str, String),
    /// A failure after part of the response was forwarded, or the client went away: close.
    Broken,
}

/// Forwards one request and its response; says whether the client connection goes on.
pub async fn forward(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    upstream: &mut Option<Upstream>,
    outbounds: &Outbounds,
    request: Request,
) -> Next {
    let Request {
        head,
        address,
        authority,
        path,
    } = request;
    let body = match rules::check(&head) {
        Ok(body) => body,
        Err(refusal) => {
            tracing::debug!("HTTP request refused: {}", refusal.2);
            answer_and_close(client, &rules::refusal(&refusal)).await;
            return Next::Close;
        }
    };
    if let Some(answer) = rules::own_answer(&head) {
        tracing::info!(peer = %outbounds.peer(), method = %head.method, "HTTP request answered by the proxy (Max-Forwards: 0)");
        answer_and_close(client, &answer).await;
        return Next::Close;
    }
    let meta = Meta {
        method: head.method.clone(),
        is_head: head.method == "HEAD",
        keep_alive: head.keep_alive(),
        minor: head.minor,
    };
    let out = rules::to_origin(head, authority, path, body);
    let mut wire = Vec::with_capacity(1024);
    out.encode(&mut wire);
    let idle = outbounds.idle();

    if upstream.as_ref().is_some_and(|u| u.address != address) {
        close(upstream, idle);
    }
    // A reused tunnel may turn out closed by the origin; an idempotent request without a body
    // is then sent again once on a fresh tunnel (RFC 9112 §9.3.1.1: never a POST or PATCH,
    // which the origin may have acted on before it closed).
    let mut may_retry = body == BodyLength::Fixed(0) && idempotent(&meta.method);
    loop {
        let reused = upstream.is_some();
        match upstream {
            Some(up) => {
                let sent = within(idle, async {
                    up.stream.write_all(&wire).await?;
                    up.stream.flush().await?;
                    Ok(())
                })
                .await;
                if sent.is_err() {
                    close(upstream, idle);
                    if may_retry {
                        may_retry = false;
                        continue;
                    }
                    let message = "the connection to the origin broke";
                    answer_and_close(client, &canned(502, "Bad Gateway", message, &[])).await;
                    return Next::Close;
                }
            }
            // Boxed: the opening's states are freed once it is done, rather than sizing this
            // (possibly long-kept-alive) connection's task for its whole life.
            None => match Box::pin(session::open(client, buf, outbounds, &address, &wire)).await {
                Ok((_bound, stream)) => {
                    *upstream = Some(Upstream {
                        address: address.clone(),
                        stream,
                        buf: BytesMut::new(),
                    })
                }
                Err(Failure::ClientLeft) => return Next::Close,
                Err(Failure::Open(error)) => {
                    answer_and_close(client, &refusal(&error)).await;
                    return Next::Close;
                }
            },
        }
        let Some(up) = upstream.as_mut() else {
            return Next::Close;
        };
        let outcome = exchange(client, buf, up, body, &meta, idle).await;
        match outcome {
            Exchange::Done {
                status,
                keep_client,
                keep_upstream,
            } => {
                tracing::info!(peer = %outbounds.peer(), target = %address, method = %meta.method, status, reused, "HTTP request forwarded");
                if !keep_upstream {
                    close(upstream, idle);
                }
                return if keep_client { Next::KeepAlive } else { Next::Close };
            }
            Exchange::Stale if reused && may_retry => {
                close(upstream, idle);
                may_retry = false;
            }
            Exchange::Stale => {
                let message = "the origin closed the connection without answering";
                tracing::info!(peer = %outbounds.peer(), target = %address, method = %meta.method, "HTTP request failed: {message}");
                answer_and_close(client, &canned(502, "Bad Gateway", message, &[])).await;
                return Next::Close;
            }
            Exchange::Refuse(status, reason, message) => {
                tracing::info!(peer = %outbounds.peer(), target = %address, method = %meta.method, status, "HTTP request failed: {message}");
                answer_and_close(client, &canned(status, reason, &message, &[])).await;
                return Next::Close;
            }
            Exchange::Broken => {
                tracing::info!(peer = %outbounds.peer(), target = %address, method = %meta.method, "HTTP exchange broken off");
                return Next::Close;
            }
        }
    }
}

/// Copies the request body to the origin while forwarding the response to the client.
async fn exchange(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    up: &mut Upstream,
    body: BodyLength,
    meta: &Meta,
    idle: Duration,
) -> Exchange {
    let (mut client_read, mut client_write) = client.split();
    let (mut up_read, mut up_write) = tokio::io::split(&mut up.stream);
    // Whether a response byte went to the client: until then a bad request body is answered.
    let answered = AtomicBool::new(false);
    let request = copy_body(&mut client_read, buf, &mut up_write, body, idle);
    let response = forward_response(&mut up_read, &mut up.buf, &mut client_write, meta, idle, &answered);
    tokio::pin!(request, response);
    let mut request_done = false;
    loop {
        tokio::select! {
            // The request side first: a response that is already complete (it may have arrived
            // with the tunnel) must not be mistaken for one that came before the whole body.
            biased;
            sent = &mut request, if !request_done => match sent {
                Ok(_) => request_done = true,
                // RFC 9112 §7.1: a chunked body that does not parse is the client's error.
                Err(HttpError::Malformed(e)) if !answered.load(Ordering::Relaxed) => {
                    return Exchange::Refuse(400, "Bad Request", format!("malformed request body: {e}"));
                }
                Err(e) => {
                    tracing::debug!("request body not forwarded: {e}");
                    return Exchange::Broken;
                }
            },
            outcome = &mut response => return match outcome {
                // The origin answered before taking the whole body: neither connection is at a
                // message boundary any more.
                Exchange::Done { status, .. } if !request_done => Exchange::Done {
                    status,
                    keep_client: false,
                    keep_upstream: false,
                },
                other => other,
            },
        }
    }
}

/// Reads the origin's response (interim ones first) and forwards it to the client. Interim
/// responses go to an HTTP/1.1 client only: a proxy MUST NOT forward a 1xx to an HTTP/1.0
/// client (RFC 9110 §15.2), which gets the final response alone.
async fn forward_response<R, W>(
    up: &mut R,
    up_buf: &mut BytesMut,
    client: &mut W,
    meta: &Meta,
    idle: Duration,
    answered: &AtomicBool,
) -> Exchange
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut sent_any = false;
    // A response byte arrived (even an interim response not forwarded): the request reached
    // the origin, so the exchange is no longer stale and is never retried.
    let mut got_any = false;
    let mut head = loop {
        let head: ResponseHead = match within(idle, read_head(up, up_buf)).await {
            Ok(head) => head,
            Err(HttpError::Closed | HttpError::Io(_)) if up_buf.is_empty() && !got_any => return Exchange::Stale,
            Err(HttpError::TimedOut) if !sent_any => {
                return Exchange::Refuse(504, "Gateway Timeout", "the origin did not answer in time".into())
            }
            Err(e) if !sent_any => {
                return Exchange::Refuse(502, "Bad Gateway", format!("bad answer from the origin: {e}"))
            }
            Err(_) => return Exchange::Broken,
        };
        if head.status == 101 && !sent_any {
            return Exchange::Refuse(502, "Bad Gateway", "the origin switched protocols unasked".into());
        }
        got_any = true;
        if head.status >= 200 {
            break head;
        }
        if meta.minor == 0 {
            tracing::debug!(
                status = head.status,
                "interim response not forwarded to an HTTP/1.0 client"
            );
            continue;
        }
        let mut out = Vec::with_capacity(256);
        head.encode(&mut out);
        answered.store(true, Ordering::Relaxed);
        if within(idle, write_all(client, &out)).await.is_err() {
            return Exchange::Broken;
        }
        sent_any = true;
    };
    let framing = match head.body_length(meta.is_head) {
        Ok(framing) => framing,
        Err(e) if !sent_any => return Exchange::Refuse(502, "Bad Gateway", format!("bad answer from the origin: {e}")),
        Err(_) => return Exchange::Broken,
    };
    let keep_upstream = head.keep_alive() && framing != BodyLength::ToClose;
    let keep_client = meta.keep_alive && framing != BodyLength::ToClose;
    let status = head.status;
    rules::to_client(&mut head, keep_client, meta.minor);
    let mut out = Vec::with_capacity(1024);
    head.encode(&mut out);
    answered.store(true, Ordering::Relaxed);
    if within(idle, write_all(client, &out)).await.is_err() {
        return Exchange::Broken;
    }
    match copy_body(up, up_buf, client, framing, idle).await {
        Ok(_) => Exchange::Done {
            status,
            keep_client,
            keep_upstream,
        },
        Err(e) => {
            tracing::debug!("response body not forwarded: {e}");
            Exchange::Broken
        }
    }
}
