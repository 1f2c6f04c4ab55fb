//! A hyper 1.x HTTP server on runner that shuts down gracefully on Ctrl-C.
//!
//! ```sh
//! cargo run --example http_server                 # listens on 127.0.0.1:8080
//! cargo run --example http_server -- 0 5000       # any free port, 5 s grace period
//! cargo run --example http_server -- 8080 5000 4  # connections served by 4 worker threads
//! cargo run --example http_server -- 8080 5000 auto  # one worker per core
//! curl http://127.0.0.1:8080/                     # "hello"
//! curl http://127.0.0.1:8080/slow                 # "hello", after a second
//! ```
//!
//! Press Ctrl-C while a `/slow` request is in flight. The first Ctrl-C cancels `main`. Dropping
//! `main`'s accept loop closes the listener, so the server stops accepting. `main`'s deferred
//! cleanup then waits, for at most the grace period, for the connections still open. Each
//! connection hears the same Ctrl-C through `runner::ctrl_c()` and asks hyper for a graceful
//! shutdown: the requests in flight get their responses, then the connection closes. Once
//! `main` and its cleanup are done, the runner closes and the process ends as killed by SIGINT
//! (status 130 in a shell). A second Ctrl-C gets out at once.
//!
//! With a workers argument, each connection is a `runner::spawn_send` task on the worker pool
//! (the accept loop stays on the main thread); without one, a `runner::spawn` task on the main
//! thread. The code is the same: `spawn_send` runs on the loop thread when there is no pool.
//!
//! The sockets are `runner::net`'s, on runner's own I/O driver; a connection moves from the
//! accept loop to a worker as it is. hyper serves a `runner::net::TcpStream` directly (no
//! adapter) with the `hyper` feature, which adds hyper's I/O traits to runner's streams:
//!
//! ```toml
//! [dependencies]
//! runner = { version = "0.1", features = ["hyper"] }
//! hyper = { version = "1", features = ["server", "http1"] }
//! http-body-util = "0.1"
//! ```

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use runner::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(8080);
    let grace = Duration::from_millis(args.next().and_then(|g| g.parse().ok()).unwrap_or(5000));
    let workers = match args.next().as_deref() {
        None => None,
        Some("auto") => Some(runner::available_workers()),
        Some(n) => Some(n.parse().unwrap_or(1)),
    };
    // What #[runner::main(workers = N)] expands to, with N from the command line.
    let mut builder = runner::Runner::builder();
    if let Some(n) = workers {
        builder = builder.workers(n);
    }
    match builder.run(serve_until_ctrl_c(port, grace)) {
        Ok(result) => result,
        Err(err) => err.exit(),
    }
}

async fn serve_until_ctrl_c(port: u16, grace: Duration) -> std::io::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    println!("listening on {}", listener.local_addr()?);

    let connections: Rc<RefCell<Vec<runner::Task<()>>>> = Rc::default();
    let open = connections.clone();
    // Runs when main ends, Ctrl-C included: main counts as finished only after it.
    let _drain = runner::defer(async move {
        let tasks = std::mem::take(&mut *open.borrow_mut());
        println!("draining {} connection(s)", tasks.len());
        let all = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        match runner::timeout(grace, all).await {
            Ok(()) => println!("all connections drained"),
            Err(_) => println!("grace period over; closing the rest"),
        }
    });

    loop {
        let (stream, _) = listener.accept().await?;
        let task = runner::spawn_send(serve(stream));
        let mut open = connections.borrow_mut();
        open.retain(|t| !t.is_finished());
        open.push(task);
    }
}

/// Serve one connection until the client closes it, or until Ctrl-C: then finish the requests
/// in flight and close.
async fn serve(stream: TcpStream) {
    let conn = http1::Builder::new().serve_connection(stream, service_fn(respond));
    let mut conn = pin!(conn);
    let mut ctrl_c = pin!(runner::ctrl_c());
    let mut shutting_down = false;
    let served = std::future::poll_fn(|cx| {
        if !shutting_down && ctrl_c.as_mut().poll(cx).is_ready() {
            shutting_down = true;
            conn.as_mut().graceful_shutdown();
        }
        conn.as_mut().poll(cx)
    })
    .await;
    if let Err(err) = served {
        eprintln!("connection error: {err}");
    }
}

async fn respond(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/slow" {
        println!("request started: {}", req.uri().path());
        runner::sleep(Duration::from_secs(1)).await;
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}
