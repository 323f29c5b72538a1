//! Origin fetches: one HTTP range request per piece the core assigns to the origin, on
//! its own task; the outcome goes back to the node as an input, and a failure is kept
//! for the status and `Transfer::origin_trouble`.

use std::time::Instant;

use shoal_protocol::wire::PieceNumber;

use super::Node;
use crate::transfer::NodeInput;

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
        self.tasks.spawn(async move {
            let data = match origin.range(&path, offset, len).await {
                Ok(d) => {
                    tracing::debug!(piece = piece.0, "origin fetch done");
                    Some(d)
                }
                Err(e) => {
                    tracing::warn!(piece = piece.0, error = %e.message, note = %e.note, "origin fetch failed");
                    health
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .trouble = Some(crate::transfer::OriginTrouble {
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
}
