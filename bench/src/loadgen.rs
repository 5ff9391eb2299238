//! Load generator for bench/run.sh: a sink target server, and clients that go through any
//! SOCKS5 proxy (or straight to the sink, for the no-proxy ceiling).
//!
//! Every client opens with a one-byte request (`?`) and the sink answers it with one byte (`!`),
//! so "first byte back" measures connection set-up end to end, request/response style (a
//! shadowsocks client sends nothing to its server before the application's first bytes, so a
//! server-speaks-first target would time its wait for data, not its set-up). A throughput client
//! then sends the byte count it will push (u64 BE) and the bytes; the sink discards them and
//! answers with the count it received (u64 BE), so the client knows every byte arrived before it
//! stops its clock. No half-close is needed (shadowsocks-libev closes both ways on one EOF).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the sink target server; prints its address, then serves until killed.
    Sink {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Push `bytes` through each of `streams` parallel connections; prints aggregate MB/s.
    Throughput {
        #[command(flatten)]
        route: Route,
        #[arg(long)]
        bytes: u64,
        #[arg(long, default_value_t = 1)]
        streams: usize,
    },
    /// `count` sequential connections: handshake + CONNECT + first byte; prints p50 and p99 in µs.
    Latency {
        #[command(flatten)]
        route: Route,
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// UDP through a SOCKS5 UDP ASSOCIATE (or straight to the sink's UDP echo): sends `size`-byte
    /// datagrams at `rate` per second (0: as fast as it can) for `seconds`, and prints
    /// `sent echoed p50_us p99_us` (echo round trip, over the echoed ones).
    Udp {
        #[command(flatten)]
        route: Route,
        /// Datagrams per second, paced in 1 ms steps; 0 sends back to back.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Bytes of application data per datagram (at least 16).
        #[arg(long, default_value_t = 1200)]
        size: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Open `count` connections and hold them idle for `hold` seconds; prints how many opened.
    Idle {
        #[command(flatten)]
        route: Route,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
    },
}

#[derive(clap::Args, Clone, Copy)]
struct Route {
    /// SOCKS5 proxy to go through; omit to connect to the target directly.
    #[arg(long)]
    socks: Option<SocketAddr>,
    /// The sink's address.
    #[arg(long)]
    target: SocketAddr,
}

/// Bound on one connection's set-up in the idle test (a failure, not a hang).
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects to the sink through the route and waits for its first byte.
async fn open(route: Route) -> Result<TcpStream> {
    let mut stream = match route.socks {
        None => TcpStream::connect(route.target).await?,
        Some(proxy) => {
            let mut s = TcpStream::connect(proxy).await?;
            s.set_nodelay(true)?;
            let mut req = vec![5, 1, 0, 5, 1, 0];
            match route.target {
                SocketAddr::V4(a) => {
                    req.push(1);
                    req.extend_from_slice(&a.ip().octets());
                }
                SocketAddr::V6(a) => {
                    req.push(4);
                    req.extend_from_slice(&a.ip().octets());
                }
            }
            req.extend_from_slice(&route.target.port().to_be_bytes());
            s.write_all(&req).await?;
            let mut sel = [0u8; 2];
            s.read_exact(&mut sel).await?;
            if sel != [5, 0] {
                bail!("method selection {sel:?}");
            }
            let mut head = [0u8; 4];
            s.read_exact(&mut head).await?;
            if head[1] != 0 {
                bail!("SOCKS5 reply {:#04x}", head[1]);
            }
            let rest = match head[3] {
                1 => 4 + 2,
                4 => 16 + 2,
                3 => usize::from(s.read_u8().await?) + 2,
                t => bail!("reply ATYP {t}"),
            };
            let mut skip = vec![0u8; rest];
            s.read_exact(&mut skip).await?;
            s
        }
    };
    stream.set_nodelay(true)?;
    stream.write_all(b"?").await?;
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await.context("first byte")?;
    Ok(stream)
}

async fn sink(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // A UDP echo on the same port number, for the `udp` measurement.
    let echo = UdpSocket::bind(addr).await?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    println!("{addr}");
    loop {
        // An accept error (a connection reset while queued, a momentary fd shortage) must not
        // end the sink that every system's measurements share.
        let mut s = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("sink: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let mut request = [0u8; 1];
            if s.read_exact(&mut request).await.is_err() || s.write_all(b"!").await.is_err() {
                return;
            }
            // Allocate the read buffer only once data arrives: the idle-connection benchmark
            // holds thousands of sink connections that never receive a byte.
            if s.readable().await.is_err() {
                return;
            }
            let Ok(want) = s.read_u64().await else { return };
            let mut buf = vec![0u8; 256 * 1024];
            let mut total: u64 = 0;
            while total < want {
                let n = (want - total).min(buf.len() as u64) as usize;
                match s.read(&mut buf[..n]).await {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = s.write_all(&total.to_be_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

async fn push(route: Route, bytes: u64) -> Result<()> {
    let mut s = open(route).await?;
    let buf = vec![0x5au8; 256 * 1024];
    s.write_all(&bytes.to_be_bytes()).await?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    let got = s.read_u64().await.context("sink's byte count")?;
    if got != bytes {
        bail!("sink received {got} of {bytes} bytes");
    }
    Ok(())
}

/// Opens a SOCKS5 UDP ASSOCIATE (RFC 1928 §7) on `proxy`; returns the control connection (the
/// association lives as long as it) and the relay address to send to.
async fn associate(proxy: SocketAddr) -> Result<(TcpStream, SocketAddr)> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(&[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply).await?;
    // Method selection (2 bytes), then VER REP RSV ATYP=1 ADDR(4) PORT(2).
    if reply[..3] != [5, 0, 5] || reply[3] != 0 {
        bail!("UDP ASSOCIATE answered {reply:?}");
    }
    if reply[5] != 1 {
        bail!("relay address type {} (only IPv4 is handled here)", reply[5]);
    }
    let ip = std::net::Ipv4Addr::new(reply[6], reply[7], reply[8], reply[9]);
    let port = [reply[10], reply[11]];
    let ip = if ip.is_unspecified() { proxy.ip() } else { ip.into() };
    Ok((s, SocketAddr::new(ip, u16::from_be_bytes(port))))
}

/// The `udp` measurement: see [`Cmd::Udp`]. Each datagram carries its sequence number and send
/// time (ns since start, both u64 BE) at the start of its data.
async fn udp(route: Route, rate: u64, size: usize, seconds: f64) -> Result<()> {
    let size = size.max(16);
    let (control, to, header) = match route.socks {
        None => (None, route.target, Vec::new()),
        Some(proxy) => {
            let (control, relay) = associate(proxy).await?;
            let SocketAddr::V4(target) = route.target else {
                bail!("IPv4 target only")
            };
            let mut header = vec![0, 0, 0, 1];
            header.extend_from_slice(&target.ip().octets());
            header.extend_from_slice(&target.port().to_be_bytes());
            (Some(control), relay, header)
        }
    };
    let socket = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    socket.connect(to).await?;
    let start = Instant::now();
    let duration = Duration::from_secs_f64(seconds);
    let receiver = {
        let socket = socket.clone();
        let skip = header.len();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let mut rtts = Vec::new();
            // Echoes still in flight when sending stops get one second to arrive.
            let deadline = tokio::time::Instant::from_std(start + duration + Duration::from_secs(1));
            while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                let Some(stamp) = buf.get(skip + 8..skip + 16).filter(|_| n >= skip + 16) else {
                    continue;
                };
                let mut sent = [0u8; 8];
                sent.copy_from_slice(stamp);
                let now = start.elapsed().as_nanos() as u64;
                rtts.push(Duration::from_nanos(now.saturating_sub(u64::from_be_bytes(sent))));
            }
            rtts
        })
    };
    let mut datagram = header.clone();
    datagram.resize(header.len() + size, 0x5a);
    let mut sent: u64 = 0;
    while start.elapsed() < duration {
        let due = if rate == 0 {
            sent + 64
        } else {
            (start.elapsed().as_secs_f64() * rate as f64) as u64
        };
        while sent < due {
            let at = header.len();
            datagram[at..at + 8].copy_from_slice(&sent.to_be_bytes());
            datagram[at + 8..at + 16].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_be_bytes());
            // A full socket buffer (ENOBUFS) loses this datagram, as it would any sender's.
            let _ = socket.send(&datagram).await;
            sent += 1;
        }
        if rate == 0 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut rtts = receiver.await?;
    drop(control);
    rtts.sort();
    let (p50, p99) = if rtts.is_empty() {
        (0, 0)
    } else {
        (percentile(&rtts, 0.5).as_micros(), percentile(&rtts, 0.99).as_micros())
    };
    println!("{sent} {} {p50} {p99}", rtts.len());
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Sink { listen } => sink(listen).await,
        Cmd::Throughput { route, bytes, streams } => {
            let start = Instant::now();
            let tasks: Vec<_> = (0..streams).map(|_| tokio::spawn(push(route, bytes))).collect();
            for t in tasks {
                t.await??;
            }
            let secs = start.elapsed().as_secs_f64();
            println!("{:.1}", (bytes * streams as u64) as f64 / secs / 1e6);
            Ok(())
        }
        Cmd::Latency { route, count } => {
            let mut times = Vec::with_capacity(count);
            for _ in 0..count {
                let start = Instant::now();
                let s = open(route).await?;
                times.push(start.elapsed());
                drop(s);
            }
            times.sort();
            println!(
                "{} {}",
                percentile(&times, 0.5).as_micros(),
                percentile(&times, 0.99).as_micros()
            );
            Ok(())
        }
        Cmd::Udp {
            route,
            rate,
            size,
            seconds,
        } => udp(route, rate, size, seconds).await,
        Cmd::Idle { route, count, hold } => {
            let mut held = Vec::with_capacity(count);
            let mut failed = 0usize;
            // Open in batches so the proxies see a realistic ramp, not one burst of SYNs.
            for batch in (0..count).collect::<Vec<_>>().chunks(200) {
                let opens: Vec<_> = batch
                    .iter()
                    .map(|_| tokio::spawn(tokio::time::timeout(OPEN_TIMEOUT, open(route))))
                    .collect();
                for o in opens {
                    match o.await? {
                        Ok(Ok(s)) => held.push(s),
                        _ => failed += 1,
                    }
                }
            }
            println!("{} {}", held.len(), failed);
            tokio::time::sleep(Duration::from_secs_f64(hold)).await;
            drop(held);
            Ok(())
        }
    }
}
