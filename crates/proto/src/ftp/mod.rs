//! The FTP control connection's two directions: client lines parsed into typed [`Command`]s, and
//! server [`Reply`]s encoded to bytes (and, for clients, reply lines framed back into replies).

pub mod command;
pub mod reply;
pub mod reply_parse;

pub use command::{parse, Command, ParseError};
pub use reply::Reply;
