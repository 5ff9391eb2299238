//! The reverse tunnel on loopback, standing in for the namespace test (remote/tests/campus.rs)
//! where namespaces cannot be made, and for what a namespace test would make slow: the soak and
//! the dead link. The bed is tests/campus_bed.rs.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_common::crypto::Key;
use warren_common::proto::address::Address;
use warren_common::proto::header::RequestHeader;
use warren_common::proto::socks5::ReplyCode;
use warren_common::proto::status::Status;
use warren_common::time::unix_now;
use warren_common::tunnel::PendingTunnel;
use warren_tests::campus_bed::*;
use warren_tests::*;

#[tokio::test]
async fn intranet_through_the_agent_and_healed_after_a_vps_restart() {
    let mut c = campus().await;
    let data = pattern(256 * 1024);
    within(
        30,
        "first echo via the agent",
        echo_until(c.local.addr, c.intranet.addr, &data, Duration::from_secs(30)),
    )
    .await
    .expect("the intranet answers through the agent");
    // It came from the agent (127.0.0.4), not from the VPS or the laptop.
    let peers = c.intranet.peers().await;
    assert!(
        !peers.is_empty() && peers.iter().all(|p| p.ip().to_string() == "127.0.0.4"),
        "{peers:?}"
    );

    // The VPS cannot reach the intranet itself: a port with no route gets the ACL's refusal.
    let other = target("127.0.0.3:0").await;
    let (_s, reply) = within(
        20,
        "unrouted CONNECT",
        socks5_connect(c.local.addr, &Address::Ip(other.addr), None),
    )
    .await
    .unwrap();
    assert_eq!(reply.code, ReplyCode::NotAllowed);
    assert_eq!(other.connections().await, 0);

    // curl fetches a page from the intranet, byte-exact.
    let url = format!("http://{}/page", c.site);
    let proxy = c.local.addr.to_string();
    let out = curl(&["--socks5-hostname", &proxy, &url]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == c.site_body, "page differs");

    // The VPS's routes see through a target name that spells the routed address (as a client
    // other than warren-local may send it): it goes via the agent, not out to the VPS's ACL.
    let key = Key::from_base64(&c.key).expect("key");
    let tcp = TcpStream::connect(c.vps.addr).await.expect("connect to the VPS");
    let name = Address::Domain("0x7f.0.0.3".into(), c.intranet.addr.port());
    let header = RequestHeader::connect(name, unix_now());
    let pending = PendingTunnel::send_request(tcp, &key, &header, b"ping")
        .await
        .expect("send");
    let (response, mut tunnel) = within(20, "the response", pending.read_response())
        .await
        .expect("answered");
    assert_eq!(response.status, Status::Succeeded);
    let mut echoed = [0u8; 4];
    within(20, "the echo", tunnel.read_exact(&mut echoed))
        .await
        .expect("echo");
    assert_eq!(&echoed, b"ping");
    drop(tunnel);
    let peers = c.intranet.peers().await;
    assert!(peers.iter().all(|p| p.ip().to_string() == "127.0.0.4"), "{peers:?}");

    // A VPS restart heals by itself: nobody touches the agent or the laptop.
    let vps_addr = c.vps.addr;
    let routed = [c.intranet.addr.port(), c.site.port()];
    c.vps.stop().await;
    let killed = Instant::now();
    c.vps = start_vps(&c.key, &c.agent_key, vps_addr, &routed).await;
    within(
        30,
        "echo after the VPS restart",
        echo_until(c.local.addr, c.intranet.addr, &data, Duration::from_secs(30)),
    )
    .await
    .expect("the tunnel heals after the VPS restarts");
    println!("healed {:.2} s after the VPS stopped", killed.elapsed().as_secs_f64());
    let out = curl(&["--socks5-hostname", &proxy, &url]).await;
    assert!(
        out.status.success() && out.stdout == c.site_body,
        "page after the restart"
    );
    c.local.stop().await;
    c.agent.stop().await;
    c.vps.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_streams_of_a_mebibyte_through_the_agent() {
    let c = campus().await;
    c.wait_for_agent().await;
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let (local, to) = (c.local.addr, c.intranet.addr);
        tasks.push(tokio::spawn(async move {
            // Each stream its own bytes, so a stream mixed up with another fails too.
            let mut data = pattern(1 << 20);
            data[..4].copy_from_slice(&i.to_be_bytes());
            let got = echo_once(local, to, &data).await;
            got.is_some_and(|g| g == data)
        }));
    }
    let mut exact = 0;
    for t in tasks {
        if within(300, "a soak stream", t).await.unwrap() {
            exact += 1;
        }
    }
    assert_eq!(exact, 200, "streams echoed byte-exact");
}

#[tokio::test]
async fn streams_on_a_dead_link_end_and_new_ones_get_a_reply() {
    let c = campus().await;
    c.wait_for_agent().await;
    let (mut s, reply) = socks5_connect(c.local.addr, &Address::Ip(c.intranet.addr), None)
        .await
        .unwrap();
    assert_eq!(reply.code, ReplyCode::Succeeded);
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).await.unwrap();

    // The campus side goes away mid-stream: the stream ends (a close, not a hang).
    c.agent.stop().await;
    let mut rest = Vec::new();
    let ended = within(30, "the stream on the dead link", s.read_to_end(&mut rest)).await;
    assert!(ended.is_err() || rest.is_empty(), "no bytes after the link died");

    // With no agent registered, a request routed to it gets a reply at once.
    let (_s, reply) = within(
        30,
        "CONNECT with no agent",
        socks5_connect(c.local.addr, &Address::Ip(c.intranet.addr), None),
    )
    .await
    .unwrap();
    assert_eq!(reply.code, ReplyCode::HostUnreachable);
    c.local.stop().await;
    c.vps.stop().await;
}
