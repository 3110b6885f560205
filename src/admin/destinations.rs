//! `POST /v1/destinations`, `PUT /v1/destinations/{name}`, `DELETE /v1/destinations/{name}`:
//! destinations created, changed and deleted while running (like LaunchDarkly's REST API for
//! Data Export destinations). The work is [`DestinationSet`]'s; this file maps HTTP to it.
//!
//! | request | answer |
//! |---|---|
//! | `POST` `{"name": "archive", "url": "file:///srv/export?rotate=1m"}` (or options as keys, like a `[[destination]]` table) | 201 + status (`"source": "api"`) |
//! | `PUT /{name}` same body (`name` optional) | 200 + status; the cursor stays |
//! | `DELETE /{name}` | 200 `{"deleted": name}`; the cursor is released |
//!
//! Errors: 400 `invalid_destination` (the detail names the option; nothing changed), 409
//! `conflict` (name in use) or `managed_by_config` (defined by `--dest`/`--config`), 404
//! `unknown_destination`, 413 `too_large` (body over [`MAX_BODY_BYTES`]).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;

use crate::delivery::destination_set::{DestinationSet, SetError};

use super::{error, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest request body: a destination's options are small.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `POST /v1/destinations` (`name` = `None`) or `PUT /v1/destinations/{name}`.
pub async fn create_or_update<B>(
    set: &DestinationSet,
    name: Option<&str>,
    request: Request<B>,
) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let body = match read_json(request).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let (result, success) = match name {
        None => (set.create(body).await, StatusCode::CREATED),
        Some(name) => (set.update(name, body).await, StatusCode::OK),
    };
    match result {
        Ok(status) => json(success, serde_json::json!(status)),
        Err(err) => refusal(err),
    }
}

pub async fn delete(set: &DestinationSet, name: &str) -> Response<Full<Bytes>> {
    match set.delete(name).await {
        Ok(()) => json(
            StatusCode::OK,
            serde_json::json!({"deleted": name, "cursor_released": true}),
        ),
        Err(err) => refusal(err),
    }
}

/// The body as JSON, or the error answer.
async fn read_json<B>(request: Request<B>) -> Result<serde_json::Value, Response<Full<Bytes>>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let bytes = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("a destination body is at most {MAX_BODY_BYTES} bytes"),
            ))
        }
        Err(err) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("reading the body: {err}"),
            ))
        }
    };
    serde_json::from_slice(&bytes).map_err(|err| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not JSON: {err}"),
        )
    })
}

fn refusal(err: SetError) -> Response<Full<Bytes>> {
    let (status, code) = match &err {
        SetError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_destination"),
        SetError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
        SetError::ManagedByConfig(_) => (StatusCode::CONFLICT, "managed_by_config"),
        SetError::Unknown(_) => (StatusCode::NOT_FOUND, "unknown_destination"),
        SetError::Store(_) | SetError::Delivery(_) => {
            tracing::error!(error = %err, "changing destinations failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "change_failed")
        }
    };
    error(status, code, err.to_string())
}
