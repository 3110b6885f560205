//! Authentication: read the credential a route expects and map it to an environment.
//!
//! The credential forms follow the senders: LaunchDarkly SDKs send the raw key in
//! `Authorization` (ld-relay also strips an `api_key ` prefix and refuses any other space),
//! browsers put the client-side id in the path, go-feature-flag sends `Authorization: Bearer`
//! or `X-API-Key`. Keys never appear in errors or logs.

use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::event::stored;

use super::environments::Environments;
use super::error::IngestError;
use super::routes::Credential;

/// The environment a request belongs to, or 401.
pub fn authenticate(
    environments: &Environments,
    credential: &Credential,
    headers: &HeaderMap,
) -> Result<Arc<str>, IngestError> {
    if environments.is_open() {
        return environments
            .lookup(None)
            .ok_or_else(|| IngestError::Unauthorized("no environment configured".into()));
    }
    let presented = match credential {
        Credential::PathId(id) => Some(id.as_str()),
        Credential::SdkKey => sdk_key(headers)?,
        Credential::ApiKey => api_key(headers)?,
    };
    let Some(key) = presented else {
        return Err(IngestError::Unauthorized(
            match credential {
                Credential::ApiKey => {
                    "missing credential: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
                }
                _ => "missing credential: send `Authorization: <sdk or mobile key>`",
            }
            .to_string(),
        ));
    };
    environments
        .lookup(Some(key))
        .ok_or_else(|| IngestError::Unauthorized("unknown credential".to_string()))
}

/// The fingerprint ([`stored::credential_fingerprint`]) of the key a request presented in a
/// header, stored in place of the key so that a forwarding destination can find the same key
/// in the configuration at send time. Empty for path ids (public, and kept in the stored
/// path) and when no readable key was sent (open mode accepts those).
pub fn credential_fingerprint(credential: &Credential, headers: &HeaderMap) -> String {
    let key = match credential {
        Credential::PathId(_) => None,
        Credential::SdkKey => sdk_key(headers).ok().flatten(),
        Credential::ApiKey => api_key(headers).ok().flatten(),
    };
    key.map(stored::credential_fingerprint).unwrap_or_default()
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, IngestError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|text| Some(text.trim()))
            .map_err(|_| IngestError::Unauthorized(format!("`{name}` is not valid text"))),
    }
}

fn sdk_key(headers: &HeaderMap) -> Result<Option<&str>, IngestError> {
    let Some(value) = header_str(headers, AUTHORIZATION.as_str())? else {
        return Ok(None);
    };
    let key = value.strip_prefix("api_key ").unwrap_or(value).trim();
    if key.is_empty() {
        return Ok(None);
    }
    if key.contains(char::is_whitespace) {
        return Err(IngestError::Unauthorized(
            "malformed Authorization header: expected the raw SDK key".to_string(),
        ));
    }
    Ok(Some(key))
}

fn api_key(headers: &HeaderMap) -> Result<Option<&str>, IngestError> {
    if let Some(key) = header_str(headers, "x-api-key")? {
        if !key.is_empty() {
            return Ok(Some(key));
        }
    }
    let Some(value) = header_str(headers, AUTHORIZATION.as_str())? else {
        return Ok(None);
    };
    let key = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => {
            return Err(IngestError::Unauthorized(
                "malformed Authorization header: expected `Bearer <key>`".to_string(),
            ))
        }
        None => value,
    };
    Ok((!key.is_empty()).then_some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn envs() -> Environments {
        Environments::parse_flags(&["prod=sdk-1,client-1,api-1".to_string()]).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn sdk_keys_with_and_without_prefix() {
        for value in ["sdk-1", "api_key sdk-1"] {
            let env = authenticate(
                &envs(),
                &Credential::SdkKey,
                &headers(&[("authorization", value)]),
            );
            assert_eq!(env.unwrap().as_ref(), "prod", "{value}");
        }
        let err = authenticate(
            &envs(),
            &Credential::SdkKey,
            &headers(&[("authorization", "Basic sdk-1")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
        let err = authenticate(&envs(), &Credential::SdkKey, &HeaderMap::new()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let err = authenticate(
            &envs(),
            &Credential::SdkKey,
            &headers(&[("authorization", "sdk-2")]),
        )
        .unwrap_err();
        assert_eq!(err.code(), "unauthorized");
        assert!(!err.to_string().contains("sdk-2"), "keys are not echoed");
    }

    #[test]
    fn api_keys_in_bearer_x_api_key_or_bare() {
        for pairs in [
            [("authorization", "Bearer api-1")],
            [("x-api-key", "api-1")],
            [("authorization", "api-1")],
        ] {
            let env = authenticate(&envs(), &Credential::ApiKey, &headers(&pairs)).unwrap();
            assert_eq!(env.as_ref(), "prod");
        }
    }

    #[test]
    fn path_ids_and_open_mode() {
        let env = authenticate(
            &envs(),
            &Credential::PathId("client-1".into()),
            &HeaderMap::new(),
        );
        assert_eq!(env.unwrap().as_ref(), "prod");
        assert!(authenticate(&envs(), &Credential::PathId("x".into()), &HeaderMap::new()).is_err());
        let open = Environments::open();
        let env = authenticate(&open, &Credential::SdkKey, &HeaderMap::new()).unwrap();
        assert_eq!(env.as_ref(), "default");
    }
}
