//! The flows against the in-memory CA, with a simulated crash at every step.

use super::*;
use crate::lifecycle::checkpoints::SimulatedCrash;
use crate::platform::StoreSnapshot;
use crate::platform::file_store::FileIdentityStore;
use crate::testing::{CrashAt, FakeCa, NO_CRASH, TOKEN, early};

fn enrollee() -> Enrollee {
    Enrollee {
        device: DeviceInfo {
            udid: "UDID-1".into(),
            serial_number: "SER-1".into(),
            display_name: "Test device".into(),
            os_version: "1".into(),
        },
        user: "alice".into(),
    }
}

fn setup() -> (tempfile::TempDir, FileIdentityStore, FakeCa) {
    let temp = tempfile::tempdir().expect("tempdir");
    let store = FileIdentityStore::new(temp.path().join("dt"));
    (temp, store, FakeCa::new())
}

fn token() -> Secret {
    Secret::new(TOKEN.to_owned())
}

fn do_enroll(store: &FileIdentityStore, ca: &FakeCa, crash: &CrashAt) -> Result<Completed, LifecycleError> {
    enroll(store, ca, &token(), &enrollee(), &ca.metadata_value(), early(), crash)
}

fn do_renew(store: &FileIdentityStore, ca: &FakeCa, crash: &CrashAt) -> Result<Completed, LifecycleError> {
    renew(store, ca, &ca.metadata_value(), early(), crash)
}

fn current_serial(store: &FileIdentityStore) -> String {
    let current = store.current().expect("load").expect("an identity");
    CertificateInfo::from_pem(&current.certificate_pem).expect("parse").serial_number().to_owned()
}

/// Exactly one identity, valid for this device under the fake CA, and nothing pending.
fn assert_one_valid_identity(store: &FileIdentityStore, ca: &FakeCa, context: &str) {
    let snapshot = store.snapshot().expect("snapshot");
    assert_eq!(snapshot, StoreSnapshot { current: true, ..StoreSnapshot::default() }, "{context}");
    let current = store.current().expect("load").expect("identity");
    check_identity(&current, std::slice::from_ref(&ca.ca_pem), Some("UDID-1"), early()).expect(context);
}

#[test]
fn ok_enroll_then_renew() {
    let (_temp, store, ca) = setup();
    let enrolled = do_enroll(&store, &ca, &NO_CRASH).expect("enroll");
    assert!(enrolled.requested && enrolled.created);
    assert_one_valid_identity(&store, &ca, "after enroll");
    assert_eq!(ca.certs().len(), 1);

    let renewed = do_renew(&store, &ca, &NO_CRASH).expect("renew");
    assert_eq!(renewed.replaced.as_deref(), Some(enrolled.certificate.serial_number()));
    assert_ne!(renewed.certificate.serial_number(), enrolled.certificate.serial_number());
    assert_one_valid_identity(&store, &ca, "after renew");
    assert_eq!(current_serial(&store), renewed.certificate.serial_number());
    assert_eq!(ca.certs().len(), 2);
}

#[test]
fn enroll_crash_at_every_step_recovers_without_a_second_certificate() {
    for step in Step::ALL.into_iter().filter(|s| s.is_enrollment()) {
        let (_temp, store, ca) = setup();
        let err = do_enroll(&store, &ca, &CrashAt(Some(step))).expect_err("crash");
        assert!(matches!(err, LifecycleError::Crash(SimulatedCrash(s)) if s == step), "{step}: {err}");
        assert!(store.current().expect("load").is_none(), "{step}: no identity yet");

        // The next run: recovery first, then (if still needed) the retried enrollment.
        recover(&store, Some(std::slice::from_ref(&ca.ca_pem)), Some("UDID-1"), early()).expect("recover");
        if !store.snapshot().expect("snapshot").current {
            let retried = do_enroll(&store, &ca, &NO_CRASH).expect("retry");
            // After the request, the retry reuses the key and gets the same certificate back.
            assert_eq!(retried.created, step == Step::EnrollAfterPendingKey, "{step}");
        }
        assert_one_valid_identity(&store, &ca, step.name());
        assert_eq!(ca.certs().len(), 1, "{step}: exactly one certificate issued in all");
        assert_eq!(ca.unbound(), 1, "{step}");
    }
}

#[test]
fn renew_crash_at_every_step_recovers_with_one_identity() {
    for step in Step::ALL.into_iter().filter(|s| !s.is_enrollment()) {
        let (_temp, store, ca) = setup();
        let first = do_enroll(&store, &ca, &NO_CRASH).expect("enroll");
        let err = do_renew(&store, &ca, &CrashAt(Some(step))).expect_err("crash");
        assert!(matches!(err, LifecycleError::Crash(_)), "{step}: {err}");
        assert!(store.current().expect("load").is_some(), "{step}: an identity at every moment");

        recover(&store, Some(std::slice::from_ref(&ca.ca_pem)), Some("UDID-1"), early()).expect("recover");
        let snapshot = store.snapshot().expect("snapshot");
        if snapshot.pending_key {
            // What `run` decides for a pending renewal key: resume it.
            do_renew(&store, &ca, &NO_CRASH).expect("resume");
        }
        assert_one_valid_identity(&store, &ca, step.name());
        assert_ne!(current_serial(&store), first.certificate.serial_number(), "{step}: renewed");
        assert_eq!(ca.certs().len(), 2, "{step}: one renewal, one new certificate");
    }
}

#[test]
fn fail_ca_down_changes_no_identity() {
    let (_temp, store, ca) = setup();
    ca.knobs().down = true;
    let err = do_enroll(&store, &ca, &NO_CRASH).expect_err("down");
    assert!(matches!(err, LifecycleError::Ca { operation: Operation::Enroll, .. }), "{err}");
    assert_eq!(
        store.snapshot().expect("snapshot"),
        StoreSnapshot { pending_key: true, ..StoreSnapshot::default() }
    );

    ca.knobs().down = false;
    do_enroll(&store, &ca, &NO_CRASH).expect("enroll");
    let before = current_serial(&store);
    ca.knobs().down = true;
    let err = do_renew(&store, &ca, &NO_CRASH).expect_err("down");
    assert!(matches!(err, LifecycleError::Ca { operation: Operation::Renew, .. }), "{err}");
    assert_eq!(current_serial(&store), before, "the identity is untouched");
    assert_eq!(ca.certs().len(), 1);
}

#[test]
fn fail_bad_certificates_are_never_switched_to() {
    let cases: [(&str, fn(&FakeCa), fn(&Rejection) -> bool); 2] = [
        ("fail/wrong-key", |ca| ca.knobs().wrong_key = true, |r| matches!(r, Rejection::WrongKey)),
        (
            "fail/wrong-device",
            |ca| ca.knobs().wrong_device = true,
            |r| matches!(r, Rejection::WrongDevice { .. }),
        ),
    ];
    for (name, break_ca, expected) in cases {
        let (_temp, store, ca) = setup();
        do_enroll(&store, &ca, &NO_CRASH).expect("enroll");
        let before = current_serial(&store);
        break_ca(&ca);
        match do_renew(&store, &ca, &NO_CRASH) {
            Err(LifecycleError::Rejected(r)) => assert!(expected(&r), "{name}: {r}"),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(current_serial(&store), before, "{name}");
        let snapshot = store.snapshot().expect("snapshot");
        assert!(
            snapshot.current && snapshot.pending_key && !snapshot.pending_certificate,
            "{name}: {snapshot:?}"
        );
    }
}

#[test]
fn fail_untrusted_issuer_is_rejected() {
    let (_temp, store, ca) = setup();
    let other = FakeCa::new();
    let err = enroll(&store, &ca, &token(), &enrollee(), &other.metadata_value(), early(), &NO_CRASH)
        .expect_err("untrusted");
    assert!(matches!(err, LifecycleError::Rejected(Rejection::Untrusted(_))), "{err}");
    assert!(store.current().expect("load").is_none());
}

#[test]
fn fail_enroll_twice_and_renew_without_identity() {
    let (_temp, store, ca) = setup();
    assert!(matches!(do_renew(&store, &ca, &NO_CRASH), Err(LifecycleError::NotEnrolled)));
    do_enroll(&store, &ca, &NO_CRASH).expect("enroll");
    assert!(matches!(do_enroll(&store, &ca, &NO_CRASH), Err(LifecycleError::AlreadyEnrolled)));
    assert_eq!(ca.certs().len(), 1);
}

#[test]
fn recover_without_ca_certificates_leaves_the_pending_identity() {
    let (_temp, store, ca) = setup();
    let _ = do_enroll(&store, &ca, &CrashAt(Some(Step::EnrollAfterStoreCert)));
    let recovery = recover(&store, None, Some("UDID-1"), early()).expect("recover");
    assert!(recovery.actions.is_empty());
    assert!(store.snapshot().expect("snapshot").pending_certificate);
    // The next enrollment switches to it without a request.
    let requests = *ca.requests.lock().expect("requests");
    let done = do_enroll(&store, &ca, &NO_CRASH).expect("finish");
    assert!(!done.requested);
    assert_eq!(*ca.requests.lock().expect("requests"), requests);
    assert_one_valid_identity(&store, &ca, "finished");
}

#[test]
fn ok_unreadable_pending_key_is_replaced() {
    let (_temp, store, ca) = setup();
    do_enroll(&store, &ca, &NO_CRASH).expect("enroll");
    let _ = do_renew(&store, &ca, &CrashAt(Some(Step::RenewAfterPendingKey)));
    // Truncate the pending key file, as a disk error might.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.dir().join("identities.json")).expect("index"))
            .expect("json");
    let pending = index["pending"].as_str().expect("pending id");
    std::fs::write(store.dir().join("identities").join(pending).join("key.pem"), b"garbage")
        .expect("truncate");
    do_renew(&store, &ca, &NO_CRASH).expect("renewal with a new key");
    assert_one_valid_identity(&store, &ca, "replaced");
}
