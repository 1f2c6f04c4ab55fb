//! Issue 12, item 5: on a function other than `main`, parameters (and `self`) are accepted: the
//! function becomes a sync function that runs its body on a fresh runner.
#![deny(warnings)]

#[runner::main]
async fn double(n: u32, name: &str) -> String {
    let n = runner::spawn(async move { n * 2 }).await.unwrap();
    format!("{name}: {n}")
}

struct Server {
    port: u16,
}

impl Server {
    #[runner::main]
    async fn port(&self) -> u16 {
        runner::yield_now().await;
        self.port
    }

    #[runner::main]
    async fn into_port(self) -> u16 {
        self.port
    }
}

fn main() {
    assert_eq!(double(21, "answer"), "answer: 42");
    let server = Server { port: 8080 };
    assert_eq!(server.port(), 8080);
    assert_eq!(server.into_port(), 8080);
}
