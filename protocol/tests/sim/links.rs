//! The simulator's link model (see the module docs of `sim`): a block is serialised on
//! its sender's uplink, travels for the latency, then takes the receiver's downlink in
//! arrival order; other messages wait only behind their own connection.

use std::time::Duration;

use shoal_protocol::wire::{Message, PeerId};

use super::{Ev, Sim};

/// Reserves `took` of a downlink for a message arriving at `arrive`: the first idle
/// stretch long enough at or after it. Messages take the downlink in the order they
/// arrive, not the order they were sent: a block still on a slow sender's uplink does
/// not hold up one that a fast sender sends later. Returns when the message is in.
pub(super) fn reserve(
    down: &mut Vec<(Duration, Duration)>,
    now: Duration,
    arrive: Duration,
    took: Duration,
) -> Duration {
    down.retain(|(_, end)| *end > now);
    let mut start = arrive;
    let mut at = down.len();
    for (i, (s, e)) in down.iter().enumerate() {
        if *e <= start {
            continue;
        }
        if *s >= start + took {
            at = i;
            break;
        }
        start = *e;
    }
    let end = start + took;
    // Touching stretches merge, which keeps the list short.
    if at > 0 && down[at - 1].1 == start {
        down[at - 1].1 = end;
        if at < down.len() && down[at].0 == end {
            down[at - 1].1 = down[at].1;
            down.remove(at);
        }
    } else if at < down.len() && down[at].0 == end {
        down[at].0 = start;
    } else {
        down.insert(at, (start, end));
    }
    end
}

pub(super) fn bits_time(bytes: usize, bps: f64) -> Duration {
    Duration::from_secs_f64(bytes as f64 * 8.0 / bps)
}

impl Sim<'_> {
    /// Sends `msg` from node `from` to the node with id `to` over the model's links.
    pub(super) fn transmit(&mut self, from: usize, to: PeerId, msg: Message) {
        let Some(to) = self.index_of(to) else { return };
        let spec = &self.nodes[from].spec;
        if spec.stingy && matches!(msg, Message::Unchoke { .. }) {
            return;
        }
        if spec.flapping && matches!(msg, Message::Piece { .. }) {
            let to = self.nodes[to].id;
            self.transmit(from, to, Message::Choke);
            self.transmit(from, to, Message::Unchoke { max_requests: 32 });
            return;
        }
        let size = msg.to_frame().len();
        let now = self.now;
        let mut delay = self.sc.latency;
        if self.sc.loss > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < self.sc.loss {
            delay += self.sc.rto;
        }
        let conn = self.conns.get(&(from, to)).copied().unwrap_or_default();
        let at = if matches!(msg, Message::Piece { .. }) {
            let sender = &mut self.nodes[from];
            let start = sender.up_free.max(now);
            sender.up_free = start + bits_time(size, sender.spec.up_bps);
            let arrive = sender.up_free + delay;
            let receiver = &mut self.nodes[to];
            let took = bits_time(size, receiver.spec.down_bps);
            reserve(&mut receiver.down, now, arrive, took)
        } else {
            // A control message is a few bytes: it does not wait behind other
            // connections' data (the kernel interleaves sockets, a switch small packets).
            now + delay
        };
        // Nor does it overtake what its own connection carries before it (TCP).
        let at = at.max(conn);
        self.conns.insert((from, to), at);
        self.push(at, Ev::Deliver { to, from, msg });
    }
}
