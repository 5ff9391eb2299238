//! The reverse tunnel on loopback, standing in for the namespace test (remote/tests/campus.rs)
//! where namespaces cannot be made, and for what a namespace test would make slow: the soak and
//! the dead link. The bed is tests/campus_bed.rs.

use std::time::{Duration, Instant};

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::{TcpStream, UdpSocket};
use warren_common::crypto::Key;
use warren_common::proto::address::{Address, DomainName};
use warren_common::proto::decode_exact;
use warren_common::proto::header::RequestHeader;
use warren_common::proto::socks5::{Command, ReplyCode};
use warren_common::proto::status::Status;
use warren_common::proto::udp::Socks5Datagram;
use warren_common::proto::Encode;
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
    let name = Address::Domain(DomainName::new("0x7f.0.0.3").expect("a name"), c.intranet.addr.port());
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

/// One SOCKS5 UDP datagram to `to` through the association's relay, and the echo, if it comes
/// back within a few seconds (UDP may lose one).
async fn udp_echo(client: &UdpSocket, relay: SocketAddr, to: SocketAddr, data: &[u8]) -> Option<Socks5Datagram> {
    let mut out = Vec::new();
    Socks5Datagram {
        frag: 0,
        address: Address::Ip(to),
        data: data.to_vec(),
    }
    .encode(&mut out);
    client.send_to(&out, relay).await.ok()?;
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    decode_exact(&buf[..n]).ok()
}

#[tokio::test]
async fn udp_and_bind_reach_the_intranet_through_the_agent() {
    let (key, agent_key) = (new_key(), new_key());
    let intranet = target("127.0.0.3:0").await;
    let udp_intranet = udp_echo_server("127.0.0.3:0").await;
    // Everything for 127.0.0.3 goes via the agent; the VPS's own ACL denies loopback, so a
    // datagram or BIND it served itself could not reach (or come from) the intranet.
    let routes = "    - { cidr: \"127.0.0.3/32\", via: campus }\n";
    let vps = start_vps_routes(&key, &agent_key, "127.0.0.1:0".parse().unwrap(), routes).await;
    let agent = start_agent(&key, &agent_key, "campus", vps.addr).await;
    let up = echo_until(
        vps_local(&key, vps.addr, "tcp").await.addr,
        intranet.addr,
        b"up",
        Duration::from_secs(30),
    );
    within(40, "agent registers", up).await.expect("agent up");

    for transport in ["tcp", "udp"] {
        let local = vps_local(&key, vps.addr, transport).await;
        let (_control, relay) = udp_associate(local.addr).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut echoed = 0;
        for i in 0..100u8 {
            let data = [i; 200];
            if let Some(d) = udp_echo(&client, relay, udp_intranet, &data).await {
                assert_eq!(
                    d.address,
                    Address::Ip(udp_intranet),
                    "the reply names the intranet source"
                );
                assert_eq!(d.data, data);
                echoed += 1;
            }
        }
        assert!(
            echoed >= 95,
            "{transport}: {echoed} of 100 datagrams echoed through the agent"
        );
        local.stop().await;
    }

    // BIND for a peer inside the intranet: the agent listens, the peer connects back.
    let local = vps_local(&key, vps.addr, "tcp").await;
    let expected = Address::Ip("127.0.0.3:0".parse().unwrap());
    let (mut control, first, mut buf) = within(
        20,
        "first BIND reply",
        socks5_request(local.addr, Command::Bind, &expected),
    )
    .await
    .expect("BIND");
    assert_eq!(first.code, ReplyCode::Succeeded);
    let Address::Ip(listening) = first.bound else {
        panic!("{:?}", first.bound)
    };
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut peer = socket.connect(listening).await.expect("peer connects back");
    let second: warren_common::proto::socks5::Reply =
        within(20, "second BIND reply", read_message(&mut control, &mut buf))
            .await
            .expect("second reply");
    assert_eq!(second.code, ReplyCode::Succeeded);
    assert_eq!(second.bound, Address::Ip(peer.local_addr().unwrap()));
    peer.write_all(b"from the intranet").await.unwrap();
    let mut got = [0u8; 17];
    within(20, "the peer's bytes", control.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"from the intranet");

    // Without the agent, the VPS does not serve them itself: BIND is refused (0x04).
    agent.stop().await;
    let (_c, refused, _) = within(
        20,
        "BIND with no agent",
        socks5_request(local.addr, Command::Bind, &expected),
    )
    .await
    .expect("BIND reply");
    assert_eq!(refused.code, ReplyCode::HostUnreachable);
    local.stop().await;
    vps.stop().await;
}

/// A laptop's warren-local towards `vps`, with its UDP transport set.
async fn vps_local(key: &str, vps: SocketAddr, transport: &str) -> Server {
    start_local(key, vps, &format!("udp_transport: {transport}")).await
}
