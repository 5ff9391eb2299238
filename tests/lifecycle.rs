//! Deadlines, the connection cap and shutdown of warren-local, and that a flood of connections
//! leaves no file descriptor behind.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warren_common::proto::Encode;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Barrier, RwLock};
use tokio::task::JoinSet;
use warren_common::proto::address::Address;
use warren_common::proto::socks5::{Command, Reply, ReplyCode, Request};
use warren_tests::*;

/// Tests in this binary share one process, so its fd table: the fd test takes this lock
/// exclusively, every other test shares it.
static FD_TABLE: RwLock<()> = RwLock::const_new(());

/// Sends `data` and expects it back from the echo server behind the tunnel.
async fn echo_once(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).await.expect("write");
    let mut back = vec![0u8; data.len()];
    within(10, "echo", stream.read_exact(&mut back))
        .await
        .expect("read echo");
    assert_eq!(back, data);
}

/// A CONNECT to the echo server that must succeed.
async fn connect_echo(proxy: SocketAddr, echo: SocketAddr) -> TcpStream {
    let (stream, reply) = socks5_connect(proxy, &Address::Ip(echo), None).await.expect("CONNECT");
    assert_eq!(reply.code, ReplyCode::Succeeded);
    stream
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

// A client dribbling its handshake (a byte per 300 ms) is closed at the 1 s handshake deadline.
#[tokio::test]
async fn dribbled_handshake_is_closed_at_the_deadline() {
    let _shared = FD_TABLE.read().await;
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "handshake_timeout: 1").await;
    let mut handshake = vec![0x05, 0x01, 0x00];
    Request {
        command: Command::Connect,
        target: Address::Ip(echo),
    }
    .encode(&mut handshake);
    let stream = TcpStream::connect(pair.socks()).await.unwrap();
    let started = Instant::now();
    let (mut r, mut w) = stream.into_split();
    // 13 bytes take 3.9 s: finished, they would earn a success reply.
    let dribbler = tokio::spawn(async move {
        for byte in handshake {
            if w.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        w
    });
    let got = read_until_closed(&mut r).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the handshake deadline",
        started.elapsed()
    );
    assert!(
        [0x05, 0x00].starts_with(&got),
        "got {got:?}: at most the method choice, never a reply"
    );
    dribbler.abort();
}

// With idle_timeout 1 on both ends, a silent tunnelled connection is closed.
#[tokio::test]
async fn idle_connection_is_closed() {
    let _shared = FD_TABLE.read().await;
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("idle_timeout: 1", "idle_timeout: 1").await;
    let mut stream = connect_echo(pair.socks(), echo).await;
    echo_once(&mut stream, b"x").await;
    let silent_since = Instant::now();
    assert_eq!(read_until_closed(&mut stream).await, b"");
    assert!(
        silent_since.elapsed() >= Duration::from_millis(900),
        "closed after {:?} of silence, before the idle timeout",
        silent_since.elapsed()
    );
}

// With max_connections 2 and two open, a third client waits unanswered until one closes.
#[tokio::test]
async fn third_client_waits_for_a_free_slot() {
    let _shared = FD_TABLE.read().await;
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "max_connections: 2").await;
    let mut first = connect_echo(pair.socks(), echo).await;
    let mut second = connect_echo(pair.socks(), echo).await;
    echo_once(&mut first, b"one").await;
    echo_once(&mut second, b"two").await;

    let mut third = TcpStream::connect(pair.socks()).await.unwrap();
    third.write_all(&[0x05, 0x01, 0x00]).await.unwrap();
    let mut choice = [0u8; 2];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut choice)).await;
    assert!(
        early.is_err(),
        "third client answered while the cap was reached: {early:?}"
    );

    drop(first);
    within(10, "method choice", third.read_exact(&mut choice))
        .await
        .unwrap();
    assert_eq!(choice, [0x05, 0x00]);
    let mut out = Vec::new();
    Request {
        command: Command::Connect,
        target: Address::Ip(echo),
    }
    .encode(&mut out);
    third.write_all(&out).await.unwrap();
    let reply: Reply = within(10, "reply", read_message(&mut third, &mut BytesMut::new()))
        .await
        .unwrap();
    assert_eq!(reply.code, ReplyCode::Succeeded);
    echo_once(&mut third, b"three").await;
    echo_once(&mut second, b"still two").await;
}

/// After shutdown is signalled, polls (at most ~5 s) until a new client is refused or closed
/// without any SOCKS answer; false if it is still served.
async fn new_clients_turned_away(proxy: SocketAddr) -> bool {
    for _ in 0..200 {
        let Ok(mut stream) = TcpStream::connect(proxy).await else {
            return true;
        };
        let _ = stream.write_all(&[0x05, 0x01, 0x00]).await;
        let mut buf = [0u8; 2];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) | Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

// On shutdown the local stops accepting, open connections keep working, and it returns once
// they close.
#[tokio::test]
async fn shutdown_drains_open_connections() {
    let _shared = FD_TABLE.read().await;
    let echo = echo_server("127.0.0.1:0").await;
    let Pair { local, remote } = start_pair("", "shutdown_grace: 60").await;
    let mut stream = connect_echo(local.addr, echo).await;
    echo_once(&mut stream, b"before").await;

    local.shutdown.cancel();
    assert!(
        new_clients_turned_away(local.addr).await,
        "new clients still served after shutdown"
    );
    echo_once(&mut stream, b"after shutdown").await;
    assert!(!local.task.is_finished(), "returned with a connection open");

    stream.shutdown().await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, b"");
    drop(stream);
    within(10, "local task", local.task)
        .await
        .expect("local task ends without panic");
    remote.stop().await;
}

// With shutdown_grace 1, a connection still open after the grace period is closed and the
// local returns.
#[tokio::test]
async fn shutdown_grace_closes_lingering_connections() {
    let _shared = FD_TABLE.read().await;
    let echo = echo_server("127.0.0.1:0").await;
    let Pair { local, remote } = start_pair("", "shutdown_grace: 1").await;
    let mut stream = connect_echo(local.addr, echo).await;
    echo_once(&mut stream, b"open").await;

    local.shutdown.cancel();
    let signalled = Instant::now();
    assert_eq!(read_until_closed(&mut stream).await, b"");
    assert!(
        signalled.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the grace period ended",
        signalled.elapsed()
    );
    within(10, "local task", local.task)
        .await
        .expect("local task ends without panic");
    remote.stop().await;
}

// After 300 tunnelled connections and 100 garbage ones, the fd count returns to its baseline.
#[tokio::test(flavor = "multi_thread")]
async fn file_descriptors_return_to_baseline_after_a_flood() {
    let _exclusive = FD_TABLE.write().await;
    warren_common::net::raise_fd_limit();
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    let baseline = open_fds();

    // Every tunnelled session waits at the barrier with its sockets open; the last one in
    // records the fd count then, proving the flood really held descriptors at once.
    let barrier = Arc::new(Barrier::new(300));
    let peak = Arc::new(Mutex::new(0));
    let mut flood = JoinSet::new();
    for i in 0..300u32 {
        let (proxy, barrier, peak) = (pair.socks(), barrier.clone(), peak.clone());
        flood.spawn(async move {
            let mut stream = connect_echo(proxy, echo).await;
            echo_once(&mut stream, format!("session {i}").as_bytes()).await;
            if barrier.wait().await.is_leader() {
                *peak.lock().unwrap() = open_fds();
            }
            stream.shutdown().await.unwrap();
            assert_eq!(read_until_closed(&mut stream).await, b"");
        });
    }
    for _ in 0..100 {
        let proxy = pair.socks();
        flood.spawn(async move {
            let mut stream = TcpStream::connect(proxy).await.expect("connect");
            let _ = stream.write_all(b"\x16\x03\x01\x00\x05hello").await;
            assert_eq!(read_until_closed(&mut stream).await, b"");
        });
    }
    while let Some(done) = within(120, "flood", flood.join_next()).await {
        done.expect("flood task");
    }
    let peak = *peak.lock().unwrap();
    assert!(peak >= baseline + 600, "peak {peak} fds vs baseline {baseline}");

    let mut now = open_fds();
    for _ in 0..100 {
        if now <= baseline + 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = open_fds();
    }
    assert!(now <= baseline + 10, "{now} fds open, baseline {baseline}");
    pair.local.stop().await;
    pair.remote.stop().await;
}
