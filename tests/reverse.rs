//! The reverse tunnel on loopback, standing in for the namespace test (remote/tests/campus.rs)
//! where namespaces cannot be made, and for what a namespace test would make slow: the soak and
//! the dead link. Firewall stand-ins: the "intranet" lives on 127.0.0.3, the VPS's default ACL
//! denies its own loopback (so it cannot reach the intranet itself), the agent allows only
//! 127.0.0.3 and connects out from 127.0.0.4, so a target can tell who connected.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use warren_common::config::RemoteConfig;
use warren_common::crypto::Key;
use warren_common::proto::address::Address;
use warren_common::proto::header::RequestHeader;
use warren_common::proto::socks5::ReplyCode;
use warren_common::proto::status::Status;
use warren_common::time::unix_now;
use warren_common::tunnel::PendingTunnel;
use warren_tests::*;

/// The public remote ("VPS") on `listen` (a fixed address, so it can restart on it). Requests
/// for 127.0.0.3 on the `routed` ports go via the agent named "campus"; the rest go out
/// directly, where its default ACL denies loopback.
async fn start_vps(key: &str, listen: SocketAddr, routed: &[u16]) -> Server {
    let routes: String = routed
        .iter()
        .map(|p| format!("    - {{ cidr: \"127.0.0.3/32\", port: {p}, via: campus }}\n"))
        .collect();
    let yaml = format!("key: \"{key}\"\nremote:\n  listen: \"{listen}\"\n  routes:\n{routes}");
    let config = RemoteConfig::try_from(&parse(&yaml)).expect("valid VPS config");
    // A restart may find the old socket in TIME_WAIT: retry the bind a bounded number of times.
    let mut listener = None;
    for _ in 0..50 {
        match TcpListener::bind(listen).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let listener = listener.expect("bind the VPS address");
    let addr = listener.local_addr().expect("VPS addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(warren_remote::run(listener, config, shutdown.clone()));
    Server { addr, shutdown, task }
}

/// The campus agent: dials the VPS, may reach only the intranet, connects out from 127.0.0.4.
async fn start_agent(key: &str, vps: SocketAddr) -> Server {
    start_remote(
        key,
        &format!(
            "acl:\n  - allow: \"127.0.0.3\"\n  - deny: \"0.0.0.0/0\"\noutbound_source: \"127.0.0.4\"\nagent:\n  server: \"{vps}\"\n  name: campus"
        ),
    )
    .await
}

struct Campus {
    key: String,
    vps: Server,
    agent: Server,
    local: Server,
    /// The intranet echo target (routed via the agent).
    intranet: Target,
    /// The intranet web site (routed via the agent), serving `site_body`.
    site: SocketAddr,
    site_body: Vec<u8>,
}

async fn campus() -> Campus {
    let key = new_key();
    let intranet = target("127.0.0.3:0").await;
    let site_body = pattern(1 << 20);
    let site = http_server("127.0.0.3:0", site_body.clone()).await;
    let vps = start_vps(
        &key,
        "127.0.0.1:0".parse().unwrap(),
        &[intranet.addr.port(), site.port()],
    )
    .await;
    let agent = start_agent(&key, vps.addr).await;
    let local = start_local(&key, vps.addr, "").await;
    Campus {
        key,
        vps,
        agent,
        local,
        intranet,
        site,
        site_body,
    }
}

impl Campus {
    /// Waits (bounded) until the agent has registered with the VPS and a stream gets through.
    async fn wait_for_agent(&self) {
        let up = echo_until(self.local.addr, self.intranet.addr, b"ready", Duration::from_secs(30));
        within(30, "agent registers", up).await.expect("agent up");
    }
}

/// Echoes `data` through a SOCKS5 CONNECT to `to`; `None` if the connection is refused or
/// breaks (the agent may not have registered yet).
async fn echo_once(local: SocketAddr, to: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    let (mut s, reply) = socks5_connect(local, &Address::Ip(to), None).await.ok()?;
    if reply.code != ReplyCode::Succeeded {
        return None;
    }
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(data).await?;
        w.shutdown().await
    };
    let mut got = Vec::with_capacity(data.len());
    let (sent, read) = tokio::join!(send, r.read_to_end(&mut got));
    (sent.is_ok() && read.is_ok()).then_some(got)
}

/// Retries [`echo_once`] until it works, for at most `limit`; returns how long that took.
async fn echo_until(local: SocketAddr, to: SocketAddr, data: &[u8], limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(got) = echo_once(local, to, data).await {
            assert!(got == data, "echo through the agent differs");
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test]
async fn intranet_through_the_agent_and_healed_after_a_vps_restart() {
    let mut c = campus().await;
    let data = pattern(256 * 1024);
    within(
        30,
        "first echo via the agent",
        echo_until(c.local.addr, c.intranet.addr, &data, Duration::from_secs(30)),
    )
    .await
    .expect("the intranet answers through the agent");
    // It came from the agent (127.0.0.4), not from the VPS or the laptop.
    let peers = c.intranet.peers().await;
    assert!(
        !peers.is_empty() && peers.iter().all(|p| p.ip().to_string() == "127.0.0.4"),
        "{peers:?}"
    );

    // The VPS cannot reach the intranet itself: a port with no route gets the ACL's refusal.
    let other = target("127.0.0.3:0").await;
    let (_s, reply) = within(
        20,
        "unrouted CONNECT",
        socks5_connect(c.local.addr, &Address::Ip(other.addr), None),
    )
    .await
    .unwrap();
    assert_eq!(reply.code, ReplyCode::NotAllowed);
    assert_eq!(other.connections().await, 0);

    // curl fetches a page from the intranet, byte-exact.
    let url = format!("http://{}/page", c.site);
    let proxy = c.local.addr.to_string();
    let out = curl(&["--socks5-hostname", &proxy, &url]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == c.site_body, "page differs");

    // The VPS's routes see through a target name that spells the routed address (as a client
    // other than warren-local may send it): it goes via the agent, not out to the VPS's ACL.
    let key = Key::from_base64(&c.key).expect("key");
    let tcp = TcpStream::connect(c.vps.addr).await.expect("connect to the VPS");
    let name = Address::Domain("0x7f.0.0.3".into(), c.intranet.addr.port());
    let header = RequestHeader::connect(name, unix_now());
    let pending = PendingTunnel::send_request(tcp, &key, &header, b"ping")
        .await
        .expect("send");
    let (response, mut tunnel) = within(20, "the response", pending.read_response())
        .await
        .expect("answered");
    assert_eq!(response.status, Status::Succeeded);
    let mut echoed = [0u8; 4];
    within(20, "the echo", tunnel.read_exact(&mut echoed))
        .await
        .expect("echo");
    assert_eq!(&echoed, b"ping");
    drop(tunnel);
    let peers = c.intranet.peers().await;
    assert!(peers.iter().all(|p| p.ip().to_string() == "127.0.0.4"), "{peers:?}");

    // A VPS restart heals by itself: nobody touches the agent or the laptop.
    let vps_addr = c.vps.addr;
    let routed = [c.intranet.addr.port(), c.site.port()];
    c.vps.stop().await;
    let killed = Instant::now();
    c.vps = start_vps(&c.key, vps_addr, &routed).await;
    within(
        30,
        "echo after the VPS restart",
        echo_until(c.local.addr, c.intranet.addr, &data, Duration::from_secs(30)),
    )
    .await
    .expect("the tunnel heals after the VPS restarts");
    println!("healed {:.2} s after the VPS stopped", killed.elapsed().as_secs_f64());
    let out = curl(&["--socks5-hostname", &proxy, &url]).await;
    assert!(
        out.status.success() && out.stdout == c.site_body,
        "page after the restart"
    );
    c.local.stop().await;
    c.agent.stop().await;
    c.vps.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_streams_of_a_mebibyte_through_the_agent() {
    let c = campus().await;
    c.wait_for_agent().await;
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let (local, to) = (c.local.addr, c.intranet.addr);
        tasks.push(tokio::spawn(async move {
            // Each stream its own bytes, so a stream mixed up with another fails too.
            let mut data = pattern(1 << 20);
            data[..4].copy_from_slice(&i.to_be_bytes());
            let got = echo_once(local, to, &data).await;
            got.is_some_and(|g| g == data)
        }));
    }
    let mut exact = 0;
    for t in tasks {
        if within(300, "a soak stream", t).await.unwrap() {
            exact += 1;
        }
    }
    assert_eq!(exact, 200, "streams echoed byte-exact");
}

#[tokio::test]
async fn streams_on_a_dead_link_end_and_new_ones_get_a_reply() {
    let c = campus().await;
    c.wait_for_agent().await;
    let (mut s, reply) = socks5_connect(c.local.addr, &Address::Ip(c.intranet.addr), None)
        .await
        .unwrap();
    assert_eq!(reply.code, ReplyCode::Succeeded);
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).await.unwrap();

    // The campus side goes away mid-stream: the stream ends (a close, not a hang).
    c.agent.stop().await;
    let mut rest = Vec::new();
    let ended = within(30, "the stream on the dead link", s.read_to_end(&mut rest)).await;
    assert!(ended.is_err() || rest.is_empty(), "no bytes after the link died");

    // With no agent registered, a request routed to it gets a reply at once.
    let (_s, reply) = within(
        30,
        "CONNECT with no agent",
        socks5_connect(c.local.addr, &Address::Ip(c.intranet.addr), None),
    )
    .await
    .unwrap();
    assert_eq!(reply.code, ReplyCode::HostUnreachable);
    c.local.stop().await;
    c.vps.stop().await;
}
