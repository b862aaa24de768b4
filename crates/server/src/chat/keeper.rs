//! The chat's clock, one task for every connection: it pings registered clients that have
//! been quiet for `chat.ping_interval_secs`, drops those that have not answered
//! `chat.ping_timeout_secs` later, and tells every registered client when the server shuts
//! down. So an idle connection holds no timer and no shutdown wait of its own (the connection
//! task is what an idle client costs); only a connection still registering has them.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ferry_proto::irc::Message;

use super::hub::line;
use crate::server::Shared;

/// How often the clients are looked at: pings and ping timeouts are this late at most.
const SWEEP: Duration = Duration::from_secs(1);

/// The kill reason of a client that did not answer a PING (the connection says how long it
/// waited, see [`ping_timeout_text`]).
pub const PING_TIMEOUT: &str = "Ping timeout";
/// The kill reason when the server shuts down.
pub const SHUTTING_DOWN: &str = "Server shutting down";

/// Whole seconds since the first call, the keeper's clock (monotonic; u32 lasts 136 years).
pub fn now_secs() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    u32::try_from(START.get_or_init(Instant::now).elapsed().as_secs()).unwrap_or(u32::MAX)
}

fn secs32(s: u64) -> u32 {
    u32::try_from(s).unwrap_or(u32::MAX)
}

/// What a client dropped for [`PING_TIMEOUT`] is told, as IRC servers say it.
pub fn ping_timeout_text(shared: &Shared) -> String {
    let cfg = &shared.config.chat;
    format!(
        "{PING_TIMEOUT}: {} seconds",
        cfg.ping_interval_secs.saturating_add(cfg.ping_timeout_secs)
    )
}

/// Runs until shutdown, then has every registered client close with [`SHUTTING_DOWN`].
pub async fn run(shared: Arc<Shared>) {
    let cfg = &shared.config.chat;
    let every = secs32(cfg.ping_interval_secs);
    let wait = secs32(cfg.ping_timeout_secs);
    let ping = line(&Message::new("PING", [cfg.server_name.as_str()]));
    let shutdown = shared.shutdown.soft.clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(SWEEP) => {}
        }
        shared.chat.sweep(now_secs(), every, wait, &ping);
    }
    shared.chat.kill_all(SHUTTING_DOWN);
}
