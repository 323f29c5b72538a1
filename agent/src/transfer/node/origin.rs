//! Origin fetches: one HTTP range request per piece the core assigns to the origin, on
//! its own task; the outcome goes back to the node as an input, and a failure is kept
//! for the status and `Transfer::origin_trouble`.

use std::sync::Mutex;
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
        lock(&health).in_flight += 1;
        self.tasks.spawn(async move {
            let data = match origin.range(&path, offset, len).await {
                Ok(d) => {
                    tracing::debug!(piece = piece.0, "origin fetch done");
                    // Activity once it verifies (bytes that do not are trouble).
                    let mut h = lock(&health);
                    h.in_flight = h.in_flight.saturating_sub(1);
                    Some(d)
                }
                Err(e) => {
                    tracing::warn!(piece = piece.0, error = %e.message, note = %e.note, "origin fetch failed");
                    let mut h = lock(&health);
                    h.in_flight = h.in_flight.saturating_sub(1);
                    h.trouble = Some(OriginTrouble {
                        at: Instant::now(),
                        message: e.message,
                        note: e.note,
                    });
                    None
                }
            };
            let _ = tx.send(NodeInput::Origin { piece, data }).await;
        });
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

fn lock(h: &Mutex<OriginHealth>) -> std::sync::MutexGuard<'_, OriginHealth> {
    h.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
