//! Chains of hops: local → A → B → target with a different key per hop, and local → A →
//! upstream SOCKS5 server (microsocks from Debian) → target, with and without a login. Which
//! host made the final connection is read off the target: each remote binds its outbound
//! connections to its own loopback address (`remote.outbound_source`), and microsocks to its
//! own (`-b`).

use std::net::SocketAddr;
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;
use warren_common::proto::Encode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use warren_common::proto::address::Address;
use warren_common::proto::decode_exact;
use warren_common::proto::socks5::{Command, Reply, ReplyCode};
use warren_common::proto::udp::Socks5Datagram;
use warren_tests::*;

/// A remote with its own key that allows loopback targets and connects out from `source`.
async fn hop(key: &str, source: &str) -> Server {
    start_remote(
        key,
        &format!("acl:\n  - allow: \"127.0.0.0/8\"\noutbound_source: \"{source}\""),
    )
    .await
}

/// A local whose default route is `chain` (YAML flow list of hops) over remotes `a` and `b`.
async fn chained_local(remotes: &[(&str, SocketAddr, &str)], chain: &str, extra: &str) -> Server {
    let mut yaml = format!("key: \"{}\"\nlocal:\n  remotes:\n", new_key());
    for (name, addr, key) in remotes {
        yaml.push_str(&format!("    {name}: {{ address: \"{addr}\", key: \"{key}\" }}\n"));
    }
    yaml.push_str(&format!("  chains:\n    c: {chain}\n  default: c\n"));
    for line in extra.lines() {
        yaml.push_str(&format!("  {line}\n"));
    }
    start_local_yaml(&yaml).await.0
}

/// 1 MiB through a SOCKS5 CONNECT, echoed back byte-exact. The write side stays open until
/// everything is back: microsocks ends both directions at the first EOF (no half-close).
async fn echo_through(proxy: SocketAddr, target: SocketAddr) {
    let (stream, reply) = within(20, "CONNECT", socks5_connect(proxy, &Address::Ip(target), None))
        .await
        .unwrap();
    assert_eq!(reply.code, ReplyCode::Succeeded);
    let data = pattern(1 << 20);
    let (mut r, mut w) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w
    });
    let mut got = vec![0u8; data.len()];
    within(60, "echo", r.read_exact(&mut got)).await.unwrap();
    drop(writer.await.unwrap());
    assert!(got == data, "echo differs");
}
#[tokio::test]
async fn chain_of_two_remotes_with_their_own_keys() {
    let (key_a, key_b) = (new_key(), new_key());
    let a = hop(&key_a, "127.0.0.3").await;
    let b = hop(&key_b, "127.0.0.2").await;
    let local = chained_local(&[("a", a.addr, &key_a), ("b", b.addr, &key_b)], "[a, b]", "").await;
    let target = target("127.0.0.1:0").await;
    echo_through(local.addr, target.addr).await;
    // The last hop made the connection.
    assert_eq!(ips(&target.peers().await), ["127.0.0.2"]);

    // A real client: curl through the chain, byte-exact.
    let body = pattern(300_000);
    let site = http_server("127.0.0.1:0", body.clone()).await;
    let got = curl_fetch(&[
        "--socks5-hostname",
        &local.addr.to_string(),
        &format!("http://localhost:{}/", site.port()),
    ])
    .await;
    assert!(got == body, "curl got {} bytes", got.len());

    // The other front ends take the same chain: SOCKS4a, HTTP CONNECT and HTTP forwarding.
    let url = format!("http://localhost:{}/", site.port());
    let proxy = format!("http://{}", local.addr);
    let socks4 = local.addr.to_string();
    for args in [
        vec!["--socks4a", socks4.as_str(), url.as_str()],
        vec!["-p", "-x", proxy.as_str(), url.as_str()],
        vec!["-x", proxy.as_str(), url.as_str()],
    ] {
        let got = curl_fetch(&args).await;
        assert!(got == body, "{args:?}: curl got {} bytes", got.len());
    }
}

#[tokio::test]
async fn chain_with_a_wrong_key_for_the_second_hop_fails_with_a_reply() {
    let (key_a, key_b) = (new_key(), new_key());
    let a = hop(&key_a, "127.0.0.3").await;
    let b = hop(&key_b, "127.0.0.2").await;
    let wrong = new_key();
    let local = chained_local(
        &[("a", a.addr, &key_a), ("b", b.addr, &wrong)],
        "[a, b]",
        "connect_timeout: 3",
    )
    .await;
    let target = target("127.0.0.1:0").await;
    let (_stream, reply) = within(
        20,
        "a reply, not a hang",
        socks5_connect(local.addr, &Address::Ip(target.addr), None),
    )
    .await
    .unwrap();
    assert_eq!(reply.code, ReplyCode::GeneralFailure);
    assert_eq!(target.connections().await, 0);

    // Reached at all: the first hop's key is right, so it is the second hop that stays silent;
    // a wrong key for the first hop fails the same way.
    let local = chained_local(
        &[("a", a.addr, &wrong), ("b", b.addr, &key_b)],
        "[a, b]",
        "connect_timeout: 3",
    )
    .await;
    let (_stream, reply) = within(
        20,
        "a reply, not a hang",
        socks5_connect(local.addr, &Address::Ip(target.addr), None),
    )
    .await
    .unwrap();
    assert_eq!(reply.code, ReplyCode::GeneralFailure);
    assert_eq!(target.connections().await, 0);
}

#[tokio::test]
async fn a_target_refused_at_the_last_hop_keeps_its_reply_code() {
    let (key_a, key_b) = (new_key(), new_key());
    let a = hop(&key_a, "127.0.0.3").await;
    let b = hop(&key_b, "127.0.0.2").await;
    let local = chained_local(&[("a", a.addr, &key_a), ("b", b.addr, &key_b)], "[a, b]", "").await;
    let closed_port = closed_port(); // held closed (bound, never listening) for the whole test
    let closed = closed_port.addr;
    let (_s, reply) = within(20, "reply", socks5_connect(local.addr, &Address::Ip(closed), None))
        .await
        .unwrap();
    assert_eq!(reply.code, ReplyCode::ConnectionRefused);
}

/// The datagrams leave from the last hop: the first hop's ACL denies the echo server's address
/// (127.0.0.5), so an echo can only come back if hop b sent the datagram (a UDP packet to hop
/// a, or a relay on it, is dropped there).
#[tokio::test]
async fn udp_through_a_chain_rides_inside_it() {
    let (key_a, key_b) = (new_key(), new_key());
    let a = start_remote(
        &key_a,
        "acl:\n  - deny: \"127.0.0.5\"\n  - allow: \"127.0.0.0/8\"\noutbound_source: \"127.0.0.3\"",
    )
    .await;
    let b = hop(&key_b, "127.0.0.2").await;
    // udp_transport is left at `udp`: a chain carries datagrams inside its stream anyway.
    let local = chained_local(&[("a", a.addr, &key_a), ("b", b.addr, &key_b)], "[a, b]", "").await;
    let echo = udp_echo_server("127.0.0.5:0").await;
    let (_control, reply, _) = within(
        20,
        "UDP ASSOCIATE reply",
        socks5_request(local.addr, Command::UdpAssociate, &Address::UNSPECIFIED),
    )
    .await
    .unwrap();
    assert_eq!(reply.code, ReplyCode::Succeeded);
    let Address::Ip(relay) = reply.bound else {
        panic!("relay is an IP: {:?}", reply.bound)
    };
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut out = Vec::new();
    Socks5Datagram {
        frag: 0,
        address: Address::Ip(echo),
        data: b"through two hops".to_vec(),
    }
    .encode(&mut out);
    client.send_to(&out, relay).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = within(20, "the echo", client.recv(&mut buf)).await.unwrap();
    let back: Socks5Datagram = decode_exact(&buf[..n]).unwrap();
    assert_eq!(back.data, b"through two hops");
    assert_eq!(back.address, Address::Ip(echo));
}

/// Hop b listens on 127.0.0.2 (hop a on 127.0.0.1), and a remote opens BIND listeners on its
/// listen IP: the announced address proves which hop listens.
#[tokio::test]
async fn bind_through_a_chain_listens_on_the_last_hop() {
    let (key_a, key_b) = (new_key(), new_key());
    let a = hop(&key_a, "127.0.0.3").await;
    let b = start_remote_on(
        "127.0.0.2",
        &key_b,
        "acl:\n  - allow: \"127.0.0.0/8\"",
        warren_common::time::unix_now(),
    )
    .await;
    let local = chained_local(&[("a", a.addr, &key_a), ("b", b.addr, &key_b)], "[a, b]", "").await;
    let any = Address::Ip(SocketAddr::from(([127, 0, 0, 1], 0)));
    let (mut control, first, mut buf) = within(20, "first BIND reply", socks5_request(local.addr, Command::Bind, &any))
        .await
        .unwrap();
    assert_eq!(first.code, ReplyCode::Succeeded);
    let Address::Ip(listening) = first.bound else {
        panic!("an IP: {:?}", first.bound)
    };
    assert_eq!(listening.ip().to_string(), "127.0.0.2", "the last hop listens");
    assert_ne!(listening.port(), 0);
    let mut peer = TcpStream::connect(listening).await.unwrap();
    let second: Reply = within(20, "second BIND reply", read_message(&mut control, &mut buf))
        .await
        .unwrap();
    assert_eq!(second.code, ReplyCode::Succeeded);
    peer.write_all(b"hello from the peer").await.unwrap();
    let mut got = [0u8; 19];
    within(20, "peer's bytes", control.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"hello from the peer");
}

/// A microsocks server on a free 127.0.0.1 port, killed when dropped.
struct Microsocks {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Microsocks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts microsocks with `args`, connecting out from 127.0.0.4. microsocks has no "port 0":
/// a free port is found by binding one and letting it go, and another is tried if the start
/// fails (bounded).
async fn microsocks(args: &[&str]) -> Microsocks {
    for _ in 0..20 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = match Process::new("microsocks")
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-b", "127.0.0.4"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!("microsocks must be installed (apt-get install -y microsocks; .ci/run does): {e}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..250 {
            if let Ok(Some(_)) = child.try_wait() {
                break; // exited: the port was taken meanwhile
            }
            if TcpStream::connect(addr).await.is_ok() {
                return Microsocks { child, addr };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("microsocks did not start on any of 20 free ports");
}

fn socks5_hop(upstream: SocketAddr, login: Option<(&str, &str)>) -> String {
    match login {
        Some((u, p)) => format!("[a, {{ socks5: \"{upstream}\", username: \"{u}\", password: \"{p}\" }}]"),
        None => format!("[a, {{ socks5: \"{upstream}\" }}]"),
    }
}

#[tokio::test]
async fn chain_ending_in_an_upstream_socks5_server() {
    let key_a = new_key();
    let a = hop(&key_a, "127.0.0.3").await;
    let upstream = microsocks(&[]).await;
    let local = chained_local(&[("a", a.addr, &key_a)], &socks5_hop(upstream.addr, None), "").await;
    let target = target("127.0.0.1:0").await;
    echo_through(local.addr, target.addr).await;
    // microsocks made the connection (from its -b address).
    assert_eq!(ips(&target.peers().await), ["127.0.0.4"]);

    let body = pattern(200_000);
    let site = http_server("127.0.0.1:0", body.clone()).await;
    let got = curl_fetch(&[
        "--socks5-hostname",
        &local.addr.to_string(),
        &format!("http://localhost:{}/", site.port()),
    ])
    .await;
    assert!(got == body);

    // Its refusal reaches the client unchanged.
    let closed_port = closed_port(); // held closed (bound, never listening) for the whole test
    let closed = closed_port.addr;
    let (_s, reply) = within(20, "reply", socks5_connect(local.addr, &Address::Ip(closed), None))
        .await
        .unwrap();
    assert_eq!(
        reply.code,
        ReplyCode::ConnectionRefused,
        "microsocks maps ECONNREFUSED to 0x05"
    );

    // BIND and UDP are not asked of an upstream SOCKS5 server: 0x07 from the local.
    let any = Address::Ip(SocketAddr::from(([127, 0, 0, 1], 0)));
    for command in [Command::Bind, Command::UdpAssociate] {
        let (_s, reply, _) = within(20, "reply", socks5_request(local.addr, command, &any))
            .await
            .unwrap();
        assert_eq!(reply.code, ReplyCode::CommandNotSupported, "{command:?}");
    }
}

#[tokio::test]
async fn upstream_socks5_server_with_a_login() {
    let key_a = new_key();
    let a = hop(&key_a, "127.0.0.3").await;
    let upstream = microsocks(&["-u", "campus", "-P", "s3cret"]).await;
    let target = target("127.0.0.1:0").await;

    let local = chained_local(
        &[("a", a.addr, &key_a)],
        &socks5_hop(upstream.addr, Some(("campus", "s3cret"))),
        "",
    )
    .await;
    echo_through(local.addr, target.addr).await;
    assert_eq!(ips(&target.peers().await), ["127.0.0.4"]);

    for login in [Some(("campus", "wrong")), None] {
        let local = chained_local(&[("a", a.addr, &key_a)], &socks5_hop(upstream.addr, login), "").await;
        let (_s, reply) = within(20, "reply", socks5_connect(local.addr, &Address::Ip(target.addr), None))
            .await
            .unwrap();
        assert_eq!(reply.code, ReplyCode::GeneralFailure, "{login:?}");
    }
    assert_eq!(target.peers().await.len(), 1, "refused logins reach nothing");
}
