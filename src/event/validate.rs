//! Ingest-time validation: is this body worth storing?
//!
//! Validation checks the *shape* a route promises (a JSON array of objects, a collector
//! envelope, …) and counts the events. It deliberately does not judge individual events
//! (a missing `kind`, an odd timestamp): those are reported per event at delivery time as dead
//! letters, so one bad event never costs its neighbours their acceptance.
//!
//! The common bodies (event arrays of every route but NDJSON and diagnostics) are first offered
//! to a one-pass check over the bytes (`syntax.rs`) that can only accept; whatever it does not
//! accept is validated as below, which also names what is wrong.
//!
//! simd-json parses in place, and the body must be stored exactly as received, so we parse a
//! copy held in a thread-local scratch buffer (reused across requests: no allocation per request
//! once warm). The scratch is shrunk after an unusually large body so one 50 MB request does not
//! pin 50 MB per worker thread forever.

use std::cell::RefCell;

use simd_json::{Buffers, Tape};

use super::json::{self, Nodes};
use super::number;
use super::{InboundFormat, ValidationError};

/// Scratch capacity kept between calls; bigger buffers are released after use.
const KEEP_SCRATCH_BYTES: usize = 4 << 20;

struct Scratch {
    bytes: Vec<u8>,
    buffers: Buffers,
    tape: Tape<'static>,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            bytes: Vec::new(),
            buffers: Buffers::default(),
            tape: Tape::null(),
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

fn err(code: &'static str, detail: impl Into<String>) -> ValidationError {
    ValidationError {
        code,
        detail: detail.into(),
    }
}

/// See [`super::validate`].
pub(crate) fn validate(format: InboundFormat, body: &[u8]) -> Result<u32, ValidationError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(err("empty_body", "the request body is empty"));
    }
    SCRATCH.with(|cell| {
        let mut guard = match cell.try_borrow_mut() {
            Ok(guard) => guard,
            // Re-entrancy cannot happen (no callbacks run while borrowed), but never panic.
            Err(_) => return validate_with_fresh_scratch(format, body),
        };
        let scratch = &mut *guard;
        let result = run(format, body, scratch);
        if scratch.bytes.capacity() > KEEP_SCRATCH_BYTES {
            *scratch = Scratch::new();
        }
        result
    })
}

fn validate_with_fresh_scratch(format: InboundFormat, body: &[u8]) -> Result<u32, ValidationError> {
    let mut scratch = Scratch::new();
    run(format, body, &mut scratch)
}

fn run(format: InboundFormat, body: &[u8], scratch: &mut Scratch) -> Result<u32, ValidationError> {
    // The common bodies are accepted in one pass over their bytes; anything else gets the full
    // parse, which also explains what is wrong (`syntax.rs`).
    let accepted = match format {
        InboundFormat::LdBulk | InboundFormat::LdMobile | InboundFormat::LdBrowser => {
            super::syntax::ld_event_count(body)
        }
        InboundFormat::GoffCollector => super::syntax::goff_event_count(body),
        InboundFormat::Generic => super::syntax::object_array_count(body),
        InboundFormat::LdDiagnostic => None,
    };
    match accepted {
        Some(count) => Ok(count),
        None => run_in_full(format, body, scratch),
    }
}

/// The full validator: parses with simd-json and names what is wrong.
fn run_in_full(
    format: InboundFormat,
    body: &[u8],
    scratch: &mut Scratch,
) -> Result<u32, ValidationError> {
    match format {
        InboundFormat::LdBulk | InboundFormat::LdMobile | InboundFormat::LdBrowser => {
            ld_events(body, scratch)
        }
        InboundFormat::LdDiagnostic => parse(body, scratch, |nodes| {
            if json::is_object(nodes, 0) {
                // Diagnostics are stored and forwarded, never exported: zero export events.
                Ok(0)
            } else {
                Err(err(
                    "wrong_shape",
                    format!(
                        "a diagnostic payload must be one JSON object, found {}",
                        json::type_name(nodes, 0)
                    ),
                ))
            }
        }),
        InboundFormat::GoffCollector => parse(body, scratch, goff_envelope),
        InboundFormat::Generic => generic(body, scratch),
    }
}

/// Parse `body` (a copy of it) and run `check` on the tape.
fn parse(
    body: &[u8],
    scratch: &mut Scratch,
    check: impl FnOnce(&Nodes<'_>) -> Result<u32, ValidationError>,
) -> Result<u32, ValidationError> {
    parse_part(body, body, 0, scratch, check)
}

/// Parse `part`, which starts at byte `start` of `whole` (for error positions). Numbers
/// simd-json refuses (beyond 64 bits, `1e400`) are valid JSON: the part is parsed again with
/// placeholders in their place (see `super::number`), so only real syntax errors are refused.
fn parse_part(
    part: &[u8],
    whole: &[u8],
    start: usize,
    scratch: &mut Scratch,
    check: impl FnOnce(&Nodes<'_>) -> Result<u32, ValidationError>,
) -> Result<u32, ValidationError> {
    let mut check = Some(check);
    scratch.bytes.clear();
    scratch.bytes.extend_from_slice(part);
    let mut parsed = attempt(scratch, &mut check);
    if let Err(error) = &parsed {
        if number::is_refused_number(error) {
            let refused = number::refused_numbers(part, scratch.buffers.structural_indexes());
            if !refused.is_empty() {
                number::copy_with_placeholders(part, &refused, &mut scratch.bytes);
                parsed = attempt(scratch, &mut check);
            }
        }
    }
    match parsed {
        Ok(checked) => checked,
        Err(error) => Err(malformed(
            whole,
            start + error.index().min(part.len()),
            &error,
        )),
    }
}

/// Parse `scratch.bytes` and, if it is JSON, run `check` (taken from its slot) on the tape.
fn attempt(
    scratch: &mut Scratch,
    check: &mut Option<impl FnOnce(&Nodes<'_>) -> Result<u32, ValidationError>>,
) -> Result<Result<u32, ValidationError>, simd_json::Error> {
    let mut tape: Tape<'_> = std::mem::replace(&mut scratch.tape, Tape::null()).reset();
    let result = simd_json::fill_tape(&mut scratch.bytes, &mut scratch.buffers, &mut tape)
        .map(|()| check.take().map_or(Ok(0), |check| check(&tape.0)));
    scratch.tape = tape.reset();
    result
}

/// `malformed_json` naming the byte offset, and the line/column for humans.
fn malformed(body: &[u8], offset: usize, error: &simd_json::Error) -> ValidationError {
    let offset = offset.min(body.len());
    let line = body[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
    let column = offset
        - body[..offset]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    let near = match error.character() {
        Some(c) => format!(" near {c:?}"),
        None => String::new(),
    };
    err(
        "malformed_json",
        format!(
            "invalid JSON at byte {offset} (line {line}, column {column}){near}: {:?}",
            error.error()
        ),
    )
}

fn array_of_objects(nodes: &Nodes<'_>, what: &str) -> Result<u32, ValidationError> {
    if !json::is_array(nodes, 0) {
        return Err(err(
            "wrong_shape",
            format!(
                "expected a JSON array of {what} objects, found {}",
                json::type_name(nodes, 0)
            ),
        ));
    }
    elements_are_objects(nodes, 0, "", 0)
}

/// Bodies from this size on are validated a part at a time ([`super::array_parts`]), so a
/// 10 MiB body costs one part's tape at ingest, not the whole body's.
const PARTS_FROM_BYTES: usize = 1024 * 1024;
/// Events per part.
const PART_EVENTS: u32 = 4096;

/// A LaunchDarkly array body: objects, and enough of them with a `kind`.
fn ld_events(body: &[u8], scratch: &mut Scratch) -> Result<u32, ValidationError> {
    let parts = (body.len() >= PARTS_FROM_BYTES)
        .then(|| super::array_parts(body, PART_EVENTS))
        .flatten();
    let mut kindless = Kindless::default();
    let Some(parts) = parts else {
        let count = parse(body, scratch, |nodes| {
            let count = array_of_objects(nodes, "event")?;
            kindless.count(nodes, 0);
            Ok(count)
        })?;
        kindless.judge(count)?;
        return Ok(count);
    };
    let mut wrapped = Vec::new();
    let mut count: u32 = 0;
    for part in &parts {
        wrapped.clear();
        wrapped.push(b'[');
        wrapped.extend_from_slice(&body[part.bytes.clone()]);
        wrapped.push(b']');
        // `wrapped[0]` stands for the byte before the part (error offsets).
        let start = part.bytes.start.saturating_sub(1);
        count += parse_part(&wrapped, body, start, scratch, |nodes| {
            let first = part.first_index as usize;
            let objects = elements_are_objects(nodes, 0, "", first)?;
            kindless.count(nodes, first);
            Ok(objects)
        })?;
    }
    kindless.judge(count)?;
    Ok(count)
}

fn elements_are_objects(
    nodes: &Nodes<'_>,
    array: usize,
    path: &str,
    first_index: usize,
) -> Result<u32, ValidationError> {
    let mut count: u32 = 0;
    for (index, element) in json::array_iter(nodes, array).enumerate() {
        let index = first_index + index;
        if !json::is_object(nodes, element) {
            return Err(err(
                "wrong_shape",
                format!(
                    "{path}[{index}] is {}, expected an event object",
                    json::type_name(nodes, element)
                ),
            ));
        }
        count = count.saturating_add(1);
    }
    Ok(count)
}

/// Most events without a `kind` accepted in one LaunchDarkly body. Such events can never be
/// exported (delivery dead-letters them), so a body of many is an amplification attack on the
/// dead-letter store (`[{},{},…]`: 3 bytes of body per dead letter), not an SDK's batch.
pub const MAX_KINDLESS_EVENTS_PER_BODY: u32 = 100;

/// LaunchDarkly events must have a string `kind`. A body where none has one is refused, naming
/// the first; a few kindless events among valid ones are accepted (delivery reports them as
/// dead letters, so one bad event does not cost its neighbours), up to
/// [`MAX_KINDLESS_EVENTS_PER_BODY`].
#[derive(Default)]
struct Kindless {
    count: u32,
    first: Option<usize>,
}

impl Kindless {
    /// Count the events of the array at the root of `nodes` without a string `kind`; the
    /// array's first element is event `first_index` of the body.
    fn count(&mut self, nodes: &Nodes<'_>, first_index: usize) {
        for (index, element) in json::array_iter(nodes, 0).enumerate() {
            let kind = json::get(nodes, element, "kind").and_then(|k| json::as_str(nodes, k));
            if kind.is_none() {
                self.count += 1;
                self.first.get_or_insert(first_index + index);
            }
        }
    }

    /// The verdict for a body of `count` events (see [`MAX_KINDLESS_EVENTS_PER_BODY`]).
    fn judge(&self, count: u32) -> Result<(), ValidationError> {
        check_kinds(self.count, self.first, count)
    }
}

fn check_kinds(kindless: u32, first: Option<usize>, count: u32) -> Result<(), ValidationError> {
    let Some(first) = first else { return Ok(()) };
    if kindless == count {
        return Err(err(
            "no_valid_events",
            format!(
                "no event has a string `kind` (the first is [{first}]); nothing could be exported"
            ),
        ));
    }
    if kindless > MAX_KINDLESS_EVENTS_PER_BODY {
        return Err(err(
            "too_many_invalid_events",
            format!(
                "{kindless} of {count} events have no string `kind` (the first is [{first}]); \
                 at most {MAX_KINDLESS_EVENTS_PER_BODY} per body are accepted"
            ),
        ));
    }
    metrics::counter!(crate::metrics::INGEST_INVALID_EVENTS_TOTAL).increment(kindless.into());
    Ok(())
}

fn goff_envelope(nodes: &Nodes<'_>) -> Result<u32, ValidationError> {
    if !json::is_object(nodes, 0) {
        return Err(err(
            "wrong_shape",
            format!(
                "expected a collector object {{\"meta\": {{…}}, \"events\": […]}}, found {}",
                json::type_name(nodes, 0)
            ),
        ));
    }
    for key in ["meta", "metadata"] {
        if let Some(meta) = json::get(nodes, 0, key) {
            if !json::is_object(nodes, meta) && !json::is_null(nodes, meta) {
                return Err(err(
                    "wrong_shape",
                    format!(
                        "`{key}` must be an object, found {}",
                        json::type_name(nodes, meta)
                    ),
                ));
            }
        }
    }
    let Some(events) = json::get(nodes, 0, "events") else {
        return Err(err(
            "missing_events",
            "the collector body has no `events` field",
        ));
    };
    if !json::is_array(nodes, events) {
        return Err(err(
            "wrong_shape",
            format!(
                "`events` must be an array, found {}",
                json::type_name(nodes, events)
            ),
        ));
    }
    elements_are_objects(nodes, events, "events", 0)
}

/// Generic: a JSON array of objects, or NDJSON (one object per line). A single
/// pretty-printed object spanning several lines is accepted as one event.
fn generic(body: &[u8], scratch: &mut Scratch) -> Result<u32, ValidationError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'[') {
        return parse(body, scratch, |nodes| array_of_objects(nodes, "event"));
    }
    let mut count: u32 = 0;
    for line in super::decode::ndjson_lines(body) {
        let parsed = parse_part(line.text, body, line.start, scratch, |nodes| {
            if json::is_object(nodes, 0) {
                Ok(1)
            } else {
                Err(err(
                    "wrong_shape",
                    format!(
                        "line {} is {}, expected one event object per line",
                        line.number,
                        json::type_name(nodes, 0)
                    ),
                ))
            }
        });
        match parsed {
            Ok(_) => count = count.saturating_add(1),
            Err(line_error) => {
                // Maybe the whole body is one (multi-line) object.
                if count == 0
                    && parse(body, scratch, |nodes| Ok(json::is_object(nodes, 0) as u32)) == Ok(1)
                {
                    return Ok(1);
                }
                return Err(line_error);
            }
        }
    }
    Ok(count)
}

/// The full validator alone, without the fast accepts of `syntax.rs` (the oracle of their
/// property tests).
#[cfg(test)]
pub(super) fn validate_in_full(format: InboundFormat, body: &[u8]) -> Result<u32, ValidationError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(err("empty_body", "the request body is empty"));
    }
    let mut scratch = Scratch::new();
    run_in_full(format, body, &mut scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(format: InboundFormat, body: &str) -> Result<u32, &'static str> {
        validate(format, body.as_bytes()).map_err(|e| e.code)
    }

    #[test]
    fn ld_bulk_counts_events_and_leaves_the_body_alone() {
        let body = br#"[{"kind":"index","context":{"key":"a\nb"}},{"kind":"custom"}]"#.to_vec();
        let copy = body.clone();
        assert_eq!(validate(InboundFormat::LdBulk, &body), Ok(2));
        assert_eq!(body, copy);
        assert_eq!(code(InboundFormat::LdMobile, "[]"), Ok(0));
    }

    #[test]
    fn ld_rejections_name_the_problem() {
        assert_eq!(code(InboundFormat::LdBulk, "  \n"), Err("empty_body"));
        assert_eq!(code(InboundFormat::LdBulk, ""), Err("empty_body"));
        let e = validate(InboundFormat::LdBulk, b"[{\"kind\":}]").unwrap_err();
        assert_eq!(e.code, "malformed_json");
        assert!(e.detail.contains("byte 9"), "{}", e.detail);
        let e = validate(InboundFormat::LdBrowser, b"{\"kind\":\"custom\"}").unwrap_err();
        assert_eq!(e.code, "wrong_shape");
        assert!(e.detail.contains("found an object"), "{}", e.detail);
        let e = validate(InboundFormat::LdBulk, b"[{\"kind\":\"custom\"},3]").unwrap_err();
        assert_eq!(e.code, "wrong_shape");
        assert!(e.detail.contains("[1] is a number"), "{}", e.detail);
    }

    #[test]
    fn a_large_body_is_validated_in_parts_with_the_same_verdicts() {
        let event = r#"{"kind":"custom","key":"k","creationDate":1}"#;
        let n = 40_000;
        let events = vec![event; n];
        let body = format!("[{}]", events.join(","));
        assert!(body.len() > PARTS_FROM_BYTES);
        assert_eq!(code(InboundFormat::LdBulk, &body), Ok(n as u32));
        // The fast accept (`syntax.rs`) took that; the full validator's parts agree.
        assert_eq!(
            validate_in_full(InboundFormat::LdBulk, body.as_bytes()),
            Ok(n as u32)
        );

        let mut shaped = events.clone();
        shaped[5000] = "42";
        let err = validate(
            InboundFormat::LdBulk,
            format!("[{}]", shaped.join(",")).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(err.code, "wrong_shape");
        assert!(err.detail.contains("[5000]"), "{}", err.detail);

        let mut kindless = vec![r#"{"key":"no-kind","pad":"xxxxxxxxxxxxxxxxxx"}"#; n];
        let err = validate(
            InboundFormat::LdBulk,
            format!("[{}]", kindless.join(",")).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(err.code, "no_valid_events");
        kindless[0] = event;
        let err = validate(
            InboundFormat::LdBulk,
            format!("[{}]", kindless.join(",")).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(err.code, "too_many_invalid_events");
        assert!(err.detail.contains("(the first is [1])"), "{}", err.detail);

        // A syntax error in a late part is reported at its offset in the whole body.
        let mut broken = events.clone();
        let bad = r#"{"kind":"custom","key":"k","creationDate":}"#;
        broken[30_000] = bad;
        let body = format!("[{}]", broken.join(","));
        let at = body.find(bad).unwrap() + bad.len() - 1;
        let err = validate(InboundFormat::LdBulk, body.as_bytes()).unwrap_err();
        assert_eq!(err.code, "malformed_json");
        assert!(
            err.detail.contains(&format!("at byte {at} ")),
            "{at}: {}",
            err.detail
        );
    }

    #[test]
    fn kindless_events_are_refused_in_bulk_and_tolerated_in_small_numbers() {
        let bomb = format!("[{}]", vec!["{}"; 10_000].join(","));
        let e = validate(InboundFormat::LdBrowser, bomb.as_bytes()).unwrap_err();
        assert_eq!(e.code, "no_valid_events");
        assert!(e.detail.contains("[0]"), "{}", e.detail);
        let few = r#"[{"kind":"custom"},{"key":"no-kind"},{"kind":3}]"#;
        assert_eq!(code(InboundFormat::LdBulk, few), Ok(3));
        let mut many = vec![r#"{"kind":"custom"}"#; 5];
        many.extend(vec!["{}"; MAX_KINDLESS_EVENTS_PER_BODY as usize + 1]);
        let many = format!("[{}]", many.join(","));
        let e = validate(InboundFormat::LdMobile, many.as_bytes()).unwrap_err();
        assert_eq!(e.code, "too_many_invalid_events");
        assert!(e.detail.contains("the first is [5]"), "{}", e.detail);
        // Other formats judge `kind` at delivery only.
        assert_eq!(code(InboundFormat::Generic, "[{}]"), Ok(1));
    }

    #[test]
    fn diagnostic_must_be_one_object() {
        assert_eq!(
            code(InboundFormat::LdDiagnostic, r#"{"kind":"diagnostic"}"#),
            Ok(0)
        );
        assert_eq!(code(InboundFormat::LdDiagnostic, "[]"), Err("wrong_shape"));
    }

    #[test]
    fn goff_envelope_rules() {
        assert_eq!(
            code(
                InboundFormat::GoffCollector,
                r#"{"meta":{"a":"b"},"events":[{},{}]}"#
            ),
            Ok(2)
        );
        assert_eq!(
            code(
                InboundFormat::GoffCollector,
                r#"{"metadata":{},"events":[]}"#
            ),
            Ok(0)
        );
        assert_eq!(
            code(InboundFormat::GoffCollector, r#"{"meta":{}}"#),
            Err("missing_events")
        );
        assert_eq!(
            code(InboundFormat::GoffCollector, r#"{"events":{}}"#),
            Err("wrong_shape")
        );
        assert_eq!(
            code(InboundFormat::GoffCollector, r#"{"meta":1,"events":[]}"#),
            Err("wrong_shape")
        );
        assert_eq!(code(InboundFormat::GoffCollector, "[]"), Err("wrong_shape"));
        let e = validate(InboundFormat::GoffCollector, br#"{"events":[{},"x"]}"#).unwrap_err();
        assert!(e.detail.contains("events[1] is a string"), "{}", e.detail);
    }

    #[test]
    fn generic_accepts_arrays_ndjson_and_one_pretty_object() {
        assert_eq!(
            code(InboundFormat::Generic, r#"[{"kind":"custom"}]"#),
            Ok(1)
        );
        assert_eq!(
            code(
                InboundFormat::Generic,
                "{\"kind\":\"a\"}\n\n{\"kind\":\"b\"}\r\n"
            ),
            Ok(2)
        );
        assert_eq!(
            code(InboundFormat::Generic, "{\n \"kind\": \"custom\"\n}\n"),
            Ok(1)
        );
        let e = validate(InboundFormat::Generic, b"{\"a\":1}\n{\"b\":\n").unwrap_err();
        assert_eq!(e.code, "malformed_json");
        assert!(
            e.detail.contains("byte 12 (line 2, column 5)"),
            "{}",
            e.detail
        );
        let e = validate(InboundFormat::Generic, b"{\"a\":1}\n[1]\n").unwrap_err();
        assert_eq!(e.code, "wrong_shape");
        assert!(e.detail.contains("line 2"), "{}", e.detail);
        assert_eq!(code(InboundFormat::Generic, "\"text\""), Err("wrong_shape"));
    }
}
