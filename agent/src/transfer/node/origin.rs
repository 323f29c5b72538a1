//! Origin fetches: one HTTP range request per piece the core assigns to the origin, on
//! its own task; the outcome goes back to the node as an input, and a failure is kept
//! (with when bytes last arrived from anywhere) for the status and
//! `Transfer::origin_trouble`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use shoal_protocol::wire::PieceNumber;

use super::Node;
use crate::transfer::{NodeInput, OriginHealth, OriginTrouble};

impl Node {
    pub(super) fn fetch_origin(&mut self, piece: PieceNumber) {
        let release = &self.p.release;
        let p = piece.0 as usize;
        let (Some(loc), Some(spec)) = (release.locations.get(p), release.pieces.get(p)) else {
            return;
        };
        let path = shoal_protocol::layout::artifact(&release.artifacts()[loc.artifact]);
        let (origin, tx) = (self.p.origin.clone(), self.p.inputs_tx.clone());
        let health = self.p.origin_health.clone();
        let (offset, len) = (loc.offset, u64::from(spec.length));
        tracing::debug!(piece = piece.0, len, "origin fetch started");
        self.p.report.on_origin_fetch();
        let counted = InFlight::new(health.clone());
        self.origin_serial += 1;
        let serial = self.origin_serial;
        let task = self.tasks.spawn(async move {
            let data = match origin.range(&path, offset, len).await {
                // Activity once it verifies (bytes that do not are trouble).
                Ok(d) => {
                    tracing::debug!(piece = piece.0, "origin fetch done");
                    Some(d)
                }
                Err(e) => {
                    tracing::warn!(piece = piece.0, error = %e.message, note = %e.note, "origin fetch failed");
                    lock(&health).trouble = Some(OriginTrouble {
                        at: Instant::now(),
                        message: e.message,
                        note: e.note,
                    });
                    None
                }
            };
            let _ = tx.send(NodeInput::Origin {
                piece,
                data,
                serial,
            })
            .await;
            // Under way until the node has it.
            drop(counted);
        });
        if let Some((_, old)) = self.origin_tasks.insert(piece.0, (serial, task)) {
            old.abort();
        }
    }

    /// Bytes arrived (a block we asked for, a verified piece): the transfer is not
    /// stalled (see `Transfer::origin_trouble`).
    pub(super) fn note_activity(&self) {
        lock(&self.p.origin_health).last_activity = Some(Instant::now());
    }

    /// The core gave up on the origin fetch of `piece` (it failed, or took longer than
    /// the origin timeout): a fetch still running is stopped, and its time-out is
    /// trouble like any failure.
    pub(super) fn origin_gave_up(&mut self, piece: PieceNumber) {
        if let Some((_, task)) = self.origin_tasks.remove(&piece.0)
            && !task.is_finished()
        {
            task.abort();
            let path = self
                .p
                .release
                .locations
                .get(piece.0 as usize)
                .map(|loc| {
                    shoal_protocol::layout::artifact(&self.p.release.artifacts()[loc.artifact])
                })
                .unwrap_or_default();
            lock(&self.p.origin_health).trouble = Some(OriginTrouble {
                at: Instant::now(),
                message: format!("{path}: the origin did not send piece {} in time", piece.0),
                note: "the origin (or the path to it) is too slow or hangs: check it; the \
                       LAN can still provide the piece"
                    .into(),
            });
        }
    }

    /// The origin's bytes for `piece` did not match the signed index: that is trouble
    /// too (a file replaced or cut short on the origin), as the status will say.
    pub(super) fn origin_corrupt(&mut self, piece: PieceNumber) {
        let release = &self.p.release;
        let Some(loc) = release.locations.get(piece.0 as usize) else {
            return;
        };
        let path = shoal_protocol::layout::artifact(&release.artifacts()[loc.artifact]);
        lock(&self.p.origin_health).trouble = Some(OriginTrouble {
            at: Instant::now(),
            message: format!(
                "{path}: the origin's bytes for piece {} do not match the signed index",
                piece.0
            ),
            note: "the file on the origin is not the one the vendor signed (replaced, cut \
                   short, or a proxy in between changed it): tell the vendor"
                .into(),
        });
    }
}

/// One origin fetch counted as under way, for as long as it lives (also when its task
/// is aborted or panics).
struct InFlight(Arc<Mutex<OriginHealth>>);

impl InFlight {
    fn new(health: Arc<Mutex<OriginHealth>>) -> InFlight {
        lock(&health).in_flight += 1;
        InFlight(health)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut h = lock(&self.0);
        h.in_flight = h.in_flight.saturating_sub(1);
    }
}

fn lock(h: &Mutex<OriginHealth>) -> std::sync::MutexGuard<'_, OriginHealth> {
    h.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
