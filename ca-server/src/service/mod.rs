//! The CA's behaviour, independent of HTTP: what enroll, renew, status, verify and the admin
//! operations do, in the order the contract prescribes, and what they record.
//!
//! [`Ca`] holds everything a request needs (issuing CA, store, MDM, clock, tokens, rate
//! limiter, TLS configurations) and is shared by every connection as an `Arc<Ca>`.
//! [`CaBuilder`] turns a [`Config`] into a `Ca`, loading or generating every file the
//! configuration names; tests swap in their own clock, MDM or store through it.
//!
//! Refusals are [`ApiError`]s. Recording them as FAILURE events is the HTTP layer's job
//! ([`Ca::record_refusal`]), because it knows which request failed before the body was
//! even parsed.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration as StdDuration;

use ca_client::protocol::{
    CertificateState, CertificateStatus, DeviceInfo, DeviceRecord, DeviceRef, EnrollRequest, Event,
    EventType, IssuedCertificate, Metadata, Outcome, RenewRequest,
};
use chrono::{DateTime, Duration, Utc};
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rustls::ServerConfig;

use crate::authority::ocsp;
use crate::authority::{self, Authority, Profile};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError, LimitSettings, StoreSettings};
use crate::error::{ApiError, MissingCertificate};
use crate::fsutil;
use crate::jwt::KeyError;
use crate::mdm::{self, ManagedDeviceCheck, MdmVerdict};
use crate::oidc::{OidcSetupError, Provider};
use crate::relying_party::assertion::{AssertionClaims, AssertionSigner, Jwks};
use crate::relying_party::{
    DecisionCache, ManagementMemory, RelyingParties, RelyingParty, RelyingPartyError, TrustedDevice,
};
use crate::secret::{SecretError, Token};
use crate::server::limits::AddressGuard;
pub(crate) use crate::server::limits::Metrics;
use crate::server::tls::{self, IssuedCertVerifier, TlsError};
use crate::store::Standing;
use crate::store::postgres::{PostgresOptions, PostgresStore};
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{
    AuthOutcome, Authentication, CertificateRow, EnrollOutcome, Enrollment, NewEvent, RenewOutcome, Renewal,
    RevokeTarget, Store, StoreError,
};

mod oidc;

pub(crate) use oidc::authorization_refusal;

/// Longest accepted identifier fields (UDID, serial number, versions).
pub(crate) const MAX_ID_LEN: usize = 128;
/// Longest accepted free-text fields (user, display name).
pub(crate) const MAX_TEXT_LEN: usize = 256;
/// How long a generated CRL is served before it is regenerated even without a local
/// revocation (another CA instance may have revoked, certificates may have expired).
const CRL_CACHE_SECS: i64 = 60;

/// Why the CA could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A relying party's secret or sources are unusable.
    #[error("cannot set up the relying parties")]
    RelyingParty(#[from] RelyingPartyError),
    /// The device assertion's signing keys could not be loaded or generated.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The OpenID Connect provider's clients or keys are unusable.
    #[error("cannot set up the openid connect provider")]
    Oidc(#[from] OidcSetupError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be created.
    #[error("cannot create the data directory")]
    DataDir(#[source] fsutil::WriteError),
    /// The issuing CA could not be loaded or generated.
    #[error(transparent)]
    Authority(#[from] authority::AuthorityError),
    /// A token could not be loaded.
    #[error(transparent)]
    Token(#[from] SecretError),
    /// The admin token equals the enrollment token.
    #[error("the admin token must differ from the enrollment token")]
    SameTokens,
    /// The MDM could not be set up.
    #[error("cannot set up the mdm check")]
    Mdm(#[source] mdm::MdmSetupError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Refuses a cert-auth domain that no listener's certificate is valid for: the main
/// listener serves every endpoint, and the `[cert_auth]` listener (with its own certificate
/// or the main one) the browser-facing ones.
fn check_cert_auth_domain(
    config: &Config,
    main_chain: &[rustls::pki_types::CertificateDer<'static>],
    cert_auth_chain: Option<&Vec<rustls::pki_types::CertificateDer<'static>>>,
) -> Result<(), SetupError> {
    let domain = url::Url::parse(&config.server.cert_auth_domain).map_err(|e| {
        SetupError::Config(ConfigError::Invalid { setting: "server.cert_auth_domain", reason: e.to_string() })
    })?;
    let mut leaves = Vec::new();
    if let Some(leaf) = main_chain.first() {
        leaves.push((config.server.tls.certificate.as_path(), leaf));
    }
    if let (Some(files), Some(leaf)) =
        (config.cert_auth.as_ref().and_then(|l| l.tls.as_ref()), cert_auth_chain.and_then(|c| c.first()))
    {
        leaves.push((files.certificate.as_path(), leaf));
    }
    Ok(tls::check_serves_domain(&domain, &leaves)?)
}

/// A client certificate presented in the TLS handshake (already verified to chain to the
/// issuing CA), as the HTTP layer hands it to the handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedCertificate {
    /// Its serial, lowercase hex: the store's lookup key.
    pub serial: String,
    /// Lowercase hex SHA-256 of the DER, compared with the stored certificate's.
    pub fingerprint: String,
}

impl PresentedCertificate {
    /// Reads the serial of a DER certificate and fingerprints it; `None` if it does not
    /// parse (the TLS verifier has parsed it already, so this does not happen).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        use sha2::Digest as _;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(Self {
            serial: hex::encode(cert.raw_serial()),
            fingerprint: hex::encode(sha2::Sha256::digest(der)),
        })
    }
}

/// Who and what a refusal concerns, as far as the request revealed it before failing.
///
/// Only values that passed validation are put here, and only a request that proved who it
/// is (a valid token, or a client certificate this CA has a record of) is recorded as an
/// event: an outsider can make the CA log a line and count a refusal, never write a row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusalContext {
    /// The event type to record; `None` for requests the contract logs no event for.
    pub event_type: Option<EventType>,
    /// Whether the request authenticated itself before it was refused.
    pub authenticated: bool,
    /// The client's address, for the per-address limits.
    pub client: Option<std::net::IpAddr>,
    /// The user.
    pub user: Option<String>,
    /// The device.
    pub udid: Option<String>,
    /// The certificate.
    pub serial: Option<String>,
    /// The OpenID Connect client, once it is known to be a configured one.
    pub client_id: Option<String>,
}

impl RefusalContext {
    /// A context recording events of `event_type` (once the request has authenticated).
    pub fn new(event_type: EventType, client: Option<std::net::IpAddr>) -> Self {
        Self { event_type: Some(event_type), client, ..Self::default() }
    }

    /// A context that records no event.
    pub fn unrecorded(client: Option<std::net::IpAddr>) -> Self {
        Self { client, ..Self::default() }
    }

    /// Fills in what a stored certificate says: the request has proved it holds it.
    pub fn certificate(&mut self, row: &CertificateRow) {
        self.authenticated = true;
        self.udid = Some(row.device_udid.clone());
        self.serial = Some(row.serial.clone());
        self.user.get_or_insert_with(|| row.bound_user.clone().unwrap_or_else(|| row.user.clone()));
    }
}

/// The answer to enroll and renew: the certificate, and whether it was issued just now
/// (201) or is an idempotent repeat (200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueReply {
    /// The response body.
    pub body: IssuedCertificate,
    /// Whether a new certificate was stored.
    pub created: bool,
}

struct CachedCrl {
    der: Arc<Vec<u8>>,
    number: u64,
    generated_at: DateTime<Utc>,
    generation: u64,
}

/// The certificate authority service. See the module documentation.
pub struct Ca {
    authority: Authority,
    store: Arc<dyn Store>,
    mdm: Arc<dyn ManagedDeviceCheck>,
    clock: Arc<dyn Clock>,
    enrollment_token: Token,
    admin_token: Token,
    limiter: DefaultKeyedRateLimiter<String>,
    guard: AddressGuard,
    mdm_slots: tokio::sync::Semaphore,
    superseded_grace: Duration,
    limits: LimitSettings,
    metrics: Metrics,
    telemetry: Arc<crate::ops::Telemetry>,
    mdm_description: String,
    read_only: AtomicBool,
    cert_auth_domain: String,
    learn_more_url: Option<String>,
    lifetime_days: u32,
    renew_before_days: u32,
    max_unbound: u32,
    crl_validity: Duration,
    crl: tokio::sync::Mutex<Option<CachedCrl>>,
    revocations: std::sync::atomic::AtomicU64,
    tls_main: Arc<ServerConfig>,
    tls_cert_auth: Arc<ServerConfig>,
    shutdown_grace: StdDuration,
    protected_origins: Vec<String>,
    relying_parties: RelyingParties,
    decisions: DecisionCache,
    management: ManagementMemory,
    assertions: AssertionSigner,
    ocsp_validity: Duration,
    oidc: Option<Provider>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("authority", &self.authority)
            .field("store", &self.store)
            .field("mdm", &self.mdm)
            .field("cert_auth_domain", &self.cert_auth_domain)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Ca`] from a [`Config`].
#[derive(Debug)]
pub struct CaBuilder {
    config: Config,
    clock: Option<Arc<dyn Clock>>,
    mdm: Option<Arc<dyn ManagedDeviceCheck>>,
    store: Option<Arc<dyn Store>>,
}

impl CaBuilder {
    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Uses `mdm` instead of the one `[mdm]` describes.
    pub fn mdm(mut self, mdm: Arc<dyn ManagedDeviceCheck>) -> Self {
        self.mdm = Some(mdm);
        self
    }

    /// Uses `store` instead of the one `[store]` describes.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Loads or generates everything the configuration names and opens the store.
    pub async fn build(self) -> Result<Arc<Ca>, SetupError> {
        let config = self.config;
        config.validate()?;
        // Everything that only reads (tokens, the MDM's settings and secret, TLS files, the
        // relying parties) is loaded before anything is created: a missing token file must
        // not leave a new data directory with a freshly generated issuing CA behind it.
        let enrollment_token = config.tokens.enrollment.load("enrollment token")?;
        let admin_token = config.tokens.admin.load("admin token")?;
        if enrollment_token.same_as(&admin_token) {
            return Err(SetupError::SameTokens);
        }
        let mdm = match self.mdm {
            Some(mdm) => mdm,
            None => mdm::from_settings(&config.mdm).map_err(SetupError::Mdm)?,
        };
        let tls_main_files = (
            tls::load_chain(&config.server.tls.certificate)?,
            tls::load_key(&config.server.tls.private_key)?,
        );
        let tls_cert_auth_files = match config.cert_auth.as_ref().and_then(|l| l.tls.as_ref()) {
            Some(files) => Some((tls::load_chain(&files.certificate)?, tls::load_key(&files.private_key)?)),
            None => None,
        };
        check_cert_auth_domain(&config, &tls_main_files.0, tls_cert_auth_files.as_ref().map(|f| &f.0))?;
        let relying_parties = RelyingParties::load(&config.relying_party)?;
        // A PostgreSQL store is opened (and migrated) before anything is created here: a
        // database that cannot be reached, or one a newer version migrated, leaves nothing
        // behind either.
        let mut store = self.store;
        if let (None, StoreSettings::Postgres(pg)) = (&store, &config.store) {
            let password = pg
                .password_file
                .as_deref()
                .map(|path| crate::secret::read_password_file(path, "PostgreSQL password"))
                .transpose()?;
            store = Some(Arc::new(
                PostgresStore::open(&PostgresOptions {
                    url: pg.url.clone(),
                    password,
                    max_connections: pg.max_connections,
                    acquire_timeout: StdDuration::from_secs(pg.acquire_timeout_secs),
                    statement_timeout: StdDuration::from_secs(pg.statement_timeout_secs),
                })
                .await?,
            ));
        }

        let data_dir = &config.server.data_dir;
        fsutil::create_private_dir(data_dir).map_err(SetupError::DataDir)?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));

        let profile = Profile {
            subject_common_name: config.ca.subject_common_name.clone(),
            lifetime: Duration::days(i64::from(config.ca.certificate_lifetime_days)),
            backdate: Duration::seconds(i64::from(config.ca.backdate_secs)),
            crl_urls: vec![config.ca.crl_url.clone().unwrap_or_else(|| {
                format!(
                    "{}{}",
                    config.server.cert_auth_domain.trim_end_matches('/'),
                    ca_client::protocol::paths::CRL
                )
            })],
            ocsp_url: Some(config.ca.ocsp_url.clone().unwrap_or_else(|| {
                format!("{}{}", config.server.cert_auth_domain.trim_end_matches('/'), crate::api::OCSP_PATH)
            })),
        };
        let assertions = AssertionSigner::load(
            &config.relying_party.assertion_keys,
            data_dir,
            config.server.cert_auth_domain.trim_end_matches('/'),
            config.relying_party.assertion_lifetime_secs,
        )?;
        let oidc =
            Provider::load(&config.oidc, config.server.cert_auth_domain.trim_end_matches('/'), data_dir)?;
        let authority = match (&config.ca.certificate, &config.ca.private_key) {
            (Some(cert), Some(key)) => Authority::load(cert, key, &config.ca.chain, profile)?,
            _ => Authority::load_or_generate(
                data_dir,
                &config.ca.issuer_common_name,
                Duration::days(i64::from(config.ca.generated_validity_days)),
                clock.now(),
                profile,
            )?,
        };
        if authority.not_after()
            < clock.now() + Duration::days(i64::from(config.ca.certificate_lifetime_days))
        {
            tracing::warn!(
                not_after = %authority.not_after(),
                "the issuing CA expires before certificates issued today; they will stop validating when it does"
            );
        }

        let store: Arc<dyn Store> = match (store, &config.store) {
            (Some(store), _) => store,
            (None, StoreSettings::Sqlite { path, read_connections }) => {
                let path: PathBuf = data_dir.join(path);
                Arc::new(
                    SqliteStore::open(&SqliteOptions { path, read_connections: *read_connections }).await?,
                )
            }
            // Opened above, before the data directory was created: `store` is set.
            (None, StoreSettings::Postgres(_)) => unreachable!("the PostgreSQL store is opened above"),
        };

        let verifier = IssuedCertVerifier::new(authority.certificate_der().clone(), clock.clone())?;
        let tls_main = tls::server_config(tls_main_files.0, tls_main_files.1, verifier.clone())?;
        let tls_cert_auth = match tls_cert_auth_files {
            Some((chain, key)) => tls::server_config(chain, key, verifier)?,
            None => tls_main.clone(),
        };

        let metrics = Metrics::default();
        let telemetry = Arc::new(crate::ops::Telemetry::new(&metrics));
        let store: Arc<dyn Store> = Arc::new(crate::store::Metered::new(store, telemetry.clone()));
        let mdm_description = match &config.mdm {
            crate::mdm::MdmSettings::AllowAll => "ok: allow_all (every device counts as managed)".to_owned(),
            crate::mdm::MdmSettings::StaticList { path } => format!("ok: static_list {}", path.display()),
            crate::mdm::MdmSettings::Jamf(jamf) => format!("ok: jamf {}", jamf.url),
        };
        let per_minute = NonZeroU32::new(config.limits.enrollments_per_minute).unwrap_or(NonZeroU32::MIN);
        Ok(Arc::new(Ca {
            authority,
            store,
            mdm,
            clock,
            enrollment_token,
            admin_token,
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            guard: AddressGuard::new(&config.limits),
            mdm_slots: tokio::sync::Semaphore::new(config.limits.mdm_concurrent_lookups as usize),
            superseded_grace: Duration::days(i64::from(config.ca.superseded_grace_days)),
            limits: config.limits.clone(),
            metrics,
            telemetry,
            mdm_description,
            read_only: AtomicBool::new(config.server.read_only),
            cert_auth_domain: config.server.cert_auth_domain.trim_end_matches('/').to_owned(),
            learn_more_url: config.server.learn_more_url.clone(),
            lifetime_days: config.ca.certificate_lifetime_days,
            renew_before_days: config.ca.renew_before_days,
            max_unbound: config.ca.max_unbound_certificates,
            crl_validity: Duration::hours(i64::from(config.ca.crl_validity_hours)),
            crl: tokio::sync::Mutex::new(None),
            revocations: std::sync::atomic::AtomicU64::new(0),
            tls_main,
            tls_cert_auth,
            shutdown_grace: StdDuration::from_secs(config.server.shutdown_grace_secs),
            protected_origins: config.relying_party.protected_origins.clone(),
            relying_parties,
            decisions: DecisionCache::new(config.relying_party.decision_cache_secs),
            management: ManagementMemory::default(),
            assertions,
            ocsp_validity: Duration::minutes(i64::from(config.ca.ocsp_validity_minutes)),
            oidc,
        }))
    }
}

impl Ca {
    /// A builder for a CA described by `config`.
    pub fn builder(config: Config) -> CaBuilder {
        CaBuilder { config, clock: None, mdm: None, store: None }
    }

    /// The CA's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The issuing CA.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The TLS configuration of the main listener.
    pub fn tls_main(&self) -> Arc<ServerConfig> {
        self.tls_main.clone()
    }

    /// The TLS configuration of the cert-auth listener.
    pub fn tls_cert_auth(&self) -> Arc<ServerConfig> {
        self.tls_cert_auth.clone()
    }

    /// How long requests in flight may take after a shutdown signal.
    pub fn shutdown_grace(&self) -> StdDuration {
        self.shutdown_grace
    }

    /// The "Learn more" link of the verify page.
    pub fn learn_more_url(&self) -> Option<&str> {
        self.learn_more_url.as_deref()
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Relaxed)
    }

    /// Turns read-only mode on or off at runtime.
    pub fn set_read_only(&self, read_only: bool) {
        self.read_only.store(read_only, Ordering::Relaxed);
        tracing::info!(read_only, "read-only mode changed");
    }

    /// Closes the store. Called once the listeners have drained.
    pub async fn close(&self) {
        self.store.close().await;
    }

    /// Forgets rate-limiter state of devices and addresses that have been quiet for a while.
    pub fn prune_rate_limiter(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.guard.prune();
    }

    /// The resource limits.
    pub fn limits(&self) -> &LimitSettings {
        &self.limits
    }

    /// Counters of what the CA refused without recording it.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every metric, for `/metrics`.
    pub fn telemetry(&self) -> &crate::ops::Telemetry {
        &self.telemetry
    }

    /// Whether the store answers (`/readyz`).
    pub async fn store_ping(&self) -> Result<(), crate::store::StoreError> {
        self.store.ping().await
    }

    /// `ok: <which MDM is asked>` (`/readyz`): building the CA already refused an MDM
    /// whose settings or secret are missing, so a running CA always has one.
    pub fn mdm_description(&self) -> String {
        self.mdm_description.clone()
    }

    /// The per-address request budget, taken at the start of every enroll, renew and admin
    /// request, before any token or body is looked at; an address that spent its budget of
    /// authentication failures is refused here too.
    pub fn admit(&self, client: Option<std::net::IpAddr>) -> Result<(), ApiError> {
        let Some(client) = client else { return Ok(()) };
        self.guard.admit(client).map_err(|retry_after_secs| {
            self.metrics.address_rate_limited.inc();
            ApiError::RateLimited { retry_after_secs }
        })
    }

    /// The public metadata.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            cert_auth_domain: self.cert_auth_domain.clone(),
            issuer_common_name: self.authority.issuer_common_name().to_owned(),
            ca_certificates: self.authority.chain_pem().to_vec(),
            certificate_lifetime_days: self.lifetime_days,
            renew_before_days: self.renew_before_days,
            max_unbound_certificates: self.max_unbound,
            read_only: self.is_read_only(),
            protected_origins: self.protected_origins.clone(),
        }
    }

    /// Refuses writes in read-only mode.
    pub fn ensure_writable(&self) -> Result<(), ApiError> {
        if self.is_read_only() { Err(ApiError::ReadOnly) } else { Ok(()) }
    }

    /// Checks a presented enrollment bearer token; a match authenticates the request.
    pub fn check_enrollment_token(
        &self,
        presented: Option<&str>,
        context: &mut RefusalContext,
    ) -> Result<(), ApiError> {
        match presented {
            Some(token) if self.enrollment_token.matches(token) => {
                context.authenticated = true;
                Ok(())
            }
            _ => Err(ApiError::InvalidToken),
        }
    }

    /// Checks a presented admin bearer token; a match authenticates the request.
    pub fn check_admin_token(
        &self,
        presented: Option<&str>,
        context: &mut RefusalContext,
    ) -> Result<(), ApiError> {
        match presented {
            Some(token) if self.admin_token.matches(token) => {
                context.authenticated = true;
                Ok(())
            }
            _ => Err(ApiError::InvalidAdminToken),
        }
    }

    /// The moment at or before which a superseded certificate stopped being acceptable.
    fn superseded_cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.superseded_grace
    }

    fn rate_limit(&self, udid: &str) -> Result<(), ApiError> {
        self.limiter.check_key(&udid.to_owned()).map_err(|not_until| ApiError::RateLimited {
            retry_after_secs: crate::server::limits::whole_seconds(
                not_until.wait_time_from(self.limiter.clock().now()),
            ),
        })
    }

    async fn ask_mdm(&self, serial_number: &str, udid: &str) -> Result<(), ApiError> {
        // A bounded number of lookups at once, however many requests arrive: a flood at the
        // CA must not become a flood at the MDM. Waiting too long for a slot fails closed.
        let _slot = match tokio::time::timeout(
            StdDuration::from_secs(self.limits.mdm_queue_wait_secs),
            self.mdm_slots.acquire(),
        )
        .await
        {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) | Err(_) => {
                self.metrics.mdm_queue_full.inc();
                return Err(ApiError::MdmUnavailable(mdm::MdmError::unavailable(
                    "every mdm lookup slot stayed busy",
                )));
            }
        };
        let started = std::time::Instant::now();
        let verdict = self.mdm.check(serial_number, udid).await;
        self.telemetry.mdm_seconds.observe(started.elapsed().as_secs_f64());
        let outcome = match &verdict {
            Ok(MdmVerdict::Managed) => "managed",
            Ok(MdmVerdict::NotManaged(_)) => "not_managed",
            Err(_) => "unavailable",
        };
        self.telemetry.mdm_lookups.get_or_create(&crate::ops::OutcomeLabels { outcome }).inc();
        match verdict {
            Ok(MdmVerdict::Managed) => {
                self.management.record(udid, true, self.clock.now());
                Ok(())
            }
            Ok(MdmVerdict::NotManaged(reason)) => {
                // Remembered for the relying-party check: a device the MDM gave up on is
                // refused there from now on, not only at its next renewal.
                self.management.record(udid, false, self.clock.now());
                Err(ApiError::DeviceNotManaged(reason))
            }
            Err(e) => Err(ApiError::MdmUnavailable(e)),
        }
    }

    fn reply(&self, row: &CertificateRow, created: bool) -> IssueReply {
        IssueReply {
            body: IssuedCertificate {
                certificate: row.certificate_pem.clone(),
                chain: self.authority.chain_pem().to_vec(),
                serial_number: row.serial.clone(),
                not_before: row.not_before,
                not_after: row.not_after,
                state: row.state,
            },
            created,
        }
    }

    /// Enrollment, after the token and read-only checks: request shape, rate limit, CSR,
    /// MDM, then issuance (which applies idempotency and the unbound limit).
    pub async fn enroll(
        &self,
        request: &EnrollRequest,
        context: &mut RefusalContext,
    ) -> Result<IssueReply, ApiError> {
        validate_enroll(request)?;
        // One device, one identity: the MDM matches UDIDs whatever their case, so the limit,
        // the rate limit, the store and the certificate must see one spelling of it.
        let device = DeviceInfo { udid: canonical_udid(&request.device.udid), ..request.device.clone() };
        context.user = Some(request.user.clone());
        context.udid = Some(device.udid.clone());
        self.rate_limit(&device.udid)?;
        let csr = authority::check_csr(&request.csr)?;
        self.ask_mdm(&device.serial_number, &device.udid).await?;
        let now = self.clock.now();
        let issued = self.authority.issue(&csr, &device.udid, now)?;
        let outcome = self
            .store
            .enroll(Enrollment {
                device: &device,
                platform: request.platform,
                user: &request.user,
                certificate: &issued,
                max_unbound: self.max_unbound,
                now,
            })
            .await?;
        match outcome {
            EnrollOutcome::Issued(row) => {
                self.telemetry.issued.get_or_create(&crate::ops::KindLabels { kind: "enroll" }).inc();
                tracing::info!(serial = %row.serial, udid = %row.device_udid, user = %row.user, "issued a certificate");
                Ok(self.reply(&row, true))
            }
            EnrollOutcome::Existing(row) => {
                tracing::info!(serial = %row.serial, udid = %row.device_udid, "idempotent enrollment repeat");
                Ok(self.reply(&row, false))
            }
            EnrollOutcome::LimitReached => Err(ApiError::EnrollmentLimitReached { max: self.max_unbound }),
        }
    }

    /// Finds the stored certificate behind a presented client certificate.
    pub async fn identify(
        &self,
        presented: Option<&PresentedCertificate>,
        context: &mut RefusalContext,
    ) -> Result<CertificateRow, ApiError> {
        let presented = presented.ok_or(ApiError::ClientCertificateRequired(MissingCertificate::None))?;
        let row = self
            .stored(presented)
            .await?
            .ok_or(ApiError::ClientCertificateRequired(MissingCertificate::Unknown))?;
        context.certificate(&row);
        Ok(row)
    }

    fn ensure_current(&self, row: &CertificateRow) -> Result<(), ApiError> {
        let now = self.clock.now();
        if row.state == CertificateState::Revoked {
            return Err(ApiError::CertificateRevoked { serial: row.serial.clone() });
        }
        if row.is_expired(now) {
            return Err(ApiError::CertificateExpired {
                serial: row.serial.clone(),
                not_after: row.not_after,
            });
        }
        if row.is_superseded_before(self.superseded_cutoff(now)) {
            return Err(self.superseded(row));
        }
        Ok(())
    }

    fn superseded(&self, row: &CertificateRow) -> ApiError {
        ApiError::CertificateSuperseded {
            serial: row.serial.clone(),
            superseded_at: row.superseded_at,
            grace_days: self.superseded_grace.num_days(),
        }
    }

    /// Takes one renewal from the device's budget, right after the certificate was identified
    /// and before the body is read: every refusal from here on is a row, and the budget
    /// bounds how many one certificate can cause.
    pub fn admit_renewal(&self, old: &CertificateRow) -> Result<(), ApiError> {
        self.rate_limit(&old.device_udid)
    }

    /// Renewal with the presented certificate `old`, after [`Ca::admit_renewal`]: it must be
    /// current; then shape, CSR (with a new key), MDM, and issuance of the successor.
    pub async fn renew(&self, old: &CertificateRow, request: &RenewRequest) -> Result<IssueReply, ApiError> {
        self.ensure_current(old)?;
        check_id("clientVersion", &request.client_version)?;
        let csr = authority::check_csr(&request.csr)?;
        if csr.spki_sha256() == old.spki_sha256 {
            return Err(authority::CsrError::KeyReused.into());
        }
        self.ask_mdm(&old.device_serial_number, &old.device_udid).await?;
        let now = self.clock.now();
        let issued = self.authority.issue(&csr, &old.device_udid, now)?;
        let outcome = self
            .store
            .renew(Renewal {
                presented_serial: &old.serial,
                certificate: &issued,
                max_unbound: self.max_unbound,
                superseded_cutoff: self.superseded_cutoff(now),
                now,
            })
            .await?;
        match outcome {
            RenewOutcome::Issued(row) => {
                self.telemetry.issued.get_or_create(&crate::ops::KindLabels { kind: "renew" }).inc();
                tracing::info!(serial = %row.serial, renewed = %old.serial, udid = %row.device_udid, "renewed a certificate");
                Ok(self.reply(&row, true))
            }
            RenewOutcome::Existing(row) => Ok(self.reply(&row, false)),
            RenewOutcome::LimitReached => Err(ApiError::EnrollmentLimitReached { max: self.max_unbound }),
            RenewOutcome::Revoked(row) => Err(ApiError::CertificateRevoked { serial: row.serial }),
            RenewOutcome::Expired(row) => {
                Err(ApiError::CertificateExpired { serial: row.serial, not_after: row.not_after })
            }
            RenewOutcome::Superseded(row) => Err(self.superseded(&row)),
            RenewOutcome::Unknown => Err(ApiError::ClientCertificateRequired(MissingCertificate::Vanished)),
        }
    }

    /// The status of the presented certificate. A revoked one is reported (200), so that
    /// the agent learns it must uninstall; an expired one is refused.
    pub fn status(&self, row: &CertificateRow) -> Result<CertificateStatus, ApiError> {
        // Expired and superseded certificates pass the handshake so that they can be told
        // so, and each refusal is a row: the certificate's budget comes first.
        self.rate_limit(&format!("status:{}", row.serial))?;
        if row.state != CertificateState::Revoked {
            self.ensure_current(row)?;
        }
        Ok(CertificateStatus {
            serial_number: row.serial.clone(),
            state: row.state,
            bound_user: row.bound_user.clone(),
            not_after: row.not_after,
            device: DeviceRef { udid: row.device_udid.clone() },
        })
    }

    /// Verification at the cert-auth domain, asked by the browser itself: binds at first
    /// use (unless read-only), always to the enrolling user. `user`, when the page names
    /// one, is only checked: a certificate that belongs to someone else is refused.
    pub async fn verify(
        &self,
        row: &CertificateRow,
        user: Option<&str>,
        context: &mut RefusalContext,
    ) -> Result<CertificateRow, ApiError> {
        // Every verify writes an event, success or refusal, and any web page can make a
        // browser send one: the certificate's budget, taken before anything can fail, bounds
        // the rows a hostile page can make it write. (UDIDs cannot contain ':', so these keys
        // never meet a device's.)
        self.rate_limit(&format!("verify:{}", row.serial))?;
        if let Some(user) = user {
            check_text("user", user, false)?;
            context.user = Some(user.to_owned());
        }
        self.authenticate(row, None, user, None).await
    }

    /// Binds a certificate to `user` for an authenticated server-to-server caller (the admin
    /// API): the one way a certificate gets bound to anyone but its enrolling user.
    pub async fn bind(
        &self,
        serial: &str,
        user: &str,
        context: &mut RefusalContext,
    ) -> Result<CertificateRow, ApiError> {
        check_serial(serial)?;
        context.serial = Some(serial.to_owned());
        check_text("user", user, false)?;
        context.user = Some(user.to_owned());
        self.ensure_writable()?;
        let row = self.store.certificate_by_serial(serial).await?.ok_or(ApiError::NotFound)?;
        context.udid = Some(row.device_udid.clone());
        self.authenticate(&row, Some(user), Some(user), None).await
    }

    /// Checks and (unless read-only) binds a certificate in the store, which records the
    /// authentication, for `client_id` when an OpenID Connect client asked.
    async fn authenticate(
        &self,
        row: &CertificateRow,
        bind_user: Option<&str>,
        required_user: Option<&str>,
        client_id: Option<&str>,
    ) -> Result<CertificateRow, ApiError> {
        let now = self.clock.now();
        let outcome = self
            .store
            .authenticate(Authentication {
                serial: &row.serial,
                bind_user,
                required_user,
                bind: !self.is_read_only(),
                superseded_cutoff: self.superseded_cutoff(now),
                client_id,
                now,
            })
            .await?;
        match outcome {
            AuthOutcome::Trusted(row) => Ok(row),
            AuthOutcome::Revoked(row) => Err(ApiError::CertificateRevoked { serial: row.serial }),
            AuthOutcome::Expired(row) => {
                Err(ApiError::CertificateExpired { serial: row.serial, not_after: row.not_after })
            }
            AuthOutcome::Superseded(row) => Err(self.superseded(&row)),
            AuthOutcome::OtherUser(row) => Err(ApiError::CertificateBoundToOtherUser { serial: row.serial }),
            AuthOutcome::Unknown => Err(ApiError::ClientCertificateRequired(MissingCertificate::Vanished)),
        }
    }

    /// Revokes every current certificate of a user or device; returns how many. The caller
    /// has validated the target (`check_user`, `canonical_device`).
    pub async fn revoke(&self, target: RevokeTarget<'_>) -> Result<u64, ApiError> {
        let serials = self.store.revoke(target, self.clock.now()).await?;
        if !serials.is_empty() {
            self.revocations.fetch_add(1, Ordering::SeqCst);
        }
        tracing::info!(?target, count = serials.len(), "revoked certificates");
        Ok(serials.len() as u64)
    }

    /// A device and its certificates, by a UDID in any case.
    pub async fn device(&self, udid: &str) -> Result<DeviceRecord, ApiError> {
        let udid = canonical_device(udid)?;
        self.store.device(&udid).await?.ok_or(ApiError::NotFound)
    }

    /// The system log after `after`.
    pub async fn events(
        &self,
        after: i64,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Event>, ApiError> {
        Ok(self.store.events(after, since, limit).await?)
    }

    /// The configured relying parties.
    pub fn relying_parties(&self) -> &RelyingParties {
        &self.relying_parties
    }

    /// The device assertion's public keys.
    pub fn jwks(&self) -> Jwks {
        self.assertions.jwks()
    }

    /// Takes nothing from the client's request budget (a relying party calls at its users'
    /// rate), but refuses an address blocked for failed authentications.
    pub fn admit_relying_party(&self, client: Option<std::net::IpAddr>) -> Result<(), ApiError> {
        let Some(client) = client else { return Ok(()) };
        self.guard.not_blocked(client).map_err(|retry_after_secs| {
            self.metrics.address_rate_limited.inc();
            ApiError::RateLimited { retry_after_secs }
        })
    }

    /// The forward-auth check for relying party `party` (number `index`): is the browser's
    /// certificate `der` (as its proxy passed it on) one this CA issued, unexpired,
    /// unrevoked, not superseded past its grace period, of a device still managed as far
    /// as this CA knows? `user`, the relying party's signed-in user, binds an unbound
    /// certificate and refuses one bound to someone else. Answers the device and an
    /// assertion for this relying party: the one signed with a cached answer, or a new one.
    /// Checks write nothing but a binding.
    pub async fn check_relying_party(
        &self,
        index: usize,
        party: &RelyingParty,
        der: Option<&[u8]>,
        user: Option<&str>,
    ) -> Result<(TrustedDevice, String), ApiError> {
        let started = std::time::Instant::now();
        self.metrics.relying_party_checks.inc();
        let result = match self.judge_for_relying_party(index, der, user).await {
            Ok(Judged::Cached { device, assertion }) => Ok((device, assertion)),
            Ok(Judged::Fresh { device, generation, now }) => self
                .assertions
                .sign(
                    &AssertionClaims {
                        audience: party.name(),
                        udid: &device.udid,
                        device_serial: &device.device_serial,
                        certificate_serial: &device.certificate_serial,
                        user: device.user.as_deref(),
                        certificate_sha256: &device.certificate_sha256,
                    },
                    now,
                )
                .map(|assertion| {
                    // The assertion is cached with the answer: signing is a quarter of a
                    // cached check's cost, and a cached one keeps at least half its life
                    // (the cache lifetime is at most half the assertion's).
                    self.decisions.put(index, user, &device, &assertion, generation, now);
                    (device, assertion)
                })
                .map_err(ApiError::Token),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.metrics.relying_party_refusals.inc();
        }
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.metrics.relying_party_micros.inc_by(micros);
        result
    }

    async fn judge_for_relying_party(
        &self,
        index: usize,
        der: Option<&[u8]>,
        user: Option<&str>,
    ) -> Result<Judged, ApiError> {
        if let Some(user) = user {
            check_text("user", user, false)?;
        }
        let der = der.ok_or(ApiError::ClientCertificateRequired(MissingCertificate::None))?;
        // Not parsed beyond its serial: the certificate is this CA's exactly when its DER is
        // byte for byte one the store holds (the fingerprint), which also proves the
        // issuer's signature without checking it again.
        let presented = PresentedCertificate::from_der(der)
            .ok_or(ApiError::ClientCertificateRequired(MissingCertificate::Foreign))?;
        let sha256: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(der).into();
        let now = self.clock.now();
        // Read before the store: a revocation from here on makes this answer stale.
        let generation = self.revocations.load(Ordering::SeqCst);
        if let Some((device, assertion)) = self.decisions.get(index, sha256, user, generation, now) {
            self.metrics.relying_party_cache_hits.inc();
            return Ok(Judged::Cached { device, assertion });
        }
        let row = self
            .stored(&presented)
            .await?
            .ok_or(ApiError::ClientCertificateRequired(MissingCertificate::Foreign))?;
        let unbound = self.judge(&row, user, user, now)?;
        self.still_managed(&row)?;
        // Binding is the one write, and only when the relying party names the user.
        let row = match user {
            Some(user) if unbound && !self.is_read_only() => {
                self.authenticate(&row, Some(user), Some(user), None).await?
            }
            _ => row,
        };
        let device = TrustedDevice {
            udid: row.device_udid,
            device_serial: row.device_serial_number,
            certificate_serial: row.serial,
            user: row.bound_user,
            certificate_sha256: sha256,
        };
        Ok(Judged::Fresh { device, generation, now })
    }

    /// What a stored certificate is worth at `now`, without writing, to a caller that would
    /// bind it to `bind_user` at first use (`None`: its enrolling user) and requires it to
    /// belong to `required_user`: whether it is still unbound, or the contract's refusal.
    fn judge(
        &self,
        row: &CertificateRow,
        bind_user: Option<&str>,
        required_user: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, ApiError> {
        match row.standing(bind_user, required_user, self.superseded_cutoff(now), now) {
            Standing::Revoked => Err(ApiError::CertificateRevoked { serial: row.serial.clone() }),
            Standing::Expired => {
                Err(ApiError::CertificateExpired { serial: row.serial.clone(), not_after: row.not_after })
            }
            Standing::Superseded => Err(self.superseded(row)),
            Standing::OtherUser => Err(ApiError::CertificateBoundToOtherUser { serial: row.serial.clone() }),
            Standing::Trusted { unbound, .. } => Ok(unbound),
        }
    }

    /// Refuses a device the MDM said is no longer managed at this process's last lookup.
    fn still_managed(&self, row: &CertificateRow) -> Result<(), ApiError> {
        if self.management.is_unmanaged(&row.device_udid) {
            Err(ApiError::DeviceNotManaged(mdm::NotManagedReason::Unmanaged))
        } else {
            Ok(())
        }
    }

    /// The stored certificate a presented one is: the serial names it, the fingerprint proves
    /// it is that one.
    async fn stored(&self, presented: &PresentedCertificate) -> Result<Option<CertificateRow>, ApiError> {
        let row = self.store.certificate_by_serial(&presented.serial).await?;
        Ok(row.filter(|row| row.fingerprint == presented.fingerprint))
    }

    /// Answers a DER OCSP request (RFC 6960) with a DER response: signed statuses, or an
    /// unsigned refusal (malformed, unauthorized, internal error).
    pub async fn ocsp(&self, request: &[u8]) -> Vec<u8> {
        let parsed = match ocsp::parse(request, self.authority.issuer_hashes()) {
            Ok(parsed) => parsed,
            Err(refusal) => return refusal.response(),
        };
        let now = self.clock.now();
        let cutoff = self.superseded_cutoff(now);
        let mut statuses = Vec::with_capacity(parsed.serials.len());
        for serial in &parsed.serials {
            let status = match serial {
                None => ocsp::Status::Unknown,
                Some(serial) => match self.store.certificate_by_serial(serial).await {
                    Ok(None) => ocsp::Status::Unknown,
                    Ok(Some(row)) => match row.revocation(cutoff, self.superseded_grace) {
                        Some((at, reason)) => ocsp::Status::Revoked { at, reason },
                        None => ocsp::Status::Good,
                    },
                    Err(e) => {
                        tracing::error!(error = %ErrorChain(&e), "ocsp: cannot read a certificate");
                        return ocsp::Refusal::Internal.response();
                    }
                },
            };
            statuses.push(status);
        }
        match ocsp::answer(&parsed, &statuses, &self.authority, now, now + self.ocsp_validity) {
            Ok(der) => der,
            Err(e) => {
                tracing::error!(error = %ErrorChain(&e), "ocsp: cannot sign a response");
                ocsp::Refusal::Internal.response()
            }
        }
    }

    /// The DER CRL, regenerated after a revocation on this replica and at least every
    /// `CRL_CACHE_SECS` (so a revocation on another replica is in this one's CRL within
    /// that time).
    pub async fn crl(&self) -> Result<Arc<Vec<u8>>, ApiError> {
        let now = self.clock.now();
        let generation = self.revocations.load(Ordering::SeqCst);
        let mut cached = self.crl.lock().await;
        if let Some(crl) = cached.as_ref()
            && crl.generation == generation
            && (now - crl.generated_at).num_seconds() < CRL_CACHE_SECS
            && now >= crl.generated_at
        {
            return Ok(crl.der.clone());
        }
        let revoked = self.store.revoked_unexpired(now, self.superseded_cutoff(now)).await?;
        // CRL numbers must increase across every replica and restart: the store hands them
        // out, at least this replica's next one and the time in seconds (so that a restored
        // older backup cannot go back).
        let issuer = hex::encode(&self.authority.issuer_hashes().key_sha256);
        // A store that cannot write (a read-only standby, maintenance) must not take the CRL
        // down with it: then this replica counts on from its own last number and the clock,
        // as a single CA always did.
        let local =
            cached.as_ref().map_or(0, |c| c.number + 1).max(u64::try_from(now.timestamp()).unwrap_or(0));
        let number = match self.store.next_crl_number(&issuer, i64::try_from(local).unwrap_or(i64::MAX)).await
        {
            Ok(number) => u64::try_from(number).unwrap_or(local),
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "cannot take a CRL number from the store; counting locally");
                local
            }
        };
        let der = Arc::new(self.authority.crl(&revoked, now, now + self.crl_validity, number)?);
        *cached = Some(CachedCrl { der: der.clone(), number, generated_at: now, generation });
        Ok(der)
    }

    /// Records a refusal as a FAILURE event (when its context names an event type) and logs
    /// it. A failure to record is logged, never turned into a second error.
    pub async fn record_refusal(&self, context: &RefusalContext, error: &ApiError) {
        if error.is_auth_failure()
            && let Some(client) = context.client
        {
            self.guard.auth_failed(client);
        }
        if error.is_internal() {
            tracing::error!(error = %ErrorChain(error), udid = context.udid.as_deref().unwrap_or("-"), "request failed");
        } else {
            tracing::info!(
                code = error.code_str(),
                reason = %ErrorChain(error),
                udid = context.udid.as_deref().unwrap_or("-"),
                user = context.user.as_deref().unwrap_or("-"),
                "refused"
            );
        }
        if !context.authenticated {
            // Written nowhere: a request that proved nothing gets a log line and a count.
            self.metrics.unauthenticated_refusals.inc();
            return;
        }
        if matches!(error, ApiError::RateLimited { .. }) {
            // A spent budget is a flood, and recording each refusal would be the flood's row.
            self.metrics.rate_limited_refusals.inc();
            return;
        }
        let Some(event_type) = context.event_type else { return };
        let event = NewEvent {
            published: self.clock.now(),
            event_type,
            outcome: Outcome::Failure,
            user: context.user.clone(),
            udid: context.udid.clone(),
            serial: context.serial.clone(),
            reason: Some(error.code_str().to_owned()),
            client_id: context.client_id.clone(),
        };
        if let Err(e) = self.store.record(event).await {
            tracing::error!(error = %ErrorChain(&e), "cannot record a refusal event");
        }
    }
}

/// A trusted device found by the relying-party check: from the decision cache with the
/// assertion signed then, or just now from the store, as of revocation `generation`.
enum Judged {
    Cached { device: TrustedDevice, assertion: String },
    Fresh { device: TrustedDevice, generation: u64, now: DateTime<Utc> },
}

/// Displays an error with its sources, `a: b: c`.
#[derive(Debug)]
pub(crate) struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

fn validate_enroll(request: &EnrollRequest) -> Result<(), ApiError> {
    check_id("clientVersion", &request.client_version)?;
    check_id("device.udid", &request.device.udid)?;
    check_id("device.serialNumber", &request.device.serial_number)?;
    check_text("device.displayName", &request.device.display_name, true)?;
    check_text("device.osVersion", &request.device.os_version, true)?;
    check_text("user", &request.user, false)?;
    Ok(())
}

/// The one spelling of a UDID the CA stores, rate-limits and signs: uppercase, as Macs and
/// Jamf Pro write it.
pub(crate) fn canonical_udid(udid: &str) -> String {
    udid.to_ascii_uppercase()
}

/// A UDID from an admin path, checked like the enroll field and canonicalised, so that
/// lookup and revocation find a device whatever case the admin typed.
pub(crate) fn canonical_device(udid: &str) -> Result<String, ApiError> {
    check_id("udid", udid)?;
    Ok(canonical_udid(udid))
}

/// A user name from an admin path or a relying party, checked like the enroll field.
pub(crate) fn check_user(user: &str) -> Result<(), ApiError> {
    check_text("user", user, false)
}

/// A serial number as the CA writes them: lowercase hex, at most 40 digits.
fn check_serial(serial: &str) -> Result<(), ApiError> {
    if serial.is_empty()
        || serial.len() > 40
        || !serial.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(ApiError::InvalidRequest(
            "the serial number must be 1 to 40 lowercase hex digits".into(),
        ));
    }
    Ok(())
}

/// Identifiers end up in URIs (the SAN), logs and MDM queries: unreserved URI characters
/// only.
fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(ApiError::InvalidRequest(format!("`{field}` must be 1 to {MAX_ID_LEN} characters")));
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')) {
        return Err(ApiError::InvalidRequest(format!(
            "`{field}` may contain only letters, digits, '-', '.', '_' and '~'"
        )));
    }
    Ok(())
}

fn check_text(field: &str, value: &str, may_be_empty: bool) -> Result<(), ApiError> {
    if (!may_be_empty && value.trim().is_empty()) || value.chars().count() > MAX_TEXT_LEN {
        let min = if may_be_empty { 0 } else { 1 };
        return Err(ApiError::InvalidRequest(format!(
            "`{field}` must be {min} to {MAX_TEXT_LEN} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(format!("`{field}` must not contain control characters")));
    }
    if value.chars().any(is_deceptive) {
        return Err(ApiError::InvalidRequest(format!(
            "`{field}` must not contain bidirectional overrides, zero-width characters or line separators"
        )));
    }
    Ok(())
}

/// Characters that `char::is_control` lets through but that change how a name reads in a
/// log, an admin console or an event viewer: bidirectional embeddings, overrides and
/// isolates (a "Trojan Source" name), zero-width characters and the byte-order mark, and
/// the Unicode line and paragraph separators.
pub(crate) fn is_deceptive(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' // zero-width space, non-joiner, joiner; LRM, RLM
            | '\u{2028}'..='\u{202E}' // line and paragraph separators; LRE, RLE, PDF, LRO, RLO
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators; LRI, RLI, FSI, PDI
            | '\u{061C}' // Arabic letter mark
            | '\u{FEFF}' // zero-width no-break space (BOM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_checks() {
        let cases: [(&str, Result<(), ()>); 15] = [
            ("ok/uuid", check_id("x", "564D2C3F-0B5A-4F6B-9C1D-1A2B3C4D5E6F").map_err(drop)),
            ("fail/empty", check_id("x", "").map_err(drop)),
            ("fail/space", check_id("x", "a b").map_err(drop)),
            ("fail/slash", check_id("x", "a/b").map_err(drop)),
            ("ok/display-name", check_text("x", "Alice's MacBook Pro", true).map_err(drop)),
            ("ok/accents-and-cjk", check_text("x", "Zoë 的 MacBook", true).map_err(drop)),
            ("fail/newline", check_text("x", "alice\nroot", false).map_err(drop)),
            ("fail/rlo", check_text("x", "alice\u{202E}nimda", false).map_err(drop)),
            ("fail/rli", check_text("x", "alice\u{2067}x", false).map_err(drop)),
            ("fail/zero-width-space", check_text("x", "ali\u{200B}ce", false).map_err(drop)),
            ("fail/zero-width-joiner", check_text("x", "ali\u{200D}ce", false).map_err(drop)),
            ("fail/bom", check_text("x", "\u{FEFF}alice", false).map_err(drop)),
            ("fail/line-separator", check_text("x", "alice\u{2028}root", false).map_err(drop)),
            ("fail/paragraph-separator", check_text("x", "alice\u{2029}root", false).map_err(drop)),
            ("ok/serial", check_serial("5f3a0c00000000000000000000000001").map_err(drop)),
        ];
        for (name, got) in cases {
            assert_eq!(got.is_ok(), name.starts_with("ok/"), "{name}");
        }
    }
}
