//! The chat room: an IRC-speaking service for the Ferry accounts (DESIGN §8), so irssi, WeeChat
//! and the Python `irc` library work unmodified, plus the announcer that turns the server's file
//! events into NOTICEs in the default room.

pub mod conn;
pub mod hub;
pub mod keeper;
pub mod outbox;
pub mod wire;

use std::sync::Arc;

use ferry_proto::units::format_size;

use crate::accounts::ChatLine;
use crate::events::FileEventKind;
use crate::server::Shared;

pub use hub::Hub;

/// How long announcements wait to be sent and logged together after the first of a burst (which
/// is sent at once). Only the wait for that first one listens on the event channel, so a burst of
/// small uploads wakes this task (a thread of the main runtime) once per window, not once per
/// upload, and costs one database write.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(50);

/// Posts file activity to the default room until shutdown (the event hook's subscriber: FTP code
/// never calls chat code).
pub async fn announce_files(shared: Arc<Shared>) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut events = shared.events.subscribe();
    let mut announcer = Announcer::new(&shared);
    loop {
        let first = tokio::select! {
            _ = shared.shutdown.soft.cancelled() => return,
            e = events.recv() => e,
        };
        match first {
            Ok(e) => announcer.post(&e),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "file announcements fell behind")
            }
            Err(RecvError::Closed) => return,
        }
        let closed = tokio::select! {
            _ = shared.shutdown.soft.cancelled() => true,
            _ = tokio::time::sleep(BATCH_WINDOW) => false,
        };
        loop {
            match events.try_recv() {
                Ok(e) => announcer.post(&e),
                Err(TryRecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "file announcements fell behind")
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => {
                    announcer.flush().await;
                    return;
                }
            }
        }
        announcer.flush().await;
        if closed {
            return;
        }
    }
}

/// Turns file events into room NOTICEs and chat-log lines.
struct Announcer<'a> {
    shared: &'a Shared,
    from: String,
    pending: Vec<ChatLine>,
}

impl<'a> Announcer<'a> {
    fn new(shared: &'a Shared) -> Announcer<'a> {
        let name = &shared.config.chat.server_name;
        Announcer {
            shared,
            from: format!("{name}!{name}@{name}"),
            pending: Vec::new(),
        }
    }

    /// Sends the event to the room (unless its user opted out) and keeps its log line.
    fn post(&mut self, event: &crate::events::FileEvent) {
        if !event.announce {
            return;
        }
        let cfg = &self.shared.config.chat;
        let text = match &event.kind {
            FileEventKind::Uploaded { path, size } => {
                format!("{} uploaded {path} ({})", event.user, format_size(*size))
            }
            FileEventKind::Deleted { path } => format!("{} deleted {path}", event.user),
            FileEventKind::Renamed { from, to } => format!("{} renamed {from} to {to}", event.user),
        };
        self.shared
            .chat
            .announce(&cfg.default_room, &self.from, &text);
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.pending.push(ChatLine {
            at,
            room: cfg.default_room.clone(),
            sender: cfg.server_name.clone(),
            text,
        });
    }

    /// Writes the kept lines to the chat log.
    async fn flush(&mut self) {
        log_lines(self.shared, &mut self.pending).await;
    }
}

/// Writes the pending announcements to the chat log.
async fn log_lines(shared: &Shared, pending: &mut Vec<ChatLine>) {
    while !pending.is_empty() {
        match shared.accounts.log_chat_lines(pending).await {
            Ok(n) => {
                pending.drain(..n.clamp(1, pending.len()));
            }
            Err(e) => {
                tracing::warn!(error = %e, lines = pending.len(), "cannot write the chat log");
                pending.clear();
            }
        }
    }
}
