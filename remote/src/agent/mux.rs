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

fn config() -> yamux::Config {
    let mut cfg = yamux::Config::default();
    // Each stream's window grows from 256 KiB as yamux measures the link; yamux requires the
    // connection-wide cap to cover 256 KiB for every stream, so: 1024 streams, 256 MiB cap.
    cfg.set_max_connection_receive_window(Some(1024 * 256 * 1024));
    cfg.set_max_num_streams(1024);
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
