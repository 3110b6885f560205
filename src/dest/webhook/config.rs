//! Webhook options: the destination's own block, the shared blocks, and the open-ended
//! `header.NAME` / `meta.NAME` options.

use std::collections::BTreeMap;

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use serde::Deserialize;

use crate::dest::http::HttpOptions;
use crate::dest::options::{OptionBlocks, OptionMap, RequestOptions, Size, TokenCredentials};
use crate::dest::secrets::Secret;
use crate::event::Schema;

use super::{IDEMPOTENCY_KEY, SIGNATURE_HEADER};

/// How a batch is written into one request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// go-feature-flag's webhook exporter envelope `{"meta":{…},"events":[…]}`.
    Gofeatureflag,
    /// A JSON array of mapped events.
    Json,
    /// One mapped event per line.
    Ndjson,
}

impl BodyFormat {
    /// `gofeatureflag` for the `gofeatureflag` schema (a go-feature-flag receiver works
    /// unchanged), `json` otherwise.
    pub fn default_for(schema: Schema) -> BodyFormat {
        match schema {
            Schema::GoFeatureFlag => BodyFormat::Gofeatureflag,
            _ => BodyFormat::Json,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            BodyFormat::Gofeatureflag | BodyFormat::Json => "application/json",
            BodyFormat::Ndjson => "application/x-ndjson",
        }
    }
}

/// The webhook's own options (see the module doc).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WebhookOptions {
    pub format: Option<BodyFormat>,
    pub secret: Option<Secret>,
    pub max_bytes: Option<Size>,
}

/// Everything a webhook takes from its options.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub own: WebhookOptions,
    pub request: RequestOptions,
    pub http: HttpOptions,
    pub credentials: TokenCredentials,
    /// `header.NAME=value`, as written.
    pub headers: BTreeMap<String, String>,
    /// `meta.NAME=value` for the go-feature-flag envelope.
    pub meta: BTreeMap<String, String>,
}

impl OptionBlocks for WebhookConfig {
    fn take(map: &mut OptionMap) -> Result<Self, String> {
        Ok(WebhookConfig {
            own: map.parse()?,
            request: map.parse()?,
            http: map.parse()?,
            credentials: map.parse()?,
            headers: map.take_prefixed("header.").0,
            meta: map.take_prefixed("meta.").0,
        })
    }
}

/// Headers flagstream computes per request; a `header.` option may not replace them.
const RESERVED: &[&str] = &[
    "content-length",
    "content-encoding",
    "host",
    "transfer-encoding",
    IDEMPOTENCY_KEY,
    SIGNATURE_HEADER,
];

/// The headers sent with every request: content type, authentication, custom headers.
pub fn static_headers(
    format: BodyFormat,
    credentials: &TokenCredentials,
    custom: &BTreeMap<String, String>,
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Some(auth) = authorization(credentials)? {
        headers.insert(AUTHORIZATION, auth);
    }
    for (name, value) in custom {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("option `header.{name}`: not a valid header name"))?;
        if RESERVED.contains(&header.as_str()) {
            return Err(format!(
                "option `header.{name}`: flagstream sets `{header}` itself"
            ));
        }
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| format!("option `header.{name}`: not a valid header value"))?;
        value.set_sensitive(header == AUTHORIZATION);
        headers.insert(header, value);
    }
    Ok(headers)
}

/// `Bearer <token>`, or `Basic` of `username:password`; never both.
fn authorization(credentials: &TokenCredentials) -> Result<Option<HeaderValue>, String> {
    let text = match credentials {
        TokenCredentials {
            token: Some(_),
            username: Some(_),
            ..
        } => return Err("give either `token` or `username`/`password`, not both".into()),
        TokenCredentials {
            token: Some(token), ..
        } => format!("Bearer {}", token.expose()),
        TokenCredentials {
            username: Some(user),
            password,
            ..
        } => crate::dest::http::basic_auth(user, password.as_ref().map_or("", Secret::expose)),
        TokenCredentials {
            password: Some(_), ..
        } => return Err("option `password` needs `username`".into()),
        _ => return Ok(None),
    };
    let mut value = HeaderValue::from_str(&text)
        .map_err(|_| "the credentials are not valid in an HTTP header".to_string())?;
    value.set_sensitive(true);
    Ok(Some(value))
}
