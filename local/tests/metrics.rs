//! warren-local's `/metrics`, scraped with curl: a CONNECT that succeeds after failing over
//! from a remote that breaks the handshake, one a route blocks, and the health gauge of both
//! remotes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

use tokio::task::spawn_blocking;

const BIN: &str = env!("CARGO_BIN_EXE_warren-local");

#[path = "../../tests/cli_harness.rs"]
mod cli_harness;
use cli_harness::{config_file, free_port, key, sample, scrape, socks5_open, start_remote, Proc};

/// A port that accepts TCP (so health checks pass) and closes each connection unanswered (so
/// a tunnel through it fails and the next remote is tried).
fn broken_remote() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(64) {
            drop(conn);
        }
    });
    addr
}

fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(8) {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_follow_failover_blocks_and_health() {
    let k = key();
    let (good, stop) = start_remote(&k, "  acl:\n    - allow: \"127.0.0.1\"\n").await;
    let bad = broken_remote();
    let target = echo();
    let (port, metrics) = (free_port(), free_port());
    let yaml = format!(
        "key: \"{k}\"\nlocal:\n  listen: \"127.0.0.1:{port}\"\n  warm_connections: 0\n  metrics: {{ listen: \"127.0.0.1:{metrics}\" }}\n  remotes:\n    bad: {{ address: \"{bad}\" }}\n    good: {{ address: \"{good}\" }}\n  routes:\n    - {{ port: 9, block: true }}\n  default: {{ proxy: [bad, good] }}\n"
    );
    let mut proc = Proc::spawn(BIN, &["-c", config_file(&yaml).to_str().unwrap()]);
    proc.wait_line("serving SOCKS5");
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();

    let codes = spawn_blocking(move || {
        let (ok, mut stream) = socks5_open(proxy, target, None).unwrap();
        stream.write_all(b"ping").unwrap();
        let mut pong = [0u8; 4];
        stream.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"ping");
        drop(stream);
        let blocked = socks5_open(proxy, SocketAddr::from(([127, 0, 0, 1], 9)), None).map(|(c, _)| c);
        (ok, blocked)
    })
    .await
    .unwrap();
    assert_eq!(codes, (0, Some(0x02)));
    proc.wait_line("connection finished");

    let samples = spawn_blocking(move || scrape(metrics)).await.unwrap();
    let s = |name: &str| sample(&samples, name);
    assert_eq!(
        s(r#"warren_connections_total{front="socks5",command="connect",result="succeeded"}"#),
        1.0,
        "{samples:?}"
    );
    assert_eq!(
        s(r#"warren_connections_total{front="socks5",command="connect",result="not_allowed"}"#),
        1.0
    );
    assert_eq!(s(r#"warren_failovers_total{remote="bad"}"#), 1.0, "{samples:?}");
    assert_eq!(s(r#"warren_bytes_total{direction="up"}"#), 4.0);
    assert_eq!(s(r#"warren_bytes_total{direction="down"}"#), 4.0);
    // Both remotes count as up from the start, and both accept TCP, so both pass the health
    // check (a TCP connect) whenever it runs.
    assert_eq!(s(r#"warren_remote_up{remote="bad"}"#), 1.0, "{samples:?}");
    assert_eq!(s(r#"warren_remote_up{remote="good"}"#), 1.0);

    proc.signal("TERM");
    let (status, _) = proc.wait_exit();
    assert_eq!(status.code(), Some(0));
    stop.cancel();
}
