//! Brute-force guard: counts failed logins per IP and bans an IP for a while after too many.
//!
//! In memory only (a restart forgets), bounded in size, with a `std` mutex that is never held
//! across an `.await`. Time comes from `tokio::time::Instant`, so tests can pause the clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Most IP addresses tracked at once; beyond it, stale and then the oldest entries are dropped.
const MAX_TRACKED: usize = 100_000;

/// Settings of a [`LoginGuard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// Failures within `window` that get an IP banned; 0 disables banning.
    pub max_failures: u32,
    /// Period over which failures are counted (it starts at the first failure).
    pub window: Duration,
    /// How long a ban lasts.
    pub ban: Duration,
    /// Networks that are never banned (for example the admin's own network).
    pub exempt: Vec<ipnet::IpNet>,
}

/// Outcome of [`LoginGuard::record_failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureVerdict {
    /// Not banned: answer after the usual failed-login delay.
    Delayed,
    /// The IP is banned for this long: close the connection.
    Banned(Duration),
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
    last_seen: Instant,
}

impl Entry {
    fn banned_at(&self, now: Instant) -> Option<Duration> {
        self.banned_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// Neither banned nor inside a counting window any more: it can be forgotten.
    fn is_stale(&self, now: Instant, window: Duration) -> bool {
        self.banned_at(now).is_none() && now.duration_since(self.window_start) >= window
    }
}

/// Failed-login counter and ban list, shared by all sessions.
#[derive(Debug)]
pub struct LoginGuard {
    cfg: GuardConfig,
    capacity: usize,
    ips: Mutex<HashMap<IpAddr, Entry>>,
}

impl LoginGuard {
    /// A guard with no failures recorded.
    pub fn new(cfg: GuardConfig) -> Self {
        Self::with_capacity(cfg, MAX_TRACKED)
    }

    fn with_capacity(cfg: GuardConfig, capacity: usize) -> Self {
        Self {
            cfg,
            capacity: capacity.max(1),
            ips: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        // Every update leaves the map consistent, so a poisoned lock is still usable.
        self.ips.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_exempt(&self, ip: IpAddr) -> bool {
        self.cfg.exempt.iter().any(|net| net.contains(&ip))
    }

    /// The remaining ban time if `ip` is banned now.
    pub fn is_banned(&self, ip: IpAddr) -> Option<Duration> {
        let ip = ip.to_canonical();
        if self.is_exempt(ip) {
            return None;
        }
        let now = Instant::now();
        self.lock().get(&ip).and_then(|e| e.banned_at(now))
    }

    /// Counts a failed login from `ip`; bans it when it reaches `max_failures` within
    /// `window`. Exempt addresses are never banned (nor tracked).
    pub fn record_failure(&self, ip: IpAddr) -> FailureVerdict {
        let ip = ip.to_canonical();
        if self.is_exempt(ip) || self.cfg.max_failures == 0 {
            return FailureVerdict::Delayed;
        }
        let now = Instant::now();
        let mut ips = self.lock();
        if !ips.contains_key(&ip) && ips.len() >= self.capacity {
            self.make_room(&mut ips, now);
        }
        let entry = ips.entry(ip).or_insert(Entry {
            failures: 0,
            window_start: now,
            banned_until: None,
            last_seen: now,
        });
        entry.last_seen = now;
        if let Some(remaining) = entry.banned_at(now) {
            return FailureVerdict::Banned(remaining);
        }
        if now.duration_since(entry.window_start) >= self.cfg.window {
            entry.failures = 0;
            entry.window_start = now;
        }
        entry.failures += 1;
        if entry.failures < self.cfg.max_failures {
            return FailureVerdict::Delayed;
        }
        entry.failures = 0;
        entry.banned_until = Some(now + self.cfg.ban);
        drop(ips);
        tracing::warn!(
            peer = %ip,
            failures = self.cfg.max_failures,
            ban_secs = self.cfg.ban.as_secs(),
            "login ban"
        );
        FailureVerdict::Banned(self.cfg.ban)
    }

    /// A successful login from `ip` clears its failure count (not a ban in force).
    pub fn record_success(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        let now = Instant::now();
        let mut ips = self.lock();
        if ips.get(&ip).is_some_and(|e| e.banned_at(now).is_none()) {
            ips.remove(&ip);
        }
    }

    /// Drops stale entries, then if still full the least recently seen tenth, unbanned ones
    /// first, so a flood from many addresses costs amortised O(1) per failure.
    fn make_room(&self, ips: &mut HashMap<IpAddr, Entry>, now: Instant) {
        ips.retain(|_, e| !e.is_stale(now, self.cfg.window));
        if ips.len() < self.capacity {
            return;
        }
        let mut by_age: Vec<(bool, Instant, IpAddr)> = ips
            .iter()
            .map(|(ip, e)| (e.banned_at(now).is_some(), e.last_seen, *ip))
            .collect();
        let drop_count = (self.capacity / 10).max(1).min(by_age.len());
        by_age.select_nth_unstable(drop_count - 1);
        for (_, _, ip) in &by_age[..drop_count] {
            ips.remove(ip);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn cfg(exempt: &[&str]) -> GuardConfig {
        GuardConfig {
            max_failures: 3,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(600),
            exempt: exempt.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn bans_after_max_failures_within_the_window() {
        let g = LoginGuard::new(cfg(&[]));
        let a = ip("192.0.2.1");
        assert_eq!(g.record_failure(a), FailureVerdict::Delayed);
        assert_eq!(g.record_failure(a), FailureVerdict::Delayed);
        assert_eq!(g.is_banned(a), None);
        assert_eq!(
            g.record_failure(a),
            FailureVerdict::Banned(Duration::from_secs(600))
        );
        assert_eq!(g.is_banned(a), Some(Duration::from_secs(600)));
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(g.is_banned(a), Some(Duration::from_secs(500)));
        assert_eq!(
            g.record_failure(a),
            FailureVerdict::Banned(Duration::from_secs(500))
        );
        assert_eq!(
            g.is_banned(ip("192.0.2.2")),
            None,
            "other IPs are not affected"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ban_expires() {
        let g = LoginGuard::new(cfg(&[]));
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            g.record_failure(a);
        }
        assert!(g.is_banned(a).is_some());
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(g.is_banned(a), None);
        // The count starts over after a ban.
        assert_eq!(g.record_failure(a), FailureVerdict::Delayed);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_outside_the_window_do_not_add_up() {
        let g = LoginGuard::new(cfg(&[]));
        let a = ip("192.0.2.1");
        g.record_failure(a);
        g.record_failure(a);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(g.record_failure(a), FailureVerdict::Delayed);
        assert_eq!(g.record_failure(a), FailureVerdict::Delayed);
        assert!(matches!(g.record_failure(a), FailureVerdict::Banned(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn exempt_addresses_are_never_banned() {
        let g = LoginGuard::new(cfg(&["10.0.0.0/8", "2001:db8::/32"]));
        for addr in ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::1"] {
            for _ in 0..10 {
                assert_eq!(
                    g.record_failure(ip(addr)),
                    FailureVerdict::Delayed,
                    "{addr}"
                );
            }
            assert_eq!(g.is_banned(ip(addr)), None);
        }
        assert_eq!(g.tracked(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv4_mapped_ipv6_counts_as_the_ipv4_address() {
        let g = LoginGuard::new(cfg(&[]));
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        g.record_failure(v4);
        g.record_failure(mapped);
        assert!(matches!(g.record_failure(v4), FailureVerdict::Banned(_)));
        assert!(g.is_banned(mapped).is_some());
        assert_eq!(g.is_banned(IpAddr::V6(Ipv6Addr::LOCALHOST)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn success_clears_failures_but_not_a_ban() {
        let g = LoginGuard::new(cfg(&[]));
        let a = ip("192.0.2.1");
        g.record_failure(a);
        g.record_failure(a);
        g.record_success(a);
        assert_eq!(g.record_failure(a), FailureVerdict::Delayed);
        assert_eq!(g.record_failure(a), FailureVerdict::Delayed);
        assert!(matches!(g.record_failure(a), FailureVerdict::Banned(_)));
        g.record_success(a);
        assert!(g.is_banned(a).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_max_failures_disables_banning() {
        let g = LoginGuard::new(GuardConfig {
            max_failures: 0,
            ..cfg(&[])
        });
        for _ in 0..10 {
            assert_eq!(g.record_failure(ip("192.0.2.1")), FailureVerdict::Delayed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tracked_addresses_are_bounded_and_bans_survive_eviction_longest() {
        let g = LoginGuard::with_capacity(cfg(&[]), 20);
        let banned = ip("198.51.100.1");
        for _ in 0..3 {
            g.record_failure(banned);
        }
        for i in 0..200u32 {
            tokio::time::advance(Duration::from_millis(1)).await;
            g.record_failure(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i)));
            assert!(g.tracked() <= 20);
        }
        assert!(
            g.is_banned(banned).is_some(),
            "a ban outlives unbanned entries"
        );
        // The newest address is still tracked.
        let newest = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + 199));
        g.record_failure(newest);
        assert!(matches!(
            g.record_failure(newest),
            FailureVerdict::Banned(_)
        ));
    }
}
