//! Command errors and the one table that maps them to FTP replies (STYLE: errors become replies
//! in one place). Only control-connection I/O errors end a session; everything here is a reply.

use std::io;

use ferry_proto::ftp::{ParseError, Reply};
use ferry_proto::vpath::PathError;

use crate::accounts::AccountError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The path does not exist (550).
    #[error("no such file or directory")]
    NotFound,
    /// The user's permissions do not allow this (550).
    #[error("permission denied")]
    PermissionDenied,
    /// The target exists already (550).
    #[error("already exists")]
    Exists,
    /// A directory was needed (550).
    #[error("not a directory")]
    NotADirectory,
    /// A file was needed (550).
    #[error("not a plain file")]
    NotAFile,
    /// RMD of a directory that has entries (550).
    #[error("directory not empty")]
    NotEmpty,
    /// The path is invalid (553).
    #[error("{0}")]
    BadPath(#[from] PathError),
    /// The user's quota does not allow it (552).
    #[error("{0}")]
    Quota(String),
    /// The file is busy or another transfer is running (450).
    #[error("{0}")]
    Busy(&'static str),
    /// Command out of sequence (503).
    #[error("{0}")]
    BadSequence(&'static str),
    /// A parameter is not acceptable (501).
    #[error("{0}")]
    BadArgument(String),
    /// Parameter not implemented (504).
    #[error("{0}")]
    NotSupported(String),
    /// The data connection could not be opened (425).
    #[error("cannot open data connection: {0}")]
    DataConnection(String),
    /// The transfer broke off (426).
    #[error("transfer aborted: {0}")]
    TransferAborted(String),
    /// The policy wants protected data connections and PROT P was not given (521, RFC 4217).
    #[error("data connections must be protected: send PBSZ 0 and PROT P")]
    ProtRequired,
    /// Not logged in (530).
    #[error("please log in with USER and PASS first")]
    NotLoggedIn,
    /// A local error (451); the details go to the log, not the client.
    #[error("local error: {0}")]
    Local(String),
}

impl CommandError {
    /// Maps an I/O error from the file system, keeping the cause in the log for local errors.
    pub fn from_io(err: io::Error) -> CommandError {
        use io::ErrorKind as K;
        // cap-std reports an attempt to leave the home (symlink, "..") as "a path led outside of
        // the filesystem": to the client, such a path simply does not exist.
        if err.to_string().contains("outside of the filesystem") {
            return CommandError::NotFound;
        }
        match err.kind() {
            K::NotFound => CommandError::NotFound,
            K::PermissionDenied => CommandError::PermissionDenied,
            K::AlreadyExists => CommandError::Exists,
            K::NotADirectory => CommandError::NotADirectory,
            K::IsADirectory => CommandError::NotAFile,
            K::DirectoryNotEmpty => CommandError::NotEmpty,
            K::InvalidFilename => CommandError::BadPath(PathError::NameTooLong),
            K::StorageFull | K::QuotaExceeded => {
                CommandError::Quota("no space left on the server's disk".into())
            }
            _ => {
                tracing::warn!(error = %err, "file system error");
                CommandError::Local(err.kind().to_string())
            }
        }
    }

    /// The reply for this error, with `subject` (usually the client's path) in the text.
    pub fn reply(&self, subject: &str) -> Reply {
        let with = |code: u16, what: &dyn std::fmt::Display| {
            if subject.is_empty() {
                Reply::new(code, what.to_string())
            } else {
                Reply::new(code, format!("{subject}: {what}"))
            }
        };
        match self {
            CommandError::NotFound
            | CommandError::PermissionDenied
            | CommandError::Exists
            | CommandError::NotADirectory
            | CommandError::NotAFile
            | CommandError::NotEmpty => with(550, self),
            // Reserved names are never addressable: they look like missing files.
            CommandError::BadPath(PathError::Reserved) => with(550, &CommandError::NotFound),
            CommandError::BadPath(_) => with(553, self),
            CommandError::Quota(_) => with(552, self),
            CommandError::Busy(_) => with(450, self),
            CommandError::BadSequence(m) => Reply::new(503, *m),
            CommandError::BadArgument(m) => Reply::new(501, m.as_str()),
            CommandError::NotSupported(m) => Reply::new(504, m.as_str()),
            CommandError::DataConnection(_) => Reply::new(425, self.to_string()),
            CommandError::TransferAborted(_) => Reply::new(426, self.to_string()),
            CommandError::NotLoggedIn => Reply::new(530, self.to_string()),
            CommandError::ProtRequired => Reply::new(521, self.to_string()),
            CommandError::Local(_) => with(451, &"local error in processing, try again"),
        }
    }
}

impl From<io::Error> for CommandError {
    fn from(err: io::Error) -> Self {
        CommandError::from_io(err)
    }
}

impl From<AccountError> for CommandError {
    fn from(err: AccountError) -> Self {
        tracing::error!(error = %err, "account database error");
        CommandError::Local("account database".into())
    }
}

/// The reply for a line that did not parse.
pub fn parse_error_reply(err: &ParseError) -> Reply {
    match err {
        ParseError::Empty | ParseError::Unknown(_) => Reply::new(500, format!("{err}, see HELP")),
        ParseError::MissingArg(_) | ParseError::BadArg { .. } | ParseError::NotUtf8 => {
            Reply::new(501, err.to_string())
        }
        ParseError::BadParam(_) => Reply::new(504, err.to_string()),
        ParseError::NetProto => Reply::new(522, "Network protocol not supported, use (1,2)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_maps_to_550_with_the_path() {
        let r = CommandError::from_io(io::Error::from(io::ErrorKind::NotFound)).reply("a.txt");
        assert_eq!(r.code, 550);
        assert!(r.text.starts_with("a.txt:"));
    }

    #[test]
    fn escape_attempts_look_like_missing_files() {
        let e = io::Error::other("a path led outside of the filesystem");
        assert_eq!(CommandError::from_io(e).reply("x").code, 550);
    }

    #[test]
    fn quota_maps_to_552_and_unknown_verbs_to_500() {
        assert_eq!(CommandError::Quota("full".into()).reply("f").code, 552);
        assert_eq!(
            parse_error_reply(&ParseError::Unknown("XYZ".into())).code,
            500
        );
        assert_eq!(parse_error_reply(&ParseError::MissingArg("RETR")).code, 501);
    }
}
