//! What an outsider can consume, bounded: connections (in all and per client address), the
//! request and authentication-failure budgets of a client address, and counters of what was
//! refused without being recorded.
//!
//! Everything here works on client addresses, before any token, certificate or body has
//! been looked at, so it costs a refused client almost nothing and the CA nothing it keeps:
//! the state is a few counters per address, pruned when an address has been quiet.
//! IPv6 clients are counted per /64, the smallest block a single host is usually given, so
//! that one host cannot pick a fresh address for every request.

use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{Notify, watch};

use crate::config::LimitSettings;

/// The key a client address is counted under: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by
/// its /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(IpAddr);

impl From<IpAddr> for AddressKey {
    fn from(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self(addr),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

/// Counters of refusals the CA logs but never stores (so that an outsider cannot grow the
/// database), and of what the limits shed. Monotonic; read with [`Metrics::snapshot`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// Refusals of requests that did not authenticate (no or a wrong token, no or an
    /// unknown client certificate): logged and counted, never written as events.
    pub(crate) unauthenticated_refusals: Counter,
    /// Requests refused by a client address's request or failure budget.
    pub(crate) address_rate_limited: Counter,
    /// Authenticated requests refused by a device's or certificate's budget: logged and
    /// counted, not written as events (each would be a row the flood wrote).
    pub(crate) rate_limited_refusals: Counter,
    /// Connections closed at once because a connection cap was reached.
    pub(crate) connections_refused: Counter,
    /// Relying-party checks answered (`relying_party_*`: all of them, those answered from
    /// the decision cache, those refused, and the microseconds they took in all).
    pub(crate) relying_party_checks: Counter,
    pub(crate) relying_party_cache_hits: Counter,
    pub(crate) relying_party_refusals: Counter,
    pub(crate) relying_party_micros: Counter,
    /// Requests answered `mdm_unavailable` because every MDM lookup slot stayed busy.
    pub(crate) mdm_queue_full: Counter,
    /// Request bodies that did not arrive within the body read timeout.
    pub(crate) body_timeouts: Counter,
    /// OpenID Connect sign-ins: codes redeemed for tokens.
    pub(crate) oidc_sign_ins: Counter,
}

/// The values of [`Metrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// See [`Metrics`].
    pub unauthenticated_refusals: u64,
    /// See [`Metrics`].
    pub address_rate_limited: u64,
    /// See [`Metrics`].
    pub rate_limited_refusals: u64,
    /// See [`Metrics`].
    pub connections_refused: u64,
    /// See [`Metrics`].
    pub relying_party_checks: u64,
    /// See [`Metrics`].
    pub relying_party_cache_hits: u64,
    /// See [`Metrics`].
    pub relying_party_refusals: u64,
    /// See [`Metrics`].
    pub relying_party_micros: u64,
    /// See [`Metrics`].
    pub mdm_queue_full: u64,
    /// See [`Metrics`].
    pub body_timeouts: u64,
    /// See [`Metrics`].
    pub oidc_sign_ins: u64,
}

impl Metrics {
    /// Registers every counter for `/metrics` (`devicetrust_<name>_total`).
    pub(crate) fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        let counters: [(&str, &str, &Counter); 11] = [
            (
                "unauthenticated_refusals",
                "Refusals of requests that did not authenticate (not stored)",
                &self.unauthenticated_refusals,
            ),
            (
                "address_rate_limited",
                "Requests refused by a client address's budget",
                &self.address_rate_limited,
            ),
            (
                "rate_limited_refusals",
                "Authenticated requests refused by a device's budget",
                &self.rate_limited_refusals,
            ),
            (
                "connections_refused",
                "Connections closed at once at a connection cap",
                &self.connections_refused,
            ),
            ("relying_party_checks", "Relying-party checks answered", &self.relying_party_checks),
            (
                "relying_party_cache_hits",
                "Relying-party checks answered from the decision cache",
                &self.relying_party_cache_hits,
            ),
            ("relying_party_refusals", "Relying-party checks refused", &self.relying_party_refusals),
            (
                "relying_party_micros",
                "Microseconds spent answering relying-party checks",
                &self.relying_party_micros,
            ),
            (
                "mdm_queue_full",
                "Requests refused because every MDM lookup slot stayed busy",
                &self.mdm_queue_full,
            ),
            ("body_timeouts", "Request bodies that did not arrive in time", &self.body_timeouts),
            ("oidc_sign_ins", "OpenID Connect codes redeemed for tokens", &self.oidc_sign_ins),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let read = |counter: &Counter| counter.get();
        MetricsSnapshot {
            unauthenticated_refusals: read(&self.unauthenticated_refusals),
            address_rate_limited: read(&self.address_rate_limited),
            rate_limited_refusals: read(&self.rate_limited_refusals),
            connections_refused: read(&self.connections_refused),
            relying_party_checks: read(&self.relying_party_checks),
            relying_party_cache_hits: read(&self.relying_party_cache_hits),
            relying_party_refusals: read(&self.relying_party_refusals),
            relying_party_micros: read(&self.relying_party_micros),
            mdm_queue_full: read(&self.mdm_queue_full),
            body_timeouts: read(&self.body_timeouts),
            oidc_sign_ins: read(&self.oidc_sign_ins),
        }
    }
}

/// The per-address budgets: requests, and authentication failures. An address that spends
/// its failure budget is refused every request until the budget has a token again, so
/// guessing tokens from one address is as slow as the budget says.
#[derive(Debug)]
pub(crate) struct AddressGuard {
    requests: DefaultKeyedRateLimiter<AddressKey>,
    failures: DefaultKeyedRateLimiter<AddressKey>,
    blocked_until: Mutex<HashMap<AddressKey, Instant>>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps hold counters only; a panic elsewhere cannot leave them inconsistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Seconds to wait, rounded up, at least 1: a client that waits this long gets through.
pub(crate) fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl AddressGuard {
    pub(crate) fn new(limits: &LimitSettings) -> Self {
        Self {
            requests: RateLimiter::keyed(per_minute(limits.requests_per_minute_per_address)),
            failures: RateLimiter::keyed(per_minute(limits.auth_failures_per_minute_per_address)),
            blocked_until: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from the address's budget; `Err(retry_after_secs)` when it has none
    /// or the address is blocked for failed authentications.
    pub(crate) fn admit(&self, addr: IpAddr) -> Result<(), u64> {
        self.not_blocked(addr)?;
        let key = AddressKey::from(addr);
        self.requests
            .check_key(&key)
            .map_err(|not_until| whole_seconds(not_until.wait_time_from(self.requests.clock().now())))
    }

    /// `Err(retry_after_secs)` while the address is blocked for failed authentications.
    /// Relying parties, whose request rate is their users', take no request budget but
    /// are refused here like anyone else once they have guessed too often.
    pub(crate) fn not_blocked(&self, addr: IpAddr) -> Result<(), u64> {
        let key = AddressKey::from(addr);
        let now = Instant::now();
        match lock(&self.blocked_until).get(&key).copied() {
            Some(until) if until > now => Err(whole_seconds(until - now)),
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication; past the budget the address is blocked until the
    /// budget refills.
    pub(crate) fn auth_failed(&self, addr: IpAddr) {
        let key = AddressKey::from(addr);
        if let Err(not_until) = self.failures.check_key(&key) {
            let wait = not_until.wait_time_from(self.failures.clock().now());
            lock(&self.blocked_until).insert(key, Instant::now() + wait);
        }
    }

    /// Forgets addresses that have been quiet.
    pub(crate) fn prune(&self) {
        self.requests.retain_recent();
        self.requests.shrink_to_fit();
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
        let now = Instant::now();
        lock(&self.blocked_until).retain(|_, until| *until > now);
    }
}

/// The connection caps, and the signals connections listen to: "close when idle" (under
/// pressure, and at shutdown) and "shutting down" (also abandons handshakes).
#[derive(Debug)]
pub(crate) struct Connections {
    max: u32,
    per_address: u32,
    shed_from: u32,
    state: Mutex<ConnectionCounts>,
    all_closed: Notify,
    close_idle: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct ConnectionCounts {
    open: u32,
    by_address: HashMap<AddressKey, u32>,
}

/// One open connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    connections: Arc<Connections>,
    key: AddressKey,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_connections` are open.
    Full,
    /// `max_connections_per_address` are open from this address.
    AddressFull,
}

impl Connections {
    pub(crate) fn new(limits: &LimitSettings) -> Arc<Self> {
        Arc::new(Self {
            max: limits.max_connections,
            per_address: limits.max_connections_per_address,
            // From three quarters of the cap on, idle keep-alive connections make room.
            shed_from: (limits.max_connections / 4 * 3).max(1),
            state: Mutex::new(ConnectionCounts::default()),
            all_closed: Notify::new(),
            close_idle: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
        })
    }

    /// Admits a connection from `addr`, or says why not.
    pub(crate) fn open(self: &Arc<Self>, addr: IpAddr) -> Result<ConnectionPermit, Refused> {
        let key = AddressKey::from(addr);
        let open = {
            let mut counts = lock(&self.state);
            if counts.open >= self.max {
                return Err(Refused::Full);
            }
            let from_address = counts.by_address.entry(key).or_default();
            if *from_address >= self.per_address {
                return Err(Refused::AddressFull);
            }
            *from_address += 1;
            counts.open += 1;
            counts.open
        };
        if open >= self.shed_from {
            self.close_idle.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
        Ok(ConnectionPermit { connections: self.clone(), key })
    }

    /// A receiver that changes whenever idle connections should close.
    pub(crate) fn close_idle_signal(&self) -> watch::Receiver<u64> {
        self.close_idle.subscribe()
    }

    /// A receiver that turns true at shutdown.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every connection to finish its request in flight and close.
    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.close_idle.send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// How many connections are open.
    pub(crate) fn open_count(&self) -> u32 {
        lock(&self.state).open
    }

    /// Waits until every connection has closed.
    pub(crate) async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open_count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = lock(&self.connections.state);
        counts.open = counts.open.saturating_sub(1);
        if let Some(n) = counts.by_address.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_address.remove(&self.key);
            }
        }
        if counts.open == 0 {
            self.connections.all_closed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: u32, per_address: u32) -> LimitSettings {
        LimitSettings {
            max_connections: max,
            max_connections_per_address: per_address,
            ..LimitSettings::default()
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(AddressKey::from(a), AddressKey::from(b));
        assert_ne!(AddressKey::from(a), AddressKey::from(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(AddressKey::from(mapped), AddressKey::from(v4));
    }

    #[tokio::test]
    async fn connection_caps_hold_and_free_on_drop() {
        let connections = Connections::new(&limits(3, 2));
        let one: IpAddr = "192.0.2.1".parse().expect("ip");
        let two: IpAddr = "192.0.2.2".parse().expect("ip");
        let idle = connections.close_idle_signal();
        let a = connections.open(one).expect("first");
        let _b = connections.open(one).expect("second from the same address");
        assert_eq!(connections.open(one).err(), Some(Refused::AddressFull));
        let _c = connections.open(two).expect("another address");
        assert!(
            idle.has_changed().expect("sender alive"),
            "at 3/4 of the cap idle connections are told to close"
        );
        assert_eq!(connections.open(two).err(), Some(Refused::Full));
        drop(a);
        assert_eq!(connections.open_count(), 2);
        let _d = connections.open(one).expect("a freed place is reusable");
    }

    #[tokio::test]
    async fn all_closed_waits_for_the_last_permit() {
        let connections = Connections::new(&limits(4, 4));
        let permit = connections.open("192.0.2.1".parse().expect("ip")).expect("open");
        let waiter = tokio::spawn({
            let connections = connections.clone();
            async move { connections.all_closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(permit);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("finished").expect("join");
    }

    #[test]
    fn failures_block_an_address_and_only_that_one() {
        let settings = LimitSettings {
            requests_per_minute_per_address: 100,
            auth_failures_per_minute_per_address: 3,
            ..LimitSettings::default()
        };
        let guard = AddressGuard::new(&settings);
        let bad: IpAddr = "192.0.2.66".parse().expect("ip");
        let good: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..3 {
            guard.admit(bad).expect("within the budget");
            guard.auth_failed(bad);
        }
        guard.admit(bad).expect("three failures are the budget");
        guard.auth_failed(bad);
        let wait = guard.admit(bad).expect_err("the fourth failure blocks the address");
        assert!((1..=60).contains(&wait), "{wait}");
        guard.admit(good).expect("another address is not affected");
    }

    #[test]
    fn the_request_budget_is_per_address() {
        let settings = LimitSettings { requests_per_minute_per_address: 5, ..LimitSettings::default() };
        let guard = AddressGuard::new(&settings);
        let one: IpAddr = "192.0.2.1".parse().expect("ip");
        for n in 0..5 {
            guard.admit(one).unwrap_or_else(|_| panic!("request {n} is within the budget"));
        }
        assert!(matches!(guard.admit(one), Err(retry_after_secs) if retry_after_secs > 0), "over the budget");
        guard.admit("192.0.2.2".parse().expect("ip")).expect("another address has its own budget");
    }
}
