//! Durability proven by killing the process, in the style of sled's crash
//! tests: the parent test re-runs this test binary as a child that commits
//! batches with 32 concurrent committers and prints each acknowledged batch
//! and its receipt; the parent SIGKILLs it at a random moment, reopens the
//! store and checks that every acknowledged batch is there and complete, that
//! no batch is partly there, and that the event seqs are exactly 1..last_seq.
//! It does this many times on the same directory, so the checks cover every
//! earlier run's batches too.
//!
//! A second child injects a persist fault in the middle of its run and exits
//! as the service does after a storage fault (fail-stop, no clean close): the
//! reopened store has every acknowledged batch and none that was refused.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sugang_storage::{Batch, Journal, JournalOptions, Receipt, Record, Store, StoreOptions, Table};

/// Where the child keeps its store; without it, `crash_child` does nothing.
const DIR_VAR: &str = "SUGANG_CRASH_DIR";
/// Which run the child is, so batch ids stay unique across runs.
const RUN_VAR: &str = "SUGANG_CRASH_RUN";
/// Set: the child injects a persist fault after this many acknowledgements.
const FAULT_VAR: &str = "SUGANG_CRASH_FAULT_AFTER";
const RUNS: u64 = 24;
const COMMITTERS: u64 = 32;
/// How long a child may live if no parent kills it (the parent died).
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Row {
    batch: u64,
    filler: String,
}
impl Record for Row {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Emitted {
    batch: u64,
    index: u8,
}
impl Record for Emitted {}

/// `(batch, part)`: every batch writes its own rows.
const ROWS: Table<(u64, u32), Row> = Table::new("rows");

/// How many rows batch `id` writes: 1 to 3.
fn rows_of(id: u64) -> u32 {
    1 + (id % 3) as u32
}

/// How many events batch `id` appends: 1 or 2.
fn events_of(id: u64) -> u8 {
    1 + (id / 3 % 2) as u8
}

fn batch_of(id: u64) -> Batch {
    let mut batch = Batch::new();
    for part in 0..rows_of(id) {
        batch.put(&ROWS, &(id, part), &Row { batch: id, filler: "x".repeat(64) }).unwrap();
    }
    for index in 0..events_of(id) {
        batch.append(id, &Emitted { batch: id, index }).unwrap();
    }
    batch
}

/// The child: commits batches with many committers until it is killed,
/// printing `ack:<batch>:<first_seq>:<seq>` for each acknowledged one.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else { return };
    let run: u64 = std::env::var(RUN_VAR).unwrap().parse().unwrap();
    let fault_after: Option<u64> = std::env::var(FAULT_VAR).ok().map(|n| n.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let store = Store::open(&dir, StoreOptions::default()).unwrap();
        let (journal, _task) = Journal::start(&store, JournalOptions::default()).unwrap();
        let acks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        for committer in 0..COMMITTERS {
            let journal = journal.clone();
            let acks = acks.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let id = run << 40 | committer << 24 | i;
                    let line = match journal.commit(batch_of(id)).await {
                        Ok(receipt) => format!("ack:{id}:{}:{}\n", receipt.first_seq.unwrap(), receipt.seq),
                        Err(_) if fault_after.is_some() => format!("refused:{id}\n"),
                        Err(e) => panic!("batch {id}: {e}"),
                    };
                    if fault_after.is_some_and(|n| acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == n) {
                        journal.faults().fail_next_flushes(1);
                    }
                    // Not println!: the test harness would capture it.
                    let mut out = std::io::stdout().lock();
                    if out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_err() {
                        std::process::exit(1);
                    }
                    if line.starts_with("refused:") {
                        break;
                    }
                }
            });
        }
        // After a fault the service drains and exits, never closing the
        // store cleanly: so does the child, once every committer is refused.
        let mut failure = store.failure();
        let waited = tokio::time::timeout(CHILD_LIFETIME, failure.wait_for(|f| f.is_some())).await;
        if waited.is_ok() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            std::process::exit(3);
        }
    });
    std::process::exit(2);
}

/// Runs one child on `dir` and kills it at a random moment; returns the
/// receipts it acknowledged before it died.
fn run_child(dir: &Path, run: u64) -> BTreeMap<u64, Receipt> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .env(RUN_VAR, run.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut line = Vec::new();
        // A line without its newline was cut short by the kill: not an ack.
        while stdout.read_until(b'\n', &mut line).unwrap_or(0) > 0 && line.ends_with(b"\n") {
            if lines.send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                break;
            }
            line.clear();
        }
    });

    let mut acks = Vec::new();
    if run % 4 == 3 {
        // Some runs die early, maybe during recovery or before any commit.
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..150)));
    } else {
        // The rest die a random while after their first acknowledgement.
        acks.push(received.recv_timeout(Duration::from_secs(30)).expect("the child acknowledges a batch"));
        std::thread::sleep(Duration::from_millis(fastrand::u64(30..300)));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    acks.extend(received.try_iter());

    let mut receipts = BTreeMap::new();
    for line in acks {
        if line.contains("refused:") {
            continue;
        }
        let Some((_, ack)) = line.trim_end().split_once("ack:") else { continue };
        let fields: Vec<u64> = ack.split(':').map(|f| f.parse().unwrap()).collect();
        let [id, first_seq, seq] = fields[..] else { panic!("a malformed ack line: {line:?}") };
        receipts.insert(id, Receipt { first_seq: Some(first_seq), seq });
    }
    receipts
}

/// Reopens the store and checks it against every acknowledgement so far.
fn check(dir: &Path, acked: &BTreeMap<u64, Receipt>) -> Store {
    let store = Store::open(dir, StoreOptions::default()).expect("the killed child's store reopens");
    let log = store.events();
    let last_seq = log.last_seq();
    let events = log.read::<Emitted>(1, usize::MAX).unwrap();
    assert_eq!(events.len() as u64, last_seq, "the log holds exactly 1..{last_seq}");
    let mut seqs_of: BTreeMap<u64, Vec<(u64, u8)>> = BTreeMap::new();
    for (expected, event) in (1..).zip(&events) {
        assert_eq!(event.seq, expected, "a gap or a duplicate in the event seqs");
        assert_eq!(event.key, event.event.batch);
        seqs_of.entry(event.event.batch).or_default().push((event.seq, event.event.index));
    }

    let mut parts_of: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    for row in store.scan(&ROWS) {
        let ((id, part), row) = row.unwrap();
        assert_eq!(row.batch, id);
        parts_of.entry(id).or_default().insert(part);
    }

    // No batch is partly present: all of its rows and all of its events, in a row.
    assert_eq!(seqs_of.keys().collect::<Vec<_>>(), parts_of.keys().collect::<Vec<_>>(), "rows without events");
    for (id, seqs) in &seqs_of {
        assert_eq!(parts_of[id], (0..rows_of(*id)).collect(), "the rows of batch {id}");
        let first = seqs[0].0;
        let expected: Vec<(u64, u8)> = (0..events_of(*id)).map(|index| (first + u64::from(index), index)).collect();
        assert_eq!(seqs, &expected, "the events of batch {id}");
    }

    // Every acknowledged batch is there, at the seqs its receipt gave.
    for (id, receipt) in acked {
        let seqs = seqs_of.get(id).unwrap_or_else(|| panic!("acknowledged batch {id} is lost"));
        assert_eq!(Some(seqs[0].0), receipt.first_seq, "batch {id}");
        assert_eq!(seqs.last().unwrap().0, receipt.seq, "batch {id}");
    }
    store
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut acked = BTreeMap::new();
    let mut survivors = 0;
    for run in 0..RUNS {
        let receipts = run_child(tmp.path(), run);
        acked.extend(receipts);
        survivors = check(tmp.path(), &acked).events().last_seq();
    }
    assert!(acked.len() as u64 >= RUNS, "too few acknowledgements to prove anything: {}", acked.len());
    eprintln!("{RUNS} kills, {} acknowledged batches, {survivors} events, {:?}", acked.len(), started.elapsed());

    // The journal goes on where the killed ones stopped.
    let store = check(tmp.path(), &acked);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (journal, task) = Journal::start(&store, JournalOptions::default()).unwrap();
        let receipt = journal.commit(batch_of(u64::MAX >> 1)).await.unwrap();
        assert_eq!(receipt.first_seq, Some(survivors + 1));
        drop(journal);
        task.await.unwrap();
    });
}

/// A persist fault in the middle of a run, then the exit the service makes
/// after one: on reopen, every acknowledged batch is there and no batch that
/// was refused is (none of its rows, none of its events).
#[test]
fn after_a_persist_fault_the_store_holds_exactly_what_was_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, tmp.path())
        .env(RUN_VAR, "1")
        .env(FAULT_VAR, "200")
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "the child exits after the fault");
    let mut acked = BTreeMap::new();
    let mut refused = BTreeSet::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some((_, id)) = line.split_once("refused:") {
            refused.insert(id.parse::<u64>().unwrap());
        } else if let Some((_, ack)) = line.split_once("ack:") {
            let fields: Vec<u64> = ack.split(':').map(|f| f.parse().unwrap()).collect();
            acked.insert(fields[0], Receipt { first_seq: Some(fields[1]), seq: fields[2] });
        }
    }
    assert!(acked.len() >= 200, "only {} acknowledged", acked.len());
    assert!(refused.len() >= COMMITTERS as usize, "every committer was refused in the end: {}", refused.len());

    let store = check(tmp.path(), &acked);
    let present: BTreeSet<u64> = store.scan(&ROWS).map(|row| row.unwrap().0.0).collect();
    let visible: Vec<&u64> = refused.iter().filter(|id| present.contains(id)).collect();
    assert!(visible.is_empty(), "refused batches are visible after the reopen: {visible:?}");
    assert_eq!(store.events().last_seq(), acked.values().map(|r| r.seq).max().unwrap());
}
