//! CSR creation and certificate inspection, checked against independent tools: the openssl
//! CLI and an rcgen-based issuer standing in for the CA.

use std::process::Command;

use ca_client::cert::{CertError, CertificateInfo, certificate_to_pem, verify_issued_by};
use ca_client::csr::create_csr;
use ca_client::signer::{KeyAlgorithm, KeySigner, SoftwareKey};
use chrono::{DateTime, TimeDelta, Utc};
use rustls::pki_types::CertificateSigningRequestDer;
use sha2::{Digest as _, Sha256};

use crate::support::{CountingSigner, fixture_cert, fixture_key, fixture_path, fixture_text};

const UDID: &str = "564D7F2A-0C3B-4E1A-9D7E-5A1B2C3D4E5F";

/// Runs openssl; a missing openssl fails the test, it never skips it.
fn openssl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the openssl CLI is needed by this test: {e}"));
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

#[test]
fn ok_client_fixture_is_read_as_openssl_reads_it() {
    let info = CertificateInfo::from_pem(&fixture_text("client.pem")).expect("parse");
    let path = fixture_path("client.pem");
    let path = path.to_str().expect("utf-8 path");

    assert_eq!(info.serial_number(), "8badf00d", "no leading zero byte");
    let serial = String::from_utf8(openssl(&["x509", "-in", path, "-noout", "-serial"])).expect("utf-8");
    assert_eq!(serial.trim().to_ascii_lowercase(), format!("serial={}", info.serial_number()));
    assert_eq!(info.subject_cn(), Some("Device Trust"));
    assert_eq!(info.issuer_cn(), Some("DeviceTrust Test CA"));
    assert_eq!(info.not_after() - info.not_before(), TimeDelta::days(36500));
    assert!(info.has_client_auth_eku());
    assert_eq!(info.device_uri(), Some(format!("urn:devicetrust:device:{UDID}").as_str()));
    assert_eq!(info.device_udid(), Some(UDID));
    assert_eq!(info.der(), fixture_cert("client.pem").as_ref());
    assert_eq!(info.to_pem(), fixture_text("client.pem"));

    let pubkey_pem = openssl(&["x509", "-in", path, "-noout", "-pubkey"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pubkey_path = dir.path().join("pub.pem");
    std::fs::write(&pubkey_path, pubkey_pem).expect("write");
    let spki = openssl(&["pkey", "-pubin", "-in", pubkey_path.to_str().expect("path"), "-outform", "DER"]);
    assert_eq!(info.spki_der(), spki.as_slice());
    assert_eq!(info.spki_sha256(), hex::encode(Sha256::digest(&spki)));

    assert!(info.matches_key(&fixture_key("client.key.pem")));
    assert!(!info.matches_key(&fixture_key("server.key.pem")));
    assert!(!info.matches_key(&SoftwareKey::generate(KeyAlgorithm::EcdsaP384Sha384).expect("generate")));
}

#[test]
fn ok_server_fixture_has_no_client_auth_and_no_device() {
    let info = CertificateInfo::from_pem(&fixture_text("server.pem")).expect("parse");
    assert_eq!(info.serial_number(), "1001");
    assert_eq!(info.subject_cn(), Some("localhost"));
    assert!(!info.has_client_auth_eku());
    assert_eq!(info.device_uri(), None);
    assert_eq!(info.device_udid(), None);
}

#[test]
fn fail_inspection_refuses_what_is_not_one_certificate() {
    let client = fixture_text("client.pem");
    let cases = [
        ("fail/empty", String::new(), CertError::NoCertificate),
        ("fail/key", fixture_text("client.key.pem"), CertError::NoCertificate),
        ("fail/two", format!("{client}{client}"), CertError::TooManyCertificates { count: 2 }),
    ];
    for (name, pem, want) in cases {
        assert_eq!(CertificateInfo::from_pem(&pem), Err(want), "{name}");
    }
    let mut trailing = fixture_cert("client.pem").to_vec();
    trailing.push(0);
    assert!(
        matches!(CertificateInfo::from_der(&trailing), Err(CertError::Parse { .. })),
        "fail/trailing-byte"
    );
    assert!(
        matches!(CertificateInfo::from_der(b"\x30\x03\x02\x01\x05"), Err(CertError::Parse { .. })),
        "fail/der"
    );
}

/// Name, leaf DER, issuer PEMs, time, expected result.
type VerifyCase<'a> = (&'static str, &'a [u8], Vec<String>, DateTime<Utc>, Result<(), CertError>);

#[test]
fn verify_issued_by_table() {
    let client = fixture_cert("client.pem");
    let server = fixture_cert("server.pem");
    let info = CertificateInfo::from_der(&client).expect("parse");
    let now = Utc::now();
    let ca = fixture_text("ca.pem");
    let other = fixture_text("other-ca.pem");
    let after = info.not_after() + TimeDelta::days(1);
    let before = DateTime::from_timestamp(946_684_800, 0).expect("2000-01-01");

    let cases: Vec<VerifyCase<'_>> = vec![
        ("ok/issued-by-ca", &client, vec![ca.clone()], now, Ok(())),
        ("ok/ca-in-a-bundle", &client, vec![format!("{other}{ca}")], now, Ok(())),
        ("ok/ca-in-a-list", &client, vec![other.clone(), ca.clone()], now, Ok(())),
        ("fail/other-ca", &client, vec![other.clone()], now, Err(CertError::UnknownIssuer)),
        ("fail/server-certificate", &server, vec![ca.clone()], now, Err(CertError::NotForClientAuth)),
        (
            "fail/expired",
            &client,
            vec![ca.clone()],
            after,
            Err(CertError::Expired { not_after: info.not_after(), now: after }),
        ),
        (
            "fail/not-yet-valid",
            &client,
            vec![ca.clone()],
            before,
            Err(CertError::NotYetValid { not_before: info.not_before(), now: before }),
        ),
        ("fail/no-issuers", &client, Vec::new(), now, Err(CertError::NoCertificate)),
    ];
    for (name, leaf, issuers, at, want) in cases {
        assert_eq!(verify_issued_by(leaf, &issuers, at), want, "{name}");
    }
    assert!(
        matches!(verify_issued_by(b"garbage", &[ca], now), Err(CertError::Parse { .. })),
        "fail/garbage-leaf"
    );
}

#[test]
fn ok_a_csr_signed_through_the_trait_verifies_with_openssl() {
    let signer = CountingSigner::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP256Sha256).expect("generate"));
    let csr = create_csr(&signer, "Device Trust").expect("csr");
    assert_eq!(signer.count(), 1, "the CSR was signed through KeySigner");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("request.der");
    std::fs::write(&path, csr.der()).expect("write");
    let path = path.to_str().expect("path");
    let subject = openssl(&["req", "-inform", "DER", "-in", path, "-verify", "-noout", "-subject"]);
    assert!(String::from_utf8_lossy(&subject).contains("CN = Device Trust"), "{subject:?}");
    let spki = openssl(&["req", "-inform", "DER", "-in", path, "-noout", "-pubkey"]);
    let spki_path = dir.path().join("pub.pem");
    std::fs::write(&spki_path, spki).expect("write");
    let spki = openssl(&["pkey", "-pubin", "-in", spki_path.to_str().expect("path"), "-outform", "DER"]);
    assert_eq!(spki, signer.subject_public_key_info());
}

/// The whole client-side life of a certificate: a CSR from a key behind the trait, issued by
/// a stand-in CA (rcgen with the fixture CA key), then inspected and chain-checked.
#[test]
fn ok_a_certificate_issued_for_our_csr_matches_our_key_and_chains_to_the_ca() {
    for algorithm in [KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::EcdsaP384Sha384] {
        let key = SoftwareKey::generate(algorithm).expect("generate");
        let csr = create_csr(&key, "ignored by the CA").expect("csr");

        let request =
            rcgen::CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr.der()))
                .expect("the CA accepts the CSR and its self-signature");
        let ca_key = rcgen::KeyPair::from_pem(&fixture_text("ca.key.pem")).expect("ca key");
        let issuer = rcgen::Issuer::from_ca_cert_pem(&fixture_text("ca.pem"), ca_key).expect("issuer");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "Device Trust");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.subject_alt_names =
            vec![rcgen::SanType::URI(format!("urn:devicetrust:device:{UDID}").try_into().expect("uri"))];
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0xfe, 0xed]));
        let issued = params.signed_by(&request.public_key, &issuer).expect("issue");

        let info = CertificateInfo::from_pem(&issued.pem()).expect("parse");
        assert!(info.matches_key(&key), "{algorithm:?}");
        assert_eq!(info.serial_number(), "feed");
        assert_eq!(info.device_udid(), Some(UDID));
        assert!(info.has_client_auth_eku());
        verify_issued_by(issued.der(), &[fixture_text("ca.pem")], Utc::now()).expect("chains to the CA");
        assert_eq!(certificate_to_pem(issued.der()), info.to_pem());
    }
}
