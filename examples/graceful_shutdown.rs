//! A TCP echo server that shuts down gracefully on Ctrl-C.
//!
//! The first Ctrl-C cancels `main`: the accept loop stops and, as the runner closes, every
//! connection task is cancelled and its deferred async cleanup tells the client goodbye. The
//! process then ends as killed by SIGINT, as a shell expects (status 130). A second Ctrl-C gets
//! out at once.
//!
//! ```text
//! cargo run --example graceful_shutdown          # prints: listening on 127.0.0.1:7878
//! nc 127.0.0.1 7878                              # in another terminal: type lines, they echo
//! ^C in the first terminal                       # nc prints: goodbye: the server is shutting down
//! ```
//!
//! `cargo run --example graceful_shutdown -- 0` picks a free port.
//!
//! The sockets are `runner::net`'s, on runner's own I/O driver. They are made inside the runner
//! (here, in `main`'s future), whose loop drives them; `&TcpStream` reads and writes too, so the
//! connection's task and its cleanup share the stream.

use std::io;
use std::net::Ipv4Addr;
use std::rc::Rc;

use futures_lite::io::BufReader;
use futures_lite::{AsyncBufReadExt, AsyncWriteExt};
use runner::net::{TcpListener, TcpStream};

async fn serve(port: u16) -> io::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    println!("listening on {}", listener.local_addr()?);
    println!("press Ctrl-C to shut down");

    loop {
        let (stream, peer) = listener.accept().await?;
        println!("client {peer} connected");
        drop(runner::spawn(async move {
            match echo(Rc::new(stream)).await {
                Ok(()) => println!("client {peer} left"),
                Err(err) => println!("client {peer}: {err}"),
            }
        }));
    }
}

async fn echo(stream: Rc<TcpStream>) -> io::Result<()> {
    // Runs when this task ends for any reason, cancellation by the shutdown included.
    let goodbye = stream.clone();
    let _goodbye = runner::defer(async move {
        let _ = (&*goodbye)
            .write_all(b"goodbye: the server is shutting down\n")
            .await;
        let _ = goodbye.shutdown(std::net::Shutdown::Both);
        println!("said goodbye to a client");
    });
    let mut lines = BufReader::new(&*stream).lines();
    while let Some(line) = futures_lite::StreamExt::next(&mut lines).await {
        let line = line?;
        (&*stream).write_all(format!("{line}\n").as_bytes()).await?;
    }
    Ok(())
}

fn main() -> io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(7878);
    let runner = runner::Runner::new();
    let result = runner.run(serve(port));
    println!("shutting down: closing the runner (connection tasks say goodbye)");
    runner.close();
    match result {
        Ok(served) => served,
        Err(err) => err.exit(), // Interrupted: end as killed by SIGINT
    }
}
