//! The encrypted UDP transport (`udp_transport: udp`, PROTOCOL.md §16.3) and the tunnel's
//! direction labels (§4), through real sockets: a packet the remote sent, sent back to it, is
//! dropped (no reply, nothing forwarded); a recorded response stream sent to the remote as a
//! request gets silence; and when a SOCKS5 control connection closes, the remote closes that
//! association's outbound socket at once (seen as ECONNREFUSED by a prober), not after its idle
//! timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use warren_common::crypto::{Key, Purpose, SessionCipher, LEN_BLOCK, SALT_LEN, TAG_LEN};
use warren_common::proto::address::Address;
use warren_common::proto::decode_exact;
use warren_common::proto::header::RequestHeader;
use warren_common::proto::udp::{PacketPlaintext, Socks5Datagram};
use warren_common::proto::Encode;
use warren_common::time::unix_now;
use warren_common::tunnel::PendingTunnel;
use warren_common::udp_session::{open_packet, random_session_id, seal_packet};
use warren_tests::*;

/// A datagram packet local → remote for `to`, sealed with `key` as a warren-local would.
fn to_remote(key: &Key, to: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut plaintext = Vec::new();
    PacketPlaintext::encode_parts(unix_now(), &Address::Ip(to), data, &mut plaintext);
    seal_packet(key, Purpose::UdpToRemote, &random_session_id(), 0, &plaintext).unwrap()
}

/// The next datagram on `socket` and its sender (bounded: a hang fails the test).
async fn next(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 65536];
    let (n, from) = within(20, "a datagram", socket.recv_from(&mut buf)).await.unwrap();
    (buf[..n].to_vec(), from)
}

#[tokio::test]
async fn a_packet_the_remote_sent_is_refused_when_sent_back_to_it() {
    let key_text = new_key();
    let remote = start_remote(&key_text, "acl:\n  - allow: \"127.0.0.0/8\"").await;
    let key = Key::from_base64(&key_text).unwrap();
    let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();

    // A genuine association: the target answers, the remote seals the answer to us.
    let local = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    local.connect(remote.addr).await.unwrap();
    local.send(&to_remote(&key, target_addr, b"first")).await.unwrap();
    let (data, outbound) = next(&target).await;
    assert_eq!(data, b"first");
    target.send_to(b"pong", outbound).await.unwrap();
    let (answer, _) = next(&local).await;
    let (_, _, plaintext) = open_packet(&key, Purpose::UdpToLocal, &answer).expect("sealed towards the local");
    let answer_plain: PacketPlaintext = decode_exact(&plaintext).unwrap();
    assert_eq!(answer_plain.data, b"pong");

    // Another socket sends the remote's own packet back to it, then a genuine packet. The
    // remote handles one source's packets in order and sends them out of one socket, so if the
    // reflected one were accepted its data ("pong", to the target) would arrive first.
    let reflector = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    reflector.connect(remote.addr).await.unwrap();
    reflector.send(&answer).await.unwrap();
    reflector.send(&to_remote(&key, target_addr, b"after")).await.unwrap();
    let (data, outbound) = next(&target).await;
    assert_eq!(data, b"after", "the reflected packet reached the target");
    target.send_to(b"reply to after", outbound).await.unwrap();
    let (first_back, _) = next(&reflector).await;
    let (_, _, plaintext) = open_packet(&key, Purpose::UdpToLocal, &first_back).unwrap();
    let back: PacketPlaintext = decode_exact(&plaintext).unwrap();
    assert_eq!(
        back.data, b"reply to after",
        "the reflector got nothing before its genuine answer"
    );
    remote.stop().await;
}

#[tokio::test]
async fn a_recorded_response_stream_sent_to_the_remote_as_a_request_is_silent() {
    let key_text = new_key();
    let remote = start_remote(&key_text, "handshake_timeout: 1\nacl:\n  - allow: \"127.0.0.0/8\"").await;
    let key = Key::from_base64(&key_text).unwrap();
    let target = target("127.0.0.1:0").await;

    // A genuine CONNECT, built with warren_common, and the response stream recorded.
    let (ours, mut wire) = tokio::io::duplex(4096);
    let header = RequestHeader::connect(Address::Ip(target.addr), unix_now());
    let _pending = PendingTunnel::send_request(ours, &key, &header, b"hello")
        .await
        .unwrap();
    let mut request = vec![0u8; 4096];
    let n = wire.read(&mut request).await.unwrap();
    let mut conn = TcpStream::connect(remote.addr).await.unwrap();
    conn.write_all(&request[..n]).await.unwrap();
    let mut response = vec![0u8; SALT_LEN + LEN_BLOCK];
    within(20, "the response", conn.read_exact(&mut response))
        .await
        .unwrap();
    let salt: [u8; SALT_LEN] = response[..SALT_LEN].try_into().unwrap();
    let mut block: [u8; LEN_BLOCK] = response[SALT_LEN..].try_into().unwrap();
    let len = SessionCipher::new(&key, Purpose::TcpResponse, &salt)
        .open_length(&mut block)
        .expect("the response opens under the response label");
    let mut rest = vec![0u8; len + TAG_LEN];
    within(20, "the response", conn.read_exact(&mut rest)).await.unwrap();
    response.extend_from_slice(&rest);
    assert_eq!(target.connections().await, 1);

    // The response stream, sent as a request: no byte back, no outbound connection.
    let mut reflected = TcpStream::connect(remote.addr).await.unwrap();
    reflected.write_all(&response).await.unwrap();
    assert!(
        read_until_closed(&mut reflected).await.is_empty(),
        "the remote answered"
    );
    assert_eq!(
        target.connections().await,
        1,
        "the reflected response reached the target"
    );
    drop(conn);
    remote.stop().await;
}

#[tokio::test]
async fn the_remote_closes_an_associations_socket_when_its_control_connection_closes() {
    let pair = start_pair("", "udp_transport: udp").await;
    let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let (control, relay) = udp_associate(pair.socks()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut out = Vec::new();
    Socks5Datagram {
        frag: 0,
        address: Address::Ip(target_addr),
        data: b"ping".to_vec(),
    }
    .encode(&mut out);
    client.send_to(&out, relay).await.unwrap();
    let (data, outbound) = next(&target).await;
    assert_eq!(data, b"ping");
    target.send_to(b"pong", outbound).await.unwrap();
    let (back, _) = next(&client).await;
    assert_eq!(decode_exact::<Socks5Datagram>(&back).unwrap().data, b"pong");

    // A prober connected to the remote's outbound socket for this association: while that
    // socket is open its probes are dropped there (it never sent to the prober); once it is
    // closed the kernel answers ICMP port unreachable, which Linux reports as ECONNREFUSED.
    let prober = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    prober.connect(outbound).await.unwrap();
    drop(control);
    let closed = within(20, "the remote closes the association's socket", async {
        let mut buf = [0u8; 64];
        loop {
            if let Err(e) = prober.send(b"probe").await {
                break e.kind();
            }
            match tokio::time::timeout(Duration::from_millis(100), prober.recv(&mut buf)).await {
                Ok(Err(e)) => break e.kind(),
                Ok(Ok(_)) | Err(_) => continue,
            }
        }
    })
    .await;
    assert_eq!(closed, std::io::ErrorKind::ConnectionRefused);
}
