//! Who may use the admin API: one bearer token (`--admin-token`).
//!
//! With a token configured, every admin route but the probes (`/healthz`, `/readyz`) needs
//! `Authorization: Bearer <token>`; `/metrics` does too unless `--admin-metrics-public` says
//! scrapers may read it without one. Without a token the API is open, which `ServeConfig`
//! allows only on a loopback listener.
//!
//! Invariants:
//! * the token itself is never kept: only its SHA-256 digest, so a heap dump or a `{:?}` of
//!   the configuration shows nothing usable;
//! * comparison is over the digests of the presented and the expected token, in time that
//!   does not depend on where they differ (the digest of an attacker's guess tells them nothing
//!   about the token's bytes, and the fold below does not stop at the first difference);
//! * a refusal says whether the token was missing or wrong, never what was expected.

use http::{header, HeaderMap};
use sha2::{Digest, Sha256};

use crate::dest::secrets::Secret;

/// Shortest accepted token: shorter ones are guessable over the network.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Which class of route a request is for, as far as access goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// `/healthz`, `/readyz`: load balancers and orchestrators probe without credentials.
    Probe,
    /// `/metrics`.
    Metrics,
    /// Everything else (destination state and control).
    Api,
}

impl RouteClass {
    /// The class of a request path.
    pub fn of(path: &str) -> Self {
        match path.trim_end_matches('/') {
            "/healthz" | "/readyz" => RouteClass::Probe,
            "/metrics" => RouteClass::Metrics,
            _ => RouteClass::Api,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this admin route needs `Authorization: Bearer <token>` (see --admin-token)")]
    MissingToken,
    #[error("the bearer token does not match --admin-token")]
    WrongToken,
}

/// The admin API's access rule. Cheap to clone.
#[derive(Clone, Default)]
pub struct AdminAuth {
    token_digest: Option<[u8; 32]>,
    metrics_public: bool,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.token_digest.map(|_| "***"))
            .field("metrics_public", &self.metrics_public)
            .finish()
    }
}

impl AdminAuth {
    /// No token: every route is open (loopback listeners only).
    pub fn open() -> Self {
        AdminAuth::default()
    }

    /// Require `token` on every route but the probes (and `/metrics` when `metrics_public`).
    pub fn with_token(token: &Secret, metrics_public: bool) -> Self {
        AdminAuth {
            token_digest: Some(digest(token.expose().as_bytes())),
            metrics_public,
        }
    }

    /// Is a token required at all?
    pub fn requires_token(&self) -> bool {
        self.token_digest.is_some()
    }

    /// Allow or refuse a request for a route of `class` with these headers.
    pub fn check(&self, class: RouteClass, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(expected) = &self.token_digest else {
            return Ok(());
        };
        let exempt = match class {
            RouteClass::Probe => true,
            RouteClass::Metrics => self.metrics_public,
            RouteClass::Api => false,
        };
        if exempt {
            return Ok(());
        }
        let presented = bearer_token(headers).ok_or(Refusal::MissingToken)?;
        if digests_equal(&digest(presented.as_bytes()), expected) {
            Ok(())
        } else {
            Err(Refusal::WrongToken)
        }
    }
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive, per RFC 9110).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compare every byte, whatever the first difference (see the module invariants).
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    const TOKEN: &str = "0123456789abcdef-admin";

    #[test]
    fn open_auth_allows_everything() {
        let auth = AdminAuth::open();
        assert!(!auth.requires_token());
        for class in [RouteClass::Probe, RouteClass::Metrics, RouteClass::Api] {
            assert_eq!(auth.check(class, &headers(None)), Ok(()));
        }
    }

    #[test]
    fn a_token_guards_the_api_but_not_the_probes() {
        let auth = AdminAuth::with_token(&Secret::new(TOKEN), false);
        assert_eq!(auth.check(RouteClass::Probe, &headers(None)), Ok(()));
        assert_eq!(
            auth.check(RouteClass::Api, &headers(None)),
            Err(Refusal::MissingToken)
        );
        assert_eq!(
            auth.check(RouteClass::Metrics, &headers(None)),
            Err(Refusal::MissingToken)
        );
        let good = format!("Bearer {TOKEN}");
        assert_eq!(auth.check(RouteClass::Api, &headers(Some(&good))), Ok(()));
        let lower = format!("bearer  {TOKEN} ");
        assert_eq!(auth.check(RouteClass::Api, &headers(Some(&lower))), Ok(()));
        for wrong in [
            "Bearer 0123456789abcdef-admiN",
            "Bearer 0123456789abcdef-admin-",
            &format!("Basic {TOKEN}"),
            "Bearer ",
        ] {
            assert!(
                auth.check(RouteClass::Api, &headers(Some(wrong))).is_err(),
                "{wrong}"
            );
        }
    }

    #[test]
    fn metrics_can_be_made_public() {
        let auth = AdminAuth::with_token(&Secret::new(TOKEN), true);
        assert_eq!(auth.check(RouteClass::Metrics, &headers(None)), Ok(()));
        assert_eq!(
            auth.check(RouteClass::Api, &headers(None)),
            Err(Refusal::MissingToken)
        );
    }

    #[test]
    fn routes_are_classified_by_path() {
        assert_eq!(RouteClass::of("/healthz"), RouteClass::Probe);
        assert_eq!(RouteClass::of("/readyz/"), RouteClass::Probe);
        assert_eq!(RouteClass::of("/metrics"), RouteClass::Metrics);
        assert_eq!(RouteClass::of("/v1/destinations"), RouteClass::Api);
        assert_eq!(RouteClass::of("/healthz/x"), RouteClass::Api);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let auth = AdminAuth::with_token(&Secret::new(TOKEN), false);
        assert!(!format!("{auth:?}").contains("0123"));
    }
}
