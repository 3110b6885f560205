//! Kill -9 test: a child process appends with `always` sync from several tasks and reports
//! every acknowledged seq; the parent SIGKILLs it at random moments, reopens the WAL and
//! proves every acknowledged record is present and intact. Repeated on the same directory,
//! so each round also recovers what the previous kill left behind.
//!
//! The child is this test binary re-executed with `WAL_CRASH_CHILD_DIR` set.

use crate::support::wal as wal_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flagstream::wal::{Wal, WalOptions};
use rand::Rng;
use wal_support::*;

const CHILD_ENV: &str = "WAL_CRASH_CHILD_DIR";
const ROUNDS: usize = 24;
const TASKS: u64 = 8;

fn crash_options(dir: &std::path::Path) -> WalOptions {
    let mut options = options(dir);
    options.segment_bytes = 256 * 1024;
    options.max_bytes = 1 << 30;
    options
}

/// Key of the n-th append of a task in a round: unique across rounds and tasks.
fn key_of(round: u64, task: u64, counter: u64) -> u64 {
    (round << 40) | (task << 32) | counter
}

fn len_of(key: u64) -> usize {
    (key.wrapping_mul(2_654_435_761) % 12_000) as usize
}

/// The child: append forever, print `ACK <seq> <key>` after each acknowledged append.
fn child(dir: &str, round: u64) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let wal = Wal::open(crash_options(std::path::Path::new(dir))).unwrap();
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let wal = wal.clone();
            tasks.push(tokio::spawn(async move {
                for counter in 0.. {
                    let key = key_of(round, task, counter);
                    let seq = append(&wal, key, len_of(key)).await.unwrap();
                    let line = format!("ACK {seq} {key}\n");
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(line.as_bytes()).unwrap();
                    stdout.flush().unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    unreachable!("the child appends until it is killed")
}

#[test]
fn kill_dash_nine_never_loses_an_acknowledged_append() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let round = std::env::var("WAL_CRASH_ROUND").unwrap().parse().unwrap();
        child(&dir, round);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut retired_so_far = 0;
    let started = Instant::now();
    for round in 0..ROUNDS as u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "wal_crash::kill_dash_nine_never_loses_an_acknowledged_append",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("WAL_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_line_sender, first_line) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.is_empty() {
                    let _ = first_line_sender.send(());
                }
                lines.push(line);
            }
            lines
        });
        // Wait until it is appending, then kill it at a random moment mid-flight.
        let _ = first_line.recv_timeout(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(rng.random_range(0..120)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let mut round_acks = 0;
        for line in lines {
            // A line cut by the kill is not an acknowledgement we can trust to be complete.
            let mut fields = line.split(' ');
            if let (Some("ACK"), Some(seq), Some(key), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            {
                if let (Ok(seq), Ok(key)) = (seq.parse(), key.parse()) {
                    assert!(
                        acked.insert(seq, key).is_none(),
                        "seq {seq} acknowledged twice"
                    );
                    round_acks += 1;
                }
            }
        }

        let wal = Wal::open(crash_options(dir.path())).unwrap();
        // Recovery scans only the unsealed tail, so what it counts is this kill's damage.
        // Appends copy under the writer lock: one kill tears at most one record.
        let torn_now = wal.stats().corrupt_records;
        assert!(
            torn_now <= 1,
            "round {round}: {torn_now} records lost to damage by one kill"
        );
        retired_so_far += torn_now;
        let records = read_all(&wal, 1);
        // Seqs only grow. A gap is a torn last record whose seq recovery retired (the child
        // was killed mid-copy); such a record was never acknowledged.
        for pair in records.windows(2) {
            assert!(
                pair[1].seq > pair[0].seq,
                "round {round}: seqs out of order"
            );
            for missing in pair[0].seq + 1..pair[1].seq {
                assert!(
                    !acked.contains_key(&missing),
                    "round {round}: acknowledged seq {missing} retired"
                );
            }
        }
        let by_seq: BTreeMap<u64, _> = records.iter().map(|record| (record.seq, record)).collect();
        for (&seq, &key) in &acked {
            let record = by_seq
                .get(&seq)
                .unwrap_or_else(|| panic!("round {round}: acknowledged seq {seq} is missing"));
            assert_intact(record, key, len_of(key));
        }
        // Reading from seq 1 meets the torn records of earlier rounds again (each process
        // counts the damage it reads once); anything beyond those is new damage.
        assert!(
            wal.stats().corrupt_records <= retired_so_far,
            "round {round}: {} records lost to damage, only {retired_so_far} torn by the kills",
            wal.stats().corrupt_records
        );
        eprintln!(
            "round {round}: {round_acks} acks, {} records stored, {torn_now} torn by this kill, \
             {} damaged seen by the reader",
            records.len(),
            wal.stats().corrupt_records
        );
    }
    assert!(
        acked.len() > ROUNDS,
        "the children acknowledged too little to prove anything: {}",
        acked.len()
    );
    eprintln!(
        "{ROUNDS} kills, {} acknowledged appends checked in {:?}",
        acked.len(),
        started.elapsed()
    );
}
