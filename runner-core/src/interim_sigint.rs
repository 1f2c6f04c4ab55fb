//! SIGINT's handler from a run's start until its loop first waits (Unix).
//!
//! Two-stage Ctrl-C is carried out by a dispatcher (`signal.rs`) that runs on `ctrlc`'s own
//! thread, so that it can still end a process whose loop thread is stuck in a poll. Starting that
//! thread was most of what a short program's first run cost beyond raw smol's: about 30 µs of a
//! cold start of 84 µs, against raw smol's 44 µs (`cargo bench --bench cold_start`). So a run
//! starts with this handler instead: one `sigaction`, no thread. The dispatcher takes over when
//! the loop first waits (it has nothing else to do then), or as soon as the run finds a press
//! counted here. A run that ends without ever waiting starts no thread.
//!
//! A signal handler may only make async-signal-safe calls, so this one counts and decides:
//! - With no run or close in progress, SIGINT has its default effect (R6.4).
//! - A first press is counted. The run hands it over to the dispatcher at its next hand-over
//!   point: the main task's creation, the main task's end, or the loop's next wait. The
//!   dispatcher then treats it as the first Ctrl-C (R6.2).
//! - A second press while the first is still counted here means the loop thread has reached none
//!   of those points since the first: it is stuck in one poll, and the process ends at once, as
//!   SIGINT's default action would (R6.3).
//! - A press that comes after the hand-over (this handler was still running on another thread
//!   while the dispatcher replaced it) is raised again, for the dispatcher.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::process::raise_default_sigint;

/// Presses counted and not yet handed over; `HANDED_OVER` once the dispatcher has taken over.
static PRESSES: AtomicU32 = AtomicU32::new(0);
const HANDED_OVER: u32 = u32::MAX;

/// A run or a close is in progress on the main thread (kept up to date by `signal.rs`).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// This handler is SIGINT's disposition: the loop's next wait hands over to the dispatcher.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Make this handler SIGINT's disposition. False, and nothing changed, if SIGINT's disposition
/// was not the default one: the program handles SIGINT itself (R6.1).
#[allow(unsafe_code)]
pub(crate) fn install() -> bool {
    let mut ours = empty_action();
    ours.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // As `ctrlc` does: a system call SIGINT interrupts is restarted, not failed with EINTR.
    ours.sa_flags = libc::SA_RESTART;
    let mut old = empty_action();
    // SAFETY: both pointers are to live, initialised `sigaction` structs of ours, and `on_sigint`
    // only makes async-signal-safe calls (atomics, `signal`, `raise`).
    let installed = unsafe { libc::sigaction(libc::SIGINT, &ours, &mut old) } == 0;
    if !installed {
        return false;
    }
    if old.sa_sigaction != libc::SIG_DFL {
        // SAFETY: `old` is the disposition `sigaction` just gave back; putting it back undoes
        // our change.
        unsafe { libc::sigaction(libc::SIGINT, &old, std::ptr::null_mut()) };
        return false;
    }
    INSTALLED.store(true, Ordering::SeqCst);
    true
}

/// Whether this handler still waits for the hand-over: the one check on a loop's way to a wait.
pub(crate) fn is_installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Presses counted and not yet handed over.
pub(crate) fn counted() -> u32 {
    not_handed_over(PRESSES.load(Ordering::SeqCst))
}

/// A value of `PRESSES` as a count: none once handed over.
fn not_handed_over(presses: u32) -> u32 {
    match presses {
        HANDED_OVER => 0,
        n => n,
    }
}

/// Whether SIGINT's disposition is still this handler (the program may have replaced it since).
#[allow(unsafe_code)]
pub(crate) fn is_disposition() -> bool {
    let mut now = empty_action();
    // SAFETY: a null new action only reads the disposition, into `now`, a live struct of ours.
    let read = unsafe { libc::sigaction(libc::SIGINT, std::ptr::null(), &mut now) } == 0;
    read && now.sa_sigaction == on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t
}

/// The dispatcher has replaced this handler: stop counting, and give the presses counted.
pub(crate) fn hand_over() -> u32 {
    INSTALLED.store(false, Ordering::SeqCst);
    not_handed_over(PRESSES.swap(HANDED_OVER, Ordering::SeqCst))
}

/// A run or a close starts or ends on the main thread.
pub(crate) fn set_active(active: bool) {
    // Release, not SeqCst: a fence here would be paid by every run.
    ACTIVE.store(active, Ordering::Release);
}

#[allow(unsafe_code)]
fn empty_action() -> libc::sigaction {
    // SAFETY: `sigaction` is a plain C struct (a handler address, a signal set, flags) for which
    // all-zero bytes are a valid value: `SIG_DFL`, the empty set, no flags.
    unsafe { std::mem::zeroed() }
}

#[allow(unsafe_code)]
extern "C" fn on_sigint(_: libc::c_int) {
    let counted = PRESSES.load(Ordering::SeqCst);
    if counted == HANDED_OVER {
        // SAFETY: `raise` is async-signal-safe. SIGINT is blocked while this handler runs, so
        // it is delivered when the handler returns, to the disposition now installed.
        unsafe { libc::raise(libc::SIGINT) };
        return;
    }
    if !ACTIVE.load(Ordering::SeqCst) {
        raise_default_sigint();
        return;
    }
    match PRESSES.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
        (n != HANDED_OVER).then_some(n + 1)
    }) {
        // A first press: the run hands it over.
        Ok(0) => {}
        // A second before the first was handed over: the loop thread is stuck.
        Ok(_) => raise_default_sigint(),
        // Handed over meanwhile: the dispatcher gets this press.
        // SAFETY: as above.
        Err(_) => unsafe {
            libc::raise(libc::SIGINT);
        },
    }
}
