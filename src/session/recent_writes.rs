//! Read-your-writes for replica reads (`read_your_writes_ms`): the slots a client wrote to
//! lately, so that its reads of those slots go to the master until the window passes and the
//! replicas have most likely caught up. A fixed handful of entries per client (no allocation;
//! the oldest is forgotten first), consulted only when the setting is on and reads may go to
//! replicas.
use crate::cluster::slot::Slot;
use std::time::{Duration, Instant};

const ENTRIES: usize = 8;

#[derive(Debug, Default)]
pub(super) struct RecentWrites {
    entries: [Option<(Slot, Instant)>; ENTRIES],
    next: usize,
}

impl RecentWrites {
    /// The client wrote to `slot` now.
    pub(super) fn note(&mut self, slot: Slot, now: Instant) {
        if let Some(e) = self.entries.iter_mut().flatten().find(|(s, _)| *s == slot) {
            e.1 = now;
            return;
        }
        self.entries[self.next] = Some((slot, now));
        self.next = (self.next + 1) % ENTRIES;
    }

    /// Whether the client wrote to `slot` less than `window` ago.
    pub(super) fn recent(&self, slot: Slot, window: Duration, now: Instant) -> bool {
        self.entries
            .iter()
            .flatten()
            .any(|(s, at)| *s == slot && now.saturating_duration_since(*at) < window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_pins_reads_of_its_slot_for_the_window() {
        let mut w = RecentWrites::default();
        let t0 = Instant::now();
        let win = Duration::from_millis(100);
        w.note(Slot(7), t0);
        assert!(w.recent(Slot(7), win, t0 + Duration::from_millis(50)));
        assert!(!w.recent(Slot(8), win, t0));
        assert!(!w.recent(Slot(7), win, t0 + Duration::from_millis(150)));
        // Only the last ENTRIES slots are remembered.
        for s in 100..100 + ENTRIES as u16 {
            w.note(Slot(s), t0);
        }
        assert!(!w.recent(Slot(7), win, t0));
        assert!(w.recent(Slot(100), win, t0));
    }
}
