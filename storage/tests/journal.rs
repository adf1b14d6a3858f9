//! Every public operation of the storage crate, and every error it can give:
//! opening a data directory, typed tables, the journal, the event log,
//! subscriber offsets, injected disk faults and retention.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sugang_storage::{
    AlreadyStarted, Batch, BatchDecodeError, CommitError, Count, DecodeError, DecodeErrorKind, Durability, Journal,
    JournalOptions, OpenError, Receipt, Record, StorageError, Store, StoreOptions, Table, TrimError,
};
use tokio::task::JoinHandle;

/// How long a test waits for a condition before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Seat {
    student: String,
    row: u32,
}
impl Record for Seat {}

/// The same table read under a newer schema that cannot upgrade version 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct SeatV2 {
    student: String,
    row: u32,
    aisle: bool,
}
impl Record for SeatV2 {
    const VERSION: u8 = 2;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Happened {
    what: String,
}
impl Record for Happened {}

const SEATS: Table<u64, Seat> = Table::new("seats");
const SEATS_V2: Table<u64, SeatV2> = Table::new("seats");
/// A table whose name extends `seats`, to prove scans stay inside theirs.
const SEATS_ANNEX: Table<u64, Seat> = Table::new("seats_annex");
const BY_STUDENT: Table<(String, u64), Seat> = Table::new("by_student");

fn seat(student: &str, row: u32) -> Seat {
    Seat { student: student.to_owned(), row }
}

fn happened(what: &str) -> Happened {
    Happened { what: what.to_owned() }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).expect("open the store")
}

fn start(store: &Store) -> (Journal, JoinHandle<()>) {
    Journal::start(store, JournalOptions::default()).expect("start the journal")
}

/// Drops the journal and the store and waits for the journal task to end, so
/// the directory can be opened again.
async fn close(store: Store, journal: Journal, task: JoinHandle<()>) {
    drop(journal);
    tokio::time::timeout(PATIENCE, task).await.expect("the journal task ends").expect("the journal task succeeds");
    drop(store);
}

async fn commit_put(journal: &Journal, key: u64, value: &Seat, events: &[&str]) -> Result<Receipt, CommitError> {
    let mut batch = Batch::new();
    batch.put(&SEATS, &key, value).unwrap();
    for what in events {
        batch.append(key, &happened(what)).unwrap();
    }
    journal.commit(batch).await
}

/// The raw key of `key` in the table called `table`, as the codec lays it out.
fn raw_key(table: &str, key: u64) -> Vec<u8> {
    let mut out = vec![b't'];
    out.extend_from_slice(table.as_bytes());
    out.push(0);
    out.extend_from_slice(&key.to_be_bytes());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `value` under `key` straight into a keyspace (`records` or
/// `events`) of the fjall database of a closed store.
fn poke_raw(dir: &Path, keyspace: &str, key: &[u8], value: &[u8]) {
    let db = fjall::Database::builder(dir.join("fjall")).open().unwrap();
    let keyspace = db.keyspace(keyspace, fjall::KeyspaceCreateOptions::default).unwrap();
    keyspace.insert(key, value).unwrap();
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

fn seqs<E>(events: &[sugang_storage::Committed<E>]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

// ---- opening a data directory ----

#[test]
fn open_creates_a_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/data");
    let store = open(&dir);
    assert!(dir.is_dir());
    assert_eq!(store.dir(), dir);
    assert_eq!(store.options().durability, Durability::Fsync);
    assert_eq!(store.events().last_seq(), 0);
    assert_eq!(store.events().first_seq().unwrap(), None);
}

#[test]
fn open_refuses_a_file_and_a_path_below_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain");
    std::fs::write(&file, b"not a store").unwrap();
    match Store::open(&file, StoreOptions::default()) {
        Err(OpenError::NotADirectory { path }) => assert_eq!(path, file),
        other => panic!("expected NotADirectory, got {:?}", other.err()),
    }
    let below = file.join("data");
    match Store::open(&below, StoreOptions::default()) {
        Err(OpenError::NotADirectory { path }) => assert_eq!(path, below),
        other => panic!("expected NotADirectory, got {:?}", other.err()),
    }
}

/// Permissions cannot make a directory unusable for root, so this uses a
/// directory no one can create files in: `/proc/self`.
#[cfg(target_os = "linux")]
#[test]
fn open_refuses_a_directory_it_cannot_write() {
    match Store::open("/proc/self", StoreOptions::default()) {
        Err(error @ OpenError::Unusable { .. }) => assert!(error.to_string().contains("sugang.lock"), "{error}"),
        other => panic!("expected Unusable, got {:?}", other.err()),
    }
}

#[test]
fn a_second_open_is_locked_out_until_the_first_store_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let first = open(tmp.path());
    match Store::open(tmp.path(), StoreOptions::default()) {
        Err(error @ OpenError::Locked { .. }) => {
            let OpenError::Locked { path, holder } = &error else { unreachable!() };
            assert_eq!(path, tmp.path());
            assert_eq!(holder.as_deref(), Some(format!("pid {}", std::process::id()).as_str()));
            assert!(error.to_string().contains(&format!("pid {}", std::process::id())), "{error}");
        }
        other => panic!("expected Locked, got {:?}", other.err()),
    }
    let clone = first.clone();
    drop(first);
    assert!(matches!(Store::open(tmp.path(), StoreOptions::default()), Err(OpenError::Locked { .. })));
    drop(clone);
    open(tmp.path());
}

#[tokio::test]
async fn a_reopened_store_has_what_was_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    commit_put(&journal, 1, &seat("kim", 3), &["reserved"]).await.unwrap();
    close(store, journal, task).await;

    let store = open(tmp.path());
    assert_eq!(store.get(&SEATS, &1).unwrap(), Some(seat("kim", 3)));
    assert_eq!(store.events().last_seq(), 1);
}

/// The engine lets go of its own lock only once its last handle drops; a
/// store closed and at once reopened in the same process must not trip on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_reopens_at_once_again_and_again() {
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..30u64 {
        let store = open(tmp.path());
        assert_eq!(store.events().last_seq(), round);
        let (journal, task) = start(&store);
        commit_put(&journal, round, &seat("kim", 1), &["again"]).await.unwrap();
        close(store, journal, task).await;
    }
}

#[test]
fn open_refuses_a_store_of_another_format() {
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path()));
    poke_raw(tmp.path(), "records", b"mformat", &[9]);
    match Store::open(tmp.path(), StoreOptions::default()) {
        Err(error @ OpenError::IncompatibleFormat { found: 9, .. }) => {
            assert!(error.to_string().contains("format 9"), "{error}")
        }
        other => panic!("expected IncompatibleFormat, got {:?}", other.err()),
    }

    // A fjall database that has no marker is not ours, or lost its records.
    let foreign = tempfile::tempdir().unwrap();
    poke_raw(foreign.path(), "records", b"someone else's", b"data");
    match Store::open(foreign.path(), StoreOptions::default()) {
        Err(error @ OpenError::Damaged { .. }) => assert!(error.to_string().contains("format marker"), "{error}"),
        other => panic!("expected Damaged, got {:?}", other.err()),
    }
}

/// A data directory of the sled release is recognised and refused, with a
/// message that says so, and left as it was.
#[test]
fn open_refuses_a_store_of_the_sled_release() {
    let tmp = tempfile::tempdir().unwrap();
    let sled_dir = tmp.path().join("db");
    std::fs::create_dir_all(&sled_dir).unwrap();
    std::fs::write(sled_dir.join("conf"), b"segment_size: 524288\n").unwrap();
    std::fs::write(sled_dir.join("db"), vec![0u8; 4096]).unwrap();
    match Store::open(tmp.path(), StoreOptions::default()) {
        Err(error @ OpenError::SledStore { .. }) => {
            assert!(error.to_string().contains("sled release"), "{error}")
        }
        other => panic!("expected SledStore, got {:?}", other.err()),
    }
    assert!(!tmp.path().join("fjall").exists(), "nothing was created beside the sled files");
}

#[test]
fn open_reports_files_the_engine_cannot_read() {
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path()));
    std::fs::write(tmp.path().join("fjall/version"), b"garbage that is not fjall's version marker").unwrap();
    match Store::open(tmp.path(), StoreOptions::default()) {
        Err(error @ OpenError::Damaged { .. }) => {
            assert!(error.to_string().contains("damaged"), "{error}")
        }
        other => panic!("expected Damaged, got {:?}", other.err()),
    }
}

// ---- encoding and decoding what is stored ----

/// A value postcard cannot encode: a sequence whose length is not known up front.
#[derive(Debug, Deserialize)]
struct Unsized {
    rows: Vec<u32>,
}
impl Serialize for Unsized {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.rows.iter().filter(|_| true))
    }
}
impl Record for Unsized {}

#[test]
fn a_value_that_cannot_be_encoded_is_an_encode_error_naming_the_table() {
    const UNSIZED: Table<u64, Unsized> = Table::new("unsized");
    let mut batch = Batch::new();
    let error = batch.put(&UNSIZED, &1, &Unsized { rows: vec![1, 2] }).unwrap_err();
    assert_eq!(error.table, "unsized");
    assert!(error.to_string().contains("table unsized"), "{error}");
    let error = batch.append(1, &Unsized { rows: vec![3] }).unwrap_err();
    assert_eq!(error.table, "events");
    assert!(batch.is_empty());
}

#[tokio::test]
async fn a_malformed_record_is_a_decode_error_naming_table_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    commit_put(&journal, 1, &seat("kim", 1), &[]).await.unwrap();
    close(store, journal, task).await;

    let key = raw_key("seats", 2);
    poke_raw(tmp.path(), "records", &key, &[1, 0xff, 0xff, 0xff]);
    let store = open(tmp.path());
    assert_eq!(store.get(&SEATS, &1).unwrap(), Some(seat("kim", 1)));
    match store.get(&SEATS, &2) {
        Err(StorageError::Decode(DecodeError { table, key: shown, kind: DecodeErrorKind::Malformed(_) })) => {
            assert_eq!(table, "seats");
            assert_eq!(shown, hex(&key));
        }
        other => panic!("expected a Malformed decode error, got {other:?}"),
    }
    // `contains` does not decode; a scan reports the bad record in its place.
    assert!(store.contains(&SEATS, &2).unwrap());
    let scanned: Vec<_> = store.scan(&SEATS).collect();
    assert_eq!(scanned.len(), 2);
    assert_eq!(scanned[0].as_ref().unwrap(), &(1, seat("kim", 1)));
    let error = scanned[1].as_ref().unwrap_err();
    assert!(error.to_string().contains("table seats"), "{error}");
}

#[tokio::test]
async fn an_unknown_version_and_an_empty_value_are_typed_decode_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    commit_put(&journal, 5, &seat("lee", 2), &[]).await.unwrap();

    // Version 1 read by a schema at version 2 that cannot upgrade it.
    match store.get(&SEATS_V2, &5) {
        Err(StorageError::Decode(DecodeError { table: "seats", kind: DecodeErrorKind::UnknownVersion(1), key })) => {
            assert_eq!(key, hex(&raw_key("seats", 5)))
        }
        other => panic!("expected UnknownVersion(1), got {other:?}"),
    }
    close(store, journal, task).await;

    poke_raw(tmp.path(), "records", &raw_key("seats", 6), &[9, 0]);
    poke_raw(tmp.path(), "records", &raw_key("seats", 7), &[]);
    let store = open(tmp.path());
    assert!(matches!(
        store.get(&SEATS, &6),
        Err(StorageError::Decode(DecodeError { kind: DecodeErrorKind::UnknownVersion(9), .. }))
    ));
    assert!(matches!(
        store.get(&SEATS, &7),
        Err(StorageError::Decode(DecodeError { kind: DecodeErrorKind::Empty, .. }))
    ));
}

#[test]
fn a_key_that_does_not_decode_is_a_malformed_key_error() {
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path()));
    let mut short = raw_key("seats", 0);
    short.truncate(short.len() - 3);
    poke_raw(tmp.path(), "records", &short, &[1]);
    let store = open(tmp.path());
    match store.scan(&SEATS).next() {
        Some(Err(StorageError::Decode(DecodeError { table: "seats", kind: DecodeErrorKind::MalformedKey, key }))) => {
            assert_eq!(key, hex(&short))
        }
        other => panic!("expected MalformedKey, got {other:?}"),
    }
    assert!(store.scan(&SEATS).keys().next().unwrap().is_err());
}

// ---- typed tables ----

#[tokio::test]
async fn put_get_contains_and_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    assert_eq!(SEATS.name(), "seats");
    assert_eq!(store.get(&SEATS, &1).unwrap(), None);
    assert!(!store.contains(&SEATS, &1).unwrap());

    commit_put(&journal, 1, &seat("kim", 1), &[]).await.unwrap();
    assert_eq!(store.get(&SEATS, &1).unwrap(), Some(seat("kim", 1)));
    assert!(store.contains(&SEATS, &1).unwrap());

    commit_put(&journal, 1, &seat("kim", 2), &[]).await.unwrap();
    assert_eq!(store.get(&SEATS, &1).unwrap(), Some(seat("kim", 2)));

    let mut batch = Batch::new();
    batch.delete(&SEATS, &1).delete(&SEATS, &99);
    journal.commit(batch).await.unwrap();
    assert_eq!(store.get(&SEATS, &1).unwrap(), None);
    assert!(!store.contains(&SEATS, &1).unwrap());

    // Within a batch, later writes win.
    let mut batch = Batch::new();
    batch.put(&SEATS, &2, &seat("lee", 1)).unwrap();
    batch.delete(&SEATS, &2);
    batch.put(&SEATS, &3, &seat("park", 1)).unwrap();
    batch.put(&SEATS, &3, &seat("park", 2)).unwrap();
    journal.commit(batch).await.unwrap();
    assert_eq!(store.get(&SEATS, &2).unwrap(), None);
    assert_eq!(store.get(&SEATS, &3).unwrap(), Some(seat("park", 2)));
    close(store, journal, task).await;
}

#[tokio::test]
async fn scans_come_back_in_key_order_and_stay_in_their_table() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    assert_eq!(store.last(&SEATS).unwrap(), None);
    assert_eq!(store.scan(&SEATS).count(), 0);

    let keys = [300u64, 2, u64::MAX, 256, 0, 1, 70_000];
    let mut batch = Batch::new();
    for (row, key) in keys.iter().enumerate() {
        batch.put(&SEATS, key, &seat("kim", row as u32)).unwrap();
        batch.put(&SEATS_ANNEX, key, &seat("annex", row as u32)).unwrap();
    }
    journal.commit(batch).await.unwrap();

    let mut sorted = keys.to_vec();
    sorted.sort();
    let scanned: Vec<u64> = store.scan(&SEATS).map(|r| r.unwrap().0).collect();
    assert_eq!(scanned, sorted);
    assert!(store.scan(&SEATS).all(|r| r.unwrap().1.student == "kim"));
    let only_keys: Vec<u64> = store.scan(&SEATS).keys().map(|k| k.unwrap()).collect();
    assert_eq!(only_keys, sorted);
    let backwards: Vec<u64> = store.scan(&SEATS).rev().map(|r| r.unwrap().0).collect();
    assert_eq!(backwards, sorted.iter().rev().copied().collect::<Vec<_>>());

    let from: Vec<u64> = store.scan_from(&SEATS, &256).map(|r| r.unwrap().0).collect();
    assert_eq!(from, vec![256, 300, 70_000, u64::MAX]);
    let from_between: Vec<u64> = store.scan_from(&SEATS, &3).map(|r| r.unwrap().0).collect();
    assert_eq!(from_between, vec![256, 300, 70_000, u64::MAX]);
    assert!(store.scan_from(&SEATS, &u64::MAX).all(|r| r.unwrap().1.student == "kim"));

    let (last_key, last_value) = store.last(&SEATS).unwrap().unwrap();
    assert_eq!(last_key, u64::MAX);
    assert_eq!(last_value.student, "kim");
    close(store, journal, task).await;
}

#[tokio::test]
async fn scan_prefix_reads_one_leading_part_of_a_composite_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    let mut batch = Batch::new();
    for (student, id) in [("kim", 9u64), ("kim", 1), ("kimchi", 2), ("ki", 3), ("lee", 4), ("kim", 300), ("", 5)] {
        batch.put(&BY_STUDENT, &(student.to_owned(), id), &seat(student, id as u32)).unwrap();
    }
    journal.commit(batch).await.unwrap();

    let kim: Vec<(String, u64)> = store.scan_prefix(&BY_STUDENT, &"kim".to_owned()).map(|r| r.unwrap().0).collect();
    assert_eq!(kim, vec![("kim".to_owned(), 1), ("kim".to_owned(), 9), ("kim".to_owned(), 300)]);
    let empty_name: Vec<u64> = store.scan_prefix(&BY_STUDENT, &String::new()).map(|r| r.unwrap().0.1).collect();
    assert_eq!(empty_name, vec![5]);
    assert_eq!(store.scan_prefix(&BY_STUDENT, &"nobody".to_owned()).count(), 0);

    let all: Vec<String> = store.scan(&BY_STUDENT).map(|r| r.unwrap().0.0).collect();
    assert_eq!(all, vec!["", "ki", "kim", "kim", "kim", "kimchi", "lee"]);
    let from: Vec<(String, u64)> =
        store.scan_from(&BY_STUDENT, &("kim".to_owned(), 10)).map(|r| r.unwrap().0).collect();
    assert_eq!(from, vec![("kim".to_owned(), 300), ("kimchi".to_owned(), 2), ("lee".to_owned(), 4)]);
    assert_eq!(store.last(&BY_STUDENT).unwrap().unwrap().0, ("lee".to_owned(), 4));
    close(store, journal, task).await;
}

// ---- the journal and the event log ----

#[tokio::test]
async fn receipts_carry_the_seqs_of_their_events() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    assert_eq!(journal.queued(), 0);

    let first = commit_put(&journal, 1, &seat("kim", 1), &["a", "b"]).await.unwrap();
    assert_eq!(first, Receipt { first_seq: Some(1), seq: 2 });
    let without_events = commit_put(&journal, 2, &seat("kim", 2), &[]).await.unwrap();
    assert_eq!(without_events, Receipt { first_seq: None, seq: 2 });
    let empty = journal.commit(Batch::new()).await.unwrap();
    assert_eq!(empty, Receipt { first_seq: None, seq: 2 });
    let third = commit_put(&journal, 3, &seat("kim", 3), &["c"]).await.unwrap();
    assert_eq!(third, Receipt { first_seq: Some(3), seq: 3 });
    assert_eq!(store.events().last_seq(), 3);
    close(store, journal, task).await;
}

#[test]
fn batches_say_what_they_hold() {
    let mut batch = Batch::new();
    assert!(batch.is_empty());
    assert_eq!(batch.event_count(), 0);
    batch.delete(&SEATS, &1);
    assert!(!batch.is_empty());
    let mut other = Batch::new();
    other.append(1, &happened("a")).unwrap().append(2, &happened("b")).unwrap();
    other.set_offset("mypage", 4);
    batch.extend(other);
    assert_eq!(batch.event_count(), 2);
    let mut only_offset = Batch::new();
    only_offset.set_offset("notifier", 1);
    assert!(!only_offset.is_empty());
}

#[tokio::test]
async fn extended_batches_commit_their_events_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    let mut batch = Batch::new();
    batch.append(1, &happened("first")).unwrap();
    let mut other = Batch::new();
    other.append(2, &happened("second")).unwrap();
    other.put(&SEATS, &2, &seat("lee", 2)).unwrap();
    batch.extend(other);
    assert_eq!(journal.commit(batch).await.unwrap(), Receipt { first_seq: Some(1), seq: 2 });
    let events = store.events().read::<Happened>(1, 10).unwrap();
    assert_eq!(
        events.iter().map(|e| (e.key, e.event.what.as_str())).collect::<Vec<_>>(),
        [(1, "first"), (2, "second")]
    );
    assert_eq!(store.get(&SEATS, &2).unwrap(), Some(seat("lee", 2)));
    close(store, journal, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_committers_get_gap_free_seqs() {
    const COMMITTERS: u64 = 16;
    const EACH: u64 = 20;
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);

    let mut committers = Vec::new();
    for who in 0..COMMITTERS {
        let journal = journal.clone();
        committers.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for i in 0..EACH {
                let id = who * 1000 + i;
                let mut batch = Batch::new();
                batch.put(&SEATS, &id, &seat("kim", i as u32)).unwrap();
                for n in 0..=(i % 2) {
                    batch.append(id, &happened(&format!("{id}/{n}"))).unwrap();
                }
                receipts.push((id, journal.commit(batch).await.unwrap()));
            }
            receipts
        }));
    }
    let mut receipts = Vec::new();
    for committer in committers {
        receipts.extend(committer.await.unwrap());
    }

    let total: u64 = COMMITTERS * (EACH + EACH / 2);
    assert_eq!(store.events().last_seq(), total);
    let events = store.events().read::<Happened>(1, usize::MAX).unwrap();
    assert_eq!(seqs(&events), (1..=total).collect::<Vec<_>>());
    for (id, receipt) in &receipts {
        let first = receipt.first_seq.unwrap();
        let expected: Vec<String> = (0..=(id % 1000 % 2)).map(|n| format!("{id}/{n}")).collect();
        let got: Vec<String> =
            events[(first - 1) as usize..receipt.seq as usize].iter().map(|e| e.event.what.clone()).collect();
        assert_eq!(got, expected, "the events of batch {id}");
        assert!(events[(first - 1) as usize..receipt.seq as usize].iter().all(|e| e.key == *id));
        assert!(store.contains(&SEATS, id).unwrap());
    }
    close(store, journal, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_queue_and_small_groups_hold_committers_back_but_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = Journal::start(&store, JournalOptions { max_group: 3, queue: 2 }).unwrap();
    let mut committers = Vec::new();
    for key in 0..40u64 {
        let journal = journal.clone();
        committers.push(tokio::spawn(async move {
            let receipt = commit_put(&journal, key, &seat("kim", 1), &["q"]).await.unwrap();
            assert!(journal.queued() <= 2);
            receipt
        }));
    }
    let mut firsts = Vec::new();
    for committer in committers {
        firsts.push(committer.await.unwrap().first_seq.unwrap());
    }
    firsts.sort();
    assert_eq!(firsts, (1..=40).collect::<Vec<_>>());
    assert_eq!(store.scan(&SEATS).count(), 40);
    close(store, journal, task).await;
}

#[tokio::test]
async fn the_log_reads_from_a_seq_with_a_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for key in 1..=5u64 {
        commit_put(&journal, key, &seat("kim", key as u32), &[&format!("e{key}")]).await.unwrap();
    }
    let log = store.events();
    let page = log.read::<Happened>(3, 2).unwrap();
    assert_eq!(seqs(&page), [3, 4]);
    assert_eq!(page[0].event, happened("e3"));
    assert_eq!(page[0].key, 3);
    assert!(page[0].at_ms >= before && page[0].at_ms <= before + 60_000);
    assert_eq!(seqs(&log.read::<Happened>(0, 100).unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(seqs(&log.read::<Happened>(5, 100).unwrap()), [5]);
    assert!(log.read::<Happened>(6, 100).unwrap().is_empty());
    assert!(log.read::<Happened>(1, 0).unwrap().is_empty());
    assert_eq!(log.first_seq().unwrap(), Some(1));

    // An event read as the wrong type is a decode error in the events table.
    match log.read::<SeatV2>(1, 1) {
        Err(StorageError::Decode(DecodeError {
            table: "events", kind: DecodeErrorKind::UnknownVersion(1), ..
        })) => {}
        other => panic!("expected a decode error, got {other:?}"),
    }
    close(store, journal, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fires_when_events_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    let mut seen = store.events().watch();
    assert_eq!(*seen.borrow_and_update(), 0);

    let committer = journal.clone();
    let commit = tokio::spawn(async move { commit_put(&committer, 1, &seat("kim", 1), &["a", "b"]).await });
    tokio::time::timeout(PATIENCE, seen.wait_for(|&seq| seq >= 2)).await.expect("watch fires").unwrap();
    assert_eq!(commit.await.unwrap().unwrap().seq, 2);

    // A batch without events does not move the log, so it wakes no reader.
    commit_put(&journal, 2, &seat("kim", 2), &[]).await.unwrap();
    assert!(!seen.has_changed().unwrap());

    commit_put(&journal, 3, &seat("kim", 3), &["c"]).await.unwrap();
    tokio::time::timeout(PATIENCE, seen.changed()).await.expect("watch fires").unwrap();
    assert_eq!(*seen.borrow_and_update(), 3);
    close(store, journal, task).await;
}

#[tokio::test]
async fn offsets_are_written_with_the_batch_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    assert_eq!(store.offset("mypage").unwrap(), None);
    assert!(store.offsets().unwrap().is_empty());

    let mut batch = Batch::new();
    batch.put(&SEATS, &1, &seat("kim", 1)).unwrap();
    batch.set_offset("mypage", 5).set_offset("delivery", 2);
    journal.commit(batch).await.unwrap();
    assert_eq!(store.offset("mypage").unwrap(), Some(5));
    assert_eq!(store.offset("delivery").unwrap(), Some(2));
    assert_eq!(store.offset("notifier").unwrap(), None);

    let mut batch = Batch::new();
    batch.set_offset("mypage", 7);
    journal.commit(batch).await.unwrap();
    assert_eq!(store.offsets().unwrap(), vec![("delivery".to_owned(), 2), ("mypage".to_owned(), 7)]);
    close(store, journal, task).await;

    let store = open(tmp.path());
    assert_eq!(store.offset("mypage").unwrap(), Some(7));
}

#[tokio::test]
async fn a_store_runs_one_journal_which_stops_when_its_handles_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    assert!(matches!(Journal::start(&store, JournalOptions::default()), Err(AlreadyStarted)));
    assert!(matches!(Journal::start(&store.clone(), JournalOptions::default()), Err(AlreadyStarted)));

    let clone = journal.clone();
    drop(journal);
    assert!(!task.is_finished());
    clone.commit(Batch::new()).await.unwrap();
    drop(clone);
    tokio::time::timeout(PATIENCE, task).await.expect("the journal task ends").unwrap();
}

#[tokio::test]
async fn a_commit_to_a_dead_journal_is_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = Journal::start(&store, JournalOptions { max_group: 1, queue: 1 }).unwrap();
    task.abort();
    assert!(tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap_err().is_cancelled());
    assert!(matches!(commit_put(&journal, 1, &seat("kim", 1), &["a"]).await, Err(CommitError::Closed)));
    assert_eq!(store.get(&SEATS, &1).unwrap(), None);
}

#[tokio::test]
async fn seqs_continue_after_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    commit_put(&journal, 1, &seat("kim", 1), &["a", "b", "c"]).await.unwrap();
    close(store, journal, task).await;

    let store = open(tmp.path());
    assert_eq!(store.events().last_seq(), 3);
    let (journal, task) = start(&store);
    assert_eq!(commit_put(&journal, 2, &seat("kim", 2), &["d"]).await.unwrap(), Receipt { first_seq: Some(4), seq: 4 });
    assert_eq!(seqs(&store.events().read::<Happened>(1, 10).unwrap()), [1, 2, 3, 4]);
    close(store, journal, task).await;
}

// ---- a failing disk ----

#[tokio::test]
async fn a_failed_write_fails_its_group_and_stops_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, _task) = start(&store);
    commit_put(&journal, 1, &seat("kim", 1), &["a"]).await.unwrap();
    let mut seen = store.events().watch();
    seen.borrow_and_update();
    let mut failure = store.failure();
    assert!(failure.borrow_and_update().is_none());

    journal.faults().fail_next_writes(1);
    let mut batch = Batch::new();
    batch.put(&SEATS, &1, &seat("kim", 2)).unwrap();
    batch.put(&SEATS, &2, &seat("lee", 1)).unwrap();
    batch.set_offset("mypage", 1);
    batch.append(2, &happened("lost")).unwrap();
    match journal.commit(batch).await {
        Err(error @ CommitError::Write(_)) => assert!(error.to_string().contains("write failed"), "{error}"),
        other => panic!("expected a write error, got {other:?}"),
    }
    assert_eq!(store.get(&SEATS, &1).unwrap(), Some(seat("kim", 1)));
    assert_eq!(store.get(&SEATS, &2).unwrap(), None);
    assert_eq!(store.offset("mypage").unwrap(), None);
    assert_eq!(store.events().last_seq(), 1);
    assert_eq!(seqs(&store.events().read::<Happened>(1, 10).unwrap()), [1]);
    assert!(!seen.has_changed().unwrap());

    // Fail-stop: the store says why, and every later batch is refused.
    assert!(failure.has_changed().unwrap());
    let reason = failure.borrow_and_update().clone().expect("the store says why it stopped");
    assert!(reason.contains("injected write fault"), "{reason}");
    match commit_put(&journal, 3, &seat("park", 1), &["b"]).await {
        Err(error @ CommitError::Stopped(_)) => assert!(error.to_string().contains("stopped taking writes"), "{error}"),
        other => panic!("expected Stopped, got {other:?}"),
    }
    assert_eq!(store.get(&SEATS, &3).unwrap(), None);
    assert_eq!(store.events().last_seq(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_persist_fails_every_caller_of_its_group_and_every_later_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, _task) = start(&store);
    commit_put(&journal, 1, &seat("kim", 1), &["a"]).await.unwrap();

    // A slow disk gathers the committers into groups; the first one's
    // persist fails, and no caller of it or of a later group is acknowledged.
    journal.faults().slow_flushes(Duration::from_millis(100));
    journal.faults().fail_next_flushes(1);
    let mut committers = Vec::new();
    for key in 10..20u64 {
        let journal = journal.clone();
        committers.push(tokio::spawn(async move { commit_put(&journal, key, &seat("lee", 1), &["x"]).await }));
    }
    let mut persist_failures = 0;
    for committer in committers {
        match committer.await.unwrap() {
            Err(CommitError::Flush(_)) => persist_failures += 1,
            Err(CommitError::Stopped(_)) => {}
            other => panic!("a caller of the failed group or a later one was answered {other:?}"),
        }
    }
    assert!(persist_failures >= 1);
    assert_eq!(store.events().last_seq(), 1, "the log never moved past the last durable seq");
    assert!(store.failure().borrow().as_deref().is_some_and(|r| r.contains("persist")));
    assert!(matches!(commit_put(&journal, 30, &seat("choi", 1), &["y"]).await, Err(CommitError::Stopped(_))));
}

/// fjall shows a group's writes as soon as they are applied, before the
/// persist that makes them durable returns; the event log does not: a
/// subscriber must never act on an event that a failed persist leaves unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_reads_only_durable_events() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    commit_put(&journal, 1, &seat("kim", 1), &["a"]).await.unwrap();

    journal.faults().slow_flushes(Duration::from_millis(300));
    let mut batch = Batch::new();
    batch.put(&SEATS, &2, &seat("lee", 1)).unwrap();
    batch.append(2, &happened("b")).unwrap();
    let pending = journal.submit(batch).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while store.get(&SEATS, &2).unwrap().is_none() {
        assert!(Instant::now() < deadline, "the group was never applied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(store.events().last_seq(), 1, "applied, not yet durable");
    assert!(store.events().read::<Happened>(2, 10).unwrap().is_empty());
    assert_eq!(seqs(&store.events().read::<Happened>(1, 10).unwrap()), [1]);

    assert_eq!(pending.durable().await.unwrap(), Receipt { first_seq: Some(2), seq: 2 });
    journal.faults().slow_flushes(Duration::ZERO);
    assert_eq!(seqs(&store.events().read::<Happened>(1, 10).unwrap()), [1, 2]);
    close(store, journal, task).await;
}

// ---- retention ----

/// Commits `n` events, one batch each, and waits until the clock has moved
/// past their commit time, so that an age of zero covers them.
async fn commit_events(journal: &Journal, store: &Store, n: u64) {
    for _ in 0..n {
        let mut batch = Batch::new();
        batch.append(0, &happened("tick")).unwrap();
        journal.commit(batch).await.unwrap();
    }
    let newest = store.events().read::<Happened>(store.events().last_seq(), 1).unwrap()[0].at_ms;
    let deadline = Instant::now() + PATIENCE;
    while now_ms() <= newest {
        assert!(Instant::now() < deadline, "the clock does not move");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn trim_removes_only_what_every_subscriber_has_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    commit_events(&journal, &store, 10).await;
    let mut batch = Batch::new();
    batch.set_offset("mypage", 7).set_offset("delivery", 4);
    journal.commit(batch).await.unwrap();

    assert_eq!(journal.trim(&store, Duration::from_secs(3600)).await.unwrap(), 0, "nothing is an hour old");
    assert_eq!(store.events().first_seq().unwrap(), Some(1));

    assert_eq!(journal.trim(&store, Duration::ZERO).await.unwrap(), 4);
    assert_eq!(store.events().first_seq().unwrap(), Some(5));
    assert_eq!(seqs(&store.events().read::<Happened>(0, 100).unwrap()), (5..=10).collect::<Vec<_>>());
    assert_eq!(journal.trim(&store, Duration::ZERO).await.unwrap(), 0);

    let mut batch = Batch::new();
    batch.set_offset("delivery", 10);
    journal.commit(batch).await.unwrap();
    assert_eq!(journal.trim(&store, Duration::ZERO).await.unwrap(), 3);
    assert_eq!(store.events().first_seq().unwrap(), Some(8));
    assert_eq!(store.events().last_seq(), 10);
    close(store, journal, task).await;
}

#[tokio::test]
async fn trim_removes_only_events_older_than_the_age() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    commit_events(&journal, &store, 3).await;
    let old_enough = Instant::now();
    tokio::time::sleep(Duration::from_millis(600)).await;
    commit_events(&journal, &store, 2).await;
    // The age lies between the two groups (with 300 ms of slack for a slow machine).
    let age = old_enough.elapsed() - Duration::from_millis(300);
    assert_eq!(journal.trim(&store, age).await.unwrap(), 3);
    assert_eq!(store.events().first_seq().unwrap(), Some(4));
    close(store, journal, task).await;
}

#[tokio::test]
async fn last_seq_survives_trimming_everything_and_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    commit_events(&journal, &store, 5).await;
    assert_eq!(journal.trim(&store, Duration::ZERO).await.unwrap(), 5, "no subscriber: only age counts");
    assert_eq!(store.events().first_seq().unwrap(), None);
    assert_eq!(store.events().last_seq(), 5);
    assert!(store.events().read::<Happened>(0, 100).unwrap().is_empty());
    close(store, journal, task).await;

    let store = open(tmp.path());
    assert_eq!(store.events().last_seq(), 5);
    assert_eq!(store.events().first_seq().unwrap(), None);
    let (journal, task) = start(&store);
    assert_eq!(commit_put(&journal, 1, &seat("kim", 1), &["after"]).await.unwrap().first_seq, Some(6));
    assert_eq!(store.events().first_seq().unwrap(), Some(6));
    close(store, journal, task).await;
}

#[tokio::test]
async fn trim_reports_a_failed_removal_and_an_unreadable_log() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    commit_events(&journal, &store, 3).await;
    close(store, journal, task).await;

    // Event 1's envelope no longer decodes.
    poke_raw(tmp.path(), "events", &1u64.to_be_bytes(), &[7]);
    let store = open(tmp.path());
    let (journal, _task) = start(&store);
    match journal.trim(&store, Duration::ZERO).await {
        Err(error @ TrimError::Read(StorageError::Decode(_))) => {
            assert!(error.to_string().contains("events"), "{error}")
        }
        other => panic!("expected a read error, got {other:?}"),
    }

    let failing = tempfile::tempdir().unwrap();
    let store = open(failing.path());
    let (journal, _task) = start(&store);
    commit_events(&journal, &store, 3).await;
    journal.faults().fail_next_writes(1);
    assert!(matches!(journal.trim(&store, Duration::ZERO).await, Err(TrimError::Commit(CommitError::Write(_)))));
    assert_eq!(store.events().first_seq().unwrap(), Some(1));
}

// ---- relaxed durability ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_durability_commits_and_survives_a_clean_close() {
    let tmp = tempfile::tempdir().unwrap();
    let options = StoreOptions { durability: Durability::Relaxed { flush_every_ms: 50 }, ..StoreOptions::default() };
    let store = Store::open(tmp.path(), options.clone()).unwrap();
    assert_eq!(store.options().durability, Durability::Relaxed { flush_every_ms: 50 });
    let (journal, task) = start(&store);

    let mut committers = Vec::new();
    for key in 0..32u64 {
        let journal = journal.clone();
        committers.push(tokio::spawn(async move { commit_put(&journal, key, &seat("kim", 1), &["r"]).await }));
    }
    for committer in committers {
        committer.await.unwrap().unwrap();
    }
    assert_eq!(store.events().last_seq(), 32);
    close(store, journal, task).await;

    let store = Store::open(tmp.path(), options).unwrap();
    assert_eq!(store.scan(&SEATS).count(), 32);
    assert_eq!(seqs(&store.events().read::<Happened>(1, 100).unwrap()), (1..=32).collect::<Vec<_>>());
}

#[tokio::test]
async fn submitted_batches_commit_in_order_and_none_after_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let (journal, _task) = Journal::start(&store, JournalOptions::default()).unwrap();

    // Pipelined: three batches handed over before any is durable.
    let mut pending = Vec::new();
    for n in 0..3u64 {
        let mut batch = Batch::new();
        batch.append(n, &happened(&format!("step {}", n))).unwrap();
        pending.push(journal.submit(batch).await.unwrap());
    }
    let mut seqs = Vec::new();
    for p in pending {
        seqs.push(p.durable().await.unwrap().seq);
    }
    assert_eq!(seqs, vec![1, 2, 3]);

    // A batch submitted behind a failing one never commits: it may rest on it.
    journal.faults().fail_next_writes(1);
    let mut failing = Batch::new();
    failing.append(9, &happened("step 9")).unwrap();
    let failing = journal.submit(failing).await.unwrap();
    let mut after = Batch::new();
    after.append(10, &happened("step 10")).unwrap();
    let after = journal.submit(after).await.unwrap();
    assert!(matches!(failing.durable().await, Err(CommitError::Write(_))));
    assert!(matches!(after.durable().await, Err(CommitError::Write(_) | CommitError::Stopped(_))));
    assert_eq!(store.events().read::<Happened>(1, 10).unwrap().len(), 3);
}

/// A store stays open, its directory locked, while any handle lives; its
/// `Closing` says when the last one is gone and the directory can be
/// opened again.
#[tokio::test]
async fn closing_tells_when_the_last_handle_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let closing = store.closing();
    let lingering = store.clone();
    drop(store);
    assert!(!closing.is_closed(), "a handle still lives");
    assert!(matches!(Store::open(tmp.path(), StoreOptions::default()), Err(OpenError::Locked { .. })));
    assert!(!closing.closed(Duration::from_millis(50)).await, "the wait is bounded");

    let holder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(lingering);
    });
    assert!(closing.closed(PATIENCE).await);
    holder.await.unwrap();
    Store::open(tmp.path(), StoreOptions::default()).expect("the directory opens again at once");
}

// ---- backup ----

/// A running store is copied through its journal, between two groups: the
/// copy opens as a store of its own with every committed batch; the store's
/// own `backup` refuses while a journal writes; a target inside the data
/// directory, one that holds files, and a stopped (failed) store are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_store_is_backed_up_through_its_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = open(&data);
    let (journal, _task) = start(&store);
    for key in 1..=3 {
        commit_put(&journal, key, &seat("kim", key as u32), &["x"]).await.unwrap();
    }
    let copy = tmp.path().join("copy");
    assert!(matches!(store.backup(&copy), Err(sugang_storage::BackupError::Running)));
    let copied = journal.backup(&store, &copy).await.expect("a backup");
    assert_eq!((copied.events, copied.last_seq), (3, 3));
    assert!(
        !copy
            .parent()
            .unwrap()
            .read_dir()
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().contains(".partial-") })
    );
    match journal.backup(&store, &copy).await {
        Err(e @ sugang_storage::BackupError::NotEmpty(_)) => assert!(e.to_string().contains("not empty"), "{e}"),
        other => panic!("expected NotEmpty, got {other:?}"),
    }
    assert!(matches!(
        journal.backup(&store, &data.join("inside")).await,
        Err(sugang_storage::BackupError::Overlaps(_))
    ));
    {
        let restored = Store::open(&copy, StoreOptions::default()).expect("the copy opens");
        assert_eq!(restored.scan(&SEATS).count(), 3);
        assert_eq!(seqs(&restored.events().read::<Happened>(1, 10).unwrap()), [1, 2, 3]);
        assert!(restored.verify().is_ok());
    }

    journal.faults().fail_next_writes(1);
    assert!(commit_put(&journal, 9, &seat("lee", 1), &["y"]).await.is_err());
    assert!(matches!(
        journal.backup(&store, &tmp.path().join("after-the-fault")).await,
        Err(sugang_storage::BackupError::Failed(_))
    ));
}

/// A count per student, kept by the journal from batches' deltas.
const SEATS_PER_STUDENT: Table<String, Count> = Table::new("seats_per_student");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_added_by_concurrent_batches_are_exact_and_a_shared_key_is_written_once_per_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (journal, task) = start(&store);
    // 200 concurrent committers add to the same two counts: none is lost.
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            let mut batch = Batch::new();
            batch.put(&SEATS, &i, &seat("kim", i as u32)).unwrap();
            batch.add(&SEATS_PER_STUDENT, &"kim".to_owned(), 1);
            batch.add(&SEATS_PER_STUDENT, &format!("s{}", i % 2), 1);
            journal.commit(batch).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.count(&SEATS_PER_STUDENT, &"kim".to_owned()).unwrap(), 200);
    assert_eq!(store.count(&SEATS_PER_STUDENT, &"s0".to_owned()).unwrap(), 100);
    assert_eq!(store.count(&SEATS_PER_STUDENT, &"nobody".to_owned()).unwrap(), 0);
    // Below zero stays at zero.
    let mut batch = Batch::new();
    batch.add(&SEATS_PER_STUDENT, &"s1".to_owned(), -1000);
    journal.commit(batch).await.unwrap();
    assert_eq!(store.count(&SEATS_PER_STUDENT, &"s1".to_owned()).unwrap(), 0);

    let written = |name: &str| store.keys_written().iter().find(|(n, _)| n == name).map_or(0, |(_, n)| *n);
    let counts_before = written("counts:seats_per_student");
    let seats_before = written("seats");
    // One batch that writes a key twice and adds to a count twice: one write each.
    let mut batch = Batch::new();
    batch.put(&SEATS, &7, &seat("lee", 1)).unwrap();
    batch.put(&SEATS, &7, &seat("lee", 2)).unwrap();
    batch.add(&SEATS_PER_STUDENT, &"lee".to_owned(), 1);
    batch.add(&SEATS_PER_STUDENT, &"lee".to_owned(), 1);
    journal.commit(batch).await.unwrap();
    assert_eq!(
        written("seats") - seats_before,
        1,
        "the last write to a key is the only one: {:?}",
        store.keys_written()
    );
    assert_eq!(written("counts:seats_per_student") - counts_before, 1);
    assert_eq!(store.get(&SEATS, &7).unwrap(), Some(seat("lee", 2)), "the last write wins");
    assert_eq!(store.count(&SEATS_PER_STUDENT, &"lee".to_owned()).unwrap(), 2);
    close(store, journal, task).await;

    // Counts are durable like any record.
    let store = open(dir.path());
    assert_eq!(store.count(&SEATS_PER_STUDENT, &"kim".to_owned()).unwrap(), 200);
}

#[tokio::test]
async fn a_prefix_scan_seeks_to_a_key_and_stays_inside_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (journal, task) = start(&store);
    let mut batch = Batch::new();
    for (student, id) in [("kim", 1u64), ("kim", 5), ("kim", 9), ("kimm", 2), ("lee", 3)] {
        batch.put(&BY_STUDENT, &(student.to_owned(), id), &seat(student, id as u32)).unwrap();
    }
    journal.commit(batch).await.unwrap();
    let ids = |from: u64| -> Vec<u64> {
        store
            .scan_prefix_from(&BY_STUDENT, &"kim".to_owned(), &("kim".to_owned(), from))
            .keys()
            .map(|k| k.unwrap().1)
            .collect()
    };
    assert_eq!(ids(0), [1, 5, 9]);
    assert_eq!(ids(5), [5, 9]);
    assert_eq!(ids(6), [9]);
    assert_eq!(ids(10), Vec::<u64>::new());
    close(store, journal, task).await;
}

// ---- the log's in-memory tail ----

/// The subscribers read the newest events from memory, and what they read is
/// exactly what a reader of the disk gets after a reopen; what retention
/// removed is not served from memory either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_reads_alike_from_memory_and_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    commit_put(&journal, 1, &seat("kim", 1), &["a", "b"]).await.unwrap();
    commit_put(&journal, 2, &seat("lee", 2), &["c"]).await.unwrap();
    commit_put(&journal, 3, &seat("park", 3), &["d", "e", "f"]).await.unwrap();
    let log = store.events();
    let from_memory = log.read::<Happened>(1, 100).unwrap();
    assert_eq!(seqs(&from_memory), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(
        from_memory.iter().map(|e| (e.key, e.event.what.as_str())).collect::<Vec<_>>(),
        vec![(1, "a"), (1, "b"), (2, "c"), (3, "d"), (3, "e"), (3, "f")]
    );
    assert_eq!(seqs(&log.read::<Happened>(3, 2).unwrap()), vec![3, 4], "from a seq, at most the limit");
    assert!(log.read::<Happened>(7, 10).unwrap().is_empty(), "nothing past the last seq");
    drop(log);
    close(store, journal, task).await;

    let store = open(tmp.path());
    let from_disk = store.events().read::<Happened>(1, 100).unwrap();
    assert_eq!(from_disk, from_memory, "the disk holds what memory served");
    let (journal, task) = start(&store);
    commit_put(&journal, 4, &seat("choi", 4), &["g"]).await.unwrap();
    assert_eq!(seqs(&store.events().read::<Happened>(1, 100).unwrap()), (1..=7).collect::<Vec<_>>());
    assert_eq!(store.events().read::<Happened>(5, 100).unwrap()[..2], from_disk[4..]);

    // Retention: what it removed is not served from memory either.
    let mut batch = Batch::new();
    batch.set_offset("mypage", 4);
    journal.commit(batch).await.unwrap();
    let newest = store.events().read::<Happened>(7, 1).unwrap()[0].at_ms;
    while now_ms() <= newest {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(journal.trim(&store, Duration::ZERO).await.unwrap(), 4);
    assert_eq!(seqs(&store.events().read::<Happened>(0, 100).unwrap()), vec![5, 6, 7]);
    assert_eq!(seqs(&store.events().read::<Happened>(3, 100).unwrap()), vec![5, 6, 7]);

    close(store, journal, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_batch_commits_only_if_its_expectations_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    commit_put(&journal, 1, &seat("kim", 1), &[]).await.unwrap();

    let mut holds = Batch::new();
    holds.expect(&SEATS, &1, Some(&seat("kim", 1))).unwrap().expect(&SEATS, &9, None).unwrap();
    holds.put(&SEATS, &2, &seat("lee", 2)).unwrap();
    journal.commit(holds).await.unwrap();
    assert_eq!(store.get(&SEATS, &2).unwrap(), Some(seat("lee", 2)));

    for expected in [Some(seat("kim", 2)), None] {
        let mut stale = Batch::new();
        stale.expect(&SEATS, &1, expected.as_ref()).unwrap();
        stale.put(&SEATS, &3, &seat("park", 3)).unwrap().set_offset("mail", 1);
        stale.append(3, &happened("never")).unwrap();
        match journal.commit(stale).await {
            Err(error @ CommitError::Conflict(_)) => {
                assert!(error.to_string().contains("seats"), "the key is named: {error}")
            }
            other => panic!("a stale expectation must conflict, got {other:?}"),
        }
    }
    assert_eq!(store.get(&SEATS, &3).unwrap(), None, "nothing of a refused batch is stored");
    assert_eq!(store.offset("mail").unwrap(), None);
    assert_eq!(store.events().last_seq(), 0, "a refused batch takes no seq");
    assert!(store.failure().borrow().is_none(), "a conflict is no storage fault");

    let offset = |expected: Option<u64>, next: u64| {
        let mut batch = Batch::new();
        batch.expect_offset("mail", expected).set_offset("mail", next);
        journal.commit(batch)
    };
    offset(None, 5).await.unwrap();
    assert!(matches!(offset(None, 6).await, Err(CommitError::Conflict(_))), "an offset is stored now");
    assert!(matches!(offset(Some(4), 6).await, Err(CommitError::Conflict(_))), "another offset is stored");
    offset(Some(5), 6).await.unwrap();
    assert_eq!(store.offset("mail").unwrap(), Some(6));

    let mut extended = Batch::new();
    let mut stale = Batch::new();
    stale.expect_offset("mail", Some(5));
    extended.put(&SEATS, &4, &seat("choi", 4)).unwrap().extend(stale);
    assert!(matches!(journal.commit(extended).await, Err(CommitError::Conflict(_))), "extend carries guards");
    let mut only_guards = Batch::new();
    only_guards.expect_offset("mail", Some(6));
    assert!(only_guards.is_empty(), "guards are not writes");
    journal.commit(only_guards).await.unwrap();
    assert_eq!(store.get(&SEATS, &4).unwrap(), None);
    close(store, journal, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_in_one_group_see_the_writes_of_the_batches_before_them() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let (journal, task) = start(&store);
    commit_put(&journal, 9, &seat("han", 9), &["first"]).await.unwrap();

    // A slow flush holds the journal on one group while the next batches
    // queue up: they are taken together, as one group.
    journal.faults().slow_flushes(Duration::from_millis(300));
    let blocker = journal.submit(Batch::new()).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while journal.queued() > 0 {
        assert!(Instant::now() < deadline, "the blocker was never taken");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut batches = Vec::new();
    // 1: writes seat 1 and an offset, no guard.
    let mut batch = Batch::new();
    batch.put(&SEATS, &1, &seat("kim", 1)).unwrap().set_offset("mail", 3);
    batches.push(batch);
    // 2: holds only through 1's writes.
    let mut batch = Batch::new();
    batch.expect(&SEATS, &1, Some(&seat("kim", 1))).unwrap().expect_offset("mail", Some(3));
    batch.put(&SEATS, &2, &seat("lee", 2)).unwrap();
    batch.append(2, &happened("two")).unwrap();
    batches.push(batch);
    // 3: true of the store, false after 1: refused.
    let mut batch = Batch::new();
    batch.expect(&SEATS, &1, None).unwrap();
    batch.put(&SEATS, &3, &seat("park", 3)).unwrap();
    batch.append(3, &happened("three")).unwrap();
    batches.push(batch);
    // 4: no guard, after a refused batch.
    let mut batch = Batch::new();
    batch.put(&SEATS, &4, &seat("choi", 4)).unwrap();
    batch.append(4, &happened("four")).unwrap();
    batches.push(batch);
    // 5: holds only if 3's write was dropped; deletes seat 9 for 6.
    let mut batch = Batch::new();
    batch.expect(&SEATS, &3, None).unwrap();
    batch.delete(&SEATS, &9);
    batches.push(batch);
    // 6: holds only through 5's delete.
    let mut batch = Batch::new();
    batch.expect(&SEATS, &9, None).unwrap();
    batch.put(&SEATS, &6, &seat("jung", 6)).unwrap();
    batches.push(batch);
    let mut pending = Vec::new();
    for batch in batches {
        pending.push(journal.submit(batch).await.unwrap());
    }
    assert_eq!(journal.queued(), 6, "the six batches wait together");
    blocker.durable().await.unwrap();
    let mut outcomes = Vec::new();
    for one in pending {
        outcomes.push(one.durable().await);
    }
    journal.faults().slow_flushes(Duration::ZERO);
    assert!(matches!(outcomes[2], Err(CommitError::Conflict(_))), "3 conflicts: {:?}", outcomes[2]);
    assert_eq!(outcomes[1].as_ref().unwrap(), &Receipt { first_seq: Some(2), seq: 2 });
    assert_eq!(outcomes[3].as_ref().unwrap(), &Receipt { first_seq: Some(3), seq: 3 }, "3 took no seq");
    for i in [0, 4, 5] {
        assert!(outcomes[i].is_ok(), "batch {} commits: {:?}", i + 1, outcomes[i]);
    }
    assert_eq!(store.get(&SEATS, &2).unwrap(), Some(seat("lee", 2)));
    assert_eq!(store.get(&SEATS, &3).unwrap(), None);
    assert_eq!(store.get(&SEATS, &4).unwrap(), Some(seat("choi", 4)));
    assert_eq!(store.get(&SEATS, &9).unwrap(), None);
    assert_eq!(store.get(&SEATS, &6).unwrap(), Some(seat("jung", 6)));
    let events = store.events().read::<Happened>(1, 10).unwrap();
    assert_eq!(events.iter().map(|e| e.event.what.as_str()).collect::<Vec<_>>(), ["first", "two", "four"]);
    close(store, journal, task).await;
}

#[test]
fn a_batch_encodes_and_decodes_and_garbage_is_a_typed_error() {
    let mut batch = Batch::new();
    batch.put(&SEATS, &1, &seat("kim", 1)).unwrap().delete(&SEATS, &2);
    batch.add(&SEATS_PER_STUDENT, &"kim".to_owned(), 3).set_offset("mail", 7).remove_offset("old");
    batch.append(1, &happened("enrolled")).unwrap();
    batch.expect(&SEATS, &1, None).unwrap().expect(&SEATS, &3, Some(&seat("lee", 3))).unwrap();
    batch.expect_offset("mail", Some(6));
    let bytes = batch.encode().unwrap();
    let back = Batch::decode(&bytes).unwrap();
    assert_eq!(format!("{back:?}"), format!("{batch:?}"), "every field comes back");
    assert_eq!(back.encode().unwrap(), bytes);

    assert!(matches!(Batch::decode(&[]), Err(BatchDecodeError::Empty)));
    let mut other_format = bytes.clone();
    other_format[0] = 0xee;
    assert!(matches!(Batch::decode(&other_format), Err(BatchDecodeError::UnknownFormat(0xee))));
    for end in 1..bytes.len() {
        assert!(Batch::decode(&bytes[..end]).is_err(), "a batch cut at {end} bytes decodes");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(Batch::decode(&longer), Err(BatchDecodeError::Malformed(_))), "bytes left over");
    let mut rng = fastrand::Rng::with_seed(16);
    for _ in 0..2000 {
        let mut garbage: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
        if rng.bool() && !garbage.is_empty() {
            garbage[0] = bytes[0];
        }
        let _ = Batch::decode(&garbage);
    }
}
