//! The FTP control connection's two directions: client lines parsed into typed [`Command`]s, and
//! server [`Reply`]s encoded to bytes.

pub mod command;
pub mod reply;

pub use command::{parse, Command, ParseError};
pub use reply::Reply;
