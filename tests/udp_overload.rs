//! UDP under overload (issue 10, item 3): a SOCKS5 UDP client sends 1200-byte datagrams
//! unpaced for a few seconds at an echo server that echoes everything, over each UDP
//! transport. UDP may drop datagrams then, but nothing may wedge: afterwards a new association
//! makes a normal round trip, and once the old association's control connection closes, every
//! socket it had is closed — the local's relay socket and (for `udp_transport: tcp`) the
//! remote's outbound socket, both observed from outside as ICMP port unreachable
//! (ECONNREFUSED on a connected UDP socket). And the remote returns promptly from `run` when
//! shut down with an overloaded association open, although its `shutdown_grace` is long.
//!
//! Two more tests make the wedge certain instead of likely: a tunnel peer (a raw local, a fake
//! remote) that never reads the UDP-over-TCP stream, while it writes far more than the
//! kernel's buffers hold. Each end must keep reading its tunnel regardless.
//!
//! Before the fix, `udp_transport: tcp` froze: both ends waited in `write_all` towards each
//! other and neither read, so the association ignored its control connection closing and kept
//! its sockets, and the remote's shutdown waited for the whole grace period. (On this loopback
//! in a debug build the two-sided flood wedged rarely; the never-reading peers always did.)

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use warren_common::crypto::Key;
use warren_common::proto::address::Address;
use warren_common::proto::header::{self, RequestHeader, ResponseHeader};
use warren_common::proto::socks5::{Command, ReplyCode};
use warren_common::proto::status::Status;
use warren_common::proto::udp::{DatagramFrame, Socks5Datagram};
use warren_common::proto::{decode_exact, Encode};
use warren_common::time::unix_now;
use warren_common::tunnel::{AcceptedRequest, PendingTunnel};
use warren_tests::*;

/// The flood: at most this many datagrams ...
const FLOOD_COUNT: usize = 200_000;
/// ... or for at most this long, whichever ends first.
const FLOOD_FOR: Duration = Duration::from_secs(3);
const FLOOD_SIZE: usize = 1200;
/// A bound that only catches a hang: sockets close well within a second when nothing wedges.
const CLOSE_BOUND: Duration = Duration::from_secs(30);

/// A UDP echo server that remembers every address it heard from (the remote's outbound
/// sockets, as the target sees them).
struct Echo {
    addr: SocketAddr,
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
}

impl Echo {
    /// Runs on its own thread with a blocking socket, so it echoes as fast as the kernel lets
    /// it, whatever the test's runtime is doing.
    async fn start() -> Echo {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(HashSet::new()));
        let seen = peers.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                seen.lock().unwrap().insert(from);
                let _ = socket.send_to(&buf[..n], from);
            }
        });
        Echo { addr, peers }
    }

    fn peers(&self) -> HashSet<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

fn datagram(target: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Socks5Datagram {
        frag: 0,
        address: Address::Ip(target),
        data: data.to_vec(),
    }
    .encode(&mut out);
    out
}

/// One association's client: its control connection, and one UDP socket connected to the
/// relay, as a tokio socket and as a second handle that a thread floods through.
struct Client {
    control: TcpStream,
    client: UdpSocket,
    flooder: std::net::UdpSocket,
}

/// Opens an association (DST 0.0.0.0:0) and a client socket connected to its relay.
async fn associate(pair: &Pair) -> (Client, SocketAddr) {
    associate_at(pair.socks()).await
}

/// [`associate`] through the local listening on `socks`.
async fn associate_at(socks: SocketAddr) -> (Client, SocketAddr) {
    let (control, reply, _) = within(
        20,
        "UDP ASSOCIATE reply",
        socks5_request(socks, Command::UdpAssociate, &Address::UNSPECIFIED),
    )
    .await
    .expect("UDP ASSOCIATE");
    assert_eq!(reply.code, ReplyCode::Succeeded);
    let Address::Ip(relay) = reply.bound else {
        panic!("relay address is an IP: {:?}", reply.bound)
    };
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(relay).unwrap();
    client.set_nonblocking(true).unwrap();
    let flooder = client.try_clone().unwrap();
    let client = UdpSocket::from_std(client).unwrap();
    (
        Client {
            control,
            client,
            flooder,
        },
        relay,
    )
}

/// Sends unpaced for [`FLOOD_FOR`] or [`FLOOD_COUNT`] datagrams from a thread of its own (as
/// fast as the kernel takes them); returns how many were sent. The client never reads: the
/// echoes pile up towards it.
async fn flood(client: &Client, target: SocketAddr) -> usize {
    let packet = datagram(target, &pattern(FLOOD_SIZE));
    let socket = client.flooder.try_clone().unwrap();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut sent = 0;
        while sent < FLOOD_COUNT && started.elapsed() < FLOOD_FOR {
            // The socket is non-blocking (it is shared with tokio): a full send buffer or a
            // refusal (ICMP from an earlier datagram) loses this datagram; that is allowed.
            if socket.send(&packet).is_ok() {
                sent += 1;
            }
        }
        sent
    })
    .await
    .unwrap()
}

/// A normal round trip: resends every half second until the echo comes back.
async fn round_trip(client: &UdpSocket, target: SocketAddr, word: &[u8]) {
    let packet = datagram(target, word);
    let mut buf = vec![0u8; 65536];
    within(20, "a round trip on a new association", async {
        loop {
            client.send(&packet).await.unwrap();
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buf)).await {
                if let Ok(d) = decode_exact::<Socks5Datagram>(&buf[..n]) {
                    if d.data == word && d.address == Address::Ip(target) {
                        return;
                    }
                }
            }
        }
    })
    .await;
}

/// True once `addr` answers with ICMP port unreachable (nothing is bound there any more),
/// probing until [`CLOSE_BOUND`].
async fn refuses(addr: SocketAddr) -> bool {
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    probe.connect(addr).await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 65536];
    while started.elapsed() < CLOSE_BOUND {
        if let Err(e) = probe.send(b"anyone?").await {
            if e.kind() == ErrorKind::ConnectionRefused {
                return true;
            }
        }
        match tokio::time::timeout(Duration::from_millis(100), probe.recv(&mut buf)).await {
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => return true,
            _ => {}
        }
    }
    false
}

/// Floods one association over `transport`, then checks the new association and the old
/// one's sockets. `remote_side`: whether the remote's outbound sockets are checked too.
async fn overload(transport: &str, remote_side: bool) {
    let echo = Echo::start().await;
    let pair = start_pair("", &format!("udp_transport: {transport}")).await;
    let (old, relay) = associate(&pair).await;
    round_trip(&old.client, echo.addr, b"before").await;
    let sent = flood(&old, echo.addr).await;
    let outbound = echo.peers();
    assert!(
        !outbound.is_empty(),
        "{transport}: the echo server heard the association"
    );

    let (new, _) = associate(&pair).await;
    round_trip(&new.client, echo.addr, b"after").await;

    drop(old.control);
    assert!(
        refuses(relay).await,
        "{transport}: the local's relay socket closed after its control connection (flood of {sent})"
    );
    if remote_side {
        for addr in outbound {
            assert!(
                refuses(addr).await,
                "{transport}: the remote's outbound socket {addr} closed after the association ended"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_over_tcp_survives_an_unpaced_flood_and_the_old_association_closes() {
    overload("tcp", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_packets_survive_an_unpaced_flood_and_the_old_association_closes() {
    // Only the local side: with `udp_transport: udp` the remote learns that an association ended
    // from the end-of-association packet (the UDP packet crypto work of issue 10 adds it); until
    // then its NAT entry lives until `remote.idle_timeout`.
    overload("udp", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_returns_promptly_on_shutdown_with_an_overloaded_association_open() {
    let echo = Echo::start().await;
    // A grace period far longer than the bound below: only an association that ends on
    // shutdown lets `run` return in time.
    let pair = start_pair("shutdown_grace: 600", "udp_transport: tcp").await;
    let (client, _) = associate(&pair).await;
    round_trip(&client.client, echo.addr, b"before").await;
    flood(&client, echo.addr).await;
    let Pair { local, remote } = pair;
    within(30, "the remote's run returns after shutdown", remote.stop()).await;
    local.stop().await;
}

/// Datagram frames for `to` carrying 8 KiB each, [`UNREAD_BYTES`] in all, written in large
/// writes: far more than the kernel buffers between two ends that stopped reading each other
/// (send buffer up to 4 MiB, receive buffer up to 32 MiB on this kind of Linux).
const UNREAD_BYTES: usize = 128 << 20;

async fn write_frames(tunnel: &mut (impl tokio::io::AsyncWrite + Unpin), to: SocketAddr) {
    let mut batch = Vec::new();
    let payload = pattern(8 * 1024);
    while batch.len() < 256 * 1024 {
        DatagramFrame::encode_parts(&Address::Ip(to), &payload, &mut batch).unwrap();
    }
    for _ in 0..UNREAD_BYTES / batch.len() {
        tunnel.write_all(&batch).await.unwrap();
    }
    tunnel.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_keeps_reading_a_tunnel_whose_local_never_reads() {
    let echo = Echo::start().await;
    let key = new_key();
    let remote = start_remote(&key, "acl:\n  - allow: \"127.0.0.0/8\"").await;
    let tcp = TcpStream::connect(remote.addr).await.unwrap();
    let request = RequestHeader::new(header::Command::UdpOverTcp, Address::UNSPECIFIED, unix_now());
    let pending = PendingTunnel::send_request(tcp, &Key::from_base64(&key).unwrap(), &request, b"")
        .await
        .unwrap();
    let (response, mut tunnel) = within(20, "the response", pending.read_response()).await.unwrap();
    assert_eq!(response.status, Status::Succeeded);
    // Every frame is echoed back towards us, and we never read: the remote's writes stall.
    within(
        60,
        "the remote reading every frame we write",
        write_frames(&mut tunnel, echo.addr),
    )
    .await;
    let outbound = echo.peers();
    assert!(!outbound.is_empty(), "the remote sent our datagrams out");
    // Our end-of-stream chunk ends the association, although its answers are still unread.
    tunnel.shutdown().await.unwrap();
    for addr in outbound {
        assert!(refuses(addr).await, "the remote's outbound socket {addr} closed");
    }
    drop(tunnel);
    remote.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_keeps_reading_a_tunnel_whose_remote_never_reads() {
    // A fake remote: it answers the UDP-over-TCP request, then only writes.
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let key = new_key();
    let local = start_local(&key, fake.local_addr().unwrap(), "udp_transport: tcp").await;
    let socks = local.addr;
    let associating = tokio::spawn(async move { associate_at(socks).await });
    let (mut stream, _) = within(20, "the local's tunnel", fake.accept()).await.unwrap();
    let key = Key::from_base64(&key).unwrap();
    let accepted = AcceptedRequest::read(&mut stream, &[&key], None, false).await.unwrap();
    assert_eq!(accepted.header.command, header::Command::UdpOverTcp);
    let response = ResponseHeader::new(accepted.salt, Status::Succeeded, unix_now(), Address::UNSPECIFIED);
    let mut tunnel = accepted.respond(stream, &response, &[]).await.unwrap();
    let (client, relay) = associating.await.unwrap();
    // The client floods the relay, so the local has datagrams to write towards a fake remote
    // that never reads them; meanwhile the fake remote writes far more than the buffers hold.
    let flooding = flood(&client, "127.0.0.1:9".parse().unwrap());
    let writing = within(60, "the local reading every frame the remote writes", async {
        write_frames(&mut tunnel, "127.0.0.1:9".parse().unwrap()).await;
    });
    tokio::join!(flooding, writing);
    drop(client.control);
    assert!(
        refuses(relay).await,
        "the local's relay socket closed after its control connection"
    );
    drop(tunnel);
    local.stop().await;
}
