//! Session threads: one single-threaded tokio runtime per CPU, each accepting on its own
//! listening socket of every address, so a session and everything it starts (its transfers,
//! passive listeners, timers, blocking calls) stay on the thread that accepted it and wake no
//! other.
//!
//! Why: on the multi-threaded runtime a small transfer woke the other worker about ten times
//! (work stealing), and on a 2-vCPU VM those wake-ups cost more than the transfer itself. The
//! threads' sockets of one address form an `SO_REUSEPORT` group (see
//! `server::per_thread_listeners`), so a connection wakes only the thread that gets it.

use std::future::Future;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Running session threads.
#[derive(Debug)]
pub struct Shards {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Shards {
    /// Starts `n` (at least 1) threads, each running a current-thread runtime until [`Shards::stop`].
    pub fn start(n: usize) -> std::io::Result<Shards> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("ferry-blocking-{i}"))
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ferry-sessions-{i}"))
                .spawn(move || {
                    runtime.block_on(stop.cancelled());
                    // Blocking calls still running (a hash of a huge file) do not hold up exit.
                    runtime.shutdown_timeout(Duration::from_secs(1));
                })?;
            threads.push(thread);
        }
        Ok(Shards {
            handles,
            threads,
            stop,
        })
    }

    /// How many threads run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there are none (never after [`Shards::start`]).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs `f(i)`'s future on thread `i`, for every thread.
    pub fn spawn_on_each<F, Fut>(&self, mut f: F)
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        for (i, h) in self.handles.iter().enumerate() {
            h.spawn(f(i));
        }
    }

    /// Stops the threads (after their tasks have ended) and waits for them.
    pub async fn stop(self) {
        self.stop.cancel();
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// How many session threads to start: one per CPU this process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_thread_runs_its_task_and_stops() {
        let shards = Shards::start(2).unwrap();
        assert_eq!(shards.len(), 2);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        shards.spawn_on_each(|i| {
            let tx = tx.clone();
            async move {
                let name = std::thread::current()
                    .name()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send((i, name));
            }
        });
        let mut got = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        got.sort();
        assert_eq!(
            got,
            vec![
                (0, "ferry-sessions-0".to_string()),
                (1, "ferry-sessions-1".to_string())
            ]
        );
        shards.stop().await;
    }
}
