//! What finding a request's key costs on the remote, by number of users (PROTOCOL.md §19):
//! the hint design warren uses (one HKDF and one table lookup, whatever the count), a probe of
//! random bytes on the same path, and for comparison the design it replaced for users, trial
//! decryption of the length block under every key. Run with `cargo bench -p warren-common --bench users`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use warren_common::crypto::Key;
use warren_common::proto::address::Address;
use warren_common::proto::header::RequestHeader;
use warren_common::tunnel::{AcceptedRequest, PendingTunnel, Users};

const COUNTS: [usize; 3] = [1, 100, 10_000];

/// The bytes a local sends: sealed with `user` and a hint when `server` is given, else with
/// `user` alone.
fn request(rt: &tokio::runtime::Runtime, server: Option<&Key>, user: &Key) -> Vec<u8> {
    rt.block_on(async {
        let (mut ours, theirs) = tokio::io::duplex(1 << 16);
        let header = RequestHeader::connect(Address::UNSPECIFIED, 1_700_000_000);
        let pending = match server {
            Some(server) => {
                PendingTunnel::send_request_as_user(theirs, server, user, &header, b"GET / HTTP/1.1\r\n\r\n").await
            }
            None => PendingTunnel::send_request(theirs, user, &header, b"GET / HTTP/1.1\r\n\r\n").await,
        };
        drop(pending);
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut ours, &mut bytes)
            .await
            .unwrap();
        bytes
    })
}

fn identify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let server = Key::generate();
    let mut g = c.benchmark_group("identify a request");
    g.sample_size(20);
    for n in COUNTS {
        let keys: Vec<Key> = (0..n).map(|_| Key::generate()).collect();
        let last = keys.last().unwrap().clone();
        let users = Users::new(server.clone(), keys.clone());
        let hinted = request(&rt, Some(&server), &last);
        g.bench_with_input(BenchmarkId::new("hint", n), &n, |b, _| {
            b.iter(|| {
                let mut wire = hinted.as_slice();
                rt.block_on(AcceptedRequest::read(&mut wire, &[], Some(&users), false))
                    .unwrap()
            })
        });
        let probe = vec![0x5a_u8; hinted.len()];
        g.bench_with_input(BenchmarkId::new("probe, hint path", n), &n, |b, _| {
            b.iter(|| {
                let mut wire = probe.as_slice();
                black_box(
                    rt.block_on(AcceptedRequest::read(&mut wire, &[], Some(&users), false))
                        .is_err(),
                )
            })
        });
        let plain = request(&rt, None, &last);
        let all: Vec<&Key> = keys.iter().collect();
        g.bench_with_input(BenchmarkId::new("trial decryption (not used)", n), &n, |b, _| {
            b.iter(|| {
                let mut wire = plain.as_slice();
                rt.block_on(AcceptedRequest::read(&mut wire, &all, None, false))
                    .unwrap()
            })
        });
    }
}

criterion_group!(benches, identify);
criterion_main!(benches);
