//! `cargo bench --bench runtime`: runner against the raw smol components it is built on
//! (`async_executor::LocalExecutor` driven by `async_io::block_on`) and against tokio's
//! current-thread runtime, in the same process and the same run.
//!
//! The machines are shared and noisy, so variants are interleaved (each round runs every
//! variant once, in a rotating order) and the table quotes medians: the median time of each
//! variant and the median of the per-round ratios. Under `cargo test` (no `--bench` flag) every
//! workload runs once at a small size, as a smoke test.
//!
//! `BENCH_ROUNDS=N` sets the number of rounds (default 15); words after `--` keep only the
//! workloads whose name contains one of them: `cargo bench --bench runtime -- context spawn`.

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant};

use async_executor::LocalExecutor;
use runner::{Context, ContextVar, Runner};

/// One timed sample of a variant at a given size.
type Sample = Box<dyn Fn(usize) -> Duration>;

mod common;

struct Workload {
    name: &'static str,
    /// Operations per sample, to show time per operation.
    size: usize,
    unit: &'static str,
    runner: Sample,
    raw: Option<Sample>,
    tokio: Option<Sample>,
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// Time `body` inside a fresh runner (the runner's startup and close are not timed).
fn in_runner<F: Future<Output = ()>>(body: impl FnOnce() -> F) -> Duration {
    let runner = Runner::builder().debug(false).build();
    runner
        .run(async {
            let t = Instant::now();
            body().await;
            t.elapsed()
        })
        .expect("runner run")
}

fn in_raw<F: Future<Output = ()>>(body: impl FnOnce(&LocalExecutor<'static>) -> F) -> Duration {
    let ex = LocalExecutor::new();
    async_io::block_on(ex.run(async {
        let t = Instant::now();
        body(&ex).await;
        t.elapsed()
    }))
}

fn in_tokio<F: Future<Output = ()>>(body: impl FnOnce() -> F) -> Duration {
    tokio_rt().block_on(async {
        let t = Instant::now();
        body().await;
        t.elapsed()
    })
}

static VARS: [ContextVar<u64>; 8] = [
    ContextVar::new("v0"),
    ContextVar::new("v1"),
    ContextVar::new("v2"),
    ContextVar::new("v3"),
    ContextVar::new("v4"),
    ContextVar::new("v5"),
    ContextVar::new("v6"),
    ContextVar::new("v7"),
];

thread_local! {
    static TLS_VALUE: Cell<u64> = const { Cell::new(7) };
}

tokio::task_local! {
    static TASK_LOCAL: u64;
}

/// A context with `n` variables set (beyond the eight statics, fresh variables are leaked:
/// a benchmark's lifetime is the process's).
fn context_with(n: usize) -> Context {
    let mut ctx = Context::new();
    ctx.run(|| {
        for (i, var) in VARS.iter().enumerate().take(n) {
            var.set(i as u64);
        }
        for i in VARS.len()..n {
            let var: &'static ContextVar<u64> = Box::leak(Box::new(ContextVar::new("extra")));
            var.set(i as u64);
        }
    });
    ctx
}

fn workloads(scale: usize) -> Vec<Workload> {
    let n = |full: usize| (full / scale).max(1);
    vec![
        Workload {
            name: "startup (build, run async { 1 }, close)",
            size: n(200),
            unit: "run",
            runner: Box::new(|size| {
                let t = Instant::now();
                for _ in 0..size {
                    black_box(runner::run(async { 1 }).expect("run"));
                }
                t.elapsed()
            }),
            raw: Some(Box::new(|size| {
                let t = Instant::now();
                for _ in 0..size {
                    let ex = LocalExecutor::new();
                    black_box(async_io::block_on(ex.run(async { 1 })));
                }
                t.elapsed()
            })),
            tokio: Some(Box::new(|size| {
                let t = Instant::now();
                for _ in 0..size {
                    black_box(tokio_rt().block_on(async { 1 }));
                }
                t.elapsed()
            })),
        },
        Workload {
            name: "spawn 10,000 tasks and join them",
            size: n(10_000),
            unit: "task",
            runner: Box::new(|size| {
                in_runner(|| async move {
                    let tasks: Vec<_> =
                        (0..size).map(|i| runner::spawn(async move { i })).collect();
                    for t in tasks {
                        black_box(t.await.expect("task"));
                    }
                })
            }),
            raw: Some(Box::new(|size| {
                in_raw(|ex| {
                    let tasks: Vec<_> = (0..size).map(|i| ex.spawn(async move { i })).collect();
                    async move {
                        for t in tasks {
                            black_box(t.await);
                        }
                    }
                })
            })),
            tokio: Some(Box::new(|size| {
                in_tokio(|| async move {
                    let tasks: Vec<_> = (0..size).map(|i| tokio::spawn(async move { i })).collect();
                    for t in tasks {
                        black_box(t.await.expect("task"));
                    }
                })
            })),
        },
        Workload {
            name: "spawn 10,000 Send tasks on 2 worker threads and join them (raw: async_executor::Executor, tokio: multi-thread)",
            size: n(10_000),
            unit: "task",
            runner: Box::new(|size| {
                runner::Runner::builder()
                    .debug(false)
                    .workers(2)
                    .run(async move {
                        // The pool starts with the run; let its threads come up first.
                        runner::spawn_send(async {}).await.expect("warm-up");
                        let t = Instant::now();
                        let tasks: Vec<_> = (0..size)
                            .map(|i| runner::spawn_send(async move { i }))
                            .collect();
                        for t in tasks {
                            black_box(t.await.expect("task"));
                        }
                        t.elapsed()
                    })
                    .expect("the runner runs")
            }),
            raw: Some(Box::new(|size| {
                let threads = common::ExecutorThreads::start(2);
                let ex = &threads.ex;
                async_io::block_on(async {
                    ex.spawn(async {}).await;
                    let t = Instant::now();
                    let tasks: Vec<_> = (0..size).map(|i| ex.spawn(async move { i })).collect();
                    for t in tasks {
                        black_box(t.await);
                    }
                    t.elapsed()
                })
            })),
            tokio: Some(Box::new(|size| {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .build()
                    .expect("a tokio runtime");
                rt.block_on(async move {
                    tokio::spawn(async {}).await.expect("warm-up");
                    let t = Instant::now();
                    let tasks: Vec<_> = (0..size).map(|i| tokio::spawn(async move { i })).collect();
                    for t in tasks {
                        black_box(t.await.expect("task"));
                    }
                    t.elapsed()
                })
            })),
        },
        Workload {
            name: "one task yielding 100,000 times",
            size: n(100_000),
            unit: "yield",
            runner: Box::new(|size| {
                in_runner(|| async move {
                    runner::spawn(async move {
                        for _ in 0..size {
                            runner::yield_now().await;
                        }
                    })
                    .await
                    .expect("task")
                })
            }),
            raw: Some(Box::new(|size| {
                in_raw(|ex| {
                    ex.spawn(async move {
                        for _ in 0..size {
                            futures_lite::future::yield_now().await;
                        }
                    })
                })
            })),
            tokio: Some(Box::new(|size| {
                in_tokio(|| async move {
                    tokio::spawn(async move {
                        for _ in 0..size {
                            tokio::task::yield_now().await;
                        }
                    })
                    .await
                    .expect("task")
                })
            })),
        },
        Workload {
            name: "ping-pong 100,000 round trips, bounded(1)",
            size: n(100_000),
            unit: "trip",
            runner: Box::new(|size| {
                in_runner(|| async move {
                    let (ping, pong) = ping_pong(size);
                    let a = runner::spawn(ping);
                    let b = runner::spawn(pong);
                    a.await.expect("ping");
                    b.await.expect("pong");
                })
            }),
            raw: Some(Box::new(|size| {
                in_raw(|ex| {
                    let (ping, pong) = ping_pong(size);
                    let (a, b) = (ex.spawn(ping), ex.spawn(pong));
                    async move {
                        a.await;
                        b.await;
                    }
                })
            })),
            tokio: Some(Box::new(|size| {
                in_tokio(|| async move {
                    let (ping, pong) = ping_pong(size);
                    let (a, b) = (tokio::spawn(ping), tokio::spawn(pong));
                    a.await.expect("ping");
                    b.await.expect("pong");
                })
            })),
        },
        Workload {
            name: "10,000 concurrent 1 ms sleeps",
            size: n(10_000),
            unit: "sleep",
            runner: Box::new(|size| {
                in_runner(|| async move {
                    let tasks: Vec<_> = (0..size)
                        .map(|_| runner::spawn(runner::sleep(Duration::from_millis(1))))
                        .collect();
                    for t in tasks {
                        t.await.expect("sleep");
                    }
                })
            }),
            raw: Some(Box::new(|size| {
                in_raw(|ex| {
                    let tasks: Vec<_> = (0..size)
                        .map(|_| {
                            ex.spawn(async {
                                async_io::Timer::after(Duration::from_millis(1)).await
                            })
                        })
                        .collect();
                    async move {
                        for t in tasks {
                            t.await;
                        }
                    }
                })
            })),
            tokio: Some(Box::new(|size| {
                in_tokio(|| async move {
                    let tasks: Vec<_> = (0..size)
                        .map(|_| tokio::spawn(tokio::time::sleep(Duration::from_millis(1))))
                        .collect();
                    for t in tasks {
                        t.await.expect("sleep");
                    }
                })
            })),
        },
        Workload {
            name: "shutdown with 10,000 pending tasks",
            size: n(10_000),
            unit: "task",
            runner: Box::new(|size| {
                let runner = Runner::builder().debug(false).build();
                runner
                    .run(async move {
                        for _ in 0..size {
                            drop(runner::spawn(std::future::pending::<()>()));
                        }
                        runner::yield_now().await;
                    })
                    .expect("run");
                let t = Instant::now();
                runner.close();
                t.elapsed()
            }),
            raw: Some(Box::new(|size| {
                let ex = LocalExecutor::new();
                let tasks: Vec<_> = (0..size)
                    .map(|_| ex.spawn(std::future::pending::<()>()))
                    .collect();
                async_io::block_on(ex.run(futures_lite::future::yield_now()));
                let t = Instant::now();
                async_io::block_on(ex.run(async move {
                    for task in tasks {
                        task.cancel().await;
                    }
                }));
                drop(ex);
                t.elapsed()
            })),
            tokio: Some(Box::new(|size| {
                let rt = tokio_rt();
                rt.block_on(async move {
                    for _ in 0..size {
                        drop(tokio::spawn(std::future::pending::<()>()));
                    }
                    tokio::task::yield_now().await;
                });
                let t = Instant::now();
                drop(rt);
                t.elapsed()
            })),
        },
        Workload {
            name: "ContextVar::get, 8 variables set (raw: thread_local!, tokio: task_local!)",
            size: n(1_000_000),
            unit: "get",
            runner: Box::new(|size| {
                let mut ctx = context_with(8);
                ctx.run(|| {
                    let t = Instant::now();
                    for _ in 0..size {
                        black_box(VARS[5].get());
                    }
                    t.elapsed()
                })
            }),
            raw: Some(Box::new(|size| {
                let t = Instant::now();
                for _ in 0..size {
                    black_box(TLS_VALUE.with(|v| v.get()));
                }
                t.elapsed()
            })),
            tokio: Some(Box::new(|size| {
                tokio_rt().block_on(TASK_LOCAL.scope(7, async move {
                    let t = Instant::now();
                    for _ in 0..size {
                        black_box(TASK_LOCAL.with(|v| *v));
                    }
                    t.elapsed()
                }))
            })),
        },
        Workload {
            name: "Context::run(|| ()), 8 variables set: the context swap around every poll",
            size: n(1_000_000),
            unit: "swap",
            runner: Box::new(|size| {
                let mut ctx = context_with(8);
                let t = Instant::now();
                for _ in 0..size {
                    black_box(&mut ctx).run(|| black_box(()));
                }
                t.elapsed()
            }),
            raw: None,
            tokio: None,
        },
        context_clone(1, n(1_000_000)),
        context_clone(8, n(1_000_000)),
        context_clone(64, n(1_000_000)),
        context_set(10, n(100_000)),
        context_set(1_000, n(100_000)),
        context_set(10_000, n(100_000)),
        Workload {
            name: "ContextVar::get, 10,000 variables set, 64 of them in turn (no cache hits)",
            size: n(1_000_000),
            unit: "get",
            runner: Box::new(|size| {
                let mut ctx = context_with(10_000);
                let vars: Vec<&'static ContextVar<u64>> = (0..64).map(|_| leaked_var()).collect();
                ctx.run(|| {
                    for var in &vars {
                        var.set(1);
                    }
                    let t = Instant::now();
                    for i in 0..size {
                        black_box(vars[i % 64].get());
                    }
                    t.elapsed()
                })
            }),
            raw: None,
            tokio: None,
        },
        Workload {
            name: "10,000 nested spawns, each setting its own variable",
            size: n(10_000),
            unit: "spawn",
            runner: Box::new(|size| {
                let vars: Vec<&'static ContextVar<u64>> = (0..size).map(|_| leaked_var()).collect();
                in_runner(|| nested_spawns(vars))
            }),
            raw: None,
            tokio: None,
        },
    ]
}

/// A fresh variable; leaked, as a benchmark's lifetime is the process's.
fn leaked_var() -> &'static ContextVar<u64> {
    Box::leak(Box::new(ContextVar::new("extra")))
}

/// Each task sets its own variable, then spawns the next and waits for it: the context grows by
/// one variable per level, and every level keeps its copy.
async fn nested_spawns(vars: Vec<&'static ContextVar<u64>>) {
    fn level(vars: std::rc::Rc<Vec<&'static ContextVar<u64>>>, i: usize) -> runner::Task<()> {
        runner::spawn(async move {
            vars[i].set(i as u64);
            if i + 1 < vars.len() {
                level(vars.clone(), i + 1)
                    .await
                    .expect("the next level finishes");
            }
        })
    }
    level(std::rc::Rc::new(vars), 0)
        .await
        .expect("the chain finishes");
}

/// `ContextVar::set` in a context with `vars` variables set.
fn context_set(vars: usize, size: usize) -> Workload {
    Workload {
        name: match vars {
            10 => "ContextVar::set, 10 variables set",
            1_000 => "ContextVar::set, 1,000 variables set",
            _ => "ContextVar::set, 10,000 variables set",
        },
        size,
        unit: "set",
        runner: Box::new(move |size| {
            let mut ctx = context_with(vars);
            ctx.run(|| {
                let t = Instant::now();
                for i in 0..size {
                    VARS[i % 8].set(black_box(i as u64));
                }
                t.elapsed()
            })
        }),
        raw: None,
        tokio: None,
    }
}

/// `Context::clone` with `vars` variables set: the copy every spawn makes. Flat in `vars`.
fn context_clone(vars: usize, size: usize) -> Workload {
    Workload {
        name: match vars {
            1 => "Context::clone, 1 variable set",
            8 => "Context::clone, 8 variables set",
            _ => "Context::clone, 64 variables set",
        },
        size,
        unit: "clone",
        runner: Box::new(move |size| {
            let ctx = context_with(vars);
            let t = Instant::now();
            for _ in 0..size {
                black_box(black_box(&ctx).clone());
            }
            t.elapsed()
        }),
        raw: None,
        tokio: None,
    }
}

/// Two futures exchanging `n` round trips over a pair of bounded(1) channels.
fn ping_pong(
    n: usize,
) -> (
    impl Future<Output = ()> + Send,
    impl Future<Output = ()> + Send,
) {
    let (to_b, from_a) = async_channel::bounded::<usize>(1);
    let (to_a, from_b) = async_channel::bounded::<usize>(1);
    let ping = async move {
        for i in 0..n {
            to_b.send(i).await.expect("send");
            black_box(from_b.recv().await.expect("recv"));
        }
    };
    let pong = async move {
        while let Ok(i) = from_a.recv().await {
            to_a.send(i).await.expect("send");
        }
    };
    (ping, pong)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn per_op(d: f64, size: usize) -> String {
    let ns = d / size as f64;
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = if benching {
        std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(15)
    } else {
        1
    };
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.to_lowercase())
        .collect();
    let workloads: Vec<Workload> = workloads(if benching { 1 } else { 100 })
        .into_iter()
        .filter(|w| filters.is_empty() || filters.iter().any(|f| w.name.to_lowercase().contains(f)))
        .collect();
    println!("runner benchmarks: {rounds} rounds, variants interleaved; medians (time per op) and medians of per-round ratios\n");
    println!("| workload | runner | raw smol | tokio current-thread | runner/raw | runner/tokio |");
    println!("|---|---|---|---|---|---|");
    for w in &workloads {
        // Warm up each variant once (page faults, lazy statics, the async-io reactor thread).
        let variants: Vec<&Sample> = [Some(&w.runner), w.raw.as_ref(), w.tokio.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        for v in &variants {
            v(w.size);
        }
        let mut times = vec![Vec::new(); 3];
        let (mut vs_raw, mut vs_tokio) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let mut this_round = [None; 3];
            for k in 0..3 {
                let which = (round + k) % 3;
                let sample = match which {
                    0 => Some(&w.runner),
                    1 => w.raw.as_ref(),
                    _ => w.tokio.as_ref(),
                };
                if let Some(sample) = sample {
                    this_round[which] = Some(sample(w.size).as_nanos() as f64);
                }
            }
            for (which, t) in this_round.iter().enumerate() {
                if let Some(t) = t {
                    times[which].push(*t);
                }
            }
            if let (Some(r), Some(x)) = (this_round[0], this_round[1]) {
                vs_raw.push(r / x);
            }
            if let (Some(r), Some(x)) = (this_round[0], this_round[2]) {
                vs_tokio.push(r / x);
            }
        }
        let cell = |t: &Vec<f64>| {
            if t.is_empty() {
                "-".to_owned()
            } else {
                format!("{}/{}", per_op(median(t.clone()), w.size), w.unit)
            }
        };
        let ratio = |r: &Vec<f64>| {
            if r.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.2}", median(r.clone()))
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            w.name,
            cell(&times[0]),
            cell(&times[1]),
            cell(&times[2]),
            ratio(&vs_raw),
            ratio(&vs_tokio)
        );
    }
}
