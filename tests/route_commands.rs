//! Which SOCKS5 commands a route can carry (README "Routing, failover and chains"): a `direct`
//! route connects from the local itself, so it carries CONNECT only, and BIND and UDP ASSOCIATE
//! get 0x07; UDP ASSOCIATE takes the default route, so a `direct` default refuses it with 0x07
//! and a `block` default with 0x02. Nothing is dialled for a refused request.

use std::net::SocketAddr;

use warren_common::proto::address::Address;
use warren_common::proto::socks5::{Command, ReplyCode};
use warren_tests::*;

/// A warren-local whose routes are `routes_yaml` (YAML for `local:`), with one remote that
/// would serve anything (so a refusal is the route's, not the remote's).
async fn local_with(routes_yaml: &str) -> (Server, Server) {
    let key = new_key();
    let remote = start_remote(&key, "acl:\n  - allow: \"127.0.0.1\"").await;
    let yaml = format!(
        "key: \"{key}\"\nlocal:\n  listen: \"127.0.0.1:0\"\n  remotes:\n    vps: {{ address: \"{}\" }}\n{routes_yaml}",
        remote.addr
    );
    let (local, _) = start_local_yaml(&yaml).await;
    (local, remote)
}

async fn reply(local: SocketAddr, command: Command, target: &Address) -> ReplyCode {
    let (_s, reply, _) = within(20, "the SOCKS5 reply", socks5_request(local, command, target))
        .await
        .expect("a reply");
    reply.code
}

#[tokio::test]
async fn bind_and_udp_on_a_direct_route_get_0x07() {
    let peer = target("127.0.0.1:0").await;
    let (local, remote) = local_with("  routes:\n    - { cidr: \"127.0.0.1/32\", direct: true }\n  default: vps").await;
    let to = Address::Ip(peer.addr);
    assert_eq!(
        reply(local.addr, Command::Bind, &to).await,
        ReplyCode::CommandNotSupported
    );
    // CONNECT on the same route works (from the local itself), so the 0x07 is about the command.
    assert_eq!(reply(local.addr, Command::Connect, &to).await, ReplyCode::Succeeded);
    local.stop().await;
    remote.stop().await;
}

#[tokio::test]
async fn udp_with_a_direct_or_block_default_is_refused() {
    for (default, code) in [
        ("direct", ReplyCode::CommandNotSupported),
        ("block", ReplyCode::NotAllowed),
    ] {
        let (local, remote) = local_with(&format!("  default: {default}")).await;
        let got = reply(local.addr, Command::UdpAssociate, &Address::UNSPECIFIED).await;
        assert_eq!(got, code, "UDP ASSOCIATE with default: {default}");
        local.stop().await;
        remote.stop().await;
    }
    // With the remote as default it is granted: the refusal above is the default route's.
    let (local, remote) = local_with("  default: vps").await;
    let got = reply(local.addr, Command::UdpAssociate, &Address::UNSPECIFIED).await;
    assert_eq!(got, ReplyCode::Succeeded);
    local.stop().await;
    remote.stop().await;
}
