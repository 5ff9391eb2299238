//! Warm connections (local/src/outbound/warm.rs) through real sockets: a relay between
//! warren-local and warren-remote numbers the TCP connections the local opens and records which
//! ones carried bytes, so a test can tell a request that rode a connection opened before it from
//! one that paid for its own TCP handshake.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use warren_common::proto::address::Address;
use warren_common::proto::socks5::ReplyCode;
use warren_tests::*;

/// What the relay saw of each connection, in accept order.
#[derive(Debug, Default, Clone)]
struct Conn {
    /// Bytes the local sent on it.
    sent: usize,
    /// The local closed it.
    closed: bool,
}

#[derive(Default)]
struct Relay {
    conns: Mutex<Vec<Conn>>,
    changed: Notify,
    /// Tells every connection that has carried nothing yet to close (a remote giving up on
    /// silent connections, or a restart).
    cut_idle: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    fn snapshot(&self) -> Vec<Conn> {
        self.conns.lock().unwrap().clone()
    }

    /// Waits until `ready(connections)` holds (bounded by `within`).
    async fn wait_for(&self, what: &str, ready: impl Fn(&[Conn]) -> bool) -> Vec<Conn> {
        within(20, what, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let conns = self.snapshot();
                if ready(&conns) {
                    return conns;
                }
                changed.await;
            }
        })
        .await
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut Conn)) {
        if let Some(conn) = self.conns.lock().unwrap().get_mut(index) {
            f(conn);
        }
        self.changed.notify_waiters();
    }
}

/// A TCP relay to `upstream` that records every connection (see [`Conn`]).
async fn relay(upstream: SocketAddr) -> (SocketAddr, Arc<Relay>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let relay = Arc::new(Relay::default());
    let state = relay.clone();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            let index = {
                let mut conns = state.conns.lock().unwrap();
                conns.push(Conn::default());
                conns.len() - 1
            };
            state.changed.notify_waiters();
            let state = state.clone();
            tokio::spawn(async move {
                let Ok(mut up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut down_read, mut down_write) = down.split();
                let (mut up_read, mut up_write) = up.split();
                let to_remote = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = down_read.read(&mut buf).await {
                        if n == 0 || up_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        state.update(index, |c| c.sent += n);
                    }
                    state.update(index, |c| c.closed = true);
                    let _ = up_write.shutdown().await;
                };
                let to_local = async {
                    let _ = tokio::io::copy(&mut up_read, &mut down_write).await;
                    let _ = down_write.shutdown().await;
                };
                let mut cut = state.cut_idle.subscribe();
                let idle_cut = async {
                    loop {
                        if cut.changed().await.is_err() {
                            return std::future::pending().await;
                        }
                        let idle = state.conns.lock().unwrap().get(index).is_some_and(|c| c.sent == 0);
                        if *cut.borrow() && idle {
                            return;
                        }
                    }
                };
                // A cut drops both sockets: the local sees its warm connection closed.
                tokio::select! {
                    _ = async { tokio::join!(to_remote, to_local) } => {}
                    () = idle_cut => {}
                }
            });
        }
    });
    (addr, relay)
}

/// A remote that allows loopback targets, the counting relay in front of it, a local with
/// `local_extra` pointed at the relay, and an echo server to reach.
struct Bed {
    _remote: Server,
    relay_addr: SocketAddr,
    relay: Arc<Relay>,
    local: Server,
    echo: SocketAddr,
}

impl Bed {
    async fn start(local_extra: &str) -> Bed {
        let key = new_key();
        let remote = start_remote(&key, "acl:\n  - allow: \"127.0.0.0/8\"").await;
        let (relay_addr, relay) = relay(remote.addr).await;
        let local = start_local(&key, relay_addr, local_extra).await;
        let echo = echo_server("127.0.0.1:0").await;
        Bed {
            _remote: remote,
            relay_addr,
            relay,
            local,
            echo,
        }
    }
}

/// One SOCKS5 CONNECT to the echo server through `proxy`, checked end to end.
async fn echo_once(proxy: SocketAddr, echo: SocketAddr) {
    let (mut stream, reply) = socks5_connect(proxy, &Address::Ip(echo), None).await.unwrap();
    assert_eq!(reply.code, ReplyCode::Succeeded);
    stream.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    within(10, "echo", stream.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"ping");
}

/// After a first request, the local opens `warm_connections` more to the remote; the second
/// request rides one of those, opened before it was made, and the pool is topped up again.
#[tokio::test]
async fn a_request_rides_a_connection_opened_before_it() {
    let bed = Bed::start("warm_connections: 2\nwarm_lifetime: 60\nwarm_linger: 600").await;
    let (relay, local, echo, _relay_addr) = (&bed.relay, &bed.local, bed.echo, bed.relay_addr);

    echo_once(local.addr, echo).await;
    let before = relay.wait_for("two warm connections", |c| c.len() >= 3).await;
    assert_eq!(before.iter().filter(|c| c.sent > 0).count(), 1, "{before:?}");

    echo_once(local.addr, echo).await;
    let after = relay.wait_for("a replacement", |c| c.len() >= 4).await;
    let carried: Vec<usize> = (0..after.len()).filter(|i| after[*i].sent > 0).collect();
    assert_eq!(carried.len(), 2, "{after:?}");
    assert!(
        carried[1] < before.len(),
        "the second request took connection {} of the {} open before it: {after:?}",
        carried[1],
        before.len()
    );
}

/// With `warm_connections: 0` every request opens its own connection and nothing else is
/// opened.
#[tokio::test]
async fn warm_connections_zero_opens_one_connection_per_request() {
    let bed = Bed::start("warm_connections: 0").await;
    let (relay, local, echo, _relay_addr) = (&bed.relay, &bed.local, bed.echo, bed.relay_addr);
    for _ in 0..3 {
        echo_once(local.addr, echo).await;
    }
    let conns = relay.snapshot();
    assert_eq!(conns.len(), 3, "{conns:?}");
    assert!(conns.iter().all(|c| c.sent > 0));
}

/// Unused warm connections are closed by the local, empty, at their lifetime and replaced while
/// requests keep coming; once none came for `warm_linger`, the local closes them all and opens
/// no more (it says so at debug level).
#[tokio::test]
async fn unused_warm_connections_close_empty_and_stop_after_the_linger_time() {
    capture_logs();
    let bed = Bed::start("warm_connections: 2\nwarm_lifetime: 0.2\nwarm_linger: 1").await;
    let (relay, local, echo, relay_addr) = (&bed.relay, &bed.local, bed.echo, bed.relay_addr);
    echo_once(local.addr, echo).await;
    // Lifetimes of 0.1-0.2 s: some warm connections close unused and are replaced.
    let conns = relay
        .wait_for("warm connections closed unused", |c| {
            c.iter().filter(|c| c.closed && c.sent == 0).count() >= 2
        })
        .await;
    assert_eq!(conns.iter().filter(|c| c.sent > 0).count(), 1, "{conns:?}");
    let name = relay_addr.to_string();
    log_line(&[&name, "no request for the linger time"]).await;
    let conns = relay
        .wait_for("every warm connection closed", |c| {
            c.iter().all(|c| c.closed || c.sent > 0)
        })
        .await;
    assert!(conns.iter().filter(|c| c.sent == 0).all(|c| c.closed), "{conns:?}");
    // A request after the linger time still works (and starts warming again).
    echo_once(local.addr, echo).await;
}

/// Warm connections the remote side closed while they waited are noticed when a request comes:
/// the request goes over a fresh connection and succeeds.
#[tokio::test]
async fn a_warm_connection_closed_by_the_far_side_is_not_used() {
    let bed = Bed::start("warm_connections: 2\nwarm_lifetime: 60\nwarm_linger: 600").await;
    let (relay, local, echo, _relay_addr) = (&bed.relay, &bed.local, bed.echo, bed.relay_addr);
    echo_once(local.addr, echo).await;
    let warmed = relay.wait_for("two warm connections", |c| c.len() >= 3).await.len();
    relay.cut_idle.send_replace(true);
    echo_once(local.addr, echo).await;
    let conns = relay.snapshot();
    let carried: Vec<usize> = (0..conns.len()).filter(|i| conns[*i].sent > 0).collect();
    assert_eq!(carried.len(), 2, "{conns:?}");
    assert!(
        carried[1] >= warmed,
        "the request rode a connection the far side had closed: {conns:?}"
    );
}
