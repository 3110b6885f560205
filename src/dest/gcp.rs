//! What every Google Cloud destination shares: the credential options and the classification
//! of Google API errors (gRPC status, HTTP status, credentials, transport).
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `credentials_file` | path of a service-account key file (JSON) | Application Default Credentials |
//! | `credentials_json` | the service-account key itself; give it as `env:NAME` or `file:PATH` | — |
//!
//! A plain `http://` endpoint (an emulator) gets anonymous credentials: real tokens are never
//! sent in the clear.

use std::fmt::Display;

use google_cloud_auth::credentials::{anonymous, service_account, Credentials};
use google_cloud_gax::error::rpc::Code;
use serde::Deserialize;

use super::failure::{error_chain, find_source, Failure, FailureClass};
use super::options::Endpoint;
use super::secrets::Secret;

/// Credential options of Google Cloud destinations (see the module doc).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GoogleOptions {
    pub credentials_file: Option<String>,
    pub credentials_json: Option<Secret>,
}

impl GoogleOptions {
    /// The credentials to use: a key from the options, anonymous for a plain-HTTP endpoint,
    /// else `None` (Application Default Credentials).
    pub fn credentials(&self, plaintext_endpoint: bool) -> Result<Option<Credentials>, String> {
        match (&self.credentials_file, &self.credentials_json) {
            (Some(_), Some(_)) => {
                Err("give either `credentials_file` or `credentials_json`, not both".into())
            }
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|err| {
                    format!("option `credentials_file`: cannot read `{path}`: {err}")
                })?;
                service_account_key("credentials_file", &format!("`{path}`"), &text).map(Some)
            }
            (None, Some(json)) => {
                service_account_key("credentials_json", "the value", json.expose()).map(Some)
            }
            (None, None) if plaintext_endpoint => Ok(Some(anonymous::Builder::new().build())),
            (None, None) => Ok(None),
        }
    }
}

/// Parse a service-account key; errors name the option and `what` (a path, never the key).
fn service_account_key(option: &str, what: &str, text: &str) -> Result<Credentials, String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|err| {
        format!(
            "option `{option}`: {what} is not JSON (line {})",
            err.line()
        )
    })?;
    match json.get("type").and_then(|t| t.as_str()) {
        Some("service_account") => {}
        other => {
            return Err(format!(
                "option `{option}`: {what} has type {other:?}; expected a service-account key \
                 (\"type\": \"service_account\"); for other credential kinds use \
                 GOOGLE_APPLICATION_CREDENTIALS"
            ))
        }
    }
    service_account::Builder::new(json)
        .build()
        .map_err(|err| format!("option `{option}`: {what}: {err}"))
}

/// Like Google's client libraries: an emulator variable (`PUBSUB_EMULATOR_HOST`,
/// `STORAGE_EMULATOR_HOST`) set to `host:port` or a URL means "talk to the emulator there".
pub fn emulator_endpoint(variable: &str) -> Result<Option<Endpoint>, String> {
    match std::env::var(variable) {
        Ok(host) if !host.is_empty() => emulator_url(&host)
            .map(Some)
            .map_err(|err| format!("{variable}: {err}")),
        _ => Ok(None),
    }
}

/// `host:port` means plain HTTP (emulators do not speak TLS); a URL is taken as it is.
pub fn emulator_url(host: &str) -> Result<Endpoint, String> {
    if host.contains("://") {
        host.parse()
    } else {
        format!("http://{host}").parse()
    }
}

/// Classify a gRPC status code returned by a Google API for `target`.
pub fn classify_status(code: Code, message: &str, target: &dyn Display) -> Failure {
    use FailureClass::{Permanent, Retriable, Throttled};
    let failure = |class, what: &str| {
        Failure::new(
            class,
            format!("{target}: {what} ({}): {message}", code.name()),
        )
    };
    match code {
        Code::ResourceExhausted => failure(Throttled, "throttled"),
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled => failure(Retriable, "temporarily unavailable"),
        Code::NotFound => failure(Permanent, "not found"),
        Code::PermissionDenied => failure(Permanent, "permission denied"),
        Code::Unauthenticated => failure(Permanent, "bad credentials"),
        _ => failure(Permanent, "rejected"),
    }
}

/// Classify any error of a Google Cloud client (`google_cloud_gax` errors) for `target`.
pub fn classify_error(error: &google_cloud_gax::error::Error, target: &dyn Display) -> Failure {
    if let Some(status) = error.status() {
        return classify_status(status.code, &status.message, target);
    }
    let text = error_chain(error);
    if error.is_authentication() {
        let transient = find_source::<google_cloud_gax::error::CredentialsError>(error)
            .is_some_and(|credentials| credentials.is_transient());
        let reason = format!("{target}: Google credentials: {text}");
        return if transient {
            Failure::retriable(reason)
        } else {
            Failure::permanent(reason)
        };
    }
    if let Some(status) = error.http_status_code() {
        let class = super::http::classify_status_code(status);
        return Failure::new(class, format!("{target}: HTTP {status}: {text}"));
    }
    // Timeouts, connection and transport errors, and anything unrecognised: trying again is
    // bounded by the engine's retry schedule, so err on the side of not dead-lettering.
    Failure::retriable(format!("{target}: could not reach Google Cloud: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use google_cloud_gax::error::CredentialsError;

    const TOPIC: &str = "Pub/Sub topic `projects/acme-project/topics/flag-events`";

    #[test]
    fn statuses_are_classified() {
        let missing = classify_status(Code::NotFound, "Topic not found", &TOPIC);
        assert!(!missing.is_retriable());
        assert!(
            missing
                .reason
                .contains("projects/acme-project/topics/flag-events")
                && missing.reason.contains("not found"),
            "{}",
            missing.reason
        );
        assert!(classify_status(Code::ResourceExhausted, "quota", &TOPIC).is_throttled());
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::Aborted,
        ] {
            let failure = classify_status(code, "", &TOPIC);
            assert_eq!(failure.class, FailureClass::Retriable, "{code:?}");
        }
        for code in [
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::InvalidArgument,
        ] {
            assert!(
                !classify_status(code, "", &TOPIC).is_retriable(),
                "{code:?}"
            );
        }
    }

    #[test]
    fn transport_and_credential_errors_are_classified() {
        use google_cloud_gax::error::Error;
        let bad = Error::authentication(CredentialsError::from_msg(false, "invalid_grant"));
        let failure = classify_error(&bad, &TOPIC);
        assert!(
            !failure.is_retriable() && failure.reason.contains("credentials"),
            "{}",
            failure.reason
        );
        let flaky =
            Error::authentication(CredentialsError::from_msg(true, "metadata server timeout"));
        assert!(classify_error(&flaky, &TOPIC).is_retriable());
        assert!(classify_error(&Error::io("connection refused"), &TOPIC).is_retriable());
        let throttled = Error::http(429, Default::default(), Bytes::new());
        assert!(classify_error(&throttled, &TOPIC).is_throttled());
        let forbidden = Error::http(403, Default::default(), Bytes::new());
        assert!(!classify_error(&forbidden, &TOPIC).is_retriable());
    }

    #[test]
    fn credentials_must_be_a_service_account_key_and_errors_hide_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.json");
        std::fs::write(&path, r#"{"type":"authorized_user","secret":"abc"}"#).unwrap();
        let from_file = GoogleOptions {
            credentials_file: Some(path.display().to_string()),
            ..GoogleOptions::default()
        };
        let err = from_file.credentials(false).unwrap_err();
        assert!(
            err.contains("service_account") && err.contains("credentials_file"),
            "{err}"
        );
        let missing = GoogleOptions {
            credentials_file: Some("/nonexistent/key.json".into()),
            ..GoogleOptions::default()
        };
        let err = missing.credentials(false).unwrap_err();
        assert!(err.contains("/nonexistent/key.json"), "{err}");
        let inline = GoogleOptions {
            credentials_json: Some(Secret::new(r#"{"type":"x","private_key":"TOPSECRET"}"#)),
            ..GoogleOptions::default()
        };
        let err = inline.credentials(false).unwrap_err();
        assert!(
            err.contains("credentials_json") && !err.contains("TOPSECRET"),
            "{err}"
        );
        assert!(!format!("{inline:?}").contains("TOPSECRET"));
        let anonymous = GoogleOptions::default().credentials(true).unwrap();
        assert!(anonymous.is_some());
        assert!(GoogleOptions::default()
            .credentials(false)
            .unwrap()
            .is_none());
    }
}
