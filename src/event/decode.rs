//! Delivery-time decoding: one stored record body → a list of [`Event`]s.
//!
//! ## How a record is decoded
//!
//! 1. The body is copied into the caller's [`DecodeScratch`] (simd-json unescapes strings in
//!    place; the stored body itself is never touched). NDJSON bodies are rewritten into one JSON
//!    array first (`[line,line,…]`) so every format ends up as *one* tape.
//! 2. simd-json builds the tape (stage-1 SIMD scan + stage-2 tape) with thread-local parser
//!    buffers, so the only per-record allocation is the tape itself, shared by all events of
//!    the record through an `Arc` (one allocation per record, none per event). Numbers keep
//!    their digits: bodies with fractions, exponents or numbers beyond 64 bits also get a side
//!    table of number texts, and numbers simd-json refuses are parsed through placeholders
//!    (`super::number`).
//! 3. With [`VerbatimText`] on (the pass-through schema), each top-level element that can be
//!    copied as sent is noted (`super::verbatim`); [`Event::verbatim`] points into the body
//!    itself (or, for NDJSON and parts of huge records, into the pristine array text built
//!    from them), which outlives the events.
//! 4. One pass over each event object's keys fills the handful of slots everyone needs
//!    (`kind`, `key`, `creationDate`, context sources) and checks their types. An event whose
//!    required fields have the wrong type goes to [`DecodedRecord::invalid`] with the reason and
//!    its JSON text; its neighbours are unaffected.
//!
//! ## Normalisation (one model for all inbound forms)
//!
//! * Contexts come from `context` (single or multi-kind), else `contextKeys`, else the legacy
//!   `user` object / `userKey` (schema ≤ 3; `contextKind: "anonymousUser"` marks anonymity),
//!   else go-feature-flag's `userKey` + `contextKind`. [`Event::for_each_context`] hides the
//!   difference.
//! * Timestamps: [`Event::creation_date_ms`] is always Unix milliseconds. LaunchDarkly sends
//!   ms. go-feature-flag sends seconds but some providers send ms; like the collector, any value
//!   above `9_999_999_999` is taken as ms, anything else as seconds.
//! * go-feature-flag: a missing `kind` means `feature` (the collector routes anything that is
//!   not `tracking` as a feature event); request `meta` (or `metadata`) overrides each event's
//!   `metadata`, as the collector does.
//!
//! Unknown kinds and unknown fields are kept: the event keeps a handle on its whole object
//! and schemas that pass fields through copy it from the tape.

use std::cell::RefCell;
use std::sync::Arc;

use simd_json::{Buffers, Node};

use super::json::{self, Doc, Nodes};
use super::number;
use super::verbatim;
use super::{DecodeError, DecodedRecord, InboundFormat, InvalidEvent, RecordContext};

/// Reusable buffers for [`super::decode`]; decoded events borrow from it.
#[derive(Debug, Default)]
pub struct DecodeScratch {
    /// The copy of the body simd-json parses in place.
    bytes: Vec<u8>,
    /// The copy parsed instead when simd-json refused a number (placeholders in place of the
    /// refused numbers); untouched otherwise.
    fallback: Vec<u8>,
    /// The pristine text the parsed copy came from when it is not the body: NDJSON bodies
    /// rewritten as one JSON array, or the elements of a huge record's part in brackets.
    joined: Vec<u8>,
    /// Whether events note their sent text ([`Event::verbatim`]; costs a pass over the tape,
    /// worth it only for schemas that pass events through).
    verbatim: VerbatimText,
}

/// Whether decoded events carry the text they were sent as ([`Event::verbatim`]), and what
/// the consumer needs besides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VerbatimText {
    /// Events are only read from the tape (every schema but the pass-through one).
    #[default]
    Off,
    /// Events carry their sent text where copying it is exact.
    Keep,
    /// As `Keep`, for a consumer that writes nothing of a verbatim event from the tape (the
    /// `launchdarkly` envelope without summary expansion): when every event of a record is
    /// verbatim, the exact texts of its numbers are not collected (nobody would write them),
    /// and an invalid event's reported text is its sent text.
    KeepWithoutNumberTexts,
}

impl DecodeScratch {
    /// Scratch whose decoded events carry their sent text as `verbatim` says.
    pub fn with_verbatim(verbatim: VerbatimText) -> Self {
        DecodeScratch {
            verbatim,
            ..DecodeScratch::default()
        }
    }
}

/// go-feature-flag: timestamps above this are milliseconds (the collector's rule).
pub(crate) const GOFF_SECONDS_LIMIT: u64 = 9_999_999_999;

/// Where an event came from; decides field names and normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A LaunchDarkly-style event (any schema version, any LD route, generic route).
    LaunchDarkly,
    /// A go-feature-flag collector event.
    GoFeatureFlag,
}

/// A decoded event: the record's tape plus the index of this event's object, and the fields
/// every consumer needs, extracted once. Cheap to clone (one `Arc` increment); `Send + Sync`.
#[derive(Clone)]
pub struct Event<'a> {
    pub(crate) tape: Arc<Doc<'a>>,
    /// Tape index of the event object.
    pub(crate) node: usize,
    pub(crate) index: u32,
    pub(crate) origin: Origin,
    pub(crate) kind: &'a str,
    pub(crate) key: Option<&'a str>,
    pub(crate) creation_date_ms: Option<u64>,
    pub(crate) context_key: Option<&'a str>,
    pub(crate) context: Option<usize>,
    pub(crate) context_keys: Option<usize>,
    pub(crate) user: Option<usize>,
    pub(crate) user_key: Option<&'a str>,
    /// `contextKind` (legacy LD and go-feature-flag: `user` / `anonymousUser`).
    pub(crate) context_kind: Option<&'a str>,
    /// go-feature-flag request `meta`/`metadata` (overrides the event's own `metadata`).
    pub(crate) goff_meta: Option<usize>,
    /// Whether `reason.inExperiment` is `true`.
    pub(crate) in_experiment: bool,
    /// The event object's text as sent, when copying it reproduces the tape's rewrite byte
    /// for byte and it has no `id` of its own (`super::verbatim`); set only when decoding
    /// with [`VerbatimText`] on.
    pub(crate) verbatim: Option<&'a [u8]>,
}

impl std::fmt::Debug for Event<'_> {
    /// The summary fields, not the whole tape of the record.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("index", &self.index)
            .field("origin", &self.origin)
            .field("kind", &self.kind)
            .field("key", &self.key)
            .field("context_key", &self.context_key)
            .field("creation_date_ms", &self.creation_date_ms)
            .finish_non_exhaustive()
    }
}

/// One context an event refers to (a member of a multi-context, a `contextKeys` entry, or
/// the legacy user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextRef<'a> {
    /// Context kind (`user`, `org`, …). Legacy users are `user`.
    pub kind: &'a str,
    pub key: &'a str,
    /// Whether the context is marked anonymous (`anonymous: true`, or `anonymousUser`).
    pub anonymous: bool,
    /// Tape index of the context's attribute object, when the event carried one.
    pub(crate) attributes: Option<usize>,
}

impl<'a> Event<'a> {
    /// Index of the event inside its record (array index / NDJSON line).
    pub fn index(&self) -> u32 {
        self.index
    }
    /// `feature`, `custom`, `tracking`, … as sent (unknown kinds preserved).
    pub fn kind(&self) -> &str {
        self.kind
    }
    /// Flag key (feature/debug), metric key (custom/click/pageview), event key (tracking).
    pub fn key(&self) -> Option<&str> {
        self.key
    }
    /// The key used for partitioning and sampling: the `user` context's key if present,
    /// else the first context's key, else the legacy `userKey`.
    pub fn context_key(&self) -> Option<&str> {
        self.context_key
    }
    /// Creation time in Unix milliseconds (go-feature-flag seconds are converted).
    pub fn creation_date_ms(&self) -> Option<u64> {
        self.creation_date_ms
    }
    /// Which inbound family the event came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }
    /// `reason.inExperiment == true`.
    pub fn in_experiment(&self) -> bool {
        self.in_experiment
    }
    /// The event's compact JSON text as received (field order kept; whitespace dropped).
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        json::write_value(&mut out, &self.tape, self.node);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Call `f` for every context the event refers to, in the order sent.
    pub fn for_each_context(&self, mut f: impl FnMut(ContextRef<'a>)) {
        let nodes: &Nodes<'a> = &self.tape;
        if let Some(context) = self.context {
            match json::get(nodes, context, "kind").and_then(|k| json::as_str(nodes, k)) {
                Some("multi") => {
                    for (kind, member) in json::object_iter(nodes, context) {
                        if kind == "kind" {
                            continue;
                        }
                        if let Some(c) = context_from_object(nodes, kind, member) {
                            f(c);
                        }
                    }
                }
                kind => {
                    if let Some(c) = context_from_object(nodes, kind.unwrap_or("user"), context) {
                        f(c);
                    }
                }
            }
        } else if let Some(keys) = self.context_keys {
            for (kind, value) in json::object_iter(nodes, keys) {
                if let Some(key) = json::as_str(nodes, value) {
                    f(ContextRef {
                        kind,
                        key,
                        anonymous: false,
                        attributes: None,
                    });
                }
            }
        } else if let Some(user) = self.user {
            if let Some(mut c) = context_from_object(nodes, "user", user) {
                c.anonymous |= self.context_kind == Some("anonymousUser");
                f(c);
            }
        } else if let Some(key) = self.user_key {
            f(ContextRef {
                kind: "user",
                key,
                anonymous: self.context_kind == Some("anonymousUser"),
                attributes: None,
            });
        }
    }

    /// Tape index of a top-level field of the event.
    pub(crate) fn field(&self, name: &str) -> Option<usize> {
        json::get(&self.tape, self.node, name)
    }

    pub(crate) fn nodes(&self) -> &Doc<'a> {
        &self.tape
    }
}

fn context_from_object<'a>(nodes: &Nodes<'a>, kind: &'a str, obj: usize) -> Option<ContextRef<'a>> {
    let key = json::get(nodes, obj, "key").and_then(|k| json::as_str(nodes, k))?;
    let anonymous = json::get(nodes, obj, "anonymous")
        .and_then(|a| json::as_bool(nodes, a))
        .unwrap_or(false);
    Some(ContextRef {
        kind,
        key,
        anonymous,
        attributes: Some(obj),
    })
}

/// A non-blank NDJSON line.
pub(crate) struct Line<'b> {
    /// 1-based line number in the body (for error messages).
    pub(crate) number: usize,
    /// Byte offset of the line in the body.
    pub(crate) start: usize,
    pub(crate) text: &'b [u8],
}

/// Non-blank lines of an NDJSON body (`\n` or `\r\n` separated).
pub(crate) fn ndjson_lines(body: &[u8]) -> impl Iterator<Item = Line<'_>> {
    let mut start = 0;
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(move |(i, text)| {
            let line = Line {
                number: i + 1,
                start,
                text,
            };
            start += text.len() + 1;
            line
        })
        .filter(|line| !line.text.iter().all(u8::is_ascii_whitespace))
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// Parse `source` (the JSON document) into a [`Doc`], with thread-local parser buffers.
/// `bytes` and `fallback` are the copies simd-json parses in place (see [`DecodeScratch`]).
/// Unless `verbatim` is off, the document also notes which array elements can be copied as
/// sent (and, with [`VerbatimText::KeepWithoutNumberTexts`], skips number texts when all can).
fn parse<'s>(
    source: &[u8],
    bytes: &'s mut Vec<u8>,
    fallback: &'s mut Vec<u8>,
    verbatim: VerbatimText,
) -> Result<Doc<'s>, simd_json::Error> {
    // Placeholders keep every offset, so the indexes of either parse index `source`.
    let note_verbatim = |doc: &mut Doc<'s>, structurals: &[u32]| {
        if verbatim == VerbatimText::Off {
            return true;
        }
        doc.verbatim = verbatim::array_elements(source, structurals, &doc.nodes);
        let all_verbatim = !doc.verbatim.is_empty() && doc.verbatim.iter().all(Option::is_some);
        verbatim == VerbatimText::Keep || !all_verbatim
    };
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => {
            number::parse_exact(source, bytes, fallback, &mut buffers, note_verbatim)
        }
        Err(_) => {
            let mut buffers = Buffers::new(source.len());
            number::parse_exact(source, bytes, fallback, &mut buffers, note_verbatim)
        }
    })
}

/// See [`super::decode`].
pub(crate) fn decode<'s>(
    ctx: &RecordContext<'_>,
    body: &'s [u8],
    scratch: &'s mut DecodeScratch,
) -> Result<DecodedRecord<'s>, DecodeError> {
    let DecodeScratch {
        bytes,
        fallback,
        joined,
        verbatim: mode,
    } = scratch;
    let mode = *mode;
    let mut invalid = Vec::new();
    // Event indices of NDJSON lines that made it into the scratch array (None: identity).
    let mut ndjson_indices: Option<Vec<u32>> = None;
    let parse_joined = match ctx.format {
        InboundFormat::LdDiagnostic => {
            return Ok(DecodedRecord {
                events: Vec::new(),
                invalid,
            })
        }
        InboundFormat::Generic if !starts_with(body, b'[') => {
            ndjson_indices = Some(ndjson_to_array(body, joined, &mut invalid));
            true
        }
        // Verbatim events point into the body itself: it outlives them.
        _ => false,
    };
    let joined: &'s [u8] = joined;
    let source = if parse_joined { joined } else { body };
    let tape = parse(source, bytes, fallback, mode)
        .map_err(|e| DecodeError(format!("invalid JSON: {e}")))?;
    let tape = Arc::new(tape);
    let nodes: &Doc<'s> = &tape;

    let (origin, events_array, goff_meta) = match ctx.format {
        InboundFormat::GoffCollector => {
            if !json::is_object(nodes, 0) {
                return Err(DecodeError(format!(
                    "expected a collector object, found {}",
                    json::type_name(nodes, 0)
                )));
            }
            let events = json::get(nodes, 0, "events")
                .filter(|&e| json::is_array(nodes, e))
                .ok_or_else(|| DecodeError("collector body has no `events` array".into()))?;
            let meta = json::get(nodes, 0, "meta")
                .or_else(|| json::get(nodes, 0, "metadata"))
                .filter(|&m| json::is_object(nodes, m));
            (Origin::GoFeatureFlag, events, meta)
        }
        _ => {
            if json::is_object(nodes, 0) && ndjson_indices.is_some() {
                // A single multi-line object posted to the generic route.
                let mut events = Vec::with_capacity(1);
                match extract(&tape, 0, 0, Origin::LaunchDarkly, None, None) {
                    Ok(event) => events.push(event),
                    Err(reason) => invalid.push(invalid_event(nodes, 0, 0, reason, None)),
                }
                return Ok(DecodedRecord { events, invalid });
            }
            if !json::is_array(nodes, 0) {
                return Err(DecodeError(format!(
                    "expected a JSON array of events, found {}",
                    json::type_name(nodes, 0)
                )));
            }
            (Origin::LaunchDarkly, 0, None)
        }
    };

    let len = match nodes.get(events_array) {
        Some(Node::Array { len, .. }) => *len,
        _ => 0,
    };
    let mut events = Vec::with_capacity(len);
    for (position, element) in json::array_iter(nodes, events_array).enumerate() {
        let index = match &ndjson_indices {
            Some(indices) => indices.get(position).copied().unwrap_or(position as u32),
            None => position as u32,
        };
        // Doc::verbatim is empty unless decoding with verbatim text on.
        let verbatim = verbatim_text(nodes, source, position);
        match extract(&tape, element, index, origin, goff_meta, verbatim) {
            Ok(event) => events.push(event),
            Err(reason) => invalid.push(invalid_event(nodes, element, index, reason, verbatim)),
        }
    }
    if ndjson_indices.is_some() {
        invalid.sort_by_key(|e| e.index);
    }
    Ok(DecodedRecord { events, invalid })
}

/// See [`super::decode_part`].
pub(crate) fn decode_part<'s>(
    elements: &[u8],
    first_index: u32,
    scratch: &'s mut DecodeScratch,
) -> Result<DecodedRecord<'s>, DecodeError> {
    let DecodeScratch {
        bytes,
        fallback,
        joined,
        verbatim: mode,
    } = scratch;
    let mode = *mode;
    joined.clear();
    joined.reserve(elements.len() + 2);
    joined.push(b'[');
    joined.extend_from_slice(elements);
    joined.push(b']');
    let source: &'s [u8] = joined;
    let tape = parse(source, bytes, fallback, mode)
        .map_err(|e| DecodeError(format!("invalid JSON: {e}")))?;
    let tape = Arc::new(tape);
    let nodes: &Doc<'s> = &tape;
    let len = match nodes.first() {
        Some(Node::Array { len, .. }) => *len,
        _ => return Err(DecodeError("a part of the record is not an array".into())),
    };
    let mut events = Vec::with_capacity(len);
    let mut invalid = Vec::new();
    for (position, element) in json::array_iter(nodes, 0).enumerate() {
        let index = first_index.saturating_add(position as u32);
        let verbatim = verbatim_text(nodes, source, position);
        match extract(&tape, element, index, Origin::LaunchDarkly, None, verbatim) {
            Ok(event) => events.push(event),
            Err(reason) => invalid.push(invalid_event(nodes, element, index, reason, verbatim)),
        }
    }
    Ok(DecodedRecord { events, invalid })
}

/// The sent text of the top-level array element at `position`, if it can be copied as is.
fn verbatim_text<'s>(doc: &Doc<'_>, source: &'s [u8], position: usize) -> Option<&'s [u8]> {
    let range = doc.verbatim.get(position)?.clone()?;
    source.get(range.start as usize..range.end as usize)
}

fn starts_with(body: &[u8], byte: u8) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&byte)
}

/// Copy NDJSON lines into `scratch` as one JSON array. Lines that are not valid JSON objects
/// become invalid events (reason + raw line). Returns the event index of each array element.
///
/// Fast path: join all lines and let the single parse decide. Only when the body contains a
/// broken line (validated records never do) is each line parsed on its own to find it.
fn ndjson_to_array(
    body: &[u8],
    scratch: &mut Vec<u8>,
    invalid: &mut Vec<InvalidEvent>,
) -> Vec<u32> {
    let lines: Vec<Line<'_>> = ndjson_lines(body).collect();
    let all_objects = lines.iter().all(|l| starts_with(l.text, b'{'));
    let mut indices = Vec::with_capacity(lines.len());
    let joined_parses = all_objects && {
        join(&lines, |_| true, scratch);
        number::probe(scratch, |nodes| {
            json::array_iter(nodes, 0).all(|e| json::is_object(nodes, e))
        })
        .unwrap_or(false)
    };
    if joined_parses {
        indices.extend(0..lines.len() as u32);
        return indices;
    }
    if lines.len() > 1 || !all_objects {
        // Slow path: find the broken lines.
        let mut keep = vec![false; lines.len()];
        for (i, line) in lines.iter().enumerate() {
            let shape = number::probe(line.text, |nodes| {
                (!json::is_object(nodes, 0)).then(|| json::type_name(nodes, 0))
            });
            let reason = match shape {
                Ok(None) => None,
                Ok(Some(type_name)) => Some(format!(
                    "NDJSON line {} is {type_name}, expected an event object",
                    line.number,
                )),
                Err(e) => Some(format!("NDJSON line {}: invalid JSON: {e}", line.number)),
            };
            match reason {
                None => {
                    keep[i] = true;
                    indices.push(i as u32);
                }
                Some(reason) => invalid.push(InvalidEvent {
                    index: i as u32,
                    reason,
                    raw: String::from_utf8_lossy(line.text).trim().to_string(),
                }),
            }
        }
        if indices.is_empty() {
            // Possibly one pretty-printed object: let the caller parse the body as is.
            if number::probe(body, |nodes| json::is_object(nodes, 0)).unwrap_or(false) {
                invalid.clear();
                scratch.clear();
                scratch.extend_from_slice(body);
                return vec![0];
            }
        }
        join(&lines, |i| keep[i], scratch);
        return indices;
    }
    // One line that does not parse on its own: maybe the body is one multi-line object.
    scratch.clear();
    scratch.extend_from_slice(body);
    vec![0]
}

fn join(lines: &[Line<'_>], keep: impl Fn(usize) -> bool, out: &mut Vec<u8>) {
    out.clear();
    out.push(b'[');
    let mut first = true;
    for (i, line) in lines.iter().enumerate() {
        if !keep(i) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(line.text);
    }
    out.push(b']');
}

/// An invalid event's report; its text is the sent text when that is known to be exact (its
/// numbers' texts may not have been collected, see [`VerbatimText`]), else written from the tape.
fn invalid_event(
    nodes: &Doc<'_>,
    element: usize,
    index: u32,
    reason: String,
    verbatim: Option<&[u8]>,
) -> InvalidEvent {
    let mut raw = Vec::new();
    match verbatim {
        Some(text) => raw.extend_from_slice(text),
        None => json::write_value(&mut raw, nodes, element),
    }
    InvalidEvent {
        index,
        reason,
        raw: String::from_utf8_lossy(&raw).into_owned(),
    }
}

/// Kinds that must carry a string `key`.
fn requires_key(origin: Origin, kind: &str) -> bool {
    match origin {
        Origin::LaunchDarkly => {
            matches!(kind, "feature" | "debug" | "custom" | "click" | "pageview")
        }
        Origin::GoFeatureFlag => true,
    }
}

/// One pass over the event object: pick out the common fields and check their types.
fn extract<'s>(
    tape: &Arc<Doc<'s>>,
    node: usize,
    index: u32,
    origin: Origin,
    goff_meta: Option<usize>,
    verbatim: Option<&'s [u8]>,
) -> Result<Event<'s>, String> {
    let nodes: &Doc<'s> = tape;
    if !json::is_object(nodes, node) {
        return Err(format!(
            "event is {}, expected an object",
            json::type_name(nodes, node)
        ));
    }
    let mut kind = None;
    let mut key = None;
    let mut creation_date = None;
    let mut context = None;
    let mut context_keys = None;
    let mut user = None;
    let mut user_key = None;
    let mut context_kind = None;
    let mut reason = None;
    for (name, value) in json::object_iter(nodes, node) {
        let slot = match name {
            "kind" => &mut kind,
            "key" => &mut key,
            "creationDate" => &mut creation_date,
            "context" => &mut context,
            "contextKeys" => &mut context_keys,
            "user" => &mut user,
            "userKey" => &mut user_key,
            "contextKind" => &mut context_kind,
            "reason" => &mut reason,
            _ => continue,
        };
        // First occurrence wins for duplicated keys, like the tape's own lookup.
        if slot.is_none() {
            *slot = Some(value);
        }
    }
    let string = |field: &str, idx: Option<usize>| -> Result<Option<&'s str>, String> {
        match idx {
            None => Ok(None),
            Some(i) if json::is_null(nodes, i) => Ok(None),
            Some(i) => json::as_str(nodes, i).map(Some).ok_or_else(|| {
                format!(
                    "`{field}` is {}, expected a string",
                    json::type_name(nodes, i)
                )
            }),
        }
    };
    let object = |field: &str, idx: Option<usize>| -> Result<Option<usize>, String> {
        match idx {
            None => Ok(None),
            Some(i) if json::is_null(nodes, i) => Ok(None),
            Some(i) if json::is_object(nodes, i) => Ok(Some(i)),
            Some(i) => Err(format!(
                "`{field}` is {}, expected an object",
                json::type_name(nodes, i)
            )),
        }
    };
    let kind = match (string("kind", kind)?, origin) {
        (Some(kind), _) => kind,
        (None, Origin::GoFeatureFlag) => "feature",
        (None, Origin::LaunchDarkly) => return Err("event has no `kind`".to_string()),
    };
    let key = string("key", key)?;
    if key.is_none() && requires_key(origin, kind) {
        return Err(format!("`{kind}` event has no `key`"));
    }
    // A number that is no usable timestamp (negative, fractional, beyond 64 bits) is still a
    // valid event: it has no creation time (schemas fall back to the receive time) and keeps
    // its text wherever the event is passed through. Only a non-number is an invalid event.
    let creation_date = match creation_date {
        None => None,
        Some(i) if json::is_null(nodes, i) => None,
        Some(i) if json::is_number(nodes, i) => json::as_u64(nodes, i),
        Some(i) => {
            return Err(format!(
                "`creationDate` is {}, expected a non-negative integer timestamp",
                json::type_name(nodes, i)
            ))
        }
    };
    let creation_date_ms = match origin {
        Origin::LaunchDarkly => creation_date,
        Origin::GoFeatureFlag => creation_date.map(|t| {
            if t > GOFF_SECONDS_LIMIT {
                t
            } else {
                t.saturating_mul(1000)
            }
        }),
    };
    let context = object("context", context)?;
    let context_keys = object("contextKeys", context_keys)?;
    let user = object("user", user)?;
    let user_key = string("userKey", user_key)?;
    let context_kind = string("contextKind", context_kind)?;
    let in_experiment = reason
        .filter(|&r| json::is_object(nodes, r))
        .and_then(|r| json::get(nodes, r, "inExperiment"))
        .and_then(|v| json::as_bool(nodes, v))
        .unwrap_or(false);
    if kind == "summary" && origin == Origin::LaunchDarkly {
        match json::get(nodes, node, "features") {
            Some(f) if json::is_object(nodes, f) => {}
            Some(f) => {
                return Err(format!(
                    "`features` is {}, expected an object",
                    json::type_name(nodes, f)
                ))
            }
            None => return Err("`summary` event has no `features`".to_string()),
        }
    }
    let mut event = Event {
        tape: Arc::clone(tape),
        node,
        index,
        origin,
        kind,
        key,
        creation_date_ms,
        context_key: None,
        context,
        context_keys,
        user,
        user_key,
        context_kind,
        goff_meta,
        in_experiment,
        verbatim: verbatim.filter(|_| origin == Origin::LaunchDarkly),
    };
    event.context_key = primary_context_key(&event);
    Ok(event)
}

/// The `user` context's key if present, else the first context's key.
fn primary_context_key<'a>(event: &Event<'a>) -> Option<&'a str> {
    let mut first = None;
    let mut user = None;
    event.for_each_context(|c| {
        if first.is_none() {
            first = Some(c.key);
        }
        if user.is_none() && c.kind == "user" {
            user = Some(c.key);
        }
    });
    user.or(first).or_else(|| {
        // go-feature-flag tracking events may carry only evaluationContext.targetingKey.
        let nodes = event.nodes();
        let ctx = event.field("evaluationContext")?;
        json::get(nodes, ctx, "targetingKey").and_then(|k| json::as_str(nodes, k))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(format: InboundFormat) -> RecordContext<'static> {
        RecordContext {
            format,
            environment: "production",
            payload_id: None,
            schema_version: Some(4),
            seq: 7,
            received_at_ms: 1_717_000_000_000,
            instance_id: None,
        }
    }

    #[test]
    fn decoded_records_can_cross_threads_and_awaits() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Event<'static>>();
        send_sync::<DecodedRecord<'static>>();
    }

    #[test]
    fn decodes_ld_schema_4_events_and_contexts() {
        let body = br#"[
          {"kind":"index","creationDate":1,"context":{"kind":"multi","org":{"key":"o9"},"user":{"key":"u1","anonymous":true}}},
          {"kind":"feature","creationDate":2,"key":"flag","context":{"kind":"org","key":"o1"},"reason":{"kind":"FALLTHROUGH","inExperiment":true}},
          {"kind":"custom","key":"purchase","contextKeys":{"org":"o2","user":"u2"}},
          {"kind":"brand-new","whatever":[1]}
        ]"#;
        let mut scratch = DecodeScratch::default();
        let record = decode(&ctx(InboundFormat::LdBulk), body, &mut scratch).unwrap();
        assert!(record.invalid.is_empty());
        let e = &record.events;
        assert_eq!(e.len(), 4);
        assert_eq!((e[0].kind(), e[0].context_key()), ("index", Some("u1")));
        let mut kinds = Vec::new();
        e[0].for_each_context(|c| kinds.push((c.kind, c.key, c.anonymous)));
        assert_eq!(kinds, [("org", "o9", false), ("user", "u1", true)]);
        assert_eq!(e[1].key(), Some("flag"));
        assert_eq!(e[1].context_key(), Some("o1"));
        assert!(e[1].in_experiment());
        assert_eq!(e[1].creation_date_ms(), Some(2));
        assert_eq!(e[2].context_key(), Some("u2"));
        assert_eq!(e[3].kind(), "brand-new");
        assert_eq!(e[3].index(), 3);
    }

    #[test]
    fn legacy_users_normalise_to_user_contexts() {
        let body = br#"[{"kind":"feature","key":"f","user":{"key":"u1","custom":{"a":1}},"contextKind":"anonymousUser"},
                        {"kind":"custom","key":"m","userKey":"u2"}]"#;
        let mut scratch = DecodeScratch::default();
        let record = decode(&ctx(InboundFormat::LdMobile), body, &mut scratch).unwrap();
        let mut seen = Vec::new();
        for e in &record.events {
            e.for_each_context(|c| seen.push((c.kind, c.key, c.anonymous)));
        }
        assert_eq!(seen, [("user", "u1", true), ("user", "u2", false)]);
    }

    #[test]
    fn invalid_events_are_reported_without_losing_neighbours() {
        let body = br#"[{"kind":"custom","key":"a"},{"key":"no-kind"},{"kind":"feature"},{"kind":"custom","key":"b","creationDate":"yesterday"},{"kind":"summary"},{"kind":"identify","context":"u"},{"kind":"custom","key":"c"}]"#;
        let mut scratch = DecodeScratch::default();
        let record = decode(&ctx(InboundFormat::LdBulk), body, &mut scratch).unwrap();
        let keys: Vec<_> = record.events.iter().map(|e| (e.index(), e.key())).collect();
        assert_eq!(keys, [(0, Some("a")), (6, Some("c"))]);
        let reasons: Vec<_> = record
            .invalid
            .iter()
            .map(|i| (i.index, i.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, "event has no `kind`"),
                (2, "`feature` event has no `key`"),
                (
                    3,
                    "`creationDate` is a string, expected a non-negative integer timestamp"
                ),
                (4, "`summary` event has no `features`"),
                (5, "`context` is a string, expected an object"),
            ]
        );
        assert_eq!(record.invalid[0].raw, r#"{"key":"no-kind"}"#);
    }

    #[test]
    fn records_of_verbatim_events_skip_number_texts_but_report_invalid_events_as_sent() {
        let body = br#"[{"kind":"custom","key":"a","metricValue":1.50},{"kind":7,"v":-0}]"#;
        let ctx = ctx(InboundFormat::LdBulk);
        let mode = VerbatimText::KeepWithoutNumberTexts;
        let mut scratch = DecodeScratch::with_verbatim(mode);
        let record = decode(&ctx, body, &mut scratch).unwrap();
        let event = &record.events[0];
        assert_eq!(
            event.verbatim,
            Some(&br#"{"kind":"custom","key":"a","metricValue":1.50}"#[..])
        );
        assert!(event.tape.numbers.is_empty(), "every event is verbatim");
        assert_eq!(record.invalid[0].raw, r#"{"kind":7,"v":-0}"#);

        // One event that is not verbatim (an inbound id) and the texts are back.
        let body = br#"[{"kind":"custom","key":"a","metricValue":1.50},{"kind":"custom","key":"b","id":"x"}]"#;
        let mut scratch = DecodeScratch::with_verbatim(mode);
        let record = decode(&ctx, body, &mut scratch).unwrap();
        assert_eq!(record.events[1].verbatim, None);
        assert!(!record.events[0].tape.numbers.is_empty());
    }

    #[test]
    fn goff_normalises_seconds_kind_and_meta() {
        let body = br#"{"meta":{"env":"prod"},"events":[
          {"kind":"feature","contextKind":"anonymousUser","userKey":"u1","creationDate":1717000000,"key":"f","variation":"on","value":true,"default":false},
          {"userKey":"u2","creationDate":1717000000123,"key":"g"},
          {"kind":"tracking","contextKind":"user","creationDate":1717000005,"key":"checkout","evaluationContext":{"targetingKey":"u3"}}]}"#;
        let mut scratch = DecodeScratch::default();
        let record = decode(&ctx(InboundFormat::GoffCollector), body, &mut scratch).unwrap();
        assert!(record.invalid.is_empty(), "{:?}", record.invalid);
        let e = &record.events;
        assert_eq!(e[0].creation_date_ms(), Some(1_717_000_000_000));
        assert_eq!(e[0].context_key(), Some("u1"));
        assert_eq!(e[1].kind(), "feature");
        assert_eq!(e[1].creation_date_ms(), Some(1_717_000_000_123));
        assert_eq!(e[2].kind(), "tracking");
        assert_eq!(e[2].context_key(), Some("u3"));
        assert!(e[0].goff_meta.is_some());
        assert_eq!(e[0].origin(), Origin::GoFeatureFlag);
    }

    #[test]
    fn generic_ndjson_keeps_line_indices_and_reports_bad_lines() {
        let body = b"{\"kind\":\"custom\",\"key\":\"a\"}\n\n{\"kind\":\nnot json\n{\"kind\":\"custom\",\"key\":\"b\"}\n";
        let mut scratch = DecodeScratch::default();
        let record = decode(&ctx(InboundFormat::Generic), body, &mut scratch).unwrap();
        let got: Vec<_> = record.events.iter().map(|e| (e.index(), e.key())).collect();
        assert_eq!(got, [(0, Some("a")), (3, Some("b"))]);
        assert_eq!(record.invalid.len(), 2);
        assert!(
            record.invalid[0].reason.contains("line 3"),
            "{:?}",
            record.invalid
        );
        assert_eq!(record.invalid[1].raw, "not json");
    }

    #[test]
    fn generic_accepts_one_pretty_printed_object() {
        let body = b"{\n  \"kind\": \"custom\",\n  \"key\": \"a\"\n}\n";
        let mut scratch = DecodeScratch::default();
        let record = decode(&ctx(InboundFormat::Generic), body, &mut scratch).unwrap();
        assert_eq!(record.events.len(), 1);
        assert_eq!(record.events[0].key(), Some("a"));
    }

    #[test]
    fn whole_record_errors_are_decode_errors() {
        let mut scratch = DecodeScratch::default();
        assert!(decode(&ctx(InboundFormat::LdBulk), b"[{", &mut scratch).is_err());
        assert!(decode(&ctx(InboundFormat::LdBulk), b"{}", &mut scratch).is_err());
        assert!(decode(&ctx(InboundFormat::GoffCollector), b"{}", &mut scratch).is_err());
        let diag = decode(&ctx(InboundFormat::LdDiagnostic), b"{}", &mut scratch).unwrap();
        assert!(diag.events.is_empty() && diag.invalid.is_empty());
    }
}
