//! Fuzz target `tunnel`: the tunnel's request and response headers (`proto/header.rs`) and the
//! sealed chunk framing they travel in (`tunnel/`, `stream.rs`, `crypto.rs`), read the way
//! warren-remote's `accept.rs` reads a connection: the request chunk tried under each key
//! (the shared key and an agent's own key, so agent registrations, command `0x10`, take the
//! same path), then the encrypted stream to its end-of-stream chunk; and RESOLVE's answer
//! (`proto/resolve.rs`).
//!
//! Arbitrary bytes never pass the AEAD, so besides the raw wire (the rejection path) the
//! target also seals the fuzzer's plaintexts under the fixed keys and checks that the reader
//! gives back exactly what was sealed. The agent session inside a registered link is yamux (a
//! crate, not fuzzed here); its UDP legs carry datagram frames, fuzzed by the `udp` target.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::crypto::{frame_len, Key, Purpose, SessionCipher, LEN_BLOCK, SALT_LEN};
use crate::proto::address::Address;
use crate::proto::decode_prefix;
use crate::proto::header::{RequestHeader, ResponseHeader};
use crate::proto::resolve::ResolveAnswer;
use crate::proto::status::Status;
use crate::tunnel::{AcceptedRequest, Opener, Users};

use super::{round_trip, selector};

/// Runs the decoder chosen by `data[0]` over the rest.
pub fn tunnel(data: &[u8]) {
    let Some((which, bytes)) = selector(data) else {
        return;
    };
    match which % 5 {
        0 => drop(round_trip::<RequestHeader>(bytes, true)),
        1 => drop(round_trip::<ResponseHeader>(bytes, true)),
        2 => drop(accept(bytes)),
        // RESOLVE's answer, the stream payload after its response (PROTOCOL.md §20).
        3 => drop(round_trip::<ResolveAnswer>(bytes, true)),
        _ => sealed(bytes),
    }
}

/// The keys a remote with one agent tries, in `accept.rs`'s order: shared key, then the agent's.
fn keys() -> [Key; 2] {
    [Key::from_bytes([1; 32]), Key::from_bytes([2; 32])]
}

/// Two users of per-user keys (PROTOCOL.md §19), their hints unmasked with the shared key.
fn users() -> Users {
    Users::new(
        keys()[0].clone(),
        vec![Key::from_bytes([4; 32]), Key::from_bytes([5; 32])],
    )
}

/// What the remote reads from one connection's bytes.
#[derive(Debug, PartialEq, Eq)]
struct Accepted {
    opener: Opener,
    header: RequestHeader,
    initial_data: Vec<u8>,
    /// Whether the bytes after the first chunk end with the end-of-stream chunk.
    ended: bool,
    /// The stream's plaintext, and how it ended (`Other` for the end-of-stream chunk).
    stream: (Vec<u8>, io::ErrorKind),
}

/// Reads `wire` as warren-remote reads a connection: salt, request chunk, then the stream.
fn accept(wire: &[u8]) -> Result<Accepted, String> {
    let keys = keys();
    let mut rest = wire;
    let users = users();
    let request = block_on(AcceptedRequest::read(
        &mut rest,
        &[&keys[0], &keys[1]],
        Some(&users),
        true,
    ))
    .map_err(|e| e.to_string())?;
    let raw = request.raw.as_deref().unwrap_or_default();
    assert_eq!(raw, wire.get(..wire.len() - rest.len()).unwrap_or_default(), "raw copy");
    let ended = request.ends_with_end_of_stream(rest);
    let (opener, header, initial_data) = (request.opener, request.header.clone(), request.initial_data.clone());
    let response = ResponseHeader::new(request.salt, Status::Succeeded, header.timestamp, Address::UNSPECIFIED);
    // Part of the stream arrived with the request (accept.rs passes it on as `already_read`).
    let (already, later) = rest.split_at(rest.len() / 2);
    let mut stream = block_on(request.respond(Wire(later), &response, already)).map_err(|e| e.to_string())?;
    let mut plaintext = Vec::new();
    let end = match block_on(stream.read_to_end(&mut plaintext)) {
        Ok(_) => io::ErrorKind::Other,
        Err(e) => e.kind(),
    };
    Ok(Accepted {
        opener,
        header,
        initial_data,
        ended,
        stream: (plaintext, end),
    })
}

/// `bytes` = flags | segments, each `len (1 byte) | len bytes`. The first segment is the request
/// chunk's plaintext, each later one a chunk of the stream (length 0: the end-of-stream chunk).
/// flags bit 0 picks the key (shared or agent's), bit 2 seals as user 1 with a hint instead;
/// bit 1 flips one ciphertext bit, chosen by the byte after flags.
fn sealed(bytes: &[u8]) {
    let Some((flags, rest)) = selector(bytes) else {
        return;
    };
    let (flip_at, mut rest) = selector(rest).unwrap_or((0, &[]));
    let mut segments = Vec::new();
    while let Some((len, after)) = selector(rest) {
        let (segment, after) = after.split_at(usize::from(len).min(after.len()));
        segments.push(segment);
        rest = after;
    }
    let Some((first, chunks)) = segments.split_first() else {
        return;
    };
    let salt = [3; SALT_LEN];
    let user = Key::from_bytes([5; 32]);
    let (opener, key) = if flags & 4 != 0 {
        (Opener::User(1), user.clone())
    } else {
        let i = usize::from(flags & 1);
        (Opener::Listed(i), keys()[i].clone())
    };
    let mut cipher = SessionCipher::new(&key, Purpose::TcpRequest, &salt);
    let mut wire = salt.to_vec();
    if opener == Opener::User(1) {
        wire.extend_from_slice(&crate::tunnel::users::hint(&keys()[0], &user, &salt));
    }
    let header_at = wire.len();
    // Where the bytes that decide the outcome end: after the first end-of-stream chunk nothing
    // is read (and a flipped bit there changes nothing).
    let mut decisive = None;
    for (i, plaintext) in std::iter::once(first).chain(chunks).enumerate() {
        let start = wire.len();
        wire.resize(start + frame_len(plaintext.len()), 0);
        wire[start + LEN_BLOCK..start + LEN_BLOCK + plaintext.len()].copy_from_slice(plaintext);
        cipher.seal_frame(&mut wire[start..]).unwrap_or_else(|e| panic!("{e}"));
        if i > 0 && plaintext.is_empty() && decisive.is_none() {
            decisive = Some(wire.len());
        }
    }
    let clean = accept(&wire);
    check_clean(&clean, opener, first, chunks);
    if decode_prefix::<RequestHeader>(first).is_err() {
        // A request that does not decode ends the connection: nothing after it is read.
        decisive = Some(header_at + frame_len(first.len()));
    }
    if flags & 2 != 0 {
        let at = usize::from(flip_at) * wire.len() / 256;
        if let Some(byte) = wire.get_mut(at) {
            *byte ^= 1 << (flags >> 5);
        }
        let flipped = accept(&wire);
        if at < decisive.unwrap_or(wire.len()) {
            assert_ne!(flipped, clean, "a flipped bit at {at} went unnoticed");
        }
        // Whatever was flipped, the reader hands out no byte that was not sealed.
        if let (Ok(flipped), Ok(clean)) = (&flipped, &clean) {
            assert!(clean.stream.0.starts_with(&flipped.stream.0), "forged plaintext");
        }
    }
}

/// The unaltered wire reads back as exactly what was sealed.
fn check_clean(got: &Result<Accepted, String>, opener: Opener, first: &[u8], chunks: &[&[u8]]) {
    let (header, used) = match decode_prefix::<RequestHeader>(first) {
        Ok(decoded) => decoded,
        Err(e) => return assert_eq!(got.as_ref().err(), Some(&format!("malformed header: {e}"))),
    };
    let got = got.as_ref().unwrap_or_else(|e| panic!("{e}"));
    // The stream is the chunks up to the first end-of-stream chunk; without one it is cut short.
    let end = chunks.iter().position(|c| c.is_empty());
    let sent: Vec<u8> = chunks
        .iter()
        .take(end.unwrap_or(chunks.len()))
        .flat_map(|c| c.iter().copied())
        .collect();
    let expected = Accepted {
        opener,
        header,
        initial_data: first.get(used..).unwrap_or_default().to_vec(),
        ended: end.is_some_and(|at| at + 1 == chunks.len()),
        stream: (sent, end.map_or(io::ErrorKind::UnexpectedEof, |_| io::ErrorKind::Other)),
    };
    assert_eq!(got, &expected);
}

/// One side of a connection: reads come from the bytes, writes go nowhere.
struct Wire<'a>(&'a [u8]);

impl AsyncRead for Wire<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = self.0.len().min(out.remaining());
        let (now, later) = self.0.split_at(n);
        out.put_slice(now);
        self.0 = later;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs a future whose I/O is all in memory: it never waits, so one poll finishes it.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("in-memory I/O waited"),
    }
}
