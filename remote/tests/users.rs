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
use cli_harness::{config_file, free_port, key, sample, scrape, Proc, BOUND};

async fn echo(ip: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

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
    let (one, two) = (echo("127.0.0.1").await, echo("127.0.0.2").await);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = |bob_listed: bool| {
        let bob = if bob_listed {
            format!("    bob: {{ key: \"{bob}\", acl: [ {{ deny: \"127.0.0.2\" }} ] }}\n")
        } else {
            String::new()
        };
        format!(
            "key: \"{shared}\"\nremote:\n  listen: \"{listen}\"\n  handshake_timeout: 1\n  acl: [ {{ allow: \"127.0.0.0/8\" }} ]\n  metrics: {{ listen: \"{metrics}\" }}\n  users:\n    alice: {{ key: \"{alice}\" }}\n{bob}"
        )
    };
    let path = config_file(&yaml(true));
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

    // Bob's entry removed: his key now gets silence; alice is unaffected.
    rewrite(&path, &yaml(false));
    proc.signal("HUP");
    proc.wait_line("config reloaded");
    assert_eq!(
        ask(listen, &s, Some(&k(&bob)), one).await,
        None,
        "a removed user is refused"
    );
    assert_eq!(ask(listen, &s, Some(&k(&alice)), one).await, Some(Status::Succeeded));

    proc.signal("TERM");
    let (status, _) = proc.wait_exit();
    assert_eq!(status.code(), Some(0));
}
