//! The checks remote/tests/campus.rs runs through the agent besides CONNECT: UDP ASSOCIATE and
//! BIND (driven by socks.py inside the namespaces), and agents that try to take the name.
//!
//! ```text
//! home: socks.py udp/bind ─SOCKS5─▶ warren-local ─▶ VPS ─routes: via campus─▶ agent ─▶ 10.77.3.1
//!                                                                    (campus: echo server, BIND peer)
//! ```

use std::path::Path;
use std::time::Duration;

use crate::lab::Lab;

/// The UDP echo server's port on 10.77.3.1 (campus).
pub const ECHO_PORT: &str = "9999";
/// A name only the campus namespace resolves (its own /etc/hosts), to 10.77.3.1.
pub const INTRANET_NAME: &str = "intranet.campus.test";

/// The first line of `text` that starts with `prefix`, without it.
fn field<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(prefix))
}

/// 100 datagrams through a SOCKS5 UDP association of the warren-local on 127.0.0.1:`port` in
/// home, by address and by name: at least 95 of each come back from 10.77.3.1:ECHO_PORT with
/// a correct SOCKS5 UDP header (socks.py checks the header and the data).
pub fn udp_through_agent(lab: &Lab, script: &str, port: &str, transport: &str) {
    for host in ["10.77.3.1", INTRANET_NAME] {
        let out = lab.run(
            "home",
            "python3",
            &[script, "udp", port, host, ECHO_PORT, "100", "10.77.3.1"],
        );
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let echoed = field(&stdout, "echoed ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|k| k.parse::<u32>().ok());
        println!(
            "UDP through the agent, udp_transport {transport}, to {host}: {}",
            stdout.trim()
        );
        assert!(
            echoed.is_some_and(|k| k >= 95),
            "UDP ({transport}) to {host}:{ECHO_PORT} through the agent: {stdout}{stderr}"
        );
    }
}

/// SOCKS5 BIND for 10.77.3.1:0 from home: the first reply names a listener a peer inside campus
/// can reach (the agent's, on the address it dials the VPS from: 10.77.2.1, not its loopback
/// `remote.listen` nor a VPS address), the peer connects from 10.77.3.1, the second reply names
/// it, and a line goes each way.
pub fn bind_through_agent(lab: &mut Lab, script: &str) {
    let client = lab.spawn("home", Path::new("python3"), &[script, "bind", "1080", "10.77.3.1"]);
    assert!(
        lab.wait_log(client, "first ", Duration::from_secs(30)),
        "no first BIND reply: {}",
        lab.log(client)
    );
    let log = lab.log(client);
    let first = field(&log, "first ").unwrap_or_default().to_string();
    let (host, port) = first.rsplit_once(':').expect("first reply ADDR:PORT");
    // The VPS's addresses: a listener there is not the agent's.
    assert!(
        !host.starts_with("10.77.1.") && host != "10.77.2.2",
        "the first BIND reply names the VPS ({first}), not the agent"
    );
    // Not the agent's loopback listen address either: a peer on another campus machine must be
    // able to reach it.
    assert_eq!(host, "10.77.2.1", "the agent listens where it dials the VPS from");
    let peer = lab.run("campus", "python3", &[script, "peer", "10.77.3.1", host, port]);
    let peer_out = String::from_utf8_lossy(&peer.stdout).to_string();
    assert!(
        peer.status.success(),
        "the campus peer could not use the BIND listener {first}: {peer_out}{}",
        String::from_utf8_lossy(&peer.stderr)
    );
    assert_eq!(
        field(&peer_out, "got "),
        Some("from home"),
        "home's bytes reach the peer"
    );
    assert!(
        lab.wait_log(client, "got ", Duration::from_secs(20)),
        "no bytes from the peer: {}",
        lab.log(client)
    );
    let log = lab.log(client);
    let local = field(&peer_out, "local ");
    assert!(local.is_some_and(|l| l.starts_with("10.77.3.1:")), "peer {peer_out}");
    assert_eq!(field(&log, "second "), local, "the second BIND reply names the peer");
    assert_eq!(field(&log, "got "), Some("from the intranet"));
    println!(
        "BIND through the agent: listener {first}, peer {}",
        local.unwrap_or_default()
    );
}

/// Two agents try to take the name "campus" while the real one is up: `twin` has the right
/// agent key (refused: the name is held), `thief` signs with the laptops' shared key (ignored:
/// no answer before its handshake deadline). They run in the VPS namespace, which cannot reach
/// 10.77.3.1, so a fetch routed to either would fail: every fetch succeeding means neither got
/// the traffic. `fetch` fetches the intranet page from home.
pub fn impostors(
    lab: &mut Lab,
    remote_bin: &Path,
    vps: usize,
    twin_cfg: &str,
    thief_cfg: &str,
    fetch: impl Fn(&Lab) -> bool,
) {
    let args = |cfg| ["-c", cfg, "--log-level", "info"];
    let twin = lab.spawn("vps", remote_bin, &args(twin_cfg));
    let thief = lab.spawn("vps", remote_bin, &args(thief_cfg));
    let limit = Duration::from_secs(20);
    assert!(
        lab.wait_log(twin, "agent not registered: the server refused the name", limit),
        "a second agent under the live name was not refused"
    );
    assert!(lab.wait_log(
        vps,
        "agent registration refused: the name is held by a live session",
        limit
    ));
    assert!(
        lab.wait_log(
            thief,
            "agent not registered: no answer before the handshake deadline",
            limit
        ),
        "an agent signing with the laptops' key was not ignored"
    );
    for _ in 0..3 {
        assert!(fetch(lab), "a fetch failed while impostor agents were trying");
    }
    for idx in [twin, thief] {
        assert!(
            !lab.log(idx).contains("agent registered"),
            "an impostor registered: {}",
            lab.log(idx)
        );
    }
    println!("impostor agents: the twin was refused the name, the laptop-key one ignored; fetches unaffected");
    lab.kill(twin);
    lab.kill(thief);
}
