//! A chat connection's send queue, bounded in lines and in bytes: the hub and the connection push
//! ready lines without waiting, the connection's own task drains them to its socket. A client
//! whose socket is full with more than the cap's lines still queued is not reading, and goes; a
//! burst queued before the task could write (a thousand clients joining at once) may go past
//! the cap up to a hard bound, checked on every push. An idle,
//! empty queue holds no allocation (the lines live in a `VecDeque` that is taken whole by the
//! writer and freed when written), so what an idle client costs is this one small struct.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use ferry_proto::irc;

use super::hub::Line;

/// Why a connection is told to go by someone else: its queue overflowed.
pub const SENDQ_EXCEEDED: &str = "SendQ exceeded";

/// How many times the line cap a queue may hold before its connection's task has written: the
/// lines one burst of events queues for every client before their tasks run.
const BURST: u32 = 8;

/// The send queue of one connection.
#[derive(Debug)]
pub struct Outbox {
    q: Mutex<Queue>,
    /// Lines queued when the socket is full: past this, the client is not reading.
    max_lines: u32,
    /// Hard bounds, checked on every push: [`BURST`] × the lines, and 512 bytes a line.
    burst_lines: u32,
    max_bytes: u32,
    /// When the client last sent a line ([`super::keeper::now_secs`]), for the keeper's pings.
    heard: AtomicU32,
}

#[derive(Debug, Default)]
struct Queue {
    /// Lines not yet handed to the writer.
    lines: VecDeque<Line>,
    /// Lines and bytes counted against the caps: the queued ones plus those the writer took and
    /// has not finished writing.
    count: usize,
    bytes: usize,
    /// Set once: the reason the connection must close.
    killed: Option<&'static str>,
    /// The connection task, woken when a line arrives or the connection is killed.
    waker: Option<Waker>,
}

/// What the writer finished since it last asked for lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    /// Whole lines written.
    pub lines: usize,
    /// Their bytes.
    pub bytes: usize,
}

impl Outbox {
    /// A queue of `max_lines` lines once the socket is full, at most 8 × `max_lines` lines
    /// and `max_lines` × 512 bytes at any time (a server line is at most 512 bytes today; the
    /// byte cap keeps the bound if lines ever carry tags).
    pub fn new(max_lines: usize) -> Arc<Outbox> {
        let max_lines = u32::try_from(max_lines).unwrap_or(u32::MAX);
        Arc::new(Outbox {
            q: Mutex::new(Queue::default()),
            max_lines,
            burst_lines: max_lines.saturating_mul(BURST),
            max_bytes: max_lines.saturating_mul(irc::MAX_LINE as u32),
            heard: AtomicU32::new(super::keeper::now_secs()),
        })
    }

    /// Notes that the client sent a line now.
    pub fn heard_now(&self) {
        self.heard
            .store(super::keeper::now_secs(), Ordering::Relaxed);
    }

    /// When the client last sent a line.
    pub fn heard(&self) -> u32 {
        self.heard.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a line. A queue at its hard bounds refuses it and marks the connection for
    /// disconnection ([`SENDQ_EXCEEDED`]); the caller never waits.
    pub fn push(&self, l: &Line) -> bool {
        let waker = {
            let mut q = self.lock();
            if q.count >= self.burst_lines as usize || q.bytes + l.len() > self.max_bytes as usize {
                drop(q);
                self.kill(SENDQ_EXCEEDED);
                return false;
            }
            q.count += 1;
            q.bytes += l.len();
            q.lines.push_back(l.clone());
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Marks the connection for disconnection with `reason` (the first reason wins).
    pub fn kill(&self, reason: &'static str) {
        let waker = {
            let mut q = self.lock();
            q.killed.get_or_insert(reason);
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The writer's side, when the socket takes no more: more than the cap's lines still to
    /// write means the client is not reading, and the connection is killed. Returns the kill
    /// reason, if any.
    pub fn stalled(&self) -> Option<&'static str> {
        if self.lock().count > self.max_lines as usize {
            self.kill(SENDQ_EXCEEDED);
        }
        self.killed()
    }

    /// The reason given to [`Outbox::kill`], if it was called.
    pub fn killed(&self) -> Option<&'static str> {
        self.lock().killed
    }

    /// The writer's side: accounts for what it `written`, and if its `batch` is empty moves every
    /// queued line into it (an empty batch keeps no allocation). Remembers `waker` to be woken by
    /// the next push or kill. Returns the kill reason, if any.
    pub fn take(
        &self,
        batch: &mut VecDeque<Line>,
        written: Written,
        waker: &Waker,
    ) -> Option<&'static str> {
        let mut q = self.lock();
        q.count = q.count.saturating_sub(written.lines);
        q.bytes = q.bytes.saturating_sub(written.bytes);
        if batch.is_empty() {
            // The written batch's buffer is dropped rather than kept for later.
            *batch = std::mem::take(&mut q.lines);
        }
        match &q.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => q.waker = Some(waker.clone()),
        }
        q.killed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> Line {
        Arc::from(s)
    }

    #[test]
    fn an_idle_queue_holds_no_allocation_after_its_lines_are_written() {
        let out = Outbox::new(8);
        let mut batch = VecDeque::new();
        assert!(out.push(&l("a\r\n")));
        assert!(out.push(&l("b\r\n")));
        let w = Waker::noop();
        assert_eq!(out.take(&mut batch, Written::default(), w), None);
        assert_eq!(batch.len(), 2);
        batch.clear();
        let done = Written { lines: 2, bytes: 6 };
        assert_eq!(out.take(&mut batch, done, w), None);
        assert_eq!(batch.capacity(), 0);
        let q = out.lock();
        assert_eq!((q.count, q.bytes, q.lines.capacity()), (0, 0, 0));
    }

    #[test]
    fn lines_taken_but_not_written_still_count_against_the_bounds() {
        let out = Outbox::new(2);
        let mut batch = VecDeque::new();
        for _ in 0..2 * BURST {
            assert!(out.push(&l("a\r\n")));
        }
        out.take(&mut batch, Written::default(), Waker::noop());
        assert!(
            !out.push(&l("c\r\n")),
            "the bound counts the writer's batch"
        );
        assert_eq!(out.killed(), Some(SENDQ_EXCEEDED));
    }

    #[test]
    fn a_burst_past_the_cap_is_kept_while_the_socket_takes_it() {
        let out = Outbox::new(2);
        let mut batch = VecDeque::new();
        for _ in 0..5 {
            assert!(out.push(&l("a\r\n")));
        }
        assert_eq!(out.killed(), None, "pushes alone only meet the hard bound");
        out.take(&mut batch, Written::default(), Waker::noop());
        batch.drain(..3);
        let done = Written { lines: 3, bytes: 9 };
        assert_eq!(out.take(&mut batch, done, Waker::noop()), None);
        assert_eq!(out.stalled(), None, "two left: at the cap, not past it");
        assert!(out.push(&l("b\r\n")));
        assert_eq!(
            out.stalled(),
            Some(SENDQ_EXCEEDED),
            "full socket, three left"
        );
    }

    #[test]
    fn the_byte_cap_refuses_a_line_that_would_pass_it() {
        let out = Outbox::new(2); // 1024 bytes
        assert!(out.push(&l(&"x".repeat(600))));
        assert!(!out.push(&l(&"y".repeat(600))));
        assert_eq!(out.killed(), Some(SENDQ_EXCEEDED));
    }

    #[test]
    fn the_first_kill_reason_wins() {
        let out = Outbox::new(2);
        out.kill("first");
        out.kill("second");
        assert_eq!(out.killed(), Some("first"));
    }
}
