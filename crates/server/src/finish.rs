//! How a transfer ends: its final reply, and the bookkeeping that runs only once that reply is
//! on the wire. The client's next command need not wait for work that can no longer change the
//! reply (the ledger and digest commit of a stored upload, the transfer log lines); on a stream
//! of small files that work was a tenth of each upload's round trip. The session runs it before
//! it reads the next command, so the session's own commands still see it done.

use std::sync::Arc;

use ferry_proto::ftp::command::HashAlgo;
use ferry_proto::ftp::Reply;
use tokio::sync::OwnedMutexGuard;

use crate::events::FileEvent;
use crate::server::Shared;
use crate::xferlog::XferRecord;

/// What a transfer task ends with.
#[derive(Debug)]
pub struct Done {
    /// The final reply (226, 426, 451, 552, ...).
    pub reply: Reply,
    /// Work for after the reply is sent.
    pub after: Option<AfterReply>,
}

impl From<Reply> for Done {
    fn from(reply: Reply) -> Done {
        Done { reply, after: None }
    }
}

/// Bookkeeping of a finished transfer that runs after its reply is sent, whether or not the
/// sending succeeded.
#[derive(Debug)]
#[must_use = "a ledger commit or a log line is lost unless it runs"]
pub enum AfterReply {
    /// The transfer's log lines.
    Log(Box<TransferLog>),
    /// A stored upload's ledger and digest commit, then its log lines and announcement.
    Upload(Box<UploadCommit>),
}

impl AfterReply {
    /// Does the work.
    pub async fn run(self) {
        match self {
            AfterReply::Log(log) => log.write(),
            // Boxed: the database futures are large, and a session awaits this in its own
            // state, which is what every idle session costs.
            AfterReply::Upload(commit) => Box::pin(commit.run()).await,
        }
    }
}

/// A transfer's entry in the xferlog and the tracing log, taken when it ended.
#[derive(Debug)]
pub struct TransferLog {
    shared: Arc<Shared>,
    record: XferRecord,
}

impl TransferLog {
    /// An entry for `record`.
    pub fn new(shared: Arc<Shared>, record: XferRecord) -> TransferLog {
        TransferLog { shared, record }
    }

    /// Writes both lines.
    pub fn write(self) {
        let r = &self.record;
        tracing::info!(
            path = r.path,
            bytes = r.bytes,
            ms = r.elapsed.as_millis() as u64,
            incoming = r.incoming,
            complete = r.complete,
            "transfer"
        );
        self.shared.xferlog.record(self.record);
    }
}

/// The rest of a stored upload, whose file is already renamed into place.
#[derive(Debug)]
pub struct UploadCommit {
    /// The user's ledger lock, held from before the rename until the ledger agrees with the
    /// disk: concurrent uploads, DELE and RNTO of the user see one or the other, never half.
    pub ledger: OwnedMutexGuard<()>,
    /// The user.
    pub user_id: i64,
    /// Quota bytes the upload held in reserve.
    pub held: u64,
    /// What the disk gained in bytes.
    pub delta_bytes: i64,
    /// What the disk gained in files.
    pub delta_files: i64,
    /// The file's virtual path.
    pub path: String,
    /// The whole file's SHA-256 (size, version key, hex), if the upload computed it.
    pub digest: Option<(u64, i64, String)>,
    /// The transfer's log lines.
    pub log: TransferLog,
    /// The announcement.
    pub event: FileEvent,
}

impl UploadCommit {
    async fn run(self) {
        let shared = self.log.shared.clone();
        let digest = self
            .digest
            .as_ref()
            .map(|(size, version, hex)| (*size, *version, HashAlgo::Sha256.name(), hex.as_str()));
        let committed = shared
            .accounts
            .commit_upload(
                self.user_id,
                self.held,
                self.delta_bytes,
                self.delta_files,
                &self.path,
                digest,
            )
            .await;
        drop(self.ledger);
        if shared.accounts.take_checkpoint_due() {
            // Not awaited: the client's next command must not wait for the checkpoint's fsyncs.
            let accounts = shared.accounts.clone();
            shared
                .tracker
                .spawn(async move { accounts.checkpoint().await });
        }
        if let Err(e) = committed {
            // The file is stored and the client was told so; only the books are behind.
            tracing::error!(
                path = self.path,
                error = %e,
                "upload stored, but the quota ledger was not updated (`ferry user rescan` recounts it)"
            );
        }
        self.log.write();
        shared.events.publish(self.event);
    }
}
