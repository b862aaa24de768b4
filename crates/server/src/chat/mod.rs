//! The chat room: an IRC-speaking service for the Ferry accounts (DESIGN §8), so irssi, WeeChat
//! and the Python `irc` library work unmodified, plus the announcer that turns the server's file
//! events into NOTICEs in the default room.

pub mod conn;
pub mod hub;

use std::sync::Arc;

use ferry_proto::units::format_size;

use crate::accounts::ChatLine;
use crate::events::FileEventKind;
use crate::server::Shared;

pub use hub::Hub;

/// Posts file activity to the default room until shutdown (the event hook's subscriber: FTP code
/// never calls chat code).
pub async fn announce_files(shared: Arc<Shared>) {
    let mut events = shared.events.subscribe();
    let cfg = &shared.config.chat;
    let from = format!("{0}!{0}@{0}", cfg.server_name);
    loop {
        let event = tokio::select! {
            _ = shared.shutdown.soft.cancelled() => return,
            e = events.recv() => e,
        };
        let event = match event {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "file announcements fell behind");
                continue;
            }
            Err(_) => return,
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
        let line = ChatLine {
            at,
            room: cfg.default_room.clone(),
            sender: cfg.server_name.clone(),
            text,
        };
        if let Err(e) = shared.accounts.log_chat(&line).await {
            tracing::warn!(error = %e, "cannot write the chat log");
        }
    }
}
