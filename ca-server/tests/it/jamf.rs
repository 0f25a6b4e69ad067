//! The MDM check against the Jamf Pro simulator: verdicts, the token life cycle, failing
//! closed, the positive-answer cache, the static list and the `[mdm]` settings.

use std::{path::Path, sync::Arc, time::Duration};

use crate::jamf_sim::{
    self, Behavior, DUPLICATE_CURRENT_UDID, DUPLICATE_OLD_UDID, DUPLICATE_SERIAL, JamfSim, MANAGED_SERIAL,
    MANAGED_UDID, MISMATCH_DEVICE_UDID, MISMATCH_RECORD_UDID, MISMATCH_SERIAL, ManualMonotonicClock,
    RecordedLookup, UNMANAGED_SERIAL, UNMANAGED_UDID,
};
use ca_server::mdm::{
    ClientSecret, JamfClient, JamfConfig, JamfSettings, ManagedDeviceCheck, MdmError, MdmSettings,
    MdmSetupError, MdmVerdict, NotManagedReason, PositiveCache, StaticList, StaticListError,
    settings::from_settings_with_env,
};

use MdmVerdict::{Managed, NotManaged};
use NotManagedReason::{UdidMismatch, UnknownDevice, Unmanaged};

fn config(sim: &JamfSim) -> JamfConfig {
    let mut config =
        JamfConfig::new(sim.url(), jamf_sim::CLIENT_ID, ClientSecret::new(jamf_sim::CLIENT_SECRET));
    config.timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(2);
    config
}

fn client(sim: &JamfSim) -> JamfClient {
    JamfClient::new(config(sim)).expect("jamf client")
}

async fn start() -> JamfSim {
    JamfSim::start().await.expect("start the jamf simulator")
}

#[tokio::test]
async fn verdicts_follow_the_inventory_record() {
    let sim = start().await;
    let jamf = client(&sim);
    let cases = [
        ("ok/managed", MANAGED_SERIAL, MANAGED_UDID, Managed),
        ("ok/managed-lowercase-udid", MANAGED_SERIAL, &MANAGED_UDID.to_ascii_lowercase(), Managed),
        ("ok/duplicate-current-record", DUPLICATE_SERIAL, DUPLICATE_CURRENT_UDID, Managed),
        ("fail/duplicate-stale-record", DUPLICATE_SERIAL, DUPLICATE_OLD_UDID, NotManaged(Unmanaged)),
        ("fail/unmanaged", UNMANAGED_SERIAL, UNMANAGED_UDID, NotManaged(Unmanaged)),
        ("fail/unknown-serial", "C02NOTINJAMF", MANAGED_UDID, NotManaged(UnknownDevice)),
        ("fail/udid-mismatch", MISMATCH_SERIAL, MISMATCH_DEVICE_UDID, NotManaged(UdidMismatch)),
        // The same record, asked with the UDID it carries, is the managed Mac it describes.
        ("ok/udid-of-the-record", MISMATCH_SERIAL, MISMATCH_RECORD_UDID, Managed),
        ("fail/managed-serial-other-udid", MANAGED_SERIAL, UNMANAGED_UDID, NotManaged(UdidMismatch)),
    ];
    for (i, (name, serial, udid, want)) in cases.iter().enumerate() {
        assert_eq!(jamf.check(serial, udid).await, Ok(*want), "{name}");
        assert_eq!(sim.inventory_requests(), i + 1, "{name}: jamf was asked");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn lookup_sends_the_documented_request() {
    let sim = start().await;
    assert_eq!(client(&sim).check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    assert_eq!(
        sim.lookups(),
        vec![RecordedLookup {
            api_version: "v3".to_owned(),
            filter: Some(format!("hardware.serialNumber==\"{MANAGED_SERIAL}\"")),
            sections: vec!["GENERAL".to_owned(), "HARDWARE".to_owned()],
        }]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn configured_api_version_is_in_the_path() {
    let sim = start().await;
    for version in ["v4", "v1"] {
        let mut config = config(&sim);
        config.api_version = version.to_owned();
        let jamf = JamfClient::new(config).expect("jamf client");
        assert_eq!(jamf.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed), "{version}");
        let last = sim.lookups().pop().expect("a lookup");
        assert_eq!(last.api_version, version);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_api_version_is_refused_at_setup() {
    let sim = start().await;
    for version in ["", "3", "v3/../../x", "v3?x=1"] {
        let mut config = config(&sim);
        config.api_version = version.to_owned();
        assert!(
            matches!(
                JamfClient::new(config),
                Err(MdmSetupError::InvalidSetting { setting: "api_version", .. })
            ),
            "{version:?}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn token_is_reused_across_lookups() {
    let sim = start().await;
    let jamf = client(&sim);
    for _ in 0..5 {
        assert_eq!(jamf.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    }
    assert_eq!(sim.token_requests(), 1);
    assert_eq!(sim.inventory_requests(), 5);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_token_request() {
    let sim = start().await;
    let jamf = Arc::new(client(&sim));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let jamf = Arc::clone(&jamf);
        tasks.spawn(async move { jamf.check(MANAGED_SERIAL, MANAGED_UDID).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.expect("task"), Ok(Managed));
    }
    assert_eq!(sim.token_requests(), 1);
    assert_eq!(sim.inventory_requests(), 16);
    sim.shutdown().await;
}

#[tokio::test]
async fn rejected_token_is_replaced_transparently() {
    let sim = start().await;
    let jamf = client(&sim);
    assert_eq!(jamf.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    sim.revoke_tokens();
    assert_eq!(jamf.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    assert_eq!(sim.token_requests(), 2, "a second token after the 401");
    assert_eq!(sim.inventory_requests(), 3, "the rejected lookup and its retry");
    // The new token is kept.
    assert_eq!(jamf.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    assert_eq!(sim.token_requests(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn token_is_refreshed_shortly_before_it_expires() {
    let sim = start().await; // expires_in 1199, from token.json
    let clock = ManualMonotonicClock::new();
    let jamf = JamfClient::with_clock(config(&sim), clock.clone()).expect("jamf client");
    assert_eq!(jamf.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    clock.advance(Duration::from_secs(1138));
    assert_eq!(jamf.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    assert_eq!(sim.token_requests(), 1, "61 s before expiry the token is still used");
    clock.advance(Duration::from_secs(2));
    assert_eq!(jamf.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    assert_eq!(sim.token_requests(), 2, "59 s before expiry a new token is fetched");
    assert_eq!(sim.inventory_requests(), 3, "no lookup was refused on the way");
    sim.shutdown().await;
}

#[tokio::test]
async fn short_lived_token_is_reused_for_half_its_life() {
    let sim = start().await;
    sim.set_token_lifetime(60);
    let clock = ManualMonotonicClock::new();
    let jamf = JamfClient::with_clock(config(&sim), clock.clone()).expect("jamf client");
    assert_eq!(jamf.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    clock.advance(Duration::from_secs(29));
    assert_eq!(jamf.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    assert_eq!(sim.token_requests(), 1);
    clock.advance(Duration::from_secs(2));
    assert_eq!(jamf.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    assert_eq!(sim.token_requests(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn token_rejected_twice_is_unauthorized_without_looping() {
    let sim = start().await;
    sim.set_inventory_behavior(Behavior::Unauthorized);
    let result = client(&sim).check(MANAGED_SERIAL, MANAGED_UDID).await;
    assert!(matches!(result, Err(MdmError::Unauthorized(_))), "{result:?}");
    assert_eq!(sim.token_requests(), 2);
    assert_eq!(sim.inventory_requests(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_client_secret_is_unauthorized() {
    let sim = start().await;
    let mut config = config(&sim);
    config.client_secret = ClientSecret::new("wrong-secret-a8f3");
    let result = JamfClient::new(config).expect("jamf client").check(MANAGED_SERIAL, MANAGED_UDID).await;
    let Err(MdmError::Unauthorized(message)) = result else {
        panic!("expected unauthorized, got {result:?}")
    };
    assert!(!message.contains("wrong-secret-a8f3"), "{message}");
    assert_eq!(sim.token_requests(), 1);
    assert_eq!(sim.inventory_requests(), 0, "no lookup without a token");
    sim.shutdown().await;
}

#[tokio::test]
async fn server_errors_fail_closed() {
    let sim = start().await;
    let jamf = client(&sim);
    sim.set_inventory_behavior(Behavior::ServerError);
    let result = jamf.check(MANAGED_SERIAL, MANAGED_UDID).await;
    assert!(
        matches!(&result, Err(MdmError::Unavailable { reason: m, .. }) if m.contains("500")),
        "inventory: {result:?}"
    );

    let sim2 = start().await;
    sim2.set_token_behavior(Behavior::ServerError);
    let result = client(&sim2).check(MANAGED_SERIAL, MANAGED_UDID).await;
    assert!(
        matches!(&result, Err(MdmError::Unavailable { reason: m, .. }) if m.contains("500")),
        "token: {result:?}"
    );
    assert_eq!(sim2.inventory_requests(), 0);
    sim.shutdown().await;
    sim2.shutdown().await;
}

#[tokio::test]
async fn unreadable_answers_are_malformed() {
    let sim = start().await;
    sim.set_inventory_behavior(Behavior::Garbage);
    let result = client(&sim).check(MANAGED_SERIAL, MANAGED_UDID).await;
    assert!(matches!(result, Err(MdmError::Malformed { .. })), "inventory: {result:?}");

    sim.set_token_behavior(Behavior::Garbage);
    let result = client(&sim).check(MANAGED_SERIAL, MANAGED_UDID).await;
    assert!(matches!(result, Err(MdmError::Malformed { .. })), "token: {result:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn hanging_jamf_times_out() {
    // Long enough that real time never reaches it: the clock is paused once the simulator
    // holds the request, and then only the client's own timer can end the wait.
    let timeout = Duration::from_secs(30);
    for (name, hang_token) in [("inventory", false), ("token", true)] {
        let sim = start().await;
        if hang_token {
            sim.set_token_behavior(Behavior::Hang);
        } else {
            sim.set_inventory_behavior(Behavior::Hang);
        }
        let requests = || if hang_token { sim.token_requests() } else { sim.inventory_requests() };
        let mut config = config(&sim);
        config.timeout = timeout;
        let jamf = JamfClient::new(config).expect("jamf client");
        let started = tokio::time::Instant::now();
        let check = jamf.check(MANAGED_SERIAL, MANAGED_UDID);
        tokio::pin!(check);
        // In real time, until the simulator holds the request (at most 10 s).
        let mut arrived = false;
        for _ in 0..1000 {
            tokio::select! {
                result = &mut check => panic!("{name}: answered before jamf was asked: {result:?}"),
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            if requests() > 0 {
                arrived = true;
                break;
            }
        }
        assert!(arrived, "{name}: the simulator never got the request");
        tokio::time::pause();
        // The outer limit turns a missing client timeout into a failure instead of a hang.
        let result = tokio::time::timeout(timeout * 2, check).await.expect("the client gave up by itself");
        let elapsed = started.elapsed();
        assert!(
            matches!(&result, Err(MdmError::Unavailable { reason: m, .. }) if m.contains("timed out")),
            "{name}: {result:?}"
        );
        // Paused time moves only to the next timer: the client's, at exactly its timeout.
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_secs(1),
            "{name}: gave up after {elapsed:?}"
        );
        tokio::time::resume();
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn unreachable_jamf_fails_closed() {
    // A port that refuses, held for the test, so that no other test's simulator answers.
    let down = testkit::RefusedPort::new();
    let config = JamfConfig::new(format!("http://{}", down.addr()), "id", ClientSecret::new("secret"));
    let result = JamfClient::new(config).expect("jamf client").check(MANAGED_SERIAL, MANAGED_UDID).await;
    assert!(matches!(result, Err(MdmError::Unavailable { .. })), "{result:?}");
}

#[tokio::test]
async fn serial_cannot_inject_rsql() {
    let sim = start().await;
    let jamf = client(&sim);
    for serial in [
        "",
        "C02*",
        "*",
        "C02XK0AAJGH6\" or hardware.serialNumber==\"*",
        "C02XK0AAJGH6\",general.name==\"x",
        "C02XK0AAJGH6;hardware.serialNumber==*",
        "C02XK0AAJGH6\\",
        "C02 XK0",
        "C02\u{0}X",
    ] {
        assert_eq!(jamf.check(serial, MANAGED_UDID).await, Ok(NotManaged(UnknownDevice)), "{serial:?}");
    }
    assert_eq!(sim.token_requests(), 0);
    assert_eq!(sim.inventory_requests(), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn secrets_stay_out_of_debug_output() {
    let sim = start().await;
    let config = config(&sim);
    let jamf = JamfClient::new(config.clone()).expect("jamf client");
    assert_eq!(jamf.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    let cached = PositiveCache::new(
        Arc::new(JamfClient::new(config.clone()).expect("jamf client")),
        Duration::from_secs(60),
    );
    let tokens = sim.issued_tokens();
    assert_eq!(tokens.len(), 1);
    for shown in [
        format!("{jamf:?}"),
        format!("{config:?}"),
        format!("{cached:?}"),
        format!("{:#?}", config.client_secret),
    ] {
        assert!(!shown.contains(jamf_sim::CLIENT_SECRET), "{shown}");
        assert!(!tokens.iter().any(|t| shown.contains(t.as_str())), "{shown}");
    }
    sim.shutdown().await;
}

fn cached(sim: &JamfSim, clock: &Arc<ManualMonotonicClock>) -> PositiveCache {
    let inner = JamfClient::with_clock(config(sim), clock.clone()).expect("jamf client");
    PositiveCache::with_clock(Arc::new(inner), Duration::from_secs(300), clock.clone())
}

#[tokio::test]
async fn cache_answers_managed_without_asking_again_until_the_ttl() {
    let sim = start().await;
    let clock = ManualMonotonicClock::new();
    let cache = cached(&sim, &clock);
    for _ in 0..3 {
        assert_eq!(cache.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    }
    assert_eq!(cache.check(MANAGED_SERIAL, &MANAGED_UDID.to_ascii_lowercase()).await, Ok(Managed));
    assert_eq!(sim.inventory_requests(), 1);
    clock.advance(Duration::from_secs(299));
    assert_eq!(cache.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    assert_eq!(sim.inventory_requests(), 1);
    clock.advance(Duration::from_secs(2));
    assert_eq!(cache.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    assert_eq!(sim.inventory_requests(), 2, "asked again after the ttl");
    sim.shutdown().await;
}

#[tokio::test]
async fn cache_never_keeps_negative_answers() {
    let sim = start().await;
    let clock = ManualMonotonicClock::new();
    let cache = cached(&sim, &clock);
    let cases = [
        ("fail/unmanaged", UNMANAGED_SERIAL, UNMANAGED_UDID, NotManaged(Unmanaged)),
        ("fail/unknown", "C02NOTINJAMF", MANAGED_UDID, NotManaged(UnknownDevice)),
        ("fail/mismatch", MISMATCH_SERIAL, MISMATCH_DEVICE_UDID, NotManaged(UdidMismatch)),
    ];
    let mut asked = 0;
    for (name, serial, udid, want) in cases {
        for _ in 0..2 {
            assert_eq!(cache.check(serial, udid).await, Ok(want), "{name}");
            asked += 1;
            assert_eq!(sim.inventory_requests(), asked, "{name}: asked every time");
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn cache_is_per_udid_and_never_keeps_errors() {
    let sim = start().await;
    let clock = ManualMonotonicClock::new();
    let cache = cached(&sim, &clock);
    sim.set_inventory_behavior(Behavior::ServerError);
    assert!(matches!(cache.check(MANAGED_SERIAL, MANAGED_UDID).await, Err(MdmError::Unavailable { .. })));
    sim.set_inventory_behavior(Behavior::Normal);
    assert_eq!(cache.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    assert_eq!(sim.inventory_requests(), 2, "the error was not remembered");
    // The cached positive answer is for this UDID only.
    assert_eq!(cache.check(MANAGED_SERIAL, UNMANAGED_UDID).await, Ok(NotManaged(UdidMismatch)));
    assert_eq!(sim.inventory_requests(), 3);
    sim.shutdown().await;
}

fn write(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path
}

#[tokio::test]
async fn static_list_verdicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "devices.json",
        &format!(
            r#"[{{"udid": "{MANAGED_UDID}", "serialNumber": "{MANAGED_SERIAL}"}},
                {{"udid": "{UNMANAGED_UDID}", "serialNumber": "{UNMANAGED_SERIAL}"}}]"#
        ),
    );
    let list = StaticList::from_file(&path).expect("list");
    assert_eq!(list.len(), 2);
    let cases = [
        ("ok/listed", MANAGED_SERIAL, MANAGED_UDID, Managed),
        ("ok/udid-case-insensitive", MANAGED_SERIAL, &MANAGED_UDID.to_ascii_lowercase(), Managed),
        ("ok/second-entry", UNMANAGED_SERIAL, UNMANAGED_UDID, Managed),
        ("fail/other-udid", MANAGED_SERIAL, UNMANAGED_UDID, NotManaged(UdidMismatch)),
        ("fail/empty-udid", MANAGED_SERIAL, "", NotManaged(UdidMismatch)),
        ("fail/unknown-serial", "C02NOTLISTED", MANAGED_UDID, NotManaged(UnknownDevice)),
        ("fail/serial-case", &MANAGED_SERIAL.to_ascii_lowercase(), MANAGED_UDID, NotManaged(UnknownDevice)),
    ];
    for (name, serial, udid, want) in cases {
        assert_eq!(list.check(serial, udid).await, Ok(want), "{name}");
    }
}

#[test]
fn static_list_file_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.json");
    assert!(matches!(StaticList::from_file(&missing), Err(StaticListError::Read { .. })));
    let cases = [
        ("fail/not-json", "udid,serial\n", "parse"),
        ("fail/object", r#"{"udid": "a", "serialNumber": "b"}"#, "parse"),
        ("fail/missing-field", r#"[{"udid": "a"}]"#, "parse"),
        ("fail/unknown-field", r#"[{"udid": "a", "serial": "b"}]"#, "parse"),
        ("fail/empty-udid", r#"[{"udid": " ", "serialNumber": "b"}]"#, "empty"),
        ("fail/empty-serial", r#"[{"udid": "a", "serialNumber": ""}]"#, "empty"),
        ("ok/empty-list", "[]", "ok"),
    ];
    for (name, contents, want) in cases {
        let path = write(dir.path(), "list.json", contents);
        let result = StaticList::from_file(&path);
        let got = match &result {
            Ok(_) => "ok",
            Err(StaticListError::Parse { .. }) => "parse",
            Err(StaticListError::EmptyField { .. }) => "empty",
            Err(_) => "other",
        };
        assert_eq!(got, want, "{name}: {result:?}");
        if let Err(e) = result {
            assert!(e.to_string().contains("list.json"), "{name}: the message names the file: {e}");
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct Config {
    mdm: MdmSettings,
}

fn parse(toml_text: &str) -> Result<MdmSettings, String> {
    toml::from_str::<Config>(toml_text).map(|c| c.mdm).map_err(|e| e.to_string())
}

#[test]
fn settings_parse_from_toml() {
    assert_eq!(parse("[mdm]\nkind = \"allow_all\"\n"), Ok(MdmSettings::AllowAll));
    assert_eq!(
        parse("[mdm]\nkind = \"static_list\"\npath = \"/etc/devicetrust/devices.json\"\n"),
        Ok(MdmSettings::StaticList { path: "/etc/devicetrust/devices.json".into() })
    );
    assert_eq!(
        parse("[mdm]\nkind = \"jamf\"\nurl = \"https://example.jamfcloud.com\"\nclient_id = \"abc\"\n"),
        Ok(MdmSettings::Jamf(JamfSettings::new("https://example.jamfcloud.com", "abc")))
    );
    let defaults = JamfSettings::new("u", "c");
    assert_eq!(
        (
            defaults.api_version.as_str(),
            defaults.timeout_secs,
            defaults.connect_timeout_secs,
            defaults.cache_ttl_secs
        ),
        ("v3", 10, 5, 300)
    );
    let full = parse(
        r#"
        [mdm]
        kind = "jamf"
        url = "https://jamf.example.com:8443"
        client_id = "abc"
        client_secret_file = "/etc/devicetrust/jamf-secret"
        api_version = "v4"
        timeout_secs = 7
        connect_timeout_secs = 2
        cache_ttl_secs = 0
        ca_bundle = "/etc/devicetrust/jamf-ca.pem"
        "#,
    );
    let mut want = JamfSettings::new("https://jamf.example.com:8443", "abc");
    want.client_secret_file = Some("/etc/devicetrust/jamf-secret".into());
    want.api_version = "v4".to_owned();
    want.timeout_secs = 7;
    want.connect_timeout_secs = 2;
    want.cache_ttl_secs = 0;
    want.ca_bundle = Some("/etc/devicetrust/jamf-ca.pem".into());
    assert_eq!(full, Ok(MdmSettings::Jamf(want)));
}

#[test]
fn settings_refuse_bad_toml() {
    let cases = [
        ("fail/no-kind", "[mdm]\nurl = \"https://x\"\n"),
        ("fail/unknown-kind", "[mdm]\nkind = \"intune\"\n"),
        ("fail/static-list-without-path", "[mdm]\nkind = \"static_list\"\n"),
        ("fail/static-list-unknown-key", "[mdm]\nkind = \"static_list\"\npath = \"x\"\nfile = \"y\"\n"),
        ("fail/jamf-without-url", "[mdm]\nkind = \"jamf\"\nclient_id = \"abc\"\n"),
        (
            "fail/jamf-unknown-key",
            "[mdm]\nkind = \"jamf\"\nurl = \"https://x\"\nclient_id = \"a\"\ntimeout = 3\n",
        ),
        (
            "fail/jamf-negative-timeout",
            "[mdm]\nkind = \"jamf\"\nurl = \"https://x\"\nclient_id = \"a\"\ntimeout_secs = -1\n",
        ),
    ];
    for (name, text) in cases {
        assert!(parse(text).is_err(), "{name}");
    }
}

#[test]
fn settings_refuse_an_inline_client_secret() {
    let secret = "inline-secret-0b9c7e";
    let text = format!(
        "[mdm]\nkind = \"jamf\"\nurl = \"https://example.jamfcloud.com\"\nclient_id = \"abc\"\nclient_secret = \"{secret}\"\n"
    );
    let err = parse(&text).expect_err("an inline secret is refused");
    assert!(err.contains("client_secret_file"), "{err}");
    assert!(!err.contains(secret), "the secret is not echoed: {err}");
}

fn jamf_settings(sim: &JamfSim) -> JamfSettings {
    let mut settings = JamfSettings::new(sim.url(), jamf_sim::CLIENT_ID);
    settings.timeout_secs = 5;
    settings
}

#[cfg(unix)]
fn secret_file(dir: &Path, mode: u32, contents: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = write(dir, "jamf-secret", contents);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

#[cfg(unix)]
#[tokio::test]
async fn settings_build_a_cached_jamf_check_from_a_secret_file() {
    let sim = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = jamf_settings(&sim);
    settings.client_secret_file =
        Some(secret_file(dir.path(), 0o600, &format!("{}\n", jamf_sim::CLIENT_SECRET)));
    let check = from_settings_with_env(&MdmSettings::Jamf(settings), |_| None).expect("check");
    for _ in 0..2 {
        assert_eq!(check.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    }
    assert_eq!(sim.inventory_requests(), 1, "the second answer came from the cache");
    for _ in 0..2 {
        assert_eq!(check.check(UNMANAGED_SERIAL, UNMANAGED_UDID).await, Ok(NotManaged(Unmanaged)));
    }
    assert_eq!(sim.inventory_requests(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn settings_take_the_secret_from_the_environment() {
    let sim = start().await;
    let settings = MdmSettings::Jamf(jamf_settings(&sim));
    let env =
        |name: &str| (name == "DEVICETRUST_JAMF_CLIENT_SECRET").then(|| jamf_sim::CLIENT_SECRET.to_owned());
    let check = from_settings_with_env(&settings, env).expect("check");
    assert_eq!(check.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    assert!(matches!(from_settings_with_env(&settings, |_| None), Err(MdmSetupError::MissingClientSecret)));
    assert!(matches!(
        from_settings_with_env(&settings, |_| Some("  ".to_owned())),
        Err(MdmSetupError::MissingClientSecret)
    ));
    sim.shutdown().await;
}

#[cfg(unix)]
#[test]
fn secret_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = JamfSettings::new("http://127.0.0.1:9", "id");
    for (name, mode, ok) in [
        ("ok/0600", 0o600, true),
        ("ok/0400", 0o400, true),
        ("fail/0644", 0o644, false),
        ("fail/0640", 0o640, false),
        ("fail/0604", 0o604, false),
        ("fail/0660", 0o660, false),
    ] {
        let path = secret_file(dir.path(), mode, "s3cret");
        settings.client_secret_file = Some(path.clone());
        let result = settings.client_secret(|_| None);
        if ok {
            assert!(result.is_ok(), "{name}: {result:?}");
        } else {
            assert_eq!(result.map(|_| ()), Err(MdmSetupError::SecretFileTooOpen { path, mode }), "{name}");
        }
    }
    // The file wins over the environment, so an open file is never bypassed.
    let open = secret_file(dir.path(), 0o644, "s3cret");
    settings.client_secret_file = Some(open);
    assert!(matches!(
        settings.client_secret(|_| Some("from-env".to_owned())),
        Err(MdmSetupError::SecretFileTooOpen { .. })
    ));
}

#[cfg(unix)]
#[test]
fn secret_file_must_exist_and_hold_a_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = JamfSettings::new("http://127.0.0.1:9", "id");
    settings.client_secret_file = Some(dir.path().join("missing"));
    assert!(matches!(settings.client_secret(|_| None), Err(MdmSetupError::SecretFile { .. })));
    settings.client_secret_file = Some(secret_file(dir.path(), 0o600, " \n"));
    assert!(matches!(settings.client_secret(|_| None), Err(MdmSetupError::SecretFile { .. })));
}

#[test]
fn settings_refuse_unusable_jamf_values() {
    let env = |_: &str| Some("secret".to_owned());
    let build =
        |settings: JamfSettings| from_settings_with_env(&MdmSettings::Jamf(settings), env).map(|_| ());
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = write(dir.path(), "not.pem", "hello\n");

    let mut remote_http = JamfSettings::new("http://jamf.example.com", "id");
    remote_http.cache_ttl_secs = 1;
    assert!(matches!(build(remote_http), Err(MdmSetupError::InvalidSetting { setting: "url", .. })));
    let mut zero_timeout = JamfSettings::new("http://127.0.0.1:9", "id");
    zero_timeout.timeout_secs = 0;
    assert!(matches!(build(zero_timeout), Err(MdmSetupError::InvalidSetting { setting: "timeout", .. })));
    let mut missing_bundle = JamfSettings::new("https://jamf.example.com", "id");
    missing_bundle.ca_bundle = Some(dir.path().join("missing.pem"));
    assert!(matches!(build(missing_bundle), Err(MdmSetupError::CaBundle { .. })));
    let mut bad_bundle = JamfSettings::new("https://jamf.example.com", "id");
    bad_bundle.ca_bundle = Some(not_pem);
    assert!(matches!(build(bad_bundle), Err(MdmSetupError::CaBundle { .. })));

    let ca = rcgen::generate_simple_self_signed(vec!["jamf.example.com".to_owned()]).expect("cert");
    let mut good_bundle = JamfSettings::new("https://jamf.example.com", "id");
    good_bundle.ca_bundle = Some(write(dir.path(), "ca.pem", &ca.cert.pem()));
    assert_eq!(build(good_bundle), Ok(()));
}

#[tokio::test]
async fn settings_build_static_list_and_allow_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "devices.json",
        &format!(r#"[{{"udid": "{MANAGED_UDID}", "serialNumber": "{MANAGED_SERIAL}"}}]"#),
    );
    let list = from_settings_with_env(&MdmSettings::StaticList { path }, |_| None).expect("list");
    assert_eq!(list.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    assert_eq!(list.check(UNMANAGED_SERIAL, UNMANAGED_UDID).await, Ok(NotManaged(UnknownDevice)));
    let missing = MdmSettings::StaticList { path: dir.path().join("missing.json") };
    assert!(matches!(
        from_settings_with_env(&missing, |_| None),
        Err(MdmSetupError::StaticList(StaticListError::Read { .. }))
    ));
    let all = from_settings_with_env(&MdmSettings::AllowAll, |_| None).expect("allow all");
    assert_eq!(all.check("anything", "any").await, Ok(Managed));
}

/// A CA, and a certificate for 127.0.0.1 it issued: (CA PEM, server PEM, server key PEM).
fn tls_material() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Jamf simulator test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("ca key"))
        .expect("ca");
    let server_key = rcgen::KeyPair::generate().expect("server key");
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&server_key, &*ca)
        .expect("server certificate");
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

#[tokio::test]
async fn https_jamf_is_verified_against_the_configured_bundle() {
    let (ca_pem, server_pem, key_pem) = tls_material();
    let sim = JamfSim::start_tls(&server_pem, &key_pem).await.expect("start the https simulator");
    assert!(sim.url().starts_with("https://127.0.0.1:"), "{}", sim.url());
    let dir = tempfile::tempdir().expect("tempdir");

    let mut trusted = config(&sim);
    trusted.ca_bundle = Some(write(dir.path(), "jamf-ca.pem", &ca_pem));
    let jamf = JamfClient::new(trusted).expect("jamf client");
    assert_eq!(jamf.check(MANAGED_SERIAL, MANAGED_UDID).await, Ok(Managed));
    assert_eq!(jamf.check(UNMANAGED_SERIAL, UNMANAGED_UDID).await, Ok(NotManaged(Unmanaged)));
    assert_eq!(sim.token_requests(), 1);

    // Another CA's bundle: the handshake fails before any credential is sent.
    let (other_ca_pem, _, _) = tls_material();
    let mut untrusted = config(&sim);
    untrusted.ca_bundle = Some(write(dir.path(), "other-ca.pem", &other_ca_pem));
    let result = JamfClient::new(untrusted).expect("jamf client").check(MANAGED_SERIAL, MANAGED_UDID).await;
    assert!(matches!(result, Err(MdmError::Unavailable { .. })), "{result:?}");
    assert_eq!(sim.token_requests(), 1, "no token request reached the server");
    sim.shutdown().await;
}
