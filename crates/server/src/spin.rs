//! Polling before sleeping: after a session thread sends a reply it keeps polling its sockets
//! (epoll with a zero timeout, yielding the CPU to any other runnable thread in between) for a
//! short window before it lets the thread sleep, because the client's next command usually
//! follows within tens of microseconds.
//!
//! Why: a thread that sleeps lets its CPU go idle, and waking an idle CPU is slow: on a virtual
//! machine whose guest does not poll before halting (this project's benchmark VM boots with
//! `haltpoll.guest_halt_poll_ns=0`) every wake-up costs an exit to the hypervisor and an IPI.
//! A sequential client (one file after another, one login after another) waits for that on
//! every command. The same idea as Go's scheduler spinning before it parks a thread, or the
//! kernel's own `haltpoll`; it is bounded by the window and only follows a reply, so an idle
//! server does not poll at all.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A thread polls only while it serves at most this many sessions: with more, the next event
/// is usually there already, and polling would take CPU from the clients (measured: FTPS
/// sessions with 200 clients lost 5-8 % with polling on every thread).
const FEW_SESSIONS: usize = 4;

thread_local! {
    /// The polling task of this session thread, if it has one.
    static POLLER: RefCell<Option<Arc<Notify>>> = const { RefCell::new(None) };
    /// When this thread last sent a reply.
    static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Polling rounds of this thread so far.
    static ROUNDS: Cell<u64> = const { Cell::new(0) };
    /// Sessions running on this thread.
    static SESSIONS: Cell<usize> = const { Cell::new(0) };
}

/// Counts a session on its thread while it lives.
#[derive(Debug)]
pub struct Present(());

impl Present {
    /// A session starts on this thread.
    pub fn new() -> Present {
        SESSIONS.set(SESSIONS.get() + 1);
        Present(())
    }
}

impl Default for Present {
    fn default() -> Self {
        Present::new()
    }
}

impl Drop for Present {
    fn drop(&mut self) {
        SESSIONS.set(SESSIONS.get().saturating_sub(1));
    }
}

/// Notes that this thread just answered a client: poll for the next command for a while.
pub fn kick() {
    POLLER.with(|p| {
        if let Some(notify) = &*p.borrow() {
            LAST.set(Some(Instant::now()));
            notify.notify_one();
        }
    });
}

/// The polling task of one session thread: idle until [`kick`]ed, then yields (the runtime
/// polls its sockets in between) until `window` has passed since the last kick.
pub async fn poll_after_replies(window: Duration, stop: CancellationToken) {
    let notify = Arc::new(Notify::new());
    POLLER.with(|p| *p.borrow_mut() = Some(notify.clone()));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = notify.notified() => {}
        }
        while LAST.get().is_some_and(|last| last.elapsed() < window)
            && SESSIONS.get() <= FEW_SESSIONS
            && !stop.is_cancelled()
        {
            // Another thread that wants this CPU (the client on a small machine) gets it.
            std::thread::yield_now();
            tokio::task::yield_now().await;
            ROUNDS.set(ROUNDS.get() + 1);
        }
    }
    POLLER.with(|p| *p.borrow_mut() = None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn polling_starts_with_a_kick_and_ends_after_the_window() {
        let stop = CancellationToken::new();
        let window = Duration::from_millis(30);
        let task = tokio::spawn(poll_after_replies(window, stop.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(ROUNDS.get(), 0, "polled before any reply");
        kick();
        // While it polls, other tasks still run (it yields to them).
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(ROUNDS.get() > 0, "no polling after a reply");
        // After the window it sleeps again.
        tokio::time::sleep(window * 2).await;
        let rounds = ROUNDS.get();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(ROUNDS.get(), rounds, "still polling after the window");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the polling task did not stop")
            .unwrap();
        assert!(POLLER.with(|p| p.borrow().is_none()));
    }

    #[tokio::test]
    async fn a_thread_with_many_sessions_does_not_poll() {
        let stop = CancellationToken::new();
        let task = tokio::spawn(poll_after_replies(Duration::from_millis(30), stop.clone()));
        tokio::task::yield_now().await;
        let many: Vec<Present> = (0..=FEW_SESSIONS).map(|_| Present::new()).collect();
        kick();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(ROUNDS.get(), 0, "polled with {} sessions", many.len());
        drop(many);
        assert_eq!(SESSIONS.get(), 0);
        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn a_kick_without_a_polling_task_does_nothing() {
        kick();
        assert!(LAST.get().is_none());
    }
}
