//! Summary expansion: one `summary` event → one row per (flag, counter).
//!
//! A LaunchDarkly summary event counts evaluations per flag over a window:
//! `features: {<flag>: {default, contextKinds, counters: [{variation?, version | unknown,
//! value, count}]}}`. Analytics tables want those counters as rows. With
//! `expand_summaries` on:
//!
//! * `launchdarkly` — one envelope per counter whose event is
//!   `{"kind":"summary_counter","id","startDate","endDate","key":<flag>,"counterIndex",
//!   "default","contextKinds","variation","version","unknown","value","count"}` (fields that
//!   were not sent are left out);
//! * `warehouse` — one `summary_counters` row per counter;
//! * `segment`, `mparticle`, `gofeatureflag` — no rows (these integrations never receive
//!   summaries).
//!
//! `counterIndex` counts counters across the whole summary event in order, so
//! (`id`, `key`, `counterIndex`) identifies a row forever.

use super::super::json::{self, Doc, ObjectWriter};
use super::super::MapError;
use super::warehouse::{json_text, text};
use super::{Row, Schema};

/// One counter of one flag.
struct Counter {
    flag_object: usize,
    counter: usize,
    index: u64,
}

fn for_each_counter<'a>(nodes: &Doc<'a>, features: usize, mut f: impl FnMut(&'a str, Counter)) {
    let mut index = 0;
    for (flag, flag_object) in json::object_iter(nodes, features) {
        let Some(counters) = json::get(nodes, flag_object, "counters") else {
            continue;
        };
        for counter in json::array_iter(nodes, counters) {
            if json::is_object(nodes, counter) {
                f(
                    flag,
                    Counter {
                        flag_object,
                        counter,
                        index,
                    },
                );
                index += 1;
            }
        }
    }
}

pub(crate) fn expand(
    schema: Schema,
    row: &Row<'_, '_>,
    out: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<(), MapError> {
    let event = row.event;
    let nodes = event.nodes();
    let Some(features) = event
        .field("features")
        .filter(|&f| json::is_object(nodes, f))
    else {
        return Ok(());
    };
    let start = event.field("startDate");
    let end = event.field("endDate");
    match schema {
        Schema::LaunchDarkly => for_each_counter(nodes, features, |flag, c| {
            out.clear();
            let mut envelope = ObjectWriter::new(out);
            envelope.str("project", row.options.project());
            envelope.str("environment", row.ctx.environment);
            let mut e = ObjectWriter::new(envelope.key("event"));
            e.str("kind", "summary_counter");
            e.str("id", row.id);
            e.opt_value("startDate", nodes, start);
            e.opt_value("endDate", nodes, end);
            e.str("key", flag);
            e.u64("counterIndex", c.index);
            e.opt_value("default", nodes, json::get(nodes, c.flag_object, "default"));
            e.opt_value(
                "contextKinds",
                nodes,
                json::get(nodes, c.flag_object, "contextKinds"),
            );
            for field in ["variation", "version", "unknown", "value", "count"] {
                e.opt_value(field, nodes, json::get(nodes, c.counter, field));
            }
            e.finish();
            envelope.u64("version", 1);
            envelope.finish();
            emit(out);
        }),
        Schema::Warehouse => for_each_counter(nodes, features, |flag, c| {
            out.clear();
            let mut o = ObjectWriter::new(out);
            let get = |field: &str| json::get(nodes, c.counter, field);
            o.str("table", "summary_counters");
            o.str("event_id", row.id);
            o.str("project", row.options.project());
            o.str("environment", row.ctx.environment);
            o.str("flag_key", flag);
            o.u64("counter_index", c.index);
            json_text(
                &mut o,
                "context_kinds",
                nodes,
                json::get(nodes, c.flag_object, "contextKinds"),
            );
            text(&mut o, "flag_version", nodes, get("version"));
            o.bool(
                "unknown_flag",
                get("unknown").and_then(|u| json::as_bool(nodes, u)) == Some(true),
            );
            match get("variation").and_then(|v| json::as_u64(nodes, v)) {
                Some(v) => o.u64("variation_index", v),
                None => o.null("variation_index"),
            }
            json_text(&mut o, "variation_value", nodes, get("value"));
            json_text(
                &mut o,
                "default_value",
                nodes,
                json::get(nodes, c.flag_object, "default"),
            );
            o.u64(
                "count",
                get("count")
                    .and_then(|n| json::as_u64(nodes, n))
                    .unwrap_or(0),
            );
            for (name, idx) in [("start_date", start), ("end_date", end)] {
                match idx.and_then(|i| json::as_u64(nodes, i)) {
                    Some(v) => o.u64(name, v),
                    None => o.null(name),
                }
            }
            o.finish();
            emit(out);
        }),
        Schema::Segment | Schema::MParticle | Schema::GoFeatureFlag => {}
    }
    Ok(())
}
