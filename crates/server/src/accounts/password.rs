//! Argon2id password hashing on blocking threads, plus a short-lived credential cache.
//!
//! Hashing is deliberately slow, so it runs under a semaphore (one permit per CPU) on
//! `spawn_blocking`; the cache lets clients that open many connections log in without paying
//! it every time. The cache holds a keyed BLAKE3 hash of the password, never the password.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use super::AccountError;

/// OWASP argon2id parameters: 19 MiB of memory, 2 passes, 1 lane.
const M_COST_KIB: u32 = 19_456;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// How long a verified password is remembered.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Most remembered credentials; beyond it expired, then the oldest entries are dropped.
const CACHE_CAPACITY: usize = 10_000;

/// A well-formed argon2id hash, with the same parameters as real ones, that no known password
/// matches: an unknown user is verified against it so that a login costs the same whether the
/// name exists or not.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$\
                         Ld9Owg0aBaoAa02bRFC3ww$0sn5bGLSZRDPmKtrs7ki8ra5QdJzVNaE5rRgMWvnv6Y";

fn argon2() -> Argon2<'static> {
    // The constants are valid parameters; `Params::DEFAULT` is the same OWASP set.
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).unwrap_or(Params::DEFAULT);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Verifies `password` against a PHC string. `Ok(false)` is a wrong password; `Err` is a
/// malformed or unsupported hash.
fn verify_blocking(password: &str, phc: &str) -> Result<bool, argon2::password_hash::Error> {
    let parsed = PasswordHash::new(phc)?;
    match argon2().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What the cache remembers for a user after a successful verification.
struct Entry {
    /// BLAKE3 keyed hash of the password (its `==` is constant-time).
    mac: blake3::Hash,
    /// The PHC string the password was verified against: a changed password no longer matches.
    phc: String,
    expires: Instant,
}

/// The password hasher and verifier shared by all clones of an `Accounts`.
pub(super) struct Hasher {
    permits: Arc<Semaphore>,
    key: [u8; 32],
    cache: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
    capacity: usize,
    verifications: Arc<AtomicU64>,
    /// One lock per user name with a verification in flight: parallel first logins of one user
    /// wait for the first verification (and then hit the cache) instead of each paying argon2.
    pub(super) inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a user's password is being verified; see [`Hasher::single_flight`].
pub(super) struct Flight<'a> {
    hasher: &'a Hasher,
    name: String,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let lock = self.lock.take();
        let mut map = self
            .hasher
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Remove the entry when nobody else holds or waits for it (the map and us).
        if let Some(lock) = lock {
            if Arc::strong_count(&lock) == 2 {
                map.remove(&self.name);
            }
        }
    }
}

impl Hasher {
    pub(super) fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Self {
            permits: Arc::new(Semaphore::new(cpus.max(1))),
            key,
            cache: Mutex::new(HashMap::new()),
            ttl: CACHE_TTL,
            capacity: CACHE_CAPACITY,
            verifications: Arc::new(AtomicU64::new(0)),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until no other verification for `name` runs, and holds that place until dropped.
    pub(super) async fn single_flight(&self, name: &str) -> Flight<'_> {
        let lock = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(name.to_owned()).or_default())
        };
        let guard = Arc::clone(&lock).lock_owned().await;
        Flight {
            hasher: self,
            name: name.to_owned(),
            lock: Some(lock),
            guard: Some(guard),
        }
    }

    /// Runs `work` on a blocking thread once a hashing permit is free.
    async fn run_blocking<T, F>(&self, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        // The permit moves into the task: if the caller goes away, it is released only when
        // the hash is done, so abandoned logins still count against the limit.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// A new argon2id PHC string for `password`, with a random salt.
    pub(super) async fn hash(&self, password: &str) -> Result<String, AccountError> {
        let password = password.to_owned();
        self.run_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| e.to_string())
        })
        .await
        .and_then(|r| r)
        .map_err(AccountError::Hash)
    }

    /// Checks `password` against `phc` with argon2 (never the cache).
    pub(super) async fn verify(&self, password: &str, phc: &str) -> Result<bool, String> {
        let password = password.to_owned();
        let phc = phc.to_owned();
        let counter = Arc::clone(&self.verifications);
        self.run_blocking(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            verify_blocking(&password, &phc)
        })
        .await?
        .map_err(|e| format!("stored password hash is unusable: {e}"))
    }

    /// Spends the cost of one verification, for a user that does not exist.
    pub(super) async fn verify_dummy(&self, password: &str) {
        // The outcome is irrelevant: the caller refuses the login anyway.
        let _ = self.verify(password, DUMMY_PHC).await;
    }

    /// Number of argon2 verifications run so far.
    pub(super) fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    fn mac(&self, password: &str) -> blake3::Hash {
        blake3::keyed_hash(&self.key, password.as_bytes())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `password` was verified against exactly `phc` for `name` recently.
    pub(super) fn cached(&self, name: &str, password: &str, phc: &str) -> bool {
        let mac = self.mac(password);
        let now = Instant::now();
        let mut cache = self.lock();
        match cache.get(name) {
            Some(e) if e.expires <= now || e.phc != phc => {
                cache.remove(name);
                false
            }
            Some(e) => e.mac == mac,
            None => false,
        }
    }

    /// Remembers a successful verification for the cache's TTL.
    pub(super) fn remember(&self, name: &str, password: &str, phc: &str) {
        let entry = Entry {
            mac: self.mac(password),
            phc: phc.to_owned(),
            expires: Instant::now() + self.ttl,
        };
        let mut cache = self.lock();
        if cache.len() >= self.capacity && !cache.contains_key(name) {
            let now = Instant::now();
            cache.retain(|_, e| e.expires > now);
            if cache.len() >= self.capacity {
                // All entries share one TTL, so the earliest expiry is the oldest entry.
                let oldest = cache
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(n, _)| n.clone());
                if let Some(oldest) = oldest {
                    cache.remove(&oldest);
                }
            }
        }
        cache.insert(name.to_owned(), entry);
    }

    /// Drops whatever is remembered for `name`.
    pub(super) fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    #[cfg(test)]
    fn with_limits(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            ..Self::new()
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_is_argon2id_with_owasp_parameters_and_random_salt() {
        let h = Hasher::new();
        let a = h.hash("secret").await.unwrap();
        let b = h.hash("secret").await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "salts must differ");
        assert!(h.verify("secret", &a).await.unwrap());
        assert!(!h.verify("Secret", &a).await.unwrap());
        assert_eq!(h.verifications(), 2);
    }

    #[tokio::test]
    async fn dummy_hash_has_the_real_parameters() {
        assert!(DUMMY_PHC.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let h = Hasher::new();
        // It parses and verifies (to false), so it costs a real verification.
        assert!(!h.verify("guess", DUMMY_PHC).await.unwrap());
    }

    #[tokio::test]
    async fn malformed_stored_hash_is_an_error_not_a_match() {
        let h = Hasher::new();
        assert!(h.verify("x", "not a phc string").await.is_err());
    }

    #[test]
    fn cache_matches_only_same_password_and_same_hash() {
        let h = Hasher::new();
        h.remember("alice", "pw", "$phc1");
        assert!(h.cached("alice", "pw", "$phc1"));
        assert!(!h.cached("alice", "PW", "$phc1"));
        assert!(!h.cached("bob", "pw", "$phc1"));
        // A different stored hash (password changed elsewhere) drops the entry.
        assert!(!h.cached("alice", "pw", "$phc2"));
        assert!(!h.cached("alice", "pw", "$phc1"));
    }

    #[test]
    fn cache_entries_expire() {
        let h = Hasher::with_limits(Duration::ZERO, 10);
        h.remember("alice", "pw", "$phc");
        assert!(!h.cached("alice", "pw", "$phc"));
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_oldest() {
        let h = Hasher::with_limits(Duration::from_secs(60), 3);
        for name in ["a", "b", "c", "d"] {
            h.remember(name, "pw", "$phc");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(h.len(), 3);
        assert!(!h.cached("a", "pw", "$phc"));
        assert!(h.cached("d", "pw", "$phc"));
        h.forget("d");
        assert!(!h.cached("d", "pw", "$phc"));
    }

    #[test]
    fn keyed_hashes_differ_between_processes() {
        assert_ne!(Hasher::new().mac("pw"), Hasher::new().mac("pw"));
    }
}
