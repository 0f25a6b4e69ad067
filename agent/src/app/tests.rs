//! The commands against the in-memory CA, a file store in a temporary directory, a fixed
//! clock and recording fakes for the browsers, the scheduler and the notifier.

use std::sync::{Arc, Mutex};

use chrono::TimeZone as _;

use super::*;
use crate::config::Config;
use crate::decision::MdmEnrollment;
use crate::lifecycle::checkpoints::Step;
use crate::platform::file_store::FileIdentityStore;
use crate::platform::{
    BrowserIntegration, BrowserStatus, DeviceFacts, FixedClock, Identity, IdentityStore, Notifier,
    ScheduleSpec, Scheduler, SchedulerStatus, Scope, StoreDescription, StoreSnapshot, WrittenEntries,
};
use crate::testing::{CrashAt, FakeCa, TOKEN, early, not_after};
use crate::trust::Trust;
use ca_client::signer::KeySigner;

type Log = Arc<Mutex<Vec<String>>>;

#[derive(Debug)]
struct FakeDevice {
    mdm: MdmEnrollment,
}

impl DeviceFacts for FakeDevice {
    fn udid(&self) -> Result<String, PlatformError> {
        Ok("UDID-FROM-PLATFORM".into())
    }
    fn serial_number(&self) -> Result<String, PlatformError> {
        Ok("SER-1".into())
    }
    fn display_name(&self) -> Result<String, PlatformError> {
        Ok("Test device".into())
    }
    fn os_version(&self) -> Result<String, PlatformError> {
        Ok("1.0".into())
    }
    fn current_user(&self) -> Result<String, PlatformError> {
        Ok("alice".into())
    }
    fn mdm_enrollment(&self) -> Result<MdmEnrollment, PlatformError> {
        Ok(self.mdm)
    }
}

/// The list name the fake browser records its entries under.
const FAKE_LIST: &str = "fakebrowser";

/// Records calls, and keeps one shared `AutoSelectCertificateForUrls` list (the user scope's)
/// the way the macOS backend keeps Chrome's: through [`crate::autoselect::sync`].
#[derive(Debug)]
struct FakeBrowsers {
    log: Log,
    applied: Mutex<bool>,
    list: Arc<Mutex<Vec<String>>>,
    /// While set, every apply and remove fails before changing anything.
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeBrowsers {
    fn failing(&self) -> Result<(), PlatformError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            Err(PlatformError::backend("could not configure the fake browser", "the fake browser refuses"))
        } else {
            Ok(())
        }
    }
}

impl BrowserIntegration for FakeBrowsers {
    fn apply(
        &self,
        scope: Scope,
        target: &BrowserTarget<'_>,
        identity: Option<&Identity>,
        written: &mut WrittenEntries,
    ) -> Result<Vec<String>, PlatformError> {
        self.log.lock().expect("log").push(format!(
            "apply {scope:?} {} {}",
            target.cert_auth_domain,
            identity.is_some()
        ));
        self.failing()?;
        *self.applied.lock().expect("applied") = true;
        if scope == Scope::User {
            let wanted = target.wanted().map_err(|e| PlatformError::backend("the browser target", e))?;
            let mut list = self.list.lock().expect("list");
            let before = written.get(FAKE_LIST).cloned().unwrap_or_default();
            let synced = crate::autoselect::sync(&list, &wanted.entries, &before);
            *list = synced.list;
            written.insert(FAKE_LIST.to_owned(), synced.written);
        }
        Ok(vec![format!("applied for {}", target.cert_auth_domain)])
    }
    fn status(&self, target: &BrowserTarget<'_>) -> Result<Vec<BrowserStatus>, PlatformError> {
        let present = *self.applied.lock().expect("applied");
        let list = self.list.lock().expect("list");
        let wanted = target.wanted().map_err(|e| PlatformError::backend("the browser target", e))?;
        let origins = wanted
            .entries
            .iter()
            .map(|e| crate::platform::OriginStatus {
                origin: e.pattern().to_owned(),
                entry: crate::autoselect::status(&list, e),
            })
            .collect();
        Ok(vec![BrowserStatus {
            browser: "fakebrowser".into(),
            present,
            managed: false,
            installed: None,
            detail: None,
            origins,
        }])
    }
    fn remove(
        &self,
        scope: Scope,
        target: Option<&BrowserTarget<'_>>,
        written: &WrittenEntries,
    ) -> Result<Vec<String>, PlatformError> {
        self.log.lock().expect("log").push(format!("remove {scope:?}"));
        self.failing()?;
        if scope == Scope::User {
            let always: Vec<OurEntry> = target
                .and_then(|t| OurEntry::new(t.cert_auth_domain, t.issuer_common_name).ok())
                .into_iter()
                .collect();
            let mut list = self.list.lock().expect("list");
            let ours = written.get(FAKE_LIST).cloned().unwrap_or_default();
            *list = crate::autoselect::remove_ours(&list, &always, &ours).0;
        }
        let mut applied = self.applied.lock().expect("applied");
        let was = std::mem::replace(&mut *applied, false);
        Ok(if was { vec!["browser setting".into()] } else { Vec::new() })
    }
}

#[derive(Debug)]
struct FakeScheduler {
    log: Log,
    /// Shared across agents, like the user's real timer.
    installed: Arc<Mutex<bool>>,
}

impl Scheduler for FakeScheduler {
    fn install(&self, spec: &ScheduleSpec<'_>) -> Result<Vec<String>, PlatformError> {
        self.log.lock().expect("log").push(format!("schedule {}", spec.config.is_some()));
        *self.installed.lock().expect("installed") = true;
        Ok(vec!["installed the timer".into()])
    }
    fn uninstall(&self) -> Result<crate::platform::Removal, PlatformError> {
        self.log.lock().expect("log").push("unschedule".into());
        let was = std::mem::replace(&mut *self.installed.lock().expect("installed"), false);
        Ok(crate::platform::Removal {
            removed: if was { vec!["timer".into()] } else { Vec::new() },
            notes: Vec::new(),
        })
    }
    fn status(&self) -> Result<SchedulerStatus, PlatformError> {
        let installed = *self.installed.lock().expect("installed");
        Ok(SchedulerStatus { installed, detail: format!("fake timer installed={installed}") })
    }
    fn refresh(&self, _slot: crate::decision::Slot) -> Result<Vec<String>, PlatformError> {
        self.log.lock().expect("log").push("refresh".into());
        Ok(Vec::new())
    }
}

#[derive(Debug)]
struct FakeNotifier {
    log: Log,
}

impl Notifier for FakeNotifier {
    fn browser_restart_needed(&self, browsers: &[String]) {
        self.log.lock().expect("log").push(format!("restart {}", browsers.join(",")));
    }
}

/// The file store, recording when it is unlocked, so that tests see the order of a run.
#[derive(Debug)]
struct RecordingStore {
    inner: FileIdentityStore,
    log: Log,
}

impl IdentityStore for RecordingStore {
    fn unlock(&self) -> Result<bool, PlatformError> {
        self.log.lock().expect("log").push("unlock".into());
        Ok(true)
    }
    fn pending_key(&self) -> Result<Option<Arc<dyn KeySigner>>, PlatformError> {
        self.inner.pending_key()
    }
    fn create_pending_key(&self) -> Result<Arc<dyn KeySigner>, PlatformError> {
        self.inner.create_pending_key()
    }
    fn store_pending_certificate(
        &self,
        certificate_pem: &str,
        chain_pem: &[String],
    ) -> Result<(), PlatformError> {
        self.inner.store_pending_certificate(certificate_pem, chain_pem)
    }
    fn pending_identity(&self) -> Result<Option<Identity>, PlatformError> {
        self.inner.pending_identity()
    }
    fn discard_pending_certificate(&self) -> Result<(), PlatformError> {
        self.inner.discard_pending_certificate()
    }
    fn promote(&self) -> Result<(), PlatformError> {
        self.inner.promote()
    }
    fn delete_previous(&self) -> Result<bool, PlatformError> {
        self.inner.delete_previous()
    }
    fn current(&self) -> Result<Option<Identity>, PlatformError> {
        self.inner.current()
    }
    fn snapshot(&self) -> Result<StoreSnapshot, PlatformError> {
        self.inner.snapshot()
    }
    fn remove_all(&self) -> Result<Vec<String>, PlatformError> {
        self.inner.remove_all()
    }
    fn describe(&self) -> StoreDescription {
        self.inner.describe()
    }
}

struct Harness {
    _temp: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    ca: Arc<FakeCa>,
    clock: Arc<FixedClock>,
    log: Log,
    /// The fake browser's shared list, across agents (like the user's preferences).
    list: Arc<Mutex<Vec<String>>>,
    /// Makes the fake browser fail, across agents.
    browsers_fail: Arc<std::sync::atomic::AtomicBool>,
    mdm: MdmEnrollment,
    crash: Option<Step>,
    /// Whether the fake timer is installed, across agents.
    scheduled: Arc<Mutex<bool>>,
}

impl Harness {
    fn new() -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let data_dir = temp.path().join("data");
        Self {
            _temp: temp,
            data_dir,
            ca: Arc::new(FakeCa::new()),
            clock: Arc::new(FixedClock::new(early())),
            log: Arc::default(),
            list: Arc::default(),
            browsers_fail: Arc::default(),
            mdm: MdmEnrollment::Unknown,
            crash: None,
            scheduled: Arc::default(),
        }
    }

    /// A fresh agent over the same files, CA and clock: like a new process.
    fn agent(&self) -> Agent {
        self.agent_with(true, Trust::User)
    }

    /// Like [`Harness::agent`], with or without a configured CA, reading files as `trust`.
    fn agent_with(&self, with_ca: bool, trust: Trust) -> Agent {
        let config = Loaded {
            config: Config {
                ca_url: with_ca.then(|| "https://127.0.0.1:9".into()),
                device_udid: Some("UDID-1".into()),
                ..Config::default()
            },
            path: None,
            explicit: false,
            trust,
        };
        let store = RecordingStore { inner: FileIdentityStore::new(&self.data_dir), log: self.log.clone() };
        let platform = Platform {
            data_dir: self.data_dir.clone(),
            store: Arc::new(store),
            device: Box::new(FakeDevice { mdm: self.mdm }),
            browsers: Box::new(FakeBrowsers {
                log: self.log.clone(),
                applied: Mutex::new(self.browsers_applied()),
                list: self.list.clone(),
                fail: self.browsers_fail.clone(),
            }),
            scheduler: Box::new(FakeScheduler { log: self.log.clone(), installed: self.scheduled.clone() }),
            notifier: Box::new(FakeNotifier { log: self.log.clone() }),
            clock: self.clock.clone(),
        };
        let ca: Option<Box<dyn CaApi>> = if with_ca { Some(Box::new(self.ca.clone())) } else { None };
        Agent::new(config, platform, ca, Box::new(CrashAt(self.crash)))
    }

    fn browsers_applied(&self) -> bool {
        let log = self.log.lock().expect("log");
        log.iter()
            .rev()
            .find(|l| l.starts_with("apply User") || l.starts_with("remove User"))
            .is_some_and(|l| l.starts_with("apply"))
    }

    fn requests(&self) -> u32 {
        *self.ca.requests.lock().expect("requests")
    }

    fn serial(&self) -> Option<String> {
        self.agent().current().expect("current").map(|c| c.info.serial_number().to_owned())
    }

    fn enroll_with(&self, out: &mut Vec<u8>) -> Result<(), AgentError> {
        self.agent().enroll(token(), out)
    }

    fn first_logged(&self) -> Option<String> {
        self.log.lock().expect("log").first().cloned()
    }

    fn logged(&self, prefix: &str) -> usize {
        self.log.lock().expect("log").iter().filter(|l| l.starts_with(prefix)).count()
    }
}

fn token() -> Option<Secret> {
    Some(Secret::new(TOKEN.into()))
}

fn output(f: impl FnOnce(&mut Vec<u8>) -> Result<(), AgentError>) -> (Result<(), AgentError>, String) {
    let mut out = Vec::new();
    let result = f(&mut out);
    (result, String::from_utf8(out).expect("utf-8"))
}

fn exit_of(result: &Result<(), AgentError>) -> Exit {
    result.as_ref().map_or_else(AgentError::exit, |()| Exit::Success)
}

fn enrolled() -> Harness {
    let h = Harness::new();
    let (result, out) = output(|o| h.agent().enroll(token(), o));
    result.expect("enroll");
    assert!(out.starts_with("enrolled: certificate "), "{out}");
    h
}

fn late() -> DateTime<Utc> {
    // Past any due time and its grace (the fake's certificates end on 2027-01-01: due from
    // Nov 24 to Dec 1 at a slot, the grace at most five days later), before expiry.
    Utc.with_ymd_and_hms(2026, 12, 20, 0, 0, 0).single().expect("date")
}

#[test]
fn ok_enroll_and_run_nothing_due() {
    let h = enrolled();
    assert_eq!(h.logged("apply User"), 1, "browsers configured after enrollment");
    let state = h.agent().state.load().expect("state");
    assert_eq!(state.backoff.failures, 0);
    assert!(h.agent().state.load_metadata().expect("metadata").is_some(), "metadata cached");

    let before = h.requests();
    let (result, out) = output(|o| h.agent().run(None, o));
    result.expect("run");
    assert_eq!(out, "", "a quiet run prints nothing");
    assert_eq!(h.requests(), before + 1, "run asks the CA about the certificate, nothing else");

    let (result, out) = output(|o| h.agent().enroll(token(), o));
    result.expect("enroll again");
    assert!(out.starts_with("already enrolled"), "{out}");
    assert_eq!(h.ca.certs().len(), 1);
}

#[test]
fn fail_not_enrolled_without_token_makes_no_request() {
    let h = Harness::new();
    for (name, result) in [
        ("fail/run", output(|o| h.agent().run(None, o)).0),
        ("fail/enroll", output(|o| h.agent().enroll(None, o)).0),
        ("fail/renew", output(|o| h.agent().renew(true, o)).0),
    ] {
        assert_eq!(exit_of(&result), Exit::NotEnrolled, "{name}");
    }
    assert_eq!(h.requests(), 0);
}

#[test]
fn ok_run_renews_when_due_and_tells_the_user() {
    let h = enrolled();
    let first = h.serial();
    h.clock.set(late());
    let (result, out) = output(|o| h.agent().run(None, o));
    result.expect("run");
    assert!(out.starts_with("renewed: certificate "), "{out}");
    assert_ne!(h.serial(), first);
    assert_eq!(h.logged("restart"), 1, "the user hears that browsers need a restart");
    assert_eq!(h.ca.certs().len(), 2);
    // Due again? No: the new certificate is fresh for the fake clock's purposes only if
    // its validity is; the fake issues fixed dates, so the next run renews again, which is
    // what `renew` without --force must not do before the due time:
    h.clock.set(early());
    let (result, out) = output(|o| h.agent().renew(false, o));
    result.expect("renew not due");
    assert!(out.starts_with("nothing to do: renewal is due at 2026-1"), "{out}");
}

#[test]
fn ok_run_renews_at_the_slot_and_not_before() {
    let h = enrolled();
    let first = h.serial();
    let agent = h.agent();
    let current = agent.current().expect("read").expect("an identity");
    let facts =
        decision::CertFacts { not_before: current.info.not_before(), not_after: current.info.not_after() };
    let slot = agent.device_slot(Some(&current));
    // The fake clock's local time is UTC.
    let due = decision::schedule::renewal_due(
        &facts,
        agent.config.renew_before().expect("window"),
        slot,
        chrono::FixedOffset::east_opt(0).expect("utc"),
    );
    // The day after the due day, a minute before the slot (the login run, say): it waits.
    h.clock.set(due + TimeDelta::days(1) - TimeDelta::minutes(1));
    let (result, out) = output(|o| h.agent().run(None, o));
    result.expect("run before the slot");
    assert_eq!(out, "", "nothing to do, nothing said");
    assert_eq!(h.serial(), first);
    assert_eq!(h.logged("refresh"), 1, "the run brings the schedule to the slot");
    // At the slot it renews.
    h.clock.set(due + TimeDelta::days(1));
    let (result, out) = output(|o| h.agent().run(None, o));
    result.expect("run at the slot");
    assert!(out.starts_with("renewed: certificate "), "{out}");
    assert_ne!(h.serial(), first);
}

#[test]
fn fail_ca_down_keeps_identity_and_backs_off() {
    let h = enrolled();
    let serial = h.serial();
    h.ca.knobs().down = true;

    let (result, _) = output(|o| h.agent().run(None, o));
    assert_eq!(exit_of(&result), Exit::CaUnavailable, "status check failed");
    assert_eq!(h.serial(), serial);

    h.clock.set(late());
    let (result, _) = output(|o| h.agent().run(None, o));
    assert_eq!(exit_of(&result), Exit::CaUnavailable, "renewal failed");
    assert_eq!(h.serial(), serial, "identity untouched");
    let state = h.agent().state.load().expect("state");
    assert_eq!(state.backoff.failures, 1);
    assert!(
        state.backoff.last_error.as_deref().is_some_and(|e| e.contains("could not connect")),
        "{state:?}"
    );

    // The next run waits without trying the renewal (only the status check goes out).
    let before = h.requests();
    let (result, _) = output(|o| h.agent().run(None, o));
    assert!(matches!(result, Err(AgentError::BackingOff { failures: 1, .. })), "{result:?}");
    assert_eq!(h.requests(), before + 1);

    // --force ignores the backoff; with the CA back it renews.
    h.ca.knobs().down = false;
    let (result, out) = output(|o| h.agent().renew(true, o));
    result.expect("forced renewal");
    assert!(out.starts_with("renewed"), "{out}");
    assert_eq!(h.agent().state.load().expect("state").backoff.failures, 0);
}

#[test]
fn fail_malformed_answer_changes_nothing() {
    let h = enrolled();
    let serial = h.serial();
    h.ca.knobs().wrong_key = true;
    let (result, _) = output(|o| h.agent().renew(true, o));
    assert_eq!(exit_of(&result), Exit::CaUnavailable, "{result:?}");
    assert_eq!(h.serial(), serial);
}

#[test]
fn ok_revocation_uninstalls_then_reenrollment_works() {
    let h = enrolled();
    let serial = h.serial().expect("serial");
    {
        let agent = h.agent();
        agent
            .platform
            .scheduler
            .install(&ScheduleSpec {
                program: std::path::Path::new("/bin/true"),
                config: None,
                slot: crate::decision::Slot::FIRST,
            })
            .expect("schedule");
    }
    h.ca.revoke_all();
    let (result, out) = output(|o| h.agent().run(None, o));
    assert_eq!(exit_of(&result), Exit::Revoked, "{result:?}");
    assert!(out.contains("removed browser setting"), "{out}");
    assert!(h.serial().is_none(), "the identity is gone");
    assert_eq!(h.logged("unschedule"), 1);

    let report = crate::app::status::gather(&h.agent());
    assert_eq!(report.state, crate::app::status::State::Revoked);
    let (_, text) = output(|o| crate::app::status::render(&report, crate::app::status::Format::Plain, o));
    assert!(text.contains(&format!("certificate {serial} revoked by the CA")), "says when: {text}");
    assert!(!text.contains("Last attempt:        never"), "{text}");

    let (result, _) = output(|o| h.agent().run(None, o));
    assert_eq!(exit_of(&result), Exit::NotEnrolled, "nothing left; a token is needed");
    let schedules = h.logged("schedule");
    let (result, out) = output(|o| h.agent().enroll(token(), o));
    result.expect("re-enroll");
    assert!(out.starts_with("enrolled"), "{out}");
    assert_ne!(h.serial().as_deref(), Some(serial.as_str()));
    assert_eq!(h.logged("schedule"), schedules + 1, "re-enrolling restores the timer the revocation removed");
    assert!(out.contains("installed the timer"), "and says so: {out}");
    let (result, _) = output(|o| h.agent().enroll(token(), o));
    result.expect("enroll again: nothing to do");
    assert_eq!(h.logged("schedule"), schedules + 1, "an installed timer is left as it is");
    assert_eq!(crate::app::status::gather(&h.agent()).state, crate::app::status::State::Enrolled);
}

#[test]
fn ok_revoked_answer_to_renewal_uninstalls() {
    let h = enrolled();
    h.ca.revoke_all();
    let (result, _) = output(|o| h.agent().renew(true, o));
    assert_eq!(exit_of(&result), Exit::Revoked, "{result:?}");
    assert!(h.serial().is_none());
}

#[test]
fn fail_expired_keeps_files() {
    let h = enrolled();
    h.clock.set(not_after() + TimeDelta::days(1));
    for (name, result) in [
        ("fail/run", output(|o| h.agent().run(token(), o)).0),
        ("fail/renew-force", output(|o| h.agent().renew(true, o)).0),
        ("fail/enroll", output(|o| h.agent().enroll(token(), o)).0),
    ] {
        assert_eq!(exit_of(&result), Exit::Expired, "{name}: {result:?}");
    }
    assert!(h.serial().is_some(), "kept for diagnosis");
    assert_eq!(crate::app::status::gather(&h.agent()).state, crate::app::status::State::Expired);
}

#[test]
fn fail_local_mdm_check_stops_before_any_request() {
    let mut h = Harness::new();
    h.mdm = MdmEnrollment::NotEnrolled;
    let (result, _) = output(|o| h.agent().enroll(token(), o));
    assert_eq!(exit_of(&result), Exit::NotManaged);
    assert_eq!(h.requests(), 0);
}

#[test]
fn ok_crash_during_renewal_is_finished_by_the_next_run_without_a_request() {
    let mut h = enrolled();
    h.crash = Some(Step::RenewAfterStoreNew);
    let (result, _) = output(|o| h.agent().renew(true, o));
    assert!(matches!(result, Err(AgentError::Lifecycle(LifecycleError::Crash(_)))), "{result:?}");
    h.crash = None;
    let before = h.requests();
    let serial = h.serial();
    let (result, _) = output(|o| h.agent().renew(false, o));
    result.expect("recovered");
    assert_ne!(h.serial(), serial, "switched to the stored identity");
    assert_eq!(h.requests(), before, "recovery needs no request");
    assert_eq!(h.ca.certs().len(), 2);
}

#[test]
fn ok_uninstall_twice() {
    let h = enrolled();
    let (result, out) = output(|o| h.agent().uninstall(false, o));
    result.expect("uninstall");
    assert!(out.contains("removed identities"), "{out}");
    assert!(out.contains("removed agent state"), "{out}");
    assert!(out.contains("removed browser setting"), "{out}");
    assert!(!h.data_dir.exists(), "the data directory is gone");
    let (result, out) = output(|o| h.agent().uninstall(false, o));
    result.expect("again");
    assert_eq!(out, "nothing to remove\n");
    assert!(!h.data_dir.exists());
}

#[test]
fn ok_install_schedules_and_applies() {
    let h = enrolled();
    let (result, out) = output(|o| h.agent().install(false, o));
    result.expect("install");
    assert!(out.contains("installed the timer"), "{out}");
    let (result, out) = output(|o| h.agent().install(true, o));
    result.expect("install --system");
    assert!(out.contains("applied for https://127.0.0.1:9"), "{out}");
    assert_eq!(h.logged("apply System"), 1);
}

/// The values of the attack on `install --system`: a cert-auth domain that would make every
/// user's browser present the certificate to every site (or that a browser would read so).
const UNSAFE_DOMAINS: [&str; 5] =
    ["*", "https://*", "https://evil.example/path", "https://*.example.com", "https://u@evil.example"];

#[test]
fn fail_install_system_refuses_an_unsafe_cert_auth_domain_before_writing() {
    for domain in UNSAFE_DOMAINS {
        let h = enrolled();
        h.ca.knobs().cert_auth_domain = Some(domain.to_owned());
        let (result, out) = output(|o| h.agent().install(true, o));
        assert_eq!(exit_of(&result), Exit::Usage, "{domain}: {result:?}");
        let err = result.expect_err(domain);
        assert!(matches!(err, AgentError::BrowserTarget { .. }), "{domain}: {err:?}");
        assert!(error_chain(&err).contains("is not a safe https origin"), "{domain}: {}", error_chain(&err));
        assert_eq!(h.logged("apply System"), 0, "{domain}: nothing written");
        assert_eq!(out, "", "{domain}");
    }
}

#[test]
fn fail_install_system_refuses_an_unsafe_cached_domain_before_writing() {
    let h = enrolled();
    let mut cached = h.agent().state.load_metadata().expect("load").expect("cached at enrollment");
    for domain in UNSAFE_DOMAINS {
        cached.metadata.cert_auth_domain = domain.to_owned();
        h.agent().state.save_metadata(&cached).expect("save");
        let (result, _) = output(|o| h.agent_with(false, Trust::User).install(true, o));
        assert_eq!(exit_of(&result), Exit::Usage, "{domain}: {result:?}");
        assert!(matches!(result, Err(AgentError::BrowserTarget { .. })), "{domain}");
        assert_eq!(h.logged("apply System"), 0, "{domain}: nothing written");
        // The user's own `install` refuses it too, before touching the scheduler.
        let schedules = h.logged("schedule");
        let (result, _) = output(|o| h.agent_with(false, Trust::User).install(false, o));
        assert_eq!(exit_of(&result), Exit::Usage, "{domain}: {result:?}");
        assert_eq!((h.logged("schedule"), h.logged("apply User")), (schedules, 1), "{domain}");
    }
}

/// As root, a cache root does not own is not used, and the error says how to do without it.
/// (Run as root, the test hands the file to `nobody`; run as a user, it is not root's anyway.)
#[test]
fn fail_install_system_as_root_refuses_a_cache_root_does_not_own() {
    let h = enrolled();
    let path = h.agent().state.metadata_path();
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    }
    let (result, _) = output(|o| h.agent_with(false, Trust::RootOnly).install(true, o));
    assert_eq!(exit_of(&result), Exit::Usage, "{result:?}");
    let err = result.expect_err("untrusted cache");
    assert!(matches!(err, AgentError::NoTrustedMetadata { .. }), "{err:?}");
    let text = error_chain(&err);
    assert!(text.contains("set ca_url") && text.contains("is not owned by root"), "{text}");
    assert_eq!(h.logged("apply System"), 0, "nothing written");
    // `uninstall --system` does without it.
    let (result, _) = output(|o| h.agent_with(false, Trust::RootOnly).uninstall(true, o));
    result.expect("uninstall --system ignores the cache");
}

#[test]
fn fail_metadata_naming_an_unsafe_domain_is_malformed_and_not_cached() {
    let h = Harness::new();
    h.ca.knobs().cert_auth_domain = Some("https://*".to_owned());
    let (result, _) = output(|o| h.agent().enroll(token(), o));
    assert_eq!(exit_of(&result), Exit::CaUnavailable, "{result:?}");
    assert_eq!(h.agent().state.load_metadata().expect("load"), None, "nothing cached");
    assert_eq!(h.serial(), None, "nothing enrolled");
    assert_eq!(h.logged("apply"), 0);
}

#[test]
fn status_json_has_the_contract_shape() {
    let h = enrolled();
    let report = crate::app::status::gather(&h.agent());
    let (result, text) = output(|o| crate::app::status::render(&report, crate::app::status::Format::Json, o));
    result.expect("render");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&json),
        ["browsers", "ca", "certificate", "origins", "renewal", "skippedOrigins", "state", "store"]
    );
    assert_eq!(
        json["origins"],
        serde_json::json!([{"origin": "https://127.0.0.1:9", "inPlace": true, "browsers": {"fakebrowser": "present"}}])
    );
    assert_eq!(json["skippedOrigins"], serde_json::json!([]));
    assert_eq!(json["state"], "enrolled");
    assert_eq!(
        keys(&json["certificate"]),
        ["daysRemaining", "issuer", "notAfter", "notBefore", "serialNumber", "subject"]
    );
    assert_eq!(keys(&json["renewal"]), ["dailyRun", "dueAt", "lastAttempt", "lastError", "nextAttempt"]);
    assert_eq!(keys(&json["ca"]), ["url"]);
    assert_eq!(json["certificate"]["issuer"], crate::testing::ISSUER_CN);
    assert_eq!(json["certificate"]["daysRemaining"], 306);
    assert_eq!(json["certificate"]["notAfter"], "2027-01-01T00:00:00Z");
    assert_eq!(json["browsers"]["fakebrowser"]["present"], true);
    assert_eq!(json["store"]["kind"], "files");
    assert_eq!(json["store"]["identity"], true);

    let (_, ea) = output(|o| crate::app::status::render(&report, crate::app::status::Format::JamfEa, o));
    assert_eq!(ea, "<result>enrolled, expires 2027-01-01, origins 1/1</result>\n");
    let (_, plain) = output(|o| crate::app::status::render(&report, crate::app::status::Format::Plain, o));
    let column = plain.find("enrolled").expect("state value");
    assert!(plain.starts_with("State:"), "{plain}");
    assert!(
        plain
            .lines()
            .all(|l| l.len() > column && l[..column].ends_with(' ') && !l[column..].starts_with(' ')),
        "aligned:\n{plain}"
    );
}

#[test]
fn status_table() {
    let h = Harness::new();
    let cases: Vec<(&str, Box<dyn Fn(&Harness)>, &str, &str)> = vec![
        ("ok/not-enrolled", Box::new(|_| {}), "not_enrolled", "<result>not_enrolled</result>\n"),
        (
            "ok/enrolled",
            Box::new(|h| output(|o| h.agent().enroll(token(), o)).0.expect("enroll")),
            "enrolled",
            "<result>enrolled, expires 2027-01-01, origins 1/1</result>\n",
        ),
        (
            "ok/renewal-due",
            Box::new(|h| h.clock.set(late())),
            "renewal_due",
            "<result>renewal_due, expires 2027-01-01, origins 1/1</result>\n",
        ),
        (
            "ok/expired",
            Box::new(|h| h.clock.set(not_after())),
            "expired",
            "<result>expired, expires 2027-01-01, origins 1/1</result>\n",
        ),
        (
            "fail/corrupt-state",
            Box::new(|h| std::fs::write(h.data_dir.join("state.json"), "{").expect("corrupt")),
            "error",
            "<result>error</result>\n",
        ),
    ];
    for (name, step, state, ea) in cases {
        step(&h);
        let report = crate::app::status::gather(&h.agent());
        assert_eq!(report.state.as_str(), state, "{name}");
        let (_, text) =
            output(|o| crate::app::status::render(&report, crate::app::status::Format::JamfEa, o));
        assert_eq!(text, ea, "{name}");
    }
}

const APPS: &str = "https://[*.]apps.example.com";
const WIKI: &str = "https://wiki.example.com:8443";

fn fake_entry(pattern: &str) -> String {
    OurEntry::new(pattern, crate::testing::ISSUER_CN).expect("entry").to_json()
}

/// The protected origins from the CA's metadata reach the browser's shared list, one entry
/// each; an invalid one is skipped and shown; a dropped one goes at the next run that
/// refreshes the metadata; foreign entries (and an identical entry the agent did not add)
/// stay through all of it, uninstall included.
#[test]
fn ok_protected_origins_follow_the_metadata() {
    let h = Harness::new();
    let foreign = vec![
        r#"{"pattern":"https://intranet.example.com","filter":{"ISSUER":{"CN":"Corp CA"}}}"#.to_owned(),
        "junk".to_owned(),
    ];
    let wiki_by_admin = fake_entry(WIKI);
    let mut seeded = foreign.clone();
    seeded.push(wiki_by_admin.clone());
    *h.list.lock().expect("list") = seeded.clone();
    h.ca.knobs().protected_origins =
        vec![APPS.into(), "http://bad.example.com".into(), WIKI.into(), APPS.into()];

    let (result, _) = output(|o| h.enroll_with(o));
    result.expect("enroll");
    let mut want = seeded.clone();
    want.extend([fake_entry("https://127.0.0.1:9"), fake_entry(APPS)]);
    assert_eq!(
        *h.list.lock().expect("list"),
        want,
        "one entry per origin, the admin's wiki entry not repeated"
    );

    let report = crate::app::status::gather(&h.agent());
    let origins: Vec<(&str, bool)> = report.origins.iter().map(|o| (o.origin.as_str(), o.in_place)).collect();
    assert_eq!(origins, [("https://127.0.0.1:9", true), (APPS, true), (WIKI, true)]);
    assert_eq!(report.skipped_origins.len(), 1);
    assert_eq!(report.skipped_origins[0].value, "http://bad.example.com");
    let (_, plain) = output(|o| crate::app::status::render(&report, crate::app::status::Format::Plain, o));
    assert!(plain.contains("https://[*.]apps.example.com (fakebrowser in place)"), "{plain}");
    assert!(plain.contains("\"http://bad.example.com\": the scheme must be https"), "{plain}");
    let (_, ea) = output(|o| crate::app::status::render(&report, crate::app::status::Format::JamfEa, o));
    assert_eq!(ea, "<result>enrolled, expires 2027-01-01, origins 3/3</result>\n");

    // The CA drops both origins. A run within the refresh interval does not ask for metadata.
    h.ca.knobs().protected_origins = Vec::new();
    let before = h.requests();
    output(|o| h.agent().run(None, o)).0.expect("run");
    assert_eq!(h.requests(), before + 1, "only the status check");
    assert_eq!(h.list.lock().expect("list").len(), want.len(), "nothing changed yet");

    h.clock.set(early() + METADATA_REFRESH);
    output(|o| h.agent().run(None, o)).0.expect("run");
    let mut want = seeded.clone();
    want.push(fake_entry("https://127.0.0.1:9"));
    assert_eq!(*h.list.lock().expect("list"), want, "ours for the apps went; the admin's wiki entry stayed");
    let state = h.agent().state.load().expect("state");
    assert_eq!(state.autoselect_written[FAKE_LIST], [fake_entry("https://127.0.0.1:9")]);
    let report = crate::app::status::gather(&h.agent());
    assert_eq!(report.origins.len(), 1);
    assert!(report.skipped_origins.is_empty());

    output(|o| h.agent().uninstall(false, o)).0.expect("uninstall");
    assert_eq!(*h.list.lock().expect("list"), seeded, "foreign entries survive uninstall");
}

/// What a failed apply after a metadata refresh left undone, the next run does; an uninstall
/// that fails keeps the record of what the agent wrote, so that running it again finishes.
#[test]
fn ok_a_failed_apply_or_uninstall_is_finished_later() {
    use std::sync::atomic::Ordering;
    let h = Harness::new();
    h.ca.knobs().protected_origins = vec![APPS.into()];
    output(|o| h.enroll_with(o)).0.expect("enroll");
    let ours = [fake_entry("https://127.0.0.1:9"), fake_entry(APPS)];
    assert_eq!(*h.list.lock().expect("list"), ours);

    h.ca.knobs().protected_origins = Vec::new();
    h.clock.set(early() + METADATA_REFRESH);
    h.browsers_fail.store(true, Ordering::SeqCst);
    let _ = output(|o| h.agent().run(None, o));
    assert_eq!(*h.list.lock().expect("list"), ours, "the failed apply changed nothing");
    h.browsers_fail.store(false, Ordering::SeqCst);
    let before = h.requests();
    output(|o| h.agent().run(None, o)).0.expect("run");
    assert_eq!(*h.list.lock().expect("list"), [fake_entry("https://127.0.0.1:9")], "the next run applied it");
    assert_eq!(h.requests(), before + 1, "from the cached metadata: only the status check");

    h.ca.knobs().protected_origins = vec![APPS.into()];
    h.clock.set(early() + METADATA_REFRESH * 2);
    output(|o| h.agent().run(None, o)).0.expect("run");
    assert_eq!(*h.list.lock().expect("list"), ours);
    h.browsers_fail.store(true, Ordering::SeqCst);
    assert!(
        matches!(output(|o| h.agent().uninstall(false, o)).0, Err(AgentError::Incomplete(_))),
        "the uninstall is incomplete"
    );
    assert!(h.agent().state.load().is_ok_and(|s| !s.autoselect_written.is_empty()), "the record stays");
    h.browsers_fail.store(false, Ordering::SeqCst);
    output(|o| h.agent().uninstall(false, o)).0.expect("uninstall again");
    assert!(h.list.lock().expect("list").is_empty(), "every entry the agent wrote is gone");
}

/// Offline, the cached origins stay in use: a CA that cannot answer changes nothing.
#[test]
fn ok_offline_run_keeps_the_cached_origins() {
    let h = Harness::new();
    h.ca.knobs().protected_origins = vec![APPS.into()];
    output(|o| h.enroll_with(o)).0.expect("enroll");
    let list = h.list.lock().expect("list").clone();
    assert_eq!(list.len(), 2);
    h.ca.knobs().protected_origins = Vec::new();
    h.ca.knobs().down = true;
    h.clock.set(early() + METADATA_REFRESH * 2);
    let _ = output(|o| h.agent().run(None, o));
    assert_eq!(*h.list.lock().expect("list"), list);
    let cached = h.agent().state.load_metadata().expect("load").expect("cached");
    assert_eq!(cached.metadata.protected_origins, [APPS]);
    assert_eq!(crate::app::status::gather(&h.agent()).origins.len(), 2);
}

#[test]
fn exit_codes_for_ca_errors() {
    let refused = |code: ErrorCode| ClientError::Ca {
        status: code.http_status(),
        message: String::new(),
        code,
        retry_after: None,
    };
    let table = [
        ("fail/not-managed", refused(ErrorCode::DeviceNotManaged), Exit::NotManaged),
        ("fail/limit", refused(ErrorCode::EnrollmentLimitReached), Exit::LimitReached),
        ("fail/revoked", refused(ErrorCode::CertificateRevoked), Exit::Revoked),
        ("fail/expired", refused(ErrorCode::CertificateExpired), Exit::Expired),
        ("fail/unknown-cert", refused(ErrorCode::ClientCertificateRequired), Exit::Expired),
        ("fail/token", refused(ErrorCode::InvalidToken), Exit::Usage),
        ("fail/mdm-down", refused(ErrorCode::MdmUnavailable), Exit::CaUnavailable),
        ("fail/rate", refused(ErrorCode::RateLimited), Exit::CaUnavailable),
        ("fail/csr", refused(ErrorCode::InvalidCsr), Exit::Failure),
        ("fail/down", ClientError::Connect { url: "u".into(), reason: "r".into() }, Exit::CaUnavailable),
        ("fail/garbage", ClientError::Malformed { status: 200, reason: "r".into() }, Exit::CaUnavailable),
        ("fail/tls-handshake", ClientError::Tls { url: "u".into(), reason: "r".into() }, Exit::CaUnavailable),
        (
            "fail/untrusted-server-is-configuration",
            ClientError::UntrustedServer { url: "u".into(), reason: "set ca_bundle".into() },
            Exit::Usage,
        ),
    ];
    for (name, error, exit) in table {
        assert_eq!(exit_for_client_error(&error), exit, "{name}");
    }
}

/// The store is unlocked before anything else a run does, so that a run failing on its own
/// files (here a corrupt state file) still leaves the keychain unlocked for the browsers.
#[test]
fn ok_every_run_unlocks_the_store_first() {
    let h = Harness::new();
    let (result, _) = output(|o| h.enroll_with(o));
    result.expect("enroll");
    assert_eq!(h.first_logged().as_deref(), Some("unlock"), "enroll unlocks first");

    std::fs::write(h.data_dir.join("state.json"), "{").expect("corrupt");
    let before = h.logged("unlock");
    let (result, _) = output(|o| h.agent().run(None, o));
    assert!(result.is_err(), "a corrupt state file fails the run");
    assert_eq!(h.logged("unlock"), before + 1, "the failed run unlocked the store first");
    let (result, _) = output(|o| h.agent().renew(true, o));
    assert!(result.is_err());
    assert_eq!(h.logged("unlock"), before + 2, "so did renew");
}

/// The hint of a waiting run names a command that does what it says in that state, and that
/// command goes ahead: `enroll` before there is an identity, `renew --force` after.
#[test]
fn ok_the_backoff_hint_names_a_command_that_tries_now() {
    let h = Harness::new();
    h.ca.knobs().down = true;
    let (result, _) = output(|o| h.agent().run(token(), o));
    assert_eq!(exit_of(&result), Exit::CaUnavailable, "the first enrollment attempt fails");
    let (result, _) = output(|o| h.agent().run(token(), o));
    let Err(waiting @ AgentError::BackingOff { .. }) = result else { panic!("not waiting: {result:?}") };
    let hint = waiting.to_string();
    assert!(hint.contains("`devicetrust-agent enroll`"), "names enroll: {hint}");
    assert!(!hint.contains("renew --force"), "renew cannot help before enrollment: {hint}");

    h.ca.knobs().down = false;
    let (result, out) = output(|o| h.agent().enroll(token(), o));
    result.expect("the hinted command enrolls at once");
    assert!(out.contains("enrolled"), "{out}");

    h.clock.set(late());
    h.ca.knobs().down = true;
    let (result, _) = output(|o| h.agent().run(None, o));
    assert_eq!(exit_of(&result), Exit::CaUnavailable);
    let (result, _) = output(|o| h.agent().run(None, o));
    let Err(waiting @ AgentError::BackingOff { .. }) = result else { panic!("not waiting: {result:?}") };
    assert!(waiting.to_string().contains("`devicetrust-agent renew --force`"), "{waiting}");
    h.ca.knobs().down = false;
    let (result, _) = output(|o| h.agent().renew(true, o));
    result.expect("the hinted command renews at once");
}

/// A wrong token is the admin's to fix: exit 2, recorded for `status`, and no backoff, so the
/// run after the fix enrolls at once.
#[test]
fn fail_a_wrong_token_starts_no_backoff() {
    let h = Harness::new();
    let (result, _) = output(|o| h.agent().run(Some(Secret::new("not-the-token".into())), o));
    assert_eq!(exit_of(&result), Exit::Usage, "{result:?}");
    let state = h.agent().state.load().expect("state");
    assert_eq!(state.backoff.failures, 1, "recorded");
    assert!(state.backoff.last_error.as_deref().is_some_and(|e| e.contains("invalid_token")), "{state:?}");
    assert_eq!(state.backoff.next_attempt, None, "no wait");
    let (result, _) = output(|o| h.agent().run(token(), o));
    result.expect("the next run, with the right token, enrolls at once");
}

/// A writer whose reader is gone, or that fails otherwise.
struct FailingOutput(std::io::ErrorKind);

impl std::io::Write for FailingOutput {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(self.0.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Err(self.0.into())
    }
}

/// `status | true`: a closed pipe ends the output quietly with 0; any other write failure is
/// still an error.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    use clap::Parser as _;
    let cli = Cli::try_parse_from(["devicetrust-agent", "version"]).expect("cli");
    let exit = run(&cli, &mut std::io::empty(), &mut FailingOutput(std::io::ErrorKind::BrokenPipe));
    assert_eq!(exit, std::process::ExitCode::SUCCESS, "ok/broken-pipe");
    let exit = run(&cli, &mut std::io::empty(), &mut FailingOutput(std::io::ErrorKind::StorageFull));
    assert_eq!(exit, Exit::Failure.into(), "fail/disk-full");
}

/// The plain `status` guides: the device as the CA's admin looks it up, a next attempt only
/// when one is planned, for a setting that is not in place the command that puts it back,
/// and nothing to fix for a browser that is not installed.
#[test]
fn status_plain_output_guides() {
    let plain = |h: &Harness| {
        let report = crate::app::status::gather(&h.agent());
        output(|o| crate::app::status::render(&report, crate::app::status::Format::Plain, o)).1
    };
    let h = Harness::new();
    let text = plain(&h);
    assert!(text.contains("UDID UDID-1, serial SER-1"), "ok/device: {text}");
    assert!(!text.contains("Next attempt"), "ok/nothing-planned: {text}");

    let (result, _) = output(|o| h.enroll_with(o));
    result.expect("enroll");
    // As if someone took the setting out: the fake browser reads its state from the log.
    h.log.lock().expect("log").push("remove User (by hand)".into());
    let text = plain(&h);
    assert!(text.contains("not in place"), "fail/missing-entry: {text}");
    assert!(text.contains("`devicetrust-agent install` puts it in place"), "the fix is named: {text}");
    // A managed (system-wide) setting is not `install`'s to fix.
    assert!(crate::app::status::browser_fix(true).contains("--system") || cfg!(target_os = "macos"));
    assert!(!crate::app::status::browser_fix(true).contains("`devicetrust-agent install` puts"));

    // A browser that is not installed has nothing to fix.
    let mut report = crate::app::status::gather(&h.agent());
    report.browsers.insert(
        "chrome".into(),
        crate::app::status::BrowserReport {
            present: false,
            managed: false,
            installed: Some(false),
            detail: None,
        },
    );
    let text = output(|o| crate::app::status::render(&report, crate::app::status::Format::Plain, o)).1;
    let line = text.lines().find(|l| l.starts_with("Browser chrome:")).expect("a chrome line");
    assert!(line.ends_with(" not installed"), "ok/not-installed: {line}");

    h.ca.knobs().down = true;
    h.clock.set(late());
    let (result, _) = output(|o| h.agent().run(None, o));
    assert!(result.is_err());
    assert!(plain(&h).contains("Next attempt"), "ok/backoff-planned");
}
