//! A per-thread cache of `ContextVar::get`'s lookups in the thread's current context.
//!
//! A lookup through the current context costs a thread-local with a destructor (checked on each
//! access), a `RefCell` borrow, a search and a virtual `type_id` call: about 17 times tokio's
//! `task_local!` (measured). A cached one costs a thread-local without a destructor, a compare and
//! the clone. Each slot remembers, for one variable, where its value is in the current context.
//! Every slot is emptied whenever the current context changes: swapped (a task's poll begins or
//! ends, `Context::run`), changed (`set`, `reset`) or dropped (the thread exits). So a filled
//! slot points into the context that is current. (Slots could carry the epoch they were filled
//! at instead; emptying them costs a swap that used variables a few vector stores, and saves
//! every hit a load and a compare.)

use std::cell::Cell;

/// Slots, indexed by variable id: a program reads a handful of variables in a hot loop.
const SLOTS: usize = 8;

/// The variable of an empty slot: ids are numbered from 1, and 0 is the id of a variable that
/// has none yet, which must miss too.
const EMPTY: u64 = u64::MAX;

struct Cache {
    /// Each slot's variable (`EMPTY`: none), apart from the values so that emptying the slots
    /// is a few vector stores.
    vars: [Cell<u64>; SLOTS],
    /// Each slot's value: the variable's `T` inside the `Arc` the current context holds; null:
    /// the variable is not set there.
    values: [Cell<*const ()>; SLOTS],
    /// Some slot is filled: a swap with none filled has nothing to empty.
    filled: Cell<bool>,
    /// A cached value is being cloned (user code): the current context must not change. A flag
    /// set and cleared with constants, not a counter: a counter's increment and restore make each
    /// `get` wait for the last one's store (store-to-load forwarding, about 4 cycles, which was
    /// most of a hit's time). A `get` inside a clone takes the uncached path instead.
    cloning: Cell<bool>,
}

thread_local! {
    static CACHE: Cache = const {
        Cache {
            vars: [const { Cell::new(EMPTY) }; SLOTS],
            values: [const { Cell::new(std::ptr::null()) }; SLOTS],
            filled: Cell::new(false),
            cloning: Cell::new(false),
        }
    };
}

/// The current context is being swapped or dropped: every cached lookup is stale.
#[inline]
pub(crate) fn invalidate() {
    let _ = CACHE.try_with(|c| {
        if c.filled.replace(false) {
            for var in &c.vars {
                var.set(EMPTY);
            }
        }
    });
}

/// The current context is about to change (`set`, `reset`): invalidate, after checking that no
/// cached value is being cloned from it.
///
/// # Panics
/// When a `Clone` impl sets a context variable while `ContextVar::get` clones a value (the
/// change could drop the value being cloned).
pub(crate) fn before_change() {
    let cloning = CACHE.try_with(|c| c.cloning.get()).unwrap_or(false);
    if cloning {
        panic!(
            "a context variable was set or reset while ContextVar::get cloned a value: a Clone \
             impl of a context variable's value may not change the current context"
        );
    }
    invalidate();
}

/// The cached lookup of `var` (0: a variable with no id yet, never cached): `Some(Some(v))`,
/// `Some(None)` when the variable is known to be unset, `None` when not cached.
#[inline]
pub(crate) fn get<T: Clone + 'static>(var: u64) -> Option<Option<T>> {
    CACHE
        .try_with(|cache| {
            let i = var as usize % SLOTS;
            if cache.vars[i].get() != var || cache.cloning.get() {
                return None;
            }
            let value = cache.values[i].get();
            if value.is_null() {
                return Some(None);
            }
            Some(Some(clone_marked(cache, read::<T>(value))))
        })
        .ok()
        .flatten()
}

/// Run `clone`, the uncached path's clone of a value in the current context, marked as cloning:
/// a set or reset inside it is refused as on the cached path, with the same message. The mark
/// is put back as it was, so a clone inside another clone leaves the outer one marked.
pub(crate) fn marked<R>(clone: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = CACHE.try_with(|c| c.cloning.set(self.0));
        }
    }
    let _restore = Restore(CACHE.try_with(|c| c.cloning.replace(true)).unwrap_or(false));
    clone()
}

/// Remember that `var`'s value in the current context is at `value` (null: unset).
#[inline]
pub(crate) fn fill(var: u64, value: *const ()) {
    let _ = CACHE.try_with(|cache| {
        let i = var as usize % SLOTS;
        cache.vars[i].set(var);
        cache.values[i].set(value);
        cache.filled.set(true);
    });
}

/// The `T` a filled slot points at.
#[allow(unsafe_code)]
#[inline]
fn read<'a, T>(value: *const ()) -> &'a T {
    // SAFETY: `value` was stored by `fill` from a `&T` inside an `Arc` that the thread's current
    // context held, in a slot the caller just found filled. Every slot is emptied before the
    // current context is swapped, changed or dropped (`invalidate`, `before_change`), so that
    // context, and the `Arc` in it, is still alive and unchanged. While the caller clones the
    // value, `CloningGuard` makes `set`/`reset` panic instead of changing it, so user code in
    // `T::clone` cannot drop it. A variable's id belongs to one `ContextVar<T>` and only `T`s are
    // stored under it, so the pointer is to a `T`. The reference does not outlive the clone.
    unsafe { &*value.cast::<T>() }
}

/// Clone `value` with the cache marked as cloning. `value` is a reference parameter of its own
/// so that the compiler knows the clone's reads do not touch the mark: when the clone runs no
/// code of its own (a `u64`'s), setting and clearing the mark cancel out and a hit stores
/// nothing. A clone that can run user code still sees the mark set.
#[inline(always)]
fn clone_marked<T: Clone>(cache: &Cache, value: &T) -> T {
    let _cloning = CloningGuard::enter(cache);
    value.clone()
}

/// Marks a clone of a cached value in progress (never two: a `get` inside a clone is not served
/// from the cache); cleared on drop, even when the clone panics.
struct CloningGuard<'a>(&'a Cache);

impl<'a> CloningGuard<'a> {
    fn enter(cache: &'a Cache) -> Self {
        cache.cloning.set(true);
        CloningGuard(cache)
    }
}

impl Drop for CloningGuard<'_> {
    fn drop(&mut self) {
        self.0.cloning.set(false);
    }
}
