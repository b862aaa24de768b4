//! The server's event hook for file activity: sessions publish, anyone (the chat room, later)
//! subscribes. Publishing never waits; with no subscriber an event is simply dropped.

use tokio::sync::broadcast;

/// Something that happened to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEventKind {
    /// An upload completed.
    Uploaded {
        /// Virtual path in the user's home.
        path: String,
        /// Final size in bytes.
        size: u64,
    },
    /// A file was deleted.
    Deleted {
        /// Virtual path.
        path: String,
    },
    /// A file or directory was renamed.
    Renamed {
        /// Old virtual path.
        from: String,
        /// New virtual path.
        to: String,
    },
}

/// A file event with the user who caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEvent {
    /// Account name.
    pub user: String,
    /// Whether the user wants their activity announced.
    pub announce: bool,
    /// What happened.
    pub kind: FileEventKind,
}

/// The publishing side of the hook.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<FileEvent>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Events {
    /// Publishes an event (never blocks).
    pub fn publish(&self, event: FileEvent) {
        let _ = self.tx.send(event);
    }

    /// Subscribes to future events; a slow subscriber loses the oldest ones.
    pub fn subscribe(&self) -> broadcast::Receiver<FileEvent> {
        self.tx.subscribe()
    }
}
