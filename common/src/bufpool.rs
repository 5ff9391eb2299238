//! Chunk-sized buffers lent to a connection only while bytes are moving through it.
//!
//! A relay needs about one chunk ([`MAX_FRAME`], 64 KiB) of buffer per direction and per stage
//! to move data at full speed, but most proxied connections sit idle most of the time (a
//! browser's keep-alive connections, an ssh session, 10,000 parked websockets). Holding the
//! buffers for a connection's whole life would cost each idle connection hundreds of KiB; so
//! the relay and [`crate::stream::EncryptedStream`] borrow a buffer when a read or write starts
//! and give it back as soon as the buffer is empty again and the socket has nothing more to
//! give (the read returned `Pending`).
//!
//! Each runtime thread keeps a short free list, so under load a borrow is a `Vec::pop` of a
//! buffer whose pages are already mapped (no allocation, no page faults), and memory held by
//! the pool is bounded by [`KEEP_PER_THREAD`] buffers per thread.

use std::cell::RefCell;

use crate::crypto::MAX_FRAME;

/// Length of every lent buffer: one whole sealed chunk.
pub const BUF_LEN: usize = MAX_FRAME;
/// Free buffers each thread keeps for reuse; the rest are freed.
pub const KEEP_PER_THREAD: usize = 8;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Borrows a buffer of [`BUF_LEN`] bytes (contents unspecified).
pub fn take() -> Vec<u8> {
    FREE.try_with(|free| free.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0u8; BUF_LEN])
}

/// Gives a buffer back (empty vectors, i.e. "no buffer held", are ignored).
pub fn give(buf: Vec<u8>) {
    if buf.len() != BUF_LEN {
        return;
    }
    let _ = FREE.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP_PER_THREAD {
            free.push(buf);
        }
    });
}

/// Gives back the buffer in `slot`, leaving it empty (no buffer held).
pub fn release(slot: &mut Vec<u8>) {
    give(std::mem::take(slot));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_bounded() {
        let first = take();
        assert_eq!(first.len(), BUF_LEN);
        let ptr = first.as_ptr();
        give(first);
        let again = take();
        assert_eq!(again.as_ptr(), ptr, "a returned buffer is lent again");
        let many: Vec<Vec<u8>> = (0..KEEP_PER_THREAD + 8).map(|_| take()).collect();
        for b in many {
            give(b);
        }
        assert_eq!(FREE.with(|f| f.borrow().len()), KEEP_PER_THREAD);
        give(Vec::new()); // "no buffer" is not kept
        assert_eq!(FREE.with(|f| f.borrow().len()), KEEP_PER_THREAD);
        drop(again);
    }
}
