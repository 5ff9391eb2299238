//! Reloading warren-remote's config on SIGHUP, through the real binary: a 64 MiB download
//! through a tunnel opened before the reload finishes byte-exact while the reload replaces the
//! key and the ACL for new requests (the old key then gets silence, as any wrong key does); an
//! invalid file is refused and the running config stays.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
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
use cli_harness::{config_file, free_port, key, Proc, BOUND};

const SIZE: usize = 64 << 20;

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 13)) as u8
}

/// A target on `ip` that sends SIZE bytes of [`pattern`] to each connection, or echoes if
/// `echo`.
fn target(ip: &str, echo: bool) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(8) {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                if echo {
                    let mut reader = conn.try_clone().unwrap();
                    let _ = std::io::copy(&mut reader, &mut conn);
                    return;
                }
                for start in (0..SIZE).step_by(1 << 16) {
                    let chunk: Vec<u8> = (start..start + (1 << 16)).map(pattern).collect();
                    if conn.write_all(&chunk).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn yaml(key: &str, listen: SocketAddr, acl: &str, extra: &str) -> String {
    format!("key: \"{key}\"\nremote:\n  listen: \"{listen}\"\n  handshake_timeout: 1\n  acl:\n    - allow: \"{acl}\"\n{extra}")
}

fn rewrite(path: &Path, yaml: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A tunnel request to `target` under `key`: the response status and the stream, or None if
/// the remote said nothing (closed, or silent for 10 s).
async fn ask(
    remote: SocketAddr,
    key: &str,
    target: SocketAddr,
) -> Option<(Status, impl AsyncReadExt + AsyncWriteExt + Unpin)> {
    let key = Key::from_base64(key).unwrap();
    let stream = TcpStream::connect(remote).await.unwrap();
    let header = RequestHeader::connect(Address::Ip(target), unix_now());
    let pending = PendingTunnel::send_request(stream, &key, &header, b"").await.unwrap();
    match tokio::time::timeout(BOUND, pending.read_response()).await {
        Ok(Ok((response, tunnel))) => Some((response.status, tunnel)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_replaces_key_and_acl_for_new_requests_and_spares_open_tunnels() {
    let (old_key, new_key) = (key(), key());
    let download = target("127.0.0.1", false);
    let echo = target("127.0.0.2", true);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = config_file(&yaml(&old_key, listen, "127.0.0.0/8", ""));
    let mut proc = Proc::spawn(BIN, &["-c", path.to_str().unwrap()]);
    proc.wait_line("accepting tunnels");

    let (status, mut tunnel) = ask(listen, &old_key, download).await.expect("answered");
    assert_eq!(status, Status::Succeeded);
    let mut head = vec![0u8; 1 << 20];
    tunnel.read_exact(&mut head).await.unwrap();
    assert!(head.iter().enumerate().all(|(i, b)| *b == pattern(i)));

    // Reload: a new key, and only 127.0.0.2 allowed among the loopback addresses.
    rewrite(&path, &yaml(&new_key, listen, "127.0.0.2", ""));
    proc.signal("HUP");
    proc.wait_line("config reloaded");

    assert!(ask(listen, &old_key, echo).await.is_none(), "the old key gets silence");
    let (status, _) = ask(listen, &new_key, download).await.expect("answered");
    assert_eq!(status, Status::NotAllowed, "127.0.0.1 is no longer allowed");
    let (status, mut tunnel_b) = ask(listen, &new_key, echo).await.expect("answered");
    assert_eq!(status, Status::Succeeded);
    tunnel_b.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    tunnel_b.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"ping");

    // The download from before the reload finishes, byte for byte.
    let mut offset = 1 << 20;
    let mut buf = vec![0u8; 1 << 16];
    while offset < SIZE {
        let n = tokio::time::timeout(BOUND, tunnel.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "ended at {offset}");
        for (j, b) in buf.iter().take(n).enumerate() {
            assert_eq!(*b, pattern(offset + j), "byte {}", offset + j);
        }
        offset += n;
    }
    assert_eq!(offset, SIZE);

    // An invalid file is refused, naming the field, and the running config stays.
    rewrite(&path, &yaml(&new_key, listen, "127.0.0.2", "  max_handshakes: 0\n"));
    proc.signal("HUP");
    let line = proc.wait_line("reload refused");
    assert!(line.contains("remote.max_handshakes"), "{line}");
    let (status, _) = ask(listen, &new_key, echo).await.expect("answered");
    assert_eq!(status, Status::Succeeded);

    drop((tunnel, tunnel_b));
    proc.signal("TERM");
    let (status, _) = proc.wait_exit();
    assert_eq!(status.code(), Some(0));
}

// An agent whose reload points `remote.agent` at another public remote leaves the first one
// and registers with the second: a request through the second reaches the intranet target
// through it, one through the first no longer does.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_redials_the_agent_link_when_remote_agent_changes() {
    let (k, agent_key) = (key(), key());
    let intranet = target("127.0.0.2", true);
    let public = format!(
        "  agents: {{ campus: {{ key: \"{agent_key}\" }} }}\n  routes:\n    - {{ cidr: \"127.0.0.2/32\", via: campus }}\n"
    );
    let (first, stop_first) = cli_harness::start_remote(&k, &public).await;
    let (second, stop_second) = cli_harness::start_remote(&k, &public).await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let agent =
        |server: SocketAddr| format!("  agent: {{ server: \"{server}\", name: campus, key: \"{agent_key}\" }}\n");
    let path = config_file(&yaml(&k, listen, "127.0.0.2", &agent(first)));
    let mut proc = Proc::spawn(BIN, &["-c", path.to_str().unwrap()]);
    proc.wait_line("agent registered");

    let through = |public: SocketAddr| {
        let k = k.clone();
        async move {
            let (status, mut tunnel) = ask(public, &k, intranet).await.expect("answered");
            if status != Status::Succeeded {
                return status;
            }
            tunnel.write_all(b"ping").await.unwrap();
            let mut pong = [0u8; 4];
            tunnel.read_exact(&mut pong).await.unwrap();
            assert_eq!(&pong, b"ping");
            status
        }
    };
    assert_eq!(through(first).await, Status::Succeeded);

    rewrite(&path, &yaml(&k, listen, "127.0.0.2", &agent(second)));
    proc.signal("HUP");
    proc.wait_line("redialling the agent link");
    let line = proc.wait_line("agent registered");
    assert!(line.contains(&second.to_string()), "{line}");
    assert_eq!(through(second).await, Status::Succeeded);
    assert_ne!(
        through(first).await,
        Status::Succeeded,
        "the first public remote lost the agent"
    );

    proc.signal("TERM");
    let (status, _) = proc.wait_exit();
    assert_eq!(status.code(), Some(0));
    stop_first.cancel();
    stop_second.cancel();
}
