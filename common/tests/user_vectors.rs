//! The per-user key vectors of docs/PROTOCOL.md §19.4, computed independently of the Rust code
//! by the Python script there: the user id, the mask, the hint, and a whole first request sealed
//! with a user's key, which the remote's reader must find and open.

use warren_common::crypto::{frame_len, Key, Purpose, SessionCipher, LEN_BLOCK, SALT_LEN};
use warren_common::proto::address::Address;
use warren_common::proto::header::{Command, RequestHeader};
use warren_common::proto::Encode;
use warren_common::tunnel::users::hint;
use warren_common::tunnel::{AcceptedRequest, Opener, Users};

fn unhex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn server() -> Key {
    Key::from_bytes(std::array::from_fn(|i| i as u8))
}

fn user() -> Key {
    Key::from_bytes(std::array::from_fn(|i| 0x60 + i as u8))
}

fn salt_l() -> [u8; SALT_LEN] {
    std::array::from_fn(|i| 0x20 + i as u8)
}

const WIRE: &str = "
    202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f
    65840f9d7175760cc74bc889bfd454d0f5592ab911e1068fb555b8947b7bcc0c
    6c759f5a686fff35a1b3f748a18d49eb2d3c94c6154c6bca4dd94573f24815d3
    7043b1f2fdf2b1db6d108999040ad9e7c739b9796aa6";

#[test]
fn user_id_and_hint() {
    assert_eq!(user().user_id().to_vec(), unhex("db9e45e87dc5cbc5bf85a4e31b4a8219"));
    assert_eq!(
        hint(&server(), &user(), &salt_l()).to_vec(),
        unhex("65840f9d7175760cc74bc889bfd454d0")
    );
}

#[test]
fn the_documented_request_is_sealed_and_opened_alike() {
    let header = RequestHeader {
        command: Command::Connect,
        timestamp: 1_700_000_000,
        target: Address::domain("example.com", 443).unwrap(),
        padding_len: 5,
    };
    let mut plaintext = Vec::new();
    header.encode(&mut plaintext);
    plaintext.extend_from_slice(b"hello");
    let mut wire = salt_l().to_vec();
    wire.extend_from_slice(&hint(&server(), &user(), &salt_l()));
    let start = wire.len();
    wire.resize(start + frame_len(plaintext.len()), 0);
    wire[start + LEN_BLOCK..start + LEN_BLOCK + plaintext.len()].copy_from_slice(&plaintext);
    SessionCipher::new(&user(), Purpose::TcpRequest, &salt_l())
        .seal_frame(&mut wire[start..])
        .unwrap();
    assert_eq!(wire, unhex(WIRE));

    // The remote finds the user among others by the hint, and opens the request.
    let mut keys: Vec<Key> = (0..50).map(|_| Key::generate()).collect();
    keys.insert(17, user());
    let users = Users::new(server(), keys);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let documented = unhex(WIRE);
    let mut bytes = documented.as_slice();
    let request = rt
        .block_on(AcceptedRequest::read(&mut bytes, &[], Some(&users), true))
        .unwrap();
    assert_eq!(request.opener, Opener::User(17));
    assert_eq!(request.header, header);
    assert_eq!(request.initial_data, b"hello");
    assert_eq!(
        request.raw.as_deref(),
        Some(documented.as_slice()),
        "kept whole, hint included"
    );
    // Without the user in the table, or offered the shared key alone: not opened.
    let strangers = Users::new(server(), (0..5).map(|_| Key::generate()).collect());
    let mut bytes = documented.as_slice();
    assert!(rt
        .block_on(AcceptedRequest::read(&mut bytes, &[&server()], Some(&strangers), false))
        .is_err());
}
