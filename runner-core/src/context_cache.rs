//! A per-thread cache of `ContextVar::get`'s lookups in the thread's current context.
//!
//! A lookup through the current context costs a thread-local with a destructor (checked on each
//! access), a `RefCell` borrow, a search and a virtual `type_id` call: about 17 times tokio's
//! `task_local!` (measured). A cached one costs a thread-local without a destructor, a compare and
//! the clone. Each slot remembers, for one variable, where its value is in the current context.
//! Every slot is emptied whenever the current context changes: swapped (a task's poll begins or
//! ends, `Context::run`), changed (`set`, `reset`, a generator's answer adopted) or dropped (the
//! thread exits). So a filled slot points into the context that is current. (Emptying the slots
//! costs a swap that used variables a few vector stores; an epoch per slot would cost every hit a
//! load and a compare instead.)
//!
//! # Why a cached pointer is safe to clone through
//!
//! `get` clones the value behind a slot's pointer, or behind a pointer taken from the current
//! context under a borrow that is released before the clone (user code in `T::clone` may read,
//! enter or swap contexts). Either way the value lives in an `Arc` held by the thread's current
//! context, and the clone runs user code, so every way that code could free the value must be
//! closed while the clone runs (`cloning` is set). These are all the ways the current context
//! (`context::Current`, its one owner) changes:
//!
//! - `Current::change`: `ContextVar::set`, `ContextVar::reset` and `Context::take_back` (a
//!   generator's answer from another thread, with the body's changes). These replace values, so
//!   they call [`before_change`], which panics while a clone is in progress: the change never
//!   starts. Before any other change it empties the slots.
//! - `Current::swap`: `Context::run`, a task's poll (`Context::enter`) and the guards that undo
//!   them. A swap moves the current context into the caller's `&mut Context`, which outlives the
//!   swap's guard, so no value is dropped: the value being cloned stays alive and in place (a
//!   context's values are behind `Arc`s, which moving a context does not move). A swap empties
//!   the slots ([`invalidate`]), so no slot outlives its context being current.
//! - `Context::lend` only gives the current context an identity: no value changes.
//! - The thread exits (`Current`'s destructor): that cannot run while code on the thread is
//!   inside a clone, since a thread's destructors run after its code returned, one at a time.
//!   It empties the slots first.
//!
//! A variable's id belongs to one `ContextVar<T>` and only `T`s are stored under it, so the
//! pointer is to a `T`.

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

/// The current context's values are about to change (`set`, `reset`, a generator's answer
/// adopted): invalidate, after checking that no value of the current context is being cloned
/// (see the module documentation).
///
/// # Panics
/// When a `Clone` impl changes the current context's values while `ContextVar::get` clones a
/// value (the change could drop the value being cloned).
pub(crate) fn before_change() {
    refuse_while_cloning();
    invalidate();
}

/// Panic if `ContextVar::get` is cloning a value of the current context on this thread: a change
/// now could drop it. Called before a change starts, so that a refused change leaves nothing
/// half done.
pub(crate) fn refuse_while_cloning() {
    let cloning = CACHE.try_with(|c| c.cloning.get()).unwrap_or(false);
    if cloning {
        panic!(
            "the current context was changed (a variable set or reset, or a generator's item \
             taken from another thread) while ContextVar::get cloned a value: a Clone impl of a \
             context variable's value may not change the current context"
        );
    }
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

/// Clone the `T` at `value`, the uncached path's value in the current context (found under a
/// borrow that is released before this call, so that the clone may enter or swap contexts),
/// marked as cloning: a change of the current context's values inside the clone is refused as
/// on the cached path. The mark is put back as it was, so a clone inside another clone leaves the
/// outer one marked.
pub(crate) fn clone_uncached<T: Clone>(value: *const ()) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = CACHE.try_with(|c| c.cloning.set(self.0));
        }
    }
    let _restore = Restore(CACHE.try_with(|c| c.cloning.replace(true)).unwrap_or(false));
    read::<T>(value).clone()
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

/// The `T` at `value`: a filled slot's pointer, or the uncached path's.
#[allow(unsafe_code)]
#[inline]
fn read<'a, T>(value: *const ()) -> &'a T {
    // SAFETY: `value` points to a `T` inside an `Arc` that the thread's current context holds:
    // stored by `fill` in a slot the caller just found filled (every slot is emptied before the
    // current context is swapped, changed or dropped), or taken from the current context by the
    // uncached path just before. The caller clones it with `cloning` set, and while that mark is
    // set nothing can drop the value (the module documentation goes through every way the
    // current context changes). The reference does not outlive the clone.
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
