//! Micro-benchmarks: warren's chunk encoder/decoder per chunk size next to the raw
//! `chacha20poly1305` seal/open of the same bytes, so the framing's overhead over the cipher is
//! visible; and the SOCKS5 request parser. Run with `cargo bench -p warren-common`.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use warren_common::crypto::{frame_len, Key, Purpose, SessionCipher, LEN_BLOCK, MAX_PAYLOAD};
use warren_common::proto::socks5::Request;
use warren_common::proto::{decode_exact, Decode};

const SIZES: [usize; 4] = [1024, 4096, 16384, MAX_PAYLOAD];

fn cipher(c: &mut Criterion) {
    let aead = ChaCha20Poly1305::new(&[7u8; 32].into());
    let nonce = Nonce::default();
    let mut g = c.benchmark_group("raw chacha20poly1305");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0x5au8; size];
        g.bench_with_input(BenchmarkId::new("seal", size), &size, |b, _| {
            b.iter(|| {
                black_box(
                    aead.encrypt_inout_detached(&nonce, &[], buf.as_mut_slice().into())
                        .unwrap(),
                )
            })
        });
        let tag: Tag = aead
            .encrypt_inout_detached(&nonce, &[], buf.as_mut_slice().into())
            .unwrap();
        g.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
            b.iter_batched_ref(
                || buf.clone(),
                |sealed| {
                    aead.decrypt_inout_detached(&nonce, &[], sealed.as_mut_slice().into(), &tag)
                        .unwrap()
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn chunks(c: &mut Criterion) {
    let key = Key::from_bytes([7u8; 32]);
    let salt = [9u8; 32];
    let mut g = c.benchmark_group("warren chunk");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut sealer = SessionCipher::new(&key, Purpose::TcpRequest, &salt);
        let mut frame = vec![0x5au8; frame_len(size)];
        g.bench_with_input(BenchmarkId::new("seal_frame", size), &size, |b, _| {
            b.iter(|| sealer.seal_frame(black_box(&mut frame)).unwrap())
        });
        // Opening needs a fresh stream of chunks in nonce order: seal a batch, then time opening it.
        g.bench_with_input(BenchmarkId::new("open_frame", size), &size, |b, _| {
            b.iter_batched_ref(
                || {
                    let mut s = SessionCipher::new(&key, Purpose::TcpRequest, &salt);
                    let mut f = vec![0x5au8; frame_len(size)];
                    s.seal_frame(&mut f).unwrap();
                    (SessionCipher::new(&key, Purpose::TcpRequest, &salt), f)
                },
                |(opener, f)| {
                    let mut block: [u8; LEN_BLOCK] = f[..LEN_BLOCK].try_into().unwrap();
                    let n = opener.open_length(&mut block).unwrap();
                    opener.open_payload(&mut f[LEN_BLOCK..]).unwrap();
                    black_box(n);
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn socks5(c: &mut Criterion) {
    let domain: &[u8] = b"\x05\x01\x00\x03\x0bexample.com\x01\xbb";
    let ipv4: &[u8] = &[5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];
    let mut g = c.benchmark_group("socks5 request parser");
    for (name, bytes) in [("domain", domain), ("ipv4", ipv4)] {
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter(|| black_box(decode_exact::<Request>(black_box(bytes)).unwrap()))
        });
    }
    g.bench_function("incomplete", |b| {
        b.iter(|| black_box(Request::decode(&mut black_box(&domain[..9])).is_err()))
    });
    g.finish();
}

criterion_group!(benches, cipher, chunks, socks5);
criterion_main!(benches);
