//! SOCKS5 UDP ASSOCIATE through the tunnel with a raw client: IPv4, IPv6 and domain targets,
//! 1000 datagrams of up to 1400 bytes echoed with a correct header, fragments, foreign senders
//! and malformed headers dropped, the relay closed with its control connection, and every
//! datagram routed by the local's and the remote's routes. Each test runs over every UDP
//! transport. Overload: udp_overload.rs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use warren_common::proto::Encode;

use tokio::net::{TcpStream, UdpSocket};
use warren_common::proto::address::{Address, DomainName};
use warren_common::proto::decode_exact;
use warren_common::proto::socks5::{Command, ReplyCode};
use warren_common::proto::udp::Socks5Datagram;
use warren_tests::*;

const TRANSPORTS: &[&str] = &["udp", "tcp"];

struct Association {
    _pair: Pair,
    control: TcpStream,
    relay: SocketAddr,
    client: UdpSocket,
}

/// Starts a pair using `transport`, opens an association announcing DST 0.0.0.0:0 and a client
/// UDP socket on 127.0.0.1.
async fn associate(transport: &str) -> Association {
    let pair = start_pair("", &format!("udp_transport: {transport}")).await;
    let (control, relay) = udp_associate(pair.socks()).await;
    assert_eq!(relay.ip().to_string(), "127.0.0.1", "bound on the TCP listener's IP");
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    Association {
        _pair: pair,
        control,
        relay,
        client,
    }
}

fn datagram(target: &Address, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Socks5Datagram {
        frag: 0,
        address: target.clone(),
        data: data.to_vec(),
    }
    .encode(&mut out);
    out
}

/// The next datagram the client receives, decoded.
async fn receive(client: &UdpSocket) -> Socks5Datagram {
    let mut buf = vec![0u8; 65536];
    let n = within(20, "a datagram back", client.recv(&mut buf)).await.unwrap();
    decode_exact(&buf[..n]).expect("reply carries a valid SOCKS5 UDP header")
}

/// A UDP echo server on both 127.0.0.1 and ::1 with the same port, so "localhost" reaches it
/// whichever address the remote picks.
async fn dual_stack_echo() -> u16 {
    for _ in 0..50 {
        let v4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = v4.local_addr().unwrap().port();
        if let Ok(v6) = UdpSocket::bind(("::1", port)).await {
            spawn_udp_echo(v4);
            spawn_udp_echo(v6);
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

/// Sends 1000 numbered datagrams of 1..=1400 bytes to `target` with at most 32 in flight, and
/// returns how many came back with the expected source and payload.
async fn echo_thousand(assoc: &Association, target: &Address, expected_sources: &[SocketAddr]) -> usize {
    const COUNT: u32 = 1000;
    const WINDOW: u32 = 32;
    let mut sent: HashMap<u32, Vec<u8>> = HashMap::new();
    let (mut next, mut good, mut in_flight) = (0u32, 0usize, 0u32);
    let mut buf = vec![0u8; 65536];
    while next < COUNT || in_flight > 0 {
        while next < COUNT && in_flight < WINDOW {
            let len = 4 + (next as usize * 7919) % 1397;
            let mut payload = next.to_be_bytes().to_vec();
            payload.extend(pattern(len - 4).iter().map(|b| b ^ next as u8));
            assoc
                .client
                .send_to(&datagram(target, &payload), assoc.relay)
                .await
                .unwrap();
            sent.insert(next, payload);
            next += 1;
            in_flight += 1;
        }
        // A lost datagram never comes back: after a generous wait, count the window as lost.
        match tokio::time::timeout(Duration::from_secs(10), assoc.client.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                in_flight = in_flight.saturating_sub(1);
                let Ok(d) = decode_exact::<Socks5Datagram>(&buf[..n]) else {
                    continue;
                };
                let Address::Ip(source) = d.address else { continue };
                if d.frag != 0 || !expected_sources.contains(&source) || d.data.len() < 4 {
                    continue;
                }
                let seq = u32::from_be_bytes(d.data[..4].try_into().unwrap());
                if sent.remove(&seq).as_deref() == Some(&d.data[..]) {
                    good += 1;
                }
            }
            _ => in_flight = 0,
        }
    }
    good
}

#[tokio::test]
async fn thousand_datagrams_echo_for_ipv4_ipv6_and_domain_targets() {
    let v4 = udp_echo_server("127.0.0.1:0").await;
    let v6 = udp_echo_server("[::1]:0").await;
    let port = dual_stack_echo().await;
    let both = [
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::new("::1".parse().unwrap(), port),
    ];
    for transport in TRANSPORTS {
        let assoc = associate(transport).await;
        let good = echo_thousand(&assoc, &Address::Ip(v4), &[v4]).await;
        assert!(good >= 990, "{transport} IPv4: {good}/1000");
        let good = echo_thousand(&assoc, &Address::Ip(v6), &[v6]).await;
        assert!(good >= 990, "{transport} IPv6: {good}/1000");
        let good = echo_thousand(&assoc, &Address::domain("localhost", port).unwrap(), &both).await;
        assert!(good >= 990, "{transport} domain: {good}/1000");
    }
}

#[tokio::test]
async fn fragments_foreign_senders_and_malformed_headers_are_dropped() {
    let echo = udp_echo_server("127.0.0.1:0").await;
    let target = Address::Ip(echo);
    for transport in TRANSPORTS {
        let assoc = associate(transport).await;
        // The first datagram fixes the client's port (the request named 0.0.0.0:0).
        assoc
            .client
            .send_to(&datagram(&target, b"first"), assoc.relay)
            .await
            .unwrap();
        assert_eq!(receive(&assoc.client).await.data, b"first");

        let mut fragment = datagram(&target, b"fragment");
        fragment[2] = 1;
        // Foreign senders (another port, another IP) send FOREIGN datagrams each.
        const FOREIGN: usize = 50;
        let foreign = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let wrong_ip = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        for _ in 0..FOREIGN {
            foreign
                .send_to(&datagram(&target, b"foreign"), assoc.relay)
                .await
                .unwrap();
            wrong_ip
                .send_to(&datagram(&target, b"wrong ip"), assoc.relay)
                .await
                .unwrap();
        }
        for bad in [
            fragment,
            vec![0, 1, 0, 1, 127, 0, 0, 1, 0, 7, b'x'], // RSV ≠ 0
            vec![0, 0, 0, 9, 127, 0, 0, 1, 0, 7, b'x'], // unknown ATYP
            vec![0, 0, 0, 1, 127, 0],                   // truncated address
            vec![0, 0, 0, 3, 0, 0, 7],                  // empty domain
            vec![0],
        ] {
            assoc.client.send_to(&bad, assoc.relay).await.unwrap();
        }
        assoc
            .client
            .send_to(&datagram(&target, b"last"), assoc.relay)
            .await
            .unwrap();
        // Count what arrives until the marker's echo, then whatever is already queued behind
        // it: none of it may be anything but the marker (the bound on the wait is the marker,
        // not a sleep; anything relayed before it travelled the same path first).
        let mut leaked = Vec::new();
        loop {
            let d = receive(&assoc.client).await;
            if d.data == b"last" {
                assert_eq!(d.address, target);
                assert_eq!(d.frag, 0);
                break;
            }
            leaked.push(d.data);
        }
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = assoc.client.try_recv(&mut buf) {
            leaked.push(buf[..n].to_vec());
        }
        let first = leaked.first().map(|d| String::from_utf8_lossy(d).into_owned());
        assert_eq!(leaked.len(), 0, "{transport}: relayed to the client, first {first:?}");
        // And the foreign senders are not answered either.
        assert!(
            foreign.try_recv(&mut buf).is_err(),
            "{transport}: answered a foreign sender"
        );
        assert!(
            wrong_ip.try_recv(&mut buf).is_err(),
            "{transport}: answered a foreign IP"
        );
    }
}

#[tokio::test]
async fn relay_stops_when_the_control_connection_closes() {
    let echo = udp_echo_server("127.0.0.1:0").await;
    let target = Address::Ip(echo);
    for transport in TRANSPORTS {
        let assoc = associate(transport).await;
        assoc.client.connect(assoc.relay).await.unwrap();
        assoc.client.send(&datagram(&target, b"alive")).await.unwrap();
        assert_eq!(receive(&assoc.client).await.data, b"alive");
        drop(assoc.control);
        // Once the relay socket is closed, the kernel answers our datagrams with ICMP port
        // unreachable, which a connected UDP socket reports as ConnectionRefused.
        let mut buf = [0u8; 2048];
        let mut closed = false;
        for _ in 0..600 {
            assoc.client.send(&datagram(&target, b"anyone?")).await.ok();
            match tokio::time::timeout(Duration::from_millis(100), assoc.client.recv(&mut buf)).await {
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
        assert!(closed, "{transport}: relay socket closed after the control connection");
    }
}

#[tokio::test]
async fn request_naming_the_client_port_only_accepts_that_port() {
    let echo = udp_echo_server("127.0.0.1:0").await;
    let target = Address::Ip(echo);
    for transport in TRANSPORTS {
        let pair = start_pair("", &format!("udp_transport: {transport}")).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (_control, reply, _) = socks5_request(
            pair.socks(),
            Command::UdpAssociate,
            &Address::Ip(client.local_addr().unwrap()),
        )
        .await
        .unwrap();
        let Address::Ip(relay) = reply.bound else { panic!() };
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        other.send_to(&datagram(&target, b"other"), relay).await.unwrap();
        client.send_to(&datagram(&target, b"mine"), relay).await.unwrap();
        assert_eq!(receive(&client).await.data, b"mine", "{transport}");
    }
}

#[tokio::test]
async fn denied_and_unresolvable_targets_are_dropped_and_the_association_keeps_working() {
    let echo = udp_echo_server("127.0.0.1:0").await;
    for transport in TRANSPORTS {
        let pair = start_pair(
            "acl:\n  - deny: blocked.test\n  - allow: \"127.0.0.0/8\"\n  - deny: \"10.0.0.0/8\"",
            &format!("udp_transport: {transport}"),
        )
        .await;
        let (_control, reply, _) = socks5_request(pair.socks(), Command::UdpAssociate, &Address::UNSPECIFIED)
            .await
            .unwrap();
        let Address::Ip(relay) = reply.bound else { panic!() };
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let unresolvable = format!("{}.test", "a".repeat(64));
        for target in [
            Address::Ip("10.0.0.1:7".parse().unwrap()),
            Address::domain("blocked.test", 7).unwrap(),
            Address::Domain(DomainName::new(&unresolvable).expect("a name"), 7),
        ] {
            client.send_to(&datagram(&target, b"no"), relay).await.unwrap();
        }
        client
            .send_to(&datagram(&Address::Ip(echo), b"yes"), relay)
            .await
            .unwrap();
        assert_eq!(receive(&client).await.data, b"yes", "{transport}");
    }
}

#[tokio::test]
async fn remote_drops_garbage_stale_and_replayed_packets_and_keeps_serving() {
    use warren_common::crypto::{Key, Purpose};
    use warren_common::proto::udp::PacketPlaintext;
    use warren_common::time::unix_now;
    use warren_common::udp_session::{open_packet, random_session_id, seal_packet};

    let echo = udp_echo_server("127.0.0.1:0").await;
    let key = new_key();
    let remote = start_remote(&key, "acl:\n  - allow: \"127.0.0.0/8\"").await;
    let key = Key::from_base64(&key).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(remote.addr).await.unwrap();
    // One packet session, as a local's association has: numbered packets.
    let session = random_session_id();
    let packet = |timestamp: u64, number: u64, data: &[u8]| {
        let mut plaintext = Vec::new();
        PacketPlaintext::encode_parts(timestamp, &Address::Ip(echo), data, &mut plaintext);
        seal_packet(&key, Purpose::UdpToRemote, &session, number, &plaintext).unwrap()
    };
    let first = packet(unix_now(), 1, b"first");
    socket.send(&[0u8; 100]).await.unwrap(); // garbage
    socket.send(&packet(unix_now() - 1000, 0, b"stale")).await.unwrap();
    socket.send(&first).await.unwrap();
    socket.send(&first).await.unwrap(); // replay
    socket.send(&packet(unix_now(), 1, b"same number")).await.unwrap(); // a packet number reused
    let mut sealed_other_key = packet(unix_now(), 3, b"other key");
    sealed_other_key[40] ^= 1;
    socket.send(&sealed_other_key).await.unwrap();
    // A packet from another session of the same key is as welcome.
    let mut plaintext = Vec::new();
    PacketPlaintext::encode_parts(unix_now(), &Address::Ip(echo), b"other session", &mut plaintext);
    let other = seal_packet(&key, Purpose::UdpToRemote, &random_session_id(), 1, &plaintext).unwrap();
    socket.send(&other).await.unwrap();
    socket.send(&packet(unix_now(), 2, b"second")).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let mut answers = Vec::new();
    for _ in 0..3 {
        let n = within(20, "an answer", socket.recv(&mut buf)).await.unwrap();
        let (_, _, plaintext) =
            open_packet(&key, Purpose::UdpToLocal, &buf[..n]).expect("answers are sealed with the key");
        let p: PacketPlaintext = decode_exact(&plaintext).unwrap();
        assert_eq!(p.address, Address::Ip(echo), "answer names its source");
        answers.push(p.data);
    }
    assert_eq!(
        answers,
        [b"first".to_vec(), b"other session".to_vec(), b"second".to_vec()],
        "only fresh, authentic packets relayed"
    );
    remote.stop().await;
}

#[tokio::test]
async fn only_addresses_the_client_sent_to_can_answer() {
    // A target that, before echoing, has a third party send a datagram to the remote's
    // outbound address for this association.
    let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    tokio::spawn(async move {
        let spoofer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = target.recv_from(&mut buf).await {
            let _ = spoofer.send_to(b"spoofed", from).await;
            let _ = target.send_to(&buf[..n], from).await;
        }
    });
    for transport in TRANSPORTS {
        let assoc = associate(transport).await;
        for word in [&b"one"[..], b"two"] {
            assoc
                .client
                .send_to(&datagram(&Address::Ip(target_addr), word), assoc.relay)
                .await
                .unwrap();
            let d = receive(&assoc.client).await;
            assert_eq!(
                (d.address, &d.data[..]),
                (Address::Ip(target_addr), word),
                "{transport}"
            );
        }
    }
}

#[tokio::test]
async fn each_datagram_is_routed_by_the_local_and_the_remote_routes() {
    // The local's routes drop a datagram whose destination they block (in any spelling); the
    // remote's routes keep one routed via an agent off this machine's NAT although its ACL
    // allows the address (the agent is not connected: dropped; reverse.rs
    // `udp_and_bind_reach_the_intranet_through_the_agent` has one that is). The association
    // keeps working.
    let blocked = udp_echo_server("127.0.0.5:0").await;
    let via_agent = udp_echo_server("127.0.0.6:0").await;
    let allowed = udp_echo_server("127.0.0.1:0").await;
    for transport in TRANSPORTS {
        let pair = start_pair(
            &format!(
                "agents: {{ campus: {{ key: \"{}\" }} }}\nroutes:\n  - {{ cidr: \"127.0.0.6/32\", via: campus }}",
                new_key()
            ),
            &format!("udp_transport: {transport}\nroutes:\n  - {{ cidr: \"127.0.0.5/32\", block: true }}"),
        )
        .await;
        let (_control, reply, _) = socks5_request(pair.socks(), Command::UdpAssociate, &Address::UNSPECIFIED)
            .await
            .unwrap();
        assert_eq!(reply.code, ReplyCode::Succeeded, "{transport}");
        let Address::Ip(relay) = reply.bound else { panic!() };
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for target in [
            Address::Ip(blocked),
            Address::Domain(DomainName::new("0x7f.0.0.5").expect("a name"), blocked.port()),
            Address::Ip(via_agent),
        ] {
            client.send_to(&datagram(&target, b"no"), relay).await.unwrap();
        }
        client
            .send_to(&datagram(&Address::Ip(allowed), b"yes"), relay)
            .await
            .unwrap();
        // Had a dropped one been relayed, its echo would arrive first (one path, in order).
        let d = receive(&client).await;
        assert_eq!(
            (d.address, &d.data[..]),
            (Address::Ip(allowed), &b"yes"[..]),
            "{transport}"
        );
    }
}

/// Run time (ns, from the scheduler) of this process's threads named `name`, by thread id.
#[cfg(target_os = "linux")]
fn thread_run_ns(name: &str) -> HashMap<String, u64> {
    let mut found = HashMap::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
            let ns = stat.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
            found.insert(task.file_name().to_string_lossy().into_owned(), ns);
        }
    }
    found
}

/// Both ends relay an association's datagrams on the process's one UDP thread
/// (`warren_common::udp_thread`): there is exactly one `warren-udp` thread, and it is the one
/// that runs while 1000 datagrams are echoed (over either transport).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn datagrams_are_relayed_on_the_one_udp_thread() {
    let echo = udp_echo_server("127.0.0.1:0").await;
    for transport in TRANSPORTS {
        let assoc = associate(transport).await;
        let before = thread_run_ns("warren-udp");
        assert_eq!(before.len(), 1, "one UDP thread per process: {before:?}");
        let good = echo_thousand(&assoc, &Address::Ip(echo), &[echo]).await;
        assert!(good >= 990, "{transport}: {good}/1000");
        let after = thread_run_ns("warren-udp");
        assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
        let (tid, ns) = after.iter().next().unwrap();
        assert!(*ns > before[tid], "{transport}: the UDP thread did not run ({ns} ns)");
    }
}

/// Bytes of burst datagram number `i`.
type SizeOf = fn(u32) -> usize;

fn same_size(_: u32) -> usize {
    1000
}

fn mixed_sizes(i: u32) -> usize {
    200 + (i as usize * 37) % 900
}

/// A burst of same-sized datagrams (what the packet hop batches into one GSO send and GRO
/// receive, both ways) comes back datagram for datagram: every echo is exactly one datagram that
/// was sent, none is cut or glued to another, and at most a few are lost. Then a burst of mixed
/// sizes, which splits batches at every size change.
#[tokio::test]
async fn bursts_of_datagrams_come_back_whole_and_one_by_one() {
    // One batch's worth (64): a burst larger than the sockets' default buffers would test loss.
    const BURST: u32 = 64;
    let echo = udp_echo_server("127.0.0.1:0").await;
    let target = Address::Ip(echo);
    for transport in TRANSPORTS {
        let assoc = associate(transport).await;
        let sizes = [("same size", same_size as SizeOf), ("mixed sizes", mixed_sizes)];
        for (name, size) in sizes {
            let mut sent = HashMap::new();
            for i in 0..BURST {
                let mut payload = i.to_be_bytes().to_vec();
                payload.extend(pattern(size(i) - 4).iter().map(|b| b ^ i as u8));
                assoc
                    .client
                    .send_to(&datagram(&target, &payload), assoc.relay)
                    .await
                    .unwrap();
                sent.insert(i, payload);
            }
            let mut buf = vec![0u8; 65536];
            let mut good = 0;
            while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), assoc.client.recv(&mut buf)).await {
                let d: Socks5Datagram = decode_exact(&buf[..n]).expect("a whole SOCKS5 datagram");
                let seq = u32::from_be_bytes(d.data[..4].try_into().unwrap());
                assert_eq!(
                    sent.remove(&seq).as_deref(),
                    Some(&d.data[..]),
                    "{transport} {name}: datagram {seq}"
                );
                good += 1;
                if good == BURST {
                    break;
                }
            }
            // Loopback under a test runner's load may drop a few; a cut or glued datagram fails above.
            assert!(good >= BURST * 9 / 10, "{transport} {name}: {good}/{BURST} came back");
        }
    }
}
