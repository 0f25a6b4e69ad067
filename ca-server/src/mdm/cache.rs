//! A cache of positive MDM answers around any [`ManagedDeviceCheck`].
//!
//! A renewal storm (a fleet waking up on Monday morning) would otherwise ask Jamf once per
//! request. Only `Managed` is remembered, for a short time: a device that was just
//! unenrolled or wiped is refused again within the TTL, while a negative answer or an error
//! is never cached, so a device enrolled a minute ago is not kept out and an outage is not
//! remembered past its end.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{ManagedDeviceCheck, MdmError, MdmVerdict, MonotonicClock, SystemMonotonicClock};

/// The TTL used when none is configured.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Bounds memory when many distinct devices are checked within one TTL.
const MAX_ENTRIES: usize = 50_000;

/// Remembers `Managed` per (serial number, UDID) for a TTL; asks the inner check otherwise.
pub struct PositiveCache {
    inner: Arc<dyn ManagedDeviceCheck>,
    ttl: Duration,
    clock: Arc<dyn MonotonicClock>,
    /// Expiry per (serial, lowercase UDID). Never held across an await.
    entries: Mutex<HashMap<(String, String), Instant>>,
}

impl fmt::Debug for PositiveCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PositiveCache")
            .field("inner", &self.inner)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl PositiveCache {
    /// Caches `inner`'s positive answers for `ttl` (zero caches nothing).
    pub fn new(inner: Arc<dyn ManagedDeviceCheck>, ttl: Duration) -> Self {
        Self::with_clock(inner, ttl, Arc::new(SystemMonotonicClock))
    }

    /// Like [`PositiveCache::new`], with entries expiring on `clock`.
    pub fn with_clock(
        inner: Arc<dyn ManagedDeviceCheck>,
        ttl: Duration,
        clock: Arc<dyn MonotonicClock>,
    ) -> Self {
        Self { inner, ttl, clock, entries: Mutex::new(HashMap::new()) }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Instant>> {
        // The map stays consistent even if a holder panicked: every operation is one call.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ManagedDeviceCheck for PositiveCache {
    async fn check(&self, serial_number: &str, udid: &str) -> Result<MdmVerdict, MdmError> {
        if self.ttl.is_zero() {
            return self.inner.check(serial_number, udid).await;
        }
        let key = (serial_number.to_owned(), udid.to_ascii_lowercase());
        {
            let mut entries = self.entries();
            match entries.get(&key) {
                Some(expires) if self.clock.now() < *expires => return Ok(MdmVerdict::Managed),
                Some(_) => {
                    entries.remove(&key);
                }
                None => {}
            }
        }
        let verdict = self.inner.check(serial_number, udid).await?;
        if verdict == MdmVerdict::Managed {
            let now = self.clock.now();
            if let Some(expires) = now.checked_add(self.ttl) {
                let mut entries = self.entries();
                if entries.len() >= MAX_ENTRIES {
                    entries.retain(|_, expires| now < *expires);
                    if entries.len() >= MAX_ENTRIES {
                        entries.clear();
                    }
                }
                entries.insert(key, expires);
            }
        }
        Ok(verdict)
    }
}
