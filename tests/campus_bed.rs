//! The reverse-tunnel bed on loopback (tests/reverse.rs, tests/agent_link.rs). Firewall
//! stand-ins: the "intranet" lives on 127.0.0.3, the VPS's default ACL denies its own loopback
//! (so it cannot reach the intranet itself), the agent allows only 127.0.0.3 and connects out
//! from 127.0.0.4, so a target can tell who connected.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warren_common::config::RemoteConfig;
use warren_common::proto::address::Address;
use warren_common::proto::socks5::ReplyCode;

use crate::*;

/// The public remote ("VPS") on `listen` (a fixed address, so it can restart on it). Requests
/// for 127.0.0.3 on the `routed` ports go via the agent named "campus"; the rest go out
/// directly, where its default ACL denies loopback.
pub async fn start_vps(key: &str, agent_key: &str, listen: SocketAddr, routed: &[u16]) -> Server {
    let routes: String = routed
        .iter()
        .map(|p| format!("    - {{ cidr: \"127.0.0.3/32\", port: {p}, via: campus }}\n"))
        .collect();
    start_vps_routes(key, agent_key, listen, &routes).await
}

/// The public remote with `routes` (YAML list items, indented four spaces) and the agent
/// "campus" listed with `agent_key`.
pub async fn start_vps_routes(key: &str, agent_key: &str, listen: SocketAddr, routes: &str) -> Server {
    let yaml = format!(
        "key: \"{key}\"\nremote:\n  listen: \"{listen}\"\n  agents:\n    campus: {{ key: \"{agent_key}\" }}\n  routes:\n{routes}"
    );
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
    watch_panics();
    let task = tokio::spawn(warren_remote::run(listener, config, shutdown.clone()));
    Server { addr, shutdown, task }
}

/// The campus agent: dials the VPS (registering as `name` with `agent_key`), may reach only
/// the intranet, connects out from 127.0.0.4.
pub async fn start_agent(key: &str, agent_key: &str, name: &str, vps: SocketAddr) -> Server {
    start_remote(
        key,
        &format!(
            "acl:\n  - allow: \"127.0.0.3\"\n  - deny: \"0.0.0.0/0\"\noutbound_source: \"127.0.0.4\"\nagent:\n  server: \"{vps}\"\n  name: \"{name}\"\n  key: \"{agent_key}\""
        ),
    )
    .await
}

/// The whole bed: VPS, agent "campus", laptop, and two intranet servers on 127.0.0.3.
pub struct Campus {
    /// The shared key (laptop and VPS; the agent opens laptop requests with it).
    pub key: String,
    /// The agent's own key (agent and the VPS's `remote.agents.campus`).
    pub agent_key: String,
    pub vps: Server,
    pub agent: Server,
    pub local: Server,
    /// The intranet echo target (routed via the agent).
    pub intranet: Target,
    /// The intranet web site (routed via the agent), serving `site_body`.
    pub site: SocketAddr,
    pub site_body: Vec<u8>,
}

/// Starts the bed with the agent dialing the VPS directly.
pub async fn campus() -> Campus {
    campus_dialing(|vps| async move { vps }).await
}

/// Starts the bed with the agent dialing the address `link` returns for the VPS's (a relay in
/// between, say).
pub async fn campus_dialing<F, Fut>(link: F) -> Campus
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = SocketAddr>,
{
    campus_dialing_with_key(|vps, _| link(vps)).await
}

/// [`campus_dialing`], where `link` also gets the agent's own key (a relay that needs it).
pub async fn campus_dialing_with_key<F, Fut>(link: F) -> Campus
where
    F: FnOnce(SocketAddr, String) -> Fut,
    Fut: std::future::Future<Output = SocketAddr>,
{
    let key = new_key();
    let agent_key = new_key();
    let intranet = target("127.0.0.3:0").await;
    let site_body = pattern(1 << 20);
    let site = http_server("127.0.0.3:0", site_body.clone()).await;
    let vps = start_vps(
        &key,
        &agent_key,
        "127.0.0.1:0".parse().unwrap(),
        &[intranet.addr.port(), site.port()],
    )
    .await;
    let agent = start_agent(&key, &agent_key, "campus", link(vps.addr, agent_key.clone()).await).await;
    let local = start_local(&key, vps.addr, "").await;
    Campus {
        key,
        agent_key,
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
    pub async fn wait_for_agent(&self) {
        let up = echo_until(self.local.addr, self.intranet.addr, b"ready", Duration::from_secs(30));
        within(30, "agent registers", up).await.expect("agent up");
    }
}

/// Echoes `data` through a SOCKS5 CONNECT to `to`; `None` if the connection is refused or
/// breaks (the agent may not have registered yet).
pub async fn echo_once(local: SocketAddr, to: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
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
pub async fn echo_until(local: SocketAddr, to: SocketAddr, data: &[u8], limit: Duration) -> Option<Duration> {
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
