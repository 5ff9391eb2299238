//! UDP through agents: the datagrams of one association (either UDP transport) that
//! `remote.routes` sends `via: NAME` travel to that agent on a leg of their own, a UDP-over-TCP
//! tunnel on a stream of the agent's session that this public remote opens with the agent's
//! key (the agent serves it as [`Party::PublicRemote`](crate::shared::Party)), and the agent
//! sends them on from inside its network.
//!
//! ```text
//! association (udp/tcp.rs or udp/packet.rs)
//!   └─ Nat::forward → route via NAME → AgentLegs::send ─queue─▶ leg task ══mux stream══▶ agent
//!   ◀──────────────── AgentLegs::recv ◀─answers queue── leg task ◀═══ frames from the agent
//! ```
//!
//! A leg opens on the first datagram for its agent and ends with the association (its queue's
//! sender is dropped: the leg sends its end of stream, so the agent closes its sockets at once).
//! Like the association itself it never waits on its peer in both directions at once: the leg
//! writes from a bounded queue and reads into another, and a full queue drops datagrams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use warren_common::crypto::Key;
use warren_common::proto::address::Address;
use warren_common::proto::header::{Command, RequestHeader};
use warren_common::proto::status::Status;
use warren_common::proto::udp::DatagramFrame;
use warren_common::proto::{decode_prefix, DecodeError};
use warren_common::time::unix_now;
use warren_common::tunnel::PendingTunnel;

use super::mux::Opener;
use crate::shared::Shared;

/// Datagrams queued towards one agent, and answers queued from all of an association's legs,
/// before new ones are dropped.
const QUEUE: usize = 128;

/// UDP legs this remote keeps open at once, over all agents and associations. Each is a stream
/// of an agent's session, which carries at most 1024 (agent/mux.rs): without a cap, one client
/// opening many associations could take every stream and fail the CONNECTs routed to the
/// agent. A datagram that would open a leg past the cap is dropped (logged).
const MAX_LEGS: usize = 256;

/// One association's legs to agents, by agent name, and the answers they bring back.
pub struct AgentLegs {
    legs: HashMap<String, mpsc::Sender<Vec<u8>>>,
    answers_tx: mpsc::Sender<DatagramFrame>,
    answers: mpsc::Receiver<DatagramFrame>,
}

impl Default for AgentLegs {
    fn default() -> Self {
        let (answers_tx, answers) = mpsc::channel(QUEUE);
        AgentLegs {
            legs: HashMap::new(),
            answers_tx,
            answers,
        }
    }
}

impl AgentLegs {
    /// Queues one datagram for `target` to the agent `name`, opening the leg if needed; false
    /// if it was dropped (no such agent connected, the leg's queue full, or too large).
    pub fn send(&mut self, name: &str, target: &Address, data: &[u8], shared: &Shared) -> bool {
        let mut frame = Vec::with_capacity(data.len() + 32);
        if DatagramFrame::encode_parts(target, data, &mut frame).is_none() {
            return false;
        }
        if let Some(leg) = self.legs.get(name).filter(|leg| !leg.is_closed()) {
            return leg.try_send(frame).is_ok();
        }
        let (Some(opener), Some(agent_key)) = (
            shared.agents.get(name),
            shared
                .config()
                .agents
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.key.clone()),
        ) else {
            tracing::debug!(agent = %name, %target, "UDP datagram routed via an agent that is not connected: dropped");
            return false;
        };
        let Some(slot) = LegSlot::take(&shared.udp_legs) else {
            tracing::warn!(agent = %name, %target, "UDP legs to agents at their cap ({MAX_LEGS}): datagram dropped");
            return false;
        };
        let (leg, outbound) = mpsc::channel(QUEUE);
        let sent = leg.try_send(frame).is_ok();
        let connect = shared.config().timeouts.connect;
        let answers = self.answers_tx.clone();
        tokio::spawn(async move {
            run_leg(opener, agent_key, outbound, answers, connect).await;
            drop(slot);
        });
        self.legs.insert(name.to_string(), leg);
        sent
    }

    /// The next answer any leg brought back: a datagram and the address it came from. Never
    /// ready while no leg is open.
    pub async fn recv(&mut self) -> DatagramFrame {
        if self.legs.is_empty() {
            return std::future::pending().await;
        }
        match self.answers.recv().await {
            Some(frame) => frame,
            // Unreachable while `self` holds a sender; wait rather than spin.
            None => std::future::pending().await,
        }
    }
}

/// One open leg counted against [`MAX_LEGS`]; freed when dropped.
struct LegSlot(Arc<AtomicUsize>);

impl LegSlot {
    fn take(open: &Arc<AtomicUsize>) -> Option<LegSlot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_LEGS).then_some(n + 1))
            .ok()
            .map(|_| LegSlot(open.clone()))
    }
}

impl Drop for LegSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One leg: opens the UDP-over-TCP tunnel to the agent, then writes queued frames and reads the
/// agent's frames until the association drops its queue or the tunnel ends.
async fn run_leg(
    opener: Opener,
    key: Key,
    mut outbound: mpsc::Receiver<Vec<u8>>,
    answers: mpsc::Sender<DatagramFrame>,
    connect: std::time::Duration,
) {
    let open = async {
        let stream = opener.open().await.map_err(|e| e.to_string())?;
        let header = RequestHeader::new(Command::UdpOverTcp, Address::UNSPECIFIED, unix_now());
        let pending = PendingTunnel::send_request(stream, &key, &header, &[])
            .await
            .map_err(|e| e.to_string())?;
        pending.read_response().await.map_err(|e| e.to_string())
    };
    let tunnel = match tokio::time::timeout(connect, open).await {
        Ok(Ok((response, tunnel))) if response.status == Status::Succeeded => tunnel,
        Ok(Ok((response, _))) => {
            tracing::info!("the agent refused a UDP leg: {}", response.status.describe());
            return;
        }
        Ok(Err(e)) => {
            tracing::info!("cannot open a UDP leg to the agent: {e}");
            return;
        }
        Err(_) => {
            tracing::info!("cannot open a UDP leg to the agent: no answer before connect_timeout");
            return;
        }
    };
    let (mut reader, mut writer) = tokio::io::split(tunnel);
    let writing = async {
        while let Some(frame) = outbound.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
            if outbound.is_empty() && writer.flush().await.is_err() {
                return;
            }
        }
        // The association ended: so does the agent's.
        let _ = writer.shutdown().await;
    };
    let reading = async {
        let mut inbound = BytesMut::with_capacity(65536);
        loop {
            loop {
                match decode_prefix::<DatagramFrame>(&inbound) {
                    Ok((frame, used)) => {
                        inbound.advance(used);
                        // Full: the association is behind; UDP may drop, never wait.
                        let _ = answers.try_send(frame);
                    }
                    Err(DecodeError::Incomplete) => break,
                    Err(_) => return,
                }
            }
            match reader.read_buf(&mut inbound).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = writing => {}
        () = reading => {}
    }
}
