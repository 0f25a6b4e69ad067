//! `devicetrust-agent profile` against a running `devicetrust-ca dev`: the configuration
//! profiles an admin uploads to the MDM are made from the real CA's metadata, parse as
//! property lists, and carry the CA's cert-auth domain and issuer CN where browsers and the
//! agent read them.

#![cfg(target_os = "linux")]

use std::os::unix::fs::PermissionsExt as _;

use plist::Value;
use tests::harness::agent::AgentHome;
use tests::harness::ca::DevCa;

fn payloads(profile: &Value) -> &Vec<Value> {
    let dict = profile.as_dictionary().expect("the profile is a dictionary");
    assert_eq!(dict.get("PayloadType").and_then(Value::as_string), Some("Configuration"));
    dict.get("PayloadContent").and_then(Value::as_array).expect("PayloadContent is an array")
}

fn payload_of_type<'a>(profile: &'a Value, payload_type: &str) -> &'a plist::Dictionary {
    payloads(profile)
        .iter()
        .filter_map(Value::as_dictionary)
        .find(|p| p.get("PayloadType").and_then(Value::as_string) == Some(payload_type))
        .unwrap_or_else(|| panic!("no {payload_type} payload in {profile:?}"))
}

#[test]
fn profiles_are_made_from_the_running_cas_metadata() {
    let ca = DevCa::start();
    let agent = AgentHome::new(&ca, "E2E-PROFILE");

    // Browsers: Chrome's and Edge's managed AutoSelectCertificateForUrls for this CA.
    let browsers = agent.run(&["profile", "browsers"]);
    browsers.expect_code(0);
    let profile = Value::from_reader_xml(browsers.stdout.as_bytes()).expect("an XML property list");
    let want: serde_json::Value = serde_json::json!({
        "pattern": ca.info().cert_auth_domain,
        "filter": {"ISSUER": {"CN": "MTLS Certificate Authority"}},
    });
    for domain in ["com.google.Chrome", "com.microsoft.Edge"] {
        let payload = payload_of_type(&profile, domain);
        let entries = payload
            .get("AutoSelectCertificateForUrls")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{domain}: AutoSelectCertificateForUrls is an array"));
        assert_eq!(entries.len(), 1, "{domain}");
        let entry: serde_json::Value =
            serde_json::from_str(entries[0].as_string().expect("a JSON string")).expect("valid JSON");
        assert_eq!(entry, want, "{domain}");
    }

    // The agent's settings, written to a file readable by its owner only.
    let out = agent.home.join("agent.mobileconfig");
    agent.run(&["profile", "agent", "--out", &out.to_string_lossy()]).expect_code(0);
    let mode = std::fs::metadata(&out).expect("the profile file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let profile = Value::from_file(&out).expect("a property list");
    let settings = payload_of_type(&profile, "com.devicetrust.agent");
    let ca_url = settings.get("ca_url").and_then(Value::as_string).expect("ca_url is a string");
    assert_eq!(ca_url.trim_end_matches('/'), ca.info().url.trim_end_matches('/'));

    // iCloud Keychain sync off.
    let icloud = agent.run(&["profile", "icloud-keychain"]);
    icloud.expect_code(0);
    let profile = Value::from_reader_xml(icloud.stdout.as_bytes()).expect("an XML property list");
    let restrictions = payload_of_type(&profile, "com.apple.applicationaccess");
    assert_eq!(restrictions.get("allowCloudKeychainSync").and_then(Value::as_boolean), Some(false));

    // A CA that cannot be reached: the CA's exit code, and nothing printed as a profile.
    // (The CA's bundle lives in its data directory, which goes with it: keep a copy.)
    let bundle = agent.home.join("ca-bundle.pem");
    std::fs::copy(&ca.info().ca_bundle, &bundle).expect("a copy of the CA bundle");
    drop(ca);
    // A port that refuses, held for the test: the CA's old port could be anyone's now.
    let refused = testkit::RefusedPort::new();
    agent.point_at(&refused.https_url(), &bundle);
    let down = agent.run(&["profile", "browsers"]);
    down.expect_code(5);
    assert!(down.stdout.is_empty(), "{down}");
}
