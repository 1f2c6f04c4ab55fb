//! Memory of nested context copies: n copies, each adding a variable, take O(n log n) bytes, not
//! O(n²) (copying a flat list of entries on every `set` took 1.18 GB for n = 10,000). Counted by
//! this test binary's own allocator; the bound is generous (20x what the trie needs) and an
//! O(n²) map exceeds it by far.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use runner::{Context, ContextVar};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, counting the bytes it hands out.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc` is passed on as it is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn nested_copies_each_adding_a_variable_take_n_log_n_memory() {
    const N: usize = 10_000;
    let vars: Vec<ContextVar<usize>> = (0..N).map(|_| ContextVar::new("nested")).collect();
    let before = LIVE.load(Ordering::Relaxed);
    let mut copies: Vec<Context> = Vec::with_capacity(N);
    let mut ctx = Context::new();
    for (i, var) in vars.iter().enumerate() {
        ctx = ctx.clone();
        ctx.run(|| var.set(i));
        copies.push(ctx.clone());
    }
    let used = LIVE.load(Ordering::Relaxed) - before;
    println!("{N} nested copies: {:.1} MB", used as f64 / 1e6);
    assert!(
        used < 40_000_000,
        "{N} nested copies took {used} bytes; a persistent map needs a few MB"
    );
    assert_eq!(copies[N - 1].len(), N);
    assert_eq!(copies[N / 2].get(&vars[N / 2]), Some(N / 2));
    assert_eq!(copies[N / 2].get(&vars[N / 2 + 1]), None);
}
