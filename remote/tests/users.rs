//! Per-user keys (`remote.users`, PROTOCOL.md §19) through the real binary: each user's key is
//! accepted and its own ACL enforced; the shared key alone, a key never listed and a key
//! removed by a reload all get the silence of a wrong key; per-user connections and bytes show
//! in the metrics.

use std::net::SocketAddr;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_common::crypto::Key;
use warren_common::proto::address::Address;
use warren_common::proto::header::RequestHeader;
use warren_common::proto::status::Status;
use warren_common::time::unix_now;
use warren_common::tunnel::PendingTunnel;

const BIN: &str = env!("CARGO_BIN_EXE_warren-remote");

#[path = "../../tests/cli_harness.rs"]
mod cli_harness;
use cli_harness::{config_file, echo_on, free_port, key, sample, scrape, Proc, BOUND};

/// A CONNECT to `target`, sealed with `user` (and its hint) or, without one, with the shared
/// key; "ping" echoed on success. The status, or None if the remote said nothing.
async fn ask(remote: SocketAddr, shared: &Key, user: Option<&Key>, target: SocketAddr) -> Option<Status> {
    let stream = TcpStream::connect(remote).await.unwrap();
    let header = RequestHeader::connect(Address::Ip(target), unix_now());
    let pending = match user {
        Some(user) => PendingTunnel::send_request_as_user(stream, shared, user, &header, b"ping").await,
        None => PendingTunnel::send_request(stream, shared, &header, b"ping").await,
    }
    .unwrap();
    let (response, mut tunnel) = match tokio::time::timeout(BOUND, pending.read_response()).await {
        Ok(Ok(answered)) => answered,
        _ => return None,
    };
    if response.status == Status::Succeeded {
        let mut pong = [0u8; 4];
        tunnel.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"ping");
        tunnel.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = tunnel.read_to_end(&mut rest).await;
    }
    Some(response.status)
}

fn rewrite(path: &Path, yaml: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn users_keys_open_their_own_requests_and_nothing_else() {
    let (shared, alice, bob) = (key(), key(), key());
    let k = |text: &str| Key::from_base64(text).unwrap();
    let (one, two) = (echo_on("127.0.0.1").await, echo_on("127.0.0.2").await);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Who is listed: 2 = alice and bob, 1 = alice, 0 = nobody (`users: {}`).
    let yaml = |listed: usize| {
        let users = match listed {
            2 => format!(
                "\n    alice: {{ key: \"{alice}\" }}\n    bob: {{ key: \"{bob}\", acl: [ {{ deny: \"127.0.0.2\" }} ] }}\n"
            ),
            1 => format!("\n    alice: {{ key: \"{alice}\" }}\n"),
            _ => " {}\n".to_owned(),
        };
        format!(
            "key: \"{shared}\"\nremote:\n  listen: \"{listen}\"\n  handshake_timeout: 1\n  acl: [ {{ allow: \"127.0.0.0/8\" }} ]\n  metrics: {{ listen: \"{metrics}\" }}\n  users:{users}"
        )
    };
    let path = config_file(&yaml(2));
    let mut proc = Proc::spawn(BIN, &["-c", path.to_str().unwrap()]);
    proc.wait_line("accepting tunnels");
    let s = k(&shared);

    assert_eq!(ask(listen, &s, Some(&k(&alice)), two).await, Some(Status::Succeeded));
    assert_eq!(ask(listen, &s, Some(&k(&bob)), one).await, Some(Status::Succeeded));
    assert_eq!(
        ask(listen, &s, Some(&k(&bob)), two).await,
        Some(Status::NotAllowed),
        "bob's own rule"
    );
    assert_eq!(
        ask(listen, &s, None, one).await,
        None,
        "the shared key alone opens nothing"
    );
    assert_eq!(
        ask(listen, &s, Some(&Key::generate()), one).await,
        None,
        "a key never listed"
    );
    let line = proc.wait_line("connection finished");
    assert!(line.contains("user=alice") || line.contains("user=bob"), "{line}");

    let samples = scrape(metrics);
    let m = |name: &str| sample(&samples, name);
    assert_eq!(m(r#"warren_user_connections_total{user="alice"}"#), 1.0, "{samples:?}");
    assert_eq!(m(r#"warren_user_connections_total{user="bob"}"#), 2.0);
    assert_eq!(m(r#"warren_user_bytes_total{user="alice",direction="up"}"#), 4.0);
    assert_eq!(m(r#"warren_user_bytes_total{user="bob",direction="down"}"#), 4.0);
    assert_eq!(m(r#"warren_refusals_total{reason="unauthenticated"}"#), 2.0);

    // Encrypted UDP packets carry no user: a remote with users drops them, and counts it.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(&[0x17; 64], listen).await.unwrap();
    let mut dropped = 0.0;
    for _ in 0..100 {
        dropped = sample(&scrape(metrics), r#"warren_refusals_total{reason="udp_without_user"}"#);
        if dropped > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(dropped, 1.0, "the packet was dropped as one without a user");

    // A request of alice's, recorded, is served once before the reload...
    let recorded = {
        let (mut ours, theirs) = tokio::io::duplex(1 << 16);
        let header = RequestHeader::connect(Address::Ip(one), unix_now());
        drop(
            PendingTunnel::send_request_as_user(theirs, &s, &k(&alice), &header, b"")
                .await
                .unwrap(),
        );
        let mut bytes = Vec::new();
        ours.read_to_end(&mut bytes).await.unwrap();
        bytes
    };
    let replay = |bytes: Vec<u8>| async move {
        let mut conn = TcpStream::connect(listen).await.unwrap();
        conn.write_all(&bytes).await.unwrap();
        let mut buf = [0u8; 64];
        tokio::time::timeout(BOUND, conn.read(&mut buf))
            .await
            .map_or(0, |r| r.unwrap_or(0))
    };
    assert!(replay(recorded.clone()).await > 0);

    // Bob's entry removed: his key now gets silence; alice is unaffected.
    rewrite(&path, &yaml(1));
    proc.signal("HUP");
    proc.wait_line("config reloaded");
    // ...and the replay filter outlives the reload: the copy gets silence.
    assert_eq!(replay(recorded).await, 0, "a replay after a reload");
    assert_eq!(
        sample(&scrape(metrics), r#"warren_refusals_total{reason="replay"}"#),
        1.0
    );
    assert_eq!(
        ask(listen, &s, Some(&k(&bob)), one).await,
        None,
        "a removed user is refused"
    );
    assert_eq!(ask(listen, &s, Some(&k(&alice)), one).await, Some(Status::Succeeded));

    // Nobody left (`users: {}`): still per-user mode, so the shared key alone stays refused.
    rewrite(&path, &yaml(0));
    proc.signal("HUP");
    proc.wait_line("config reloaded");
    assert_eq!(ask(listen, &s, Some(&k(&alice)), one).await, None);
    assert_eq!(
        ask(listen, &s, None, one).await,
        None,
        "the shared key does not open up again"
    );

    proc.signal("TERM");
    let (status, _) = proc.wait_exit();
    assert_eq!(status.code(), Some(0));
}

// A request the public remote forwards to an agent still goes by the user's own rules there:
// the agent below lists alice without her rule, so only the public remote can refuse her.
// The public remote runs in this process, so its agent metrics are this process's.
#[tokio::test(flavor = "multi_thread")]
async fn a_users_own_rules_hold_for_requests_forwarded_to_an_agent() {
    let (shared, alice, carol, agent_key) = (key(), key(), key(), key());
    let k = |text: &str| Key::from_base64(text).unwrap();
    let intranet = echo_on("127.0.0.2").await;
    let public = format!(
        "  agents: {{ campus: {{ key: \"{agent_key}\" }} }}\n  routes:\n    - {{ cidr: \"127.0.0.2/32\", via: campus }}\n  users:\n    alice: {{ key: \"{alice}\", acl: [ {{ deny: \"127.0.0.2\" }} ] }}\n    carol: {{ key: \"{carol}\" }}\n"
    );
    let (vps, stop) = cli_harness::start_remote(&shared, &public).await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let agent = format!(
        "key: \"{shared}\"\nremote:\n  listen: \"{listen}\"\n  acl: [ {{ allow: \"127.0.0.2\" }} ]\n  agent: {{ server: \"{vps}\", name: campus, key: \"{agent_key}\" }}\n  users:\n    alice: {{ key: \"{alice}\" }}\n    carol: {{ key: \"{carol}\" }}\n"
    );
    let mut proc = Proc::spawn(BIN, &["-c", config_file(&agent).to_str().unwrap()]);
    proc.wait_line("agent registered");
    let s = k(&shared);

    assert_eq!(ask(vps, &s, Some(&k(&carol)), intranet).await, Some(Status::Succeeded));
    assert_eq!(
        ask(vps, &s, Some(&k(&alice)), intranet).await,
        Some(Status::NotAllowed),
        "alice's own rule, applied by the public remote"
    );
    let text = warren_common::metrics::get().encode();
    assert!(text.contains("warren_agent_sessions{agent=\"campus\"} 1"), "{text}");
    assert!(
        text.contains("warren_agent_streams_total{agent=\"campus\"} 1"),
        "{text}"
    );

    proc.signal("TERM");
    let (status, _) = proc.wait_exit();
    assert_eq!(status.code(), Some(0));
    stop.cancel();
}
