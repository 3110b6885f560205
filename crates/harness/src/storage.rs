//! Whether a benchmark was bound by the disk rather than by the CPU, read from Linux's
//! `/proc`: the bytes the server sent to storage (`write_bytes` of `/proc/<pid>/io`) and how
//! this machine's cores spent the time (the `cpu` line of `/proc/stat`: busy, waiting for I/O
//! with nothing else to run, idle).
//!
//! `write_bytes` counts what the process caused to be written: its direct (`O_DIRECT`)
//! writes and the page-cache pages it dirtied (the WAL's appends, files written through the
//! cache), when they were dirtied, not when they reached the device. Over a run of seconds the
//! two agree; a burst shorter than the kernel's writeback delay is counted before the disk
//! saw it.
//!
//! A run whose cores sat in iowait while the disk took writes at its sequential rate was
//! bound by the disk: less CPU per event would not have raised it (docs/performance.md).

use serde::Serialize;

/// Bytes the process has caused to be written to storage so far; `None` when unreadable (the
/// process is gone, or `/proc/<pid>/io` is not permitted).
pub fn write_bytes(pid: u32) -> Option<u64> {
    parse_write_bytes(&std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?)
}

/// The `write_bytes:` field of a `/proc/<pid>/io` text.
fn parse_write_bytes(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// This machine's CPU time so far, over all cores, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineTicks {
    busy: u64,
    iowait: u64,
    idle: u64,
}

/// Read `/proc/stat`; `None` where it is unreadable.
pub fn machine_ticks() -> Option<MachineTicks> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The aggregate `cpu` line: user nice system idle iowait irq softirq steal (guest time is
/// already inside user and nice). Steal counts as busy: the host ran something else.
fn parse_machine_ticks(stat: &str) -> Option<MachineTicks> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
        return None;
    };
    Some(MachineTicks {
        busy: user + nice + system + irq + softirq + steal,
        iowait,
        idle,
    })
}

/// How this machine's cores spent a span of time, as fractions of all cores' time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MachineShare {
    pub busy: f64,
    pub iowait: f64,
    pub idle: f64,
}

impl std::fmt::Display for MachineShare {
    /// `busy / iowait / idle %`, whole percents.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let percent = |fraction: f64| (fraction * 100.0).round();
        write!(
            f,
            "{} / {} / {} %",
            percent(self.busy),
            percent(self.iowait),
            percent(self.idle)
        )
    }
}

impl MachineTicks {
    /// The split from `earlier` to `self`; `None` when no tick passed.
    pub fn since(&self, earlier: &MachineTicks) -> Option<MachineShare> {
        let busy = self.busy.checked_sub(earlier.busy)?;
        let iowait = self.iowait.checked_sub(earlier.iowait)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        let total = (busy + iowait + idle) as f64;
        (total > 0.0).then(|| MachineShare {
            busy: busy as f64 / total,
            iowait: iowait as f64 / total,
            idle: idle as f64 / total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_bytes_is_read_from_its_line() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\n\
                  write_bytes: 123456789\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_write_bytes(io), Some(123_456_789));
        assert_eq!(parse_write_bytes("rchar: 10\n"), None);
    }

    #[test]
    fn the_machine_split_counts_steal_as_busy_and_ignores_per_core_lines() {
        let before = "cpu  100 0 50 1000 10 5 5 0 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        let after = "cpu  160 0 70 1100 110 10 10 40 0 0\ncpu0 9 9 9 9 9 9 9 9 0 0\n";
        let (before, after) = (
            parse_machine_ticks(before).unwrap(),
            parse_machine_ticks(after).unwrap(),
        );
        // 60 + 20 + 5 + 5 + 40 busy, 100 iowait, 100 idle.
        let share = after.since(&before).unwrap();
        assert_eq!(
            (share.busy, share.iowait, share.idle),
            (130.0 / 330.0, 100.0 / 330.0, 100.0 / 330.0)
        );
        assert_eq!(share.to_string(), "39 / 30 / 30 %");
        assert_eq!(before.since(&before), None, "no time passed");
        assert_eq!(before.since(&after), None, "counters went backwards");
        assert_eq!(parse_machine_ticks("cpu  1 2 3\n"), None);
    }
}
