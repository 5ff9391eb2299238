//! The agent link under attack (issue 10): who may register as the campus, and what a
//! man-in-the-middle between the VPS and the agent can make the agent do. The bed is
//! tests/campus_bed.rs (intranet on 127.0.0.3, the real agent connects out from 127.0.0.4).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use warren_common::crypto::{Key, Purpose, SessionCipher, LEN_BLOCK, SALT_LEN, TAG_LEN};
use warren_common::proto::address::{Address, DomainName};
use warren_common::proto::header::{Command, RequestHeader};
use warren_common::proto::socks5::ReplyCode;
use warren_common::proto::status::Status;
use warren_common::time::unix_now;
use warren_common::tunnel::{HandshakeError, PendingTunnel};
use warren_tests::campus_bed::*;
use warren_tests::*;

/// Sends a registration for `name` sealed with `key` straight to the VPS; the response, or the
/// handshake error when the VPS stays silent and closes.
async fn register(vps: SocketAddr, key: &str, name: &str) -> Result<Status, HandshakeError> {
    let key = Key::from_base64(key).expect("key");
    let tcp = TcpStream::connect(vps).await.expect("connect to the VPS");
    let header = RequestHeader::new(
        Command::Agent,
        Address::Domain(DomainName::new(name).expect("a name"), 0),
        unix_now(),
    );
    let pending = PendingTunnel::send_request(tcp, &key, &header, &[]).await?;
    let (response, _tunnel) = within(60, "the VPS answers or closes", pending.read_response()).await?;
    Ok(response.status)
}

#[tokio::test]
async fn an_impostor_cannot_take_the_campus_name() {
    let c = campus().await;
    c.wait_for_agent().await;

    // A laptop's shared key cannot register, nor can one agent's key register another name:
    // both are ignored like any bad request (held, then closed, no answer).
    let (shared, other_name) = tokio::join!(
        register(c.vps.addr, &c.key, "campus"),
        register(c.vps.addr, &c.agent_key, "lab"),
    );
    assert!(matches!(shared, Err(HandshakeError::Closed)), "{shared:?}");
    assert!(matches!(other_name, Err(HandshakeError::Closed)), "{other_name:?}");

    // The right key while the real agent's session lives: refused with a reason, not swapped in.
    let second = register(c.vps.addr, &c.agent_key, "campus").await;
    assert!(matches!(second, Ok(Status::NotAllowed)), "{second:?}");

    // A second real agent under the name (connecting out from 127.0.0.5) keeps trying while
    // traffic flows: every stream still reaches the real agent.
    let impostor = start_remote(
        &c.key,
        &format!(
            "acl:\n  - allow: \"127.0.0.3\"\n  - deny: \"0.0.0.0/0\"\noutbound_source: \"127.0.0.5\"\nagent:\n  server: \"{}\"\n  name: campus\n  key: \"{}\"",
            c.vps.addr, c.agent_key
        ),
    )
    .await;
    for i in 0..20u8 {
        let got = within(
            30,
            "echo via the agent",
            echo_once(c.local.addr, c.intranet.addr, &[i; 64]),
        )
        .await;
        assert_eq!(got.as_deref(), Some(&[i; 64][..]));
    }
    let peers = c.intranet.peers().await;
    assert!(peers.iter().all(|p| p.ip().to_string() == "127.0.0.4"), "{peers:?}");

    // Once the real agent is gone, its name is free again and the other holder of the key
    // registers (a dead session is replaced, not kept).
    c.agent.stop().await;
    let up = echo_until(c.local.addr, c.intranet.addr, b"again", Duration::from_secs(60));
    within(70, "the second agent takes over", up)
        .await
        .expect("second agent serves");
    let peers = c.intranet.peers().await;
    assert_eq!(peers.last().map(|p| p.ip().to_string()).as_deref(), Some("127.0.0.5"));
    impostor.stop().await;
    c.local.stop().await;
    c.vps.stop().await;
}

/// What the man-in-the-middle does to the next sessions it relays.
#[derive(Clone)]
enum Mode {
    /// Relay both ways, recording what the VPS sends.
    Pass,
    /// Relay, but right after the registration response insert these bytes towards the agent.
    Inject(Vec<u8>),
    /// Relay, flipping a bit in every byte the VPS sends after the registration response.
    Flip,
    /// Do not reach the VPS: play the agent these recorded VPS bytes instead.
    Replay(Vec<u8>),
    /// Relay the registration, then drop everything the VPS sends, without closing anything: a
    /// link gone silent, which only the heartbeat can notice.
    Blackhole,
}

/// A relay between the agent and the VPS that holds the agent's key only to find the end of
/// the registration response (the boundary most favourable to an attacker: on a plaintext link
/// the next byte would start a yamux frame).
struct Mitm {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    /// Bytes the VPS sent in the last session relayed in `Pass` mode.
    recorded: Arc<Mutex<Vec<u8>>>,
    /// Sessions that were tampered with (injected, flipped or replayed) so far.
    tampered: watch::Receiver<usize>,
    /// The open sessions' tasks: aborting them cuts the link.
    sessions: Arc<Mutex<JoinSet<()>>>,
    /// Connections the agent has made through the relay so far.
    dialled: watch::Receiver<usize>,
}

impl Mitm {
    async fn start(vps: SocketAddr, agent_key: &str) -> Mitm {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mitm");
        let addr = listener.local_addr().expect("mitm addr");
        let key = Key::from_base64(agent_key).expect("agent key");
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let (tampered_tx, tampered) = watch::channel(0usize);
        let tampered_tx = Arc::new(tampered_tx);
        let sessions = Arc::new(Mutex::new(JoinSet::new()));
        let (m, r, s) = (mode.clone(), recorded.clone(), sessions.clone());
        let (dialled_tx, dialled) = watch::channel(0usize);
        tokio::spawn(async move {
            while let Ok((agent, _)) = listener.accept().await {
                dialled_tx.send_modify(|n| *n += 1);
                let mode = m.lock().unwrap().clone();
                let session = session(agent, vps, mode, key.clone(), r.clone(), tampered_tx.clone());
                s.lock().unwrap().spawn(session);
            }
        });
        Mitm {
            addr,
            mode,
            recorded,
            tampered,
            sessions,
            dialled,
        }
    }

    /// Sets the mode for the next sessions and cuts the current one (the agent redials).
    fn cut(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
        self.sessions.lock().unwrap().abort_all();
    }

    /// Waits (bounded) until `n` sessions in all have been tampered with.
    async fn tampered_at_least(&self, n: usize) {
        let mut rx = self.tampered.clone();
        within(60, "the agent redials into the tampered link", rx.wait_for(|t| *t >= n))
            .await
            .expect("mitm running");
    }
}

async fn session(
    agent: TcpStream,
    vps: SocketAddr,
    mode: Mode,
    key: Key,
    recorded: Arc<Mutex<Vec<u8>>>,
    tampered: Arc<watch::Sender<usize>>,
) {
    let (mut agent_r, mut agent_w) = agent.into_split();
    if let Mode::Replay(bytes) = mode {
        let _ = agent_w.write_all(&bytes).await;
        tampered.send_modify(|t| *t += 1);
        // Keep the connection open, swallowing what the agent sends, until cut.
        let mut sink = [0u8; 4096];
        while matches!(agent_r.read(&mut sink).await, Ok(n) if n > 0) {}
        return;
    }
    let Ok(vps) = TcpStream::connect(vps).await else { return };
    let (mut vps_r, mut vps_w) = vps.into_split();
    let up = async move {
        let _ = tokio::io::copy(&mut agent_r, &mut vps_w).await;
    };
    let down = async move {
        // The registration response: salt, sealed length, sealed header.
        let mut head = [0u8; SALT_LEN + LEN_BLOCK];
        if vps_r.read_exact(&mut head).await.is_err() {
            return;
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&head[..SALT_LEN]);
        let mut block = [0u8; LEN_BLOCK];
        block.copy_from_slice(&head[SALT_LEN..]);
        let Ok(n) = SessionCipher::new(&key, Purpose::TcpResponse, &salt).open_length(&mut block) else {
            return;
        };
        let mut rest = vec![0u8; n + TAG_LEN];
        if vps_r.read_exact(&mut rest).await.is_err() {
            return;
        }
        let mut so_far = [&head[..], &rest[..]].concat();
        if agent_w.write_all(&so_far).await.is_err() {
            return;
        }
        if let Mode::Inject(bytes) = &mode {
            if agent_w.write_all(bytes).await.is_err() {
                return;
            }
            tampered.send_modify(|t| *t += 1);
        }
        if let Mode::Blackhole = mode {
            tampered.send_modify(|t| *t += 1);
            let mut sink = vec![0u8; 65536];
            while matches!(vps_r.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
        let mut flipped_once = false;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match vps_r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            match mode {
                Mode::Flip => {
                    buf[..n].iter_mut().for_each(|b| *b ^= 1);
                    if !flipped_once {
                        flipped_once = true;
                        tampered.send_modify(|t| *t += 1);
                    }
                }
                Mode::Pass => {
                    so_far.extend_from_slice(&buf[..n]);
                    *recorded.lock().unwrap() = so_far.clone();
                }
                _ => {}
            }
            if agent_w.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(up, down);
}

/// A yamux data frame opening stream `id` (SYN) with `body`: what the VPS would send to open a
/// stream on a plaintext link.
fn yamux_syn(id: u32, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8, 0u8];
    frame.extend_from_slice(&1u16.to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

#[tokio::test]
async fn a_man_in_the_middle_cannot_make_the_agent_execute_anything() {
    // The agent dials the VPS through the relay.
    let relay_key = Arc::new(Mutex::new(None::<Mitm>));
    let slot = relay_key.clone();
    let c = campus_dialing_with_key(move |vps, agent_key| async move {
        let mitm = Mitm::start(vps, &agent_key).await;
        let addr = mitm.addr;
        *slot.lock().unwrap() = Some(mitm);
        addr
    })
    .await;
    let mitm = relay_key.lock().unwrap().take().expect("relay started");
    c.wait_for_agent().await;
    let routed = c.intranet.connections().await;

    // A request the VPS refuses (no route: its ACL denies its own loopback), as recorded on the
    // laptop's link.
    let refused = target("127.0.0.3:0").await;
    let (_s, reply) = within(
        30,
        "the refused CONNECT",
        socks5_connect(c.local.addr, &Address::Ip(refused.addr), None),
    )
    .await
    .unwrap();
    assert_eq!(reply.code, ReplyCode::NotAllowed);
    let capture = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = capture.local_addr().unwrap();
    let key = Key::from_base64(&c.key).unwrap();
    let header = RequestHeader::connect(Address::Ip(refused.addr), unix_now());
    let sender = tokio::spawn(async move {
        let tcp = TcpStream::connect(to).await.unwrap();
        let _pending = PendingTunnel::send_request(tcp, &key, &header, b"ping").await.unwrap();
    });
    let (mut recorded_request, _) = capture.accept().await.unwrap();
    sender.await.unwrap();
    let mut request = Vec::new();
    within(10, "the recorded request", recorded_request.read_to_end(&mut request))
        .await
        .unwrap();

    // 1. Injected as new streams (server-side even ids) right after the registration response.
    let mut injected = Vec::new();
    for id in [2u32, 4, 6] {
        injected.extend(yamux_syn(id, &request));
    }
    mitm.cut(Mode::Inject(injected));
    mitm.tampered_at_least(1).await;
    // The agent drops the session and redials (a plaintext link would keep it): give it time,
    // then look at the target first, so a failure says what went wrong.
    let mut rx = mitm.tampered.clone();
    // (Only whether it happened: a borrowed watch value would block the relay's next update.)
    let redialed = tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|t| *t >= 2))
        .await
        .is_ok_and(|r| r.is_ok());
    assert_eq!(refused.connections().await, 0, "an injected request reached its target");
    assert!(redialed, "the agent kept a session that carried injected bytes");

    // 2. Flipped bits after the registration response, while the laptop makes requests.
    let before_flip = c.intranet.connections().await;
    mitm.cut(Mode::Flip);
    mitm.tampered_at_least(3).await;
    for _ in 0..5 {
        let _ = within(
            30,
            "a CONNECT over a flipped link",
            echo_once(c.local.addr, c.intranet.addr, b"x"),
        )
        .await;
    }
    assert_eq!(
        c.intranet.connections().await,
        before_flip,
        "a flipped stream was executed"
    );

    // 3. A recorded session (one that carried a real request) replayed to the redialling agent.
    mitm.cut(Mode::Pass);
    let up = echo_until(c.local.addr, c.intranet.addr, b"recorded", Duration::from_secs(60));
    within(70, "the link heals", up).await.expect("agent back");
    let before_replay = c.intranet.connections().await;
    let recording = mitm.recorded.lock().unwrap().clone();
    assert!(recording.len() > 100, "recorded a session");
    let replays = *mitm.tampered.borrow() + 2;
    mitm.cut(Mode::Replay(recording));
    mitm.tampered_at_least(replays).await;

    // The agent executed nothing: the refused target never heard of us, and the intranet saw
    // only the laptop's real requests (before the flips, and the one recorded session).
    assert_eq!(refused.connections().await, 0, "an injected request reached its target");
    assert_eq!(
        c.intranet.connections().await,
        before_replay,
        "a replayed session was executed"
    );
    assert!(before_replay > routed, "the healed link carried the recorded request");

    // And it heals once the link is honest again.
    mitm.cut(Mode::Pass);
    let up = echo_until(c.local.addr, c.intranet.addr, b"healed", Duration::from_secs(60));
    within(70, "the link heals", up).await.expect("agent back");
    c.agent.stop().await;
    c.local.stop().await;
    c.vps.stop().await;
}

#[tokio::test]
async fn a_link_gone_silent_is_noticed_by_the_heartbeat_and_redialled() {
    let slot = Arc::new(Mutex::new(None::<Mitm>));
    let fill = slot.clone();
    let c = campus_dialing_with_key(move |vps, agent_key| async move {
        let mitm = Mitm::start(vps, &agent_key).await;
        let addr = mitm.addr;
        *fill.lock().unwrap() = Some(mitm);
        addr
    })
    .await;
    let mitm = slot.lock().unwrap().take().expect("relay started");
    c.wait_for_agent().await;

    // The next session registers, then the VPS's bytes stop arriving; no FIN, no RST.
    mitm.cut(Mode::Blackhole);
    mitm.tampered_at_least(1).await;
    let dialled = *mitm.dialled.borrow();
    *mitm.mode.lock().unwrap() = Mode::Pass;

    // Nothing closes that connection: only the agent's heartbeat can tell it is dead. It must
    // redial by itself (the VPS frees the name when the agent's side closes), and the intranet
    // answers again.
    let mut rx = mitm.dialled.clone();
    within(90, "the agent redials a silent link", rx.wait_for(|n| *n > dialled))
        .await
        .expect("relay running");
    let up = echo_until(c.local.addr, c.intranet.addr, b"after", Duration::from_secs(60));
    within(70, "the intranet answers again", up).await.expect("healed");
    c.agent.stop().await;
    c.local.stop().await;
    c.vps.stop().await;
}
