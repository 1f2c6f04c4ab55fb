//! Context variables (Python's `contextvars`): values that follow the logical flow of a program
//! into the tasks it spawns, the callbacks it schedules and the threads it hands work to.
//!
//! Every task has its own [`Context`]. A spawned task starts with a copy of its spawner's context,
//! so what it sets is invisible to its spawner and its siblings. Sync code outside any task uses
//! a per-thread context.
//!
//! ```
//! use runner_core::ContextVar;
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//!
//! runner_core::run(async {
//!     REQUEST_ID.set(7);
//!     let child = runner_core::spawn(async {
//!         let seen = REQUEST_ID.get();  // inherited from the spawner
//!         REQUEST_ID.set(8);            // changes only the child's copy
//!         seen
//!     });
//!     assert_eq!(child.await.unwrap(), Some(7));
//!     assert_eq!(REQUEST_ID.get(), Some(7));
//! })
//! .unwrap();
//! ```
//!
//! A context is a persistent map (see `context_map`): copying it, for every spawned task, is one
//! reference-count increment whatever the number of variables; a small context is a slice
//! scanned linearly, a large one a hash array mapped trie, so set and get stay cheap at any
//! scale.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::context_cache;
use crate::context_map::{ContextMap, Value};
use crate::error::{catch_quietly, ContextError};

thread_local! {
    /// The context of whatever runs on this thread now: a task's while it is polled,
    /// else the thread's own.
    static CURRENT: Current = const { Current(RefCell::new(Context::new())) };
}

/// The thread's current context, and the one way to reach and change it, so that
/// `ContextVar::get`'s cache (see `context_cache`) never outlives what it points into.
///
/// Once the thread has begun exiting and its context is being dropped, the thread-local can no
/// longer be reached: a destructor that reads a variable then sees no value set (the default), a
/// `set` changes nothing, and a new context is empty. Nothing panics there: a panic in a
/// thread-local's destructor aborts the process.
struct Current(RefCell<Context>);

impl Current {
    /// `f` with the thread's current context; `None` once the thread is exiting.
    #[inline]
    fn with<R>(f: impl FnOnce(&Current) -> R) -> Option<R> {
        CURRENT.try_with(f).ok()
    }

    fn borrow(&self) -> std::cell::Ref<'_, Context> {
        self.0.borrow()
    }

    /// Change the current context's values (`set`, `reset`, a generator's answer adopted).
    /// Refused while `ContextVar::get` clones one of them. The values `f` replaces are dropped
    /// after the borrow ends, so that their destructors may read and set variables.
    fn change<R>(&self, f: impl FnOnce(&mut Context) -> R) -> R {
        context_cache::before_change();
        let (result, _replaced) = {
            let mut ctx = self.0.borrow_mut();
            // Holds every value of the map as it was until the borrow has ended.
            let replaced = ctx.vars.clone();
            (f(&mut ctx), replaced)
        };
        result
    }

    /// Swap the current context with `other`: no value is dropped.
    fn swap(&self, other: &mut Context) {
        context_cache::invalidate();
        mem::swap(&mut *self.0.borrow_mut(), other);
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        context_cache::invalidate();
        // The values' destructors are user code: contain a panic, which would abort here.
        let ctx = mem::take(self.0.get_mut());
        catch_quietly(move || drop(ctx));
    }
}

/// Identities for variables and contexts; 0 means "not assigned yet".
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The context of a token whose `set` found no current context (the thread was exiting): no
/// context has it, so the token cannot reset anything.
const NO_CONTEXT: u64 = u64::MAX;

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A context variable: a key whose value depends on the [`Context`] it is read in.
///
/// `ContextVar::new` is `const`, so variables are usually `static`:
///
/// ```
/// use runner_core::ContextVar;
/// static USER: ContextVar<String> = ContextVar::with_default("user", || "anonymous".into());
/// assert_eq!(USER.get().as_deref(), Some("anonymous"));
/// let token = USER.set("ada".into());
/// assert_eq!(USER.get().as_deref(), Some("ada"));
/// USER.reset(token).unwrap();
/// assert_eq!(USER.get().as_deref(), Some("anonymous"));
/// ```
pub struct ContextVar<T: Send + Sync + 'static> {
    name: &'static str,
    default: Option<fn() -> T>,
    /// Assigned on first use: a `const fn` cannot take a number from a counter, and the
    /// variable's address is no identity because a non-static variable can move.
    id: AtomicU64,
    _value: PhantomData<fn() -> T>,
}

impl<T: Send + Sync + 'static> ContextVar<T> {
    /// A variable without a default: `get` gives `None` until it is set.
    pub const fn new(name: &'static str) -> Self {
        ContextVar {
            name,
            default: None,
            id: AtomicU64::new(0),
            _value: PhantomData,
        }
    }

    /// A variable whose value is `default()` in contexts where it was never set.
    pub const fn with_default(name: &'static str, default: fn() -> T) -> Self {
        ContextVar {
            name,
            default: Some(default),
            id: AtomicU64::new(0),
            _value: PhantomData,
        }
    }

    /// The name given at creation.
    pub fn name(&self) -> &'static str {
        self.name
    }

    #[inline]
    fn id(&self) -> u64 {
        let id = self.id.load(Ordering::Acquire);
        if id != 0 {
            return id;
        }
        match self
            .id
            .compare_exchange(0, next_id(), Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => self.id.load(Ordering::Acquire),
            Err(existing) => existing,
        }
    }

    /// The value in the current context, else the default, else `None`.
    #[inline]
    pub fn get(&self) -> Option<T>
    where
        T: Clone,
    {
        // A variable with no id yet reads as 0, which the cache never holds: no check here.
        let found = match context_cache::get::<T>(self.id.load(Ordering::Acquire)) {
            Some(found) => found,
            None => Self::lookup_and_cache(self.id()),
        };
        match found {
            Some(value) => Some(value),
            None => self.default.map(|make| make()),
        }
    }

    /// `get` when its cache has nothing for this variable: look it up and remember where it is.
    /// The value is cloned after the borrow of the context ends, as on the cached path.
    #[cold]
    #[inline(never)]
    fn lookup_and_cache(id: u64) -> Option<T>
    where
        T: Clone,
    {
        let at = Current::with(|c| {
            let ctx = c.borrow();
            let value = ctx.lookup(id).and_then(|v| v.downcast_ref::<T>());
            let at: *const () = value.map_or(std::ptr::null(), |v| (v as *const T).cast());
            context_cache::fill(id, at);
            at
        })?;
        match at.is_null() {
            true => None,
            false => Some(context_cache::clone_uncached::<T>(at)),
        }
    }

    /// Call `f` with a reference to the current value (or the default), for types that are not
    /// `Clone`. `f` may itself read and set context variables.
    ///
    /// ```
    /// use runner_core::ContextVar;
    /// struct Conn { host: String }            // not Clone
    /// static CONN: ContextVar<Conn> = ContextVar::new("conn");
    /// CONN.set(Conn { host: "db1".into() });
    /// assert_eq!(CONN.with(|c| c.map(|c| c.host.len())), Some(3));
    /// ```
    pub fn with<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        let id = self.id();
        // Take a reference-counted handle out so no borrow of the context is held while `f` runs.
        let value = Current::with(|c| c.borrow().lookup(id).cloned()).flatten();
        match value.as_deref().and_then(|v| v.downcast_ref::<T>()) {
            Some(v) => f(Some(v)),
            None => match self.default {
                Some(make) => f(Some(&make())),
                None => f(None),
            },
        }
    }

    /// Set the value in the current context; the token lets [`reset`](Self::reset) undo it.
    pub fn set(&self, value: T) -> Token<T> {
        let var = self.id();
        let value: Value = Arc::new(value);
        let set = Current::with(|c| {
            c.change(|ctx| {
                let old = ctx.insert(var, value);
                (ctx.identity(), old)
            })
        });
        let (context, old) = set.unwrap_or((NO_CONTEXT, None));
        Token {
            var,
            context,
            old,
            _value: PhantomData,
        }
    }

    /// Restore the value from before the `set` that gave `token`.
    ///
    /// Fails with [`ContextError`] if the token belongs to another variable or was made in
    /// another context (a copy counts as another context).
    pub fn reset(&self, token: Token<T>) -> Result<(), ContextError> {
        if token.var != self.id() {
            return Err(ContextError);
        }
        let mut token = token;
        let (var, context) = (token.var, token.context);
        Current::with(|c| {
            if c.borrow().id != context {
                return Err(ContextError);
            }
            let old = token.old.take();
            c.change(|ctx| match old {
                Some(old) => {
                    ctx.insert(var, old);
                }
                None => ctx.remove(var),
            });
            Ok(())
        })
        .unwrap_or(Err(ContextError))
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for ContextVar<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextVar")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What [`ContextVar::set`] returns: the way back to the previous value.
pub struct Token<T> {
    var: u64,
    context: u64,
    old: Option<Value>,
    _value: PhantomData<fn() -> T>,
}

/// The value a token keeps (to put back at `reset`) may be the last reference to a replaced
/// value: it is dropped with its panic contained (R4.7).
impl<T> Drop for Token<T> {
    fn drop(&mut self) {
        if let Some(old) = self.old.take() {
            catch_quietly(move || drop(old));
        }
    }
}

impl<T> fmt::Debug for Token<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("had_value", &self.old.is_some())
            .finish_non_exhaustive()
    }
}

/// A set of variable values. `clone()` is an independent copy in O(1).
///
/// ```
/// use runner_core::{Context, ContextVar};
/// static LEVEL: ContextVar<u8> = ContextVar::new("level");
///
/// let mut ctx = Context::new();
/// ctx.run(|| LEVEL.set(3));                // the change stays in `ctx`
/// assert_eq!(ctx.get(&LEVEL), Some(3));
/// assert_eq!(LEVEL.get(), None);           // the thread's own context is untouched
/// ```
pub struct Context {
    vars: ContextMap,
    /// Identity for tokens; assigned when a token is first made here, fresh for every copy.
    id: u64,
}

impl Context {
    /// An empty context.
    pub const fn new() -> Context {
        Context {
            vars: ContextMap::new(),
            id: 0,
        }
    }

    /// A copy of the current context: the running task's, else the thread's.
    pub fn current() -> Context {
        Current::with(|c| c.borrow().clone()).unwrap_or_default()
    }

    /// Run `f` with `self` as the current context; what `f` sets stays in `self`. The previous
    /// context is restored afterwards, even if `f` panics.
    pub fn run<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let _entered = self.enter();
        f()
    }

    /// Make `self` current until the guard drops (then swap it back, holding its changes).
    pub(crate) fn enter(&mut self) -> ContextGuard<'_> {
        let entered = Current::with(|c| c.swap(self)).is_some();
        ContextGuard { ctx: self, entered }
    }

    /// A copy of the current context that keeps its identity, for work done for it on another
    /// thread (a generator's body polled where it was made): tokens made on either side of the
    /// loan stay valid on the other. [`take_back`](Self::take_back) adopts what it holds after.
    pub(crate) fn lend() -> Context {
        Current::with(|c| {
            let mut current = c.0.borrow_mut();
            Context {
                vars: current.vars.clone(),
                id: current.identity(),
            }
        })
        .unwrap_or_default()
    }

    /// Make what a loan from the current context holds now (its variables, as set while it was
    /// away) the current context's; a loan from another context is dropped. The values it
    /// replaces are dropped after the current context is released.
    ///
    /// # Panics
    /// Inside a `Clone` impl run by `ContextVar::get` (see
    /// [`refuse_change_while_cloning`](Self::refuse_change_while_cloning)).
    pub(crate) fn take_back(lent: Context) {
        Current::with(|c| {
            if c.borrow().id == lent.id {
                c.change(|current| current.vars = lent.vars);
            }
        });
    }

    /// Panic if `ContextVar::get` is cloning a value of the current context on this thread, when
    /// changing the current context's values now (adopting a generator's answer) would be
    /// refused: called before the answer is taken, so that a refusal loses nothing.
    pub(crate) fn refuse_change_while_cloning() {
        context_cache::refuse_while_cloning();
    }

    /// The value of `var` in this context (not its default).
    pub fn get<T: Clone + Send + Sync + 'static>(&self, var: &ContextVar<T>) -> Option<T> {
        self.lookup(var.id())
            .and_then(|v| v.downcast_ref::<T>().cloned())
    }

    /// True if `var` was set in this context.
    pub fn contains<T: Send + Sync + 'static>(&self, var: &ContextVar<T>) -> bool {
        self.lookup(var.id()).is_some()
    }

    /// The number of variables set in this context.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// True if no variable is set in this context.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn lookup(&self, var: u64) -> Option<&Value> {
        self.vars.get(var)
    }

    fn identity(&mut self) -> u64 {
        if self.id == 0 {
            self.id = next_id();
        }
        self.id
    }

    /// Set `var`, returning its previous value. Copies made by `clone` do not see the change.
    fn insert(&mut self, var: u64, value: Value) -> Option<Value> {
        self.vars.insert(var, value)
    }

    fn remove(&mut self, var: u64) {
        self.vars.remove(var);
    }
}

impl Clone for Context {
    fn clone(&self) -> Self {
        Context {
            vars: self.vars.clone(),
            id: 0,
        }
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::new()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("len", &self.len()).finish()
    }
}

/// A copy of the current context (Python's `contextvars.copy_context()`).
pub fn copy_context() -> Context {
    Context::current()
}

/// Keeps a context current; swaps it back (with its changes) when dropped.
pub(crate) struct ContextGuard<'a> {
    ctx: &'a mut Context,
    /// False if the thread was exiting and `ctx` could not be made current.
    entered: bool,
}

impl Drop for ContextGuard<'_> {
    fn drop(&mut self) {
        if self.entered {
            Current::with(|c| c.swap(self.ctx));
        }
    }
}
