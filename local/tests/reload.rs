//! Reloading warren-local's config on SIGHUP, through the real binary: a 64 MiB download that
//! started before the reload finishes byte-exact while the reload changes the users and the
//! routes for new connections; an invalid file is refused and the running config stays; a new
//! listen address is logged as needing a restart; the file's `log_level` takes effect.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use tokio::task::spawn_blocking;

const BIN: &str = env!("CARGO_BIN_EXE_warren-local");

#[path = "../../tests/cli_harness.rs"]
mod cli_harness;
use cli_harness::{config_file, free_port, key, socks5_open, start_remote, Proc};

const SIZE: usize = 64 << 20;

/// Byte `i` of the download.
fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 13)) as u8
}

/// A target that sends SIZE bytes of [`pattern`] to each of its first `n` connections.
fn source(n: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(n) {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                for start in (0..SIZE).step_by(1 << 16) {
                    let chunk: Vec<u8> = (start..start + (1 << 16)).map(pattern).collect();
                    if conn.write_all(&chunk).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn local_yaml(key: &str, listen: u16, remote: SocketAddr, user: &str, extra: &str) -> String {
    format!(
        "key: \"{key}\"\nlocal:\n  listen: \"127.0.0.1:{listen}\"\n  remote: \"{remote}\"\n  users:\n    - {{ username: {user}, password: \"pw-{user}\" }}\n{extra}"
    )
}

fn rewrite(path: &Path, yaml: &str) {
    // Written whole to a new file and renamed over the old one, as editors and config tools do,
    // so the reload never reads half a file.
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_changes_users_and_routes_for_new_connections_and_spares_open_ones() {
    let k = key();
    let (remote, stop) = start_remote(&k, "  acl:\n    - allow: \"127.0.0.1\"\n").await;
    let download = source(4);
    let other = source(4);
    let port = free_port();
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let path = config_file(&local_yaml(&k, port, remote, "alice", ""));
    let mut proc = Proc::spawn(BIN, &["-c", path.to_str().unwrap()]);
    proc.wait_line("serving SOCKS5");

    // Before: alice may log in and reach both targets.
    let (code, mut stream) = spawn_blocking(move || socks5_open(proxy, download, Some(("alice", "pw-alice"))))
        .await
        .unwrap()
        .expect("alice logs in");
    assert_eq!(code, 0);
    let mut head = vec![0u8; 1 << 20];
    let mut stream = spawn_blocking(move || {
        stream.read_exact(&mut head).unwrap();
        assert!(head.iter().enumerate().all(|(i, b)| *b == pattern(i)));
        stream
    })
    .await
    .unwrap();

    // Reload: bob instead of alice, and the other target blocked.
    let blocked = format!(
        "  routes:\n    - {{ cidr: \"127.0.0.1/32\", port: {}, block: true }}\n",
        other.port()
    );
    rewrite(&path, &local_yaml(&k, port, remote, "bob", &blocked));
    proc.signal("HUP");
    proc.wait_line("config reloaded");

    let after = spawn_blocking(move || {
        let alice = socks5_open(proxy, download, Some(("alice", "pw-alice"))).map(|(c, _)| c);
        let bob = socks5_open(proxy, download, Some(("bob", "pw-bob"))).map(|(c, _)| c);
        let bob_other = socks5_open(proxy, other, Some(("bob", "pw-bob"))).map(|(c, _)| c);
        (alice, bob, bob_other)
    })
    .await
    .unwrap();
    assert_eq!(
        after,
        (None, Some(0), Some(0x02)),
        "alice refused, bob in, the blocked target refused with 0x02"
    );

    // The download that began before the reload finishes, byte for byte.
    let received = spawn_blocking(move || {
        let mut offset = 1 << 20;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            for (j, b) in buf.iter().take(n).enumerate() {
                assert_eq!(*b, pattern(offset + j), "byte {}", offset + j);
            }
            offset += n;
        }
        offset
    })
    .await
    .unwrap();
    assert_eq!(received, SIZE);

    // An invalid file is refused, naming the field; bob still gets in.
    rewrite(&path, &local_yaml(&k, port, remote, "bob", "  idle_timeout: -1\n"));
    proc.signal("HUP");
    let line = proc.wait_line("reload refused");
    assert!(line.contains("local.idle_timeout"), "{line}");
    let bob = spawn_blocking(move || socks5_open(proxy, other, Some(("bob", "pw-bob"))).map(|(c, _)| c))
        .await
        .unwrap();
    assert_eq!(bob, Some(0x02), "the running config (with its block rule) stays");

    // A new listen address needs a restart: said so, and the old port keeps serving. The file's
    // log_level takes effect (the line saying so is a debug line: it shows only if it did).
    let yaml = local_yaml(&k, free_port(), remote, "bob", "").replace("local:", "log_level: debug\nlocal:");
    rewrite(&path, &yaml);
    proc.signal("HUP");
    proc.wait_line("local.listen changed: that takes a restart");
    proc.wait_line("config reloaded");
    let line = proc.wait_line("log level is now debug");
    assert!(line.contains("DEBUG"), "{line}");
    let bob = spawn_blocking(move || socks5_open(proxy, other, Some(("bob", "pw-bob"))).map(|(c, _)| c))
        .await
        .unwrap();
    assert_eq!(bob, Some(0), "served on the old port, with the new routes");

    proc.signal("TERM");
    let (status, _) = proc.wait_exit();
    assert_eq!(status.code(), Some(0));
    stop.cancel();
}
