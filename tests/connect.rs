//! CONNECT through the tunnel with real clients: curl and a raw SOCKS5 client.

use warren_common::proto::address::{Address, DomainName};
use warren_common::proto::socks5::ReplyCode;
use warren_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn curl_fetches_a_body_byte_exact() {
    let body = pattern(3 * 1024 * 1024 + 17);
    let site = http_server("127.0.0.1:0", body.clone()).await;
    let pair = start_pair("", "").await;
    let proxy = pair.socks().to_string();
    for (flag, host) in [("--socks5-hostname", "localhost"), ("--socks5", "127.0.0.1")] {
        let url = format!("http://{host}:{}/file", site.port());
        let out = curl(&[flag, &proxy, &url]).await;
        assert!(
            out.status.success(),
            "curl {flag} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == body,
            "body differs via {flag} ({} bytes)",
            out.stdout.len()
        );
    }
    pair.local.stop().await;
    pair.remote.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_target_gets_reply_0x05_with_a_complete_reply() {
    let pair = start_pair("", "").await;
    // A port nothing listens on, held that way (bound, never listening) for the whole test.
    let closed_port = closed_port(); // held closed (bound, never listening) for the whole test
    let closed = closed_port.addr;
    let (_s, reply) = socks5_connect(pair.socks(), &Address::Ip(closed), None).await.unwrap();
    assert_eq!(reply.code, ReplyCode::ConnectionRefused);
    assert_eq!(reply.bound, Address::UNSPECIFIED);
}

// 32 MiB up and 32 MiB down at the same time, byte-exact: the relay runs both directions at
// once (an echo target would deadlock a one-direction-at-a-time relay once buffers fill).
#[tokio::test(flavor = "multi_thread")]
async fn thirty_two_mib_each_way_byte_exact() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = echo_server("127.0.0.1:0").await;
    let pair = start_pair("", "").await;
    let (stream, reply) = socks5_connect(pair.socks(), &Address::Ip(echo), None).await.unwrap();
    assert_eq!(reply.code, ReplyCode::Succeeded);
    let data = pattern(32 * 1024 * 1024);
    let (mut r, mut w) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.expect("write 32 MiB");
        w.shutdown().await.expect("half-close");
    });
    let mut got = Vec::with_capacity(data.len());
    tokio::time::timeout(std::time::Duration::from_secs(120), r.read_to_end(&mut got))
        .await
        .expect("32 MiB echo within 120 s")
        .expect("read echo");
    writer.await.expect("writer");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed bytes differ");
    pair.local.stop().await;
    pair.remote.stop().await;
}

// A name the resolver rejects locally (a label over 63 bytes: no DNS query leaves the machine)
// gets 0x04, host unreachable, in a complete reply.
#[tokio::test]
async fn unresolvable_name_gets_reply_0x04() {
    let pair = start_pair("", "").await;
    let name = format!("{}.test", "a".repeat(64));
    let (_s, reply) = socks5_connect(
        pair.socks(),
        &Address::Domain(DomainName::new(&name).expect("a name"), 80),
        None,
    )
    .await
    .unwrap();
    assert_eq!(reply.code, ReplyCode::HostUnreachable);
    assert_eq!(reply.bound, Address::UNSPECIFIED);
}
