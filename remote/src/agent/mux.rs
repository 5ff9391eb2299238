//! A yamux session over an encrypted tunnel stream, driven by one task: it opens outbound streams
//! on request (through an [`Opener`]), hands inbound streams to a callback, and ends when the
//! link fails or every opener is gone and the peer closes. yamux 0.13 has no keep-alive, so the
//! session's owner runs a heartbeat stream (see heartbeat.rs).

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use warren_common::crypto::MAX_FRAME;

/// A mux stream in tokio's I/O traits.
pub type MuxStream = Compat<yamux::Stream>;

type OpenRequest = oneshot::Sender<io::Result<MuxStream>>;

/// Opens streams on a running session; cheap to clone.
#[derive(Clone)]
pub struct Opener(mpsc::Sender<OpenRequest>);

impl Opener {
    /// A new outbound stream, or an error once the session is gone.
    pub async fn open(&self) -> io::Result<MuxStream> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(tx)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::ConnectionAborted, "mux session closed"))?;
        rx.await
            .map_err(|_| io::Error::new(io::ErrorKind::ConnectionAborted, "mux session closed"))?
    }
}

/// Read and write buffer of a session's connection: two frames' worth.
const SESSION_BUFFER: usize = 2 * (MAX_FRAME + 12);

/// Streams a session carries at once (yamux refuses more).
const MAX_STREAMS: usize = 1024;

/// What yamux guarantees every stream: its initial receive window (`yamux::DEFAULT_CREDIT`).
const STREAM_BASE_WINDOW: usize = 256 * 1024;

/// Receive window the session may hand out beyond every stream's base window, shared by the
/// streams that need more: yamux doubles a stream's window (never shrinking it) while the sender
/// uses half of it in under two round trips, and takes the growth from this pool.
///
/// Why it exists: with no pool (the cap at exactly `MAX_STREAMS` × 256 KiB, as before issue 10's
/// WAN bench) no window can grow, and one stream carries at most 256 KiB per round trip of the
/// VPS<->agent link: 4.1 MB/s at 30 ms, 11 MB/s at 10 ms, against 20 MB/s on the laptop link
/// (docs/BENCHMARKS.md, "The campus path on an emulated WAN"). Why 8 MiB and not more: a stream
/// can then reach ~8 MiB, the bandwidth-delay product of 1 Gbit/s at ~64 ms (0.98x of the direct
/// path at 30 ms in bench/wan.sh), while on a fast link with no delay, where yamux keeps doubling,
/// a 64 MiB pool let windows grow so large that the bytes buffered cost ~1 CPU s/GiB more
/// (bench/campus.sh: 7.1 against 6.1 s/GiB on an unsealed link, same day).
const SHARED_GROWTH: usize = 8 * 1024 * 1024;

fn config() -> yamux::Config {
    let mut cfg = yamux::Config::default();
    // Memory: yamux buffers at most a stream's window of received bytes that its reader has not
    // taken, and the sum over all streams is capped by the connection window, so the worst case
    // (every stream's reader stalled while the peer fills every window) is
    // MAX_STREAMS × 256 KiB + SHARED_GROWTH = 264 MiB per session; a stream only buffers when
    // the socket it feeds is slower than the link, and a fully grown fast stream costs up to its
    // window only while its reader lags.
    cfg.set_max_num_streams(MAX_STREAMS);
    cfg.set_max_connection_receive_window(Some(MAX_STREAMS * STREAM_BASE_WINDOW + SHARED_GROWTH));
    // One yamux frame per end-to-end tunnel chunk (up to MAX_FRAME = 65,569 bytes), rather than
    // four 16 KiB frames, or at 64 KiB a full frame plus a 34-byte one for the chunk's overhead.
    // The link's own sealing then cuts the buffered frames into 64 KiB chunks, whatever their
    // boundaries.
    cfg.set_split_send_size(MAX_FRAME);
    cfg
}

/// Starts a session over `io`; returns the opener and the driver future (run it in a task; it
/// returns when the session ends). `inbound` is called for every stream the peer opens.
/// `mode` is yamux's role: the agent, which dials, is the client.
pub fn session<T, F>(io: T, mode: yamux::Mode, mut inbound: F) -> (Opener, impl std::future::Future<Output = ()>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut(MuxStream) + Send + 'static,
{
    // yamux reads and writes each frame's 12-byte header and its body separately: unbuffered,
    // that is two send(2) calls (and a tiny TCP segment) and two recv(2) calls per frame.
    // Buffered, a frame goes out in one write when yamux flushes, and reads come in large gulps.
    let io = tokio::io::BufStream::with_capacity(SESSION_BUFFER, SESSION_BUFFER, io);
    let mut conn = yamux::Connection::new(io.compat(), config(), mode);
    let (tx, mut rx) = mpsc::channel::<OpenRequest>(64);
    let driver = async move {
        let mut pending: Option<OpenRequest> = None;
        let mut openers_gone = false;
        poll_fn(move |cx| {
            loop {
                if let Some(req) = pending.take() {
                    match conn.poll_new_outbound(cx) {
                        Poll::Ready(result) => {
                            let _ = req.send(result.map(FuturesAsyncReadCompatExt::compat).map_err(io::Error::other));
                            continue;
                        }
                        Poll::Pending => {
                            pending = Some(req);
                            break;
                        }
                    }
                }
                if openers_gone {
                    break;
                }
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(req)) => pending = Some(req),
                    Poll::Ready(None) => openers_gone = true,
                    Poll::Pending => break,
                }
            }
            loop {
                match conn.poll_next_inbound(cx) {
                    Poll::Ready(Some(Ok(stream))) => inbound(stream.compat()),
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!("mux session failed: {e}");
                        return Poll::Ready(());
                    }
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await
    };
    (Opener(tx), driver)
}

#[cfg(test)]
mod tests {
    //! The session's flow control on a link with delay: real sockets on 127.0.0.1 joined by a
    //! relay that holds every chunk for a fixed time, as a WAN does.

    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::*;

    /// One-way delay of the test link (real time: yamux measures its RTT with std's clock).
    const DELAY: Duration = Duration::from_millis(20);

    /// Copies `from` to `to`, each chunk written DELAY after it was read.
    async fn delayed(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let writer = tokio::spawn(async move {
            while let Some((due, chunk)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                if to.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                break;
            };
            if tx.send((Instant::now() + DELAY, chunk.to_vec())).is_err() {
                break;
            }
        }
        drop(tx);
        let _ = writer.await;
    }

    /// Two TCP connections on 127.0.0.1 joined by a delaying relay: the two ends of a 40 ms link.
    async fn wan_pair() -> (TcpStream, TcpStream) {
        let a_side = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b_side = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(a_side.local_addr().unwrap()).await.unwrap();
        let (relay_a, _) = a_side.accept().await.unwrap();
        let b = TcpStream::connect(b_side.local_addr().unwrap()).await.unwrap();
        let (relay_b, _) = b_side.accept().await.unwrap();
        let (ar, aw) = relay_a.into_split();
        let (br, bw) = relay_b.into_split();
        tokio::spawn(delayed(ar, bw));
        tokio::spawn(delayed(br, aw));
        (a, b)
    }

    /// A stream's window grows past yamux's initial 256 KiB on a delayed link, so one stream can
    /// carry more than 256 KiB per round trip: the bytes written but not yet read (at most the
    /// window) exceed it. With the connection window capped at exactly 1024 × 256 KiB (before
    /// issue 10's WAN fix) no window could grow, and this never exceeded 256 KiB.
    #[tokio::test]
    async fn a_stream_window_grows_beyond_256_kib_on_a_delayed_link() {
        let (a, b) = wan_pair().await;
        let (in_tx, mut in_rx) = mpsc::unbounded_channel();
        let (opener, driver_a) = session(a, yamux::Mode::Client, |_| {});
        let (_keep, driver_b) = session(b, yamux::Mode::Server, move |s| {
            let _ = in_tx.send(s);
        });
        tokio::spawn(driver_a);
        tokio::spawn(driver_b);

        const TOTAL: u64 = 24 << 20;
        let written = Arc::new(AtomicU64::new(0));
        let mut out = opener.open().await.unwrap();
        let w = written.clone();
        let sender = tokio::spawn(async move {
            let chunk = vec![7u8; 16 * 1024];
            while w.load(Ordering::Relaxed) < TOTAL {
                out.write_all(&chunk).await.unwrap();
                w.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            out.shutdown().await.unwrap();
        });
        let mut inb = tokio::time::timeout(Duration::from_secs(30), in_rx.recv())
            .await
            .unwrap()
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let (mut read, mut most_in_flight) = (0u64, 0u64);
        let copy = async {
            loop {
                let n = inb.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                read += n as u64;
                most_in_flight = most_in_flight.max(written.load(Ordering::Relaxed).saturating_sub(read));
            }
        };
        // A generous bound that only catches a hang: 24 MiB at 256 KiB per 40 ms take ~4 s.
        tokio::time::timeout(Duration::from_secs(120), copy).await.unwrap();
        sender.await.unwrap();
        assert_eq!(read, TOTAL);
        assert!(
            most_in_flight > 512 * 1024,
            "at most {most_in_flight} bytes in flight: the stream window never grew past 256 KiB"
        );
    }
}
