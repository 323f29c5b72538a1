//! Rate meters for our own links: the uplink, measured while uploads wait to go out,
//! and the downlink, measured while our requests are outstanding. An idle link says
//! nothing about its capacity, so only busy time counts.

use std::time::Duration;

/// A link's rate, measured over the periods it was busy.
#[derive(Debug, Default)]
pub(super) struct Meter {
    busy_from: Option<Duration>,
    busy: Duration,
    bytes: u64,
    rate: Option<f64>,
    peak: Option<f64>,
}

impl Meter {
    /// The link has work from `now` (if it did not already).
    pub(super) fn busy(&mut self, now: Duration) {
        self.busy_from.get_or_insert(now);
    }

    /// A block of `bytes` went through at `now`; `still_busy` if more wait.
    pub(super) fn done(&mut self, bytes: u64, still_busy: bool, now: Duration) {
        let Some(from) = self.busy_from else {
            return;
        };
        self.bytes += bytes;
        let mut busy = self.busy + now.saturating_sub(from);
        if still_busy {
            self.busy_from = Some(now);
        } else {
            self.busy_from = None;
        }
        if busy >= Duration::from_millis(500) {
            let sample = self.bytes as f64 / busy.as_secs_f64();
            self.rate = Some(self.rate.map_or(sample, |r| (r + sample) / 2.0));
            self.peak = Some(self.peak.map_or(sample, |p| p.max(sample)));
            self.bytes = 0;
            busy = Duration::ZERO;
        }
        self.busy = busy;
    }

    /// The link has no work any more (what was waited for will not come).
    pub(super) fn idle(&mut self) {
        self.busy_from = None;
    }

    /// Bytes per second, once measured.
    pub(super) fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// The best rate measured (over at least half a second): what the link can do, not
    /// what its slowest senders gave it lately.
    pub(super) fn peak(&self) -> Option<f64> {
        self.peak
    }
}
