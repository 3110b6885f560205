//! Output schemas of the Data Export: one submodule per schema, each a direct transcription
//! of its field table in `docs/schemas.md`.
//!
//! Every mapper writes complete, compact JSON rows into a reused buffer and hands each row to
//! the caller's `emit` callback: no intermediate `Value`, no per-event allocation. Mappers
//! never fail on odd input (wrong-typed optional fields are written as sent or left out); a
//! [`MapError`] is reserved for events a schema cannot represent at all.
//!
//! A schema may emit zero rows for a kind it does not carry (Segment and mParticle never get
//! `index`/`identify`/`summary`, as in LaunchDarkly's own integrations); the delivery engine
//! treats "no rows" as "nothing to send" for that destination.

mod fields;
mod gofeatureflag;
mod launchdarkly;
mod mparticle;
mod segment;
pub(crate) mod summary;
mod time;
pub mod warehouse;

use std::str::FromStr;

pub use gofeatureflag::write_webhook_body;
pub use time::civil_date;

use super::{Event, MapError, RecordContext};

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

impl Schema {
    /// Every schema, in documentation order.
    pub const ALL: [Schema; 5] = [
        Schema::LaunchDarkly,
        Schema::Segment,
        Schema::MParticle,
        Schema::GoFeatureFlag,
        Schema::Warehouse,
    ];

    /// The name used in `schema=` options and docs.
    pub fn name(self) -> &'static str {
        match self {
            Schema::LaunchDarkly => "launchdarkly",
            Schema::Segment => "segment",
            Schema::MParticle => "mparticle",
            Schema::GoFeatureFlag => "gofeatureflag",
            Schema::Warehouse => "warehouse",
        }
    }
}

impl FromStr for Schema {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normalized = s.trim().to_ascii_lowercase().replace(['-', '_'], "");
        Ok(match normalized.as_str() {
            "launchdarkly" | "ld" => Schema::LaunchDarkly,
            "segment" => Schema::Segment,
            "mparticle" => Schema::MParticle,
            "gofeatureflag" | "goff" => Schema::GoFeatureFlag,
            "warehouse" => Schema::Warehouse,
            _ => {
                return Err(format!(
                    "unknown schema `{s}`; expected one of: launchdarkly, segment, mparticle, gofeatureflag, warehouse"
                ))
            }
        })
    }
}

impl std::fmt::Display for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings that schemas need beyond the event (project name, mParticle identity type, …).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportOptions {
    /// Project key written into envelopes (`project`); empty = `default`.
    pub project: String,
    /// Expand `summary` events into one row per (flag, counter) instead of one row.
    pub expand_summaries: bool,
    /// mParticle `user_identities` key for the context key; empty = `customer_id`.
    pub mparticle_identity_type: String,
    /// mParticle batch `environment` (`production` / `development`); empty = `production`.
    pub mparticle_environment: String,
}

/// Query-parameter names [`ExportOptions::from_query`] consumes.
pub const EXPORT_PARAMS: &[&str] = &[
    "project",
    "expand_summaries",
    "mparticle_identity_type",
    "mparticle_environment",
];

impl ExportOptions {
    /// Parse the schema-related query parameters of a `--dest` URL (`project`,
    /// `expand_summaries`, `mparticle_identity_type`, `mparticle_environment`); returns the
    /// parameters it did not recognise.
    #[allow(clippy::type_complexity)] // the contract signature shared with other layers
    pub fn from_query<'q>(
        params: &[(&'q str, &'q str)],
    ) -> Result<(Self, Vec<(&'q str, &'q str)>), String> {
        let mut options = ExportOptions::default();
        let mut rest = Vec::new();
        for &(name, value) in params {
            match name {
                "project" => options.project = value.to_string(),
                "expand_summaries" => {
                    options.expand_summaries = match value.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" | "on" => true,
                        "false" | "0" | "no" | "off" => false,
                        _ => {
                            return Err(format!(
                                "`expand_summaries`: expected true or false, got `{value}`"
                            ))
                        }
                    }
                }
                "mparticle_identity_type" => {
                    if value.is_empty()
                        || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        return Err(format!(
                            "`mparticle_identity_type`: `{value}` is not an identity type (e.g. customer_id, email, other)"
                        ));
                    }
                    options.mparticle_identity_type = value.to_string();
                }
                "mparticle_environment" => match value {
                    "production" | "development" => {
                        options.mparticle_environment = value.to_string()
                    }
                    _ => {
                        return Err(format!(
                            "`mparticle_environment`: expected production or development, got `{value}`"
                        ))
                    }
                },
                _ => rest.push((name, value)),
            }
        }
        Ok((options, rest))
    }

    pub(crate) fn project(&self) -> &str {
        if self.project.is_empty() {
            "default"
        } else {
            &self.project
        }
    }
}

/// See [`super::map_event`].
pub(crate) fn map_event(
    schema: Schema,
    options: &ExportOptions,
    ctx: &RecordContext<'_>,
    event: &Event<'_>,
    scratch: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<(), MapError> {
    let id = super::id::EventIdText::of(ctx, event.index());
    map_event_with_id(schema, options, ctx, event, id.as_str(), scratch, emit)
}

/// [`map_event`] for a caller that already holds the event's id (it must be
/// `event_id(ctx, event.index())`): the delivery pipeline needs the id for the item too, and
/// hashing it once instead of twice is measurable per event.
pub(crate) fn map_event_with_id(
    schema: Schema,
    options: &ExportOptions,
    ctx: &RecordContext<'_>,
    event: &Event<'_>,
    id: &str,
    scratch: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<(), MapError> {
    let row = Row {
        options,
        ctx,
        event,
        id,
    };
    if event.kind() == "summary" && options.expand_summaries {
        return summary::expand(schema, &row, scratch, emit);
    }
    match schema {
        Schema::LaunchDarkly => launchdarkly::map(&row, scratch, emit),
        Schema::Segment => segment::map(&row, scratch, emit),
        Schema::MParticle => mparticle::map(&row, scratch, emit),
        Schema::GoFeatureFlag => gofeatureflag::map(&row, scratch, emit),
        Schema::Warehouse => warehouse::map(&row, scratch, emit),
    }
    Ok(())
}

/// Everything a mapper needs about one event.
pub(crate) struct Row<'r, 'a> {
    pub(crate) options: &'r ExportOptions,
    pub(crate) ctx: &'r RecordContext<'r>,
    pub(crate) event: &'r Event<'a>,
    pub(crate) id: &'r str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_round_trip() {
        for schema in Schema::ALL {
            assert_eq!(schema.name().parse::<Schema>(), Ok(schema));
        }
        assert_eq!(
            "Go-Feature-Flag".parse::<Schema>(),
            Ok(Schema::GoFeatureFlag)
        );
        let err = "kafka".parse::<Schema>().unwrap_err();
        assert!(err.contains("kafka") && err.contains("segment"), "{err}");
    }

    #[test]
    fn export_options_from_query() {
        let (options, rest) = ExportOptions::from_query(&[
            ("project", "p-123"),
            ("expand_summaries", "true"),
            ("mparticle_identity_type", "email"),
            ("region", "eu"),
        ])
        .unwrap();
        assert_eq!(options.project(), "p-123");
        assert!(options.expand_summaries);
        assert_eq!(options.mparticle_identity_type, "email");
        assert_eq!(rest, [("region", "eu")]);
        assert!(ExportOptions::from_query(&[("mparticle_environment", "prod")]).is_err());
        assert_eq!(ExportOptions::default().project(), "default");
    }
}
