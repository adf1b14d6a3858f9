//! Journal commit throughput at 1, 16 and 256 concurrent committers.
//!
//! One group, "journal", counting committed batches per second:
//! - `durable/N`: the journal with `Durability::Fsync` (group commit: one fjall
//!   batch and one fdatasync per group).
//! - `relaxed/N`: the journal with `Durability::Relaxed` (fdatasync at most
//!   every 500 ms).
//! - `naive/N`: the way without a journal: each committer inserts into fjall
//!   and persists it itself (fdatasync), once per write, on a blocking
//!   thread: exactly what the journal does once per group. All N committers
//!   share one fjall database, as the services of one process would.
//!
//! Each committed batch is one put of a ~100-byte record plus one event (the
//! naive way writes just the record). Run with `cargo bench --bench journal`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use sugang_storage::{Batch, Durability, Journal, JournalOptions, Record, Store, StoreOptions, Table};
use tokio::runtime::Runtime;

const COMMITTERS: [u64; 3] = [1, 16, 256];
const PAYLOAD_BYTES: usize = 100;

#[derive(Serialize, Deserialize)]
struct Payload {
    bytes: Vec<u8>,
}
impl Record for Payload {}

#[derive(Serialize, Deserialize)]
struct Committed {
    id: u64,
}
impl Record for Committed {}

const PAYLOADS: Table<u64, Payload> = Table::new("payloads");

/// Gives every write its own key, across committers and samples.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// How many of `iters` writes committer `who` of `n` does.
fn share(iters: u64, n: u64, who: u64) -> u64 {
    iters / n + u64::from(who < iters % n)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime")
}

/// `iters` batches committed by `n` concurrent committers through the journal.
async fn through_journal(journal: &Journal, n: u64, iters: u64) -> Duration {
    let started = Instant::now();
    let committers: Vec<_> = (0..n)
        .map(|who| {
            let journal = journal.clone();
            tokio::spawn(async move {
                for _ in 0..share(iters, n, who) {
                    let id = next_id();
                    let mut batch = Batch::new();
                    batch.put(&PAYLOADS, &id, &Payload { bytes: vec![7; PAYLOAD_BYTES] }).expect("encodes");
                    batch.append(id, &Committed { id }).expect("encodes");
                    journal.commit(batch).await.expect("the batch commits");
                }
            })
        })
        .collect();
    for committer in committers {
        committer.await.expect("a committer finishes");
    }
    started.elapsed()
}

/// `iters` writes by `n` concurrent committers, each inserting and persisting itself.
async fn naive(db: &fjall::Database, keyspace: &fjall::Keyspace, n: u64, iters: u64) -> Duration {
    let started = Instant::now();
    let committers: Vec<_> = (0..n)
        .map(|who| {
            let (db, keyspace) = (db.clone(), keyspace.clone());
            tokio::spawn(async move {
                for _ in 0..share(iters, n, who) {
                    let (db, keyspace) = (db.clone(), keyspace.clone());
                    tokio::task::spawn_blocking(move || {
                        keyspace.insert(next_id().to_be_bytes(), vec![7; PAYLOAD_BYTES]).expect("fjall inserts");
                        db.persist(fjall::PersistMode::SyncData).expect("fjall persists");
                    })
                    .await
                    .expect("a write finishes");
                }
            })
        })
        .collect();
    for committer in committers {
        committer.await.expect("a committer finishes");
    }
    started.elapsed()
}

fn bench_journal(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, name: &str, durability: Durability) {
    for n in COMMITTERS {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(tmp.path(), StoreOptions { durability, ..StoreOptions::default() }).expect("opens");
        let runtime = runtime();
        let (journal, task) = {
            let _inside = runtime.enter();
            Journal::start(&store, JournalOptions::default()).expect("starts")
        };
        group.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter_custom(|iters| runtime.block_on(through_journal(&journal, n, iters)))
        });
        drop(journal);
        runtime.block_on(task).expect("the journal stops");
    }
}

fn bench_naive(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    for n in COMMITTERS {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let db = fjall::Database::builder(tmp.path())
            .cache_size(StoreOptions::default().cache_capacity)
            .manual_journal_persist(true)
            .open()
            .expect("fjall opens");
        let keyspace = db.keyspace("naive", fjall::KeyspaceCreateOptions::default).expect("a keyspace");
        let runtime = runtime();
        group.bench_function(BenchmarkId::new("naive", n), |b| {
            b.iter_custom(|iters| runtime.block_on(naive(&db, &keyspace, n, iters)))
        });
    }
}

fn journal(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));
    bench_journal(&mut group, "durable", Durability::Fsync);
    bench_journal(&mut group, "relaxed", Durability::Relaxed { flush_every_ms: 500 });
    bench_naive(&mut group);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = journal
}
criterion_main!(benches);
