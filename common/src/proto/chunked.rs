//! Chunked transfer coding (RFC 9112 §7.1), tracked rather than decoded: warren-local forwards a
//! chunked body byte for byte and only needs to know where it ends.
//!
//! ```text
//! chunked-body   *( chunk-size [ ;ext ] CRLF  chunk-data CRLF )
//!                "0" [ ;ext ] CRLF
//!                *( trailer-field CRLF )
//!                CRLF
//! chunk-size     1*HEXDIG  (at most 16 digits)
//! ```
//!
//! A size or trailer line longer than [`MAX_LINE`] bytes, a size that is not plain hex (see
//! `parse_size`), or chunk data not followed by CRLF is an error. A bare LF is accepted as a line end.

use super::DecodeError;

/// Longest chunk-size line (with extensions) or trailer line accepted.
pub const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line; `len` bytes of it so far.
    Size {
        len: usize,
    },
    /// Inside chunk data, this many bytes to go.
    Data(u64),
    /// After chunk data: CR (optional) then LF.
    DataEnd {
        cr: bool,
    },
    /// Reading a trailer line (or the final blank line); `len` bytes of it so far.
    Trailer {
        len: usize,
    },
    Done,
}

/// Tracks where a chunked body ends.
#[derive(Debug, Clone)]
pub struct ChunkedTracker {
    state: State,
    line: Vec<u8>,
}

impl Default for ChunkedTracker {
    fn default() -> Self {
        ChunkedTracker {
            state: State::Size { len: 0 },
            line: Vec::new(),
        }
    }
}

impl ChunkedTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once the final blank line has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes of the body from the front of `data`; returns how many belong to it
    /// (fewer than `data.len()` only once the body has ended).
    pub fn advance(&mut self, data: &[u8]) -> Result<usize, DecodeError> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Done => break,
                State::Data(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len() - i);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd { cr: false }
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd { cr } => {
                    let b = data[i];
                    i += 1;
                    self.state = match (cr, b) {
                        (false, b'\r') => State::DataEnd { cr: true },
                        (_, b'\n') => State::Size { len: 0 },
                        _ => return Err(DecodeError::BadField("chunk-data CRLF")),
                    };
                }
                State::Size { len } | State::Trailer { len } => {
                    let b = data[i];
                    i += 1;
                    if b != b'\n' {
                        if len >= MAX_LINE {
                            return Err(DecodeError::BadField("chunk line length"));
                        }
                        self.line.push(b);
                        self.state = match self.state {
                            State::Size { .. } => State::Size { len: len + 1 },
                            _ => State::Trailer { len: len + 1 },
                        };
                        continue;
                    }
                    self.state = match self.state {
                        State::Size { .. } => {
                            let size = parse_size(&self.line)?;
                            self.line.clear();
                            if size == 0 {
                                State::Trailer { len: 0 }
                            } else {
                                State::Data(size)
                            }
                        }
                        // An empty line (or a lone CR) ends the trailer section.
                        _ if self.line.is_empty() || self.line == b"\r" => State::Done,
                        _ => State::Trailer { len: 0 },
                    };
                    self.line.clear();
                }
            }
        }
        Ok(i)
    }
}

/// The hex size before any `;extension`. Whitespace may follow the digits (the BWS before `;`)
/// but never precede them, and an extension holds no control byte but HTAB: parsers that
/// disagree on a chunk size are how bodies get smuggled (RFC 9112 §11.2), so only the plain
/// form passes. httparse's `parse_chunk_size` is not used: it reads an empty size line as `0`
/// (a last chunk where other parsers see an error) and lets any byte into an extension.
fn parse_size(line: &[u8]) -> Result<u64, DecodeError> {
    const BAD: DecodeError = DecodeError::BadField("chunk-size");
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (digits, extensions) = match line.iter().position(|b| *b == b';') {
        Some(at) => line.split_at(at),
        None => (line, &[][..]),
    };
    let digits = digits.trim_ascii_end();
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(BAD);
    }
    if extensions
        .iter()
        .any(|b| (b.is_ascii_control() && *b != b'\t') || *b == 0x7f)
    {
        return Err(DecodeError::BadField("chunk-ext"));
    }
    let text = std::str::from_utf8(digits).map_err(|_| BAD)?;
    u64::from_str_radix(text, 16).map_err(|_| BAD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BODY: &[u8] = b"4\r\nWiki\r\n5;name=v\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n";

    #[test]
    fn finds_the_end_and_leaves_what_follows() {
        let mut data = BODY.to_vec();
        data.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let mut t = ChunkedTracker::new();
        assert_eq!(t.advance(&data), Ok(BODY.len()));
        assert!(t.is_done());
        assert_eq!(t.advance(b"more"), Ok(0));
    }

    #[test]
    fn bare_lf_and_no_trailer() {
        let mut t = ChunkedTracker::new();
        assert_eq!(t.advance(b"3\nabc\n0\n\n"), Ok(9));
        assert!(t.is_done());
        let mut t = ChunkedTracker::new();
        assert_eq!(t.advance(b"0\r\n\r\n"), Ok(5));
        assert!(t.is_done());
    }

    #[test]
    fn rejects_bad_framing() {
        assert_eq!(
            ChunkedTracker::new().advance(b"zz\r\n"),
            Err(DecodeError::BadField("chunk-size"))
        );
        assert_eq!(
            ChunkedTracker::new().advance(b"\r\n"),
            Err(DecodeError::BadField("chunk-size"))
        );
        assert_eq!(
            ChunkedTracker::new().advance(b"11111111111111111\r\n"),
            Err(DecodeError::BadField("chunk-size"))
        );
        assert_eq!(
            ChunkedTracker::new().advance(b"2\r\nabc"),
            Err(DecodeError::BadField("chunk-data CRLF"))
        );
        // Smuggling shapes: a size some parsers read differently is refused.
        for line in [&b" 5\r\n"[..], b"\t5\r\n", b"+5\r\n", b"0x5\r\n", b"5 5\r\n", b"-0\r\n"] {
            assert_eq!(
                ChunkedTracker::new().advance(line),
                Err(DecodeError::BadField("chunk-size")),
                "{line:?}"
            );
        }
        assert_eq!(
            ChunkedTracker::new().advance(b"5;a=\x00\r\n"),
            Err(DecodeError::BadField("chunk-ext"))
        );
        let mut t = ChunkedTracker::new();
        assert_eq!(t.advance(b"5 ;a=b\t;c\r\nhello\r\n0\r\n\r\n"), Ok(23));
        assert!(t.is_done());
        let long = vec![b'1'; MAX_LINE + 1];
        assert_eq!(
            ChunkedTracker::new().advance(&long),
            Err(DecodeError::BadField("chunk line length"))
        );
    }

    proptest! {
        /// Fed in any split, the tracker finds the same end and never errs on valid input.
        #[test]
        fn any_split_finds_the_end(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8),
                                   cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6)) {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let total = body.len();
            body.extend_from_slice(b"next");
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(body.len())).collect();
            points.push(body.len());
            points.sort_unstable();
            let mut t = ChunkedTracker::new();
            let (mut pos, mut used) = (0, 0);
            for p in points {
                used += t.advance(&body[pos..p]).unwrap();
                pos = p;
            }
            prop_assert!(t.is_done());
            prop_assert_eq!(used, total);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = ChunkedTracker::new().advance(&bytes);
        }
    }
}
