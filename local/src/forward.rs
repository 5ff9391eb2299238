//! Forwarding absolute-form HTTP requests (`GET http://host/path HTTP/1.1`) through the tunnel
//! with keep-alive on both sides: one tunnel per target, reused while the client's requests go
//! to the same host:port and the origin keeps its connection open, replaced when the target
//! changes.
//!
//! Per request: rewrite the head (origin-form target, `Host` from the URL, hop-by-hop fields
//! removed), send it (as the tunnel's first chunk when the tunnel is new), then at once copy the
//! request body to the origin and the response back to the client, each framed by its
//! Content-Length or chunked coding (forwarded unchanged) or, for a response, the origin's
//! close. Interim 1xx responses (100 Continue) pass through. Every read and write has the idle
//! timeout as its deadline.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_common::config::LocalConfig;
use warren_common::proto::address::Address;
use warren_common::proto::chunked::ChunkedTracker;
use warren_common::proto::http::{BodyLength, Header, RequestHead, ResponseHead};

use crate::connect::{open_watching, OpenFailure};
use crate::http::{answer_and_close, canned, failure_message, failure_status, read_head, within, HttpError, READ_SIZE};
use crate::outbound::Outbound;

/// An open tunnel to the target of earlier requests on this client connection.
pub struct Upstream {
    address: Address,
    stream: Outbound,
    /// Bytes read from the origin and not yet forwarded.
    buf: BytesMut,
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
    config: &LocalConfig,
    peer: &SocketAddr,
    request: Request,
) -> Next {
    let Request {
        head,
        address,
        authority,
        path,
    } = request;
    let body = match head.body_length() {
        Ok(body) => body,
        Err(e) => {
            tracing::debug!(%peer, "HTTP request refused: {e}");
            answer_and_close(client, &canned(400, "Bad Request", &e.to_string(), &[])).await;
            return Next::Close;
        }
    };
    let (keep_client, minor, is_head, method) = (
        head.keep_alive(),
        head.minor,
        head.method == "HEAD",
        head.method.clone(),
    );
    let mut out = head;
    out.target = path;
    out.headers.remove_hop_by_hop();
    out.headers.remove("host");
    out.headers.0.insert(
        0,
        Header {
            name: "Host".into(),
            value: authority.into_bytes(),
        },
    );
    let mut wire = Vec::with_capacity(1024);
    out.encode(&mut wire);
    let idle = config.timeouts.idle;

    if upstream.as_ref().is_some_and(|u| u.address != address) {
        *upstream = None;
    }
    // A reused tunnel may turn out closed by the origin; a request without a body is then
    // sent again once on a fresh tunnel.
    let mut may_retry = body == BodyLength::Fixed(0);
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
                    *upstream = None;
                    if may_retry {
                        may_retry = false;
                        continue;
                    }
                    let message = "the connection to the origin broke";
                    answer_and_close(client, &canned(502, "Bad Gateway", message, &[])).await;
                    return Next::Close;
                }
            }
            None => match open_watching(client, buf, config, peer, &address, &wire).await {
                Ok((_bound, stream)) => {
                    *upstream = Some(Upstream {
                        address: address.clone(),
                        stream,
                        buf: BytesMut::new(),
                    })
                }
                Err(OpenFailure::ClientLeft) => return Next::Close,
                Err(failure) => {
                    let (status, reason) = failure_status(&failure);
                    answer_and_close(client, &canned(status, reason, &failure_message(&failure), &[])).await;
                    return Next::Close;
                }
            },
        }
        let Some(up) = upstream.as_mut() else {
            return Next::Close;
        };
        let outcome = exchange(client, buf, up, body, is_head, keep_client, minor, idle).await;
        match outcome {
            Exchange::Done {
                status,
                keep_client,
                keep_upstream,
            } => {
                tracing::info!(%peer, target = %address, %method, status, reused, "HTTP request forwarded");
                if !keep_upstream {
                    *upstream = None;
                }
                return if keep_client { Next::KeepAlive } else { Next::Close };
            }
            Exchange::Stale if reused && may_retry => {
                *upstream = None;
                may_retry = false;
            }
            Exchange::Stale => {
                let message = "the origin closed the connection without answering";
                tracing::info!(%peer, target = %address, %method, "HTTP request failed: {message}");
                answer_and_close(client, &canned(502, "Bad Gateway", message, &[])).await;
                return Next::Close;
            }
            Exchange::Refuse(status, reason, message) => {
                tracing::info!(%peer, target = %address, %method, status, "HTTP request failed: {message}");
                answer_and_close(client, &canned(status, reason, &message, &[])).await;
                return Next::Close;
            }
            Exchange::Broken => {
                tracing::info!(%peer, target = %address, %method, "HTTP exchange broken off");
                return Next::Close;
            }
        }
    }
}

/// Copies the request body to the origin while forwarding the response to the client.
#[allow(clippy::too_many_arguments)]
async fn exchange(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    up: &mut Upstream,
    body: BodyLength,
    is_head: bool,
    keep_client: bool,
    minor: u8,
    idle: Duration,
) -> Exchange {
    let (mut client_read, mut client_write) = client.split();
    let (mut up_read, mut up_write) = tokio::io::split(&mut up.stream);
    let request = copy_body(&mut client_read, buf, &mut up_write, body, idle);
    let response = forward_response(
        &mut up_read,
        &mut up.buf,
        &mut client_write,
        is_head,
        keep_client,
        minor,
        idle,
    );
    tokio::pin!(request, response);
    let mut request_done = false;
    loop {
        tokio::select! {
            // The request side first: a response that is already complete (it may have arrived
            // with the tunnel) must not be mistaken for one that came before the whole body.
            biased;
            sent = &mut request, if !request_done => match sent {
                Ok(_) => request_done = true,
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

/// Reads the origin's response (interim ones first) and forwards it to the client.
async fn forward_response<R, W>(
    up: &mut R,
    up_buf: &mut BytesMut,
    client: &mut W,
    is_head: bool,
    keep_client: bool,
    minor: u8,
    idle: Duration,
) -> Exchange
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut sent_any = false;
    let mut head = loop {
        let head: ResponseHead = match within(idle, read_head(up, up_buf)).await {
            Ok(head) => head,
            Err(HttpError::Closed | HttpError::Io(_)) if up_buf.is_empty() && !sent_any => return Exchange::Stale,
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
        if head.status >= 200 {
            break head;
        }
        let mut out = Vec::with_capacity(256);
        head.encode(&mut out);
        if within(idle, write_all(client, &out)).await.is_err() {
            return Exchange::Broken;
        }
        sent_any = true;
    };
    let framing = match head.body_length(is_head) {
        Ok(framing) => framing,
        Err(e) if !sent_any => return Exchange::Refuse(502, "Bad Gateway", format!("bad answer from the origin: {e}")),
        Err(_) => return Exchange::Broken,
    };
    let keep_upstream = head.keep_alive() && framing != BodyLength::ToClose;
    let keep_client = keep_client && framing != BodyLength::ToClose;
    let status = head.status;
    head.headers.remove_hop_by_hop();
    if !keep_client {
        head.headers.push("Connection", "close");
    } else if minor == 0 {
        head.headers.push("Connection", "keep-alive");
    }
    head.minor = 1;
    let mut out = Vec::with_capacity(1024);
    head.encode(&mut out);
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

async fn write_all<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> Result<(), HttpError> {
    writer.write_all(bytes).await?;
    writer.flush().await?;
    Ok(())
}

/// Copies one message body from `buf` and then `reader` to `writer`, framing unchanged; bytes
/// after the body stay in `buf`. Returns the bytes copied.
async fn copy_body<R, W>(
    reader: &mut R,
    buf: &mut BytesMut,
    writer: &mut W,
    length: BodyLength,
    idle: Duration,
) -> Result<u64, HttpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut tracker = ChunkedTracker::new();
    let mut left = match length {
        BodyLength::Fixed(n) => n,
        _ => u64::MAX,
    };
    let mut copied = 0u64;
    loop {
        let finished = match length {
            BodyLength::Fixed(_) => left == 0,
            BodyLength::Chunked => tracker.is_done(),
            BodyLength::ToClose => false,
        };
        if finished {
            break;
        }
        if buf.is_empty() {
            buf.reserve(READ_SIZE);
            let n = within(idle, async { Ok(reader.read_buf(buf).await?) }).await?;
            if n == 0 {
                if length == BodyLength::ToClose {
                    break;
                }
                return Err(HttpError::Closed);
            }
        }
        let take = match length {
            BodyLength::Fixed(_) => usize::try_from(left).unwrap_or(usize::MAX).min(buf.len()),
            BodyLength::Chunked => tracker.advance(buf).map_err(HttpError::Malformed)?,
            BodyLength::ToClose => buf.len(),
        };
        within(idle, async { Ok(writer.write_all(&buf[..take]).await?) }).await?;
        buf.advance(take);
        left = left.saturating_sub(take as u64);
        copied += take as u64;
    }
    within(idle, async { Ok(writer.flush().await?) }).await?;
    Ok(copied)
}
