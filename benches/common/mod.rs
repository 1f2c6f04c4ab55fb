//! What the benches share.

use std::sync::Arc;
use std::thread::JoinHandle;

/// `n` threads running an `async_executor::Executor` (as smol-macros runs it) until dropped.
pub struct ExecutorThreads {
    pub ex: Arc<async_executor::Executor<'static>>,
    quit: async_channel::Sender<()>,
    threads: Vec<JoinHandle<()>>,
}

impl ExecutorThreads {
    pub fn start(n: usize) -> ExecutorThreads {
        let ex = Arc::new(async_executor::Executor::new());
        let (quit, quitting) = async_channel::bounded::<()>(1);
        let threads = (0..n)
            .map(|_| {
                let (ex, quitting) = (ex.clone(), quitting.clone());
                std::thread::spawn(move || {
                    async_io::block_on(ex.run(async {
                        let _ = quitting.recv().await;
                    }))
                })
            })
            .collect();
        ExecutorThreads { ex, quit, threads }
    }
}

impl Drop for ExecutorThreads {
    fn drop(&mut self) {
        self.quit.close();
        for thread in self.threads.drain(..) {
            thread.join().expect("an executor thread ends");
        }
    }
}
