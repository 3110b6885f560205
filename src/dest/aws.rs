//! What every AWS destination shares: the region and credential options, loading the SDK
//! configuration (our retries, our timeouts), and classifying SDK errors that are not the
//! service's own answer (credentials, timeouts, connection errors).
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `region` | AWS region | the target's ARN region, else the AWS chain (`AWS_REGION`, profile) |
//! | `access_key_id`, `secret_access_key`, `session_token` | static credentials (give them as `env:` / `file:`) | the standard AWS chain (environment, profile, web identity, ECS/EC2 role) |
//! | `role_arn`, `external_id` | role assumed through STS on top of those credentials (cross-account delivery) | none |
//!
//! The SDK's own retries are disabled: the delivery engine owns retries (its backoff and
//! attempt counts survive restarts), so every throttle is visible to it and to metrics.

use std::fmt::Display;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use serde::Deserialize;

use super::failure::{error_chain, find_source, Failure, FailureClass};
use super::options::{RequestOptions, CONNECT_TIMEOUT};
use super::secrets::Secret;

/// Region and credential options of AWS destinations (see the module doc).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub role_arn: Option<String>,
    pub external_id: Option<Secret>,
}

impl AwsOptions {
    /// Load the SDK configuration: retries off, `request`'s timeout and endpoint, the region
    /// (`region`, else `fallback_region`, else the AWS chain), static credentials if given,
    /// and the assumed role on top. Does not contact AWS.
    pub async fn sdk_config(
        &self,
        request: &RequestOptions,
        fallback_region: Option<&str>,
        session_name: &str,
    ) -> Result<SdkConfig, String> {
        if self.external_id.is_some() && self.role_arn.is_none() {
            return Err("option `external_id` needs `role_arn`".into());
        }
        let timeout = request.timeout()?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(timeout)
                    .operation_timeout(timeout)
                    .build(),
            );
        if let Some(region) = self.region.as_deref().or(fallback_region) {
            loader = loader.region(Region::new(region.to_string()));
        }
        if let Some(endpoint) = &request.endpoint {
            loader = loader.endpoint_url(endpoint.as_str());
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(key_id), Some(secret)) => {
                let credentials = Credentials::new(
                    key_id.expose(),
                    secret.expose(),
                    self.session_token.as_ref().map(|t| t.expose().to_string()),
                    None,
                    "flagstream-options",
                );
                loader = loader.credentials_provider(credentials);
            }
            (None, None) => {}
            _ => {
                return Err(
                    "options `access_key_id` and `secret_access_key` go together".to_string(),
                )
            }
        }
        let sdk_config = loader.load().await;
        if sdk_config.region().is_none() {
            return Err(
                "no AWS region: add `?region=…`, use an ARN target, or set AWS_REGION".into(),
            );
        }
        let Some(role_arn) = &self.role_arn else {
            return Ok(sdk_config);
        };
        let mut provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
            .session_name(session_name)
            .configure(&sdk_config);
        if let Some(external_id) = &self.external_id {
            provider = provider.external_id(external_id.expose());
        }
        let provider = SharedCredentialsProvider::new(provider.build().await);
        Ok(sdk_config
            .into_builder()
            .credentials_provider(provider)
            .build())
    }
}

/// Classify any SDK error of a call to `target`; `service_error` classifies the service's
/// own answers (error code, message, HTTP status).
pub fn classify_sdk_error<E, R>(
    error: &SdkError<E, R>,
    target: &dyn Display,
    service_error: impl FnOnce(Option<&str>, Option<&str>, u16) -> Failure,
    status_of: impl FnOnce(&R) -> u16,
) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if let Some(credentials) = find_source::<CredentialsError>(error) {
        return classify_credentials_error(credentials, target);
    }
    match error {
        SdkError::ServiceError(service) => service_error(
            service.err().code(),
            service.err().message(),
            status_of(service.raw()),
        ),
        SdkError::TimeoutError(_) => Failure::retriable(format!("{target}: request timed out")),
        SdkError::DispatchFailure(_) => Failure::retriable(format!(
            "{target}: could not reach AWS: {}",
            error_chain(error)
        )),
        SdkError::ResponseError(_) => Failure::retriable(format!(
            "{target}: unreadable response: {}",
            error_chain(error)
        )),
        _ => Failure::permanent(format!(
            "{target}: request could not be built: {}",
            error_chain(error)
        )),
    }
}

/// A failure for a service's error answer, worded the same for every AWS destination:
/// `{target}: {what} ({code}, HTTP {status}): {message}`.
pub fn service_failure(
    target: &dyn Display,
    (code, message, http_status): (Option<&str>, Option<&str>, u16),
    class: FailureClass,
    what: &str,
) -> Failure {
    Failure::new(
        class,
        format!(
            "{target}: {what} ({}, HTTP {http_status}): {}",
            code.unwrap_or("unknown error"),
            message.unwrap_or("no message")
        ),
    )
}

/// Missing or rejected credentials are permanent; a provider that timed out or could not
/// reach STS / instance metadata is not.
pub fn classify_credentials_error(error: &CredentialsError, target: &dyn Display) -> Failure {
    let chain = error_chain(error);
    let retriable = match error {
        CredentialsError::ProviderTimedOut(_) => true,
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            false
        }
        // STS and instance-metadata failures: denied is permanent, unreachable is not.
        _ => ![
            "AccessDenied",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "not authorized",
        ]
        .iter()
        .any(|marker| chain.contains(marker)),
    };
    let reason = format!("{target}: AWS credentials: {chain}");
    if retriable {
        Failure::retriable(reason)
    } else {
        Failure::permanent(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn credential_failures_are_permanent_unless_transient() {
        let s = "Kinesis stream `s`";
        let missing = classify_credentials_error(
            &CredentialsError::not_loaded("no providers in chain provided credentials"),
            &s,
        );
        assert!(
            !missing.is_retriable() && missing.reason.contains("AWS credentials"),
            "{}",
            missing.reason
        );
        let timed_out = classify_credentials_error(
            &CredentialsError::provider_timed_out(Duration::from_secs(5)),
            &s,
        );
        assert!(timed_out.is_retriable());
        let denied = classify_credentials_error(
            &CredentialsError::provider_error(
                "AccessDenied: not authorized to perform sts:AssumeRole",
            ),
            &s,
        );
        assert!(!denied.is_retriable());
        let sts_down = classify_credentials_error(
            &CredentialsError::provider_error("dispatch failure: connection refused"),
            &s,
        );
        assert!(sts_down.is_retriable());
    }

    #[tokio::test]
    async fn option_pairs_are_checked_and_secrets_stay_hidden() {
        let secret = |value: &str| Some(Secret::new(value));
        for (options, needle) in [
            (
                AwsOptions {
                    external_id: secret("x"),
                    ..AwsOptions::default()
                },
                "role_arn",
            ),
            (
                AwsOptions {
                    access_key_id: secret("AKIDEXAMPLE"),
                    ..AwsOptions::default()
                },
                "secret_access_key",
            ),
        ] {
            let err = options
                .sdk_config(&RequestOptions::default(), Some("us-east-1"), "t")
                .await
                .unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        let full = AwsOptions {
            access_key_id: secret("AKIDEXAMPLE"),
            secret_access_key: secret("wJalrXUtnFEMI"),
            ..AwsOptions::default()
        };
        assert!(!format!("{full:?}").contains("wJalrXUtnFEMI"));
        full.sdk_config(&RequestOptions::default(), Some("us-east-1"), "t")
            .await
            .unwrap();
    }
}
