//! The KMIP client against a real PyKMIP server with TLS and client certificates
//! (`scripts/start-kmip.sh`, which `make test` runs and whose env it exports).

mod common;

use std::time::Duration;

use common::TestKmip;
use csi::kmip::{KmipClient, KmipError};

fn unique(what: &str) -> String {
    format!(
        "{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

#[tokio::test]
async fn a_key_is_created_fetched_revoked_and_destroyed() {
    let Some(kmip) = TestKmip::from_env() else {
        return;
    };
    let client = kmip.client();
    let name = unique("vol");
    let id = client.create_key(&name).await.expect("create");
    // The same name again is the same key (a retried CreateVolume).
    assert_eq!(client.create_key(&name).await.expect("again"), id);
    let key = client.get_key(&id).await.expect("get");
    assert_eq!(key.len(), 32);
    assert_eq!(format!("{key:?}"), "SecretKey(32 bytes, redacted)");

    client.revoke_key(&id).await.expect("revoke");
    let err = client.get_key(&id).await.expect_err("revoked");
    assert!(matches!(err, KmipError::KeyNotActive { .. }), "{err}");
    assert!(err.to_string().contains("not active"), "{err}");
    // A revoked key is not reused by name either.
    assert_ne!(client.create_key(&name).await.expect("new"), id);

    client.destroy_key(&id).await.expect("destroy");
    client.destroy_key(&id).await.expect("destroy twice");
    let err = client.get_key(&id).await.expect_err("destroyed");
    assert!(matches!(err, KmipError::KeyNotFound { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn a_server_that_is_down_is_unavailable_until_it_is_back() {
    let Some(kmip) = TestKmip::from_env() else {
        return;
    };
    let state = tempfile::tempdir().expect("tempdir");
    let own = kmip.own_server(state.path(), 15696);
    let client = KmipClient::new(&own.endpoint(), &kmip.credentials(), Duration::from_secs(3))
        .expect("client");
    let id = client.create_key(&unique("down")).await.expect("create");
    own.stop();
    let err = client.get_key(&id).await.expect_err("down");
    assert!(matches!(err, KmipError::Unavailable { .. }), "{err}");
    let status = tonic::Status::from(csi::CsiError::from(err));
    assert_eq!(status.code(), tonic::Code::Unavailable);
    own.start();
    assert_eq!(client.get_key(&id).await.expect("back").len(), 32);
}

#[tokio::test]
async fn a_client_certificate_the_server_does_not_trust_is_refused() {
    let Some(kmip) = TestKmip::from_env() else {
        return;
    };
    // The CA as the client's "certificate": it has no client key to match.
    let mut creds = kmip.credentials();
    creds.client_cert_pem = std::fs::read(&kmip.ca).expect("ca");
    let err = KmipClient::new(&kmip.endpoint, &creds, Duration::from_secs(3)).expect_err("bad");
    assert!(matches!(err, KmipError::Credentials { .. }), "{err}");
    let key_text = String::from_utf8_lossy(&creds.client_key_pem).to_string();
    assert!(!err.to_string().contains(key_text.trim()), "{err}");
}
