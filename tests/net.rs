//! `runner::net` on runner's own I/O driver (issue 24's reliability list). Every test runs under
//! the watchdog; the ones that send signals run in a child process.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{finishes_within, run_child};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use runner::net::{TcpListener, TcpStream, UdpSocket};
use runner::Runner;

const LIMIT: Duration = Duration::from_secs(60);

/// A listener on a loopback port, and its address.
async fn listen() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The descriptors this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A loop that waits before it has a socket of runner's own waits in async-io, whose reactor
/// (the process's, made once, with its thread) stays open from then on: made before counting.
fn warm_async_io() {
    runner::run(runner::sleep(Duration::from_millis(1))).unwrap();
    std::thread::sleep(Duration::from_millis(50));
}

/// The sources registered with each epoll instance this process has open, but those in `except`,
/// by descriptor (its `fdinfo` lists one `tfd:` line per registration).
fn epoll_registrations(except: &[(String, usize)]) -> Vec<(String, usize)> {
    let mut counts = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_epoll = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy() == "anon_inode:[eventpoll]");
        if !is_epoll {
            continue;
        }
        let fd = entry.file_name().to_string_lossy().into_owned();
        if except.iter().any(|(old, _)| *old == fd) {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
        counts.push((fd, info.lines().filter(|l| l.starts_with("tfd:")).count()));
    }
    counts
}

#[test]
fn a_connection_echoes_both_ways() {
    let got = finishes_within(LIMIT, || {
        runner::run(async {
            let (listener, addr) = listen().await;
            let client = runner::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.write_all(b"ping").await.unwrap();
                let mut buf = [0; 4];
                stream.read_exact(&mut buf).await.unwrap();
                buf
            });
            let (mut stream, peer) = listener.accept().await.unwrap();
            assert_eq!(peer, stream.peer_addr().unwrap());
            let mut buf = [0; 4];
            stream.read_exact(&mut buf).await.unwrap();
            stream.write_all(&buf).await.unwrap();
            client.await.unwrap()
        })
        .unwrap()
    });
    assert_eq!(&got, b"ping");
}

/// 10,000 connections opened and closed leave no descriptor and no registration behind: the
/// loop's epoll instance still holds its own wake-up and the listener only, and once the runner
/// has closed, the process has the descriptors it had before.
#[test]
#[cfg(target_os = "linux")]
fn ten_thousand_connections_leave_no_descriptor_or_registration_behind() {
    // In a child process: the other tests' sockets would change the count.
    let out = run_child("ten_thousand_connections_child", &[]);
    common::assert_child_printed(
        &out,
        &["registrations: [2]; descriptors after = before: true"],
    );
}

#[test]
#[cfg(target_os = "linux")]
#[ignore = "run by ten_thousand_connections_leave_no_descriptor_or_registration_behind"]
fn ten_thousand_connections_child() {
    let (during, before, after) = finishes_within(Duration::from_secs(120), || {
        warm_async_io();
        let others = epoll_registrations(&[]);
        let before = open_fds();
        let during = runner::run(async {
            let (listener, addr) = listen().await;
            let server = runner::spawn(async move {
                for _ in 0..10_000 {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    let mut byte = [0];
                    stream.read_exact(&mut byte).await.unwrap();
                    stream.write_all(&byte).await.unwrap();
                }
                listener
            });
            for i in 0..10_000u32 {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.write_all(&[i as u8]).await.unwrap();
                let mut byte = [0];
                stream.read_exact(&mut byte).await.unwrap();
                assert_eq!(byte[0], i as u8);
            }
            let listener = server.await.unwrap();
            let during = epoll_registrations(&others);
            drop(listener);
            during.into_iter().map(|(_, n)| n).collect::<Vec<_>>()
        })
        .unwrap();
        (during, before, open_fds())
    });
    // The wake-up and the listener, nothing else; every descriptor closed.
    println!(
        "registrations: {during:?}; descriptors after = before: {}",
        after == before
    );
}

/// A peer that closes a connection with unread data resets it: a read waiting on the other end
/// gets the reset as an error, not a hang; so does a write after it.
#[test]
fn a_reset_in_the_middle_of_a_read_or_a_write_is_an_error() {
    let (read, write) = finishes_within(LIMIT, || {
        runner::run(async {
            let (listener, addr) = listen().await;
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let (peer, _) = listener.accept().await.unwrap();
            // Unread data at close: the peer's kernel answers with a reset.
            stream.write_all(b"never read").await.unwrap();
            let reader = runner::spawn(async move {
                let mut buf = [0; 16];
                let read = stream.read(&mut buf).await;
                (read, stream)
            });
            runner::sleep(Duration::from_millis(20)).await; // the reader waits now
            drop(peer);
            let (read, mut stream) = reader.await.unwrap();
            let mut write = Ok(());
            for _ in 0..100 {
                write = stream.write_all(&[0; 1024]).await;
                if write.is_err() {
                    break;
                }
            }
            (read.map_err(|e| e.kind()), write.map_err(|e| e.kind()))
        })
        .unwrap()
    });
    assert_eq!(read, Err(std::io::ErrorKind::ConnectionReset));
    assert!(
        matches!(
            write,
            Err(std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
        ),
        "{write:?}"
    );
}

/// `shutdown(Write)` is read as the end of the stream by the peer, which can still write back;
/// the same through `poll_close` and by dropping an owned write half.
#[test]
fn a_half_close_reads_as_the_end_of_the_stream() {
    let got = finishes_within(LIMIT, || {
        runner::run(async {
            let (listener, addr) = listen().await;
            let mut results = Vec::new();
            for way in 0..3 {
                let client = TcpStream::connect(addr).await.unwrap();
                let (mut server, _) = listener.accept().await.unwrap();
                let (mut read, write) = client.into_split();
                let mut write = Some(write);
                {
                    let w = write.as_mut().unwrap();
                    w.write_all(b"request").await.unwrap();
                    match way {
                        0 => w.get_shutdown_write(),
                        1 => w.close().await.unwrap(),
                        _ => drop(write.take()),
                    }
                }
                let mut request = Vec::new();
                server.read_to_end(&mut request).await.unwrap(); // ends: the client's half-close
                server.write_all(b"answer").await.unwrap();
                drop(server);
                let mut answer = Vec::new();
                read.read_to_end(&mut answer).await.unwrap();
                results.push((request, answer));
            }
            results
        })
        .unwrap()
    });
    for (request, answer) in got {
        assert_eq!(
            (&request[..], &answer[..]),
            (&b"request"[..], &b"answer"[..])
        );
    }
}

trait ShutdownWrite {
    fn get_shutdown_write(&mut self);
}

impl ShutdownWrite for runner::net::tcp::OwnedWriteHalf {
    fn get_shutdown_write(&mut self) {
        futures_lite::future::block_on(self.close()).unwrap();
    }
}

/// A megabyte written to a reader that reads slowly: the writer waits for writability, and
/// every byte arrives, in order.
#[test]
fn a_megabyte_to_a_slow_reader_arrives_whole_and_in_order() {
    let ok = finishes_within(LIMIT, || {
        runner::run(async {
            let (listener, addr) = listen().await;
            let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
            let expected = data.clone();
            let writer = runner::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.write_all(&data).await.unwrap();
            });
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0; 4096];
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if got.len() % (64 * 4096) < n {
                    runner::sleep(Duration::from_millis(1)).await; // slow
                }
            }
            writer.await.unwrap();
            got == expected
        })
        .unwrap()
    });
    assert!(ok);
}

/// A socket moves from the loop to a pool task and back, and keeps working on each side.
#[test]
fn a_socket_moved_to_a_pool_task_and_back_keeps_working() {
    let got = finishes_within(LIMIT, || {
        Runner::builder()
            .workers(2)
            .run(async {
                let (listener, addr) = listen().await;
                let echo = runner::spawn(async move {
                    let (stream, _) = listener.accept().await.unwrap();
                    let (mut read, mut write) = stream.split();
                    futures_lite::io::copy(&mut read, &mut write).await.unwrap();
                });
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let mut seen = Vec::new();
                for round in 0..10u8 {
                    stream.write_all(&[round]).await.unwrap();
                    let mut byte = [0];
                    stream.read_exact(&mut byte).await.unwrap();
                    seen.push(byte[0]);
                    // To a pool task, and back with its answer.
                    stream = runner::spawn_send(async move {
                        stream.write_all(&[round + 100]).await.unwrap();
                        let mut byte = [0];
                        stream.read_exact(&mut byte).await.unwrap();
                        assert_eq!(byte[0], round + 100);
                        stream
                    })
                    .await
                    .unwrap();
                }
                drop(stream);
                echo.await.unwrap();
                seen
            })
            .unwrap()
    });
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
}

/// Closing a runner with live listeners and streams (held by pending tasks) drops their
/// registrations and closes their descriptors, and close ends; a socket kept past the runner
/// fails at once afterwards.
#[test]
#[cfg(target_os = "linux")]
fn closing_a_runner_closes_its_sockets_and_a_socket_kept_past_it_fails() {
    // In a child process: the other tests' sockets would change the count.
    let out = run_child("closing_a_runner_closes_its_sockets_child", &[]);
    common::assert_child_printed(
        &out,
        &[
            "open after close: the kept stream and the driver it holds (3 more): true",
            "the kept stream fails: the runner this socket was made in has closed",
            "open once it is dropped: as before: true",
        ],
    );
}

#[test]
#[cfg(target_os = "linux")]
#[ignore = "run by closing_a_runner_closes_its_sockets_and_a_socket_kept_past_it_fails"]
fn closing_a_runner_closes_its_sockets_child() {
    let (before, after, kept, dropped) = finishes_within(LIMIT, || {
        warm_async_io();
        let before = open_fds();
        let runner = Runner::new();
        let kept = runner
            .run(async {
                let (listener, addr) = listen().await;
                let client = TcpStream::connect(addr).await.unwrap();
                let (server, _) = listener.accept().await.unwrap();
                // Pending tasks holding the listener and the server's stream.
                drop(runner::spawn(async move {
                    let _ = listener.accept().await;
                }));
                drop(runner::spawn(async move {
                    let mut server = server;
                    let mut buf = [0; 8];
                    let _ = server.read(&mut buf).await;
                }));
                runner::yield_now().await;
                client
            })
            .unwrap();
        runner.close();
        let after = open_fds();
        let mut kept = kept;
        let failed = futures_lite::future::block_on(kept.write_all(b"late"));
        drop(kept);
        (before, after, failed.map_err(|e| e.to_string()), open_fds())
    });
    // The kept stream, and the loop's epoll instance and its wake-up, which the stream keeps.
    println!(
        "open after close: the kept stream and the driver it holds (3 more): {}",
        after == before + 3
    );
    println!("the kept stream fails: {}", kept.expect_err("it fails"));
    println!("open once it is dropped: as before: {}", dropped == before);
}

/// A stream whose runner closes while another runner's task waits on it: the waiter gets an
/// error, not a hang.
#[test]
fn a_task_waiting_on_a_stream_whose_runner_closes_gets_an_error() {
    let got = finishes_within(LIMIT, || {
        let home = Runner::new();
        let (stream, _peer) = home
            .run(async {
                let (listener, addr) = listen().await;
                let stream = TcpStream::connect(addr).await.unwrap();
                let (peer, _) = listener.accept().await.unwrap();
                (stream, peer)
            })
            .unwrap();
        let (waiting, is_waiting) = std::sync::mpsc::channel();
        let elsewhere = std::thread::spawn(move || {
            runner::run(async move {
                let mut stream = stream;
                let mut buf = [0; 8];
                let mut read = std::pin::pin!(stream.read(&mut buf));
                assert!(futures_lite::future::poll_once(read.as_mut())
                    .await
                    .is_none());
                waiting.send(()).unwrap();
                read.await.map_err(|e| e.kind())
            })
            .unwrap()
        });
        is_waiting.recv().unwrap();
        home.close();
        elsewhere.join().unwrap()
    });
    assert_eq!(got, Err(std::io::ErrorKind::Other));
}

/// Outside any runner a socket cannot be made: an error that says where to make it.
#[test]
fn a_socket_made_outside_a_runner_is_refused_with_a_reason() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = TcpListener::from_std(std_listener).unwrap_err();
    assert!(err.to_string().contains("made inside a runner"), "{err}");
}

/// UDP: datagrams both ways, connected and not, between two sockets; several tasks send on one.
#[test]
fn udp_datagrams_go_both_ways() {
    let got = finishes_within(LIMIT, || {
        runner::run(async {
            let a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
            let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let to = b.local_addr().unwrap();
            let senders: Vec<_> = (0..4u8)
                .map(|i| {
                    let a = a.clone();
                    runner::spawn(async move { a.send_to(&[i], to).await.unwrap() })
                })
                .collect();
            let mut got = Vec::new();
            for _ in 0..4 {
                let mut buf = [0; 4];
                let (n, from) = b.recv_from(&mut buf).await.unwrap();
                assert_eq!((n, from), (1, a.local_addr().unwrap()));
                got.push(buf[0]);
            }
            for sender in senders {
                sender.await.unwrap();
            }
            b.connect(a.local_addr().unwrap()).await.unwrap();
            b.send(b"back").await.unwrap();
            let mut buf = [0; 4];
            let (n, _) = a.recv_from(&mut buf).await.unwrap();
            got.sort();
            (got, buf[..n].to_vec())
        })
        .unwrap()
    });
    assert_eq!(got, (vec![0, 1, 2, 3], b"back".to_vec()));
}

/// Unix streams and datagrams, by path and in pairs.
#[test]
#[cfg(unix)]
fn unix_streams_and_datagrams_work() {
    use runner::net::{UnixDatagram, UnixListener, UnixStream};
    let dir = std::env::temp_dir().join(format!("runner-net-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stream.sock");
    let got = finishes_within(LIMIT, move || {
        runner::run(async move {
            let listener = UnixListener::bind(&path).unwrap();
            let client = runner::spawn({
                let path = path.clone();
                async move {
                    let mut stream = UnixStream::connect(&path).await.unwrap();
                    stream.write_all(b"unix").await.unwrap();
                }
            });
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            client.await.unwrap();
            let (a, b) = UnixDatagram::pair().unwrap();
            a.send(b"dgram").await.unwrap();
            let mut buf = [0; 8];
            let n = b.recv(&mut buf).await.unwrap();
            let (mut x, mut y) = UnixStream::pair().unwrap();
            x.write_all(b"pair").await.unwrap();
            let mut pair = [0; 4];
            y.read_exact(&mut pair).await.unwrap();
            (got, buf[..n].to_vec(), pair.to_vec())
        })
        .unwrap()
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(got, (b"unix".to_vec(), b"dgram".to_vec(), b"pair".to_vec()));
}

/// A connection refused is an error from `connect`, not a hang.
#[test]
fn a_refused_connection_is_an_error() {
    let got = finishes_within(LIMIT, || {
        runner::run(async {
            let addr = {
                let (listener, addr) = listen().await;
                drop(listener);
                addr
            };
            TcpStream::connect(addr)
                .await
                .map(|_| ())
                .map_err(|e| e.kind())
        })
        .unwrap()
    });
    assert_eq!(got, Err(std::io::ErrorKind::ConnectionRefused));
}

/// The loop's thread waits on the driver (here with no timer: no timeout at all), and each of
/// these ends the wait: a callback posted from another thread, a pool task waking a loop task,
/// and a timer coming due. A wake-up that did not reach the wait would hang the test.
#[test]
fn the_drivers_wait_is_ended_by_posted_callbacks_pool_tasks_and_timers() {
    let woken = finishes_within(LIMIT, || {
        Runner::builder()
            .workers(1)
            .run(async {
                let (_listener, _) = listen().await; // the loop has a driver to wait on
                let lp = runner::get_running_loop().unwrap();
                let mut woken = Vec::new();
                // A callback posted from another thread.
                let (tx, rx) = async_channel::bounded(1);
                let handle = lp.handle();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    handle.call_soon_threadsafe(move || tx.try_send("posted callback").unwrap());
                });
                woken.push(rx.recv().await.unwrap());
                // A pool task waking a loop task.
                let (tx, rx) = async_channel::bounded(1);
                drop(runner::spawn_send(async move {
                    std::thread::sleep(Duration::from_millis(20));
                    tx.send("pool task").await.unwrap();
                }));
                woken.push(rx.recv().await.unwrap());
                // A timer.
                runner::sleep(Duration::from_millis(20)).await;
                woken.push("timer");
                woken
            })
            .unwrap()
    });
    assert_eq!(woken, ["posted callback", "pool task", "timer"]);
}

/// A signal's EINTR never reaches the user: a child process takes a signal every 100 µs (a
/// handler installed without `SA_RESTART`) while its loop waits, accepts, reads and writes.
#[test]
#[cfg(target_os = "linux")]
fn a_signals_eintr_never_reaches_the_user() {
    let out = run_child("eintr_child", &[]);
    common::assert_child_printed(&out, &["1000 round trips, signals taken: true"]);
}

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

#[test]
#[cfg(target_os = "linux")]
#[ignore = "run by a_signals_eintr_never_reaches_the_user in a child process"]
fn eintr_child() {
    // SAFETY: a handler that only bumps an atomic; the struct is zeroed (no flags: no
    // SA_RESTART) and fully initialised before use.
    #[allow(unsafe_code)]
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = count_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let pid = std::process::id() as libc::pid_t;
    let signaller = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            // SAFETY: sends SIGUSR1, handled above, to this process.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGUSR1);
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    });
    let trips = runner::run(async {
        let (listener, addr) = listen().await;
        let server = runner::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0; 64];
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                stream.write_all(&buf[..n]).await.unwrap();
            }
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        for i in 0..1000u32 {
            if i % 100 == 0 {
                runner::sleep(Duration::from_millis(1)).await; // the loop waits: signals land
            }
            stream.write_all(&i.to_le_bytes()).await.unwrap();
            let mut back = [0; 4];
            stream.read_exact(&mut back).await.unwrap();
            assert_eq!(u32::from_le_bytes(back), i);
        }
        drop(stream);
        server.await.unwrap();
        1000
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    signaller.join().unwrap();
    println!(
        "{trips} round trips, signals taken: {}",
        SIGNALS.load(Ordering::Relaxed) > 0
    );
}

/// With the `hyper` feature a stream is served by hyper as it is: requests on one keep-alive
/// connection, one with a body larger than hyper's first read buffer, answered in order and
/// whole (the reads into hyper's uninitialised buffer and the vectored writes).
#[test]
fn hyper_serves_a_stream_directly() {
    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper::{Request, Response};

    async fn respond(req: Request<Incoming>) -> Result<Response<String>, hyper::Error> {
        let path = req.uri().path().to_owned();
        let body = req.into_body().collect().await?.to_bytes();
        Ok(Response::new(format!("{path} {}", body.len())))
    }

    let got = finishes_within(LIMIT, || {
        runner::run(async {
            let (listener, addr) = listen().await;
            let server = runner::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(stream, hyper::service::service_fn(respond))
                    .await
                    .unwrap();
            });
            let mut client = TcpStream::connect(addr).await.unwrap();
            let big = vec![b'x'; 100_000];
            let mut request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
            request.extend_from_slice(
                format!(
                    "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                    big.len()
                )
                .as_bytes(),
            );
            request.extend_from_slice(&big);
            request.extend_from_slice(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            client.write_all(&request).await.unwrap();
            let mut response = String::new();
            client.read_to_string(&mut response).await.unwrap();
            server.await.unwrap();
            response
                .split("\r\n\r\n")
                .skip(1)
                .map(|part| part.split("HTTP/1.1").next().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
        })
        .unwrap()
    });
    assert_eq!(got, ["/a 0", "/b 100000", "/c 0"]);
}

/// A worker that goes idle while the loop's thread waits for events takes the wait over; a
/// wake-up that comes while it queues for it (the workers told to stop, at close) went to the
/// thread waiting then, and the worker waited on without it: close said it was still waiting
/// for the worker after a second, or hung. Thirty runs of loop and pool tasks doing I/O in turn,
/// in a child (close's notices go to its stderr): every close ends with its workers, reporting
/// nothing and saying nothing.
#[test]
fn workers_taking_the_wait_over_from_the_loop_miss_no_wake_up() {
    let out = finishes_within(LIMIT, || run_child("wait_taken_over_child", &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("runner:"),
        "{}",
        common::text(&out)
    );
    common::assert_child_printed(&out, &["reports: []"]);
}

#[test]
#[ignore = "run by workers_taking_the_wait_over_from_the_loop_miss_no_wake_up"]
fn wait_taken_over_child() {
    let mut reports = Vec::new();
    for _ in 0..30 {
        let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let l = log.clone();
        let lp = runner::EventLoop::builder()
            .workers(2)
            .exception_handler(move |_, ctx| l.borrow_mut().push(ctx.message().to_owned()))
            .build();
        let runner = Runner::builder().loop_factory(move || lp).build();
        runner
            .run(async {
                let (listener, addr) = listen().await;
                let echo = runner::spawn(async move {
                    let (stream, _) = listener.accept().await.unwrap();
                    let (mut read, mut write) = stream.split();
                    futures_lite::io::copy(&mut read, &mut write).await.unwrap();
                });
                let mut stream = TcpStream::connect(addr).await.unwrap();
                for round in 0..5u8 {
                    stream = runner::spawn_send(async move {
                        stream.write_all(&[round]).await.unwrap();
                        let mut byte = [0];
                        stream.read_exact(&mut byte).await.unwrap();
                        stream
                    })
                    .await
                    .unwrap();
                }
                drop(stream);
                echo.await.unwrap();
            })
            .unwrap();
        runner.close();
        reports.extend(log.borrow().iter().cloned());
    }
    println!("reports: {reports:?}");
}

/// A peer sends "hello", one byte of TCP urgent data (`MSG_OOB`), then "world". Linux ends a
/// read at the urgent mark: the first read gives "hello", shorter than asked, with "world"
/// queued behind it, and a short read was taken to mean the socket was drained, so the next
/// read waited for an event that never came. The peer keeps the connection open until the
/// reader has everything: a stall is a hang, which the watchdog fails.
#[test]
#[cfg(target_os = "linux")]
fn bytes_queued_behind_urgent_data_are_read() {
    let got = finishes_within(LIMIT, || {
        runner::run(async {
            let (listener, addr) = listen().await;
            let (done, wait_done) = std::sync::mpsc::channel::<()>();
            let peer = std::thread::spawn(move || {
                use std::os::fd::AsRawFd;
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.set_nodelay(true).unwrap();
                std::io::Write::write_all(&mut c, b"hello").unwrap();
                // SAFETY: sends one byte from a live buffer on an open socket.
                #[allow(unsafe_code)]
                let sent =
                    unsafe { libc::send(c.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
                assert_eq!(sent, 1);
                std::io::Write::write_all(&mut c, b"world").unwrap();
                let _ = wait_done.recv();
            });
            let (mut s, _) = listener.accept().await.unwrap();
            // Everything has arrived before the first read.
            runner::sleep(Duration::from_millis(100)).await;
            let mut got = [0; 10];
            s.read_exact(&mut got).await.unwrap();
            done.send(()).unwrap();
            peer.join().unwrap();
            got
        })
        .unwrap()
    });
    assert_eq!(&got, b"helloworld");
}

/// A Unix stream peer sends "abc" with a descriptor attached (`SCM_RIGHTS`), then "def": Linux
/// ends a read after a message that carried descriptors, with "def" queued, and no event says
/// so. The read of "def" must not wait (a hang, which the watchdog fails).
#[test]
#[cfg(target_os = "linux")]
fn bytes_queued_behind_a_message_carrying_descriptors_are_read() {
    let got = finishes_within(LIMIT, || {
        runner::run(async {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let (done, wait_done) = std::sync::mpsc::channel::<()>();
            let peer = std::thread::spawn(move || {
                send_with_descriptor(&a, b"abc");
                std::io::Write::write_all(&mut &a, b"def").unwrap();
                let _ = wait_done.recv();
            });
            let mut s = runner::net::UnixStream::from_std(b).unwrap();
            runner::sleep(Duration::from_millis(100)).await;
            let mut got = [0; 6];
            s.read_exact(&mut got).await.unwrap();
            done.send(()).unwrap();
            peer.join().unwrap();
            got
        })
        .unwrap()
    });
    assert_eq!(&got, b"abcdef");
}

/// `sendmsg` of `data` with stdin's descriptor attached.
#[cfg(target_os = "linux")]
fn send_with_descriptor(sock: &std::os::unix::net::UnixStream, data: &[u8]) {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed msghdr pointing at live buffers: the data, and a control buffer sized
    // with CMSG_SPACE for one descriptor, filled through CMSG_FIRSTHDR/CMSG_DATA.
    #[allow(unsafe_code)]
    unsafe {
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let space = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize;
        let mut control = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        let fd: libc::c_int = 0;
        std::ptr::copy_nonoverlapping(
            &fd as *const libc::c_int as *const u8,
            libc::CMSG_DATA(cmsg),
            std::mem::size_of::<libc::c_int>(),
        );
        let sent = libc::sendmsg(sock.as_raw_fd(), &msg, 0);
        assert_eq!(sent, data.len() as isize);
    }
}

/// Many tasks accept on one listener at once (each `accept` waits in a list of its own, not
/// in the one slot of `poll_accept`): every connection is accepted, by as many tasks.
#[test]
fn tasks_accepting_on_one_listener_at_once_each_get_a_connection() {
    let accepted = finishes_within(LIMIT, || {
        runner::run(async {
            let (listener, addr) = listen().await;
            let listener = std::rc::Rc::new(listener);
            let acceptors: Vec<_> = (0..8)
                .map(|_| {
                    let listener = listener.clone();
                    runner::spawn(async move { listener.accept().await.map(|_| 1).unwrap() })
                })
                .collect();
            runner::yield_now().await;
            let mut clients = Vec::new();
            for _ in 0..8 {
                clients.push(TcpStream::connect(addr).await.unwrap());
                runner::yield_now().await;
            }
            let mut accepted = 0;
            for acceptor in acceptors {
                accepted += acceptor.await.unwrap();
            }
            accepted
        })
        .unwrap()
    });
    assert_eq!(accepted, 8);
}

/// Three hundred runners, each with two workers, a listener and a connection used from a pool
/// task, in a child: every close ends with nothing reported and nothing said on stderr, and
/// the process's descriptors and threads stay flat (counted after runner 100 and at the end).
#[test]
#[cfg(target_os = "linux")]
fn runners_with_workers_and_sockets_close_cleanly_and_leave_nothing() {
    let out = finishes_within(LIMIT, || run_child("many_runners_child", &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("runner:"), "{}", common::text(&out));
    common::assert_child_printed(
        &out,
        &["reports: 0", "descriptors flat: true, threads flat: true"],
    );
}

#[test]
#[cfg(target_os = "linux")]
#[ignore = "run by runners_with_workers_and_sockets_close_cleanly_and_leave_nothing"]
fn many_runners_child() {
    fn count(dir: &str) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }
    // async-io's reactor and thread are the process's, started once: not counted as a leak.
    warm_async_io();
    let reports = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut at100 = (0, 0);
    for i in 0..300 {
        let log = reports.clone();
        let lp = runner::EventLoop::builder()
            .workers(2)
            .exception_handler(move |_, ctx| log.lock().unwrap().push(ctx.message().to_owned()))
            .build();
        let runner = Runner::builder().loop_factory(move || lp).build();
        runner
            .run(async {
                let (listener, addr) = listen().await;
                let c = TcpStream::connect(addr).await.unwrap();
                let (s, _) = listener.accept().await.unwrap();
                runner::spawn_send(async move {
                    let (mut c, mut s) = (c, s);
                    c.write_all(b"hi").await.unwrap();
                    let mut b = [0; 2];
                    s.read_exact(&mut b).await.unwrap();
                })
                .await
                .unwrap();
            })
            .unwrap();
        runner.close();
        if i == 99 {
            at100 = (count("/proc/self/fd"), count("/proc/self/task"));
        }
    }
    // A thread that has exited leaves /proc a moment later (the kernel reaps it after waking
    // its joiner): what leaks never settles, so wait a little for the counts to.
    let settled = std::time::Instant::now() + Duration::from_secs(5);
    let mut end = (count("/proc/self/fd"), count("/proc/self/task"));
    while (end.0 > at100.0 || end.1 > at100.1) && std::time::Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(1));
        end = (count("/proc/self/fd"), count("/proc/self/task"));
    }
    let reports = reports.lock().unwrap().clone();
    println!("reports: {}; first: {:?}", reports.len(), reports.first());
    println!(
        "descriptors flat: {}, threads flat: {}",
        end.0 <= at100.0,
        end.1 <= at100.1
    );
}
