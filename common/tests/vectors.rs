//! The test vectors of docs/PROTOCOL.md ("Test vectors"), checked against the public API.
//!
//! The expected bytes were computed independently of this crate, in Python with the
//! `cryptography` package (the script is in PROTOCOL.md, appendix A). If this test and the
//! script disagree, the script is the reference.

use std::net::SocketAddr;
use warren_common::proto::Encode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_common::crypto::{
    frame_len, Key, Purpose, SessionCipher, KEY_LEN, LEN_BLOCK, MAX_FRAME, MAX_PAYLOAD, SALT_LEN, TAG_LEN,
};
use warren_common::proto::address::Address;
use warren_common::proto::header::{Command, RequestHeader, ResponseHeader, MAX_PADDING, TIMESTAMP_WINDOW_SECS};
use warren_common::proto::socks5::ReplyCode;
use warren_common::proto::status::Status;
use warren_common::proto::{decode_exact, decode_prefix, DecodeError};
use warren_common::tunnel::AcceptedRequest;

// ---- inputs ---------------------------------------------------------------------------------

/// Bytes 0x00..=0x1f.
const KEY_BASE64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const REQUEST_TIMESTAMP: u64 = 1_700_000_000;
const RESPONSE_TIMESTAMP: u64 = 1_700_000_001;
const INITIAL_DATA: &[u8] = b"hello";
const DATA: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

/// The purposes (PROTOCOL.md §4) of the two directions.
const UP: Purpose = Purpose::TcpRequest;
const DOWN: Purpose = Purpose::TcpResponse;

fn key() -> Key {
    Key::from_bytes(std::array::from_fn(|i| i as u8))
}

/// salt_L: bytes 0x20..=0x3f, the local's salt (local → remote).
fn salt_l() -> [u8; SALT_LEN] {
    std::array::from_fn(|i| 0x20 + i as u8)
}

/// salt_R: bytes 0x40..=0x5f, the remote's salt (remote → local).
fn salt_r() -> [u8; SALT_LEN] {
    std::array::from_fn(|i| 0x40 + i as u8)
}

fn request_header() -> RequestHeader {
    RequestHeader {
        command: Command::Connect,
        timestamp: REQUEST_TIMESTAMP,
        target: Address::domain("example.com", 443).unwrap(),
        padding_len: 5,
    }
}

fn response_header() -> ResponseHeader {
    ResponseHeader {
        request_salt: salt_l(),
        status: Status::Succeeded,
        timestamp: RESPONSE_TIMESTAMP,
        bound: Address::Ip(SocketAddr::from(([192, 0, 2, 7], 40000))),
        padding_len: 3,
    }
}

// ---- expected outputs (from the Python script) ----------------------------------------------

const SUBKEY_L: &str = "93675e2067b3aa4bc22f0b9e471d76488758a1649d4b3d2ecae8ddcc803e3c6c";
const SUBKEY_R: &str = "83199b9843718f264c455c30d6e14651bf9829d32ba2a039e9f48e426157a922";

const REQUEST_HEADER: &str = "01000000006553f100030b6578616d706c652e636f6d01bb00050000000000";

/// salt_L || sealed length block (nonce 0) || sealed header + "hello" (nonce 1).
const WIRE_REQUEST: &str = concat!(
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
    "036bbe0f2e8020a10af625892d4b74640427f900e4f18d828d2d67d73ee26207",
    "cce2ecfaf8e8896c1d3c11d3a70a2c29f194694f530906916eed0e6107927bba",
    "503cfcc64037",
);

const RESPONSE_HEADER: &str = concat!(
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
    "00000000006553f10101c00002079c400003000000",
);

/// salt_R || sealed length block (nonce 0) || sealed response header (nonce 1).
const WIRE_RESPONSE: &str = concat!(
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f",
    "335895d55f4c806fe1da97bec5b64e4547ae5f0a9374d2833bca9b237743cf40",
    "ad5edeef1a05b025666643206d770a9f2b1fb04524991dafaccf1c568a31cd3d",
    "5bd648316d7598c5475e07beded43ada4f306a7e58689e",
);

/// The next chunk local → remote, carrying `DATA` (nonces 2 and 3).
const WIRE_DATA: &str = concat!(
    "ffb28b310ee0ede21f7b83ae9f26429eef9ad63d174bee7b6ac4b110c794dce7",
    "4056262687fa5c97f2027ad7f0c7db434179c8d2",
);

/// The end-of-stream chunk local → remote after it (nonces 4 and 5).
const WIRE_EOS: &str = concat!(
    "aabb558173fba7ee1691f4a326a2ff4d3a9c5d976b09ecb709c24b1208452028",
    "7258",
);

// ---- helpers --------------------------------------------------------------------------------

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap()
}

/// Seals one chunk the way the docs describe the caller's part: LEN_BLOCK zero bytes, the
/// payload, TAG_LEN zero bytes, then `seal_frame`.
fn seal(cipher: &mut SessionCipher, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; LEN_BLOCK];
    frame.extend_from_slice(payload);
    frame.extend_from_slice(&[0u8; TAG_LEN]);
    assert_eq!(frame.len(), frame_len(payload.len()));
    cipher.seal_frame(&mut frame).unwrap();
    frame
}

/// Opens the chunk at the front of `wire` and returns its plaintext and the bytes it used.
fn open(cipher: &mut SessionCipher, wire: &[u8]) -> (Vec<u8>, usize) {
    let mut block: [u8; LEN_BLOCK] = wire[..LEN_BLOCK].try_into().unwrap();
    let n = cipher.open_length(&mut block).unwrap();
    let mut sealed = wire[LEN_BLOCK..LEN_BLOCK + n + TAG_LEN].to_vec();
    cipher.open_payload(&mut sealed).unwrap();
    sealed.truncate(n);
    (sealed, frame_len(n))
}

fn request_plaintext() -> Vec<u8> {
    let mut plaintext = unhex(REQUEST_HEADER);
    plaintext.extend_from_slice(INITIAL_DATA);
    plaintext
}

// ---- tests ----------------------------------------------------------------------------------

#[test]
fn documented_constants() {
    assert_eq!(KEY_LEN, 32);
    assert_eq!(SALT_LEN, 32);
    assert_eq!(TAG_LEN, 16);
    assert_eq!(LEN_BLOCK, 18);
    assert_eq!(MAX_PAYLOAD, 65535);
    assert_eq!(frame_len(0), 34);
    assert_eq!(MAX_FRAME, 65535 + 34);
    assert_eq!(MAX_PADDING, 1024);
    assert_eq!(TIMESTAMP_WINDOW_SECS, 120);
    assert_eq!(Command::Connect as u8, 0x01);
}

#[test]
fn status_codes_are_the_socks5_reply_values() {
    let table = [
        (0x00, ReplyCode::Succeeded),
        (0x01, ReplyCode::GeneralFailure),
        (0x02, ReplyCode::NotAllowed),
        (0x03, ReplyCode::NetworkUnreachable),
        (0x04, ReplyCode::HostUnreachable),
        (0x05, ReplyCode::ConnectionRefused),
        (0x06, ReplyCode::TtlExpired),
        (0x07, ReplyCode::CommandNotSupported),
        (0x08, ReplyCode::AddressTypeNotSupported),
    ];
    for (value, code) in table {
        assert_eq!(code as u8, value);
        assert_eq!(ReplyCode::from_u8(value), Some(code));
    }
    assert_eq!(ReplyCode::from_u8(0x09), None);
}

#[test]
fn key_base64() {
    assert_eq!(key().to_base64(), KEY_BASE64);
    assert_eq!(Key::from_base64(KEY_BASE64), Ok(key()));
}

#[test]
fn subkeys() {
    assert_eq!(hex::encode(key().subkey(Purpose::TcpRequest, &salt_l())), SUBKEY_L);
    assert_eq!(hex::encode(key().subkey(Purpose::TcpResponse, &salt_r())), SUBKEY_R);
}

#[test]
fn request_header_encoding() {
    let header = request_header();
    let mut buf = Vec::new();
    header.encode(&mut buf);
    assert_eq!(hex::encode(&buf), REQUEST_HEADER);
    assert_eq!(buf.len(), header.encoded_len());

    // Decoding the chunk plaintext gives the header back and leaves the initial data.
    let plaintext = request_plaintext();
    let (decoded, used) = decode_prefix::<RequestHeader>(&plaintext).unwrap();
    assert_eq!(decoded, header);
    assert_eq!(&plaintext[used..], INITIAL_DATA);
}

#[test]
fn response_header_encoding() {
    let header = response_header();
    let mut buf = Vec::new();
    header.encode(&mut buf);
    assert_eq!(hex::encode(&buf), RESPONSE_HEADER);
    assert_eq!(buf.len(), header.encoded_len());
    assert_eq!(decode_exact::<ResponseHeader>(&unhex(RESPONSE_HEADER)), Ok(header));
    // The response must fill its chunk exactly.
    let mut longer = unhex(RESPONSE_HEADER);
    longer.push(0);
    assert_eq!(
        decode_exact::<ResponseHeader>(&longer),
        Err(DecodeError::TrailingBytes(1))
    );
}

#[test]
fn local_to_remote_sealing() {
    let mut up = SessionCipher::new(&key(), UP, &salt_l());
    let mut wire = salt_l().to_vec();
    wire.extend_from_slice(&seal(&mut up, &request_plaintext())); // nonces 0, 1
    assert_eq!(hex::encode(&wire), WIRE_REQUEST);
    assert_eq!(hex::encode(seal(&mut up, DATA)), WIRE_DATA); // nonces 2, 3
    assert_eq!(hex::encode(seal(&mut up, b"")), WIRE_EOS); // nonces 4, 5
}

#[test]
fn remote_to_local_sealing() {
    let mut buf = Vec::new();
    response_header().encode(&mut buf);
    let mut down = SessionCipher::new(&key(), DOWN, &salt_r());
    let mut wire = salt_r().to_vec();
    wire.extend_from_slice(&seal(&mut down, &buf)); // nonces 0, 1
    assert_eq!(hex::encode(&wire), WIRE_RESPONSE);
}

#[test]
fn local_to_remote_opening() {
    let wire = unhex(WIRE_REQUEST);
    let salt: [u8; SALT_LEN] = wire[..SALT_LEN].try_into().unwrap();
    assert_eq!(salt, salt_l());
    let mut up = SessionCipher::new(&key(), UP, &salt);

    let (plaintext, used) = open(&mut up, &wire[SALT_LEN..]);
    assert_eq!(SALT_LEN + used, wire.len());
    assert_eq!(plaintext, request_plaintext());
    let (header, used) = decode_prefix::<RequestHeader>(&plaintext).unwrap();
    assert_eq!(header, request_header());
    assert_eq!(&plaintext[used..], INITIAL_DATA);

    let data = unhex(WIRE_DATA);
    assert_eq!(open(&mut up, &data), (DATA.to_vec(), data.len()));
    let eos = unhex(WIRE_EOS);
    assert_eq!(open(&mut up, &eos), (Vec::new(), eos.len()));
}

#[test]
fn remote_to_local_opening() {
    let wire = unhex(WIRE_RESPONSE);
    let salt: [u8; SALT_LEN] = wire[..SALT_LEN].try_into().unwrap();
    assert_eq!(salt, salt_r());
    let mut down = SessionCipher::new(&key(), DOWN, &salt);
    let (plaintext, used) = open(&mut down, &wire[SALT_LEN..]);
    assert_eq!(SALT_LEN + used, wire.len());
    assert_eq!(hex::encode(&plaintext), RESPONSE_HEADER);
    assert_eq!(decode_exact::<ResponseHeader>(&plaintext), Ok(response_header()));
}

#[test]
fn nonces_are_not_interchangeable() {
    // The data chunk only opens at nonces 2 and 3: a fresh cipher (nonce 0) refuses it.
    let data = unhex(WIRE_DATA);
    let mut block: [u8; LEN_BLOCK] = data[..LEN_BLOCK].try_into().unwrap();
    assert!(SessionCipher::new(&key(), UP, &salt_l())
        .open_length(&mut block)
        .is_err());
    // And the other direction's subkey refuses the request.
    let wire = unhex(WIRE_REQUEST);
    let mut block: [u8; LEN_BLOCK] = wire[SALT_LEN..SALT_LEN + LEN_BLOCK].try_into().unwrap();
    assert!(SessionCipher::new(&key(), DOWN, &salt_r())
        .open_length(&mut block)
        .is_err());
    // Its own salt under the response's label refuses it too: the direction is in the label.
    let mut block: [u8; LEN_BLOCK] = wire[SALT_LEN..SALT_LEN + LEN_BLOCK].try_into().unwrap();
    assert!(SessionCipher::new(&key(), DOWN, &salt_l())
        .open_length(&mut block)
        .is_err());
}

/// A recorded response sent back to a remote as a request (a reflection) fails authentication
/// in the remote's own handshake code, so the remote stays silent (§11). Under version 1's single
/// label it authenticated and only failed to parse.
#[tokio::test]
async fn a_reflected_response_does_not_authenticate_as_a_request() {
    let mut reflected = &unhex(WIRE_RESPONSE)[..];
    let got = AcceptedRequest::read(&mut reflected, &[&key()], None, false).await;
    assert!(
        matches!(got, Err(warren_common::tunnel::HandshakeError::Unauthenticated)),
        "{:?}",
        got.map(|r| r.header)
    );
}

/// The remote's real handshake and stream code accept the vector bytes: the request, then the
/// data chunk and the end of stream through the `EncryptedStream` that continues the counter.
/// Part of the data chunk arrives as `already_read` (bytes the remote read while connecting),
/// the rest from the socket.
#[tokio::test]
async fn remote_handshake_reads_the_vectors() {
    let mut handshake = &unhex(WIRE_REQUEST)[..];
    let accepted = AcceptedRequest::read(&mut handshake, &[&key()], None, false)
        .await
        .unwrap();
    assert!(handshake.is_empty());
    assert_eq!(accepted.header, request_header());
    assert_eq!(accepted.salt, salt_l());
    assert_eq!(accepted.initial_data, INITIAL_DATA);

    let mut rest = unhex(WIRE_DATA);
    rest.extend_from_slice(&unhex(WIRE_EOS));
    let (already_read, from_socket) = rest.split_at(10);
    let (remote_end, mut local_end) = tokio::io::duplex(4096);
    local_end.write_all(from_socket).await.unwrap();

    let mut stream = accepted
        .respond(remote_end, &response_header(), already_read)
        .await
        .unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, DATA);
    drop(stream);

    // The response it sent is under a random salt, so only its length and plaintext match.
    let mut response = Vec::new();
    local_end.read_to_end(&mut response).await.unwrap();
    assert_eq!(response.len(), unhex(WIRE_RESPONSE).len());
    let salt: [u8; SALT_LEN] = response[..SALT_LEN].try_into().unwrap();
    let mut down = SessionCipher::new(&key(), DOWN, &salt);
    let (plaintext, used) = open(&mut down, &response[SALT_LEN..]);
    assert_eq!(SALT_LEN + used, response.len());
    assert_eq!(hex::encode(plaintext), RESPONSE_HEADER);
}
