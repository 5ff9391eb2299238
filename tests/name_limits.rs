//! A domain name travels with a one-byte length (RFC 1928 §5), so a name over 255 bytes can
//! never be an `Address` (`DomainName::new` refuses it; nothing truncates). Each front end that
//! takes a name as text refuses one in its own words, through real sockets: HTTP CONNECT and an
//! absolute-form GET get 400 (SOCKS4a's `00 5B`: `socks4::malformed_socks4_requests_get_0x5b`;
//! SOCKS5 cannot spell a longer name); a name of exactly 255 bytes is carried whole to the
//! remote, whose resolver rejects it (a label over 63 bytes), so it gets the remote's answer
//! (502 "host unreachable"), not a local refusal.

use warren_tests::*;

/// A name of `len` bytes (one label: no DNS query can leave the machine for it).
fn name(len: usize) -> String {
    "a".repeat(len)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn http_names_over_255_bytes_get_400_and_255_reach_the_remote() {
    let pair = start_pair("", "").await;
    for (len, status) in [
        (256, "400 Bad Request"),
        (300, "400 Bad Request"),
        (255, "502 Bad Gateway"),
    ] {
        let host = name(len);
        let connect = format!("CONNECT {host}:80 HTTP/1.1\r\nHost: {host}:80\r\nConnection: close\r\n\r\n");
        let answer = send_raw(pair.socks(), connect.as_bytes()).await;
        assert!(
            answer.starts_with(format!("HTTP/1.1 {status}\r\n").as_bytes()),
            "CONNECT {len}: {}",
            text(&answer)
        );
        let get = format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = send_raw(pair.socks(), get.as_bytes()).await;
        assert!(
            answer.starts_with(format!("HTTP/1.1 {status}\r\n").as_bytes()),
            "GET {len}: {}",
            text(&answer)
        );
        if len == 255 {
            assert!(text(&answer).contains("host unreachable"), "{}", text(&answer));
        }
    }
    pair.local.stop().await;
    pair.remote.stop().await;
}
