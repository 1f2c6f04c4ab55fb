//! Two-stage Ctrl-C. The first Ctrl-C cancels the main task, so its destructors and async
//! cleanup run; the second makes `run` return `Err(Interrupted)` at once, and ends the process
//! if the loop thread is stuck in a poll that never returns.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let result = runner_core::run(async {
//!     let _bye = runner_core::defer(async { println!("async cleanup runs on Ctrl-C") });
//!     runner_core::sleep(Duration::from_secs(3600)).await;
//! });
//! if let Err(err) = result {
//!     err.exit(); // Interrupted: ends the process as killed by SIGINT (status 130 in shells)
//! }
//! ```
//!
//! `ctrlc` allows one handler per process and no removal, so one dispatcher is installed on the
//! first run that needs it and stays. On Unix a run starts with a lighter handler that starts no
//! thread (`interim_sigint.rs`), and the dispatcher takes over when the loop first waits. What
//! the dispatcher does depends on the state kept here: with a run or close in progress it talks
//! to that run; with none it ends the process as SIGINT's default action would. If the program
//! handles SIGINT itself (its own `ctrlc` handler, a custom or an ignored disposition), runner
//! leaves SIGINT alone. Only the process's main thread uses it, so a runner on another thread
//! (a `#[runner::test]`, say) never catches Ctrl-C.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use event_listener::Event;

use crate::header::TaskRef;
#[cfg(unix)]
use crate::interim_sigint;
use crate::lock::lock;
use crate::process::end_as_interrupted;

/// How long a loop thread stuck in one poll gets after the second Ctrl-C before the process is
/// ended (R6.3 asks for half a second at most).
const STUCK_LOOP_GRACE: Duration = Duration::from_millis(400);

/// What Ctrl-C talks to while one run (or one close) is in progress on the main thread.
#[derive(Default)]
pub(crate) struct Interrupt {
    presses: AtomicU32,
    aborted: AtomicBool,
    returned: AtomicBool,
    waker: Mutex<Option<Waker>>,
    main: Mutex<Main>,
    closing: AtomicBool,
    /// Notified at every press.
    pressed: Event,
}

/// Where the run's main task is, for the first Ctrl-C.
#[derive(Default)]
enum Main {
    /// Not created yet (`into_future` may still be running): a first Ctrl-C now is kept, and
    /// cancels the main task as soon as it exists.
    #[default]
    NotCreated,
    /// Until the run is over (`Interrupt::returned`): a Ctrl-C after that is a second one.
    Running(TaskRef),
}

impl Interrupt {
    pub(crate) fn presses(&self) -> u32 {
        self.presses.load(Ordering::SeqCst)
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// The task the first Ctrl-C cancels. If that Ctrl-C came before the task existed, the task
    /// is cancelled now. During close there is none: a press stops the waiting at once (R6.5).
    pub(crate) fn set_main(&self, task: TaskRef) {
        // A hand-over point: a press counted before the main task existed is a first Ctrl-C for
        // it.
        hand_over_counted();
        if self.closing.load(Ordering::SeqCst) {
            return;
        }
        let mut main = lock(&self.main);
        // Read under the lock `on_ctrl_c` takes after counting: a press is seen either here or
        // there, never by neither.
        if self.presses() == 1 {
            task.cancel_for_interrupt();
        }
        *main = Main::Running(task);
    }

    /// The main task is done, or the run ended without it: a Ctrl-C from now on is a second
    /// one. A press counted while the task ran cancels it first (a hand-over point).
    pub(crate) fn main_ended(&self) {
        hand_over_counted();
        self.set_returned();
    }

    /// The loop thread is back from `block_on`: it was not stuck.
    pub(crate) fn set_returned(&self) {
        // Release, not SeqCst: the dispatcher polls for it; a fence here is paid by every run.
        self.returned.store(true, Ordering::Release);
    }

    fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }

    /// Completes when the second Ctrl-C asks the run to return at once.
    pub(crate) async fn aborted(&self) {
        poll_fn(|cx| {
            if self.is_aborted() {
                return Poll::Ready(());
            }
            *lock(&self.waker) = Some(cx.waker().clone());
            match self.is_aborted() {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
        .await
    }

    /// Completes once Ctrl-C has been pressed (at least once).
    pub(crate) async fn pressed(&self) {
        loop {
            if self.presses() > 0 {
                return;
            }
            let listener = self.pressed.listen();
            if self.presses() > 0 {
                return;
            }
            listener.await;
        }
    }

    /// The first press: cancel the main task; false if this press must end the run instead.
    fn first_press(&self) -> bool {
        if self.closing.load(Ordering::SeqCst) {
            return false;
        }
        let main = lock(&self.main);
        if self.returned.load(Ordering::Acquire) {
            return false;
        }
        match &*main {
            // R6.2: cancel main (its destructors and async cleanup run) and wake the loop.
            Main::Running(main) if !main.is_finished() => {
                main.cancel_for_interrupt();
                true
            }
            Main::Running(_) => false,
            Main::NotCreated => true,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Install {
    NotTried,
    /// Unix: the interim handler counts presses until the loop first waits.
    #[cfg(unix)]
    Interim,
    Ours,
    /// The program handles SIGINT itself: never touch it.
    Foreign,
}

struct Dispatch {
    install: Install,
    active: Option<Arc<Interrupt>>,
}

static DISPATCH: Mutex<Dispatch> = Mutex::new(Dispatch {
    install: Install::NotTried,
    active: None,
});

/// Keeps a run or close registered with the dispatcher; unregisters on drop.
pub(crate) struct SigintGuard {
    interrupt: Arc<Interrupt>,
    prev: Option<Arc<Interrupt>>,
}

impl SigintGuard {
    pub(crate) fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }
}

impl Drop for SigintGuard {
    fn drop(&mut self) {
        self.interrupt.set_returned();
        let mut dispatch = lock(&DISPATCH);
        dispatch.active = self.prev.take();
        #[cfg(unix)]
        interim_sigint::set_active(dispatch.active.is_some());
    }
}

/// Handle Ctrl-C for a run (`closing` false) or a close starting on this thread. `None` off the
/// main thread or when the program handles SIGINT itself (R6.1).
pub(crate) fn begin(closing: bool) -> Option<SigintGuard> {
    if !on_main_thread() {
        return None;
    }
    let mut dispatch = lock(&DISPATCH);
    if dispatch.install == Install::NotTried {
        dispatch.install = first_install();
    }
    if dispatch.install == Install::Foreign {
        return None;
    }
    let interrupt = Arc::new(Interrupt::default());
    // Published to the dispatcher by the lock held here.
    interrupt.closing.store(closing, Ordering::Relaxed);
    let prev = dispatch.active.replace(interrupt.clone());
    #[cfg(unix)]
    interim_sigint::set_active(true);
    Some(SigintGuard { interrupt, prev })
}

/// Whether this is the process's main thread, remembered per thread: `thread::current()` takes
/// and drops a reference count, which every run paid twice.
fn on_main_thread() -> bool {
    thread_local! {
        static MAIN: Cell<Option<bool>> = const { Cell::new(None) };
    }
    MAIN.try_with(|main| match main.get() {
        Some(known) => known,
        None => {
            let is_main = std::thread::current().name() == Some("main");
            main.set(Some(is_main));
            is_main
        }
    })
    .unwrap_or(false)
}

/// The first run's handler: on Unix the interim one, which starts no thread; elsewhere the
/// dispatcher. `Foreign` if the program handles SIGINT itself.
#[cfg(unix)]
fn first_install() -> Install {
    match interim_sigint::install() {
        true => Install::Interim,
        false => Install::Foreign,
    }
}

#[cfg(not(unix))]
fn first_install() -> Install {
    install_dispatcher(ctrlc::try_set_handler(on_ctrl_c))
}

/// What installing the dispatcher came to: `Foreign` if `ctrlc` refused (the program has a
/// handler of its own).
fn install_dispatcher(installed: Result<(), ctrlc::Error>) -> Install {
    match installed {
        Ok(()) => Install::Ours,
        Err(_) => Install::Foreign,
    }
}

/// At a hand-over point: act on the presses the interim handler counted, if any. One relaxed
/// load when there are none.
fn hand_over_counted() {
    #[cfg(unix)]
    if interim_sigint::counted() > 0 {
        hand_over();
    }
}

/// The loop is about to wait: if the interim handler still has SIGINT, the dispatcher takes
/// over now. One relaxed load when it has already.
pub(crate) fn before_wait() {
    #[cfg(unix)]
    if interim_sigint::is_installed() {
        hand_over();
    }
}

/// Install the dispatcher in place of the interim handler, then act on the press that handler
/// counted (at most one: a second ends the process there). Only the main thread's loop does
/// this: a press counted is its run's.
#[cfg(unix)]
fn hand_over() {
    if !on_main_thread() {
        return;
    }
    let counted = {
        let mut dispatch = lock(&DISPATCH);
        if dispatch.install != Install::Interim {
            return;
        }
        // `set_handler` replaces the interim handler in one `sigaction`, so no press falls
        // between the two; unless the program has put its own handler there since.
        dispatch.install = match interim_sigint::is_disposition() {
            true => install_dispatcher(ctrlc::set_handler(on_ctrl_c)),
            false => Install::Foreign,
        };
        interim_sigint::hand_over()
    };
    for _ in 0..counted {
        dispatch(true);
    }
}

/// Every Ctrl-C the runner has handled in this process, and who waits for the next one.
static HANDLED: AtomicU64 = AtomicU64::new(0);
static NEXT_CTRL_C: Event = Event::new();

/// True once the runner has handled a Ctrl-C in this process: a notice says "press Ctrl-C
/// again", not as if none had been pressed.
pub(crate) fn was_pressed() -> bool {
    HANDLED.load(Ordering::SeqCst) > 0
}

/// A future that completes at the next Ctrl-C the runner handles: the first one cancels the main
/// task, and tasks that must wind down gracefully (a server's connections, say) wait for it.
///
/// It only completes while a runner handles SIGINT: a run or a close on the process's main
/// thread, when the program has not installed its own handler. Elsewhere (a runner on another
/// thread, a `#[runner::test]`) it never completes.
///
/// ```no_run
/// use std::time::Duration;
/// use futures_lite::FutureExt;
///
/// let result = runner_core::run(async {
///     let conn = runner_core::spawn(async {
///         let serving = runner_core::sleep(Duration::from_secs(3600));
///         // At Ctrl-C: stop taking new work, finish what is in flight, then end.
///         serving.or(runner_core::ctrl_c()).await;
///     });
///     // The first Ctrl-C cancels main; its deferred cleanup waits for the connection.
///     let _drain = runner_core::defer(async move {
///         let _ = conn.await;
///     });
///     runner_core::sleep(Duration::from_secs(3600)).await;
/// });
/// assert_eq!(result, Err(runner_core::RunError::Interrupted));
/// ```
pub fn ctrl_c() -> impl Future<Output = ()> + Send + 'static {
    let seen = HANDLED.load(Ordering::SeqCst);
    async move {
        loop {
            if HANDLED.load(Ordering::SeqCst) > seen {
                return;
            }
            let listener = NEXT_CTRL_C.listen();
            if HANDLED.load(Ordering::SeqCst) > seen {
                return;
            }
            listener.await;
        }
    }
}

/// The dispatcher: runs on ctrlc's own thread, not in a signal handler.
fn on_ctrl_c() {
    dispatch(false);
}

/// One Ctrl-C, on ctrlc's thread or (a press the interim handler counted) on the loop's thread.
fn dispatch(on_loop_thread: bool) {
    let active = lock(&DISPATCH).active.clone();
    let Some(interrupt) = active else {
        // R6.4: no run and no close in progress: Ctrl-C has its default effect.
        end_as_interrupted();
    };
    HANDLED.fetch_add(1, Ordering::SeqCst);
    NEXT_CTRL_C.notify(usize::MAX);
    let presses = interrupt.presses.fetch_add(1, Ordering::SeqCst) + 1;
    interrupt.pressed.notify(usize::MAX);
    if presses == 1 && interrupt.first_press() {
        return;
    }
    // R6.3, R6.5: return at once; a loop stuck in one poll cannot, so end the process.
    interrupt.abort();
    if on_loop_thread {
        // This thread is the loop's, so it is not stuck: it returns when this does.
        return;
    }
    let deadline = Instant::now() + STUCK_LOOP_GRACE;
    while Instant::now() < deadline {
        if interrupt.returned.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    end_as_interrupted();
}
