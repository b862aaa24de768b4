//! Ferry's wire formats, shared by the server and the client: the FTP command parser and reply
//! codec, jail-safe virtual paths and human-readable sizes. Pure: no sockets, no files, no runtime.

pub mod ftp;
pub mod irc;
pub mod units;
pub mod vpath;
