//! R6: two-stage Ctrl-C, tested with real signals.
//!
//! This test binary is its own subject. Run by `cargo test`, it is the driver: for each scenario
//! it starts itself again with `RUNNER_CTRL_C_SCENARIO=<name>`, waits for the child to say it is
//! ready, sends it SIGINT with `kill -INT`, and checks what the child printed and how it exited.
//! In the child the scenario runs in `main`, on the process's main thread, where the runner
//! handles SIGINT (Cargo's normal test harness runs tests on other threads).
//!
//! [`SCENARIOS`] is the list: each row names the test, the child's part, what the driver does
//! (the lines it waits for, its pauses and its Ctrl-C presses) and what must hold at the end.
//! Two more tests start an example server instead, talk to it over TCP, then press Ctrl-C.
//!
//! Timings are printed, never asserted closer than 10x their target: CI machines are noisy.

// Off Unix the driver runs nothing, so the scenarios' steps and checks go unread.
#![cfg_attr(not(unix), allow(dead_code))]

use std::time::Duration;

use Check::*;
use Exit::*;
use Step::*;

const SCENARIO_VAR: &str = "RUNNER_CTRL_C_SCENARIO";

fn main() {
    match std::env::var(SCENARIO_VAR) {
        Ok(name) => child::run(&name),
        Err(_) => driver::run(),
    }
}

/// Microseconds since the Unix epoch: comparable between the driver and the child.
fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

const LONG: Duration = Duration::from_secs(60);

/// One test: a child process runs `child` on its main thread while the driver takes `steps`;
/// then the child must exit as `exit` says, and every one of `checks` must hold.
struct Scenario {
    /// The test's name, and how the child finds its part.
    name: &'static str,
    /// What the child does.
    child: fn(),
    /// What the driver does to the child, in order.
    steps: &'static [Step],
    /// How the child must end, and what that means.
    exit: (Exit, &'static str),
    /// What its output must show, each with what it means.
    checks: &'static [(Check, &'static str)],
    /// A time from the last Ctrl-C press, printed and, with a target, checked.
    timing: Option<Timing>,
}

/// What the driver does to the child.
#[derive(Clone, Copy)]
enum Step {
    /// Wait (at most 20 s) for the next line starting with this.
    Line(&'static str),
    /// Let this many milliseconds pass.
    Pause(u64),
    /// Press Ctrl-C: SIGINT with the `kill` command, as a user's terminal would.
    CtrlC,
    /// The same with the kill(2) system call, whose send time is exact (for a latency).
    CtrlCExact,
    /// Fail, with this explanation, if the child has exited already.
    StillRunning(&'static str),
}

/// How the child process ends.
#[derive(Clone, Copy)]
enum Exit {
    /// Exit status 0.
    Normally,
    /// Killed by SIGINT (signal 2), as a program with no handler is.
    KilledBySigint,
    /// This exit status.
    Status(i32),
}

/// A fact about the child's output.
#[derive(Clone, Copy)]
enum Check {
    /// A line on stdout starts with this.
    Printed(&'static str),
    /// No line on stdout starts with this.
    NotPrinted(&'static str),
    /// Lines starting with each were printed, the first one's before the second one's.
    Before(&'static str, &'static str),
    /// Exactly `n` lines start with `starts` and end with `ends`.
    Count {
        n: usize,
        starts: &'static str,
        ends: &'static str,
    },
    /// Stderr contains this.
    Stderr(&'static str),
    /// Stderr does not contain this.
    NotStderr(&'static str),
}

/// A time measured from the last Ctrl-C press: printed, and, with a `target`, checked to be
/// within ten times it.
#[derive(Clone, Copy)]
struct Timing {
    label: &'static str,
    until: Until,
    target: Option<Duration>,
}

/// Where a [`Timing`] ends.
#[derive(Clone, Copy)]
enum Until {
    /// The child exited.
    Exit,
    /// The driver got the line the step `Line(prefix)` waited for.
    Line(&'static str),
    /// The child's clock ([`now_us`]) that ends the line starting with this.
    Stamp(&'static str),
}

/// Wait for the child to be ready, then press Ctrl-C once.
const ONE_CTRL_C: &[Step] = &[Line("ready"), CtrlC];

const INTERRUPTED: &str = "run returned Err(Interrupted)";

/// The tests. Each reads: the child's part; what the driver does (`steps`); then how the child
/// must exit, what its output must show and, for some, how long it took.
#[rustfmt::skip]
static SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "r6_2_one_ctrl_c_runs_destructors_and_cleanup",
        child: child::sleep_interrupted,
        // Pause: let the loop go idle in its long sleep.
        steps: &[Line("ready"), Pause(20), CtrlCExact, Line("destructor ran at ")],
        exit: (Normally, "the process exits normally"),
        checks: &[
            (Before("destructor ran", INTERRUPTED), "run returned only after the destructor"),
            (Before("deferred cleanup ran", INTERRUPTED),
             "run returned only after the async cleanup"),
        ],
        timing: Some(Timing {
            label: "R6.7 latency, SIGINT sent to the main task's destructor",
            until: Until::Stamp("destructor ran at "),
            target: Some(Duration::from_millis(10)),
        }),
    },
    Scenario {
        name: "net_ctrl_c_while_main_waits_in_accept",
        child: child::accept_interrupted,
        steps: &[Line("ready"), Pause(20), CtrlCExact, Line("destructor ran at ")],
        exit: (Normally, "the process exits normally"),
        checks: &[
            (Before("destructor ran", INTERRUPTED), "run returned only after the destructor"),
            (Before("deferred cleanup ran", INTERRUPTED),
             "run returned only after the async cleanup"),
        ],
        timing: Some(Timing {
            label: "SIGINT sent to the destructor of main, waiting in accept on runner's driver",
            until: Until::Stamp("destructor ran at "),
            target: Some(Duration::from_millis(10)),
        }),
    },
    Scenario {
        name: "r6_6_process_ends_killed_by_sigint",
        child: child::sleep_interrupted_exit,
        steps: ONE_CTRL_C,
        exit: (KilledBySigint, "the process ends killed by SIGINT (signal 2)"),
        checks: &[
            (Printed("destructor ran"), "the destructor ran"),
            (Printed("deferred cleanup ran"), "the async cleanup ran"),
        ],
        timing: None,
    },
    Scenario {
        name: "r6_3_second_ctrl_c_ends_stuck_loop",
        child: child::spin,
        steps: &[
            Line("ready"), CtrlC, Pause(300),
            StillRunning("the first Ctrl-C changes nothing for a loop that never yields"),
            CtrlC,
        ],
        exit: (KilledBySigint, "the second Ctrl-C ends the process as SIGINT would"),
        checks: &[],
        timing: Some(Timing {
            label: "R6.3: second Ctrl-C to the end of a stuck process",
            until: Until::Exit,
            target: Some(Duration::from_millis(500)),
        }),
    },
    Scenario {
        name: "issue15_ctrl_c_runs_pool_cleanups_and_ends_killed",
        child: child::pool_tasks_interrupted,
        steps: ONE_CTRL_C,
        exit: (KilledBySigint, "the process ends killed by SIGINT (signal 2)"),
        checks: &[(
            Count { n: 4, starts: "pool cleanup ", ends: " ran on runner-worker-" },
            "all four pool tasks' cleanups ran, on workers",
        )],
        timing: None,
    },
    Scenario {
        name: "issue15_second_ctrl_c_ends_stuck_worker",
        child: child::pool_worker_spins,
        steps: &[
            Line("ready"), CtrlC, Pause(300),
            StillRunning("close waits for the stuck pool task"),
            CtrlC,
        ],
        exit: (KilledBySigint, "the second Ctrl-C ends the process as SIGINT would"),
        checks: &[],
        timing: Some(Timing {
            label: "issue 15: second Ctrl-C with a worker stuck in a busy loop",
            until: Until::Exit,
            target: Some(Duration::from_millis(500)),
        }),
    },
    Scenario {
        name: "r6_3_second_ctrl_c_returns_from_hung_cleanup",
        child: child::cleanup_hangs,
        steps: &[
            Line("ready"), CtrlC,
            Line("cleanup started"), Pause(200), CtrlC,
            Line(INTERRUPTED),
        ],
        exit: (Normally, "the process exits normally after run and close return"),
        checks: &[
            (Printed("closed"), "close returned"),
            (Stderr("skipped"), "the skipped cleanup is named on stderr (never silently)"),
        ],
        timing: Some(Timing {
            label: "R6.3: second Ctrl-C to run returning",
            until: Until::Line(INTERRUPTED),
            target: None,
        }),
    },
    Scenario {
        name: "r6_4_ctrl_c_after_run_has_default_effect",
        child: child::after_run,
        steps: ONE_CTRL_C,
        exit: (KilledBySigint, "with no run in progress Ctrl-C kills the process"),
        checks: &[(Printed("run returned Ok(1)"), "the earlier run succeeded")],
        timing: None,
    },
    Scenario {
        name: "r6_2_ctrl_c_during_the_first_poll_cancels_main_after_it",
        child: child::ctrl_c_during_first_poll,
        steps: ONE_CTRL_C,
        exit: (Normally, "the process exits normally"),
        checks: &[
            (Before("first poll over", "destructor ran"),
             "the first poll ended, then main was cancelled at its first await"),
            (Before("destructor ran", INTERRUPTED), "run returned only after the destructor"),
            (Before("deferred cleanup ran", INTERRUPTED),
             "run returned only after the async cleanup"),
        ],
        timing: None,
    },
    Scenario {
        name: "r6_1_programs_own_handler_wins",
        child: child::own_handler,
        steps: ONE_CTRL_C,
        exit: (Normally, "the process exits normally"),
        checks: &[
            (Printed("own handler ran"), "the program's own handler ran"),
            (Printed("main finished normally"), "the main task was not cancelled"),
            (Printed("run returned Ok(())"), "run returned its value"),
        ],
        timing: None,
    },
    Scenario {
        name: "r6_1_non_main_thread_not_intercepted",
        child: child::non_main_thread,
        steps: ONE_CTRL_C,
        exit: (KilledBySigint, "Ctrl-C is not intercepted: default action"),
        checks: &[(NotPrinted("destructor ran"), "the runner did not cancel its main task")],
        timing: None,
    },
    Scenario {
        name: "r6_5_ctrl_c_during_close_stops_waiting",
        child: child::ctrl_c_during_close,
        steps: ONE_CTRL_C,
        exit: (Normally, "the process exits normally"),
        checks: &[(
            Printed("close returned; loop closed: true"),
            "close stopped waiting and closed the loop",
        )],
        timing: None,
    },
    Scenario {
        name: "r6_6_macro_main_ends_killed_by_sigint",
        child: child::macro_main_interrupted::main,
        steps: ONE_CTRL_C,
        exit: (KilledBySigint, "#[runner::main] ends the process killed by SIGINT"),
        checks: &[(Printed("deferred cleanup ran"), "after the async cleanup ran")],
        timing: None,
    },
    // A run error other than Ctrl-C is a panic (as with `#[tokio::main]`), so that unwinding
    // runs the caller's destructors: the process exits with Rust's panic status, 101.
    Scenario {
        name: "r9_1_macro_main_run_error_panics",
        child: child::macro_main_cancelled::main,
        steps: &[],
        exit: (Status(101), "#[runner::main] panics on a run error (exit status 101)"),
        checks: &[(
            Stderr("#[runner::main] could not run `main`: the main task was cancelled"),
            "with the run error's message",
        )],
        timing: None,
    },
    Scenario {
        name: "issue11_1_second_ctrl_c_with_channel_pair_closes",
        child: child::second_ctrl_c_channel_pair,
        steps: &[Line("ready"), CtrlC, Line("cleanup started"), Pause(200), CtrlC],
        exit: (Normally, "the process exited normally"),
        checks: &[
            (Printed(INTERRUPTED), "the second Ctrl-C made run return"),
            (Printed("closed"), "close returned"),
        ],
        timing: None,
    },
    Scenario {
        name: "issue11_8_ctrl_c_before_main_exists_is_a_first_one",
        child: child::ctrl_c_before_main_exists,
        steps: ONE_CTRL_C,
        exit: (Normally, "the process exits normally"),
        checks: &[
            (Printed(INTERRUPTED), "run returned Interrupted"),
            (NotPrinted("main ran"), "the main task was cancelled before its first poll"),
            (Printed("leftover cleanup ran"),
             "a single Ctrl-C is a first one: close waited for the leftover cleanup"),
            (NotStderr("twice"), "a single Ctrl-C is a first one: nothing speaks of a second"),
        ],
        timing: None,
    },
    Scenario {
        name: "issue11_8_ctrl_c_while_joining_stuck_thread_ends_killed",
        child: child::macro_ctrl_c_while_joining_stuck_thread::main,
        // Pause: main has returned; close is joining the stuck thread.
        steps: &[Line("ready"), Pause(300), CtrlC],
        exit: (KilledBySigint, "Ctrl-C during close ends #[runner::main] as killed by SIGINT"),
        checks: &[],
        timing: None,
    },
    Scenario {
        name: "issue11_9_close_says_what_it_waits_for_and_timeout_bounds_it",
        child: child::macro_stuck_thread_after_ctrl_c::main,
        steps: ONE_CTRL_C,
        exit: (KilledBySigint, "the process ends killed by SIGINT"),
        checks: &[
            (Stderr("runner: still closing after 1 s, waiting for:"),
             "after a second, close says it still waits"),
            (Stderr("a to_thread job started at tests/ctrl_c.rs:"), "close says what it waits for"),
            (Stderr("press Ctrl-C again to exit at once"), "close says how to get out"),
            (Stderr("did not finish joining its threads within 3 seconds"),
             "shutdown_timeout = \"3s\" bounded the wait"),
        ],
        timing: None,
    },
    Scenario {
        name: "issue11_9_second_ctrl_c_gets_out_of_a_stuck_join",
        child: child::macro_stuck_thread_second_ctrl_c::main,
        // Pause: past the notice close prints after a second.
        steps: &[Line("ready"), CtrlC, Pause(1500), CtrlC],
        exit: (KilledBySigint, "the second Ctrl-C ends the process as killed by SIGINT"),
        checks: &[(Stderr("still closing after 1 s"), "the notice was printed before")],
        timing: Some(Timing {
            label: "second Ctrl-C to the end of the process",
            until: Until::Exit,
            target: None,
        }),
    },
    Scenario {
        name: "test_interrupt_call_soon",
        child: child::test_interrupt_call_soon,
        steps: ONE_CTRL_C,
        exit: (Normally, "the process exits normally"),
        checks: &[(Printed(INTERRUPTED), "run returned Interrupted")],
        timing: None,
    },
    Scenario {
        name: "test_interrupt_wait",
        child: child::test_interrupt_wait,
        steps: ONE_CTRL_C,
        exit: (Normally, "the process exits normally"),
        checks: &[(Printed(INTERRUPTED), "run returned Interrupted")],
        timing: None,
    },
    Scenario {
        name: "test_interrupt_cancelled_task",
        child: child::test_interrupt_cancelled_task,
        steps: ONE_CTRL_C,
        exit: (Normally, "the process exits normally"),
        checks: &[(Printed("run returned Err(Cancelled)"), "run returned Cancelled")],
        timing: None,
    },
    #[cfg(target_os = "linux")]
    Scenario {
        name: "cold_start_no_ctrl_c_thread_until_a_loop_waits",
        child: child::ctrl_c_thread_once_a_loop_waits,
        steps: ONE_CTRL_C,
        exit: (KilledBySigint, "after the runs, Ctrl-C ends the process as SIGINT would"),
        checks: &[
            (Printed("ctrl-c thread after a run that never waited: false"),
             "a run that never waited started no Ctrl-C thread"),
            (Printed("ctrl-c thread after a run that waited: true"),
             "a run that waited started the Ctrl-C thread"),
        ],
        timing: None,
    },
];

/// The scenarios, as run inside the child process.
mod child {
    use std::cell::Cell;
    use std::fmt::Debug;
    use std::future::{Future, IntoFuture};
    use std::io::Write;
    use std::rc::Rc;
    use std::time::Duration;

    use super::{now_us, LONG, SCENARIOS};
    use runner::{RunError, Runner};

    /// Run the scenario called `name`.
    pub fn run(name: &str) {
        match SCENARIOS.iter().find(|s| s.name == name) {
            Some(scenario) => (scenario.child)(),
            None => {
                eprintln!("unknown scenario {name}");
                std::process::exit(2);
            }
        }
    }

    fn say(line: impl AsRef<str>) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", line.as_ref());
        let _ = out.flush();
    }

    /// Prints when the main future's destructors run.
    struct Destructor;
    impl Drop for Destructor {
        fn drop(&mut self) {
            say(format!("destructor ran at {}", now_us()));
        }
    }

    async fn sleep_with_cleanup() {
        let _destructor = Destructor;
        let _cleanup = runner::defer(async {
            runner::sleep(Duration::from_millis(2)).await;
            say("deferred cleanup ran");
        });
        say("ready");
        runner::sleep(LONG).await;
        say("never: the sleep was not interrupted");
    }

    /// Run `main` on `runner` and say what `run` returned; that result.
    #[track_caller]
    fn run_and_say<F>(runner: &Runner, main: F) -> Result<F::Output, RunError>
    where
        F: IntoFuture,
        F::Output: Debug,
    {
        let result = runner.run(main);
        say(format!("run returned {result:?}"));
        result
    }

    /// Close `runner`, then end the process the way `#[runner::main]` does for `result`.
    fn close_and_exit<T>(runner: Runner, result: Result<T, RunError>) {
        runner.close();
        if let Err(err) = result {
            err.exit();
        }
    }

    /// A busy loop with no scheduling point in it: it never returns.
    fn spin_forever() {
        let mut n = 0_u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    /// Say "ready", then wait for the SIGINT that kills the process.
    fn wait_to_be_killed() {
        say("ready");
        std::thread::sleep(LONG);
        say("never: the process should have been killed");
    }

    /// A first run on `runner` that leaves a task behind, asleep, with `cleanup` deferred in it:
    /// close waits for that cleanup.
    fn leave_task_with_cleanup(runner: &Runner, cleanup: impl Future<Output = ()> + 'static) {
        runner
            .run(async {
                drop(runner::spawn(async move {
                    let _cleanup = runner::defer(cleanup);
                    runner::sleep(LONG).await;
                }));
                runner::yield_now().await;
            })
            .expect("the first run returns normally");
    }

    /// R6.6 through the attribute: Ctrl-C, cleanup, then the process ends killed by SIGINT.
    pub mod macro_main_interrupted {
        #[runner::main]
        pub async fn main() {
            super::sleep_with_cleanup().await;
        }
    }

    /// A run error other than Interrupted panics with the message.
    pub mod macro_main_cancelled {
        #[runner::main]
        pub async fn main() {
            runner::current_task().expect("main is a task").cancel();
            runner::yield_now().await;
        }
    }

    /// Issue 11, item 8: main returns while a `to_thread` job is stuck; Ctrl-C stops close's
    /// wait for it, and the process then ends as killed by SIGINT (not with status 0).
    pub mod macro_ctrl_c_while_joining_stuck_thread {
        #[runner::main]
        pub async fn main() {
            let (tx, rx) = async_channel::bounded(1);
            drop(runner::to_thread(move || {
                let _ = tx.send_blocking(());
                std::thread::sleep(super::LONG);
            }));
            let _ = rx.recv().await;
            super::say("ready: main returns, close joins a stuck thread");
        }
    }

    /// Issue 11, item 9: after the first Ctrl-C, close waits for a stuck `to_thread` job. It says
    /// so after a second, and `shutdown_timeout` bounds the wait.
    pub mod macro_stuck_thread_after_ctrl_c {
        #[runner::main(shutdown_timeout = "3s")]
        pub async fn main() {
            drop(runner::to_thread(|| std::thread::sleep(super::LONG)));
            super::say("ready");
            runner::sleep(super::LONG).await;
        }
    }

    /// The same with the default timeout (300 s): the second Ctrl-C gets out at once.
    pub mod macro_stuck_thread_second_ctrl_c {
        #[runner::main]
        pub async fn main() {
            drop(runner::to_thread(|| std::thread::sleep(super::LONG)));
            super::say("ready");
            runner::sleep(super::LONG).await;
        }
    }

    /// Whether this process has a thread called `name` (Linux: its `/proc/self/task/*/comm`).
    fn has_thread(name: &str) -> bool {
        // A new thread names itself once it runs: give one that was just started time to.
        std::thread::sleep(Duration::from_millis(100));
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return false;
        };
        tasks.flatten().any(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
    }

    /// A run whose main task, once `setup` ran in it, leaves a deferred cleanup that never
    /// finishes: the first Ctrl-C starts it, the second makes `run` return; then close.
    fn run_with_hung_cleanup(setup: impl FnOnce()) {
        let runner = Runner::new();
        let _ = run_and_say(&runner, async {
            setup();
            let _cleanup = runner::defer(async {
                say("cleanup started");
                std::future::pending::<()>().await;
            });
            say("ready");
            runner::sleep(LONG).await;
        });
        runner.close();
        say("closed");
    }

    /// A main future whose `into_future` is slow: Ctrl-C can arrive before the main task exists.
    struct SlowStart;

    impl IntoFuture for SlowStart {
        type Output = ();
        type IntoFuture = std::pin::Pin<Box<dyn Future<Output = ()>>>;

        fn into_future(self) -> Self::IntoFuture {
            say("ready: into_future is slow");
            std::thread::sleep(Duration::from_millis(1500));
            Box::pin(async {
                say("main ran");
                runner::sleep(LONG).await;
            })
        }
    }

    /// A pool task's `Send` value whose destructor leaves an async cleanup that says which
    /// thread ran it.
    struct PoolGoodbye(u32);

    impl Drop for PoolGoodbye {
        fn drop(&mut self) {
            let i = self.0;
            drop(runner::defer(async move {
                runner::sleep(Duration::from_millis(2)).await;
                let on = std::thread::current().name().unwrap_or("?").to_owned();
                say(format!(
                    "pool cleanup {i} ran on {}",
                    on.trim_end_matches(char::is_numeric)
                ));
            }));
        }
    }

    /// Issue 11, item 1: the second Ctrl-C with a channel pair on the loop and a cleanup that
    /// never finishes: run returns and close tears the pair down without deadlock.
    pub fn second_ctrl_c_channel_pair() {
        run_with_hung_cleanup(|| {
            let (tx, rx) = async_channel::bounded::<u32>(1);
            drop(runner::spawn(async move {
                let _tx = tx;
                std::future::pending::<()>().await;
            }));
            drop(runner::spawn(async move {
                let _ = rx.recv().await;
            }));
        });
    }

    /// Issue 11, item 8: one Ctrl-C before the main task exists is a first Ctrl-C: main is
    /// cancelled, and close still waits for a leftover task's cleanup.
    pub fn ctrl_c_before_main_exists() {
        let runner = Runner::new();
        leave_task_with_cleanup(&runner, async {
            runner::sleep(Duration::from_millis(2)).await;
            say("leftover cleanup ran");
        });
        let _ = run_and_say(&runner, SlowStart);
        runner.close();
        say("closed");
    }

    /// R6.2, R6.7: one Ctrl-C while main awaits a long sleep.
    pub fn sleep_interrupted() {
        let _ = run_and_say(&Runner::new(), sleep_with_cleanup());
    }

    /// Issue 24: main waits in `accept` on runner's own I/O driver (the loop's thread blocked in
    /// its `epoll_wait`); the first Ctrl-C cancels it as it does any wait.
    pub fn accept_interrupted() {
        let _ = run_and_say(&Runner::new(), async {
            let _destructor = Destructor;
            let _cleanup = runner::defer(async {
                runner::sleep(Duration::from_millis(2)).await;
                say("deferred cleanup ran");
            });
            let listener = runner::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            say("ready");
            let _ = listener.accept().await;
            say("never: the accept was not interrupted");
        });
    }

    /// R6.6: the same, ending the process the way #[runner::main] does.
    pub fn sleep_interrupted_exit() {
        let runner = Runner::new();
        let result = run_and_say(&runner, sleep_with_cleanup());
        close_and_exit(runner, result);
    }

    /// Issue 15: one Ctrl-C with pool tasks pending on two workers: close cancels them, their
    /// async cleanups run on their workers, and the process ends killed by SIGINT.
    pub fn pool_tasks_interrupted() {
        let runner = Runner::builder().workers(2).build();
        let result = runner.run(async {
            for i in 0..4 {
                drop(runner::spawn_send(async move {
                    let _goodbye = PoolGoodbye(i);
                    std::future::pending::<()>().await;
                }));
            }
            runner::sleep(Duration::from_millis(20)).await;
            say("ready");
            runner::sleep(LONG).await;
        });
        close_and_exit(runner, result);
    }

    /// Issue 15: a worker stuck in a busy loop; the first Ctrl-C cannot finish close (the stuck
    /// task never reaches a scheduling point), the second ends the process.
    pub fn pool_worker_spins() {
        let runner = Runner::builder().workers(2).build();
        let result = runner.run(async {
            drop(runner::spawn_send(async {
                say("ready");
                spin_forever();
            }));
            runner::sleep(LONG).await;
        });
        close_and_exit(runner, result);
    }

    /// R6.3: a main task that never awaits; the second Ctrl-C ends the process.
    pub fn spin() {
        let _ = Runner::new().run(async {
            say("ready");
            spin_forever();
        });
        say("never: run cannot return from a loop that never yields");
    }

    /// R6.3: a deferred cleanup that never finishes; the second Ctrl-C makes run return.
    pub fn cleanup_hangs() {
        run_with_hung_cleanup(|| ());
    }

    /// R6.4: after the run returned, Ctrl-C has its default effect.
    pub fn after_run() {
        let _ = run_and_say(&Runner::new(), async { 1 });
        wait_to_be_killed();
    }

    /// R6.1: the program's own handler, installed first, wins; main is not cancelled.
    pub fn own_handler() {
        ctrlc::set_handler(|| say("own handler ran")).expect("install the program's handler");
        let _ = run_and_say(&Runner::new(), async {
            let _destructor = Destructor;
            say("ready");
            runner::sleep(Duration::from_millis(800)).await;
            say("main finished normally");
        });
    }

    /// R6.2 with the interim handler: the Ctrl-C comes while the main task's first poll still
    /// runs, before the loop has ever waited; the poll ends, then main is cancelled.
    pub fn ctrl_c_during_first_poll() {
        let _ = run_and_say(&Runner::new(), async {
            let _destructor = Destructor;
            let _cleanup = runner::defer(async { say("deferred cleanup ran") });
            say("ready");
            let busy_until = std::time::Instant::now() + Duration::from_millis(1500);
            while std::time::Instant::now() < busy_until {
                std::hint::spin_loop();
            }
            say("first poll over");
            runner::sleep(LONG).await;
            say("never: the sleep was not interrupted");
        });
    }

    /// Cold start: a run that never waits starts no Ctrl-C thread; one that waits does, and
    /// after the runs Ctrl-C has its default effect (R6.4).
    pub fn ctrl_c_thread_once_a_loop_waits() {
        let runner = Runner::new();
        runner.run(async { 1 }).expect("a run that never waits");
        say(format!(
            "ctrl-c thread after a run that never waited: {}",
            has_thread("ctrl-c")
        ));
        runner
            .run(runner::sleep(Duration::from_millis(1)))
            .expect("a run that waits");
        say(format!(
            "ctrl-c thread after a run that waited: {}",
            has_thread("ctrl-c")
        ));
        wait_to_be_killed();
    }

    /// R6.1: a runner off the main thread never intercepts Ctrl-C.
    pub fn non_main_thread() {
        let thread = std::thread::spawn(|| {
            let _ = Runner::new().run(sleep_with_cleanup());
        });
        let _ = thread.join();
        say("never: the process should have been killed");
    }

    /// R6.5: Ctrl-C during close stops the waiting; the loop is closed and close returns.
    pub fn ctrl_c_during_close() {
        let runner = Runner::new();
        leave_task_with_cleanup(&runner, async {
            say("ready: a leftover task's cleanup hangs in close");
            std::future::pending::<()>().await;
        });
        let lp = runner.get_loop().expect("the loop exists");
        runner.close();
        say(format!("close returned; loop closed: {}", lp.is_closed()));
    }

    /// CPython test_interrupt_call_soon: main never waits on anything but yields.
    pub fn test_interrupt_call_soon() {
        let _ = run_and_say(&Runner::new(), async {
            let _destructor = Destructor;
            say("ready");
            loop {
                runner::yield_now().await;
            }
        });
    }

    /// CPython test_interrupt_wait: main waits on a long sleep.
    pub fn test_interrupt_wait() {
        let _ = run_and_say(&Runner::new(), async {
            say("ready");
            runner::sleep(Duration::from_secs(10)).await;
        });
    }

    /// CPython test_interrupt_cancelled_task: code cancels main too, so run returns Cancelled
    /// rather than Interrupted (R6.2).
    pub fn test_interrupt_cancelled_task() {
        let _ = run_and_say(&Runner::new(), async {
            let main = runner::current_task().expect("main is a task");
            let code_cancelled = Rc::new(Cell::new(false));
            let flag = code_cancelled.clone();
            drop(runner::spawn(async move {
                while !main.is_cancel_requested() {
                    runner::sleep(Duration::from_millis(1)).await;
                }
                main.cancel(); // code cancels the main task as well
                flag.set(true);
            }));
            let _cleanup = runner::defer(async move {
                while !code_cancelled.get() {
                    runner::sleep(Duration::from_millis(1)).await;
                }
            });
            say("ready");
            runner::sleep(Duration::from_secs(10)).await;
        });
    }
}

#[cfg(unix)]
mod driver {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, ExitStatus, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::{now_us, Check, Exit, Scenario, Step, Timing, Until, SCENARIOS, SCENARIO_VAR};

    /// The hang watchdog: how long the driver waits for a line, or for the child to exit.
    const WAIT: Duration = Duration::from_secs(20);

    struct Child {
        name: &'static str,
        process: std::process::Child,
        lines: mpsc::Receiver<String>,
        seen: Vec<String>,
        stderr: std::thread::JoinHandle<String>,
    }

    impl Child {
        /// Start this binary in the child role, running scenario `name`.
        fn start(name: &'static str) -> Result<Child, String> {
            let exe = std::env::current_exe().map_err(|e| format!("no test binary path: {e}"))?;
            let mut command = Command::new(exe);
            command.env(SCENARIO_VAR, name);
            Child::spawn(name, command)
        }

        fn spawn(name: &'static str, mut command: Command) -> Result<Child, String> {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            // A shell starts background jobs with SIGINT ignored, and children inherit that; the
            // runner rightly leaves an ignored SIGINT alone (R6.1). Give each child the default
            // disposition a program started from a terminal has, wherever the tests run.
            // SAFETY: between fork and exec only async-signal-safe calls are allowed; signal(2)
            // is one, and the closure touches no memory.
            #[allow(unsafe_code)]
            unsafe {
                command.pre_exec(|| {
                    libc::signal(libc::SIGINT, libc::SIG_DFL);
                    Ok(())
                });
            }
            let mut process = command
                .spawn()
                .map_err(|e| format!("cannot start the child: {e}"))?;
            let stdout = process.stdout.take().ok_or("no stdout")?;
            let mut stderr = process.stderr.take().ok_or("no stderr")?;
            let (tx, lines) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            let stderr = std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                text
            });
            Ok(Child {
                name,
                process,
                lines,
                seen: Vec::new(),
                stderr,
            })
        }

        /// Wait for a line starting with `prefix`; the line.
        fn expect_line(&mut self, prefix: &str) -> Result<String, String> {
            let deadline = Instant::now() + WAIT;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match self.lines.recv_timeout(left) {
                    Ok(line) => {
                        self.seen.push(line.clone());
                        if line.starts_with(prefix) {
                            return Ok(line);
                        }
                    }
                    Err(_) => break,
                }
            }
            Err(format!(
                "{}: no line starting with {prefix:?}; saw {:?}",
                self.name, self.seen
            ))
        }

        /// Send SIGINT with `kill`, as a user's Ctrl-C would; the time it was sent.
        fn sigint(&self) -> Result<u128, String> {
            let sent = now_us();
            let status = Command::new("kill")
                .args(["-INT", &self.process.id().to_string()])
                .status()
                .map_err(|e| format!("cannot run kill: {e}"))?;
            match status.success() {
                true => Ok(sent),
                false => Err(format!("kill -INT failed: {status}")),
            }
        }

        /// Send SIGINT with the kill(2) system call: the send time is then exact, for measuring
        /// latency (the `kill` command adds its own start-up, milliseconds, to the figure).
        fn sigint_now(&self) -> Result<u128, String> {
            let pid = libc::pid_t::try_from(self.process.id()).map_err(|e| e.to_string())?;
            let sent = now_us();
            // SAFETY: kill(2) takes two integers and touches no memory; `pid` is our own child,
            // which has not been waited for, so the pid cannot have been reused.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::kill(pid, libc::SIGINT) };
            match rc {
                0 => Ok(sent),
                _ => Err(format!(
                    "kill(2) failed: {}",
                    std::io::Error::last_os_error()
                )),
            }
        }

        fn still_running(&mut self) -> bool {
            matches!(self.process.try_wait(), Ok(None))
        }

        /// Wait for the child to exit (killing it after [`WAIT`]); how it ended.
        fn finish(mut self) -> Result<Outcome, String> {
            let deadline = Instant::now() + WAIT;
            let status = loop {
                if let Some(status) = self.process.try_wait().map_err(|e| e.to_string())? {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = self.process.kill();
                    return Err(format!(
                        "{}: did not exit within {WAIT:?}; saw {:?}",
                        self.name, self.seen
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            self.seen.extend(self.lines.iter());
            let err = self.stderr.join().unwrap_or_default();
            Ok(Outcome {
                status,
                out: self.seen,
                err,
            })
        }
    }

    /// How a child ended: its exit status and what it printed.
    struct Outcome {
        status: ExitStatus,
        out: Vec<String>,
        err: String,
    }

    impl Outcome {
        /// Ok if `ok`; otherwise an error saying `what` with the child's output.
        fn check(&self, ok: bool, what: &str) -> Result<(), String> {
            match ok {
                true => Ok(()),
                false => Err(format!(
                    "{what}\n    stdout: {:?}\n    stderr: {}",
                    self.out, self.err
                )),
            }
        }

        /// Where the first line starting with `prefix` is in stdout.
        fn index_of(&self, prefix: &str) -> Option<usize> {
            self.out.iter().position(|l| l.starts_with(prefix))
        }

        fn exited(&self, exit: Exit) -> bool {
            match exit {
                Exit::Normally => self.status.success(),
                Exit::KilledBySigint => self.status.signal() == Some(libc::SIGINT),
                Exit::Status(code) => self.status.code() == Some(code),
            }
        }

        fn holds(&self, check: Check) -> bool {
            match check {
                Check::Printed(prefix) => self.index_of(prefix).is_some(),
                Check::NotPrinted(prefix) => self.index_of(prefix).is_none(),
                Check::Before(first, then) => {
                    let (first, then) = (self.index_of(first), self.index_of(then));
                    matches!((first, then), (Some(a), Some(b)) if a < b)
                }
                Check::Count { n, starts, ends } => {
                    let matching = |l: &&String| l.starts_with(starts) && l.ends_with(ends);
                    self.out.iter().filter(matching).count() == n
                }
                Check::Stderr(text) => self.err.contains(text),
                Check::NotStderr(text) => !self.err.contains(text),
            }
        }

        /// Check the exit, then each of `checks`.
        fn verify(&self, exit: (Exit, &str), checks: &[(Check, &str)]) -> Result<(), String> {
            self.check(self.exited(exit.0), exit.1)?;
            checks
                .iter()
                .try_for_each(|&(check, what)| self.check(self.holds(check), what))
        }
    }

    /// Start the child, take the scenario's steps, wait for the child to exit, then check it.
    fn run_scenario(scenario: &Scenario) -> Result<(), String> {
        let mut child = Child::start(scenario.name)?;
        // The last Ctrl-C: when the driver pressed it, and the clock the child compares with.
        let mut pressed: Option<(Instant, u128)> = None;
        let mut lines_at: Vec<(&str, Instant)> = Vec::new();
        for &step in scenario.steps {
            match step {
                Step::Line(prefix) => {
                    child.expect_line(prefix)?;
                    lines_at.push((prefix, Instant::now()));
                }
                Step::Pause(ms) => std::thread::sleep(Duration::from_millis(ms)),
                Step::CtrlC => pressed = Some((Instant::now(), child.sigint()?)),
                Step::CtrlCExact => pressed = Some((Instant::now(), child.sigint_now()?)),
                Step::StillRunning(why) => {
                    if !child.still_running() {
                        return child.finish()?.check(false, why);
                    }
                }
            }
        }
        let outcome = child.finish()?;
        let exited = Instant::now();
        let Some(timing) = scenario.timing else {
            return outcome.verify(scenario.exit, scenario.checks);
        };
        let took = measure(timing, pressed, &lines_at, exited, &outcome)?;
        let target = timing.target.map_or(String::new(), |target| {
            format!(" (target < {} ms)", target.as_millis())
        });
        let ms = took.as_secs_f64() * 1000.0;
        println!("    {}: {ms:.3} ms{target}", timing.label);
        outcome.verify(scenario.exit, scenario.checks)?;
        match timing.target {
            Some(target) => outcome.check(
                took < target * 10,
                &format!("{}: within 10x the {target:?} target", timing.label),
            ),
            None => Ok(()),
        }
    }

    /// The time from the last Ctrl-C press to where `timing` ends.
    fn measure(
        timing: Timing,
        pressed: Option<(Instant, u128)>,
        lines_at: &[(&str, Instant)],
        exited: Instant,
        outcome: &Outcome,
    ) -> Result<Duration, String> {
        let (at, sent_us) = pressed.ok_or("a timing needs a Ctrl-C press")?;
        match timing.until {
            Until::Exit => Ok(exited - at),
            Until::Line(prefix) => lines_at
                .iter()
                .find(|(p, _)| *p == prefix)
                .map(|&(_, seen)| seen - at)
                .ok_or_else(|| format!("no step waited for {prefix:?}")),
            Until::Stamp(prefix) => {
                let line = outcome.out.iter().find(|l| l.starts_with(prefix));
                let stamp = line.ok_or_else(|| format!("no line starting with {prefix:?}"))?;
                let ran: u128 = stamp
                    .trim_start_matches(prefix)
                    .parse()
                    .map_err(|e| format!("{stamp:?}: {e}"))?;
                let us = u64::try_from(ran.saturating_sub(sent_us)).unwrap_or(u64::MAX);
                Ok(Duration::from_micros(us))
            }
        }
    }

    /// The path of an example binary, built first if this run did not build it.
    fn example(name: &str) -> Result<std::path::PathBuf, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .ok_or("no target directory")?;
        let path = profile_dir.join("examples").join(name);
        if !path.exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--example", name])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .map_err(|e| format!("cannot run cargo to build the example: {e}"))?;
            if !status.success() || !path.exists() {
                return Err(format!("could not build example {name}: {status}"));
            }
        }
        Ok(path)
    }

    /// Start example `name` with `args` and wait for it to listen; the child and its address.
    fn start_server(name: &'static str, args: &[&str]) -> Result<(Child, String), String> {
        let mut command = Command::new(example(name)?);
        command.args(args);
        let mut child = Child::spawn(name, command)?;
        let listening = child.expect_line("listening on ")?;
        let addr = listening.trim_start_matches("listening on ").to_owned();
        Ok((child, addr))
    }

    /// A connection to `addr` that has sent `request`; its reads give up after 10 s.
    fn connect(addr: &str, request: &[u8]) -> Result<TcpStream, String> {
        let mut client = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        client.write_all(request).map_err(|e| e.to_string())?;
        Ok(client)
    }

    /// Everything the server sends `client` until it closes the connection.
    fn read_rest(client: &mut TcpStream) -> Result<String, String> {
        let mut rest = String::new();
        client
            .read_to_string(&mut rest)
            .map_err(|e| format!("reading until the server closed: {e}"))?;
        Ok(rest)
    }

    /// The graceful_shutdown example: echoes, says goodbye on Ctrl-C, ends killed by SIGINT.
    fn example_graceful_shutdown() -> Result<(), String> {
        let (mut child, addr) = start_server("graceful_shutdown", &["0"])?;
        let mut client = connect(&addr, b"hello\n")?;
        let mut echo = [0_u8; 6];
        client
            .read_exact(&mut echo)
            .map_err(|e| format!("no echo: {e}"))?;
        child.expect_line("client ")?;
        child.sigint()?;
        let rest = read_rest(&mut client)?;
        let outcome = child.finish()?;
        outcome.check(&echo == b"hello\n", "the server echoed the line")?;
        outcome.check(
            rest.contains("goodbye"),
            &format!("the client was told goodbye (got {rest:?})"),
        )?;
        outcome.verify(
            (Exit::KilledBySigint, "the server ends killed by SIGINT"),
            &[],
        )
    }

    /// The http_server example: requests in flight when SIGINT arrives all get their response,
    /// the server drains its connections and ends killed by SIGINT.
    fn example_http_server_drains_in_flight() -> Result<(), String> {
        const CLIENTS: usize = 4;
        let (mut child, addr) = start_server("http_server", &["0", "10000"])?;
        let mut clients = (0..CLIENTS)
            .map(|_| connect(&addr, b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n"))
            .collect::<Result<Vec<_>, _>>()?;
        for _ in 0..CLIENTS {
            child.expect_line("request started")?;
        }
        child.sigint()?;
        let responses = clients
            .iter_mut()
            .map(read_rest)
            .collect::<Result<Vec<_>, _>>()?;
        let outcome = child.finish()?;
        let complete = responses
            .iter()
            .filter(|r| r.starts_with("HTTP/1.1 200 OK") && r.ends_with("hello\n"))
            .count();
        outcome.check(
            complete == CLIENTS,
            &format!("every request in flight got its response: {responses:?}"),
        )?;
        outcome.check(
            outcome
                .index_of(&format!("draining {CLIENTS} connection(s)"))
                .is_some()
                && outcome.index_of("all connections drained").is_some(),
            "the server drained its connections within the grace period",
        )?;
        outcome.verify(
            (Exit::KilledBySigint, "the server ends killed by SIGINT"),
            &[],
        )
    }

    pub fn run() {
        let filter: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        type Test = Box<dyn Fn() -> Result<(), String>>;
        let mut tests: Vec<(&str, Test)> = SCENARIOS
            .iter()
            .map(|s| (s.name, Box::new(|| run_scenario(s)) as Test))
            .collect();
        tests.push((
            "example_graceful_shutdown_says_goodbye",
            Box::new(example_graceful_shutdown),
        ));
        tests.push((
            "example_http_server_drains_in_flight_requests",
            Box::new(example_http_server_drains_in_flight),
        ));
        let (mut passed, mut failed) = (0, 0);
        println!(
            "\nrunning {} Ctrl-C tests (child processes, real SIGINT)",
            tests.len()
        );
        for (name, test) in tests {
            if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
                continue;
            }
            match test() {
                Ok(()) => {
                    println!("test {name} ... ok");
                    passed += 1;
                }
                Err(why) => {
                    println!("test {name} ... FAILED\n    {why}");
                    failed += 1;
                }
            }
        }
        println!("\n{passed} passed, {failed} failed");
        if failed > 0 {
            std::process::exit(1);
        }
    }
}

#[cfg(not(unix))]
mod driver {
    pub fn run() {
        println!("Ctrl-C tests send SIGINT with `kill` and run on Unix only");
        println!("0 passed, 0 failed");
    }
}
