//! The session heartbeat: yamux 0.13 has no keep-alive, so the agent opens the session's first
//! stream and sends one byte each second; the public remote echoes it. Either end gives up
//! after 5 s of silence (its caller then drops the session, which fails every stream on it).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::mux::{MuxStream, Opener};

const EVERY: Duration = Duration::from_secs(1);
const DEAD: Duration = Duration::from_secs(5);

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
        tokio::time::sleep(EVERY).await;
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
