//! warren-remote's `/metrics` under a scripted mix: tunnels that succeed, requests the ACL
//! refuses, probes, a replayed request and a stale one, scraped with curl and parsed.

use std::net::SocketAddr;

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

/// The bytes of a request to `target` stamped `stamp`, as a local would send them.
async fn request_bytes(key: &Key, target: SocketAddr, stamp: u64) -> Vec<u8> {
    let (mut ours, theirs) = tokio::io::duplex(1 << 16);
    let header = RequestHeader::connect(Address::Ip(target), stamp);
    let pending = PendingTunnel::send_request(theirs, key, &header, b"").await.unwrap();
    drop(pending);
    let mut bytes = Vec::new();
    ours.read_to_end(&mut bytes).await.unwrap();
    bytes
}

/// Sends `bytes` on a new connection and returns what came back before the close (at most
/// 10 s).
async fn send(remote: SocketAddr, bytes: &[u8]) -> usize {
    let mut s = TcpStream::connect(remote).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(BOUND, s.read(&mut buf)).await {
        Ok(Ok(n)) => n,
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_follow_successes_refusals_probes_and_replays() {
    let k = key();
    let key = Key::from_base64(&k).unwrap();
    let target = echo_on("127.0.0.1").await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = format!(
        "key: \"{k}\"\nremote:\n  listen: \"{listen}\"\n  handshake_timeout: 1\n  acl: [ {{ allow: \"{}\" }} ]\n  metrics: {{ listen: \"{metrics}\" }}\n",
        target.ip()
    );
    let mut proc = Proc::spawn(BIN, &["-c", config_file(&yaml).to_str().unwrap()]);
    proc.wait_line("serving Prometheus metrics");
    proc.wait_line("accepting tunnels");

    // 3 tunnels that relay 1000 bytes each way; the last stays open over the scrape.
    let mut open = Vec::new();
    for _ in 0..3 {
        let stream = TcpStream::connect(listen).await.unwrap();
        let header = RequestHeader::connect(Address::Ip(target), unix_now());
        let pending = PendingTunnel::send_request(stream, &key, &header, &[7u8; 1000])
            .await
            .unwrap();
        let (response, mut tunnel) = pending.read_response().await.unwrap();
        assert_eq!(response.status, Status::Succeeded);
        let mut back = vec![0u8; 1000];
        tunnel.read_exact(&mut back).await.unwrap();
        open.push(tunnel);
    }
    for tunnel in open.iter_mut().take(2) {
        tunnel.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tunnel.read_to_end(&mut rest).await.unwrap();
    }
    proc.wait_line("connection finished");
    proc.wait_line("connection finished");

    // 2 refused by the ACL: loopback on another address than the allowed one.
    for port in [1, 2] {
        let stream = TcpStream::connect(listen).await.unwrap();
        let header = RequestHeader::connect(Address::Ip(SocketAddr::from(([127, 0, 0, 9], port))), unix_now());
        let pending = PendingTunnel::send_request(stream, &key, &header, b"").await.unwrap();
        let (response, _) = pending.read_response().await.unwrap();
        assert_eq!(response.status, Status::NotAllowed);
    }
    // 2 probes, 1 replay (the second copy of a request), 1 stale request: silence for each.
    assert_eq!(send(listen, &[0x42; 64]).await, 0);
    assert_eq!(
        send(listen, b"GET / HTTP/1.1\r\nHost: probe.example\r\nAccept: */*\r\n\r\n").await,
        0
    );
    let recorded = request_bytes(&key, target, unix_now()).await;
    assert!(send(listen, &recorded).await > 0, "the first copy is answered");
    assert_eq!(send(listen, &recorded).await, 0, "the replay is not");
    assert_eq!(
        send(listen, &request_bytes(&key, target, unix_now() - 1000).await).await,
        0
    );

    let samples = scrape(metrics);
    let s = |name: &str| sample(&samples, name);
    assert_eq!(
        s(r#"warren_connections_total{front="tunnel",command="connect",result="succeeded"}"#),
        4.0,
        "{samples:?}"
    );
    assert_eq!(
        s(r#"warren_connections_total{front="tunnel",command="connect",result="not_allowed"}"#),
        2.0
    );
    assert_eq!(
        s(r#"warren_refusals_total{reason="unauthenticated"}"#),
        2.0,
        "{samples:?}"
    );
    assert_eq!(s(r#"warren_refusals_total{reason="replay"}"#), 1.0);
    assert_eq!(s(r#"warren_refusals_total{reason="stale"}"#), 1.0);
    assert!(s(r#"warren_bytes_total{direction="up"}"#) >= 2000.0, "{samples:?}");
    assert!(s(r#"warren_bytes_total{direction="down"}"#) >= 2000.0);
    assert!(s("warren_open_connections") >= 1.0, "the third tunnel is open");
    drop(open);

    proc.signal("TERM");
    let (status, _) = proc.wait_exit();
    assert_eq!(status.code(), Some(0));
}

// The endpoint has no key, so anyone who reaches it may send anything: garbage and an
// oversized head get 400, a silent client is dropped, and scraping (and the tunnel) go on.
#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_endpoint_refuses_bad_requests_and_keeps_serving() {
    let k = key();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = format!("key: \"{k}\"\nremote:\n  listen: \"{listen}\"\n  metrics: {{ listen: \"{metrics}\" }}\n");
    let mut proc = Proc::spawn(BIN, &["-c", config_file(&yaml).to_str().unwrap()]);
    proc.wait_line("accepting tunnels");
    let answer = |bytes: Vec<u8>| async move {
        let mut s = TcpStream::connect(metrics).await.unwrap();
        let _ = s.write_all(&bytes).await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(BOUND, s.read_to_end(&mut got)).await;
        String::from_utf8_lossy(&got).into_owned()
    };
    assert!(answer(b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec())
        .await
        .starts_with("HTTP/1.1 400"));
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 16 * 1024));
    assert!(answer(huge).await.starts_with("HTTP/1.1 400"));
    assert!(answer(b"DELETE /metrics HTTP/1.1\r\n\r\n".to_vec())
        .await
        .starts_with("HTTP/1.1 405"));
    let held = TcpStream::connect(metrics).await.unwrap();
    let samples = scrape(metrics);
    assert!(
        samples.iter().any(|(name, _)| name == "warren_open_connections"),
        "{samples:?}"
    );
    drop(held);
    proc.signal("TERM");
    let (status, _) = proc.wait_exit();
    assert_eq!(status.code(), Some(0));
}
