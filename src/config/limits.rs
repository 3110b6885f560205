//! Limits that agree: the largest body ingest accepts against what each configured destination
//! takes per item, checked once the destinations are built.
//!
//! * A destination that takes **raw records** (one item per stored record) gets the whole body
//!   plus its stored metadata as one item: a body ingest accepts but the destination cannot
//!   take would be dead-lettered whole, every time. Startup refuses that configuration (exit
//!   2), naming `--max-body-bytes`, the destination and the largest body that fits.
//! * A destination that takes **mapped events** gets one item per event. A body holds many
//!   events, so a per-event limit below the body limit is normal (Kinesis takes 1 MiB per
//!   record, Segment 32 KB per message) and refusing it would make such destinations unusable
//!   with ordinary SDK batches; instead startup warns, naming the destination and its limit:
//!   events that large are dead-lettered with the reason (their neighbours are delivered), and
//!   `--max-body-bytes` at the value given refuses them at ingest instead.
//! * The embedded default destination (a file destination) is sized so the default body limit
//!   fits it ([`default_file_max_bytes`]).

use crate::delivery::ConfiguredDestination;
use crate::dest::Input;

use super::{ConfigError, RECORD_METADATA_BYTES};

/// Room a mapped event needs beyond its own JSON: the export envelope or schema fields around
/// it (ids, project, environment, timestamps). An estimate: an event within this much of a
/// destination's limit may still be dead-lettered as oversized after mapping.
pub const MAPPED_EVENT_MARGIN: u64 = 4 * 1024;

/// Check `--max-body-bytes` (`max_body`) against every destination; returns the warnings to
/// show (see the module doc), or the error for a raw-record destination that cannot take it.
pub fn check_destination_limits(
    destinations: &[ConfiguredDestination],
    max_body: u64,
) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    for configured in destinations {
        let destination = &configured.destination;
        let limits = configured.settings.effective_limits(destination.limits());
        let item_limit = limits.max_item_bytes as u64;
        let overhead = limits.per_item_overhead as u64;
        let name = &configured.settings.name;
        let kind = destination.kind();
        let (extra, what) = match destination.input() {
            Input::RawRecords => (RECORD_METADATA_BYTES, "record"),
            Input::MappedEvents => (MAPPED_EVENT_MARGIN, "event"),
        };
        let needed = max_body.saturating_add(extra).saturating_add(overhead);
        if needed <= item_limit {
            continue;
        }
        let fits = item_limit.saturating_sub(extra + overhead);
        let message = format!(
            "--max-body-bytes {} lets one {what} be larger than destination `{name}` ({kind}) \
             takes ({} per {what}, with {} of room for metadata)",
            bytesize::ByteSize(max_body),
            bytesize::ByteSize(item_limit),
            bytesize::ByteSize(extra + overhead),
        );
        match destination.input() {
            Input::RawRecords => {
                return Err(ConfigError::invalid(
                    "max-body-bytes",
                    format!(
                        "{message}: such bodies could never be delivered; use --max-body-bytes \
                         {fits} or less"
                    ),
                ))
            }
            Input::MappedEvents => warnings.push(format!(
                "{message}: larger events are dead-lettered with the reason (their neighbours \
                 are delivered); to refuse them at ingest instead, use --max-body-bytes {fits} \
                 or less"
            )),
        }
    }
    Ok(warnings)
}

/// `max_bytes` of the embedded default file destination: its usual 8 MiB, or enough for one
/// mapped event as large as the largest body.
pub fn default_file_max_bytes(max_body: u64) -> u64 {
    const FILE_DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024;
    FILE_DEFAULT_MAX_BYTES.max(max_body + MAPPED_EVENT_MARGIN + 1)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::future::BoxFuture;

    use super::*;
    use crate::delivery::{DeliveryDefaults, DeliverySettings};
    use crate::dest::{Batch, BatchLimits, DestError, Destination, SendOutcome};
    use crate::event::Schema;

    /// A destination that only declares its input and per-item limit.
    #[derive(Debug)]
    struct Declared {
        input: Input,
        max_item_bytes: usize,
    }

    impl Destination for Declared {
        fn name(&self) -> &str {
            "declared"
        }
        fn kind(&self) -> &'static str {
            "declared-kind"
        }
        fn schema(&self) -> Schema {
            Schema::default()
        }
        fn input(&self) -> Input {
            self.input
        }
        fn limits(&self) -> BatchLimits {
            BatchLimits {
                max_item_bytes: self.max_item_bytes,
                max_bytes: self.max_item_bytes,
                ..BatchLimits::default()
            }
        }
        fn send<'a>(&'a self, _: &'a Batch) -> BoxFuture<'a, SendOutcome> {
            Box::pin(async { SendOutcome::Delivered })
        }
        fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn configured(name: &str, input: Input, max_item_bytes: usize) -> ConfiguredDestination {
        ConfiguredDestination {
            settings: DeliverySettings::named(name, &DeliveryDefaults::default()),
            destination: Arc::new(Declared {
                input,
                max_item_bytes,
            }),
        }
    }

    #[test]
    fn a_raw_destination_that_cannot_take_the_largest_body_is_refused_with_a_value_that_works() {
        let raw = [configured("forward", Input::RawRecords, 1 << 20)];
        let err = check_destination_limits(&raw, 10 << 20)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--max-body-bytes") && err.contains("`forward`"),
            "{err}"
        );
        let fits: u64 = err
            .rsplit("--max-body-bytes ")
            .next()
            .and_then(|rest| rest.split(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no value in {err}"));
        assert_eq!(
            check_destination_limits(&raw, fits).unwrap(),
            Vec::<String>::new()
        );
        assert!(check_destination_limits(&raw, fits + 1).is_err());
    }

    #[test]
    fn a_mapped_destination_with_a_smaller_event_limit_is_a_warning() {
        let mapped = [
            configured("roomy", Input::MappedEvents, 64 << 20),
            configured("kinesis", Input::MappedEvents, 1 << 20),
        ];
        let warnings = check_destination_limits(&mapped, 10 << 20).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("`kinesis`") && warnings[0].contains("dead-lettered"));
        assert!(check_destination_limits(&mapped, 512 << 10)
            .unwrap()
            .is_empty());
    }
}
