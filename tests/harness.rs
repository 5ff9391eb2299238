//! Test harness for the end-to-end tests: real warren-remote and warren-local servers (their
//! library entry points, each on its own 127.0.0.1:0 listener), real target servers, and a raw
//! SOCKS5 client. Nothing here sleeps to wait for start-up: a listener is bound before its
//! server task starts, so connecting right away always works.

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use warren_common::proto::Encode;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warren_common::config::{LocalConfig, RawConfig, RemoteConfig};
use warren_common::crypto::Key;
use warren_common::proto::address::Address;
use warren_common::proto::socks5::{
    Command, Greeting, MethodSelection, Reply, Request, UserPassReply, UserPassRequest,
};
use warren_common::proto::{decode_prefix, Decode, DecodeError};

#[path = "campus_bed.rs"]
pub mod campus_bed;
#[path = "logs.rs"]
pub mod logs;
#[path = "ports.rs"]
pub mod ports;
pub use logs::{all_lines, capture_logs, log_line};
pub use ports::{closed_port, unanswered_port, ClosedPort, Unanswered};

/// A running server: its address, and the means to stop it.
pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

impl Server {
    /// Signals shutdown and waits for the server to drain and return; fails the test if any
    /// warren code panicked meanwhile (see [`watch_panics`]).
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        assert_no_warren_panics();
    }
}

/// Panics raised in warren's own code (common/, local/, remote/) since this test binary began.
static WARREN_PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts panics in warren's code, however they are caught. A connection handler's panic ends
/// only its own task (tokio catches it), so a test expecting "closed without an answer" would
/// pass on a crash; every server the harness starts installs this, and [`Server::stop`] fails
/// the test on any. Panics in the tests themselves (assertions) are not counted.
pub fn watch_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map(|l| l.file()).unwrap_or("");
            if ["common/src/", "local/src/", "remote/src/"]
                .iter()
                .any(|dir| file.contains(dir))
            {
                WARREN_PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// Fails the test if warren's code has panicked in this test binary (see [`watch_panics`]).
pub fn assert_no_warren_panics() {
    let n = WARREN_PANICS.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        n, 0,
        "warren code panicked {n} time(s) in this test binary (see the panic messages above)"
    );
}

/// Awaits `fut`, failing the test with `what` if it takes more than `secs` seconds: a bound on
/// a hang, never a timing assertion (the limits are far above any expected duration).
pub async fn within<F: std::future::Future>(secs: u64, what: &str, fut: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing happened within {secs} s"))
}

/// Reads until the peer closes (EOF, or a reset), at most 20 s, and returns what arrived.
pub async fn read_until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    within(20, "the peer closes", async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
}

/// Connects, sends `bytes`, and returns everything the server answers before closing.
pub async fn send_raw(proxy: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(proxy).await.expect("connect to local");
    stream.write_all(bytes).await.expect("write raw bytes");
    read_until_closed(&mut stream).await
}

/// The IPs of `peers`, as text (which host made each connection).
pub fn ips(peers: &[SocketAddr]) -> Vec<String> {
    peers.iter().map(|p| p.ip().to_string()).collect()
}

/// A loopback address whose SYNs go unanswered. Linux (and gVisor's netstack) drop a SYN when
/// the listener's accept queue is full, so a listener with backlog 0 that never accepts, once
/// one connection fills its queue, leaves every further connect hanging in SYN-SENT until the
/// connector gives up: a black hole without touching the network or firewall rules.
pub struct BlackHole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl BlackHole {
    /// Ends the black hole: the fillers close and the listener is handed back. Once its
    /// accept loop has taken the fillers off the queue, a connect still in SYN-SENT completes
    /// at its next SYN retransmission (about 1 s on Linux): a target that surely answers after
    /// everything the test did before calling this.
    pub fn open(self) -> TcpListener {
        self._listener
    }
}

/// Makes a [`BlackHole`]; panics if this kernel completes connections beyond a full queue.
pub async fn black_hole() -> BlackHole {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("black hole addr");
    let mut fillers = Vec::new();
    for _ in 0..16 {
        // A connect that does not complete in 300 ms means SYNs are being dropped; dropping
        // the attempt closes its socket, so no SYN-SENT socket of ours is left behind.
        match tokio::time::timeout(std::time::Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(e)) => panic!("filling the black hole's accept queue: {e}"),
            Err(_) => {
                return BlackHole {
                    addr,
                    _listener: listener,
                    _fillers: fillers,
                }
            }
        }
    }
    panic!("this kernel completes connections beyond a full accept queue; no black hole");
}

/// A fresh random key in config form.
pub fn new_key() -> String {
    Key::generate().to_base64()
}

fn indent(extra: &str) -> String {
    extra.lines().map(|l| format!("  {l}\n")).collect()
}

/// Parses a config the way the binaries do.
pub fn parse(yaml: &str) -> RawConfig {
    RawConfig::from_yaml(yaml, "test.yaml").expect("test config parses")
}

/// Starts warren-remote. `extra` holds YAML lines for the `remote:` section (e.g. an `acl:`).
pub async fn start_remote(key: &str, extra: &str) -> Server {
    start_remote_since(key, extra, warren_common::time::unix_now()).await
}

/// [`start_remote`], counting `started` (Unix seconds) as the remote's start second: it
/// refuses requests and UDP packets stamped earlier (PROTOCOL.md §10). A later second stands for
/// a restart without waiting for the clock; an earlier one for a remote that has been up a while.
pub async fn start_remote_since(key: &str, extra: &str, started: u64) -> Server {
    start_remote_on("127.0.0.1", key, extra, started).await
}

/// [`start_remote_since`] listening on `ip` (an address on lo, e.g. "127.0.0.2"): its BIND
/// listeners open there too, so a test can tell which remote a BIND reached.
pub async fn start_remote_on(ip: &str, key: &str, extra: &str, started: u64) -> Server {
    let yaml = format!("key: \"{key}\"\nremote:\n  listen: \"{ip}:0\"\n{}", indent(extra));
    let config = RemoteConfig::try_from(&parse(&yaml)).expect("valid remote config");
    let listener = TcpListener::bind((ip, 0)).await.expect("bind remote");
    let addr = listener.local_addr().expect("remote addr");
    let shutdown = CancellationToken::new();
    watch_panics();
    let task = tokio::spawn(warren_remote::run_since(listener, config, shutdown.clone(), started));
    Server { addr, shutdown, task }
}

/// Starts warren-local pointing at `remote`. `extra` holds YAML lines for the `local:` section.
pub async fn start_local(key: &str, remote: SocketAddr, extra: &str) -> Server {
    let yaml = format!(
        "key: \"{key}\"\nlocal:\n  listen: \"127.0.0.1:0\"\n  remote: \"{remote}\"\n{}",
        indent(extra)
    );
    let config = LocalConfig::try_from(&parse(&yaml)).expect("valid local config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind local");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    watch_panics();
    let task = tokio::spawn(warren_local::run(listener, config, shutdown.clone()));
    Server { addr, shutdown, task }
}

/// Starts warren-local from a whole YAML config whose `local.listen` is ignored (a fresh
/// 127.0.0.1:0 listener is used). Also returns the remotes' health state the running local
/// keeps, so a test can watch the health checker.
pub async fn start_local_yaml(yaml: &str) -> (Server, Arc<warren_local::Health>) {
    let config = LocalConfig::try_from(&parse(yaml)).expect("valid local config");
    let health = warren_local::Health::for_config(&config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind local");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    watch_panics();
    let task = tokio::spawn(warren_local::serve(listener, config, health.clone(), shutdown.clone()));
    (Server { addr, shutdown, task }, health)
}

/// warren-local and warren-remote sharing a fresh key.
pub struct Pair {
    pub local: Server,
    pub remote: Server,
}

impl Pair {
    /// The SOCKS5 address applications use.
    pub fn socks(&self) -> SocketAddr {
        self.local.addr
    }
}

/// Starts both ends with a fresh key. The remote allows loopback targets (the tests' targets
/// live there) ahead of `remote_extra`'s rules unless `remote_extra` has its own `acl:`.
pub async fn start_pair(remote_extra: &str, local_extra: &str) -> Pair {
    let key = new_key();
    let remote_extra = if remote_extra.contains("acl:") {
        remote_extra.to_owned()
    } else {
        format!("acl:\n  - allow: \"127.0.0.0/8\"\n  - allow: \"::1\"\n{remote_extra}")
    };
    let remote = start_remote(&key, &remote_extra).await;
    let local = start_local(&key, remote.addr, local_extra).await;
    Pair { local, remote }
}

/// An echo server on `bind` (e.g. "127.0.0.1:0" or "[::1]:0"): writes back everything it reads,
/// then shuts down its write side when the client does.
pub async fn echo_server(bind: &str) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A minimal HTTP/1.1 server on `bind` that answers every request with `body` and closes.
pub async fn http_server(bind: &str, body: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.expect("bind http");
    let addr = listener.local_addr().expect("http addr");
    let body = std::sync::Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// Deterministic test data of `len` bytes (not all one value, so misordering shows).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8).collect()
}

/// Reads one message from a raw socket, pulling bytes until it is complete.
pub async fn read_message<T: Decode>(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<T> {
    loop {
        match decode_prefix::<T>(buf) {
            Ok((msg, used)) => {
                let _ = buf.split_to(used);
                return Ok(msg);
            }
            Err(DecodeError::Incomplete) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// A raw SOCKS5 CONNECT (no auth, or RFC 1929 if `login` is given). Returns the socket and
/// the server's reply; on a success reply the socket is ready for data.
pub async fn socks5_connect(
    proxy: SocketAddr,
    target: &Address,
    login: Option<(&str, &str)>,
) -> std::io::Result<(TcpStream, Reply)> {
    let mut stream = TcpStream::connect(proxy).await?;
    let mut out = Vec::new();
    let method = if login.is_some() { 0x02 } else { 0x00 };
    Greeting { methods: vec![method] }.encode(&mut out);
    stream.write_all(&out).await?;
    let mut buf = BytesMut::new();
    let MethodSelection(chosen) = read_message(&mut stream, &mut buf).await?;
    if chosen != method {
        return Err(std::io::Error::other(format!("server chose method {chosen:#04x}")));
    }
    if let Some((user, pass)) = login {
        out.clear();
        UserPassRequest {
            username: user.into(),
            password: pass.into(),
        }
        .encode(&mut out);
        stream.write_all(&out).await?;
        let reply: UserPassReply = read_message(&mut stream, &mut buf).await?;
        if !reply.success {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "login refused",
            ));
        }
    }
    out.clear();
    Request {
        command: Command::Connect,
        target: target.clone(),
    }
    .encode(&mut out);
    stream.write_all(&out).await?;
    let reply: Reply = read_message(&mut stream, &mut buf).await?;
    assert!(buf.is_empty(), "bytes after the SOCKS5 reply");
    Ok((stream, reply))
}

/// Runs curl with `args` (off the async runtime) and returns its output. Panics with a clear
/// message if curl is not installed: .ci/run installs it.
pub async fn curl(args: &[&str]) -> Output {
    curl_env(&[], args).await
}

/// [`curl`] with extra environment variables. Every proxy variable of the test's own
/// environment is cleared first: the tests say which proxy curl uses, and a proxy (or a
/// `no_proxy` naming 127.0.0.1) from outside would send it elsewhere, or past warren straight
/// to the target.
pub async fn curl_env(env: &[(&str, String)], args: &[&str]) -> Output {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new("curl");
        for var in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
        ] {
            cmd.env_remove(var);
        }
        cmd.args(["--silent", "--show-error", "--max-time", "30"])
            .args(&args)
            .envs(env)
            .output()
            .expect("curl must be installed (apt-get install -y curl)")
    })
    .await
    .expect("curl task")
}

/// Runs curl with `args`, asserts it succeeded (showing its error otherwise) and returns the body.
pub async fn curl_fetch(args: &[&str]) -> Vec<u8> {
    let out = curl(args).await;
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An echo server that remembers the peer of every connection it accepts, so a test can prove a
/// target was (or was not) reached.
pub struct Target {
    pub addr: SocketAddr,
    peers: tokio::sync::watch::Receiver<Vec<SocketAddr>>,
    probes: std::sync::Mutex<Vec<SocketAddr>>,
}

/// Starts a [`Target`] on `bind` (e.g. "127.0.0.1:0" or "[::1]:0").
pub async fn target(bind: &str) -> Target {
    let listener = TcpListener::bind(bind).await.expect("bind target");
    let addr = listener.local_addr().expect("target addr");
    let (tx, peers) = tokio::sync::watch::channel(Vec::new());
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            tx.send_modify(|peers| peers.push(peer));
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Target {
        addr,
        peers,
        probes: std::sync::Mutex::new(Vec::new()),
    }
}

impl Target {
    /// How many connections other than our own probes the target has accepted so far. Settled,
    /// not sampled: it connects a probe and waits (up to 10 s) until the target has accepted it,
    /// and the accept queue is first in, first out, so every connection made before this call
    /// is counted.
    pub async fn connections(&self) -> usize {
        let probe = TcpStream::connect(self.addr).await.expect("probe the target");
        let me = probe.local_addr().expect("probe addr");
        self.probes.lock().unwrap().push(me);
        let mut peers = self.peers.clone();
        tokio::time::timeout(std::time::Duration::from_secs(10), peers.wait_for(|p| p.contains(&me)))
            .await
            .expect("the target accepts a probe within 10 s")
            .expect("target running");
        let probes = self.probes.lock().unwrap().clone();
        let n = peers.borrow().iter().filter(|p| !probes.contains(p)).count();
        n
    }
}

impl Target {
    /// The peers of the connections other than our probes that the target has accepted so far
    /// (settled like [`Target::connections`]): their IPs tell which host made each connection.
    pub async fn peers(&self) -> Vec<SocketAddr> {
        let _ = self.connections().await;
        let probes = self.probes.lock().unwrap().clone();
        let peers = self.peers.borrow().clone();
        peers.into_iter().filter(|p| !probes.contains(p)).collect()
    }
}

/// A raw SOCKS5 request of any command, without authentication. Returns the socket, the first
/// reply, and any bytes already read after it (BIND's second reply may follow at once).
pub async fn socks5_request(
    proxy: SocketAddr,
    command: Command,
    target: &Address,
) -> std::io::Result<(TcpStream, Reply, BytesMut)> {
    let mut stream = TcpStream::connect(proxy).await?;
    let mut out = Vec::new();
    Greeting { methods: vec![0x00] }.encode(&mut out);
    Request {
        command,
        target: target.clone(),
    }
    .encode(&mut out);
    stream.write_all(&out).await?;
    let mut buf = BytesMut::new();
    let MethodSelection(chosen) = read_message(&mut stream, &mut buf).await?;
    if chosen != 0x00 {
        return Err(std::io::Error::other(format!("server chose method {chosen:#04x}")));
    }
    let reply: Reply = read_message(&mut stream, &mut buf).await?;
    Ok((stream, reply, buf))
}

/// A SOCKS5 UDP ASSOCIATE through `proxy` announcing DST 0.0.0.0:0 (RFC 1928 §7): the control
/// connection (the association lives while it is open) and the relay address from the reply.
/// Fails the test unless the reply is success with an IP address.
pub async fn udp_associate(proxy: SocketAddr) -> (TcpStream, SocketAddr) {
    let (control, reply, _) = within(
        20,
        "UDP ASSOCIATE reply",
        socks5_request(proxy, Command::UdpAssociate, &Address::UNSPECIFIED),
    )
    .await
    .expect("UDP ASSOCIATE");
    assert_eq!(
        reply.code,
        warren_common::proto::socks5::ReplyCode::Succeeded,
        "UDP ASSOCIATE"
    );
    let Address::Ip(relay) = reply.bound else {
        panic!("the relay address is an IP: {:?}", reply.bound)
    };
    (control, relay)
}

/// A UDP echo server on `bind`: sends every datagram back to its sender.
pub async fn udp_echo_server(bind: &str) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind(bind).await.expect("bind udp echo");
    let addr = socket.local_addr().expect("udp echo addr");
    spawn_udp_echo(socket);
    addr
}

/// Echoes datagrams on an already bound socket.
pub fn spawn_udp_echo(socket: tokio::net::UdpSocket) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
}
