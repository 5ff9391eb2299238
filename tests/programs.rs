//! Programs that do not speak SOCKS, on loopback: `local.forwards` (TCP and UDP), the DNS
//! forwarder (`local.dns`, queried with the real `dig`) and the transparent proxy's refusal of
//! connections that were not redirected. The namespace version with ssh, nftables and a
//! packet capture is remote/tests/campus_programs.rs.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use warren_common::config::LocalConfig;
use warren_tests::*;

/// warren-local from `yaml` with its forwards, DNS forwarder and redir bound as the binary binds
/// them (port 0 allowed); returns the server and each extra socket's address, in config order.
async fn start_local_programs(yaml: &str) -> (Server, Vec<SocketAddr>) {
    let config = LocalConfig::try_from(&parse(yaml)).expect("valid local config");
    let wanted = warren_common::cli::ServerConfig::extra_listeners(&config);
    let extra = warren_common::net::bind_extra(&wanted).expect("bind the extra sockets");
    let addrs = extra.iter().map(|b| b.local_addr().expect("bound")).collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind local");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    watch_panics();
    let configs = warren_common::server::fixed(config);
    let task = tokio::spawn(warren_local::run_all(listener, extra, configs, shutdown.clone()));
    (Server { addr, shutdown, task }, addrs)
}

fn local_yaml(key: &str, remote: SocketAddr, extra: &str) -> String {
    format!("key: \"{key}\"\nlocal:\n  listen: \"127.0.0.1:0\"\n  remote: \"{remote}\"\n{extra}")
}

#[tokio::test]
async fn a_tcp_forward_carries_a_connection_through_the_tunnel_byte_exact() {
    let key = new_key();
    // The remote may reach 127.0.0.1 only: the forward to 127.0.0.2 is refused there, which
    // shows both forwards go through the remote, not around it.
    let remote = start_remote(&key, "acl:\n  - allow: \"127.0.0.1/32\"\n  - deny: \"0.0.0.0/0\"").await;
    let echo = echo_server("127.0.0.1:0").await;
    let other = TcpListener::bind("127.0.0.2:0").await.expect("bind 127.0.0.2");
    let yaml = local_yaml(
        &key,
        remote.addr,
        &format!(
            "  forwards:\n    - {{ listen: \"127.0.0.1:0\", to: \"{echo}\" }}\n    - {{ listen: \"127.0.0.1:0\", to: \"{}\" }}\n",
            other.local_addr().expect("addr")
        ),
    );
    let (local, addrs) = start_local_programs(&yaml).await;
    let data = pattern(1 << 20);
    let mut stream = TcpStream::connect(addrs[0]).await.expect("connect to the forward");
    let (mut read, mut write) = stream.split();
    let sending = async {
        write.write_all(&data).await.expect("send");
        write.shutdown().await.expect("half-close");
    };
    let mut got = Vec::new();
    let receiving = read.read_to_end(&mut got);
    let ((), read) = within(30, "1 MiB echoed through the forward", async {
        tokio::join!(sending, receiving)
    })
    .await;
    read.expect("read the echo");
    assert!(
        got == data,
        "echoed {} bytes, differing from the {} sent",
        got.len(),
        data.len()
    );

    // Refused by the remote's ACL: the program's connection is closed with nothing, and the
    // target never sees a connection.
    let mut refused = TcpStream::connect(addrs[1])
        .await
        .expect("connect to the second forward");
    assert!(read_until_closed(&mut refused).await.is_empty());
    let reached = tokio::time::timeout(std::time::Duration::from_millis(200), other.accept()).await;
    assert!(reached.is_err(), "the remote's ACL let the forward through");
    let metrics = warren_common::metrics::get().encode();
    assert!(
        metrics.contains(r#"front="forward",command="connect",result="succeeded""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"front="forward",command="connect",result="not_allowed""#),
        "{metrics}"
    );
    local.stop().await;
    remote.stop().await;
}

#[tokio::test]
async fn forwards_follow_local_routes_direct_and_block() {
    // No remote at all: a `direct` route needs none, a `block` one refuses.
    let echo = echo_server("127.0.0.1:0").await;
    let yaml = format!(
        "key: \"{}\"\nlocal:\n  listen: \"127.0.0.1:0\"\n  routes:\n    - {{ cidr: \"127.0.0.1/32\", direct: true }}\n  \
         default: block\n  forwards:\n    - {{ listen: \"127.0.0.1:0\", to: \"{echo}\" }}\n    - {{ listen: \"127.0.0.1:0\", to: \"127.0.0.3:9\" }}\n",
        new_key()
    );
    let (local, addrs) = start_local_programs(&yaml).await;
    let mut direct = TcpStream::connect(addrs[0]).await.expect("connect");
    direct.write_all(b"hello").await.expect("send");
    let mut got = [0u8; 5];
    within(20, "echo via the direct route", direct.read_exact(&mut got))
        .await
        .expect("echo");
    assert_eq!(&got, b"hello");
    let mut blocked = TcpStream::connect(addrs[1]).await.expect("connect");
    assert!(read_until_closed(&mut blocked).await.is_empty());
    local.stop().await;
}

/// 100 numbered datagrams, each waited for, through a UDP forward: all echoed byte-exact, and
/// a second client gets its own echoes (a flow per client address).
async fn udp_forward_echoes(transport: &str) {
    let key = new_key();
    let remote = start_remote(&key, "acl:\n  - allow: \"127.0.0.0/8\"").await;
    let echo = udp_echo_server("127.0.0.1:0").await;
    let yaml = local_yaml(
        &key,
        remote.addr,
        &format!("  udp_transport: {transport}\n  forwards:\n    - {{ listen: \"127.0.0.1:0\", to: \"{echo}\", udp: true }}\n"),
    );
    let (local, addrs) = start_local_programs(&yaml).await;
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
        UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
    );
    let mut buf = vec![0u8; 2048];
    for i in 0..100u32 {
        let client = if i % 2 == 0 { &a } else { &b };
        let datagram = format!("datagram {i} {}", "x".repeat(i as usize * 7));
        // UDP may drop a datagram: resend (at most 5 times) until this one's echo arrives.
        let mut echoed = false;
        for _ in 0..5 {
            client.send_to(datagram.as_bytes(), addrs[0]).await.expect("send");
            // A late echo of an earlier resend may come first: read past it (at most 10).
            for _ in 0..10 {
                match tokio::time::timeout(std::time::Duration::from_secs(5), client.recv(&mut buf)).await {
                    Ok(Ok(n)) if &buf[..n] == datagram.as_bytes() => {
                        echoed = true;
                        break;
                    }
                    Ok(Ok(n)) => assert!(buf[..n].starts_with(b"datagram "), "not an echo: {:?}", &buf[..n]),
                    _ => break,
                }
            }
            if echoed {
                break;
            }
        }
        assert!(echoed, "datagram {i} was never echoed through the {transport} forward");
    }
    local.stop().await;
    remote.stop().await;
}

#[tokio::test]
async fn a_udp_forward_carries_datagrams_in_sealed_packets() {
    udp_forward_echoes("udp").await;
}

#[tokio::test]
async fn a_udp_forward_carries_datagrams_over_tcp() {
    udp_forward_echoes("tcp").await;
}

/// A DNS server on loopback standing in for the laptop's own resolver: answers every A query
/// with 192.0.2.7 (TTL 300) and counts what it was asked.
async fn fake_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = socket.local_addr().expect("addr");
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut response = buf[..n].to_vec();
            // Only the question is kept (dig adds an EDNS record: ARCOUNT 1).
            let question_end = 12 + response[12..].iter().position(|&b| b == 0).expect("qname end") + 1 + 4;
            response.truncate(question_end);
            response[2] = 0x81; // QR, RD
            response[3] = 0x80; // RA, NOERROR
            response[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]); // ANCOUNT 1
            response.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 192, 0, 2, 7]);
            let _ = socket.send_to(&response, from).await;
        }
    });
    (addr, asked)
}

/// `dig` against the forwarder: the `+short` answer lines, or the status word with `status`.
fn dig(server: SocketAddr, args: &[&str]) -> String {
    let output = Command::new("dig")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            "+tries=1",
            "+time=10",
        ])
        .args(args)
        .output()
        .expect("dig runs (Debian: bind9-dnsutils; .ci/run installs it)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_dns_forwarder_resolves_tunnelled_names_on_the_far_side_and_others_upstream() {
    let key = new_key();
    // The remote may reach (so may tell) 127.0.0.0/8 only.
    let remote = start_remote(&key, "acl:\n  - allow: \"127.0.0.0/8\"\n  - deny: \"::/0\"").await;
    let (upstream, asked) = fake_upstream().await;
    let yaml = local_yaml(
        &key,
        remote.addr,
        &format!(
            "  routes:\n    - {{ domain: \"direct.test\", direct: true }}\n    - {{ domain: \"blocked.test\", block: true }}\n  \
             dns:\n    listen: \"127.0.0.1:0\"\n    upstreams: [\"{upstream}\"]\n    ttl: 42\n"
        ),
    );
    let (local, addrs) = start_local_programs(&yaml).await;
    let dns = addrs[0];
    let run = |args: &'static [&'static str]| tokio::task::spawn_blocking(move || dig(dns, args));

    // `localhost` takes the default route (the tunnel): the remote's resolver answers, with
    // the configured TTL, over UDP and TCP, and the upstream is never asked.
    let answer = run(&["localhost", "A", "+noall", "+answer"]).await.expect("dig");
    assert!(answer.contains("42\tIN\tA\t127.0.0.1"), "{answer}");
    assert_eq!(
        run(&["+tcp", "localhost", "+short"]).await.expect("dig").trim(),
        "127.0.0.1"
    );
    // The remote's ACL denies every IPv6 address: no AAAA told (NOERROR, no answer).
    let aaaa = run(&["localhost", "AAAA"]).await.expect("dig");
    assert!(aaaa.contains("status: NOERROR") && aaaa.contains("ANSWER: 0"), "{aaaa}");
    // Other types of a tunnelled name are not asked in the clear either: an empty NOERROR
    // (NODATA), so that a stub resolver does not go on to its next nameserver.
    let mx = run(&["localhost", "MX"]).await.expect("dig");
    assert!(mx.contains("status: NOERROR") && mx.contains("ANSWER: 0"), "{mx}");
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "a tunnelled name was asked of the upstream"
    );

    // A `direct` name goes to the upstream once; the repeat comes from the cache.
    assert_eq!(
        run(&["www.direct.test", "+short"]).await.expect("dig").trim(),
        "192.0.2.7"
    );
    let again = run(&["www.direct.test", "+noall", "+answer"]).await.expect("dig");
    assert!(again.contains("192.0.2.7"), "{again}");
    assert_eq!(asked.load(Ordering::SeqCst), 1, "the cached answer was asked again");
    // A blocked name is refused, asked of nobody.
    assert!(run(&["x.blocked.test"]).await.expect("dig").contains("status: REFUSED"));
    assert_eq!(asked.load(Ordering::SeqCst), 1);

    // Garbage: a header-sized message that does not decode gets FORMERR with its ID; a short
    // one gets nothing; the forwarder answers the next query.
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    client
        .send_to(&[0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff], dns)
        .await
        .expect("send");
    let mut buf = [0u8; 512];
    let n = within(10, "FORMERR", client.recv(&mut buf)).await.expect("recv");
    assert!(
        n >= 12 && buf[..2] == [0xab, 0xcd] && buf[2] & 0x80 != 0 && buf[3] & 0x0f == 1,
        "{:?}",
        &buf[..n]
    );
    client.send_to(b"hi", dns).await.expect("send");
    assert_eq!(run(&["localhost", "+short"]).await.expect("dig").trim(), "127.0.0.1");

    // Counted as they were answered (this test binary's process-wide registry).
    let metrics = warren_common::metrics::get().encode();
    for series in [
        r#"front="dns",command="tunnel",result="noerror""#,
        r#"front="dns",command="upstream",result="noerror""#,
        r#"front="dns",command="cache",result="noerror""#,
        r#"front="dns",command="blocked",result="refused""#,
        r#"front="dns",command="malformed",result="formerr""#,
        r#"front="dns",command="malformed",result="dropped""#,
    ] {
        assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    }
    local.stop().await;
    remote.stop().await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_redir_port_closes_connections_that_were_not_redirected() {
    // Connected to directly, the port would be its own original destination: a loop.
    let yaml = format!(
        "key: \"{}\"\nlocal:\n  listen: \"127.0.0.1:0\"\n  default: direct\n  redir: {{ listen: \"127.0.0.1:0\" }}\n",
        new_key()
    );
    let (local, addrs) = start_local_programs(&yaml).await;
    let mut stream = TcpStream::connect(addrs[0]).await.expect("connect");
    let _ = stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(read_until_closed(&mut stream).await.is_empty());
    local.stop().await;
}

/// With split routes (only the campus name through the tunnel, and only on some ports; the rest
/// direct), a tunnelled name is never asked of the upstream: not on the port-conditioned
/// rule, not as a name no address type can carry, not for another record type.
#[tokio::test]
async fn with_split_routes_no_tunnelled_name_reaches_the_upstream() {
    let key = new_key();
    let remote = start_remote(&key, "acl:\n  - allow: \"127.0.0.0/8\"\n  - deny: \"::/0\"").await;
    let (upstream, asked) = fake_upstream().await;
    let yaml = local_yaml(
        &key,
        remote.addr,
        &format!(
            "  routes:\n    - {{ domain: \"localhost\", port: \"80-443\", proxy: remote }}\n  default: direct\n  \
             dns:\n    listen: \"127.0.0.1:0\"\n    upstreams: [\"{upstream}\"]\n    ttl: 42\n"
        ),
    );
    let (local, addrs) = start_local_programs(&yaml).await;
    let dns = addrs[0];
    let run = |args: &'static [&'static str]| tokio::task::spawn_blocking(move || dig(dns, args));
    // Some connection to localhost (ports 80-443) goes through the tunnel: so does its lookup.
    let answer = run(&["localhost", "A", "+noall", "+answer"]).await.expect("dig");
    assert!(answer.contains("42\tIN\tA\t127.0.0.1"), "{answer}");
    let mx = run(&["localhost", "MX"]).await.expect("dig");
    assert!(mx.contains("status: NOERROR") && mx.contains("ANSWER: 0"), "{mx}");
    // A name under it that cannot travel (a space in a label): refused, asked of nobody.
    let odd = run(&["Room\\032101.localhost"]).await.expect("dig");
    assert!(odd.contains("status: REFUSED"), "{odd}");
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "a tunnelled name was asked of the upstream"
    );
    // Everything else is the upstream's.
    assert_eq!(run(&["example.test", "+short"]).await.expect("dig").trim(), "192.0.2.7");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    local.stop().await;
    remote.stop().await;
}

/// RESOLVE (PROTOCOL.md §20) at the remote, request by request: a name its ACL allows gets
/// the allowed addresses; a name its ACL denies 0x02; an IP target 0x08.
#[tokio::test]
async fn the_remote_answers_resolve_under_its_acl() {
    use warren_common::crypto::Key;
    use warren_common::proto::address::Address;
    use warren_common::proto::header::{Command, RequestHeader};
    use warren_common::proto::resolve::ResolveAnswer;
    use warren_common::proto::status::Status;
    use warren_common::tunnel::PendingTunnel;

    let key_text = new_key();
    let key = Key::from_base64(&key_text).expect("key");
    let remote = start_remote(
        &key_text,
        "acl:\n  - deny: \"denied.localhost\"\n  - allow: \"127.0.0.0/8\"\n  - deny: \"::/0\"",
    )
    .await;
    let resolve = |target: Address| {
        let key = key.clone();
        async move {
            let stream = TcpStream::connect(remote.addr).await.expect("connect");
            let header = RequestHeader::new(Command::Resolve, target, warren_common::time::unix_now());
            let pending = PendingTunnel::send_request(stream, &key, &header, b"")
                .await
                .expect("send");
            let (response, mut tunnel) = within(20, "RESOLVE's response", pending.read_response())
                .await
                .expect("a response");
            let mut rest = Vec::new();
            within(20, "the end of the stream", tunnel.read_to_end(&mut rest))
                .await
                .expect("read");
            (response.status, rest)
        }
    };
    let (status, rest) = resolve(Address::domain("localhost", 0).expect("name")).await;
    assert_eq!(status, Status::Succeeded);
    let answer: ResolveAnswer = warren_common::proto::decode_exact(&rest).expect("one answer, then the end");
    assert_eq!(
        answer.addresses(),
        ["127.0.0.1".parse::<std::net::IpAddr>().expect("ip")]
    );
    let (status, rest) = resolve(Address::domain("denied.localhost", 0).expect("name")).await;
    assert_eq!((status, rest.len()), (Status::NotAllowed, 0));
    let (status, _) = resolve(Address::Ip("127.0.0.1:0".parse().expect("addr"))).await;
    assert_eq!(status, Status::AddressTypeNotSupported);
    remote.stop().await;
}

/// A UDP flow ends after `idle_timeout` without a datagram either way, and says so.
#[tokio::test]
async fn an_idle_udp_flow_ends_and_is_logged() {
    capture_logs();
    let echo = udp_echo_server("127.0.0.1:0").await;
    let yaml = format!(
        "key: \"{}\"\nlocal:\n  listen: \"127.0.0.1:0\"\n  default: direct\n  idle_timeout: 1\n  \
         forwards:\n    - {{ listen: \"127.0.0.1:0\", to: \"{echo}\", udp: true }}\n",
        new_key()
    );
    let (local, addrs) = start_local_programs(&yaml).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    client.send_to(b"once", addrs[0]).await.expect("send");
    let mut buf = [0u8; 16];
    let n = within(20, "the echo", client.recv(&mut buf)).await.expect("recv");
    assert_eq!(&buf[..n], b"once");
    let port = client.local_addr().expect("addr").port().to_string();
    let line = log_line(&["UDP flow finished", &port, "end=\"idle\""]).await;
    assert!(
        line.contains("datagrams_sent=1") && line.contains("datagrams_received=1"),
        "{line}"
    );
    local.stop().await;
}

/// A reload empties the DNS cache (a name may now route elsewhere), and a tunnelled lookup
/// whose remote never answers gets SERVFAIL at the deadline, not silence.
#[tokio::test]
async fn a_reload_empties_the_dns_cache_and_a_dead_tunnel_gets_servfail() {
    let (upstream, asked) = fake_upstream().await;
    let dead = unanswered_port();
    let yaml = |route: &str| {
        format!(
            "key: \"{}\"\nlocal:\n  listen: \"127.0.0.1:0\"\n  remote: \"{}\"\n  connect_timeout: 1\n  routes:\n    - {route}\n  \
             default: direct\n  dns:\n    listen: \"127.0.0.1:0\"\n    upstreams: [\"{upstream}\"]\n",
            new_key(),
            dead.addr
        )
    };
    let first = LocalConfig::try_from(&parse(&yaml("{ domain: \"moved.test\", direct: true }"))).expect("config");
    let wanted = warren_common::cli::ServerConfig::extra_listeners(&first);
    let extra = warren_common::net::bind_extra(&wanted).expect("bind");
    let dns = extra[0].local_addr().expect("bound");
    let (reload, configs) = tokio::sync::watch::channel(Arc::new(first));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind local");
    let shutdown = CancellationToken::new();
    watch_panics();
    let task = tokio::spawn(warren_local::run_all(listener, extra, configs, shutdown.clone()));
    let run = |args: &'static [&'static str]| tokio::task::spawn_blocking(move || dig(dns, args));

    assert_eq!(
        run(&["www.moved.test", "+short"]).await.expect("dig").trim(),
        "192.0.2.7"
    );
    assert_eq!(
        run(&["www.moved.test", "+short"]).await.expect("dig").trim(),
        "192.0.2.7"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1, "the repeat came from the cache");
    // The name now routes through the (dead) remote: not the cached upstream answer, and not
    // asked of the upstream either.
    let second = LocalConfig::try_from(&parse(&yaml("{ domain: \"moved.test\", proxy: remote }"))).expect("config");
    reload.send(Arc::new(second)).expect("reload");
    let mut after = String::new();
    for _ in 0..20 {
        after = run(&["www.moved.test"]).await.expect("dig");
        if !after.contains("192.0.2.7") {
            break;
        }
        // The reload is applied by a task of its own: ask again (bounded).
        tokio::task::yield_now().await;
    }
    assert!(after.contains("status: SERVFAIL"), "{after}");
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "a tunnelled name was asked of the upstream"
    );
    shutdown.cancel();
    let _ = task.await;
    assert_no_warren_panics();
}
