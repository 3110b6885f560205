//! From a stored record back to the request its sender made: the path under the endpoint,
//! which credential that path takes, and the sender's headers.
//!
//! Records stored with their request (stored header version 3) go to the path their sender
//! used; older records go to the path their format implies (`/bulk`, `/mobile/events/bulk`,
//! `/diagnostic`, or `/events/bulk/{clientSideId}` with the environment's client-side id).
//! The browser pixel (`GET /a/{id}.gif?d=…`) is forwarded as the equivalent
//! `POST /events/bulk/{id}` with the decoded events as body. go-feature-flag and generic
//! records did not come from a LaunchDarkly SDK: they are skipped.

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};

use crate::dest::environment_keys::KeyKind;
use crate::event::stored::StoredBatch;
use crate::event::InboundFormat;

/// What to do with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan<'a> {
    Forward(Forward<'a>),
    /// Not LaunchDarkly SDK traffic (go-feature-flag, generic): acknowledged, not sent.
    Skip,
}

/// Where a record goes and which credential it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward<'a> {
    /// The path under the endpoint (complete, or ending in `/` for [`Credential::PathId`]).
    pub path: Cow<'a, str>,
    pub credential: Credential,
}

/// How the request authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: <key>` with the environment's key of this kind.
    Header(KeyKind),
    /// The path already carries the client-side id (public: stored as received).
    InPath,
    /// Append the environment's client-side id to the path (older browser records).
    PathId,
}

/// The request for `stored`, or why it cannot be forwarded.
pub fn plan<'a>(stored: &StoredBatch<'a>) -> Result<Plan<'a>, String> {
    if matches!(
        stored.format,
        InboundFormat::GoffCollector | InboundFormat::Generic
    ) {
        return Ok(Plan::Skip);
    }
    let path = stored.request.path;
    if path.is_empty() {
        return Ok(Plan::Forward(implied_by_format(stored.format)));
    }
    sent_to(path).map(Plan::Forward)
}

/// The LaunchDarkly events path a sender used, as ingest's routes accept them.
fn sent_to(path: &str) -> Result<Forward<'_>, String> {
    let header = |kind| Forward {
        path: Cow::Borrowed(path),
        credential: Credential::Header(kind),
    };
    match path {
        "/bulk" | "/diagnostic" => return Ok(header(KeyKind::Server)),
        "/mobile" | "/mobile/events" | "/mobile/events/bulk" | "/mobile/events/diagnostic" => {
            return Ok(header(KeyKind::Mobile))
        }
        _ => {}
    }
    let in_path = ["/events/bulk/", "/events/diagnostic/"]
        .iter()
        .any(|prefix| path.strip_prefix(prefix).is_some_and(is_path_id));
    if in_path {
        return Ok(Forward {
            path: Cow::Borrowed(path),
            credential: Credential::InPath,
        });
    }
    match path
        .strip_prefix("/a/")
        .and_then(|rest| rest.strip_suffix(".gif"))
    {
        Some(id) if is_path_id(id) => Ok(Forward {
            path: Cow::Owned(format!("/events/bulk/{id}")),
            credential: Credential::InPath,
        }),
        _ => Err(format!(
            "stored request path `{path}` is not a LaunchDarkly events path"
        )),
    }
}

fn is_path_id(id: &str) -> bool {
    !id.is_empty() && !id.contains('/')
}

/// Records stored before request paths were kept: the path their format implies.
fn implied_by_format(format: InboundFormat) -> Forward<'static> {
    let (path, credential) = match format {
        InboundFormat::LdMobile => ("/mobile/events/bulk", Credential::Header(KeyKind::Mobile)),
        InboundFormat::LdBrowser => ("/events/bulk/", Credential::PathId),
        // Which SDK sent a diagnostic is not known: the server route takes it.
        InboundFormat::LdDiagnostic => ("/diagnostic", Credential::Header(KeyKind::Server)),
        _ => ("/bulk", Credential::Header(KeyKind::Server)),
    };
    Forward {
        path: Cow::Borrowed(path),
        credential,
    }
}

/// The sender's headers (and `authorization`, when the path takes a key in a header).
pub fn headers(stored: &StoredBatch<'_>, authorization: Option<&str>) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(key) = authorization {
        let mut value = HeaderValue::from_str(key)
            .map_err(|_| "the configured key is not valid in an HTTP header".to_string())?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let request = &stored.request;
    // Records from before version 3 kept one user agent (the SDK's own, if it sent one).
    let user_agent = match request.user_agent {
        "" => stored.user_agent.unwrap_or(""),
        sent => sent,
    };
    let schema = stored.schema_version.map(|version| version.to_string());
    let copied = [
        ("x-launchdarkly-payload-id", stored.payload_id.unwrap_or("")),
        (
            "x-launchdarkly-event-schema",
            schema.as_deref().unwrap_or(""),
        ),
        (USER_AGENT.as_str(), user_agent),
        ("x-launchdarkly-user-agent", request.ld_user_agent),
        ("x-launchdarkly-tags", stored.tags.unwrap_or("")),
        ("x-launchdarkly-wrapper", request.wrapper),
    ];
    for (name, value) in copied.into_iter().filter(|(_, value)| !value.is_empty()) {
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("stored `{name}` is not a valid header value"))?;
        headers.insert(HeaderName::from_static(name), value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::stored::RequestMeta;

    fn stored(format: InboundFormat, request: RequestMeta<'static>) -> StoredBatch<'static> {
        StoredBatch {
            format,
            instance_id: None,
            schema_version: Some(4),
            environment: "production",
            payload_id: Some("p-1"),
            tags: Some("application-id/shop"),
            user_agent: Some("AndroidClient/5"),
            request,
            body: b"[]",
        }
    }

    fn forward(format: InboundFormat, path: &'static str) -> Forward<'static> {
        let request = RequestMeta {
            path,
            ..RequestMeta::default()
        };
        match plan(&stored(format, request)).expect(path) {
            Plan::Forward(forward) => forward,
            Plan::Skip => panic!("{path} skipped"),
        }
    }

    #[test]
    fn every_events_route_goes_back_to_its_path_with_its_credential() {
        use InboundFormat::*;
        for (format, path, credential) in [
            (LdBulk, "/bulk", Credential::Header(KeyKind::Server)),
            (
                LdDiagnostic,
                "/diagnostic",
                Credential::Header(KeyKind::Server),
            ),
            (LdMobile, "/mobile", Credential::Header(KeyKind::Mobile)),
            (
                LdMobile,
                "/mobile/events/bulk",
                Credential::Header(KeyKind::Mobile),
            ),
            (
                LdDiagnostic,
                "/mobile/events/diagnostic",
                Credential::Header(KeyKind::Mobile),
            ),
            (LdBrowser, "/events/bulk/abc123", Credential::InPath),
            (
                LdDiagnostic,
                "/events/diagnostic/abc123",
                Credential::InPath,
            ),
        ] {
            let forward = forward(format, path);
            assert_eq!(
                (forward.path.as_ref(), forward.credential),
                (path, credential)
            );
        }
        let pixel = forward(LdBrowser, "/a/abc123.gif");
        assert_eq!(pixel.path, "/events/bulk/abc123");
        assert_eq!(pixel.credential, Credential::InPath);
    }

    #[test]
    fn older_records_go_where_their_format_points_and_others_are_skipped() {
        use InboundFormat::*;
        assert_eq!(forward(LdBulk, "").path, "/bulk");
        assert_eq!(forward(LdMobile, "").path, "/mobile/events/bulk");
        let browser = forward(LdBrowser, "");
        assert_eq!(
            (browser.path.as_ref(), browser.credential),
            ("/events/bulk/", Credential::PathId)
        );
        for format in [GoffCollector, Generic] {
            let request = RequestMeta {
                path: "/v1/events",
                ..RequestMeta::default()
            };
            assert_eq!(plan(&stored(format, request)), Ok(Plan::Skip));
        }
        let bad = stored(
            LdBulk,
            RequestMeta {
                path: "/admin",
                ..RequestMeta::default()
            },
        );
        assert!(plan(&bad).unwrap_err().contains("`/admin`"));
    }

    #[test]
    fn the_senders_headers_are_replayed() {
        let request = RequestMeta {
            path: "/mobile/events/bulk",
            credential: "",
            user_agent: "okhttp/4.12",
            ld_user_agent: "AndroidClient/5",
            wrapper: "ReactNative/10",
        };
        let sent = headers(&stored(InboundFormat::LdMobile, request), Some("mob-1")).unwrap();
        let get = |name: &str| sent.get(name).map(|v| v.to_str().unwrap());
        assert_eq!(get("authorization"), Some("mob-1"));
        assert!(sent["authorization"].is_sensitive());
        assert_eq!(get("x-launchdarkly-payload-id"), Some("p-1"));
        assert_eq!(get("x-launchdarkly-event-schema"), Some("4"));
        assert_eq!(get("user-agent"), Some("okhttp/4.12"));
        assert_eq!(get("x-launchdarkly-user-agent"), Some("AndroidClient/5"));
        assert_eq!(get("x-launchdarkly-tags"), Some("application-id/shop"));
        assert_eq!(get("x-launchdarkly-wrapper"), Some("ReactNative/10"));
        assert_eq!(get("content-type"), Some("application/json"));

        // An older record: its one stored user agent, nothing it did not keep.
        let old = headers(&stored(InboundFormat::LdBulk, RequestMeta::default()), None).unwrap();
        assert_eq!(old.get("user-agent").unwrap(), "AndroidClient/5");
        assert!(old.get("x-launchdarkly-wrapper").is_none());
        assert!(old.get("authorization").is_none());
    }
}
