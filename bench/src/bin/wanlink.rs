//! `wanlink`: an emulated WAN link between two network namespaces, for bench/wan.sh.
//!
//! This machine's kernel has no netem (`tc qdisc add ... netem` is unknown), so the delay and the
//! rate are emulated in user space. The process creates one TUN device in each namespace and
//! forwards every IP packet read from one to the other:
//!
//! ```text
//!   namespace A                  wanlink (this process)                 namespace B
//!   dev-a (TUN) --read--> [drop-tail queue, paced at --rate-mbit] --+
//!                         [held until arrival + --delay-ms]  --write--> dev-b (TUN)
//!   dev-a (TUN) <--write-- (the same, the other way)         <--read--- dev-b (TUN)
//! ```
//!
//! Each direction is a bottleneck of `--rate-mbit` with a drop-tail buffer of `--limit` packets'
//! worth of bytes (1500 each; netem's default limit is 1000 packets), followed by `--delay-ms` of
//! one-way propagation delay: a packet leaves the queue when the link has serialised every packet
//! before it, and is written into the far namespace `--delay-ms` later. The RTT through the link is
//! therefore 2 × `--delay-ms` plus queueing. The devices vanish when the process exits. Addresses
//! and MTU are set by the caller (`ip addr add`, `ip link set ... up`) once the devices exist.
//!
//! Needs root (setns(2), /dev/net/tun). Linux only.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rand::Rng;

/// Command line of `wanlink`.
#[derive(Parser, Debug)]
#[command(about = "Emulated WAN link (delay, rate, drop-tail) between two network namespaces via TUN devices")]
struct Args {
    /// Namespace of the first end (a name under /var/run/netns, as `ip netns add` makes).
    #[arg(long)]
    ns_a: String,
    /// Name of the TUN device created in --ns-a.
    #[arg(long)]
    dev_a: String,
    /// Namespace of the second end.
    #[arg(long)]
    ns_b: String,
    /// Name of the TUN device created in --ns-b.
    #[arg(long)]
    dev_b: String,
    /// One-way delay in milliseconds, each direction (RTT = 2 × this).
    #[arg(long)]
    delay_ms: f64,
    /// Rate of each direction in Mbit/s (10^6 bits per second).
    #[arg(long)]
    rate_mbit: f64,
    /// Drop-tail buffer of each direction, in 1500-byte packets' worth of bytes.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Random loss of each direction, in percent of packets, each drawn on its own (netem's
    /// `loss random`), before the queue.
    #[arg(long, default_value_t = 0.0)]
    loss_percent: f64,
}

/// `_IOW('T', 202, int)` from <linux/if_tun.h>.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Creates TUN device `dev` (IFF_TUN | IFF_NO_PI: bare IP packets) inside namespace `ns`.
/// The calling thread stays in `ns` afterwards; the device keeps working from any namespace.
fn tun_in(ns: &str, dev: &str) -> Result<File> {
    let nsfile = File::open(format!("/var/run/netns/{ns}")).with_context(|| format!("namespace {ns}"))?;
    // SAFETY: setns on a namespace fd we own; affects only this thread's network namespace.
    if unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("setns into {ns}"));
    }
    let path = CString::new("/dev/net/tun")?;
    // SAFETY: plain open(2) of a constant path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("open /dev/net/tun");
    }
    // SAFETY: fd was just opened by us and is owned by the File from here on.
    let file = unsafe { File::from_raw_fd(fd) };
    let name = dev.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("device name {dev:?} must have 1 to {} bytes", libc::IFNAMSIZ - 1);
    }
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads an ifreq that lives for the duration of the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &ifr) } != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("TUNSETIFF {dev} in {ns}"));
    }
    Ok(file)
}

/// Whether a read or write error on a TUN device is passing (device down, interrupted).
fn transient(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted || e.raw_os_error() == Some(libc::EIO)
}

/// One direction: reads packets from `from`, queues them behind the emulated bottleneck and
/// writes each into `to` when it has crossed the link. Runs until a read or write fails.
fn direction(mut from: File, mut to: File, delay: Duration, bytes_per_sec: f64, limit_bytes: f64, loss: f64) {
    let mut rng = rand::thread_rng();
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = thread::spawn(move || {
        for (due, pkt) in rx {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            // A write to a device that is down fails (EIO): that packet is lost, as on a real link.
            if let Err(e) = to.write(&pkt) {
                if !transient(&e) {
                    return;
                }
            }
        }
    });
    let mut buf = vec![0u8; 65_536];
    // When the link finishes serialising the last accepted packet.
    let mut link_free = Instant::now();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // A TUN device reads EIO until its namespace's side sets it up: wait for that.
            Err(e) if transient(&e) => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => break,
        };
        if loss > 0.0 && rng.gen_bool(loss) {
            continue; // random loss
        }
        let now = Instant::now();
        let backlog = link_free.saturating_duration_since(now).as_secs_f64() * bytes_per_sec;
        if backlog + n as f64 > limit_bytes {
            continue; // drop-tail: the buffer is full
        }
        let start = link_free.max(now);
        link_free = start + Duration::from_secs_f64(n as f64 / bytes_per_sec);
        let Some(pkt) = buf.get(..n) else { break };
        if tx.send((link_free + delay, pkt.to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(args.delay_ms >= 0.0 && args.delay_ms < 10_000.0) {
        bail!("--delay-ms must be from 0 to 10000");
    }
    if !(args.rate_mbit > 0.0 && args.rate_mbit <= 100_000.0) {
        bail!("--rate-mbit must be above 0 and at most 100000");
    }
    if !(0.0..100.0).contains(&args.loss_percent) {
        bail!("--loss-percent must be from 0 to below 100");
    }
    let loss = args.loss_percent / 100.0;
    // Sleeps end within microseconds rather than the default 50 µs timer slack.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let a = tun_in(&args.ns_a, &args.dev_a)?;
    let b = tun_in(&args.ns_b, &args.dev_b)?;
    let delay = Duration::from_secs_f64(args.delay_ms / 1000.0);
    let rate = args.rate_mbit * 1e6 / 8.0;
    let limit = args.limit as f64 * 1500.0;
    let (a2, b2) = (a.try_clone()?, b.try_clone()?);
    eprintln!(
        "wanlink: {}/{} <-> {}/{}: {} ms one way, {} Mbit/s, {} packets of buffer, {} % loss",
        args.ns_a, args.dev_a, args.ns_b, args.dev_b, args.delay_ms, args.rate_mbit, args.limit, args.loss_percent
    );
    let ab = thread::spawn(move || direction(a, b2, delay, rate, limit, loss));
    direction(b, a2, delay, rate, limit, loss);
    let _ = ab.join();
    Ok(())
}
