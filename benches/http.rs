//! `cargo bench --bench http`: a hyper 1.x HTTP/1.1 "hello" server on runner (on its own I/O
//! driver, `runner::net`, and on async-io's sockets), on raw smol (`async_executor::LocalExecutor`
//! driven by `async_io::block_on`) and on tokio's current-thread runtime, each on one server
//! thread, and the same on two worker threads, loaded by the same client.
//!
//! The client runs in this process on its own thread: `CONNECTIONS` keep-alive connections, each
//! sending a request and reading the response in turn, `REQUESTS` requests in all. Each round runs
//! every server once, in a rotating order; the table gives the medians of requests per second, of
//! the server thread's CPU time per request, and of the per-round ratios.
//! `BENCH_ROUNDS=N` sets the number of rounds (default 9), `HTTP_REQUESTS=N` the requests a round,
//! `HTTP_SERVERS='runner::net|tokio*'` the servers to run (names, or prefixes ending in `*`). Under `cargo test` (no `--bench`) each
//! server serves a few requests once, as a smoke test.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_io::Async;
use futures_lite::FutureExt;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};

mod common;

const CONNECTIONS: usize = 32;

/// Threads of the multi-thread servers: runner's workers, smol's `Executor`, tokio's runtime.
const THREADS: usize = 2;

async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}

/// The CPU time `clock` (this thread's, or the whole process's) has used.
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A server running on its own thread (and the threads it starts) until told to stop. Its CPU
/// time is the process's, less the client thread's: the multi-thread servers' work is spread
/// over threads of their own.
struct Server {
    addr: SocketAddr,
    stop: async_channel::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    cpu_before: Duration,
}

impl Server {
    /// Start `serve(listener, stop)` on a new thread.
    fn start<F>(
        serve: impl FnOnce(TcpListener, async_channel::Receiver<()>) -> F + Send + 'static,
    ) -> Server
    where
        F: FnOnce(),
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let (stop, stopped) = async_channel::bounded(1);
        let (ready, is_ready) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let run = serve(listener, stopped);
            ready.send(()).expect("the bench waits for the server");
            run();
        });
        is_ready.recv().expect("the server thread starts");
        let cpu_before = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID);
        Server {
            addr,
            stop,
            thread,
            cpu_before,
        }
    }

    /// Stop the server; the process's CPU time since it started, less `client_cpu`.
    fn finish(self, client_cpu: Duration) -> Duration {
        let _ = self.stop.send_blocking(());
        self.thread.join().expect("the server thread ends");
        let used = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID) - self.cpu_before;
        used.saturating_sub(client_cpu)
    }
}

/// One connection, served by hyper over an async-io socket (runner and smol).
async fn serve(stream: Async<TcpStream>) {
    let io = smol_hyper::rt::FuturesIo::new(stream);
    let _ = http1::Builder::new()
        .serve_connection(io, service_fn(hello))
        .await;
}

/// Accept connections on `listener` until `stop`, handing each to `spawn`.
async fn accept_until_stopped(
    listener: TcpListener,
    stop: async_channel::Receiver<()>,
    spawn: impl Fn(Async<TcpStream>),
) {
    let listener = Async::new(listener).expect("a non-blocking listener");
    let accept = async {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            spawn(stream);
        }
    };
    accept
        .or(async {
            let _ = stop.recv().await;
        })
        .await;
}

/// One connection, served by hyper over a `runner::net` socket (hyper's own I/O traits, the
/// `hyper` feature).
async fn serve_net(stream: runner::net::TcpStream) {
    let _ = http1::Builder::new()
        .serve_connection(stream, service_fn(hello))
        .await;
}

/// The same through smol-hyper's adapter from futures-io.
async fn serve_net_adapted(stream: runner::net::TcpStream) {
    let io = smol_hyper::rt::FuturesIo::new(stream);
    let _ = http1::Builder::new()
        .serve_connection(io, service_fn(hello))
        .await;
}

/// Accept connections on `listener` with runner's own driver until `stop`, handing each to
/// `spawn`.
async fn accept_net_until_stopped(
    listener: TcpListener,
    stop: async_channel::Receiver<()>,
    spawn: impl Fn(runner::net::TcpStream),
) {
    let listener = runner::net::TcpListener::from_std(listener).expect("a registered listener");
    let accept = async {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            spawn(stream);
        }
    };
    accept
        .or(async {
            let _ = stop.recv().await;
        })
        .await;
}

/// runner on its own I/O driver (`runner::net`): the accept loop is the main task; each
/// connection a task.
fn runner_net(listener: TcpListener, stop: async_channel::Receiver<()>) -> impl FnOnce() {
    move || {
        runner::Runner::builder()
            .debug(false)
            .run(accept_net_until_stopped(listener, stop, |s| {
                drop(runner::spawn(serve_net(s)))
            }))
            .expect("the runner runs");
    }
}

/// The same, through smol-hyper's adapter.
fn runner_net_adapted(listener: TcpListener, stop: async_channel::Receiver<()>) -> impl FnOnce() {
    move || {
        runner::Runner::builder()
            .debug(false)
            .run(accept_net_until_stopped(listener, stop, |s| {
                drop(runner::spawn(serve_net_adapted(s)))
            }))
            .expect("the runner runs");
    }
}

/// runner on its own I/O driver with `THREADS` workers: each connection a `spawn_send` task.
fn runner_net_workers(listener: TcpListener, stop: async_channel::Receiver<()>) -> impl FnOnce() {
    move || {
        runner::Runner::builder()
            .debug(false)
            .workers(THREADS)
            .run(accept_net_until_stopped(listener, stop, |s| {
                drop(runner::spawn_send(serve_net(s)))
            }))
            .expect("the runner runs");
    }
}

/// runner with async-io's sockets (async-net's): the accept loop is the main task; each
/// connection a task.
fn runner_server(listener: TcpListener, stop: async_channel::Receiver<()>) -> impl FnOnce() {
    move || {
        runner::Runner::builder()
            .debug(false)
            .run(accept_until_stopped(listener, stop, |s| {
                drop(runner::spawn(serve(s)))
            }))
            .expect("the runner runs");
    }
}

/// runner with `THREADS` workers: each connection a `spawn_send` task on the pool.
fn runner_workers(listener: TcpListener, stop: async_channel::Receiver<()>) -> impl FnOnce() {
    move || {
        runner::Runner::builder()
            .debug(false)
            .workers(THREADS)
            .run(accept_until_stopped(listener, stop, |s| {
                drop(runner::spawn_send(serve(s)))
            }))
            .expect("the runner runs");
    }
}

/// Raw smol components: `LocalExecutor` driven by `async_io::block_on`.
fn smol_server(listener: TcpListener, stop: async_channel::Receiver<()>) -> impl FnOnce() {
    move || {
        let ex = async_executor::LocalExecutor::new();
        let accept = accept_until_stopped(listener, stop, |s| ex.spawn(serve(s)).detach());
        async_io::block_on(ex.run(accept));
    }
}

/// smol's multi-thread `Executor` on `THREADS` threads (as smol-macros runs it), the accept
/// loop on the first.
fn smol_executor(listener: TcpListener, stop: async_channel::Receiver<()>) -> impl FnOnce() {
    move || {
        let helpers = common::ExecutorThreads::start(THREADS - 1);
        let ex = helpers.ex.clone();
        let accept = accept_until_stopped(listener, stop, |s| ex.spawn(serve(s)).detach());
        async_io::block_on(ex.run(accept));
    }
}

/// tokio's current-thread runtime, with hyper-util's adapter for tokio's sockets.
fn tokio_server(listener: TcpListener, stop: async_channel::Receiver<()>) -> impl FnOnce() {
    tokio_server_on(
        tokio::runtime::Builder::new_current_thread(),
        listener,
        stop,
    )
}

/// tokio's multi-thread runtime on `THREADS` worker threads.
fn tokio_multi(listener: TcpListener, stop: async_channel::Receiver<()>) -> impl FnOnce() {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(THREADS);
    tokio_server_on(builder, listener, stop)
}

fn tokio_server_on(
    mut builder: tokio::runtime::Builder,
    listener: TcpListener,
    stop: async_channel::Receiver<()>,
) -> impl FnOnce() {
    move || {
        let rt = builder.enable_all().build().expect("a tokio runtime");
        rt.block_on(async move {
            listener.set_nonblocking(true).expect("non-blocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            let accept = async {
                loop {
                    let (stream, _) = listener.accept().await.expect("accept");
                    let io = hyper_util::rt::TokioIo::new(stream);
                    tokio::task::spawn(async move {
                        let _ = http1::Builder::new()
                            .serve_connection(io, service_fn(hello))
                            .await;
                    });
                }
            };
            tokio::select! {
                _ = accept => {}
                _ = stop.recv() => {}
            }
        });
    }
}

/// Send `requests` requests over `CONNECTIONS` keep-alive connections, one request in flight per
/// connection, from one client thread; the wall time. The client runs on a tokio current-thread
/// runtime of its own: it shares no reactor with any of the servers (runner and raw smol use
/// async-io's, the tokio server its own runtime's).
fn load(addr: SocketAddr, requests: usize) -> (Duration, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let per_connection = (requests / CONNECTIONS).max(1);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the client's runtime");
        let cpu_before = cpu_time(libc::CLOCK_THREAD_CPUTIME_ID);
        let took = rt.block_on(async move {
            let started = Instant::now();
            let connections: Vec<_> = (0..CONNECTIONS.min(requests))
                .map(|_| {
                    tokio::task::spawn(async move {
                        let mut stream = tokio::net::TcpStream::connect(addr)
                            .await
                            .expect("connect to the server");
                        stream.set_nodelay(true).expect("nodelay");
                        let mut buf = [0_u8; 512];
                        for _ in 0..per_connection {
                            stream.write_all(REQUEST).await.expect("send a request");
                            let mut got = 0;
                            loop {
                                let n = stream.read(&mut buf[got..]).await.expect("read");
                                assert!(n > 0, "the server closed the connection");
                                got += n;
                                if buf[..got].ends_with(b"hello\n") {
                                    break;
                                }
                            }
                        }
                    })
                })
                .collect();
            for connection in connections {
                connection.await.expect("a client connection finishes");
            }
            started.elapsed()
        });
        (took, cpu_time(libc::CLOCK_THREAD_CPUTIME_ID) - cpu_before)
    })
    .join()
    .expect("the client thread finishes")
}

type ServerFn = fn(TcpListener, async_channel::Receiver<()>) -> Box<dyn FnOnce() + Send>;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds: usize = match benching {
        true => std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(9),
        false => 1,
    };
    let requests = std::env::var("HTTP_REQUESTS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if benching { 64_000 } else { CONNECTIONS });
    let all: [(&str, ServerFn); 9] = [
        ("runner::net", |l, s| Box::new(runner_net(l, s))),
        ("runner::net, smol-hyper adapter", |l, s| {
            Box::new(runner_net_adapted(l, s))
        }),
        ("runner, async-io sockets", |l, s| {
            Box::new(runner_server(l, s))
        }),
        ("raw smol", |l, s| Box::new(smol_server(l, s))),
        ("tokio current-thread", |l, s| Box::new(tokio_server(l, s))),
        ("runner::net, 2 workers", |l, s| {
            Box::new(runner_net_workers(l, s))
        }),
        ("runner, async-io sockets, 2 workers", |l, s| {
            Box::new(runner_workers(l, s))
        }),
        ("smol Executor, 2 threads", |l, s| {
            Box::new(smol_executor(l, s))
        }),
        ("tokio multi-thread, 2 workers", |l, s| {
            Box::new(tokio_multi(l, s))
        }),
    ];
    // `HTTP_SERVERS='runner::net|tokio*'` (names, or prefixes ending in `*`, separated by `|`)
    // keeps only those servers, to profile one.
    let only = std::env::var("HTTP_SERVERS").unwrap_or_default();
    let kept = |name: &str| {
        only.split('|').any(|o| match o.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == o,
        })
    };
    let servers: Vec<_> = all
        .into_iter()
        .filter(|(name, _)| only.is_empty() || kept(name))
        .collect();
    // Per server: requests per second and server CPU time per request, per round.
    let mut rps = vec![Vec::new(); servers.len()];
    let mut cpu = vec![Vec::new(); servers.len()];
    for round in 0..rounds {
        for k in 0..servers.len() {
            let i = (round + k) % servers.len();
            let server = Server::start(servers[i].1);
            let (took, client_cpu) = load(server.addr, requests);
            let cpu_time = server.finish(client_cpu);
            let served = (requests / CONNECTIONS).max(1) * CONNECTIONS.min(requests);
            rps[i].push(served as f64 / took.as_secs_f64());
            cpu[i].push(cpu_time.as_secs_f64() * 1e6 / served as f64);
        }
    }
    let ratio = |xs: &[Vec<f64>], a: usize, b: usize| {
        median(xs[a].iter().zip(&xs[b]).map(|(x, y)| x / y).collect())
    };
    println!(
        "hyper 1.x \"hello\", HTTP/1.1 keep-alive, {CONNECTIONS} connections, {requests} requests \
         a round, {rounds} rounds; medians\n"
    );
    println!("| server | req/s | server CPU per request | req/s vs runner | CPU vs runner |");
    println!("|---|---|---|---|---|");
    for (i, (name, _)) in servers.iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.2} µs | {:.2} | {:.2} |",
            median(rps[i].clone()),
            median(cpu[i].clone()),
            ratio(&rps, i, 0),
            ratio(&cpu, i, 0),
        );
    }
    let index = |name: &str| servers.iter().position(|(n, _)| *n == name);
    let pairs = [
        ("runner::net", "tokio current-thread"),
        ("runner::net, smol-hyper adapter", "tokio current-thread"),
        ("runner::net", "runner::net, smol-hyper adapter"),
        ("runner::net", "raw smol"),
        ("runner, async-io sockets", "raw smol"),
        ("runner, async-io sockets", "tokio current-thread"),
        ("runner::net, 2 workers", "tokio multi-thread, 2 workers"),
        (
            "runner, async-io sockets, 2 workers",
            "smol Executor, 2 threads",
        ),
        (
            "runner, async-io sockets, 2 workers",
            "tokio multi-thread, 2 workers",
        ),
    ];
    println!();
    for (a, b) in pairs {
        if let (Some(i), Some(j)) = (index(a), index(b)) {
            println!(
                "{a} / {b}: req/s {:.2}, CPU per request {:.2}",
                ratio(&rps, i, j),
                ratio(&cpu, i, j)
            );
        }
    }
}
