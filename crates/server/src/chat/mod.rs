//! The chat room: an IRC-speaking service for the Ferry accounts (DESIGN §8), so irssi, WeeChat
//! and the Python `irc` library work unmodified, plus the announcer that turns the server's file
//! events into NOTICEs in the default room.

pub mod conn;
pub mod hub;
pub mod outbox;
pub mod wire;

use std::sync::Arc;

use ferry_proto::units::format_size;

use crate::accounts::ChatLine;
use crate::events::FileEventKind;
use crate::server::Shared;

pub use hub::Hub;

/// How long announcements wait to be written to the chat log together (they are sent to the
/// room at once); a burst of small uploads then costs one database write, not one each.
const LOG_BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(50);

/// Posts file activity to the default room until shutdown (the event hook's subscriber: FTP code
/// never calls chat code).
pub async fn announce_files(shared: Arc<Shared>) {
    let mut events = shared.events.subscribe();
    let cfg = &shared.config.chat;
    let from = format!("{0}!{0}@{0}", cfg.server_name);
    let mut pending: Vec<ChatLine> = Vec::new();
    let mut flush_at = tokio::time::Instant::now();
    loop {
        let batching = !pending.is_empty();
        let event = tokio::select! {
            _ = shared.shutdown.soft.cancelled() => {
                log_lines(&shared, &mut pending).await;
                return;
            }
            _ = tokio::time::sleep_until(flush_at), if batching => {
                log_lines(&shared, &mut pending).await;
                continue;
            }
            e = events.recv() => e,
        };
        let event = match event {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "file announcements fell behind");
                continue;
            }
            Err(_) => {
                log_lines(&shared, &mut pending).await;
                return;
            }
        };
        if !event.announce {
            continue;
        }
        let text = match &event.kind {
            FileEventKind::Uploaded { path, size } => {
                format!("{} uploaded {path} ({})", event.user, format_size(*size))
            }
            FileEventKind::Deleted { path } => format!("{} deleted {path}", event.user),
            FileEventKind::Renamed { from, to } => format!("{} renamed {from} to {to}", event.user),
        };
        shared.chat.announce(&cfg.default_room, &from, &text);
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if pending.is_empty() {
            flush_at = tokio::time::Instant::now() + LOG_BATCH_WINDOW;
        }
        pending.push(ChatLine {
            at,
            room: cfg.default_room.clone(),
            sender: cfg.server_name.clone(),
            text,
        });
        if pending.len() >= crate::accounts::MAX_LINES_PER_INSERT {
            log_lines(&shared, &mut pending).await;
        }
    }
}

/// Writes the pending announcements to the chat log.
async fn log_lines(shared: &Shared, pending: &mut Vec<ChatLine>) {
    if let Err(e) = shared.accounts.log_chat_lines(pending).await {
        tracing::warn!(error = %e, lines = pending.len(), "cannot write the chat log");
    }
    pending.clear();
}
