//! Batched UDP I/O for the encrypted packet hop between a local and its remote: many packets per
//! system call, through `quinn-udp` (the QUIC stack's maintained socket layer).
//!
//! ```text
//! send: [packet 1 | packet 2 | … | packet n]  one sendmsg, UDP_SEGMENT = packet size (GSO):
//!        the kernel cuts it into n datagrams (the last may be shorter), each on the wire as usual
//! recv: recvmmsg into up to BATCH_SIZE buffers; with UDP_GRO on, one buffer may hold several
//!        datagrams from one sender, `stride` bytes apart (the last may be shorter)
//! ```
//!
//! Why: a datagram costs a system call and a trip through the network stack each way, and on the
//! packet hop warren controls both ends, so a burst of same-sized packets (a QUIC flight, a video
//! frame) can travel as one send and one receive. Platforms without GSO/GRO (or a kernel that
//! refuses them at run time) fall back to one datagram per call inside `quinn-udp`.
//!
//! `quinn-udp` sets its sockets up for QUIC, which must not be fragmented (it sets DF and
//! probes the path MTU itself); warren carries applications' datagrams, which may be larger than
//! the path MTU (a 4 KiB DNS answer), so [`BatchSocket::new`] restores the operating system's
//! default: fragment when needed.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

pub use quinn_udp::{RecvMeta, BATCH_SIZE};

/// Largest datagram a receive buffer must hold: 64 KiB, times the GRO segments it may carry.
pub const MAX_DATAGRAM: usize = 65536;

/// A Tokio UDP socket with GSO sends and batched (GRO) receives.
pub struct BatchSocket {
    io: UdpSocket,
    state: UdpSocketState,
}

impl BatchSocket {
    /// Wraps `io` (already bound, and connected if it should be). Fails only if the socket's
    /// options cannot be read or set.
    pub fn new(io: UdpSocket) -> io::Result<BatchSocket> {
        let state = UdpSocketState::new((&io).into())?;
        allow_fragmentation(&io);
        Ok(BatchSocket { io, state })
    }

    /// The socket itself, for what needs no batching.
    pub fn get_ref(&self) -> &UdpSocket {
        &self.io
    }

    /// How many datagrams one [`BatchSocket::send`] may carry (1 without GSO).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Bytes each receive buffer should have: a whole GRO batch of the largest datagrams.
    pub fn recv_buffer_len(&self) -> usize {
        MAX_DATAGRAM * self.state.gro_segments().max(1)
    }

    /// Sends `contents` to `to`: one datagram, or, with `segment` = Some(n), datagrams of `n`
    /// bytes each (the last may be shorter), at most [`BatchSocket::max_segments`] of them. A
    /// send the kernel refuses (an ICMP error from an earlier datagram, no buffer space) loses
    /// these datagrams, as UDP may; only a wait for buffer space is awaited.
    pub async fn send(&self, to: SocketAddr, contents: &[u8], segment: Option<usize>) {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: segment.filter(|&n| n < contents.len()),
            src_ip: None,
        };
        cooperate().await;
        loop {
            if self.io.writable().await.is_err() {
                return;
            }
            match self
                .io
                .try_io(Interest::WRITABLE, || self.state.send((&self.io).into(), &transmit))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                _ => return,
            }
        }
    }

    /// Receives into `bufs` (each [`BatchSocket::recv_buffer_len`] long); returns how many
    /// buffers were filled, each described by its `meta` (source, length, GRO stride).
    pub async fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        cooperate().await;
        loop {
            self.io.readable().await?;
            match self
                .io
                .try_io(Interest::READABLE, || self.state.recv((&self.io).into(), bufs, meta))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

/// Counts one operation against the task's Tokio budget, as Tokio's own sockets do: the
/// readiness futures used here do not, so a task whose sends and receives are always ready
/// (a UDP-over-TCP association under load) would otherwise never yield, and a `select!` in it
/// would starve its other branches (its tunnel writer: `bench/udp.py` measured 11,300 → 900
/// datagrams/s echoed unpaced when the NAT moved to this socket).
async fn cooperate() {
    tokio::task::coop::consume_budget().await;
}

/// Receives into one buffer (which GRO may fill with several datagrams: see [`segments`]; a
/// socket wrapped in [`BatchSocket`] has GRO on, so its reads must go through here, never
/// through a plain `recv_from`, or several datagrams would read as one).
pub async fn recv_one(socket: &BatchSocket, buf: &mut [u8]) -> io::Result<RecvMeta> {
    let mut meta = [RecvMeta::default()];
    socket.recv(&mut [IoSliceMut::new(buf)], &mut meta).await?;
    Ok(meta[0])
}

/// Largest datagram a batch sends as a GSO segment: one that fits a 1500-byte IPv6 path. A
/// larger one goes alone (GSO cannot fragment, and a segment over the device MTU is refused).
const MAX_SEGMENT: usize = 1500 - 40 - 8;
/// Bytes one GSO send may carry (an IP packet's limit, with room for the headers).
const MAX_BATCH_BYTES: usize = 65000;

/// Datagrams for one destination, gathered to leave in one [`BatchSocket::send`]: all the size
/// of the first, except that the last may be shorter (what GSO requires).
#[derive(Default)]
pub struct Batch {
    buf: Vec<u8>,
    segment: usize,
    count: usize,
    closed: bool,
}

impl Batch {
    /// A batch whose buffer starts with `capacity` bytes reserved.
    pub fn with_capacity(capacity: usize) -> Batch {
        Batch {
            buf: Vec::with_capacity(capacity),
            ..Batch::default()
        }
    }

    /// Appends one datagram for `to`, written by `write` at the end of the buffer. If it cannot
    /// join the datagrams already gathered (another size, too many, too many bytes), those are
    /// sent first and it starts the next batch. `write` returns false to take the datagram back
    /// (nothing is kept); so does this.
    pub async fn push(
        &mut self,
        socket: &BatchSocket,
        to: SocketAddr,
        write: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> bool {
        let start = self.buf.len();
        if !write(&mut self.buf) {
            self.buf.truncate(start);
            return false;
        }
        let len = self.buf.len() - start;
        let joins = self.count == 0
            || (!self.closed
                && len <= self.segment
                && self.segment <= MAX_SEGMENT
                && self.count < socket.max_segments()
                && self.buf.len() <= MAX_BATCH_BYTES);
        if !joins {
            if let Some(before) = self.buf.get(..start) {
                socket.send(to, before, (self.count > 1).then_some(self.segment)).await;
            }
            self.buf.drain(..start);
            self.count = 0;
            self.closed = false;
        }
        if self.count == 0 {
            self.segment = len;
        } else if len < self.segment {
            // GSO: only the last datagram may be shorter.
            self.closed = true;
        }
        self.count += 1;
        true
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Sends what is gathered to `to` and empties the batch.
    pub async fn flush(&mut self, socket: &BatchSocket, to: SocketAddr) {
        if self.count > 0 {
            socket
                .send(to, &self.buf, (self.count > 1).then_some(self.segment))
                .await;
        }
        self.buf.clear();
        self.count = 0;
        self.closed = false;
    }
}

impl BatchSocket {
    /// [`recv_one`] without waiting: `WouldBlock` when nothing is queued.
    pub fn try_recv_one(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let mut meta = [RecvMeta::default()];
        self.io.try_io(Interest::READABLE, || {
            self.state
                .recv((&self.io).into(), &mut [IoSliceMut::new(buf)], &mut meta)
        })?;
        Ok(meta[0])
    }
}

/// Buffers for one batched receive: `n` slots of [`MAX_DATAGRAM`] bytes each, allocated zeroed
/// and untouched (so a slot costs resident memory only for the bytes datagrams wrote into it).
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    filled: usize,
}

impl RecvBatch {
    pub fn new(slots: usize) -> RecvBatch {
        RecvBatch {
            // One zeroed allocation each: `vec![buf; n]` would clone, touching every page.
            bufs: (0..slots.max(1)).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            metas: vec![RecvMeta::default(); slots.max(1)],
            filled: 0,
        }
    }

    /// Waits for datagrams and fills as many slots as are waiting, with one system call where
    /// the platform has recvmmsg. Cancel-safe.
    pub async fn recv(&mut self, socket: &BatchSocket) -> io::Result<usize> {
        let mut slices: Vec<IoSliceMut<'_>> = self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        self.filled = socket.recv(&mut slices, &mut self.metas).await?;
        Ok(self.filled)
    }

    /// [`RecvBatch::recv`] without waiting: `WouldBlock` when nothing is queued.
    pub fn try_recv(&mut self, socket: &BatchSocket) -> io::Result<usize> {
        let mut slices: Vec<IoSliceMut<'_>> = self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        self.filled = socket.io.try_io(Interest::READABLE, || {
            socket.state.recv((&socket.io).into(), &mut slices, &mut self.metas)
        })?;
        Ok(self.filled)
    }

    /// The datagrams of the last receive, with their senders (GRO batches split).
    pub fn datagrams(&mut self) -> impl Iterator<Item = (SocketAddr, &mut [u8])> {
        self.bufs
            .iter_mut()
            .zip(&self.metas)
            .take(self.filled)
            .flat_map(|(buf, meta)| segments(buf, meta).map(move |d| (meta.addr, d)))
    }
}

/// The datagrams of one received buffer: `len` bytes cut every `stride` bytes (GRO).
pub fn segments<'b>(buf: &'b mut [u8], meta: &RecvMeta) -> impl Iterator<Item = &'b mut [u8]> {
    let len = meta.len.min(buf.len());
    let stride = if meta.stride == 0 { len.max(1) } else { meta.stride };
    buf[..len].chunks_mut(stride)
}

/// Restores fragmentation of datagrams larger than the path MTU (see the module comment).
/// Best effort: where the option is missing, the platform's behaviour is kept.
fn allow_fragmentation(io: &UdpSocket) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        set_int(io, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_WANT);
        set_int(
            io,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_WANT,
        );
        set_int(io, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0);
    }
    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    {
        set_int(io, libc::IPPROTO_IP, libc::IP_DONTFRAG, 0);
        set_int(io, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0);
    }
    // Windows: quinn-udp sets IP_DONTFRAGMENT; restoring it is left to the Windows port.
    let _ = io;
}

/// One int-valued socket option; an error (option missing on this socket's family) is ignored.
#[cfg(unix)]
#[allow(unsafe_code)] // setsockopt: neither socket2 nor quinn-udp offers these options
fn set_int(io: &UdpSocket, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a descriptor this socket owns, with a pointer to an int and its
    // size, as these options expect; a failure is a return code, not undefined behaviour.
    let _ = unsafe {
        libc::setsockopt(
            io.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (BatchSocket, BatchSocket) {
        let a = BatchSocket::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap();
        let b = BatchSocket::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap();
        (a, b)
    }

    fn datagram(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    /// Everything `to` receives until `count` datagrams arrived, split the way a receiver must,
    /// and the most datagrams one receive returned.
    async fn receive_counting(to: &BatchSocket, count: usize) -> (Vec<Vec<u8>>, usize) {
        let (mut got, mut most) = (Vec::new(), 0);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while got.len() < count {
            let recv = tokio::time::timeout(std::time::Duration::from_secs(10), recv_one(to, &mut buf));
            let meta = recv.await.expect("datagrams arrive").unwrap();
            let before = got.len();
            got.extend(segments(&mut buf, &meta).map(|d| d.to_vec()));
            most = most.max(got.len() - before);
        }
        (got, most)
    }

    async fn receive(to: &BatchSocket, count: usize) -> Vec<Vec<u8>> {
        receive_counting(to, count).await.0
    }

    /// A task whose sends are always ready must still let the others on its thread run (the
    /// UDP-over-TCP association's tunnel writer starved behind its reader without this).
    #[tokio::test]
    async fn a_task_that_only_sends_still_yields_to_the_others() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let (a, b) = pair().await;
        let to = b.get_ref().local_addr().unwrap();
        // The socket's first send waits for its readiness from the I/O driver; after it, sends
        // are ready at once.
        a.send(to, &[0u8; 16], None).await;
        let other_ran = Arc::new(AtomicBool::new(false));
        let flag = other_ran.clone();
        // A current-thread runtime: the spawned task runs only if this one yields.
        tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
        for _ in 0..10_000 {
            a.send(to, &[0u8; 16], None).await;
            if other_ran.load(Ordering::SeqCst) {
                break;
            }
        }
        assert!(other_ran.load(Ordering::SeqCst), "10,000 sends never yielded");
    }

    #[tokio::test]
    async fn a_batch_arrives_as_the_datagrams_pushed_in_order_whatever_their_sizes() {
        let (a, b) = pair().await;
        let to = b.get_ref().local_addr().unwrap();
        // Runs of one size, a shorter one (which must end its batch), a longer one (which must
        // start another), a datagram too large to be a GSO segment, and more than one batch holds.
        let sizes: Vec<usize> = [vec![100; 10], vec![50, 100], vec![3000], vec![1200; 70], vec![7]].concat();
        let mut batch = Batch::default();
        for (i, &len) in sizes.iter().enumerate() {
            let d = datagram(i, len);
            assert!(
                batch
                    .push(&a, to, |buf| {
                        buf.extend_from_slice(&d);
                        true
                    })
                    .await
            );
        }
        assert!(
            !batch
                .push(&a, to, |buf| {
                    buf.extend_from_slice(b"taken back");
                    false
                })
                .await
        );
        batch.flush(&a, to).await;
        assert!(batch.is_empty());
        let (got, most) = receive_counting(&b, sizes.len()).await;
        let want: Vec<_> = sizes.iter().enumerate().map(|(i, &len)| datagram(i, len)).collect();
        assert_eq!(got, want);
        // Where the kernel offers GSO and GRO (Linux), the batches really travelled as batches.
        if cfg!(target_os = "linux") && a.max_segments() > 1 {
            assert!(most > 1, "every receive held one datagram");
        }
    }

    #[tokio::test]
    async fn a_plain_socket_receives_a_batch_as_separate_datagrams() {
        let (a, _) = pair().await;
        let plain = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = plain.local_addr().unwrap();
        let mut batch = Batch::default();
        for i in 0..20 {
            batch
                .push(&a, to, |buf| {
                    buf.extend_from_slice(&datagram(i, 500));
                    true
                })
                .await;
        }
        batch.flush(&a, to).await;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for i in 0..20 {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), plain.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], &datagram(i, 500)[..], "datagram {i}");
        }
    }

    #[tokio::test]
    async fn a_recv_batch_reads_many_datagrams_per_call_in_order() {
        let (_, b) = pair().await;
        let plain = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.get_ref().local_addr().unwrap();
        for i in 0..20 {
            plain.send_to(&datagram(i, 100 + i), to).await.unwrap();
        }
        let mut batch = RecvBatch::new(8);
        let (mut got, mut most) = (Vec::new(), 0);
        let mut first = true;
        while got.len() < 20 {
            let n = if first {
                first = false;
                tokio::time::timeout(std::time::Duration::from_secs(10), batch.recv(&b))
                    .await
                    .unwrap()
                    .unwrap()
            } else {
                match batch.try_recv(&b) {
                    Ok(n) => n,
                    Err(_) => tokio::time::timeout(std::time::Duration::from_secs(10), batch.recv(&b))
                        .await
                        .unwrap()
                        .unwrap(),
                }
            };
            assert!(n <= 8);
            let before = got.len();
            for (from, d) in batch.datagrams() {
                assert_eq!(from, plain.local_addr().unwrap());
                got.push(d.to_vec());
            }
            most = most.max(got.len() - before);
        }
        assert_eq!(got, (0..20).map(|i| datagram(i, 100 + i)).collect::<Vec<_>>());
        if cfg!(target_os = "linux") {
            assert!(most > 1, "one datagram per receive: recvmmsg not used");
        }
    }

    #[tokio::test]
    async fn a_large_datagram_goes_alone_and_arrives_whole() {
        let (a, b) = pair().await;
        let to = b.get_ref().local_addr().unwrap();
        let big = datagram(1, 60_000);
        a.send(to, &big, None).await;
        assert_eq!(receive(&b, 1).await, [big]);
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod fragmentation {
    use super::*;
    use std::os::fd::AsRawFd;

    #[allow(unsafe_code)] // getsockopt, to read back what allow_fragmentation set
    fn option(io: &UdpSocket, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an int-sized out parameter and its length, on a descriptor the socket owns.
        let rc = unsafe {
            libc::getsockopt(
                io.as_raw_fd(),
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        value
    }

    #[tokio::test]
    async fn quinn_udp_s_no_fragmentation_setting_is_undone() {
        // Without the fix, quinn-udp leaves IP_PMTUDISC_PROBE (DF set, never fragment): a
        // datagram larger than the path MTU would be refused with EMSGSIZE.
        let v4 = BatchSocket::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap();
        assert_eq!(
            option(v4.get_ref(), libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            libc::IP_PMTUDISC_WANT
        );
        let v6 = BatchSocket::new(UdpSocket::bind("[::1]:0").await.unwrap()).unwrap();
        assert_eq!(
            option(v6.get_ref(), libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
            libc::IPV6_PMTUDISC_WANT
        );
        assert_eq!(option(v6.get_ref(), libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG), 0);
    }
}
