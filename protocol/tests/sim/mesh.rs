//! The simulator's overlay: which nodes connect (the protocol's rule over live nodes),
//! and the starvation check.

use std::time::Duration;

use shoal_protocol::swarm::link_score;

use super::{Node, NodeSpec, Sim};

impl Sim<'_> {
    /// Ranks node `i`'s links to the live nodes, best first, keeping `mesh.dial`.
    pub(super) fn rank(&mut self, i: usize) {
        let me = self.nodes[i].id;
        let mut top: Vec<(u64, usize)> = (0..self.nodes.len())
            .filter(|j| *j != i && self.nodes[*j].alive)
            .map(|j| (link_score(&me, &self.nodes[j].id), j))
            .collect();
        top.sort_unstable_by(|a, b| b.cmp(a));
        top.truncate(self.sc.mesh.dial);
        self.nodes[i].top = top;
    }

    /// Node `a` dials node `b`: they join each other if both have room.
    pub(super) fn connect(&mut self, a: usize, b: usize, now: Duration, touched: &mut Vec<usize>) {
        let room = |n: &Node| self.sc.mesh.has_room(n.links.len());
        if a == b
            || self.nodes[a].links.contains(&b)
            || !self.nodes[b].alive
            || !room(&self.nodes[a])
            || !room(&self.nodes[b])
        {
            return;
        }
        self.nodes[a].links.insert(b);
        self.nodes[b].links.insert(a);
        let (ia, ib) = (self.nodes[a].id, self.nodes[b].id);
        if let Some(s) = self.nodes[a].swarm.as_mut() {
            s.handle_joined(ib, now);
        }
        if let Some(s) = self.nodes[b].swarm.as_mut() {
            s.handle_joined(ia, now);
        }
        touched.extend([a, b]);
    }

    /// Fails the run if a node went too long without piece data while a neighbour held
    /// a piece it lacked.
    pub(super) fn check_starvation(&mut self) -> Result<(), String> {
        let now = self.now;
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            let hostile = |s: &NodeSpec| s.lying || s.stingy || s.flapping;
            if !n.alive || n.finished.is_some() || hostile(&n.spec) {
                self.nodes[i].wanting_since = None;
                continue;
            }
            let wants = n.links.iter().any(|&j| {
                let other = &self.nodes[j];
                !hostile(&other.spec)
                    && other
                        .held
                        .iter()
                        .zip(&n.held)
                        .any(|(theirs, ours)| *theirs && !ours)
            });
            if !wants {
                self.nodes[i].wanting_since = None;
                continue;
            }
            let since = *self.nodes[i].wanting_since.get_or_insert(now);
            let waited = now - since;
            self.longest_starved = self.longest_starved.max(waited);
            if waited > self.sc.starve_bound {
                let me = self.nodes[i].id;
                let views: Vec<String> = self.nodes[i]
                    .links
                    .iter()
                    .map(|&j| {
                        let mine = self.nodes[i]
                            .swarm
                            .as_ref()
                            .and_then(|s| s.peer_status(&self.nodes[j].id));
                        let theirs = self.nodes[j]
                            .swarm
                            .as_ref()
                            .and_then(|s| s.peer_status(&me));
                        format!("\n  {j}: ours {mine:?}\n      theirs {theirs:?}")
                    })
                    .collect();
                if std::env::var_os("SHOAL_SIM_TRACE").is_some() {
                    eprintln!("{}", views.concat());
                }
                return Err(format!(
                    "node {i} starved: no piece data for {waited:?} while a neighbour held \
                     what it lacks"
                ));
            }
        }
        Ok(())
    }
}
