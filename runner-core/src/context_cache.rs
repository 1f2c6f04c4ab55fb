//! A per-thread cache of `ContextVar::get`'s lookups in the thread's current context.
//!
//! A lookup through the current context costs a thread-local with a destructor (checked on each
//! access), a `RefCell` borrow, a search and a virtual `type_id` call: about 17 times tokio's
//! `task_local!` (measured). A cached one costs a thread-local without a destructor, a compare and
//! the clone. Each slot remembers, for one variable, where its value is in the current context,
//! and the epoch it was looked up at. The epoch changes whenever the current context changes:
//! swapped (a task's poll begins or ends, `Context::run`), changed (`set`, `reset`) or dropped (the
//! thread exits). So a slot of the current epoch still points into the context that is current.

use std::cell::Cell;

/// Slots, indexed by variable id: a program reads a handful of variables in a hot loop.
const SLOTS: usize = 8;

#[derive(Clone, Copy)]
struct Slot {
    epoch: u64,
    var: u64,
    /// The variable's `T` inside the `Arc` the current context holds; null: the variable is not
    /// set there.
    value: *const (),
}

struct Cache {
    /// Starts at 1: a slot of epoch 0 is empty.
    epoch: Cell<u64>,
    /// A cached value is being cloned (user code): the current context must not change.
    cloning: Cell<usize>,
    slots: [Cell<Slot>; SLOTS],
}

const EMPTY: Slot = Slot {
    epoch: 0,
    var: 0,
    value: std::ptr::null(),
};

thread_local! {
    static CACHE: Cache = const {
        Cache {
            epoch: Cell::new(1),
            cloning: Cell::new(0),
            slots: [const { Cell::new(EMPTY) }; SLOTS],
        }
    };
}

/// The current context is being swapped or dropped: every cached lookup is stale.
#[inline]
pub(crate) fn invalidate() {
    let _ = CACHE.try_with(|c| c.epoch.set(c.epoch.get().wrapping_add(1)));
}

/// The current context is about to change (`set`, `reset`): invalidate, after checking that no
/// cached value is being cloned from it.
///
/// # Panics
/// When a `Clone` impl sets a context variable while `ContextVar::get` clones a value (the
/// change could drop the value being cloned).
pub(crate) fn before_change() {
    let cloning = CACHE.try_with(|c| c.cloning.get()).unwrap_or(0);
    if cloning > 0 {
        panic!(
            "a context variable was set or reset while ContextVar::get cloned a value: a Clone \
             impl of a context variable's value may not change the current context"
        );
    }
    invalidate();
}

/// The cached lookup of `var`: `Some(Some(v))`, `Some(None)` when the variable is known to be
/// unset, `None` when not cached.
#[inline]
pub(crate) fn get<T: Clone + 'static>(var: u64) -> Option<Option<T>> {
    CACHE
        .try_with(|cache| {
            let slot = cache.slots[var as usize % SLOTS].get();
            if slot.epoch != cache.epoch.get() || slot.var != var {
                return None;
            }
            if slot.value.is_null() {
                return Some(None);
            }
            let _cloning = CloningGuard::enter(cache);
            Some(Some(read::<T>(slot.value).clone()))
        })
        .ok()
        .flatten()
}

/// Remember that `var`'s value in the current context is at `value` (null: unset).
#[inline]
pub(crate) fn fill(var: u64, value: *const ()) {
    let _ = CACHE.try_with(|cache| {
        let slot = Slot {
            epoch: cache.epoch.get(),
            var,
            value,
        };
        cache.slots[var as usize % SLOTS].set(slot);
    });
}

/// The `T` a slot of the current epoch points at.
#[allow(unsafe_code)]
#[inline]
fn read<'a, T>(value: *const ()) -> &'a T {
    // SAFETY: `value` was stored by `fill` from a `&T` inside an `Arc` that the thread's current
    // context held, at the epoch the caller just found unchanged. The epoch changes before the
    // current context is swapped, changed or dropped (`invalidate`, `before_change`), so that
    // context, and the `Arc` in it, is still alive and unchanged. While the caller clones the
    // value, `CloningGuard` makes `set`/`reset` panic instead of changing it, so user code in
    // `T::clone` cannot drop it. A variable's id belongs to one `ContextVar<T>` and only `T`s are
    // stored under it, so the pointer is to a `T`. The reference does not outlive the clone.
    unsafe { &*value.cast::<T>() }
}

/// Counts a clone of a cached value in progress; undone on drop, even when the clone panics.
struct CloningGuard<'a>(&'a Cache);

impl<'a> CloningGuard<'a> {
    fn enter(cache: &'a Cache) -> Self {
        cache.cloning.set(cache.cloning.get() + 1);
        CloningGuard(cache)
    }
}

impl Drop for CloningGuard<'_> {
    fn drop(&mut self) {
        self.0.cloning.set(self.0.cloning.get() - 1);
    }
}
