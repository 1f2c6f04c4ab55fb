//! A list of handles to things that end on their own (tasks, generators), pruned of the ended
//! ones as it grows. Close needs to reach what is still alive; nothing tells the list when an
//! entry ends (a task may end on another thread), so it is swept instead.
//!
//! A sweep visits the whole list, and the next one waits until the list has grown to twice what
//! the sweep left (and at least [`SWEEP_AT_LEAST`]), so a push costs O(1) amortised however many
//! entries stay alive. (Sweeping whenever the length reached a power of two cost a whole sweep
//! per push with 2^k−1 entries alive and one ending per push: 448 µs a pool spawn at 65,535.)

/// The smallest length at which a sweep is worth it.
const SWEEP_AT_LEAST: usize = 64;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Pruned<T> {
    items: Vec<T>,
    sweep_at: usize,
}

impl<T> Default for Pruned<T> {
    fn default() -> Self {
        Pruned::new()
    }
}

impl<T> Pruned<T> {
    pub(crate) const fn new() -> Self {
        Pruned {
            items: Vec::new(),
            sweep_at: SWEEP_AT_LEAST,
        }
    }

    /// Add `item`, first sweeping out the entries `alive` says have ended, if the list is due.
    pub(crate) fn push(&mut self, item: T, alive: impl FnMut(&T) -> bool) {
        if self.items.len() >= self.sweep_at {
            self.sweep(alive);
        }
        self.items.push(item);
    }

    /// Drop the entries that have ended now.
    pub(crate) fn sweep(&mut self, alive: impl FnMut(&T) -> bool) {
        self.items.retain(alive);
        self.sweep_at = (self.items.len() * 2).max(SWEEP_AT_LEAST);
    }

    /// Every entry, ended or not.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    /// Take every entry out, leaving the list empty.
    pub(crate) fn take(&mut self) -> Vec<T> {
        self.sweep_at = SWEEP_AT_LEAST;
        std::mem::take(&mut self.items)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Entries visited per push, with `alive` entries kept alive and every other push ending at
    /// once (the pool's spawn-and-join with 2^k−1 tasks pending).
    fn visits_per_push(alive: usize, pushes: usize) -> f64 {
        let visits = Cell::new(0usize);
        let mut list = Pruned::new();
        for i in 0..alive {
            list.push((i, true), |e: &(usize, bool)| {
                visits.set(visits.get() + 1);
                e.1
            });
        }
        visits.set(0);
        for i in 0..pushes {
            list.push((i, false), |e: &(usize, bool)| {
                visits.set(visits.get() + 1);
                e.1
            });
        }
        visits.get() as f64 / pushes as f64
    }

    /// Issue 23, item 7: the cost of a push stays flat whatever number of entries stays alive,
    /// including at 2^k−1, 2^k and 2^k+1.
    #[test]
    fn a_push_visits_a_bounded_number_of_entries_at_any_size() {
        for k in [6, 10, 16] {
            for alive in [(1 << k) - 1, 1 << k, (1 << k) + 1] {
                let per_push = visits_per_push(alive, 4 * alive);
                assert!(
                    per_push <= 3.0,
                    "{alive} alive: {per_push:.2} entries visited per push"
                );
            }
        }
    }

    #[test]
    fn a_sweep_keeps_exactly_the_live_entries_in_order() {
        let mut list = Pruned::new();
        for i in 0..200u32 {
            list.push(i, |e| e % 3 != 0);
        }
        list.sweep(|e| e % 3 != 0);
        let kept: Vec<u32> = list.iter().copied().collect();
        assert_eq!(kept, (0..200).filter(|e| e % 3 != 0).collect::<Vec<_>>());
        assert_eq!(list.take().len(), kept.len());
        assert!(list.is_empty());
    }
}
