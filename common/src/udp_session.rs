//! Sealing and opening encrypted UDP packets (PROTOCOL.md §16.3): each direction of each
//! association is a *packet session* with a random 16-byte ID and its own subkey, and each packet
//! carries its number in the session. Pure: no I/O.
//!
//! ```text
//! packet  = SESSION_ID (16) | PACKET_ID (u64 BE) | ChaCha20-Poly1305(subkey, nonce, plaintext) | TAG (16)
//! subkey  = HKDF-SHA256(ikm = PSK, salt = SESSION_ID, info = Purpose::info(), L = 32)  once per session
//! nonce   = 4 zero bytes | PACKET_ID (u64 BE)                                         96 bits
//! plaintext = KIND (1) | TIMESTAMP (u64 BE) | body                                   (proto::udp)
//! ```
//!
//! The session ID is bound by the subkey and the packet ID by the nonce, so a changed header
//! fails authentication like a changed body. The sender numbers its packets 0, 1, 2, … and never
//! reuses a number ([`PacketSealer`]); 16 random bytes make two sessions with one subkey (and so
//! a reused nonce) a 2⁻⁶⁴ birthday event.
//!
//! Why sessions rather than a fresh salt per packet (this format's predecessor): the receiver
//! derives a subkey once per session instead of once per packet, and it remembers a session's
//! packets in a fixed 1024-bit window ([`ReplayWindow`], RFC 6479's idea) instead of one salt per
//! packet for two minutes. Over one `bench/udp.py` run (3 rounds at 50k/s, 100k/s and
//! unpaced) the per-packet salts grew local + remote RSS from 9.8 to 36 MB, and the growth is
//! proportional to the packet rate; sessions take a few hundred bytes each, whatever the rate
//! (9.6 → 10.1 MB over the same run).
//!
//! The receiver ([`PacketSessions`]) accepts a packet once: it must authenticate, carry a
//! TIMESTAMP within ±[`TIMESTAMP_WINDOW_SECS`] of our clock and not before the owner started
//! (PROTOCOL.md §10), and its PACKET_ID must be new and no more than [`ReplayWindow::BITS`]
//! behind the highest seen. A session is remembered until every packet it carried is outside the
//! timestamp window, so replaying a recorded packet later fails on its stamp.

use std::collections::HashMap;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use rand::RngCore;

use crate::crypto::{CryptoError, Key, Purpose, TAG_LEN};
use crate::proto::address::Address;
use crate::proto::udp::PacketPlaintext;
use crate::time::{skew, TIMESTAMP_WINDOW_SECS};

/// Bytes of a session ID.
pub const SESSION_ID_LEN: usize = 16;
/// A packet session's ID: the HKDF salt of its subkey.
pub type SessionId = [u8; SESSION_ID_LEN];
/// Bytes before the sealed plaintext: the session ID and the packet ID.
pub const PACKET_HEADER_LEN: usize = SESSION_ID_LEN + 8;
/// Bytes a sealed packet adds to its plaintext: the header and the tag.
pub const PACKET_OVERHEAD: usize = PACKET_HEADER_LEN + TAG_LEN;
/// Plaintext bytes the receiver reads before its checks: KIND and TIMESTAMP.
const STAMPED: usize = 1 + 8;

/// A fresh random session ID.
pub fn random_session_id() -> SessionId {
    let mut id = [0u8; SESSION_ID_LEN];
    rand::thread_rng().fill_bytes(&mut id);
    id
}

fn nonce(packet_id: u64) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&packet_id.to_be_bytes());
    nonce.into()
}

fn cipher(key: &Key, purpose: Purpose, id: &SessionId) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(&key.subkey(purpose, id).into())
}

/// Splits a packet into header, sealed body and tag; None if it is too short to be one.
fn split(packet: &mut [u8]) -> Option<(SessionId, u64, &mut [u8], &mut [u8])> {
    let body_len = packet.len().checked_sub(PACKET_OVERHEAD)?;
    let (head, rest) = packet.split_at_mut(PACKET_HEADER_LEN);
    let (id, number) = head.split_at(SESSION_ID_LEN);
    let id: SessionId = id.try_into().ok()?;
    let number = u64::from_be_bytes(number.try_into().ok()?);
    let (body, tag) = rest.split_at_mut(body_len);
    Some((id, number, body, tag))
}

fn open_body(aead: &ChaCha20Poly1305, number: u64, body: &mut [u8], tag: &[u8]) -> Result<(), CryptoError> {
    let tag = Tag::try_from(tag).map_err(|_| CryptoError::Authentication)?;
    aead.decrypt_inout_detached(&nonce(number), &[], body.into(), &tag)
        .map_err(|_| CryptoError::Authentication)
}

/// The sending side of one packet session: its ID, subkey and next packet number.
pub struct PacketSealer {
    id: SessionId,
    aead: ChaCha20Poly1305,
    next: u64,
}

impl PacketSealer {
    /// A new session with a random ID, sealing for `purpose`; its first packet is number 0.
    pub fn new(key: &Key, purpose: Purpose) -> PacketSealer {
        PacketSealer::with_id(key, purpose, random_session_id(), 0)
    }

    /// A session with a chosen ID whose next packet is number `next` (test vectors only: a
    /// reused ID with the same key reuses nonces).
    pub fn with_id(key: &Key, purpose: Purpose, id: SessionId, next: u64) -> PacketSealer {
        PacketSealer {
            aead: cipher(key, purpose, &id),
            id,
            next,
        }
    }

    /// Seals one packet in place: `packet` is `PACKET_HEADER_LEN + n + TAG_LEN` bytes with the
    /// plaintext at `packet[PACKET_HEADER_LEN..PACKET_HEADER_LEN + n]`; the header and the tag
    /// are written here. Fails with [`CryptoError::BadChunkLength`] if `packet` is shorter than
    /// [`PACKET_OVERHEAD`], and [`CryptoError::NonceExhausted`] after 2⁶⁴ − 1 packets.
    pub fn seal_in_place(&mut self, packet: &mut [u8]) -> Result<(), CryptoError> {
        let number = self.next;
        let next = number.checked_add(1).ok_or(CryptoError::NonceExhausted)?;
        let len = packet.len();
        let Some((_, _, body, tag)) = split(packet) else {
            return Err(CryptoError::BadChunkLength(len));
        };
        let sealed = self
            .aead
            .encrypt_inout_detached(&nonce(number), &[], body.into())
            .map_err(|_| CryptoError::Authentication)?;
        tag.copy_from_slice(&sealed);
        packet[..SESSION_ID_LEN].copy_from_slice(&self.id);
        packet[SESSION_ID_LEN..PACKET_HEADER_LEN].copy_from_slice(&number.to_be_bytes());
        self.next = next;
        Ok(())
    }
}

impl PacketSealer {
    /// Appends one sealed datagram packet (KIND 0x01, stamped `timestamp`, for `address`) to
    /// `buf`; false (and `buf` as it was) if it cannot be sealed. What both relays' batches use.
    pub fn append_datagram(&mut self, buf: &mut Vec<u8>, timestamp: u64, address: &Address, data: &[u8]) -> bool {
        let start = buf.len();
        buf.resize(start + PACKET_HEADER_LEN, 0);
        PacketPlaintext::encode_parts(timestamp, address, data, buf);
        buf.resize(buf.len() + TAG_LEN, 0);
        let sealed = buf
            .get_mut(start..)
            .is_some_and(|packet| self.seal_in_place(packet).is_ok());
        if !sealed {
            buf.truncate(start);
        }
        sealed
    }
}

/// Seals `plaintext` as packet `number` of session `id` into a new buffer (tests and vectors;
/// the relays keep a [`PacketSealer`] and reuse their buffers).
pub fn seal_packet(
    key: &Key,
    purpose: Purpose,
    id: &SessionId,
    number: u64,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; PACKET_OVERHEAD + plaintext.len()];
    out[PACKET_HEADER_LEN..PACKET_HEADER_LEN + plaintext.len()].copy_from_slice(plaintext);
    PacketSealer::with_id(key, purpose, *id, number).seal_in_place(&mut out)?;
    Ok(out)
}

/// Opens one packet with no session state (tests, vectors and the fuzzer; the relays use
/// [`PacketSessions`], which also refuses replays): its session ID, number and plaintext.
pub fn open_packet(key: &Key, purpose: Purpose, packet: &[u8]) -> Result<(SessionId, u64, Vec<u8>), CryptoError> {
    let mut copy = packet.to_vec();
    let (id, number, body, tag) = split(&mut copy).ok_or(CryptoError::Authentication)?;
    open_body(&cipher(key, purpose, &id), number, body, tag)?;
    Ok((id, number, body.to_vec()))
}

/// Which packet numbers of one session were accepted: the highest, and a bitmap of the
/// [`ReplayWindow::BITS`] numbers below it (RFC 6479's sliding window, as a ring).
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// One past the highest number accepted (0: none yet).
    next: u64,
    ring: [u64; ReplayWindow::WORDS],
}

impl Default for ReplayWindow {
    fn default() -> ReplayWindow {
        ReplayWindow {
            next: 0,
            ring: [0; ReplayWindow::WORDS],
        }
    }
}

impl ReplayWindow {
    const WORDS: usize = 16;
    /// How far behind the highest number a packet may arrive (reordering tolerated).
    pub const BITS: u64 = 64 * ReplayWindow::WORDS as u64;

    fn slot(number: u64) -> (usize, u64) {
        let bit = number % Self::BITS;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    /// True if `number` was not accepted before and is not too old to tell.
    pub fn is_fresh(&self, number: u64) -> bool {
        if number >= self.next {
            return number != u64::MAX;
        }
        if self.next - number > Self::BITS {
            return false;
        }
        let (word, mask) = Self::slot(number);
        self.ring.get(word).is_some_and(|w| w & mask == 0)
    }

    /// Records `number` as accepted (call only after [`ReplayWindow::is_fresh`] said so).
    pub fn accept(&mut self, number: u64) {
        if number >= self.next {
            // The numbers the window slides past fall out; their slots are cleared for reuse.
            if number - self.next >= Self::BITS {
                self.ring = [0; Self::WORDS];
            } else {
                for skipped in self.next..number {
                    let (word, mask) = Self::slot(skipped);
                    if let Some(w) = self.ring.get_mut(word) {
                        *w &= !mask;
                    }
                }
            }
            self.next = number.saturating_add(1);
        }
        let (word, mask) = Self::slot(number);
        if let Some(w) = self.ring.get_mut(word) {
            *w |= mask;
        }
    }
}

/// Why [`PacketSessions::open`] dropped a packet (all are dropped silently on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("does not authenticate")]
    Authentication,
    #[error("timestamp outside the window")]
    OutsideWindow,
    #[error("stamped before this process started")]
    BeforeStart,
    #[error("packet number already seen or too old")]
    Replay,
    #[error("too many packet sessions")]
    Full,
}

struct Session {
    aead: ChaCha20Poly1305,
    window: ReplayWindow,
    /// The second after which none of this session's packets could be accepted any more.
    expires: u64,
}

/// The receiving side of every packet session one socket sees: their subkeys and replay
/// windows, at most `capacity` of them (sessions are created only by packets that authenticate).
pub struct PacketSessions {
    purpose: Purpose,
    sessions: HashMap<SessionId, Session>,
    capacity: usize,
    /// Stamps below this (Unix seconds) are refused.
    not_before: u64,
    next_prune: u64,
}

/// How often (seconds) sessions whose packets can no longer be accepted are forgotten.
const PRUNE_EVERY_SECS: u64 = 10;

impl PacketSessions {
    /// A table opening packets sealed for `purpose`, holding at most `capacity` sessions and
    /// refusing stamps before `not_before` (Unix seconds: the remote's start; 0 on the local).
    pub fn new(purpose: Purpose, capacity: usize, not_before: u64) -> PacketSessions {
        PacketSessions {
            purpose,
            sessions: HashMap::new(),
            capacity,
            not_before,
            next_prune: 0,
        }
    }

    /// Sessions remembered now.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Opens `packet` in place at `now` (Unix seconds) and records it; returns its plaintext (a
    /// slice of `packet`, starting with KIND and TIMESTAMP).
    pub fn open<'p>(&mut self, key: &Key, packet: &'p mut [u8], now: u64) -> Result<&'p [u8], Refusal> {
        if now >= self.next_prune {
            self.sessions.retain(|_, s| s.expires >= now);
            self.next_prune = now.saturating_add(PRUNE_EVERY_SECS);
        }
        let (id, number, body, tag) = split(packet).ok_or(Refusal::Authentication)?;
        // A known session's number is checked before any decryption; a new session's subkey is
        // derived here and kept only if the packet turns out acceptable.
        let mut new_session = None;
        match self.sessions.get(&id) {
            Some(s) if !s.window.is_fresh(number) => return Err(Refusal::Replay),
            Some(s) => open_body(&s.aead, number, body, tag).map_err(|_| Refusal::Authentication)?,
            None => {
                let aead = cipher(key, self.purpose, &id);
                open_body(&aead, number, body, tag).map_err(|_| Refusal::Authentication)?;
                new_session = Some(aead);
            }
        }
        let stamp = body
            .get(1..STAMPED)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or(Refusal::Authentication)?;
        if skew(stamp, now).unsigned_abs() > u128::from(TIMESTAMP_WINDOW_SECS) {
            return Err(Refusal::OutsideWindow);
        }
        if stamp < self.not_before {
            return Err(Refusal::BeforeStart);
        }
        let expires = stamp.saturating_add(TIMESTAMP_WINDOW_SECS);
        match (self.sessions.get_mut(&id), new_session) {
            (Some(session), _) => {
                session.window.accept(number);
                session.expires = session.expires.max(expires);
            }
            (None, Some(aead)) => {
                if self.sessions.len() >= self.capacity {
                    return Err(Refusal::Full);
                }
                let mut window = ReplayWindow::default();
                window.accept(number);
                self.sessions.insert(id, Session { aead, window, expires });
            }
            // Not reachable: a session unknown above was given its cipher there.
            (None, None) => return Err(Refusal::Authentication),
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests;
