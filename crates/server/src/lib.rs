//! Ferry's server: FTP listeners and sessions, the data path, jailed storage, accounts with
//! race-free quotas, and the event hook that the chat room will subscribe to.

pub mod accounts;
pub mod chat;
pub mod commands;
pub mod config;
pub mod data;
pub mod digest;
pub mod error;
pub mod events;
pub mod fdtable;
pub mod finish;
pub mod heap;
pub mod net;
pub mod server;
pub mod session;
pub mod shards;
pub mod sockopt;
pub mod spin;
pub mod storage;
pub mod tls;
pub mod transfer;
pub mod xferlog;

pub use config::{Config, Overrides};
pub use server::{Server, ServerError};
