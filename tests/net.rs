//! `runner::net`: sockets on runner's own I/O driver. Every test runs under the watchdog.

mod common;

use std::time::Duration;

use common::finishes_within;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use runner::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn a_connection_echoes() {
    let got = finishes_within(LIMIT, || {
        runner::run(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = runner::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.write_all(b"ping").await.unwrap();
                let mut buf = [0; 4];
                stream.read_exact(&mut buf).await.unwrap();
                buf
            });
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0; 4];
            stream.read_exact(&mut buf).await.unwrap();
            stream.write_all(&buf).await.unwrap();
            client.await.unwrap()
        })
        .unwrap()
    });
    assert_eq!(&got, b"ping");
}
