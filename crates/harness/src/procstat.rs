//! What a process costs, read from Linux's `/proc`: CPU time (`/proc/<pid>/stat`) and the
//! resident-memory split (`/proc/<pid>/status`), plus a sampler that tracks peaks of the
//! latter while a benchmark runs.
//!
//! CPU is `utime + stime` of the whole process (every thread, including threads that have
//! already exited, which `/proc/<pid>/task/*` would miss), in clock ticks converted with the
//! system's `CLK_TCK`. Memory is `VmRSS` = `RssAnon` (heap: request bodies, batches, decode
//! buffers) + `RssFile` (file-backed pages: the mapped WAL segments and the executable) +
//! `RssShmem`.
//!
//! The sampler reads a local process' `/proc` files, or, for a server on another host (or
//! one whose pid is unknown), the server's own `flagstream_process_resident_{anon,file}_bytes`
//! gauges from its admin `/metrics`. Peaks are of 100 ms samples, so a spike shorter than
//! that can be missed; `VmHWM` (reported beside them) is the kernel's peak of the total, as
//! precise as its per-CPU RSS counters (a sample may read up to a batch of pages per CPU
//! above it).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use crate::client::{self, Endpoint};

/// How often the sampler reads memory.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// The server's gauges with the same numbers (`flagstream::metrics`).
pub const RESIDENT_ANON_METRIC: &str = "flagstream_process_resident_anon_bytes";
pub const RESIDENT_FILE_METRIC: &str = "flagstream_process_resident_file_bytes";

const MIB: f64 = 1024.0 * 1024.0;

/// User + system CPU seconds the process has used so far; `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) is in parentheses and may itself contain spaces or `)`, so fields are counted from the
/// last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// One reading of resident memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resident {
    /// `VmRSS` (for the metrics source: anon + file).
    pub total: u64,
    pub anon: u64,
    pub file: u64,
}

impl Resident {
    fn max(self, other: Resident) -> Resident {
        Resident {
            total: self.total.max(other.total),
            anon: self.anon.max(other.anon),
            file: self.file.max(other.file),
        }
    }
}

/// `VmRSS` / `RssAnon` / `RssFile` of a `/proc/<pid>/status` text.
fn parse_status(status: &str) -> Option<Resident> {
    let kib = |name: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        let value: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(value * 1024)
    };
    Some(Resident {
        total: kib("VmRSS:")?,
        anon: kib("RssAnon:")?,
        file: kib("RssFile:")?,
    })
}

/// Anon and file gauges from a Prometheus text exposition.
fn parse_metrics(text: &str) -> Option<Resident> {
    let gauge = |name: &str| -> Option<u64> {
        let line = text
            .lines()
            .find(|line| line.starts_with(name) && !line.starts_with('#'))?;
        line.rsplit_once(' ')?
            .1
            .parse::<f64>()
            .ok()
            .map(|v| v as u64)
    };
    let anon = gauge(RESIDENT_ANON_METRIC)?;
    let file = gauge(RESIDENT_FILE_METRIC)?;
    Some(Resident {
        total: anon + file,
        anon,
        file,
    })
}

/// Where the sampler reads memory from.
#[derive(Debug, Clone)]
pub enum MemorySource {
    /// A local process: `/proc/<pid>/status`.
    Process(u32),
    /// A server's admin listener: its resident-memory gauges.
    Metrics(Endpoint),
}

impl MemorySource {
    pub async fn read(&self) -> Option<Resident> {
        match self {
            MemorySource::Process(pid) => {
                parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
            }
            MemorySource::Metrics(admin) => {
                let response = client::request_to(
                    admin,
                    http::Method::GET,
                    "/metrics",
                    &[],
                    Default::default(),
                )
                .await
                .ok()?;
                parse_metrics(&response.text())
            }
        }
    }
}

/// Peak and last readings; the phase peak restarts with [`MemorySampler::begin_phase`].
#[derive(Debug, Default)]
struct Samples {
    source: Option<MemorySource>,
    peak: Resident,
    phase_peak: Option<Resident>,
    last: Resident,
    count: u64,
}

/// The memory part of a report, in MiB. Each peak is the largest reading of its own field,
/// so peak anon + peak file can exceed peak RSS (they may peak at different moments); the
/// `end_*` fields are one reading and add up.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub samples: u64,
    pub peak_rss_mib: f64,
    pub peak_anon_mib: f64,
    pub peak_file_mib: f64,
    pub end_rss_mib: f64,
    pub end_anon_mib: f64,
    pub end_file_mib: f64,
    /// Peaks since the phase began (the drain after a paused load), when one was marked.
    pub phase_peak_rss_mib: Option<f64>,
    pub phase_peak_anon_mib: Option<f64>,
    pub phase_peak_file_mib: Option<f64>,
}

/// A background task reading memory every [`SAMPLE_INTERVAL`] until dropped.
pub struct MemorySampler {
    samples: Arc<Mutex<Samples>>,
    task: tokio::task::JoinHandle<()>,
}

impl MemorySampler {
    pub fn start(source: MemorySource) -> MemorySampler {
        let samples = Arc::new(Mutex::new(Samples {
            source: Some(source),
            ..Samples::default()
        }));
        let shared = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
            loop {
                ticks.tick().await;
                let source = shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .source
                    .clone();
                let reading = match source {
                    Some(source) => source.read().await,
                    None => None,
                };
                if let Some(reading) = reading {
                    record(&shared, reading);
                }
            }
        });
        MemorySampler { samples, task }
    }

    /// Read from here on (a restarted server has a new pid).
    pub fn set_source(&self, source: MemorySource) {
        self.lock().source = Some(source);
    }

    /// Start tracking a separate peak from now on.
    pub fn begin_phase(&self) {
        self.lock().phase_peak = Some(Resident::default());
    }

    /// Take one last reading and report.
    pub async fn finish(self) -> MemoryReport {
        self.task.abort();
        let source = self.lock().source.clone();
        if let Some(reading) = match source {
            Some(source) => source.read().await,
            None => None,
        } {
            record(&self.samples, reading);
        }
        let samples = self.lock();
        let mib = |bytes: u64| bytes as f64 / MIB;
        MemoryReport {
            samples: samples.count,
            peak_rss_mib: mib(samples.peak.total),
            peak_anon_mib: mib(samples.peak.anon),
            peak_file_mib: mib(samples.peak.file),
            end_rss_mib: mib(samples.last.total),
            end_anon_mib: mib(samples.last.anon),
            end_file_mib: mib(samples.last.file),
            phase_peak_rss_mib: samples.phase_peak.map(|peak| mib(peak.total)),
            phase_peak_anon_mib: samples.phase_peak.map(|peak| mib(peak.anon)),
            phase_peak_file_mib: samples.phase_peak.map(|peak| mib(peak.file)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Samples> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn record(samples: &Mutex<Samples>, reading: Resident) {
    let mut samples = samples.lock().unwrap_or_else(PoisonError::into_inner);
    samples.peak = samples.peak.max(reading);
    samples.phase_peak = samples.phase_peak.map(|peak| peak.max(reading));
    samples.last = reading;
    samples.count += 1;
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_from_the_last_parenthesis() {
        let stat = "4242 (tokio (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 9";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn status_gives_the_resident_split() {
        let status = "Name:\tflagstream\nVmHWM:\t  9000 kB\nVmRSS:\t  8000 kB\n\
                      RssAnon:\t  5000 kB\nRssFile:\t  2990 kB\nRssShmem:\t 10 kB\n";
        let resident = parse_status(status).unwrap();
        assert_eq!(resident.total, 8000 * 1024);
        assert_eq!(resident.anon, 5000 * 1024);
        assert_eq!(resident.file, 2990 * 1024);
        assert_eq!(parse_status("VmRSS: 1 kB\n"), None);
    }

    #[test]
    fn metrics_give_the_resident_split() {
        let text = format!(
            "# TYPE {RESIDENT_ANON_METRIC} gauge\n{RESIDENT_ANON_METRIC} 2048\n\
             {RESIDENT_FILE_METRIC} 1024\n"
        );
        let resident = parse_metrics(&text).unwrap();
        assert_eq!(
            (resident.anon, resident.file, resident.total),
            (2048, 1024, 3072)
        );
    }

    #[test]
    fn this_process_has_cpu_and_memory() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let resident = parse_status(&status).unwrap();
        assert!(resident.anon > 0 && resident.total >= resident.anon);
    }
}
