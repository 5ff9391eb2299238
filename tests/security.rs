//! Security properties of warren-remote, proved over real sockets: it stays silent towards
//! probes, wrong keys, replays and stale or future timestamps (no byte back, no outbound
//! connection, closed only after the hold time), and its outbound ACL holds for literal
//! addresses, names, IPv4-mapped addresses, names that resolve into a denied block and the
//! remote host's own interface addresses.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use warren_common::crypto::{random_salt, Key};
use warren_common::proto::address::Address;
use warren_common::proto::header::RequestHeader;
use warren_common::proto::socks5::ReplyCode;
use warren_common::proto::status::Status;
use warren_common::time::unix_now;
use warren_common::tunnel::PendingTunnel;
use warren_tests::*;

/// The remote's handshake deadline in these tests (`handshake_timeout: 1.5`).
const HANDSHAKE: Duration = Duration::from_millis(1500);
/// Remote settings: the short handshake deadline, and loopback targets allowed (they live there).
const REMOTE_EXTRA: &str = "handshake_timeout: 1.5\nacl:\n  - allow: \"127.0.0.0/8\"";
/// Upper bound for anything the tests wait for.
const BOUND: Duration = Duration::from_secs(10);

/// `len` random bytes.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        out.extend_from_slice(&random_salt());
    }
    out.truncate(len);
    out
}

/// Asserts that the remote answers nothing on `stream`, keeps it open at ~0.5 s, and closes it
/// after its hold time, at least 0.57 × the handshake deadline (measured from `opened`, taken
/// before connecting), but within 10 s.
async fn assert_silent_then_closed(stream: &mut TcpStream, opened: Instant, what: &str) {
    let mut buf = [0u8; 4096];
    match timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
        Err(_) => {}
        Ok(Ok(0)) => panic!("{what}: closed early, after {:?}", opened.elapsed()),
        Ok(Ok(n)) => panic!("{what}: the remote sent {n} bytes"),
        Ok(Err(e)) => panic!("{what}: connection failed early: {e}"),
    }
    match timeout(BOUND, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!("{what}: the remote sent {n} bytes"),
        Err(_) => panic!("{what}: still open after 10 s"),
    }
    // The hold is 0.57–1.0 × handshake_timeout, chosen per server and connection (hold.rs).
    let lived = opened.elapsed();
    assert!(
        lived >= HANDSHAKE.mul_f64(0.57) - Duration::from_millis(100),
        "{what}: closed after {lived:?}, before the shortest hold"
    );
}

/// A stream wrapper that keeps a copy of every byte written through it.
struct Recorder<S> {
    inner: S,
    written: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.written.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Sends a tunnel request for `target` stamped `timestamp` and returns the socket, without
/// reading anything back.
async fn send_stamped(remote: SocketAddr, key: &Key, target: SocketAddr, timestamp: u64) -> TcpStream {
    let mut stream = TcpStream::connect(remote).await.expect("connect to the remote");
    let header = RequestHeader::connect(Address::Ip(target), timestamp);
    PendingTunnel::send_request(&mut stream, key, &header, b"")
        .await
        .expect("send the request");
    stream
}

/// A SOCKS5 CONNECT through `socks`, answered within 10 s; returns the reply code.
async fn connect_code(socks: SocketAddr, target: &Address) -> ReplyCode {
    let (_stream, reply) = timeout(BOUND, socks5_connect(socks, target, None))
        .await
        .unwrap_or_else(|_| panic!("no SOCKS5 reply for {target} within 10 s"))
        .unwrap_or_else(|e| panic!("SOCKS5 CONNECT to {target}: {e}"));
    if reply.code != ReplyCode::Succeeded {
        assert_eq!(reply.bound, Address::UNSPECIFIED, "error reply for {target}");
    }
    reply.code
}

/// A SOCKS5 CONNECT through `socks` that must succeed; proves the relay works with an echo.
async fn connect_and_echo(socks: SocketAddr, target: &Address) {
    let (mut stream, reply) = timeout(BOUND, socks5_connect(socks, target, None))
        .await
        .expect("SOCKS5 reply within 10 s")
        .expect("SOCKS5 CONNECT");
    assert_eq!(reply.code, ReplyCode::Succeeded, "CONNECT to {target}");
    stream.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    timeout(BOUND, stream.read_exact(&mut got))
        .await
        .expect("echo within 10 s")
        .expect("echo");
    assert_eq!(&got, b"ping", "echo via {target}");
}

fn ip(addr: &str) -> Address {
    Address::Ip(addr.parse().unwrap())
}

// Random bytes of any length get no byte back, keep the connection open until the handshake
// deadline, then see it closed; nothing is connected to, and genuine clients still get through.
#[tokio::test(flavor = "multi_thread")]
async fn probes_get_silence_until_the_deadline_and_no_outbound_connection() {
    let target = target("127.0.0.1:0").await;
    let key = new_key();
    let remote = start_remote(&key, REMOTE_EXTRA).await;
    let mut probes = Vec::new();
    for len in [10, 60, 200] {
        let addr = remote.addr;
        probes.push(tokio::spawn(async move {
            let opened = Instant::now();
            let mut stream = TcpStream::connect(addr).await.expect("connect to the remote");
            stream.write_all(&random_bytes(len)).await.expect("send the probe");
            assert_silent_then_closed(&mut stream, opened, &format!("{len}-byte probe")).await;
        }));
    }
    for probe in probes {
        probe.await.expect("probe task");
    }
    assert_eq!(target.connections().await, 0, "a probe caused an outbound connection");

    let local = start_local(&key, remote.addr, "").await;
    connect_and_echo(local.addr, &Address::Ip(target.addr)).await;
    assert_eq!(target.connections().await, 1);
    local.stop().await;
    remote.stop().await;
}

// Ends with different keys: the SOCKS5 client gets GeneralFailure (0x01) within 10 s, and the
// remote connects to nothing.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_key_gets_general_failure_and_no_outbound_connection() {
    let target = target("127.0.0.1:0").await;
    let remote = start_remote(&new_key(), "handshake_timeout: 1\nacl:\n  - allow: \"127.0.0.0/8\"").await;
    let local = start_local(&new_key(), remote.addr, "connect_timeout: 3").await;
    let code = connect_code(local.addr, &Address::Ip(target.addr)).await;
    assert_eq!(code, ReplyCode::GeneralFailure);
    assert_eq!(target.connections().await, 0);
    local.stop().await;
    remote.stop().await;
}

// A recorded genuine session played again byte for byte on a new connection gets silence and
// causes no second outbound connection.
#[tokio::test(flavor = "multi_thread")]
async fn replayed_request_gets_silence_and_no_outbound_connection() {
    let target = target("127.0.0.1:0").await;
    let key_text = new_key();
    let key = Key::from_base64(&key_text).unwrap();
    let remote = start_remote(&key_text, REMOTE_EXTRA).await;

    let written = Arc::new(Mutex::new(Vec::new()));
    let stream = Recorder {
        inner: TcpStream::connect(remote.addr).await.unwrap(),
        written: written.clone(),
    };
    let header = RequestHeader::connect(Address::Ip(target.addr), unix_now());
    let pending = PendingTunnel::send_request(stream, &key, &header, b"ping")
        .await
        .expect("send the request");
    let (response, mut tunnel) = timeout(BOUND, pending.read_response())
        .await
        .expect("response within 10 s")
        .expect("genuine request answered");
    assert_eq!(response.status, Status::Succeeded);
    let mut got = [0u8; 4];
    timeout(BOUND, tunnel.read_exact(&mut got))
        .await
        .expect("echo within 10 s")
        .expect("echo");
    assert_eq!(&got, b"ping");
    drop(tunnel);
    assert_eq!(target.connections().await, 1);

    let recorded = written.lock().unwrap().clone();
    assert!(recorded.len() > 32 + 18, "recorded only {} bytes", recorded.len());
    let opened = Instant::now();
    let mut replay = TcpStream::connect(remote.addr).await.unwrap();
    replay.write_all(&recorded).await.unwrap();
    assert_silent_then_closed(&mut replay, opened, "replayed request").await;
    assert_eq!(target.connections().await, 1, "the replay reached the target");
    remote.stop().await;
}

// Requests stamped 1000 s in the past or future (right key) get silence and no outbound
// connection; requests 60 s off either way are inside the window and answered.
#[tokio::test(flavor = "multi_thread")]
async fn timestamps_outside_the_window_get_silence_inside_are_served() {
    let target = target("127.0.0.1:0").await;
    let key_text = new_key();
    let key = Key::from_base64(&key_text).unwrap();
    // A remote up for a while: a stamp 60 s in the past is then after its start (PROTOCOL.md
    // §10 refuses stamps from before a remote started).
    let remote = start_remote_since(&key_text, REMOTE_EXTRA, unix_now() - 600).await;

    for (offset, what) in [(-1000i64, "1000 s in the past"), (1000, "1000 s in the future")] {
        let opened = Instant::now();
        let stamp = unix_now().checked_add_signed(offset).unwrap();
        let mut stream = send_stamped(remote.addr, &key, target.addr, stamp).await;
        assert_silent_then_closed(&mut stream, opened, what).await;
    }
    assert_eq!(target.connections().await, 0);

    for offset in [-60i64, 60] {
        let mut stream = TcpStream::connect(remote.addr).await.unwrap();
        let stamp = unix_now().checked_add_signed(offset).unwrap();
        let header = RequestHeader::connect(Address::Ip(target.addr), stamp);
        let pending = PendingTunnel::send_request(&mut stream, &key, &header, b"")
            .await
            .unwrap();
        let (response, _tunnel) = timeout(BOUND, pending.read_response())
            .await
            .unwrap_or_else(|_| panic!("no response within 10 s at {offset:+} s"))
            .unwrap_or_else(|e| panic!("request at {offset:+} s: {e}"));
        assert_eq!(response.status, Status::Succeeded, "at {offset:+} s");
    }
    assert_eq!(target.connections().await, 2);
    remote.stop().await;
}

// With no ACL rules the remote's own host is off limits: 127.0.0.1, [::1], "localhost",
// 0.0.0.0 and the IPv4-mapped ::ffff:127.0.0.1 all get NotAllowed (0x02) and reach nothing.
#[tokio::test(flavor = "multi_thread")]
async fn default_acl_denies_the_remote_host_itself() {
    let v4 = target("127.0.0.1:0").await;
    let v6 = target("[::1]:0").await;
    let pair = start_pair("acl: []", "").await;
    let port = v4.addr.port();
    for addr in [
        Address::Ip(v4.addr),
        Address::Ip(v6.addr),
        Address::domain("localhost", port).unwrap(),
        Address::domain("localhost", v6.addr.port()).unwrap(),
        ip(&format!("0.0.0.0:{port}")),
        ip(&format!("[::ffff:127.0.0.1]:{port}")),
    ] {
        assert_eq!(connect_code(pair.socks(), &addr).await, ReplyCode::NotAllowed, "{addr}");
    }
    assert_eq!(v4.connections().await, 0);
    assert_eq!(v6.connections().await, 0);
    pair.local.stop().await;
    pair.remote.stop().await;
}

// `allow: 127.0.0.1` opens exactly that address (also in its IPv4-mapped form); ::1 stays denied.
#[tokio::test(flavor = "multi_thread")]
async fn acl_allow_rule_opens_one_address() {
    let v4 = target("127.0.0.1:0").await;
    let v6 = target("[::1]:0").await;
    let pair = start_pair("acl:\n  - allow: \"127.0.0.1\"", "").await;
    connect_and_echo(pair.socks(), &Address::Ip(v4.addr)).await;
    connect_and_echo(pair.socks(), &ip(&format!("[::ffff:127.0.0.1]:{}", v4.addr.port()))).await;
    assert_eq!(
        connect_code(pair.socks(), &Address::Ip(v6.addr)).await,
        ReplyCode::NotAllowed
    );
    assert_eq!(v4.connections().await, 2);
    assert_eq!(v6.connections().await, 0);
    pair.local.stop().await;
    pair.remote.stop().await;
}

// `allow: localhost` names the remote's own host but does not open it: only an IP or CIDR
// allow lifts the built-in loopback deny (a name can be made to resolve anywhere).
#[tokio::test(flavor = "multi_thread")]
async fn acl_name_allow_does_not_open_the_remote_host() {
    let v4 = target("127.0.0.1:0").await;
    let pair = start_pair("acl:\n  - allow: \"localhost\"", "").await;
    let name = Address::domain("localhost", v4.addr.port()).unwrap();
    assert_eq!(connect_code(pair.socks(), &name).await, ReplyCode::NotAllowed);
    assert_eq!(
        connect_code(pair.socks(), &Address::Ip(v4.addr)).await,
        ReplyCode::NotAllowed
    );
    assert_eq!(v4.connections().await, 0);
    pair.local.stop().await;
    pair.remote.stop().await;
}

// A name rule ahead of an IP rule decides for the name only: "localhost" is denied while the
// literal 127.0.0.1 it resolves to is allowed.
#[tokio::test(flavor = "multi_thread")]
async fn acl_name_deny_blocks_the_name_not_the_literal() {
    let target = target("127.0.0.1:0").await;
    let pair = start_pair("acl:\n  - deny: \"localhost\"\n  - allow: \"127.0.0.0/8\"", "").await;
    let port = target.addr.port();
    assert_eq!(
        connect_code(pair.socks(), &Address::domain("localhost", port).unwrap()).await,
        ReplyCode::NotAllowed
    );
    assert_eq!(target.connections().await, 0);
    connect_and_echo(pair.socks(), &Address::Ip(target.addr)).await;
    assert_eq!(target.connections().await, 1);
    pair.local.stop().await;
    pair.remote.stop().await;
}

// DNS rebinding: a name allowed by a rule still cannot reach addresses an earlier IP rule
// denies, because every resolved address is checked; with `deny 127.0.0.0/8, allow ::1`, the
// name "localhost" never reaches 127.0.0.1.
#[tokio::test(flavor = "multi_thread")]
async fn acl_names_resolving_into_a_denied_block_are_denied() {
    let target = target("127.0.0.1:0").await;
    let port = target.addr.port();
    let localhost = Address::domain("localhost", port).unwrap();

    let pair = start_pair(
        "acl:\n  - deny: \"127.0.0.0/8\"\n  - deny: \"::1\"\n  - allow: \"localhost\"",
        "",
    )
    .await;
    assert_eq!(connect_code(pair.socks(), &localhost).await, ReplyCode::NotAllowed);
    pair.local.stop().await;
    pair.remote.stop().await;

    let pair = start_pair("acl:\n  - deny: \"127.0.0.0/8\"\n  - allow: \"::1\"", "").await;
    let code = connect_code(pair.socks(), &localhost).await;
    let has_v6 = tokio::net::lookup_host(("localhost", port))
        .await
        .unwrap()
        .any(|a| a.is_ipv6());
    if has_v6 {
        // "localhost" also resolves to ::1, which is allowed; nothing listens there.
        assert_eq!(code, ReplyCode::ConnectionRefused, "[::1]:{port} refuses");
    } else {
        assert_eq!(code, ReplyCode::NotAllowed);
    }
    assert_eq!(target.connections().await, 0);
    pair.local.stop().await;
    pair.remote.stop().await;
}

// The remote's own interface addresses are built-in denies: a service bound on 0.0.0.0 of the
// remote's host, asked for at the host's non-loopback address, gets NotAllowed (0x02) and sees
// nothing; an explicit `allow: "<that ip>/32"` opens it.
#[tokio::test(flavor = "multi_thread")]
async fn acl_denies_the_remote_hosts_own_addresses() {
    let own = warren_remote::own_addresses().into_iter().find(|a| {
        let a = a.to_canonical();
        !a.is_loopback() && !matches!(a, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
    });
    let Some(own) = own else {
        println!("skipped: this machine has no non-loopback, non-link-local interface address");
        return;
    };
    let service = target(if own.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await;
    let at_own = Address::Ip(SocketAddr::new(own, service.addr.port()));
    let pair = start_pair("", "").await;
    assert_eq!(
        connect_code(pair.socks(), &at_own).await,
        ReplyCode::NotAllowed,
        "{at_own}"
    );
    assert_eq!(service.connections().await, 0, "the denied request reached the service");
    pair.local.stop().await;
    pair.remote.stop().await;

    let net = if own.is_ipv4() { 32 } else { 128 };
    let pair = start_pair(&format!("acl:\n  - allow: \"{own}/{net}\""), "").await;
    connect_and_echo(pair.socks(), &at_own).await;
    pair.local.stop().await;
    pair.remote.stop().await;
}
