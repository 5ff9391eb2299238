//! CONNECT through the tunnel with real clients: curl and a raw SOCKS5 client.

use warren_common::proto::address::Address;
use warren_common::proto::socks5::ReplyCode;
use warren_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn curl_fetches_a_body_byte_exact() {
    let body = pattern(3 * 1024 * 1024 + 17);
    let site = http_server("127.0.0.1:0", body.clone()).await;
    let pair = start_pair("", "").await;
    let proxy = pair.socks().to_string();
    for (flag, host) in [
        ("--socks5-hostname", "localhost"),
        ("--socks5", "127.0.0.1"),
    ] {
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
    // A port nothing listens on: bind, learn the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_s, reply) = socks5_connect(pair.socks(), &Address::Ip(closed), None)
        .await
        .unwrap();
    assert_eq!(reply.code, ReplyCode::ConnectionRefused);
    assert_eq!(reply.bound, Address::UNSPECIFIED);
}
