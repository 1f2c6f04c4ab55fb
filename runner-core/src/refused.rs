//! Dropping a future that could not be spawned (its loop or pool is closed). Its destructor is
//! user code, and may spawn again, be refused again, and so drop another such future from
//! inside the first drop: a chain of 100,000 overflowed the stack. So a refused future dropped
//! while another is being dropped on the same thread waits in a queue, and the outermost drop
//! drops the queue's futures one after another.

use std::any::Any;
use std::cell::{Cell, RefCell};

use crate::error::catch_quietly;

thread_local! {
    /// A refused future is being dropped on this thread.
    static DROPPING: Cell<bool> = const { Cell::new(false) };
    /// Refused futures waiting for the drop under way to end.
    static WAITING: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Drop `refused` (a future, or the task that owns it), not inside another such drop. A panic
/// in its destructor is contained: the spawner was refused, and is not the one to unwind.
pub(crate) fn drop_refused(refused: Box<dyn Any>) {
    let nested = DROPPING.try_with(|d| d.replace(true)).unwrap_or(false);
    if nested {
        // Were the queue gone (the thread exiting), `refused` would drop with the closure.
        let _ = WAITING.try_with(|w| w.borrow_mut().push(refused));
        return;
    }
    let mut next = Some(refused);
    while let Some(refused) = next {
        catch_quietly(move || drop(refused));
        next = WAITING.try_with(|w| w.borrow_mut().pop()).ok().flatten();
    }
    let _ = DROPPING.try_with(|d| d.set(false));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    struct Chain(usize, Rc<Cell<usize>>);

    impl Drop for Chain {
        fn drop(&mut self) {
            self.1.set(self.1.get() + 1);
            if self.0 > 0 {
                drop_refused(Box::new(Chain(self.0 - 1, self.1.clone())));
            }
        }
    }

    /// A chain of a million drops, each refusing the next, runs in constant stack.
    #[test]
    fn a_chain_of_refusals_is_dropped_one_after_another() {
        let dropped = Rc::new(Cell::new(0));
        drop_refused(Box::new(Chain(1_000_000, dropped.clone())));
        assert_eq!(dropped.get(), 1_000_001);
        assert!(!DROPPING.with(Cell::get));
    }
}
