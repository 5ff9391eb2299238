//! The agent's half of the reverse tunnel: dial the public warren-remote, send a
//! `Command::Agent` request whose target is `Domain(name, 0)`, sealed with the agent's own key
//! (`remote.agent.key`), and after the success response run a yamux session (client mode) inside
//! that encrypted stream, handing every stream the public remote opens to the caller's handler.
//! On any failure it redials with exponential backoff (200 ms doubling to 4 s, jitter 50–100 %).
//! Every change of state is one log line: registered, refused (and why), retrying.

use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use warren_common::config::{AgentSettings, RemoteConfig};
use warren_common::proto::address::{Address, DomainName};
use warren_common::proto::header::{Command, RequestHeader};
use warren_common::proto::status::Status;
use warren_common::time::unix_now;
use warren_common::tunnel::PendingTunnel;

use super::heartbeat;
use super::mux::{self, MuxStream};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(4);
/// A session that lasted this long was up, not a failed attempt: the backoff starts over.
const STABLE: Duration = Duration::from_secs(5);

/// Keeps a session to the public remote up until `shutdown`. `serve` gets every stream the
/// public remote opens, with the link's two ends: the public remote's address, and ours (the
/// address this agent dials out from, on the network it serves; unknown if the socket will not
/// say).
pub async fn run<F>(settings: AgentSettings, config: &RemoteConfig, shutdown: CancellationToken, serve: F)
where
    F: Fn(MuxStream, SocketAddr, Option<SocketAddr>) + Clone + Send + 'static,
{
    let mut backoff = BACKOFF_MIN;
    loop {
        let outcome = tokio::select! {
            r = session(&settings, config, serve.clone()) => r,
            () = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(lasted) => {
                // Only a session that held resets the backoff: one that dies at once (a link
                // that breaks on the first bytes) must not make us redial every 200 ms.
                if lasted >= STABLE {
                    backoff = BACKOFF_MIN;
                }
                tracing::warn!(server = %settings.server, "agent session ended; reconnecting");
            }
            Err(e) => tracing::warn!(
                server = %settings.server,
                name = %settings.name,
                retry_ms = backoff.as_millis() as u64,
                "agent not registered: {e}; retrying"
            ),
        }
        let wait = backoff.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// One session: `Err` if it never came up, `Ok(how long it was up)` once an established session
/// ended.
async fn session<F>(settings: &AgentSettings, config: &RemoteConfig, serve: F) -> Result<Duration, String>
where
    F: Fn(MuxStream, SocketAddr, Option<SocketAddr>) + Send + 'static,
{
    let setup = async {
        let tcp = TcpStream::connect(settings.server.as_str())
            .await
            .map_err(|e| e.to_string())?;
        warren_common::net::tune(&tcp);
        // The config checked the name against the wire rule; an error here is still an answer.
        let target = Address::Domain(DomainName::new(&settings.name).map_err(|e| e.to_string())?, 0);
        let header = RequestHeader::new(Command::Agent, target, unix_now());
        let pending = PendingTunnel::send_request(tcp, &settings.key, &header, &[])
            .await
            .map_err(|e| e.to_string())?;
        let (response, tunnel) = pending.read_response().await.map_err(|e| e.to_string())?;
        match response.status {
            Status::Succeeded => Ok(tunnel),
            Status::NotAllowed => Err(format!(
                "the server refused the name {:?}: another agent's session holds it (two agents under one name?)",
                settings.name
            )),
            other => Err(format!("the server refused the registration: {}", other.describe())),
        }
    };
    let tunnel = tokio::time::timeout(config.timeouts.handshake, setup)
        .await
        .map_err(|_| {
            "no answer before the handshake deadline (a wrong remote.agent.key, a name the server does not list under \
         remote.agents, or clocks apart?)"
                .to_string()
        })??;
    let server: SocketAddr = tunnel
        .get_ref()
        .peer_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let local = tunnel.get_ref().local_addr().ok();
    let (opener, driver) = mux::session(tunnel, yamux::Mode::Client, move |s| serve(s, server, local));
    tracing::info!(server = %settings.server, name = %settings.name, "agent registered");
    let up = tokio::time::Instant::now();
    tokio::select! {
        () = driver => {}
        () = heartbeat::beat(&opener) => tracing::warn!(server = %settings.server, "heartbeat lost"),
    }
    Ok(up.elapsed())
}
