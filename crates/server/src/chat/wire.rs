//! The socket side of one chat connection, driven by the connection's single task: input framed
//! into bounded lines, and the outbox drained to the socket, both by polling the one stream (no
//! split, no second task). Input is read into a stack buffer on readiness; only an incomplete
//! line is kept, so an idle connection holds no read buffer.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{ErrorKind, IoSlice};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_proto::irc;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls::ServerConfig;

use super::hub::Line;
use super::outbox::{Outbox, Written};
use crate::net::Stream;

/// Longest line accepted: the 512-byte message plus an IRCv3 tags section.
pub const MAX_INPUT: usize = irc::MAX_LINE + irc::MAX_TAGS;
/// Bytes read per readiness event (on the stack, copied only when they hold a partial line).
const READ_CHUNK: usize = 4096;
/// Lines given to one vectored write.
const WRITE_BATCH: usize = 32;

/// One framed input line.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// A line without its CR/LF.
    Line(Vec<u8>),
    /// A line over the limits (answered with `417`, then skipped).
    TooLong,
}

/// The socket and its buffers.
#[derive(Debug)]
pub struct Wire {
    stream: Stream,
    /// Lines taken from the outbox and being written; the first is `head` bytes in.
    batch: VecDeque<Line>,
    head: usize,
    /// Written to a TLS stream and not yet flushed.
    unflushed: bool,
    /// An incomplete input line (no allocation when there is none).
    input: Vec<u8>,
    /// Skipping the rest of an over-long line.
    discarding: bool,
    /// Why the connection ended while a command was running ([`Wire::busy`]).
    failed: Option<Box<str>>,
}

/// Why a wait ended.
#[derive(Debug)]
pub enum Event {
    /// New input bytes are buffered.
    Input,
    /// The connection is over, for this reason.
    Closed(String),
}

fn closed_reason(e: &std::io::Error, reading: bool) -> String {
    match e.kind() {
        // A client that vanished: EOF, or a reset when it died with unread data.
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            "Connection closed".into()
        }
        _ if reading => format!("Read error: {e}"),
        _ => "Write error".into(),
    }
}

impl Wire {
    /// Wraps a connected stream.
    pub fn new(stream: Stream) -> Wire {
        Wire {
            stream,
            batch: VecDeque::new(),
            head: 0,
            unflushed: false,
            input: Vec::new(),
            discarding: false,
            failed: None,
        }
    }

    /// Replaces the plain stream by a TLS one, the handshake bounded by `limit`; false if it
    /// failed. The handshake's (large) state is boxed: it exists only until it is done.
    pub async fn accept_tls(&mut self, config: Arc<ServerConfig>, limit: Duration) -> bool {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Detached) else {
            return false;
        };
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
        match Box::pin(tokio::time::timeout(limit, accept)).await {
            Ok(Ok(s)) => {
                self.stream = Stream::Tls(Box::new(s));
                true
            }
            _ => false,
        }
    }

    /// The next complete line already read, if any. Lines are at most [`MAX_INPUT`] bytes with
    /// at most 512 bytes (CRLF included) after the tags; anything longer is [`Framed::TooLong`]
    /// once when the buffer passes the limit and again at its end of line.
    pub fn next_line(&mut self) -> Option<Framed> {
        let framed = match self.input.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                let too_long = std::mem::take(&mut self.discarding) || pos + 1 > MAX_INPUT;
                let mut l: Vec<u8> = self.input.drain(..=pos).collect();
                l.pop();
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
                // 512 bytes with CRLF for the message itself; an IRCv3 tags section comes on top.
                let tags = if l.first() == Some(&b'@') {
                    l.iter().position(|&b| b == b' ').map_or(l.len(), |i| i + 1)
                } else {
                    0
                };
                if too_long || l.len() - tags + 2 > irc::MAX_LINE || tags > irc::MAX_TAGS {
                    Framed::TooLong
                } else {
                    Framed::Line(l)
                }
            }
            None if self.input.len() > MAX_INPUT => {
                self.input.clear();
                if std::mem::replace(&mut self.discarding, true) {
                    return None;
                }
                Framed::TooLong
            }
            None => return None,
        };
        if self.input.is_empty() {
            self.input = Vec::new();
        }
        Some(framed)
    }

    /// Why the connection ended during [`Wire::busy`], if it did.
    pub fn take_failure(&mut self) -> Option<String> {
        self.failed.take().map(String::from)
    }

    /// Writes what the outbox holds until it is empty or the socket is full. `Ready` with a
    /// reason when the connection must end: a write error, or (if `obey_kill`) a kill.
    fn poll_output(&mut self, cx: &mut Context<'_>, out: &Outbox, obey_kill: bool) -> Poll<String> {
        // What was written since the outbox was last told (always told before returning).
        let mut written = Written::default();
        loop {
            let killed = out.take(&mut self.batch, std::mem::take(&mut written), cx.waker());
            if let (Some(reason), true) = (killed, obey_kill) {
                return Poll::Ready(reason.to_string());
            }
            if self.batch.is_empty() {
                break;
            }
            let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
            let mut n = 0;
            for (i, l) in self.batch.iter().take(WRITE_BATCH).enumerate() {
                let from = if i == 0 { self.head } else { 0 };
                slices[i] = IoSlice::new(&l.as_bytes()[from..]);
                n += 1;
            }
            match Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..n]) {
                // The socket is full: past the cap, the client is not reading.
                Poll::Pending => match out.stalled() {
                    Some(reason) if obey_kill => return Poll::Ready(reason.to_string()),
                    _ => return Poll::Pending,
                },
                Poll::Ready(Err(e)) => return Poll::Ready(closed_reason(&e, false)),
                Poll::Ready(Ok(0)) => return Poll::Ready("Write error".into()),
                Poll::Ready(Ok(mut done)) => {
                    self.unflushed = true;
                    while let Some(first) = self.batch.front() {
                        let left = first.len() - self.head;
                        if done < left {
                            self.head += done;
                            break;
                        }
                        done -= left;
                        self.head = 0;
                        written.lines += 1;
                        written.bytes += first.len();
                        self.batch.pop_front();
                    }
                }
            }
        }
        if self.unflushed {
            // A no-op for TCP; TLS may hold records back until flushed.
            match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(closed_reason(&e, false)),
                Poll::Ready(Ok(())) => self.unflushed = false,
            }
        }
        Poll::Pending
    }

    /// Reads what the socket has into the input buffer.
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(closed_reason(&e, true))),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                Poll::Ready(Err("Connection closed".into()))
            }
            Poll::Ready(Ok(())) => {
                self.input.extend_from_slice(buf.filled());
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Writes what can be written now, without waiting.
    pub async fn write_now(&mut self, out: &Outbox) -> Option<String> {
        if let Some(reason) = self.take_failure() {
            return Some(reason);
        }
        poll_fn(|cx| match self.poll_output(cx, out, true) {
            Poll::Ready(reason) => Poll::Ready(Some(reason)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    /// Waits for input, writing queued lines meanwhile; ends early if the connection is killed
    /// or fails.
    pub async fn wait(&mut self, out: &Outbox) -> Event {
        if let Some(reason) = self.take_failure() {
            return Event::Closed(reason);
        }
        poll_fn(|cx| {
            if let Poll::Ready(reason) = self.poll_output(cx, out, true) {
                return Poll::Ready(Event::Closed(reason));
            }
            match self.poll_input(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Event::Input),
                Poll::Ready(Err(reason)) => Poll::Ready(Event::Closed(reason)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Runs `f` (a command that may wait, e.g. on the database) while queued lines keep being
    /// written; a write failure or kill meanwhile is kept for [`Wire::take_failure`].
    pub async fn busy<F: Future>(&mut self, out: &Outbox, f: F) -> F::Output {
        let mut f = pin!(f);
        poll_fn(|cx| {
            if let Poll::Ready(v) = f.as_mut().poll(cx) {
                return Poll::Ready(v);
            }
            if self.failed.is_none() {
                if let Poll::Ready(reason) = self.poll_output(cx, out, true) {
                    self.failed = Some(reason.into());
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Writes everything still queued (a kill no longer stops it), then shuts the stream down.
    /// The caller bounds the time this takes.
    pub async fn finish(&mut self, out: &Outbox) {
        let drained = poll_fn(|cx| {
            if self.poll_output(cx, out, false).is_ready() {
                return Poll::Ready(false);
            }
            if self.batch.is_empty() && !self.unflushed {
                return Poll::Ready(true);
            }
            Poll::Pending
        })
        .await;
        if drained {
            let _ = poll_fn(|cx| Pin::new(&mut self.stream).poll_shutdown(cx)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_with(input: &[u8]) -> Wire {
        let mut w = Wire::new(Stream::Detached);
        w.input = input.to_vec();
        w
    }

    fn line(s: &str) -> Option<Framed> {
        Some(Framed::Line(s.as_bytes().to_vec()))
    }

    #[test]
    fn lines_are_split_on_lf_with_or_without_cr_and_a_partial_line_waits() {
        let mut w = wire_with(b"NICK a\r\nUSER a 0 * :A\nPI");
        assert_eq!(w.next_line(), line("NICK a"));
        assert_eq!(w.next_line(), line("USER a 0 * :A"));
        assert_eq!(w.next_line(), None);
        assert_eq!(w.input, b"PI");
    }

    #[test]
    fn no_input_buffer_is_kept_once_every_line_is_read() {
        let mut w = wire_with(b"PING :x\r\n");
        assert_eq!(w.next_line(), line("PING :x"));
        assert_eq!(w.input.capacity(), 0);
    }

    #[test]
    fn a_message_over_512_bytes_is_too_long_but_tags_come_on_top() {
        let long = format!("PRIVMSG #a :{}\r\n", "x".repeat(500));
        assert_eq!(
            wire_with(long.as_bytes()).next_line(),
            Some(Framed::TooLong)
        );
        let ok = format!("PRIVMSG #a :{}\r\n", "x".repeat(510 - 12));
        assert!(matches!(
            wire_with(ok.as_bytes()).next_line(),
            Some(Framed::Line(_))
        ));
        let tagged = format!("@{} {ok}", "t".repeat(4000));
        assert!(matches!(
            wire_with(tagged.as_bytes()).next_line(),
            Some(Framed::Line(_))
        ));
    }

    #[test]
    fn a_line_without_end_past_the_limit_is_refused_once_then_skipped_to_its_end() {
        let mut w = wire_with(&vec![b'z'; MAX_INPUT + 1]);
        assert_eq!(w.next_line(), Some(Framed::TooLong));
        assert_eq!(w.input.capacity(), 0, "the discarded bytes are not kept");
        w.input.extend_from_slice(&vec![b'z'; MAX_INPUT + 1]);
        assert_eq!(w.next_line(), None, "still the same line");
        w.input.extend_from_slice(b"zz\r\nPING :x\r\n");
        assert_eq!(w.next_line(), Some(Framed::TooLong), "its end");
        assert_eq!(w.next_line(), line("PING :x"));
    }
}
