//! The tasks on a loop: what close cancels (the cancellable ones) and then tears down (all).

use std::task::Waker;

use crate::header::{TaskRef, FINISHED};

/// Where a task is in its loop's registry.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Slot {
    /// Registered at spawn, at this index.
    At(usize),
    /// Spawned from another thread: registers on its first poll, on the loop thread.
    OnFirstPoll,
    /// Not the loop's to cancel: the main task and blocking jobs.
    Never,
}

/// A slab whose free slots link to each other: spawn and finish are O(1) and allocate nothing
/// beyond the slots themselves.
#[derive(Default)]
pub(crate) struct Registry {
    slots: Vec<Entry>,
    /// The first free slot; `slots.len()` when there is none.
    free: usize,
}

enum Entry {
    /// A task, and whether close cancels it (finalizers are waited for, never cancelled).
    Task(TaskRef, bool),
    /// Free; the index of the next free slot.
    Free(usize),
}

impl Registry {
    /// The slot the next `insert` uses.
    pub(crate) fn next_index(&self) -> usize {
        self.free
    }

    /// Add a task; its slot.
    pub(crate) fn insert(&mut self, task: TaskRef, cancellable: bool) -> usize {
        let entry = Entry::Task(task, cancellable);
        match self.slots.get(self.free) {
            Some(&Entry::Free(next)) => {
                let index = std::mem::replace(&mut self.free, next);
                self.slots[index] = entry;
                index
            }
            _ => {
                self.slots.push(entry);
                self.free = self.slots.len();
                self.slots.len() - 1
            }
        }
    }

    pub(crate) fn remove(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index) {
            if let Entry::Task(..) = slot {
                *slot = Entry::Free(self.free);
                self.free = index;
            }
        }
    }

    fn tasks(&self) -> impl Iterator<Item = (&TaskRef, bool)> {
        self.slots.iter().filter_map(|entry| match entry {
            Entry::Task(task, cancellable) => Some((task, *cancellable)),
            Entry::Free(_) => None,
        })
    }

    /// The wakers of every unfinished task, to reach the ones that wait on something.
    pub(crate) fn wakers(&self) -> Vec<Waker> {
        self.unfinished().map(|(t, _)| t.waker().clone()).collect()
    }

    /// True once every task's future has been dropped (finished or torn down).
    pub(crate) fn all_finished(&self) -> bool {
        self.tasks().all(|(t, _)| t.header().has(FINISHED))
    }

    fn unfinished(&self) -> impl Iterator<Item = (&TaskRef, bool)> {
        self.tasks().filter(|(t, _)| !t.header().has(FINISHED))
    }

    /// True if some task close must cancel has not finished (without collecting them).
    pub(crate) fn has_pending(&self) -> bool {
        self.unfinished().any(|(_, cancellable)| cancellable)
    }

    /// The unfinished tasks close must cancel.
    pub(crate) fn pending(&self) -> Vec<TaskRef> {
        self.unfinished()
            .filter(|(_, cancellable)| *cancellable)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Every unfinished task, finalizers included.
    pub(crate) fn unfinished_refs(&self) -> Vec<TaskRef> {
        self.unfinished().map(|(t, _)| t.clone()).collect()
    }

    /// The number of tasks registered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.tasks().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Executor;
    use crate::header::{Header, OwnedHeader};

    fn task() -> TaskRef {
        let owner = Executor::new().inbox().owner();
        OwnedHeader::new(Header::new(None, std::panic::Location::caller(), owner)).task_ref()
    }

    #[test]
    fn freed_slots_are_reused_last_freed_first() {
        let mut registry = Registry::default();
        let slots: Vec<usize> = (0..4).map(|_| registry.insert(task(), true)).collect();
        assert_eq!(slots, [0, 1, 2, 3]);
        registry.remove(1);
        registry.remove(3);
        assert_eq!(registry.len(), 2);
        assert_eq!(
            registry.insert(task(), true),
            3,
            "the last freed slot first"
        );
        assert_eq!(
            registry.insert(task(), true),
            1,
            "then the one freed before it"
        );
        assert_eq!(registry.insert(task(), true), 4, "then a new slot");
        assert_eq!(registry.len(), 5);
    }

    #[test]
    fn removing_twice_or_out_of_range_changes_nothing() {
        let mut registry = Registry::default();
        let a = registry.insert(task(), true);
        registry.remove(a);
        registry.remove(a);
        registry.remove(99);
        assert_eq!(registry.insert(task(), true), a);
        assert_eq!(registry.insert(task(), true), 1);
    }

    #[test]
    fn pending_leaves_out_finished_and_uncancellable_tasks() {
        let mut registry = Registry::default();
        let (done, finalizer, open) = (task(), task(), task());
        registry.insert(done.clone(), true);
        registry.insert(finalizer.clone(), false);
        registry.insert(open.clone(), true);
        done.header().finish();
        let pending: Vec<u64> = registry.pending().iter().map(|t| t.info().id()).collect();
        assert_eq!(pending, [open.info().id()]);
        assert!(registry.has_pending());
        assert_eq!(registry.unfinished_refs().len(), 2);
        assert!(!registry.all_finished());
        finalizer.header().finish();
        open.header().finish();
        assert!(registry.all_finished() && !registry.has_pending());
    }
}
