//! The event model. CONTRACT SKELETON — the event-model owner replaces the bodies (and this
//! doc with the real module doc) but keeps every public item below, because `ingest` and
//! `delivery` are written against them. Pure code: no I/O, no WAL.
#![allow(unused_variables, dead_code)]

pub mod stored;

use std::str::FromStr;

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
    /// `malformed_json`, `wrong_shape`, `empty_body`, …
    pub code: &'static str,
    pub detail: String,
}

/// Validate a body (already gunzipped) before it is stored; returns its event count.
/// Must not modify `body` (it is stored as received).
pub fn validate(format: InboundFormat, body: &[u8]) -> Result<u32, ValidationError> {
    todo!()
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
}

/// A decoded event borrowing from the record's scratch buffer.
pub struct Event<'a> {
    _borrow: std::marker::PhantomData<&'a ()>,
}

impl<'a> Event<'a> {
    /// Index of the event inside its record (array index / NDJSON line).
    pub fn index(&self) -> u32 {
        todo!()
    }
    /// `feature`, `custom`, `tracking`, … as sent (unknown kinds preserved).
    pub fn kind(&self) -> &str {
        todo!()
    }
    /// Flag key (feature/debug), metric key (custom/click/pageview), event key (tracking).
    pub fn key(&self) -> Option<&str> {
        todo!()
    }
    /// The key used for partitioning and sampling: the `user` context's key if present,
    /// else the first context's key, else the legacy `userKey`.
    pub fn context_key(&self) -> Option<&str> {
        todo!()
    }
    pub fn creation_date_ms(&self) -> Option<u64> {
        todo!()
    }
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
    pub events: Vec<Event<'a>>,
    pub invalid: Vec<InvalidEvent>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Decode a record's body. `scratch` receives a copy of `body` that simd-json parses in place;
/// events borrow from it.
pub fn decode<'s>(
    ctx: &RecordContext<'_>,
    body: &[u8],
    scratch: &'s mut Vec<u8>,
) -> Result<DecodedRecord<'s>, DecodeError> {
    todo!()
}

/// Stable id of an event: the same accepted event re-delivered always gets the same id.
pub fn event_id(ctx: &RecordContext<'_>, index: u32) -> String {
    todo!()
}

/// Per-destination routing filter settings (TOML table or `--dest` query parameters).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {}

impl FilterConfig {
    /// Parse the filter-related query parameters of a `--dest` URL; returns the parameters it
    /// did not recognise so the destination can use or reject them.
    pub fn from_query<'q>(
        params: &[(&'q str, &'q str)],
    ) -> Result<(Self, Vec<(&'q str, &'q str)>), String> {
        todo!()
    }
}

/// A compiled filter.
#[derive(Debug, Clone)]
pub struct Filter {}

impl Filter {
    pub fn new(config: &FilterConfig) -> Result<Self, String> {
        todo!()
    }
    pub fn matches(&self, ctx: &RecordContext<'_>, event: &Event<'_>) -> bool {
        todo!()
    }
}

/// Output schemas of the Data Export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schema {
    #[default]
    LaunchDarkly,
    Segment,
    MParticle,
    GoFeatureFlag,
    Warehouse,
}

impl FromStr for Schema {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        todo!()
    }
}

impl Schema {
    pub fn name(self) -> &'static str {
        todo!()
    }
}

/// Settings that schemas need beyond the event (project name, mParticle identity type, …).
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    pub project: String,
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
    todo!()
}
