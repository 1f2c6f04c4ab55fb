//! `cargo bench --bench net`: runner's own sockets (`runner::net`) against tokio's current-thread
//! runtime (`tokio::net`) and raw smol (`async_io::Async` sockets, `async_executor::LocalExecutor`
//! driven by `async_io::block_on`).
//!
//! - **TCP echo**: one connection, a server task echoing and a client task sending 64 bytes and
//!   reading them back, both in one runtime on one thread; the time of a round trip.
//! - **Idle connections** (Linux): the server runs in a child process (this binary started
//!   again), with a task per connection waiting for one byte. The parent opens the connections
//!   and reads the child's resident memory (`VmRSS`) before and after: the bytes an idle
//!   connection costs the server (its task, its registered socket, its read future).
//!
//! Each round runs every variant once, in a rotating order; the table gives the medians and the
//! medians of the per-round ratios. `BENCH_ROUNDS=N` sets the number of rounds (default 9); words
//! after `--` keep only the workloads whose name contains one of them:
//! `cargo bench --bench net -- echo`. Under `cargo test` (no `--bench`) each workload runs once
//! at a small size, as a smoke test.

use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The size of an echoed message.
const MESSAGE: usize = 64;

/// Round trips before the timed ones, on each connection.
const ECHO_WARM_UP: usize = 100;

/// The variants, in table order.
const VARIANTS: [&str; 3] = ["runner", "raw", "tokio"];

/// Echo what `stream` sends until it closes (futures-io streams: runner's and async-io's).
async fn echo_futures(mut stream: impl AsyncRead + AsyncWrite + Unpin) {
    let mut buf = [0_u8; MESSAGE];
    loop {
        let n = stream.read(&mut buf).await.expect("the server reads");
        if n == 0 {
            return;
        }
        stream
            .write_all(&buf[..n])
            .await
            .expect("the server writes");
    }
}

/// Send `n` messages on `stream` and read each back, after a warm-up: the time the `n` took.
async fn client_futures(mut stream: impl AsyncRead + AsyncWrite + Unpin, n: usize) -> Duration {
    let message = [7_u8; MESSAGE];
    let mut buf = [0_u8; MESSAGE];
    let mut started = Instant::now();
    for i in 0..ECHO_WARM_UP + n {
        if i == ECHO_WARM_UP {
            started = Instant::now();
        }
        stream.write_all(&message).await.expect("the client writes");
        stream.read_exact(&mut buf).await.expect("the client reads");
    }
    started.elapsed()
}

/// runner on its own I/O driver: `runner::net`.
fn echo_runner(n: usize) -> Duration {
    runner::Runner::builder()
        .debug(false)
        .run(async move {
            let listener = runner::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a loopback port");
            let addr = listener.local_addr().expect("the bound address");
            let server = runner::spawn(async move {
                let (stream, _) = listener.accept().await.expect("accept");
                stream.set_nodelay(true).expect("nodelay");
                echo_futures(stream).await;
            });
            let client = runner::net::TcpStream::connect(addr)
                .await
                .expect("connect to the server");
            client.set_nodelay(true).expect("nodelay");
            let took = client_futures(client, n).await;
            server.await.expect("the server task");
            took
        })
        .expect("the runner runs")
}

/// Raw smol: `Async` sockets on async-io's reactor, a `LocalExecutor` under `block_on`.
fn echo_raw(n: usize) -> Duration {
    use async_io::Async;
    use std::net::{TcpListener, TcpStream};

    let ex = async_executor::LocalExecutor::new();
    async_io::block_on(ex.run(async {
        let listener =
            Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).expect("bind a loopback port");
        let addr = listener.get_ref().local_addr().expect("the bound address");
        let server = ex.spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            stream.get_ref().set_nodelay(true).expect("nodelay");
            echo_futures(stream).await;
        });
        let client = Async::<TcpStream>::connect(addr)
            .await
            .expect("connect to the server");
        client.get_ref().set_nodelay(true).expect("nodelay");
        let took = client_futures(client, n).await;
        server.await;
        took
    }))
}

/// tokio's current-thread runtime: `tokio::net`.
fn echo_tokio(n: usize) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            stream.set_nodelay(true).expect("nodelay");
            let mut buf = [0_u8; MESSAGE];
            loop {
                let n = stream.read(&mut buf).await.expect("the server reads");
                if n == 0 {
                    return;
                }
                stream
                    .write_all(&buf[..n])
                    .await
                    .expect("the server writes");
            }
        });
        let mut client = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the server");
        client.set_nodelay(true).expect("nodelay");
        let message = [7_u8; MESSAGE];
        let mut buf = [0_u8; MESSAGE];
        let mut started = Instant::now();
        for i in 0..ECHO_WARM_UP + n {
            if i == ECHO_WARM_UP {
                started = Instant::now();
            }
            client.write_all(&message).await.expect("the client writes");
            client.read_exact(&mut buf).await.expect("the client reads");
        }
        let took = started.elapsed();
        drop(client);
        server.await.expect("the server task");
        took
    })
}

/// The idle-connection workload: a server in a child process, its memory read from `/proc`.
#[cfg(target_os = "linux")]
mod idle {
    use std::future::Future;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::pin::pin;
    use std::process::{Child, ChildStdin, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use futures_lite::{AsyncReadExt, FutureExt};

    /// Set in a child process: the server it runs ("runner", "raw" or "tokio").
    const ROLE: &str = "RUNNER_NET_BENCH_SERVER";
    /// Set in a child process: it prints `idle <n>` each time this many more connections wait.
    const STEP: &str = "RUNNER_NET_BENCH_STEP";
    /// How long the parent waits for any answer of the child.
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

    /// The server a child process runs, if this process is one; it returns when the server
    /// stops (a line, or the end, on stdin).
    pub fn child() -> Option<()> {
        let kind = std::env::var(ROLE).ok()?;
        let step: usize = std::env::var(STEP)
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("the parent sets the report step");
        let (stop, stopped) = async_channel::bounded::<()>(1);
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            drop(stop);
        });
        let stopped = async move {
            let _ = stopped.recv().await;
        };
        match kind.as_str() {
            "runner" => serve_runner(step, stopped),
            "raw" => serve_raw(step, stopped),
            "tokio" => serve_tokio(step, stopped),
            other => panic!("unknown server kind {other:?}"),
        }
        Some(())
    }

    /// Connections whose task waits for its read.
    static IDLE: AtomicUsize = AtomicUsize::new(0);

    /// Await `read`; once it first waits, count the connection idle, and print `idle <n>` when
    /// `n` is a multiple of `step`.
    async fn hold<F: Future>(read: F, step: usize) {
        let mut read = pin!(read);
        let mut counted = false;
        std::future::poll_fn(|cx| {
            let polled = read.as_mut().poll(cx);
            if polled.is_pending() && !counted {
                counted = true;
                let n = IDLE.fetch_add(1, Ordering::Relaxed) + 1;
                if n % step == 0 {
                    println!("idle {n}");
                }
            }
            polled.map(drop)
        })
        .await
    }

    fn announce(addr: std::io::Result<std::net::SocketAddr>) {
        println!("port {}", addr.expect("the bound address").port());
    }

    fn serve_runner(step: usize, stopped: impl Future<Output = ()>) {
        runner::Runner::builder()
            .debug(false)
            .run(async move {
                let listener = runner::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind a loopback port");
                announce(listener.local_addr());
                let accept = async {
                    loop {
                        let (mut stream, _) = listener.accept().await.expect("accept");
                        drop(runner::spawn(async move {
                            let mut byte = [0_u8; 1];
                            hold(stream.read(&mut byte), step).await;
                        }));
                    }
                };
                accept.or(stopped).await;
            })
            .expect("the runner runs");
    }

    fn serve_raw(step: usize, stopped: impl Future<Output = ()>) {
        use async_io::Async;

        let ex = async_executor::LocalExecutor::new();
        async_io::block_on(ex.run(async {
            let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0))
                .expect("bind a loopback port");
            announce(listener.get_ref().local_addr());
            let accept = async {
                loop {
                    let (mut stream, _) = listener.accept().await.expect("accept");
                    ex.spawn(async move {
                        let mut byte = [0_u8; 1];
                        hold(stream.read(&mut byte), step).await;
                    })
                    .detach();
                }
            };
            accept.or(stopped).await;
        }));
    }

    fn serve_tokio(step: usize, stopped: impl Future<Output = ()>) {
        use tokio::io::AsyncReadExt;

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a loopback port");
            announce(listener.local_addr());
            let accept = async {
                loop {
                    let (mut stream, _) = listener.accept().await.expect("accept");
                    tokio::spawn(async move {
                        let mut byte = [0_u8; 1];
                        hold(stream.read(&mut byte), step).await;
                    });
                }
            };
            accept.or(stopped).await;
        });
    }

    /// A server in a child process; killed if dropped before it has exited.
    struct Server {
        kind: &'static str,
        child: Child,
        stdin: Option<ChildStdin>,
        lines: mpsc::Receiver<String>,
    }

    impl Server {
        fn start(kind: &'static str, step: usize) -> Server {
            let exe = std::env::current_exe().expect("the path of this bench");
            let mut child = Command::new(exe)
                .env(ROLE, kind)
                .env(STEP, step.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start a server process");
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().expect("the child's stdout");
            let (send, lines) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if send.send(line).is_err() {
                        return;
                    }
                }
            });
            Server {
                kind,
                child,
                stdin,
                lines,
            }
        }

        /// Wait for the line `expected`, skipping others; a child that does not answer within
        /// `ANSWER_TIMEOUT`, or ends, fails the bench.
        fn expect(&mut self, expected: &str) {
            self.expect_with(|line| (line == expected).then_some(()), expected);
        }

        fn expect_with<T>(&mut self, mut found: impl FnMut(&str) -> Option<T>, what: &str) -> T {
            let deadline = Instant::now() + ANSWER_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.lines.recv_timeout(left) {
                    Ok(line) => {
                        if let Some(value) = found(&line) {
                            return value;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                        "the {} server did not answer {what:?} within {} s; killed",
                        self.kind,
                        ANSWER_TIMEOUT.as_secs()
                    ),
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        let status = self.child.wait().expect("the server's exit status");
                        panic!(
                            "the {} server ended ({status}) before answering {what:?}",
                            self.kind
                        );
                    }
                }
            }
        }

        /// The child's resident memory, in bytes.
        fn rss(&self) -> u64 {
            let path = format!("/proc/{}/status", self.child.id());
            let status = std::fs::read_to_string(&path).expect("read the server's /proc status");
            let kb: u64 = status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .expect("a VmRSS line in /proc/<pid>/status");
            kb * 1024
        }

        /// Ask the child to stop, and wait for it to exit.
        fn stop(mut self) {
            if let Some(mut stdin) = self.stdin.take() {
                let _ = stdin.write_all(b"exit\n");
            }
            let deadline = Instant::now() + ANSWER_TIMEOUT;
            loop {
                match self.child.try_wait().expect("the server's exit status") {
                    Some(status) if status.success() => return,
                    Some(status) => panic!("the {} server failed: {status}", self.kind),
                    None if Instant::now() > deadline => panic!(
                        "the {} server did not exit within {} s; killed",
                        self.kind,
                        ANSWER_TIMEOUT.as_secs()
                    ),
                    None => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    /// Open `n` connections to `port`, `step` at a time, each batch waited for until the server
    /// holds it idle (so the listener's backlog never overflows); `held` already are.
    fn connect(server: &mut Server, port: u16, n: usize, step: usize, held: &mut Vec<TcpStream>) {
        for _ in 0..n / step {
            for _ in 0..step {
                let stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|err| {
                    panic!(
                        "connection {} to the {} server: {err}",
                        held.len() + 1,
                        server.kind
                    )
                });
                held.push(stream);
            }
            server.expect(&format!("idle {}", held.len()));
        }
    }

    /// Let this process and its children open `needed` files, raising the soft limit up to the
    /// hard one if it is lower: whether they can.
    fn allow_files(needed: u64) -> bool {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the valid, exclusively borrowed `limit`.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        if rc != 0 {
            return false;
        }
        if limit.rlim_cur >= needed {
            return true;
        }
        if limit.rlim_max < needed {
            return false;
        }
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one valid rlimit; the soft limit is raised to the hard one,
        // which an unprivileged process may do.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        rc == 0
    }

    /// Bytes of server memory per idle connection, for each kind: `connections` connections
    /// after `step` of warm-up (what the baseline includes), `step` at a time.
    pub fn sample(kind: &'static str, connections: usize, step: usize) -> f64 {
        let mut server = Server::start(kind, step);
        let port: u16 = server.expect_with(
            |line| line.strip_prefix("port ").and_then(|p| p.parse().ok()),
            "port <n>",
        );
        let mut held = Vec::with_capacity(connections + step);
        connect(&mut server, port, step, step, &mut held);
        let before = server.rss();
        connect(&mut server, port, connections, step, &mut held);
        let after = server.rss();
        server.stop();
        drop(held);
        after.saturating_sub(before) as f64 / connections as f64
    }

    /// Whether `connections` connections (and the warm-up's `step`) fit under the file limit.
    pub fn fits(connections: usize, step: usize) -> Result<(), String> {
        let needed = (connections + step + 64) as u64;
        match allow_files(needed) {
            true => Ok(()),
            false => Err(format!(
                "needs {needed} open files per process; raise `ulimit -n`"
            )),
        }
    }
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

/// `n` with a comma between thousands.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn time_per_trip(ns: f64) -> String {
    if ns >= 1_000.0 {
        format!("{:.2} µs/trip", ns / 1e3)
    } else {
        format!("{ns:.1} ns/trip")
    }
}

/// A workload: its name, one sample of a variant (its index in `VARIANTS`), and how a median
/// shows.
struct Workload {
    name: String,
    sample: Box<dyn Fn(usize) -> f64>,
    show: fn(f64) -> String,
    /// Whether to run each variant once before the rounds.
    warm_up: bool,
}

/// Run `w` for `rounds` rounds, the variants in a rotating order, and print its row.
fn run(w: &Workload, rounds: usize) {
    let mut values = vec![Vec::new(); VARIANTS.len()];
    let (mut vs_raw, mut vs_tokio) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut this_round = [0.0; 3];
        for k in 0..VARIANTS.len() {
            let which = (round + k) % VARIANTS.len();
            this_round[which] = (w.sample)(which);
            values[which].push(this_round[which]);
        }
        vs_raw.push(this_round[0] / this_round[1]);
        vs_tokio.push(this_round[0] / this_round[2]);
    }
    println!(
        "| {} | {} | {} | {} | {:.2} | {:.2} |",
        w.name,
        (w.show)(median(values[0].clone())),
        (w.show)(median(values[1].clone())),
        (w.show)(median(values[2].clone())),
        median(vs_raw),
        median(vs_tokio),
    );
}

/// The idle-connection workload, or why it is skipped. Each sample is a fresh server process,
/// warmed up by its first `step` connections.
#[cfg(target_os = "linux")]
fn idle_workload(name: String, connections: usize, step: usize) -> Result<Workload, String> {
    idle::fits(connections, step)?;
    Ok(Workload {
        name,
        sample: Box::new(move |which| idle::sample(VARIANTS[which], connections, step)),
        show: |bytes| format!("{bytes:.0} B/connection"),
        warm_up: false,
    })
}

#[cfg(not(target_os = "linux"))]
fn idle_workload(_: String, _: usize, _: usize) -> Result<Workload, String> {
    Err("it reads the server's memory from /proc: Linux only".to_owned())
}

fn main() {
    #[cfg(target_os = "linux")]
    if idle::child().is_some() {
        return;
    }
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = match benching {
        true => std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(9),
        false => 1,
    };
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.to_lowercase())
        .collect();
    let kept =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.to_lowercase().contains(f));
    let trips = if benching { 20_000 } else { 100 };
    let (connections, step) = if benching { (10_000, 100) } else { (100, 10) };

    let mut workloads = vec![Workload {
        name: format!("TCP echo, 1 connection, {MESSAGE}-byte messages: round-trip time"),
        sample: Box::new(move |which| {
            let took = match which {
                0 => echo_runner(trips),
                1 => echo_raw(trips),
                _ => echo_tokio(trips),
            };
            took.as_nanos() as f64 / trips as f64
        }),
        show: time_per_trip,
        warm_up: true,
    }];
    let idle_name = format!("{} idle connections: server memory", thousands(connections));
    let mut skipped = None;
    if kept(&idle_name) {
        match idle_workload(idle_name.clone(), connections, step) {
            Ok(w) => workloads.push(w),
            Err(why) => skipped = Some(why),
        }
    }

    println!(
        "runner::net benchmarks: {rounds} rounds, variants interleaved; medians and medians of \
         per-round ratios ({} round trips a round; each idle connection's task awaits a 1-byte \
         read)\n",
        thousands(trips)
    );
    println!("| workload | runner | raw smol | tokio current-thread | runner/raw | runner/tokio |");
    println!("|---|---|---|---|---|---|");
    for w in workloads.iter().filter(|w| kept(&w.name)) {
        // Warm up each variant once (page faults, lazy statics, async-io's reactor thread).
        if w.warm_up {
            for which in 0..VARIANTS.len() {
                (w.sample)(which);
            }
        }
        run(w, rounds);
    }
    if let Some(why) = skipped {
        if kept(&idle_name) {
            println!("\n{idle_name}: skipped ({why})");
        }
    }
}
