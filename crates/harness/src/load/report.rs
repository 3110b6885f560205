//! What `flagstream bench` reports: the JSON shape (`--json`) and the Markdown table.
//!
//! Every measure that needs the server's process (CPU, `/proc` memory) or its admin API
//! (delivered counts) is optional: `--url` without `--admin` has neither.

use serde::Serialize;

use super::target::RecoveryReport;
use crate::procstat::MemoryReport;
use crate::storage::MachineShare;

/// The measured numbers.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub wal_sync: String,
    pub connections: usize,
    pub batch_events: usize,
    /// `--pause-delivery`: the load ran with every destination paused.
    pub paused_delivery: bool,
    pub duration_seconds: f64,
    pub requests: u64,
    pub failed_requests: u64,
    pub accepted_events: u64,
    pub accepted_events_per_second: f64,
    pub accepted_mib_per_second: f64,
    pub ack_latency_p50_ms: f64,
    pub ack_latency_p99_ms: f64,
    pub ack_latency_max_ms: f64,
    /// Summed over destinations; `None` when the server's admin port is unknown.
    pub delivered_events: Option<u64>,
    pub delivered_events_per_second: Option<f64>,
    /// Seconds from the first request until every destination delivered everything accepted.
    pub delivery_caught_up_seconds: Option<f64>,
    pub destinations: Vec<DestinationReport>,
    /// `--pause-delivery`: from the resume until caught up.
    pub drain: Option<DrainReport>,
    pub cpu: CpuReport,
    /// During the load: was it bound by the disk?
    pub storage: StorageReport,
    /// The server's `VmHWM` (kernel's exact peak of the total) at the end.
    pub server_peak_rss_mib: Option<f64>,
    /// Sampled every 100 ms; the phase peaks are those of the drain.
    pub memory: Option<MemoryReport>,
    /// `--recovery`: the restart after SIGKILL, between the load and the drain.
    pub recovery: Option<RecoveryReport>,
}

/// One destination's count.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationReport {
    pub name: String,
    pub delivered_events: u64,
    /// `delivered_events >= accepted_events`: every accepted event reached it (at least once).
    pub delivered_all_accepted: bool,
    /// Delivered in the second half of the load per event accepted in it: about 1.0 when
    /// delivery keeps pace with ingest, below when the backlog grew. `None` with
    /// `--pause-delivery` (nothing is delivered during the load).
    pub pace: Option<f64>,
}

/// CPU time, seconds. "Per million events": per million accepted events for the server and
/// the generator, per million delivered events (over all destinations) for delivery.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuReport {
    /// The server from the first request until the load stopped.
    pub server_load_seconds: Option<f64>,
    /// The server from the end of the load (or the resume) until caught up.
    pub server_drain_seconds: Option<f64>,
    /// The load generator (this process) while it posted.
    pub generator_seconds: f64,
    /// Server, load + drain, per million accepted events.
    pub server_per_million_events: Option<f64>,
    /// `--pause-delivery` only: the server's load-phase CPU, nothing being delivered.
    pub ingest_per_million_events: Option<f64>,
    /// `--pause-delivery` only: the server's drain CPU per million delivered events.
    pub delivery_per_million_events: Option<f64>,
    pub generator_per_million_events: Option<f64>,
}

/// The server's storage writes and this machine's cores during the load ([`crate::storage`]).
/// A run with cores in iowait and the disk near its sequential rate was bound by the disk.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StorageReport {
    /// WAL appends and what destinations wrote (files), MiB per second of the load.
    pub server_write_mib_per_second: Option<f64>,
    pub server_write_bytes_per_accepted_event: Option<f64>,
    /// Fractions of all cores' time: busy, waiting for I/O with nothing to run, idle.
    pub machine_cpu: Option<MachineShare>,
}

/// The drain of the backlog after `--pause-delivery`.
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    /// Events delivered (over all destinations) from the resume until caught up.
    pub delivered_events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub caught_up: bool,
}

/// Events per million, when both are known and there were events.
pub fn per_million(seconds: Option<f64>, events: u64) -> Option<f64> {
    (events > 0).then_some(seconds? * 1e6 / events as f64)
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.digits$}"))
}

impl BenchReport {
    /// A Markdown table (for `docs/performance.md`).
    pub fn to_markdown(&self) -> String {
        let mut rows = vec![
            ("`--wal-sync`".to_string(), self.wal_sync.clone()),
            ("connections".into(), self.connections.to_string()),
            (
                "events per `/bulk` body".into(),
                self.batch_events.to_string(),
            ),
            (
                "delivery paused during the load".into(),
                self.paused_delivery.to_string(),
            ),
            (
                "load duration".into(),
                format!("{:.1} s", self.duration_seconds),
            ),
            (
                "requests (failed)".into(),
                format!("{} ({})", self.requests, self.failed_requests),
            ),
            ("accepted events".into(), self.accepted_events.to_string()),
            (
                "accepted events/s".into(),
                format!("{:.0}", self.accepted_events_per_second),
            ),
            (
                "accepted body MiB/s".into(),
                format!("{:.1}", self.accepted_mib_per_second),
            ),
            (
                "ack latency p50 / p99 / max".into(),
                format!(
                    "{:.2} / {:.2} / {:.2} ms",
                    self.ack_latency_p50_ms, self.ack_latency_p99_ms, self.ack_latency_max_ms
                ),
            ),
            (
                "delivered events/s (all destinations)".into(),
                opt(self.delivered_events_per_second, 0),
            ),
            (
                "delivery caught up after".into(),
                opt(self.delivery_caught_up_seconds, 1) + " s",
            ),
        ];
        rows.extend(self.destination_rows());
        rows.extend(self.drain_rows());
        rows.extend(self.cpu_rows());
        rows.extend(self.storage_rows());
        rows.extend(self.memory_rows());
        rows.extend(self.recovery_rows());
        let mut out = String::from("| measure | value |\n|---|---|\n");
        for (name, value) in rows {
            out.push_str(&format!("| {name} | {value} |\n"));
        }
        out
    }

    fn destination_rows(&self) -> Vec<(String, String)> {
        self.destinations
            .iter()
            .map(|dest| {
                let verdict = if dest.delivered_all_accepted {
                    "≥ accepted"
                } else {
                    "**< accepted**"
                };
                let pace = dest.pace.map_or(String::new(), |pace| {
                    format!(", pace {pace:.3} in the load's second half")
                });
                (
                    format!("delivered to `{}`", dest.name),
                    format!("{} ({verdict}{pace})", dest.delivered_events),
                )
            })
            .collect()
    }

    fn drain_rows(&self) -> Vec<(String, String)> {
        let Some(drain) = &self.drain else {
            return Vec::new();
        };
        let caught_up = if drain.caught_up {
            ""
        } else {
            " (not caught up)"
        };
        vec![(
            "drain after resume".into(),
            format!(
                "{} events in {:.1} s = {:.0} events/s{caught_up}",
                drain.delivered_events, drain.seconds, drain.events_per_second
            ),
        )]
    }

    fn cpu_rows(&self) -> Vec<(String, String)> {
        let cpu = &self.cpu;
        vec![
            (
                "server CPU: load / drain".into(),
                format!(
                    "{} / {} s",
                    opt(cpu.server_load_seconds, 2),
                    opt(cpu.server_drain_seconds, 2)
                ),
            ),
            (
                "server CPU s per million events (ingest + delivery)".into(),
                opt(cpu.server_per_million_events, 2),
            ),
            (
                "ingest CPU s per million events (paused run)".into(),
                opt(cpu.ingest_per_million_events, 2),
            ),
            (
                "delivery CPU s per million delivered events (drain)".into(),
                opt(cpu.delivery_per_million_events, 2),
            ),
            (
                "generator CPU s (per million events)".into(),
                format!(
                    "{:.2} ({})",
                    cpu.generator_seconds,
                    opt(cpu.generator_per_million_events, 2)
                ),
            ),
        ]
    }

    fn storage_rows(&self) -> Vec<(String, String)> {
        let storage = &self.storage;
        let written = format!(
            "{} ({})",
            opt(storage.server_write_mib_per_second, 1),
            opt(storage.server_write_bytes_per_accepted_event, 0)
        );
        let machine = storage
            .machine_cpu
            .map_or_else(|| "n/a".to_string(), |share| share.to_string());
        vec![
            (
                "server storage writes during the load: MiB/s (bytes per event)".into(),
                written,
            ),
            (
                "this machine's cores during the load: busy / iowait / idle".into(),
                machine,
            ),
        ]
    }

    fn memory_rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![(
            "server peak RSS (VmHWM)".to_string(),
            opt(self.server_peak_rss_mib, 1) + " MiB",
        )];
        let Some(memory) = &self.memory else {
            return rows;
        };
        rows.push((
            "sampled peak RSS / RssAnon / RssFile".into(),
            format!(
                "{:.1} / {:.1} / {:.1} MiB",
                memory.peak_rss_mib, memory.peak_anon_mib, memory.peak_file_mib
            ),
        ));
        rows.push((
            "end-of-run RSS / RssAnon / RssFile".into(),
            format!(
                "{:.1} / {:.1} / {:.1} MiB",
                memory.end_rss_mib, memory.end_anon_mib, memory.end_file_mib
            ),
        ));
        if memory.phase_peak_rss_mib.is_some() {
            rows.push((
                "drain peak RSS / RssAnon / RssFile".into(),
                format!(
                    "{} / {} / {} MiB",
                    opt(memory.phase_peak_rss_mib, 1),
                    opt(memory.phase_peak_anon_mib, 1),
                    opt(memory.phase_peak_file_mib, 1)
                ),
            ));
        }
        rows
    }

    fn recovery_rows(&self) -> Vec<(String, String)> {
        let Some(recovery) = &self.recovery else {
            return Vec::new();
        };
        let ms = |value: Option<u64>| value.map_or_else(|| "n/a".to_string(), |v| v.to_string());
        vec![(
            "recovery after SIGKILL: WAL size, start → ready (WAL open, payload ids)".into(),
            format!(
                "{:.1} MiB, {:.3} s ({} ms, {} ms)",
                recovery.wal_bytes as f64 / (1024.0 * 1024.0),
                recovery.ready_seconds,
                ms(recovery.wal_open_ms),
                ms(recovery.payload_id_recovery_ms)
            ),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_million_needs_events_and_seconds() {
        assert_eq!(per_million(Some(2.0), 4_000_000), Some(0.5));
        assert_eq!(per_million(Some(2.0), 0), None);
        assert_eq!(per_million(None, 10), None);
    }
}
