//! `serve`'s configuration file: an issuing CA loaded from PEM files (made by OpenSSL),
//! relative paths, tokens from files; and the command line's exit codes.

use std::process::Command;

use ca_client::protocol::Metadata;
use ca_server::config::Config;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::harness::{Device, TestCa, p256, run};

#[tokio::test]
async fn a_configured_ca_is_loaded_from_pem_files() {
    let ca = TestCa::start_with(|config| {
        let dir = config.server.data_dir.clone();
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes"])
            .args(["-subj", "/O=Example Corp/CN=Corp Device CA", "-days", "3650"])
            .args([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ])
            .arg("-keyout")
            .arg(dir.join("corp-ca.key"))
            .arg("-out")
            .arg(dir.join("corp-ca.pem")));
        let toml = format!(
            r#"
            [server]
            listen = "127.0.0.1:0"
            cert_auth_domain = "{domain}"
            data_dir = "."
            tls = {{ certificate = "tls.pem", private_key = "tls.key" }}
            learn_more_url = "https://intranet.example.com/device-trust"

            [ca]
            certificate = "corp-ca.pem"
            private_key = "corp-ca.key"
            subject_common_name = "Corp Device"
            certificate_lifetime_days = 90
            renew_before_days = 20
            max_unbound_certificates = 2

            [tokens]
            enrollment = {{ file = "enrollment-token" }}
            admin = {{ file = "admin-token" }}

            [mdm]
            kind = "allow_all"
            "#,
            domain = config.server.cert_auth_domain
        );
        std::fs::write(dir.join("config.toml"), toml).expect("write config");
        *config = Config::load(&dir.join("config.toml")).expect("load config");
    })
    .await;

    let metadata: Metadata =
        ca.anonymous().get(ca.url("/api/v1/metadata")).send().await.expect("get").json().await.expect("json");
    assert_eq!(metadata.issuer_common_name, "Corp Device CA");
    assert_eq!((metadata.certificate_lifetime_days, metadata.renew_before_days), (90, 20));
    assert_eq!(metadata.max_unbound_certificates, 2);

    let device = Device::new(1);
    let issued = ca.enroll_ok(&device.request(&p256())).await;
    let ca_pem = ca.env.data_dir.join("corp-ca.pem");
    let ca_der = CertificateDer::from_pem_file(&ca_pem).expect("ca");
    let chain_der = CertificateDer::from_pem_slice(issued.chain[0].as_bytes()).expect("chain");
    assert_eq!(chain_der, ca_der);
    assert_eq!(
        issued.not_after - issued.not_before,
        chrono::Duration::days(90) + chrono::Duration::minutes(5)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, &issued.certificate).expect("write");
    let out = run(Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&ca_pem)
        .arg(&leaf));
    assert!(out.trim_end().ends_with(": OK"), "{out}");
    let text = run(Command::new("openssl").args(["x509", "-noout", "-subject", "-in"]).arg(&leaf));
    assert!(text.contains("CN = Corp Device"), "{text}");

    ca.enroll_ok(&device.request(&p256())).await;
    let limit = ca.enroll(&device.request(&p256())).await;
    let message = crate::harness::expect_error(limit, 409, "enrollment_limit_reached").await;
    assert_eq!(message, "Maximum enrollment limit of 2 certificates for a device is reached");
}

#[test]
fn the_command_line_documents_its_exit_codes() {
    let bin = env!("CARGO_BIN_EXE_devicetrust-ca");
    testkit::run(Command::new(bin).arg("frobnicate")).expect_code(2);

    let dir = tempfile::tempdir().expect("tempdir");
    let missing =
        testkit::run(Command::new(bin).args(["serve", "--config"]).arg(dir.path().join("nope.toml")));
    missing.expect_code(1);
    assert!(
        missing.stderr.contains("error: cannot read the config file") && missing.stderr.contains("nope.toml"),
        "{missing}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = 1\n").expect("write");
    let invalid = testkit::run(Command::new(bin).args(["serve", "--config"]).arg(&bad));
    invalid.expect_code(1);
    assert!(invalid.stderr.contains("invalid config file"), "{invalid}");

    let list = dir.path().join("devices.json");
    std::fs::write(&list, "not json").expect("write");
    let bad_list = testkit::run(
        Command::new(bin)
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--managed-devices")
            .arg(&list),
    );
    bad_list.expect_code(1);
    assert!(bad_list.stdout.is_empty(), "no ready line when startup fails: {bad_list}");
}

/// `serve` validates everything it only reads before it creates anything: a missing token
/// file leaves no data directory and no generated issuing CA behind, and the error names the
/// resolved path.
#[tokio::test]
async fn a_missing_token_file_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = r#"
        [server]
        listen = "127.0.0.1:0"
        cert_auth_domain = "https://devicetrust.example.com:8443"
        data_dir = "data"
        tls = { certificate = "tls.pem", private_key = "tls.key" }

        [tokens]
        enrollment = { file = "secrets/enrollment-token" }
        admin = { file = "secrets/admin-token" }

        [mdm]
        kind = "allow_all"
        "#;
    std::fs::write(dir.path().join("config.toml"), toml).expect("write config");
    let config = Config::load(&dir.path().join("config.toml")).expect("the file parses");
    let error = ca_server::Ca::builder(config).build().await.map(|_| ()).expect_err("no token file");
    let chain = {
        let mut parts = vec![error.to_string()];
        let mut cause = std::error::Error::source(&error);
        while let Some(c) = cause {
            parts.push(c.to_string());
            cause = c.source();
        }
        parts.join(": ")
    };
    assert!(
        chain.contains(&dir.path().join("secrets/enrollment-token").display().to_string()),
        "the resolved path: {chain}"
    );
    assert!(!dir.path().join("data").exists(), "no data directory was created");
}

/// A cert-auth domain no listener's certificate covers is refused before anything is
/// created; another port on a covered name is fine (a load balancer in front), and so is a
/// `[cert_auth]` listener whose own certificate covers it.
#[tokio::test]
async fn a_cert_auth_domain_no_certificate_covers_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let write_secret = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    };
    for (name, host) in [("main", "ca.example.com"), ("browser", "devicetrust.example.com")] {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).expect("write");
        write_secret(&format!("{name}.key"), &key.serialize_pem());
    }
    write_secret("enrollment-token", "enrollment-token-0123456789");
    write_secret("admin-token", "admin-token-0123456789abcdef");
    let config = |domain: &str, cert_auth: &str| {
        let toml = format!(
            r#"
            [server]
            listen = "127.0.0.1:0"
            cert_auth_domain = "{domain}"
            data_dir = "data"
            tls = {{ certificate = "main.pem", private_key = "main.key" }}
            {cert_auth}
            [tokens]
            enrollment = {{ file = "enrollment-token" }}
            admin = {{ file = "admin-token" }}

            [mdm]
            kind = "allow_all"
            "#
        );
        std::fs::write(dir.path().join("config.toml"), toml).expect("write config");
        Config::load(&dir.path().join("config.toml")).expect("the file parses")
    };
    let own_listener = "[cert_auth]\nlisten = \"127.0.0.1:0\"\ntls = { certificate = \"browser.pem\", private_key = \"browser.key\" }\n";
    let cases = [
        ("fail/no-certificate-covers", "https://devicetrust.example.com:8443", "", false),
        ("ok/main-certificate-another-port", "https://ca.example.com", "", true),
        ("ok/own-listener-certificate", "https://devicetrust.example.com:9443", own_listener, true),
    ];
    for (name, domain, cert_auth, ok) in cases {
        let result = ca_server::Ca::builder(config(domain, cert_auth)).build().await.map(|_| ());
        match (result, ok) {
            (Ok(()), true) => {}
            (Err(error), false) => {
                let message = error.to_string();
                let main = dir.path().join("main.pem").display().to_string();
                for part in [
                    "no listener serves cert_auth_domain https://devicetrust.example.com:8443",
                    main.as_str(),
                    "not valid for devicetrust.example.com (it names ca.example.com)",
                    "set server.cert_auth_domain",
                ] {
                    assert!(message.contains(part), "{name}: {part:?} in {message}");
                }
                assert!(!dir.path().join("data").exists(), "{name}: nothing was created");
            }
            (result, _) => panic!("{name}: {result:?}"),
        }
    }
}
