//! The session heartbeat: yamux 0.13 has no keep-alive, so the agent opens the session's first
//! stream and sends one byte at random intervals (1–3 s, so the beat has no fixed period to
//! fingerprint even by size and timing inside the sealed link); the public remote echoes it.
//! Either end gives up after [`DEAD`] without a beat or an echo (its caller then drops the
//! session, which fails every stream on it and frees the agent's name). The beat shares the link
//! with bulk data, so `DEAD` leaves room for a busy link on a loaded machine.

use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::mux::{MuxStream, Opener};

/// Shortest and longest pause between two beats, in milliseconds.
const EVERY_MS: std::ops::RangeInclusive<u64> = 1_000..=3_000;
/// Silence after which a session is dead.
const DEAD: Duration = Duration::from_secs(12);

/// Agent side: opens the heartbeat stream and beats until the echo stops.
pub async fn beat(opener: &Opener) {
    let Ok(mut beat) = opener.open().await else { return };
    let mut b = [0u8; 1];
    loop {
        if beat.write_all(&[1]).await.is_err() || beat.flush().await.is_err() {
            return;
        }
        match tokio::time::timeout(DEAD, beat.read_exact(&mut b)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let pause = rand::thread_rng().gen_range(EVERY_MS);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Public side: waits for the agent's first stream and echoes its beats until they stop.
pub async fn echo(first_stream: oneshot::Receiver<MuxStream>) {
    let Ok(Ok(mut beat)) = tokio::time::timeout(DEAD, first_stream).await else {
        return;
    };
    let mut b = [0u8; 1];
    while let Ok(Ok(_)) = tokio::time::timeout(DEAD, beat.read_exact(&mut b)).await {
        if beat.write_all(&b).await.is_err() || beat.flush().await.is_err() {
            return;
        }
    }
}
