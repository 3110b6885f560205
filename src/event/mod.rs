//! The event model: every inbound format, stable event ids, routing filters and the output
//! schemas of the Data Export. Pure code: no I/O, no WAL, no async.
//!
//! ## Flow
//!
//! ```text
//! ingest:    body ──validate(format)──▶ event count | ValidationError (400 + code/detail)
//! delivery:  stored::decode(payload) ─▶ RecordContext + body
//!            decode(ctx, body, scratch) ─▶ events (+ invalid events → dead letters)
//!            filter.matches(ctx, event) ─▶ map_event(schema, …) ─▶ rows ─▶ destination
//!                                          event_id(ctx, index) ─▶ dedupe key
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`stored`] | the WAL record payload codec (metadata header + raw body) |
//! | `validate` | ingest-time shape checks per route (array of objects, collector envelope, NDJSON) |
//! | `syntax` | the one-pass fast accept `validate` tries first on event arrays (no copy, no tape) |
//! | `decode` | simd-json tape → [`Event`]s, normalisation of legacy/go-feature-flag forms |
//! | `id` | stable event ids ([`event_id`]) |
//! | `filter` | [`FilterConfig`] / [`Filter`]: kinds, environments, flags, experiments, contexts, metrics, sampling |
//! | `schema` | [`Schema`], [`ExportOptions`], [`map_event`]: launchdarkly, segment, mparticle, gofeatureflag, warehouse |
//! | `json` | tape navigation and the allocation-free JSON writer the schemas share |
//! | `number` | exact numbers: any RFC 8259 number accepted, exported with its digits |
//! | `verbatim` | which events can be copied as sent instead of rewritten from the tape |
//!
//! ## Invariants
//!
//! 1. Nothing here panics on any input: bodies, stored payloads and tapes from arbitrary bytes
//!    produce errors or invalid-event reports, never panics (fuzzed by `fuzz/event_decode`).
//! 2. A stored body is never modified: validation reads it in place or parses a private copy,
//!    decoding parses private copies.
//! 3. [`event_id`] is a pure function of the record (environment, payload id — or instance id
//!    and WAL seq — and index): the same accepted event gets the same id on every delivery,
//!    forever, and events accepted by different instances or data dirs never share an id.
//! 4. Unknown kinds and unknown fields survive decoding and pass through the schemas that
//!    carry whole events (`launchdarkly`, `gofeatureflag`); one bad event in a batch becomes an
//!    [`InvalidEvent`] (reason + JSON text) and never costs its neighbours.
//! 5. The hot path (decode → filter → map) allocates once per *record* (the tape, and for the
//!    pass-through schema the list of events it copies as sent), not per event: events share
//!    the tape through an `Arc`, rows are written into a reused buffer.
//!
//! Choices on ambiguous points of the formats (`default` value vs boolean, timestamp units,
//! legacy users, …) are documented in `docs/schemas.md`.

pub mod stored;

mod chunks;
mod decode;
mod filter;
mod id;
mod json;
mod number;
pub mod schema;
mod syntax;
mod validate;
mod verbatim;

pub use chunks::{array_parts, ArrayPart};
pub use decode::{ContextRef, DecodeScratch, Event, Origin, VerbatimText};
pub use filter::{Filter, FilterConfig, FILTER_PARAMS, KINDS_OFF_BY_DEFAULT};
pub use id::{write_event_id, EventIdText, InstanceId, EVENT_ID_LEN};
pub use schema::{ExportOptions, Schema, EXPORT_PARAMS};

/// Which inbound route/format a body arrived in. The code is stored in every WAL record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboundFormat {
    /// LaunchDarkly server-side `/bulk` (JSON array of events).
    LdBulk,
    /// LaunchDarkly mobile `/mobile*` (JSON array of events).
    LdMobile,
    /// LaunchDarkly browser `/events/bulk/{env}` and the `/a/{env}.gif` fallback.
    LdBrowser,
    /// LaunchDarkly `/diagnostic` (single JSON object; stored, never exported).
    LdDiagnostic,
    /// go-feature-flag `/v1/data/collector` (`{meta|metadata, events}`).
    GoffCollector,
    /// Generic `/v1/events` (JSON array of LaunchDarkly-style events, or NDJSON).
    Generic,
}

impl InboundFormat {
    pub fn code(self) -> u8 {
        match self {
            InboundFormat::LdBulk => 1,
            InboundFormat::LdMobile => 2,
            InboundFormat::LdBrowser => 3,
            InboundFormat::LdDiagnostic => 4,
            InboundFormat::GoffCollector => 5,
            InboundFormat::Generic => 6,
        }
    }
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => InboundFormat::LdBulk,
            2 => InboundFormat::LdMobile,
            3 => InboundFormat::LdBrowser,
            4 => InboundFormat::LdDiagnostic,
            5 => InboundFormat::GoffCollector,
            6 => InboundFormat::Generic,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            InboundFormat::LdBulk => "ld_bulk",
            InboundFormat::LdMobile => "ld_mobile",
            InboundFormat::LdBrowser => "ld_browser",
            InboundFormat::LdDiagnostic => "ld_diagnostic",
            InboundFormat::GoffCollector => "goff_collector",
            InboundFormat::Generic => "generic",
        }
    }
}

/// Why a body was refused at ingest. `code` is a stable machine-readable name.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{code}: {detail}")]
pub struct ValidationError {
    /// `malformed_json`, `wrong_shape`, `empty_body`, `missing_events`.
    pub code: &'static str,
    /// What is wrong and where (byte offset / line, array index, field name).
    pub detail: String,
}

/// Validate a body (already gunzipped) before it is stored; returns its event count.
/// Must not modify `body` (it is stored as received).
///
/// Shapes: `LdBulk`/`LdMobile`/`LdBrowser` — a JSON array of objects; `LdDiagnostic` — one
/// object (counts 0 events: diagnostics are never exported); `GoffCollector` — an object with
/// an `events` array of objects and optional `meta`/`metadata` object; `Generic` — a JSON array
/// of objects, NDJSON (one object per line), or a single object.
pub fn validate(format: InboundFormat, body: &[u8]) -> Result<u32, ValidationError> {
    validate::validate(format, body)
}

/// Facts about the record an event came from; needed for ids, filters and schemas.
#[derive(Debug, Clone, Copy)]
pub struct RecordContext<'a> {
    pub format: InboundFormat,
    pub environment: &'a str,
    pub payload_id: Option<&'a str>,
    pub schema_version: Option<u8>,
    /// WAL sequence number of the record (identity when no payload id was sent).
    pub seq: u64,
    pub received_at_ms: u64,
    /// The instance (data dir) that accepted the record, from its stored header; `None` for
    /// records stored before instance ids existed. Mixed into seq-derived ids (see [`event_id`]).
    pub instance_id: Option<InstanceId>,
}

/// An event that could not be understood, reported without losing its neighbours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEvent {
    pub index: u32,
    pub reason: String,
    /// The raw JSON text of the event (for the dead-letter store).
    pub raw: String,
}

/// Result of decoding one record.
pub struct DecodedRecord<'a> {
    /// Events in record order.
    pub events: Vec<Event<'a>>,
    /// Events that could not be understood, in record order.
    pub invalid: Vec<InvalidEvent>,
}

/// The whole record could not be decoded (not JSON, wrong top-level shape).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Decode a record's body. `scratch` receives a copy of `body` that simd-json parses in place;
/// events borrow from it and (their sent text, [`VerbatimText`]) from `body`. Every number
/// keeps the digits it was sent with.
pub fn decode<'s>(
    ctx: &RecordContext<'_>,
    body: &'s [u8],
    scratch: &'s mut DecodeScratch,
) -> Result<DecodedRecord<'s>, DecodeError> {
    decode::decode(ctx, body, scratch)
}

/// Whether a record of `format` whose body is `body` may be decoded a part at a time
/// ([`array_parts`] + [`decode_part`]): LaunchDarkly-style arrays (not the go-feature-flag
/// envelope, whose `meta` applies to every event, nor NDJSON or diagnostics).
pub fn decodes_in_parts(format: InboundFormat, body: &[u8]) -> bool {
    let array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    array
        && !matches!(
            format,
            InboundFormat::GoffCollector | InboundFormat::LdDiagnostic
        )
}

/// Decode one part of an array body (the bytes of [`ArrayPart::bytes`]): its events get
/// indexes from `first_index` on, exactly as [`decode`] of the whole body would give them.
pub fn decode_part<'s>(
    elements: &[u8],
    first_index: u32,
    scratch: &'s mut DecodeScratch,
) -> Result<DecodedRecord<'s>, DecodeError> {
    decode::decode_part(elements, first_index, scratch)
}

/// Stable id of an event: the same accepted event re-delivered always gets the same id, and
/// different events get different ids, across instances too. A hyphenated UUID (version 8)
/// derived from the environment, the payload id (or, when none was sent, the instance id and
/// the WAL seq) and the index; the scheme and its guarantee are documented in `id.rs` and
/// `docs/schemas.md`.
pub fn event_id(ctx: &RecordContext<'_>, index: u32) -> String {
    id::event_id(ctx, index)
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct MapError(pub String);

/// Map one event to `schema`, appending one or more complete JSON rows; `emit` is called once
/// per row with its bytes (usually one; multi-context warehouse rows and expanded summaries
/// give several; filtered-out kinds for a schema give none).
pub fn map_event(
    schema: Schema,
    options: &ExportOptions,
    ctx: &RecordContext<'_>,
    event: &Event<'_>,
    scratch: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<(), MapError> {
    schema::map_event(schema, options, ctx, event, scratch, emit)
}

/// [`map_event`] with the event's id already computed (`EventIdText::of(ctx, event.index())`).
pub fn map_event_with_id(
    schema: Schema,
    options: &ExportOptions,
    ctx: &RecordContext<'_>,
    event: &Event<'_>,
    id: &EventIdText,
    scratch: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<(), MapError> {
    schema::map_event_with_id(schema, options, ctx, event, id.as_str(), scratch, emit)
}
