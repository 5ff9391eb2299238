//! UDP under overload (issue 10, item 3): a SOCKS5 UDP client sends 1200-byte datagrams
//! unpaced for a few seconds at an echo server that echoes everything, over each UDP
//! transport. UDP may drop datagrams then, but nothing may wedge: afterwards a new association
//! makes a normal round trip, and once the old association's control connection closes, every
//! socket it had is closed — the local's relay socket and (for `udp_transport: tcp`) the
//! remote's outbound socket, both observed from outside as ICMP port unreachable
//! (ECONNREFUSED on a connected UDP socket). And the remote returns promptly from `run` when
//! shut down with an overloaded association open, although its `shutdown_grace` is long.
//!
//! Before the fix, `udp_transport: tcp` froze here: both ends waited in `write_all` towards
//! each other and neither read, so the old association ignored its control connection closing
//! and kept its sockets, and the remote's shutdown waited for the whole grace period.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpStream, UdpSocket};
use warren_common::proto::address::Address;
use warren_common::proto::socks5::{Command, ReplyCode};
use warren_common::proto::udp::Socks5Datagram;
use warren_common::proto::{decode_exact, Encode};
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
    let (control, reply, _) = within(
        20,
        "UDP ASSOCIATE reply",
        socks5_request(pair.socks(), Command::UdpAssociate, &Address::UNSPECIFIED),
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
    (Client { control, client, flooder }, relay)
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
    assert!(!outbound.is_empty(), "{transport}: the echo server heard the association");

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
