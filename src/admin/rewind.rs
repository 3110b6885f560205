//! `POST /v1/destinations/{name}/rewind` with `{"to": "<RFC 3339 time>" | <seq> | "earliest"}`:
//! move a destination's cursor back and deliver from there again
//! ([`Delivery::rewind`](crate::delivery::Delivery::rewind)).
//!
//! | answer | when |
//! |---|---|
//! | 200 `{destination, from, to, replay_from, status}` | rewound: events from `to` on are delivered again; reading restarts at the batch boundary `replay_from` ≤ `to` so batches keep their ids |
//! | 400 `invalid_rewind` | body not JSON, `to` missing or not a time / seq / `earliest`, a seq past the log's end |
//! | 404 `unknown_destination` | no such destination |
//! | 409 `before_earliest` | the target is older than the oldest stored record; names its seq and time |
//! | 409 `ahead_of_cursor` | the target is ahead of the destination's acked position |

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};

use super::{error, json, not_ready, unknown_destination};
use crate::delivery::rewind::RewindError;
use crate::delivery::start::{format_time, parse_time, RewindTo};
use crate::delivery::Delivery;
use crate::wal::Position;

/// Largest request body read (the JSON is a few dozen bytes).
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Answer a rewind request for `name`.
pub(super) async fn handle<B>(
    delivery: Option<&Delivery>,
    name: &str,
    body: B,
) -> Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(delivery) = delivery else {
        return not_ready("delivery has not started yet");
    };
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => return invalid(format!("reading the request body: {err}")),
    };
    let to = match parse_target(&bytes) {
        Ok(to) => to,
        Err(reason) => return invalid(reason),
    };
    match delivery.rewind(name, to).await {
        Ok(rewound) => super::json(
            StatusCode::OK,
            json!({
                "destination": name,
                "from": position(rewound.from),
                "to": position(rewound.to),
                "replay_from": position(rewound.replay_from),
                "status": delivery.status(name),
            }),
        ),
        Err(err) => refusal(name, err),
    }
}

/// The `to` of a request body.
fn parse_target(body: &[u8]) -> Result<RewindTo, String> {
    let expected = r#"expected {"to": "<RFC 3339 time>"}, {"to": <seq>} or {"to": "earliest"}"#;
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| format!("body is not JSON ({err}); {expected}"))?;
    match value.get("to") {
        Some(Value::String(text)) if text == "earliest" => Ok(RewindTo::Earliest),
        Some(Value::String(text)) => parse_time(text)
            .map(RewindTo::Time)
            .map_err(|err| format!("`to`: `{text}` is not an RFC 3339 time ({err}); {expected}")),
        Some(Value::Number(number)) => number
            .as_u64()
            .filter(|seq| *seq > 0)
            .map(RewindTo::Seq)
            .ok_or_else(|| format!("`to`: {number} is not a seq (a whole number from 1)")),
        Some(other) => Err(format!(
            "`to`: {other} is neither a time nor a seq; {expected}"
        )),
        None => Err(format!("`to` is missing; {expected}")),
    }
}

fn refusal(name: &str, err: RewindError) -> Response<Full<Bytes>> {
    let detail = err.to_string();
    match err {
        RewindError::UnknownDestination(_) => unknown_destination(name),
        RewindError::BeforeEarliest {
            first_seq,
            first_received_at_ms,
            ..
        } => json(
            StatusCode::CONFLICT,
            json!({
                "error": "before_earliest",
                "detail": detail,
                "earliest_seq": first_seq,
                "earliest_received_at": first_received_at_ms.map(format_time),
            }),
        ),
        RewindError::Ahead { .. } => error(StatusCode::CONFLICT, "ahead_of_cursor", detail),
        RewindError::BeyondEnd { .. } => invalid(detail),
        RewindError::Stopped => error(StatusCode::SERVICE_UNAVAILABLE, "stopping", detail),
        RewindError::Failed(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "rewind_failed", detail),
    }
}

fn invalid(detail: String) -> Response<Full<Bytes>> {
    error(StatusCode::BAD_REQUEST, "invalid_rewind", detail)
}

fn position(position: Position) -> Value {
    json!({"seq": position.seq, "event": position.event})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_name_the_problem() {
        assert_eq!(
            parse_target(br#"{"to": "earliest"}"#),
            Ok(RewindTo::Earliest)
        );
        assert_eq!(parse_target(br#"{"to": 42}"#), Ok(RewindTo::Seq(42)));
        assert_eq!(
            parse_target(br#"{"to": "2026-11-01T00:00:00Z"}"#),
            Ok(RewindTo::Time(1_793_491_200_000))
        );
        for (body, names) in [
            (&br#"{"to": "yesterday"}"#[..], "RFC 3339"),
            (br#"{"to": -1}"#, "not a seq"),
            (br#"{"to": 0}"#, "not a seq"),
            (br#"{"from": 1}"#, "`to` is missing"),
            (br#"{"to": [1]}"#, "neither"),
            (b"to=1", "not JSON"),
        ] {
            let err = parse_target(body).unwrap_err();
            assert!(err.contains(names), "{err}");
        }
    }
}
