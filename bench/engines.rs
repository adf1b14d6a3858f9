//! The engine decision, re-measured: sugang's write pattern on fjall (the
//! engine the storage crate uses), sled 0.34.7 (the first release's) and
//! redb, side by side in one run.
//!
//! Each enrollment is one batch of 10 keys (6 records of ~100 bytes and 4
//! events of ~150 bytes, the lean write path's budget), handed by one of
//! `COMMITTERS` threads to a single writer that takes every batch waiting,
//! applies them in one engine transaction and makes it durable once (group
//! commit), then answers each committer: what sugang's journal does. Each
//! engine runs in a child process of its own, so its resident memory is its
//! own; after the load the child is SIGKILLed and the store reopened cold,
//! timed to the first read of the last key.
//!
//! Run: `cargo bench --bench engines` (ENROLLMENTS=200000 COMMITTERS=64 to
//! change; bench/README.md quotes a run). Prints one table.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ENGINES: [&str; 3] = ["fjall", "sled", "redb"];
const RECORDS: usize = 6;
const EVENTS: usize = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Child modes: `engines load <engine> <dir>` and `engines reopen <engine> <dir>`.
    if let Some(pos) = args.iter().position(|a| a == "load" || a == "reopen") {
        let (mode, engine, dir) = (&args[pos], &args[pos + 1], PathBuf::from(&args[pos + 2]));
        match mode.as_str() {
            "load" => load(engine, &dir),
            _ => reopen(engine, &dir),
        }
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("engines: bench");
        return;
    }
    let enrollments: u64 = env("ENROLLMENTS", 200_000);
    let committers: u64 = env("COMMITTERS", 64);
    println!("{enrollments} enrollments of {} keys, {committers} committers, one sync per group", RECORDS + EVENTS);
    println!("| engine | durable enrollments/s | p99 commit | RSS after the load | reopen after SIGKILL |");
    println!("| --- | --- | --- | --- | --- |");
    for engine in ENGINES {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let dir = tmp.path().join(engine);
        let exe = std::env::current_exe().expect("this bench's path");
        let mut child = Command::new(&exe)
            .args(["load", engine, dir.to_str().expect("a UTF-8 path")])
            .env("ENROLLMENTS", enrollments.to_string())
            .env("COMMITTERS", committers.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the child starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("its stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("a result line");
        // The child waits to be killed once it has reported: an abrupt stop.
        let _ = child.kill();
        let _ = child.wait();
        let reopened = Command::new(&exe)
            .args(["reopen", engine, dir.to_str().expect("a UTF-8 path")])
            .output()
            .expect("the reopen child runs");
        let reopen = String::from_utf8_lossy(&reopened.stdout).trim().to_owned();
        println!("| {engine} | {} | {reopen} |", line.trim());
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One enrollment's keys and values.
fn batch(n: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::with_capacity(RECORDS + EVENTS);
    for r in 0..RECORDS as u8 {
        let mut key = vec![b't', r];
        key.extend_from_slice(&n.to_be_bytes());
        out.push((key, vec![r; 100]));
    }
    for e in 0..EVENTS as u64 {
        let mut key = vec![b'e'];
        key.extend_from_slice(&(n * EVENTS as u64 + e).to_be_bytes());
        out.push((key, vec![7; 150]));
    }
    out
}

trait Engine: Send {
    /// Applies every batch in one transaction and makes it durable.
    fn commit_group(&mut self, batches: &[Vec<(Vec<u8>, Vec<u8>)>]);
}

struct Fjall {
    db: fjall::Database,
    keyspace: fjall::Keyspace,
}

impl Engine for Fjall {
    fn commit_group(&mut self, batches: &[Vec<(Vec<u8>, Vec<u8>)>]) {
        let mut batch = self.db.batch();
        for (key, value) in batches.iter().flatten() {
            batch.insert(&self.keyspace, key.as_slice(), value.as_slice());
        }
        batch.commit().expect("fjall commits");
        self.db.persist(fjall::PersistMode::SyncData).expect("fjall persists");
    }
}

fn open_fjall(dir: &Path) -> Fjall {
    let db = fjall::Database::builder(dir)
        .max_journaling_size(64 * 1024 * 1024)
        .manual_journal_persist(true)
        .cache_size(32 * 1024 * 1024)
        .open()
        .expect("fjall opens");
    let keyspace = db.keyspace("bench", fjall::KeyspaceCreateOptions::default).expect("a keyspace");
    Fjall { db, keyspace }
}

struct Sled {
    db: sled::Db,
}

impl Engine for Sled {
    fn commit_group(&mut self, batches: &[Vec<(Vec<u8>, Vec<u8>)>]) {
        let mut batch = sled::Batch::default();
        for (key, value) in batches.iter().flatten() {
            batch.insert(key.as_slice(), value.as_slice());
        }
        self.db.apply_batch(batch).expect("sled applies");
        self.db.flush().expect("sled flushes");
    }
}

fn open_sled(dir: &Path) -> Sled {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(64 * 1024 * 1024)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
        .open()
        .expect("sled opens");
    Sled { db }
}

const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("bench");

struct Redb {
    db: redb::Database,
}

impl Engine for Redb {
    fn commit_group(&mut self, batches: &[Vec<(Vec<u8>, Vec<u8>)>]) {
        let tx = self.db.begin_write().expect("a redb transaction");
        {
            let mut table = tx.open_table(REDB_TABLE).expect("the table");
            for (key, value) in batches.iter().flatten() {
                table.insert(key.as_slice(), value.as_slice()).expect("redb inserts");
            }
        }
        tx.commit().expect("redb commits");
    }
}

fn open_redb(dir: &Path) -> Redb {
    std::fs::create_dir_all(dir).expect("the directory");
    let db = redb::Database::create(dir.join("bench.redb")).expect("redb opens");
    Redb { db }
}

fn open(engine: &str, dir: &Path) -> Box<dyn Engine> {
    match engine {
        "fjall" => Box::new(open_fjall(dir)),
        "sled" => Box::new(open_sled(dir)),
        _ => Box::new(open_redb(dir)),
    }
}

/// The child: loads, prints one result line, then waits to be killed.
fn load(engine: &str, dir: &Path) {
    let enrollments = env("ENROLLMENTS", 200_000);
    let committers = env("COMMITTERS", 64);
    let mut db = open(engine, dir);
    type Reply = mpsc::SyncSender<()>;
    let (tx, rx) = mpsc::channel::<(Vec<(Vec<u8>, Vec<u8>)>, Reply)>();
    let writer = std::thread::spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            group.extend(rx.try_iter());
            let batches: Vec<_> = group.iter().map(|(b, _)| b.clone()).collect();
            db.commit_group(&batches);
            for (_, reply) in group {
                let _ = reply.send(());
            }
        }
    });
    let started = Instant::now();
    let threads: Vec<_> = (0..committers)
        .map(|c| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut n = c;
                while n < enrollments {
                    let (reply, answered) = mpsc::sync_channel(1);
                    let at = Instant::now();
                    tx.send((batch(n), reply)).expect("the writer runs");
                    answered.recv().expect("the writer answers");
                    latencies.push(at.elapsed());
                    n += committers;
                }
                latencies
            })
        })
        .collect();
    drop(tx);
    let mut latencies: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().expect("a committer")).collect();
    let elapsed = started.elapsed();
    writer.join().expect("the writer");
    latencies.sort_unstable();
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "{:.1} K | {:.1} ms | {} MB",
        enrollments as f64 / elapsed.as_secs_f64() / 1e3,
        p99.as_secs_f64() * 1e3,
        rss_mb()
    );
    std::thread::sleep(Duration::from_secs(600));
}

/// The reopen child: opens cold and reads the last enrollment's first key.
fn reopen(engine: &str, dir: &Path) {
    let enrollments = env("ENROLLMENTS", 200_000);
    let started = Instant::now();
    let key = &batch(enrollments - 1)[0].0;
    let found = match engine {
        "fjall" => open_fjall(dir).keyspace.get(key).expect("fjall reads").is_some(),
        "sled" => open_sled(dir).db.get(key).expect("sled reads").is_some(),
        _ => {
            let db = open_redb(dir).db;
            let tx = redb::ReadableDatabase::begin_read(&db).expect("a read transaction");
            let table = tx.open_table(REDB_TABLE).expect("the table");
            table.get(key.as_slice()).expect("redb reads").is_some()
        }
    };
    let verdict = if found { "" } else { ", LAST ENROLLMENT LOST" };
    println!("{:.2} s{verdict}", started.elapsed().as_secs_f64());
}

fn rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb / 1024)
}
