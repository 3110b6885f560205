//! What `flagstream top` shows, computed from two successive readings of the admin API.
//!
//! A [`Reading`] is one poll: `/v1/destinations` (per-destination counters, lag, retry state)
//! plus a few `/metrics` counters (ingest events and refusals). Rates are the difference of
//! two readings over the time between them, so the first screen shows totals and rates of 0.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;

/// One destination as `/v1/destinations` reports it (only what `top` shows).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DestinationReading {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub delivered_events: u64,
    pub dead_lettered_events: u64,
    pub in_flight_batches: u64,
    pub lag: LagReading,
    pub retry: Option<RetryReading>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct LagReading {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct RetryReading {
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct WalReading {
    pub bytes_on_disk: u64,
    pub capacity_bytes: u64,
    pub corrupt_records: u64,
}

/// `GET /v1/destinations`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DestinationsReading {
    pub destinations: Vec<DestinationReading>,
    pub wal: Option<WalReading>,
}

/// One poll of the admin API.
#[derive(Debug, Clone)]
pub struct Reading {
    pub at: Instant,
    pub status: DestinationsReading,
    pub ingest_events: f64,
    pub ingest_rejected: f64,
    /// `flagstream_dest_retries_total` per destination.
    pub retries: BTreeMap<String, f64>,
}

/// One destination's line on the screen.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationRow {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub events_per_second: f64,
    pub delivered_events: u64,
    pub lag_records: u64,
    pub lag_seconds: f64,
    pub retries_per_second: f64,
    pub retry_attempts: u32,
    pub dead_lettered_events: u64,
    pub last_error: Option<String>,
}

/// The whole screen.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub ingest_events_per_second: f64,
    pub ingest_rejected_per_second: f64,
    pub ingest_events_total: f64,
    pub wal_used_bytes: u64,
    pub wal_capacity_bytes: u64,
    pub wal_corrupt_records: u64,
    pub destinations: Vec<DestinationRow>,
}

impl View {
    /// The view of `current`, with rates against `previous` (none: rates are 0).
    pub fn new(previous: Option<&Reading>, current: &Reading) -> View {
        let seconds = previous
            .map(|p| current.at.duration_since(p.at).as_secs_f64())
            .filter(|s| *s > 0.0);
        let rate = |now: f64, before: Option<f64>| match (seconds, before) {
            (Some(seconds), Some(before)) if now >= before => (now - before) / seconds,
            _ => 0.0,
        };
        let destinations = current
            .status
            .destinations
            .iter()
            .map(|d| {
                let before =
                    previous.and_then(|p| p.status.destinations.iter().find(|b| b.name == d.name));
                let retries = current.retries.get(&d.name).copied().unwrap_or(0.0);
                let retries_before = previous.and_then(|p| p.retries.get(&d.name).copied());
                DestinationRow {
                    name: d.name.clone(),
                    kind: d.kind.clone(),
                    state: d.state.clone(),
                    events_per_second: rate(
                        d.delivered_events as f64,
                        before.map(|b| b.delivered_events as f64),
                    ),
                    delivered_events: d.delivered_events,
                    lag_records: d.lag.records,
                    lag_seconds: d.lag.seconds,
                    retries_per_second: rate(retries, retries_before),
                    retry_attempts: d.retry.map_or(0, |r| r.attempts),
                    dead_lettered_events: d.dead_lettered_events,
                    last_error: d.last_error.clone(),
                }
            })
            .collect();
        let wal = current.status.wal.unwrap_or_default();
        View {
            ingest_events_per_second: rate(
                current.ingest_events,
                previous.map(|p| p.ingest_events),
            ),
            ingest_rejected_per_second: rate(
                current.ingest_rejected,
                previous.map(|p| p.ingest_rejected),
            ),
            ingest_events_total: current.ingest_events,
            wal_used_bytes: wal.bytes_on_disk,
            wal_capacity_bytes: wal.capacity_bytes,
            wal_corrupt_records: wal.corrupt_records,
            destinations,
        }
    }
}

/// Sum of every sample of `family` in a Prometheus text exposition, grouped by the value of
/// `label` (`None`: one group, key `""`). Unparseable lines are skipped: `top` is a viewer,
/// and a metric it cannot read shows as 0 rather than stopping it.
pub fn sum_by(exposition: &str, family: &str, label: Option<&str>) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(inner) => match inner.split_once('}') {
                Some((labels, value)) => (labels, value),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let key = label.map_or(String::new(), |label| label_value(labels, label));
        *sums.entry(key).or_insert(0.0) += value;
    }
    sums
}

/// The value of `name` in `a="x",b="y"` (empty when absent). Label values flagstream exports
/// (destination names, routes, reasons) contain no quotes or commas.
fn label_value(labels: &str, name: &str) -> String {
    labels
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim().trim_matches('"').to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const METRICS: &str = "\
# TYPE flagstream_ingest_events_total counter
flagstream_ingest_events_total{route=\"bulk\"} 100
flagstream_ingest_events_total{route=\"collector\"} 20
flagstream_ingest_events_total_other 5
flagstream_dest_retries_total{destination=\"a\"} 3
flagstream_dest_retries_total{destination=\"b\"} 1
flagstream_wal_bytes 4096
";

    #[test]
    fn samples_are_summed_by_label() {
        let total = sum_by(METRICS, "flagstream_ingest_events_total", None);
        assert_eq!(total[""], 120.0);
        let retries = sum_by(
            METRICS,
            "flagstream_dest_retries_total",
            Some("destination"),
        );
        assert_eq!((retries["a"], retries["b"]), (3.0, 1.0));
        assert_eq!(sum_by(METRICS, "flagstream_wal_bytes", None)[""], 4096.0);
        assert!(sum_by(METRICS, "flagstream_missing", None).is_empty());
    }

    fn reading(at: Instant, delivered: u64, ingest: f64) -> Reading {
        Reading {
            at,
            status: DestinationsReading {
                destinations: vec![DestinationReading {
                    name: "archive".into(),
                    delivered_events: delivered,
                    ..Default::default()
                }],
                wal: None,
            },
            ingest_events: ingest,
            ingest_rejected: 0.0,
            retries: BTreeMap::new(),
        }
    }

    #[test]
    fn rates_are_differences_over_the_interval() {
        let start = Instant::now();
        let first = reading(start, 1_000, 5_000.0);
        let second = reading(start + Duration::from_secs(2), 3_000, 9_000.0);
        let view = View::new(Some(&first), &second);
        assert_eq!(view.ingest_events_per_second, 2_000.0);
        assert_eq!(view.destinations[0].events_per_second, 1_000.0);
        assert_eq!(view.destinations[0].delivered_events, 3_000);
        let alone = View::new(None, &second);
        assert_eq!(alone.ingest_events_per_second, 0.0);
        // A restarted server (counters reset) shows 0, not a negative rate.
        let restarted = reading(start + Duration::from_secs(4), 10, 10.0);
        assert_eq!(
            View::new(Some(&second), &restarted).ingest_events_per_second,
            0.0
        );
    }
}
