//! Gives the heap's free pages back to the OS once a burst of connections has settled.
//!
//! Why: glibc returns freed memory to the OS only from the top of a heap. A burst of logins or
//! chat registrations leaves its short-lived allocations (commands, replies, queued broadcasts)
//! freed between the long-lived ones of the sessions that stay, and those pages stay resident
//! while the sessions sit idle. `malloc_trim` releases every whole free page (jemalloc and
//! mimalloc do the same on their own, after a decay time).

use std::sync::Arc;
use std::time::Duration;

use crate::server::Shared;

/// How often the connection count is looked at; a burst is over when one look sees no
/// connection opened or closed since the last one.
const SETTLE: Duration = Duration::from_secs(1);

/// Runs until shutdown: after each burst (connections opened or closed, then a quiet second
/// without either), trims the heap once, on a blocking thread (it walks every free chunk).
pub async fn trim_after_bursts(shared: Arc<Shared>) {
    let shutdown = shared.shutdown.soft.clone();
    let mut seen = shared.slots.churn();
    let mut settling = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SETTLE) => {}
        }
        let now = shared.slots.churn();
        if now != seen {
            seen = now;
            settling = true;
        } else if settling {
            settling = false;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// Releases the free pages of every arena; true if any were released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // reason: malloc_trim takes no pointers; glibc locks each arena itself
fn trim() -> bool {
    // SAFETY: malloc_trim only walks glibc's own free lists under their arena locks.
    let released = unsafe { libc::malloc_trim(0) } == 1;
    tracing::debug!(released, "heap trimmed after a burst of connections");
    released
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
