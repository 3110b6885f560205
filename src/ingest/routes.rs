//! The route table: which paths exist, which methods they take, what format their bodies are
//! in and where their credential comes from.
//!
//! Routes mirror the LaunchDarkly events service (as implemented by ld-relay), the
//! go-feature-flag data collector, and one generic endpoint. Matching is exact (no trailing
//! slash tolerance, like ld-relay), allocation-free except for the path's environment id.

use http::Method;

use crate::event::InboundFormat;

use super::error::IngestError;

/// Where a route's credential is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: <key>` (an optional `api_key ` prefix is stripped), as LaunchDarkly
    /// server and mobile SDKs send it.
    SdkKey,
    /// The client-side environment id in the URL path (browser SDKs send no header).
    PathId(String),
    /// `Authorization: Bearer <key>`, `X-API-Key: <key>` or a bare `Authorization: <key>`.
    ApiKey,
}

/// What the request wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Store the body.
    Ingest,
    /// `GET /a/{env}.gif?d=<base64>`: store the decoded `d` parameter.
    Pixel,
    /// CORS preflight: answer with the CORS headers, store nothing.
    Preflight,
}

/// A matched route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Short stable name for metrics and logs.
    pub name: &'static str,
    pub format: InboundFormat,
    pub credential: Credential,
    pub action: Action,
    /// Browser routes answer with CORS headers.
    pub cors: bool,
}

/// Every route's name, for documentation and tests.
pub const ROUTE_NAMES: [&str; 10] = [
    "bulk",
    "diagnostic",
    "mobile",
    "mobile_diagnostic",
    "browser_bulk",
    "browser_diagnostic",
    "browser_pixel",
    "goff_collector",
    "events",
    "unknown",
];

impl Route {
    fn new(name: &'static str, format: InboundFormat, credential: Credential) -> Self {
        Route {
            name,
            format,
            credential,
            action: Action::Ingest,
            cors: false,
        }
    }
}

/// Match a request line against the table.
pub fn match_route(method: &Method, path: &str) -> Result<Route, IngestError> {
    let not_allowed = |allowed: &'static str| IngestError::MethodNotAllowed {
        method: method.to_string(),
        allowed,
    };
    let route = match path {
        "/bulk" => Route::new("bulk", InboundFormat::LdBulk, Credential::SdkKey),
        "/diagnostic" => Route::new(
            "diagnostic",
            InboundFormat::LdDiagnostic,
            Credential::SdkKey,
        ),
        "/mobile" | "/mobile/events" | "/mobile/events/bulk" => {
            Route::new("mobile", InboundFormat::LdMobile, Credential::SdkKey)
        }
        "/mobile/events/diagnostic" => Route::new(
            "mobile_diagnostic",
            InboundFormat::LdDiagnostic,
            Credential::SdkKey,
        ),
        "/v1/data/collector" => Route::new(
            "goff_collector",
            InboundFormat::GoffCollector,
            Credential::ApiKey,
        ),
        "/v1/events" => Route::new("events", InboundFormat::Generic, Credential::ApiKey),
        _ => return match_browser(method, path),
    };
    if method != Method::POST {
        return Err(not_allowed("POST"));
    }
    Ok(route)
}

fn match_browser(method: &Method, path: &str) -> Result<Route, IngestError> {
    let not_found = || IngestError::NotFound {
        method: method.to_string(),
        path: path.to_string(),
    };
    let not_allowed = |allowed: &'static str| IngestError::MethodNotAllowed {
        method: method.to_string(),
        allowed,
    };
    let (name, format, env_id) = if let Some(env) = path.strip_prefix("/events/bulk/") {
        ("browser_bulk", InboundFormat::LdBrowser, env)
    } else if let Some(env) = path.strip_prefix("/events/diagnostic/") {
        ("browser_diagnostic", InboundFormat::LdDiagnostic, env)
    } else if let Some(env) = path
        .strip_prefix("/a/")
        .and_then(|rest| rest.strip_suffix(".gif"))
    {
        if !valid_env_id(env) {
            return Err(not_found());
        }
        if method != Method::GET {
            return Err(not_allowed("GET"));
        }
        return Ok(Route {
            name: "browser_pixel",
            format: InboundFormat::LdBrowser,
            credential: Credential::PathId(env.to_string()),
            action: Action::Pixel,
            cors: true,
        });
    } else {
        return Err(not_found());
    };
    if !valid_env_id(env_id) {
        return Err(not_found());
    }
    let action = match *method {
        Method::POST => Action::Ingest,
        Method::OPTIONS => Action::Preflight,
        _ => return Err(not_allowed("POST, OPTIONS")),
    };
    Ok(Route {
        name,
        format,
        credential: Credential::PathId(env_id.to_string()),
        action,
        cors: true,
    })
}

/// Client-side ids are hex strings; accept any single non-empty path segment of sane length.
fn valid_env_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && !id.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(method: Method, path: &str) -> Route {
        match_route(&method, path).unwrap_or_else(|err| panic!("{method} {path}: {err}"))
    }

    #[test]
    fn every_launchdarkly_route_matches_with_its_format() {
        assert_eq!(ok(Method::POST, "/bulk").format, InboundFormat::LdBulk);
        assert_eq!(
            ok(Method::POST, "/diagnostic").format,
            InboundFormat::LdDiagnostic
        );
        for path in ["/mobile", "/mobile/events", "/mobile/events/bulk"] {
            assert_eq!(
                ok(Method::POST, path).format,
                InboundFormat::LdMobile,
                "{path}"
            );
        }
        assert_eq!(
            ok(Method::POST, "/mobile/events/diagnostic").format,
            InboundFormat::LdDiagnostic
        );
        let browser = ok(Method::POST, "/events/bulk/abc123");
        assert_eq!(browser.format, InboundFormat::LdBrowser);
        assert_eq!(browser.credential, Credential::PathId("abc123".into()));
        assert!(browser.cors);
        assert_eq!(
            ok(Method::OPTIONS, "/events/bulk/abc123").action,
            Action::Preflight
        );
        let pixel = ok(Method::GET, "/a/abc123.gif");
        assert_eq!(pixel.action, Action::Pixel);
        assert_eq!(pixel.credential, Credential::PathId("abc123".into()));
    }

    #[test]
    fn goff_and_generic_routes_use_api_keys() {
        let goff = ok(Method::POST, "/v1/data/collector");
        assert_eq!(goff.format, InboundFormat::GoffCollector);
        assert_eq!(goff.credential, Credential::ApiKey);
        assert_eq!(
            ok(Method::POST, "/v1/events").format,
            InboundFormat::Generic
        );
    }

    #[test]
    fn wrong_methods_and_unknown_paths_are_distinct_errors() {
        let err = match_route(&Method::GET, "/bulk").unwrap_err();
        assert_eq!(err.code(), "method_not_allowed");
        let err = match_route(&Method::DELETE, "/events/bulk/x").unwrap_err();
        assert_eq!(err.code(), "method_not_allowed");
        for path in [
            "/",
            "/bulk/",
            "/events/bulk/",
            "/events/bulk/a/b",
            "/a/.gif",
            "/nope",
        ] {
            let err = match_route(&Method::POST, path).unwrap_err();
            assert_eq!(err.code(), "not_found", "{path}");
        }
    }

    #[test]
    fn route_names_are_all_listed() {
        for (method, path) in [
            (Method::POST, "/bulk"),
            (Method::POST, "/diagnostic"),
            (Method::POST, "/mobile"),
            (Method::POST, "/mobile/events/diagnostic"),
            (Method::POST, "/events/bulk/e"),
            (Method::POST, "/events/diagnostic/e"),
            (Method::GET, "/a/e.gif"),
            (Method::POST, "/v1/data/collector"),
            (Method::POST, "/v1/events"),
        ] {
            assert!(ROUTE_NAMES.contains(&ok(method, path).name));
        }
    }
}
