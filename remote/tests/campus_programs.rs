//! Issue 14 through unmodified programs, in the namespace lab of tests/campus.rs (`home` runs
//! warren-local, `vps` warren-remote, `campus` the agent and the intranet host 10.77.3.1, whose
//! name `intranet.campus.test` only `campus` resolves). warren-local runs
//! docs/campus/laptop-programs.yaml and home loads docs/campus/redir.nft, so the documented
//! examples are what is tested:
//!
//! 1. `ssh -p 2222 root@127.0.0.1` in home reaches a real sshd in campus (TCP forward to
//!    intranet.campus.test:22) and carries 1 MiB byte-exact;
//! 2. 100 datagrams to 127.0.0.1:7007 (UDP forward) come back from the echo server in campus;
//! 3. `dig @127.0.0.1` (UDP and TCP) answers intranet.campus.test with 10.77.3.1, AAAA with an
//!    empty NOERROR, and a capture on home's only link holds tunnel packets but no DNS packet
//!    and not the name;
//! 4. with `nameserver 127.0.0.1` and the nftables rules, plain `curl
//!    http://intranet.campus.test:8080/big` fetches the campus page (transparent proxy); without
//!    the rules home cannot reach 10.77.3.1.
//!
//! This file is the scenario and its checks; the steps (configs, intranet servers, sshd,
//! warren-local's readiness, ssh, dig, curl, the UDP counter, the tcpdump capture) are in
//! tests/campus/programs_steps.rs.
//!
//! Needs root (ip netns), sshd, ssh-keygen, dig, nft, tcpdump, curl and python3; without
//! namespaces the test says so and returns, unless WARREN_REQUIRE_NETNS is set.

#[allow(dead_code)] // this test uses part of the lab
#[path = "campus/lab.rs"]
mod lab;
#[path = "campus/programs_steps.rs"]
mod steps;

use std::path::PathBuf;
use std::time::Duration;

use lab::Lab;
use steps::text;

/// The UDP echo server (`echo HOST PORT`).
const SOCKS_PY: &str = include_str!("campus/socks.py");
/// The UDP forward's client (`udpcount HOST PORT N`).
const PROGRAMS_PY: &str = include_str!("campus/programs.py");
/// A name only the campus namespace resolves (its own /etc/hosts), to 10.77.3.1.
const INTRANET_NAME: &str = "intranet.campus.test";
/// The ports of laptop-programs.yaml (the test checks the file still says so).
const SSH_FORWARD: &str = "127.0.0.1:2222";
const UDP_FORWARD: &str = "127.0.0.1:7007";
const DNS_LISTEN: &str = "127.0.0.1:53";
const REDIR_LISTEN: &str = "127.0.0.1:12345";

#[test]
fn campus_programs_through_forwards_dns_and_redir_in_namespaces() {
    let Some(mut lab) = Lab::new() else {
        eprintln!("cannot create network namespaces here (needs root and iproute2): namespace test skipped");
        return;
    };
    let (dir, n) = (lab.dir.clone(), lab.n);
    // Only campus resolves the intranet name; home's resolver is warren-local's DNS forwarder,
    // and home has a default route (as a laptop has) through the VPS, which forwards nothing.
    lab.hosts("campus", &format!("127.0.0.1 localhost\n10.77.3.1 {INTRANET_NAME}\n"));
    lab.hosts("home", "127.0.0.1 localhost\n::1 localhost\n");
    lab.etc_file(
        "home",
        "resolv.conf",
        "nameserver 127.0.0.1\noptions attempts:1 timeout:10\n",
    );
    lab.etc_file(
        "home",
        "nsswitch.conf",
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
    );
    lab.ns_ip("home", "route add default via 10.77.1.2 dev vh");
    let write = |name: &str, content: &[u8]| steps::write_file(&dir, name, content);
    let socks_py = write("socks.py", SOCKS_PY.as_bytes());
    let programs_py = write("programs.py", PROGRAMS_PY.as_bytes());

    // The intranet: a web site with a 4 MiB file, a UDP echo server and sshd, all on 10.77.3.1.
    let url_ip = "http://10.77.3.1:8080/big";
    let body = steps::start_intranet(&mut lab, &socks_py, url_ip);
    let (udp_host, udp_port) = UDP_FORWARD.rsplit_once(':').unwrap();
    let client_key = steps::start_sshd(&mut lab);
    // sshd answers inside campus with the client key (no tunnel involved).
    let direct = steps::ssh_in_campus(&lab, &client_key);
    assert!(direct.status.success(), "ssh inside campus: {}", text(&direct.stderr));

    // Before warren-local: home neither resolves the name nor reaches the intranet.
    let home_hosts = lab.run("home", "cat", &["/etc/hosts"]);
    assert!(home_hosts.status.success());
    assert!(
        !text(&home_hosts.stdout).contains(INTRANET_NAME),
        "home's /etc/hosts names the intranet"
    );
    let resolved = lab.run("home", "getent", &["hosts", INTRANET_NAME]);
    assert!(!resolved.status.success(), "home resolved {INTRANET_NAME} by itself");
    let unreachable = steps::curl_home(&lab, url_ip, &dir.join("direct"), 3);
    assert!(!unreachable.status.success(), "home reached the intranet directly");

    // Configs: the documented ones, with keys and the VPS address filled in.
    let (key, agent_key) = (steps::make_key(n, 0), steps::make_key(n, 0x5a));
    let vps_text = steps::config("vps.yaml", &key, &agent_key);
    assert!(
        vps_text.ends_with("via: campus }\n"),
        "vps.yaml no longer ends with its routes"
    );
    let vps_cfg = write(
        "vps.yaml",
        (vps_text + "    - { domain: \"campus.test\", via: campus }\n").as_bytes(),
    );
    // 10.77.3.1 is an address of the agent's own namespace: allowed by IP (see tests/campus.rs).
    let campus_text = steps::edit(
        &steps::config("campus.yaml", &key, &agent_key),
        "vps.example.net",
        "10.77.2.2",
    ) + "  acl:\n    - allow: \"10.77.3.1/32\"\n";
    let campus_cfg = write("campus.yaml", campus_text.as_bytes());
    let laptop_text = steps::edit(
        &steps::config("laptop-programs.yaml", &key, &agent_key),
        "vps.example.net",
        "10.77.1.2",
    );
    for addr in [SSH_FORWARD, UDP_FORWARD, DNS_LISTEN, REDIR_LISTEN] {
        assert!(
            laptop_text.contains(&format!("listen: \"{addr}\"")),
            "laptop-programs.yaml no longer listens on {addr}"
        );
    }
    assert!(laptop_text.contains(&format!("to: \"{INTRANET_NAME}:22\"")));
    assert!(laptop_text.contains(&format!("to: \"10.77.3.1:{udp_port}\", udp: true")));
    let laptop_cfg = write("laptop-programs.yaml", laptop_text.as_bytes());
    let nft_file = steps::docs("redir.nft");
    let nft_text = std::fs::read_to_string(&nft_file).unwrap();
    let redir_port = REDIR_LISTEN.rsplit(':').next().unwrap();
    assert!(
        nft_text.contains(&format!(
            "ip daddr 10.77.3.0/24 meta l4proto tcp redirect to :{redir_port}"
        )),
        "redir.nft no longer redirects the campus range to the redir port"
    );

    let remote_bin = PathBuf::from(env!("CARGO_BIN_EXE_warren-remote"));
    let local_bin = steps::local_binary();
    lab.spawn("vps", &remote_bin, &["-c", &vps_cfg]);
    let agent = lab.spawn("campus", &remote_bin, &["-c", &campus_cfg]);
    let local = lab.spawn("home", &local_bin, &["-c", &laptop_cfg]);
    assert!(
        lab.wait_log(agent, "agent registered", Duration::from_secs(30)),
        "the agent did not register: {}",
        lab.log(agent)
    );
    // warren-local is up when all its ports listen (UDP and TCP for DNS).
    steps::wait_local_listening(&lab, local);

    // 1. ssh through the TCP forward runs in campus and carries 1 MiB byte-exact.
    let where_ran = steps::ssh_until_up(&lab, &client_key, "ip -o addr show lo")
        .expect("ssh through the forward on 127.0.0.1:2222");
    assert!(
        where_ran.contains("10.77.3.1"),
        "ssh did not run in campus: {where_ran}"
    );
    let data = steps::varied(1 << 20, 12_345);
    let input = dir.join("ssh-input");
    std::fs::write(&input, &data).unwrap();
    let out = steps::ssh(&lab, &client_key, Some(&input), "cat");
    assert!(out.status.success(), "ssh cat: {}", text(&out.stderr));
    assert!(
        out.stdout == data,
        "ssh cat returned {} bytes, not the 1 MiB sent",
        out.stdout.len()
    );
    println!("ssh through the forward: 1 MiB echoed by cat in campus");

    // 2. UDP forward: 100 datagrams to the echo server in campus.
    let out = steps::udpcount(&lab, &programs_py, udp_host, udp_port, &[]);
    let stdout = text(&out.stdout);
    let echoed = steps::echoed(&stdout);
    println!("UDP forward: {}", stdout.trim());
    assert!(
        echoed.is_some_and(|k| k >= 95),
        "UDP forward: {stdout} {}",
        text(&out.stderr)
    );

    // 3. DNS through the forwarder, watched on home's only link.
    let pcap = dir.join("home.pcap");
    let tcpdump = steps::start_capture(&mut lab, &pcap);
    for transport in ["+notcp", "+tcp"] {
        let out = steps::dig(&lab, &[transport, "+short", INTRANET_NAME]);
        let answer = text(&out.stdout);
        assert!(
            out.status.success() && answer.lines().collect::<Vec<_>>() == ["10.77.3.1"],
            "dig {transport} {INTRANET_NAME}: {answer} {}",
            text(&out.stderr)
        );
    }
    let out = steps::dig(&lab, &[INTRANET_NAME, "AAAA"]);
    let full = text(&out.stdout);
    assert!(
        out.status.success() && full.contains("status: NOERROR") && full.contains("ANSWER: 0,"),
        "dig AAAA {INTRANET_NAME}: {full}"
    );
    // The system resolver (resolv.conf: nameserver 127.0.0.1) finds it too.
    let out = lab.run("home", "getent", &["hosts", INTRANET_NAME]);
    assert!(
        text(&out.stdout).starts_with("10.77.3.1 "),
        "getent hosts {INTRANET_NAME} in home: {}",
        text(&out.stdout)
    );
    println!("DNS forwarder: {INTRANET_NAME} is 10.77.3.1 over UDP and TCP, AAAA empty");

    // The capture of the DNS checks: tunnel packets, none lost, no DNS packet, never the name.
    steps::end_capture(&mut lab, tcpdump, &pcap);
    assert!(
        lab.log(tcpdump)
            .lines()
            .any(|l| l.trim() == "0 packets dropped by kernel"),
        "the capture lost packets: {}",
        lab.log(tcpdump)
    );
    let tunnel = steps::count_captured(&lab, &pcap, "tcp and host 10.77.1.2 and port 8388");
    assert!(tunnel > 0, "the capture holds no tunnel packet");
    assert_eq!(
        steps::count_captured(&lab, &pcap, "port 53"),
        0,
        "DNS packets left home"
    );
    assert!(
        !steps::captured_bytes(&pcap, b"\x08intranet\x06campus\x04test"),
        "the query name left home in the clear"
    );
    assert!(
        !steps::captured_bytes(&pcap, b"intranet"),
        "the intranet name left home in the clear"
    );
    println!("capture on vh: {tunnel} tunnel packets, no DNS packet, no intranet name");

    // 4. Transparent proxy: plain curl by name once the documented rules are loaded.
    let nft_file = nft_file.to_str().unwrap();
    let check = lab.run("home", "nft", &["-c", "-f", nft_file]);
    assert!(check.status.success(), "nft -c -f redir.nft: {}", text(&check.stderr));
    let load = lab.run("home", "nft", &["-f", nft_file]);
    assert!(load.status.success(), "nft -f redir.nft: {}", text(&load.stderr));
    let fetched = dir.join("fetched");
    let url_name = format!("http://{INTRANET_NAME}:8080/big");
    let out = steps::curl_home(&lab, &url_name, &fetched, 30);
    assert!(out.status.success(), "curl {url_name} in home: {}", text(&out.stderr));
    assert!(
        std::fs::read(&fetched).unwrap() == body,
        "the page fetched by name differs"
    );
    std::fs::remove_file(&fetched).unwrap();
    let out = steps::curl_home(&lab, url_ip, &fetched, 30);
    assert!(out.status.success(), "curl {url_ip} in home: {}", text(&out.stderr));
    assert!(
        std::fs::read(&fetched).unwrap() == body,
        "the page fetched by address differs"
    );
    // The connection by name went by name: the DNS forwarder's answer mapped the address back.
    let by_name = format!("target={INTRANET_NAME}:8080 protocol=\"redir\"");
    assert!(
        lab.log(local).contains(&by_name),
        "no redirected connection to {INTRANET_NAME} by name in warren-local's log:\n{}",
        lab.log(local)
    );
    println!("transparent proxy: plain curl fetched the 4 MiB page by name and by address");

    // 5. UDP by TPROXY: the documented policy route, then 100 datagrams sent straight to the
    // campus echo server's address, by a program with no idea of any proxy.
    lab.ns_ip("home", "rule add fwmark 0x77 lookup 177");
    lab.ns_ip("home", "route add local 0.0.0.0/0 dev lo table 177");
    let out = steps::udpcount(&lab, &programs_py, "10.77.3.1", udp_port, &["0.0.0.0"]);
    let stdout = text(&out.stdout);
    let echoed = steps::echoed(&stdout);
    println!("UDP by TPROXY: {}", stdout.trim());
    assert!(
        echoed.is_some_and(|k| k >= 95),
        "UDP by TPROXY to 10.77.3.1:{udp_port}: {stdout} {}\nwarren-local:\n{}",
        text(&out.stderr),
        lab.log(local)
    );
    assert!(
        lab.log(local).contains("protocol=\"redir-udp\""),
        "the datagrams did not go through warren-local's TPROXY socket"
    );
}
