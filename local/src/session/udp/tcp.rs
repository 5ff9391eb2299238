//! UDP-over-TCP on the local (`local.udp_transport: tcp`, and always through a chain): the
//! association's datagrams as [`DatagramFrame`]s in one tunnel stream, read and written by two
//! halves that never wait on each other.
//!
//! ```text
//! relay socket ─▶ TunnelQueue::send ─▶ queue (QUEUE frames; full: dropped) ─▶ TunnelWriter ─▶ tunnel
//! relay socket ◀───────────────────── TunnelQueue::recv ◀───────────────────────────────── tunnel
//! ```
//!
//! Had the loop that reads the tunnel also waited in `write_all` on it, a flood could wedge the
//! association for good: the remote, waiting to write its answers, stops reading, and each end
//! waits for the other (issue 10). Now the relay loop only ever queues, and drops what does not
//! fit: UDP may lose datagrams under overload, never stop.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use warren_common::proto::address::Address;
use warren_common::proto::udp::DatagramFrame;
use warren_common::proto::{decode_prefix, DecodeError};

use crate::outbound::Outbound;

/// Frames queued for the tunnel writer before new ones are dropped.
const QUEUE: usize = 128;
/// The writer coalesces queued frames into writes of about this many bytes.
const BATCH: usize = 32 * 1024;
/// How long the end-of-stream chunk may take to leave once the association is over.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The relay loop's side of the tunnel: reading, and queueing frames for the writer.
pub struct TunnelQueue {
    reader: ReadHalf<Outbound>,
    /// Bytes read but not yet decoded into whole frames.
    pending: BytesMut,
    queue: mpsc::Sender<Vec<u8>>,
}

/// The tunnel's writing half and the queue it drains; run it next to the relay loop.
pub struct TunnelWriter {
    writer: WriteHalf<Outbound>,
    frames: mpsc::Receiver<Vec<u8>>,
}

/// Splits an open UDP-over-TCP tunnel into its two halves.
pub fn split(tunnel: Outbound) -> (TunnelQueue, TunnelWriter) {
    let (reader, writer) = tokio::io::split(tunnel);
    let (queue, frames) = mpsc::channel(QUEUE);
    let queue = TunnelQueue {
        reader,
        pending: BytesMut::new(),
        queue,
    };
    (queue, TunnelWriter { writer, frames })
}

/// What became of a datagram handed to [`TunnelQueue::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// On its way to the writer.
    Yes,
    /// Dropped: the queue was full, or the datagram is too large for a frame.
    Dropped,
}

impl TunnelQueue {
    /// Queues one datagram for `to` without waiting. `Err` when the writer is gone (the
    /// association is over).
    pub fn send(&self, to: &Address, data: &[u8]) -> Result<Queued, ()> {
        let mut frame = Vec::with_capacity(data.len() + 32);
        if DatagramFrame::encode_parts(to, data, &mut frame).is_none() {
            return Ok(Queued::Dropped);
        }
        match self.queue.try_send(frame) {
            Ok(()) => Ok(Queued::Yes),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(Queued::Dropped),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        }
    }

    /// Waits for frames from the remote (cancel-safe: the only await is a read into
    /// `pending`). `Err` ends the association.
    pub async fn recv(&mut self) -> Result<Vec<DatagramFrame>, &'static str> {
        if matches!(self.reader.read_buf(&mut self.pending).await, Ok(0) | Err(_)) {
            return Err("remote closed");
        }
        let mut frames = Vec::new();
        loop {
            match decode_prefix::<DatagramFrame>(&self.pending) {
                Ok((frame, used)) => {
                    self.pending.advance(used);
                    frames.push(frame);
                }
                Err(DecodeError::Incomplete) => return Ok(frames),
                Err(_) => return Err("malformed frame from the remote"),
            }
        }
    }
}

impl TunnelWriter {
    /// Writes queued frames, several per write when they pile up. Returns only when the tunnel
    /// fails (the relay loop ends the association otherwise). Not cancel-safe: poll it to the
    /// association's end, then [`TunnelWriter::close`].
    pub async fn run(&mut self) -> &'static str {
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(frame) = self.frames.recv().await {
            batch.clear();
            batch.extend_from_slice(&frame);
            while batch.len() < BATCH {
                match self.frames.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if self.writer.write_all(&batch).await.is_err() {
                return "tunnel error";
            }
            if self.frames.is_empty() && self.writer.flush().await.is_err() {
                return "tunnel error";
            }
        }
        std::future::pending().await
    }

    /// Sends the end-of-stream chunk (the remote ends the association at once), within
    /// [`CLOSE_GRACE`]: a remote that stopped reading cannot hold the association open.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(CLOSE_GRACE, self.writer.shutdown()).await;
    }
}
