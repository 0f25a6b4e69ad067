//! Property tests: no answer, however malformed, and no certificate bytes make the client
//! panic; every answer becomes a value or a typed error.

use ca_client::ClientError;
use ca_client::cert::{CertificateInfo, certificates_from_pem, verify_issued_by};
use ca_client::protocol::ErrorCode;
use ca_client::response::{
    MAX_ERROR_TEXT, interpret_certificate_status, interpret_error, interpret_issued, interpret_metadata,
};
use chrono::Utc;
use proptest::prelude::*;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

use crate::support::{fixture_cert, fixture_text, issued_json, metadata_json};

/// Valid answers, so that mutations of them reach deep into the parsers.
fn valid_bodies() -> Vec<Vec<u8>> {
    let status = serde_json::json!({"serialNumber": "8badf00d", "state": "bound", "boundUser": null,
        "notAfter": "2027-11-23T10:00:00Z", "device": {"udid": "X"}});
    let error = serde_json::json!({"error": {"code": "rate_limited", "message": "slow down"}});
    [issued_json(), metadata_json(), status, error]
        .iter()
        .map(|v| serde_json::to_vec(v).expect("json"))
        .collect()
}

/// Any bytes, or a valid answer with some bytes replaced and maybe cut short.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        0..4usize,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(which, edits, cut)| {
            let mut body = valid_bodies().swap_remove(which);
            for (at, byte) in edits {
                let i = at.index(body.len());
                body[i] = byte;
            }
            let keep = cut.index(body.len() + 1);
            if keep > body.len() / 2 {
                body.truncate(keep);
            }
            body
        });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..2048), mutated]
}

fn headers(retry_after: Option<String>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(RETRY_AFTER, value);
    }
    headers
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_status_and_body_yield_a_value_or_an_error(
        status in 100u16..600,
        body in body(),
        retry_after in prop::option::of(any::<String>()),
    ) {
        let status = StatusCode::from_u16(status).expect("in range");
        let headers = headers(retry_after);
        let results: [Result<(), ClientError>; 3] = [
            interpret_metadata(status, &headers, &body).map(|_| ()),
            interpret_issued(status, &headers, &body).map(|_| ()),
            interpret_certificate_status(status, &headers, &body).map(|_| ()),
        ];
        for result in results {
            if let Err(error) = result {
                let _ = (error.reaction(), error.is_retryable(), error.to_string());
                if !status.is_success() {
                    let is_refusal = matches!(error, ClientError::Ca { .. } | ClientError::UnexpectedStatus { .. });
                    prop_assert!(is_refusal, "{:?}", error);
                }
                if let ClientError::Malformed { reason, .. } = &error {
                    prop_assert!(reason.len() <= MAX_ERROR_TEXT + 3);
                }
            } else {
                prop_assert!(status.is_success());
            }
        }
    }

    #[test]
    fn any_contract_error_body_keeps_its_code_and_a_bounded_message(
        status in 400u16..600,
        code in "[a-z_]{1,30}",
        message in any::<String>(),
        seconds in prop::option::of(0u64..1_000_000),
    ) {
        let body = serde_json::to_vec(&serde_json::json!({"error": {"code": code, "message": message}})).expect("json");
        let headers = headers(seconds.map(|s| s.to_string()));
        let error = interpret_error(StatusCode::from_u16(status).expect("status"), &headers, &body);
        match error {
            ClientError::Ca { status: got, code: got_code, message: got_message, retry_after } => {
                prop_assert_eq!(got, status);
                prop_assert_eq!(got_code, ErrorCode::from(code.as_str()));
                prop_assert!(got_message.len() <= MAX_ERROR_TEXT + 3);
                prop_assert_eq!(retry_after, seconds.map(std::time::Duration::from_secs));
            }
            other => prop_assert!(false, "not a ca error: {:?}", other),
        }
    }

    #[test]
    fn any_certificate_bytes_are_read_or_refused(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        noise in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = CertificateInfo::from_der(&noise);
        let _ = certificates_from_pem(&noise);
        let mut der = fixture_cert("client.pem").to_vec();
        for (at, byte) in edits {
            let i = at.index(der.len());
            der[i] = byte;
        }
        if let Ok(info) = CertificateInfo::from_der(&der) {
            let _ = (info.device_udid(), info.serial_number(), info.has_client_auth_eku());
        }
        let _ = verify_issued_by(&der, &[fixture_text("ca.pem")], Utc::now());
    }
}
