//! A cluster node's journal: commits go through a replicated log and come
//! back through each node's applier. The log here is an in-process vector
//! delivered to every node in order (the NATS one is exercised by the
//! cluster tests at the top of the workspace); what is checked is the
//! storage side: every node's store comes out the same, seqs included,
//! callers are answered with the seqs their events got, a refusal poisons
//! nothing, a failure fail-stops, and a node resumes after its position.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sugang_storage::{
    Appended, Applier, ApplyError, Batch, BoxFuture, CommitError, Count, Forwarded, Journal, JournalOptions, LogPart,
    Record, ReplicateError, Replicator, Store, StoreOptions, Table,
};
use tokio::sync::mpsc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Row(u64);
impl Record for Row {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Happened(u64);
impl Record for Happened {}

const ROWS: Table<u64, Row> = Table::new("rows");
const TOTALS: Table<String, Count> = Table::new("totals");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Padding(Vec<u8>);
impl Record for Padding {}

const PADDING: Table<u64, Padding> = Table::new("padding");

/// Where the log delivers (position, message) to one follower.
type Follower = mpsc::UnboundedSender<(u64, Vec<u8>)>;

/// The log: what was appended, in order, and who follows it.
#[derive(Default)]
struct Log {
    messages: Mutex<Vec<Vec<u8>>>,
    followers: Mutex<Vec<Follower>>,
    /// The answer to the next append instead of storing it.
    next_refusal: Mutex<Option<ReplicateError>>,
    /// The largest message it takes, like a NATS server's max payload.
    max_bytes: Option<usize>,
}

impl Log {
    /// Delivers every message from `from` (1-based), then every new one.
    fn follow(&self, from: u64) -> mpsc::UnboundedReceiver<(u64, Vec<u8>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let messages = self.messages.lock().unwrap();
        for (i, message) in messages.iter().enumerate().skip(from as usize - 1) {
            tx.send((i as u64 + 1, message.clone())).unwrap();
        }
        self.followers.lock().unwrap().push(tx);
        rx
    }
}

struct Writer(Arc<Log>);

impl Replicator for Writer {
    fn append(&self, group: Vec<u8>) -> BoxFuture<'_, Result<u64, ReplicateError>> {
        Box::pin(async move {
            if let Some(refusal) = self.0.next_refusal.lock().unwrap().take() {
                return Err(refusal);
            }
            if let Some(max) = self.0.max_bytes
                && group.len() > max
            {
                return Err(ReplicateError::TooLarge(format!("{} bytes, at most {max}", group.len())));
            }
            let mut messages = self.0.messages.lock().unwrap();
            messages.push(group.clone());
            let position = messages.len() as u64;
            for follower in self.0.followers.lock().unwrap().iter() {
                let _ = follower.send((position, group.clone()));
            }
            Ok(position)
        })
    }
}

/// Applies what the log delivers, in a task, as the cluster glue does.
fn apply_from(log: &Log, applier: Arc<Applier>) {
    let mut messages = log.follow(applier.position() + 1);
    tokio::spawn(async move {
        while let Some((position, payload)) = messages.recv().await {
            let applier = applier.clone();
            let applied = tokio::task::spawn_blocking(move || applier.apply(position, &payload)).await.unwrap();
            if applied.is_err() {
                return;
            }
        }
    });
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

fn batch(i: u64) -> Batch {
    let mut batch = Batch::new();
    batch.put(&ROWS, &i, &Row(i)).unwrap();
    batch.add(&TOTALS, &"rows".to_string(), 1);
    for e in 0..(i % 3) {
        batch.append(i, &Happened(i * 10 + e)).unwrap();
    }
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_applies_the_same_log_into_the_same_store() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = Arc::new(Log::default());
    let a = open(a_dir.path());
    let (journal, a_applier, _task) =
        Journal::start_replicated(&a, JournalOptions::default(), Arc::new(Writer(log.clone()))).unwrap();
    apply_from(&log, a_applier.clone());
    // A replica: its own journal writes nothing; it applies the same log.
    let b = open(b_dir.path());
    let (_b_journal, b_applier, _b_task) =
        Journal::start_replicated(&b, JournalOptions::default(), Arc::new(Writer(log.clone()))).unwrap();
    apply_from(&log, b_applier.clone());

    let mut committers = Vec::new();
    for i in 1..=200u64 {
        let journal = journal.clone();
        committers.push(tokio::spawn(async move { (i, journal.commit(batch(i)).await.unwrap()) }));
    }
    let mut receipts = Vec::new();
    for committer in committers {
        receipts.push(committer.await.unwrap());
    }
    let last = log.messages.lock().unwrap().len() as u64;
    assert!(b_applier.reached(last, Duration::from_secs(10)).await);
    assert_eq!(a_applier.position(), last);

    // Each caller's receipt names the seqs its own events got, on both nodes.
    for (i, receipt) in &receipts {
        let events = i % 3;
        match receipt.first_seq {
            Some(first) => {
                assert_eq!(receipt.seq - first + 1, events, "batch {i}");
                for store in [&a, &b] {
                    let read = store.events().read::<Happened>(first, events as usize).unwrap();
                    let got: Vec<u64> = read.iter().map(|c| c.event.0).collect();
                    let want: Vec<u64> = (0..events).map(|e| i * 10 + e).collect();
                    assert_eq!(got, want, "batch {i}'s events");
                }
            }
            None => assert_eq!(events, 0),
        }
    }
    for store in [&a, &b] {
        assert_eq!(store.count(&TOTALS, &"rows".to_string()).unwrap(), 200);
        let keys: Vec<u64> = store.scan(&ROWS).keys().map(Result::unwrap).collect();
        assert_eq!(keys, (1..=200).collect::<Vec<u64>>());
        assert_eq!(store.log_position(), Some(last));
    }
    assert_eq!(a.events().last_seq(), (1..=200u64).map(|i| i % 3).sum::<u64>());
    assert_eq!(b.events().last_seq(), a.events().last_seq());
    let (a_events, b_events) =
        (a.events().read::<Happened>(1, 1000).unwrap(), b.events().read::<Happened>(1, 1000).unwrap());
    let key = |c: &sugang_storage::Committed<Happened>| (c.seq, c.at_ms, c.key, c.event.0);
    assert_eq!(a_events.iter().map(key).collect::<Vec<_>>(), b_events.iter().map(key).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_is_refused_alone_and_a_failed_one_stops_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let store = open(dir.path());
    let (journal, applier, _task) =
        Journal::start_replicated(&store, JournalOptions::default(), Arc::new(Writer(log.clone()))).unwrap();
    apply_from(&log, applier);
    journal.commit(batch(1)).await.unwrap();

    *log.next_refusal.lock().unwrap() = Some(ReplicateError::Refused("not the primary".into()));
    assert!(matches!(journal.commit(batch(2)).await, Err(CommitError::Stopped(_))));
    assert!(store.failure().borrow().is_none(), "a refusal must not fail the store");
    journal.commit(batch(3)).await.unwrap();
    assert!(store.get(&ROWS, &2).unwrap().is_none());
    assert_eq!(store.get(&ROWS, &3).unwrap(), Some(Row(3)));

    *log.next_refusal.lock().unwrap() = Some(ReplicateError::Failed("fenced".into()));
    assert!(matches!(journal.commit(batch(4)).await, Err(CommitError::Write(_))));
    assert!(store.failure().borrow().is_some(), "a failed log write fail-stops the node");
    assert!(matches!(journal.commit(batch(5)).await, Err(CommitError::Stopped(_))));
    assert_eq!(log.messages.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reopened_resumes_after_the_position_it_kept() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = Arc::new(Log::default());
    let a = open(a_dir.path());
    let (journal, a_applier, _task) =
        Journal::start_replicated(&a, JournalOptions::default(), Arc::new(Writer(log.clone()))).unwrap();
    apply_from(&log, a_applier);
    for i in 1..=20 {
        journal.commit(batch(i)).await.unwrap();
    }
    {
        let b = open(b_dir.path());
        let (_j, b_applier, _t) =
            Journal::start_replicated(&b, JournalOptions::default(), Arc::new(Writer(log.clone()))).unwrap();
        let held: Vec<Vec<u8>> = log.messages.lock().unwrap().clone();
        for (i, message) in held.iter().enumerate() {
            b_applier.apply(i as u64 + 1, message).unwrap();
        }
        assert_eq!(b_applier.position(), 20);
    }
    for i in 21..=30 {
        journal.commit(batch(i)).await.unwrap();
    }
    // The replica comes back: it applies 21..=30 only, and redelivered
    // messages it already has are skipped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = loop {
        match Store::open(b_dir.path(), StoreOptions::default()) {
            Ok(store) => break store,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert_eq!(b.log_position(), Some(20));
    let (_j, b_applier, _t) =
        Journal::start_replicated(&b, JournalOptions::default(), Arc::new(Writer(log.clone()))).unwrap();
    let first = log.messages.lock().unwrap()[0].clone();
    b_applier.apply(1, &first).unwrap();
    apply_from(&log, b_applier.clone());
    assert!(b_applier.reached(30, Duration::from_secs(10)).await);
    assert_eq!(b.count(&TOTALS, &"rows".to_string()).unwrap(), 30);
    assert_eq!(b.events().last_seq(), a.events().last_seq());
}

#[test]
fn a_message_that_is_not_a_group_fails_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let store = open(dir.path());
    let log = Arc::new(Log::default());
    let (_journal, applier, _task) =
        Journal::start_replicated(&store, JournalOptions::default(), Arc::new(Writer(log))).unwrap();
    assert!(applier.apply(1, b"\xff\xff\xff not a group").is_err());
    assert!(store.failure().borrow().is_some());
    assert_eq!(applier.position(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_log_fails_the_store_instead_of_diverging() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = Arc::new(Log::default());
    let a = open(a_dir.path());
    let (journal, a_applier, _task) =
        Journal::start_replicated(&a, JournalOptions::default(), Arc::new(Writer(log.clone()))).unwrap();
    apply_from(&log, a_applier);
    for i in 1..=4 {
        journal.commit(batch(i)).await.unwrap();
    }
    let held: Vec<Vec<u8>> = log.messages.lock().unwrap().clone();

    // Message 2 was removed from the stream (an operator's purge or limit):
    // a node rebuilding from the log must stop, not apply 3 after 1.
    let b = open(b_dir.path());
    let (_j, b_applier, _t) =
        Journal::start_replicated(&b, JournalOptions::default(), Arc::new(Writer(log.clone()))).unwrap();
    b_applier.apply(1, &held[0]).unwrap();
    let gap = b_applier.apply(3, &held[2]);
    assert!(matches!(gap, Err(ApplyError::OutOfOrder { position: 3, applied: 1 })), "{gap:?}");
    assert!(b.failure().borrow().is_some(), "a gap fails the store");
    assert_eq!(b_applier.position(), 1);
    assert!(b.get(&ROWS, &3).unwrap().is_none(), "nothing after the gap is applied");

    // A takeover marker after a gap is refused the same way.
    let c_dir = tempfile::tempdir().unwrap();
    let c = open(c_dir.path());
    let (_j, c_applier, _t) = Journal::start_replicated(&c, JournalOptions::default(), Arc::new(Writer(log))).unwrap();
    c_applier.skip(1).unwrap();
    assert!(matches!(c_applier.skip(3), Err(ApplyError::OutOfOrder { position: 3, applied: 1 })));
    assert!(c.failure().borrow().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_too_large_for_the_log_is_stored_in_parts_and_a_batch_too_large_alone_is_refused() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = Arc::new(Log { max_bytes: Some(16 * 1024), ..Log::default() });
    let a = open(a_dir.path());
    let (journal, a_applier, _task) =
        Journal::start_replicated(&a, JournalOptions::default(), Arc::new(Writer(log.clone()))).unwrap();
    apply_from(&log, a_applier);
    let b = open(b_dir.path());
    let (_b_journal, b_applier, _b_task) =
        Journal::start_replicated(&b, JournalOptions::default(), Arc::new(Writer(log.clone()))).unwrap();
    apply_from(&log, b_applier.clone());
    let padded = |i: u64| {
        let mut batch = batch(i);
        batch.put(&PADDING, &i, &Padding(vec![7; 1000])).unwrap();
        batch
    };

    // 300 batches of about 1 KB, committed at once: the journal groups
    // them well past the 16 KB the log takes in one message.
    let mut committers = Vec::new();
    for i in 1..=300u64 {
        let journal = journal.clone();
        committers.push(tokio::spawn(async move { (i, journal.commit(padded(i)).await) }));
    }
    for committer in committers {
        let (i, committed) = committer.await.unwrap();
        let receipt = committed.unwrap_or_else(|e| panic!("batch {i} refused: {e}"));
        if let Some(first) = receipt.first_seq {
            let read = a.events().read::<Happened>(first, (i % 3) as usize).unwrap();
            assert_eq!(
                read.iter().map(|c| c.event.0).collect::<Vec<_>>(),
                (0..i % 3).map(|e| i * 10 + e).collect::<Vec<_>>()
            );
        }
    }
    assert!(a.failure().borrow().is_none(), "a group too large is not a failure of the node");
    assert!(log.messages.lock().unwrap().len() > 1, "stored in parts");

    // One batch larger than the log takes: refused alone, the journal goes on.
    let mut huge = Batch::new();
    huge.put(&PADDING, &1000, &Padding(vec![7; 20 * 1024])).unwrap();
    assert!(matches!(journal.commit(huge).await, Err(CommitError::Stopped(_))));
    assert!(a.failure().borrow().is_none());
    journal.commit(padded(301)).await.unwrap();

    let last = log.messages.lock().unwrap().len() as u64;
    assert!(b_applier.reached(last, Duration::from_secs(10)).await);
    for store in [&a, &b] {
        assert_eq!(store.count(&TOTALS, &"rows".to_string()).unwrap(), 301);
        assert!(store.get(&PADDING, &1000).unwrap().is_none());
    }
    assert_eq!(b.events().last_seq(), a.events().last_seq());
}

/// Waits until `journal` has taken every batch submitted to it.
async fn taken(journal: &Journal) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while journal.queued() > 0 {
        assert!(std::time::Instant::now() < deadline, "the journal never took its batches");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_hold_on_a_replicated_journal_as_on_the_embedded_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let store = open(dir.path());
    let (journal, applier, _task) =
        Journal::start_replicated(&store, JournalOptions::default(), Arc::new(Writer(log.clone()))).unwrap();
    // The applier starts late: the journal waits for its first group to
    // come back while the next batches queue up, and takes them as one.
    let blocker = journal.submit(batch(9)).await.unwrap();
    taken(&journal).await;
    let mut batches = Vec::new();
    // 1: writes row 1 and an offset, no guard.
    let mut one = Batch::new();
    one.put(&ROWS, &1, &Row(1)).unwrap().set_offset("mail", 3);
    batches.push(one);
    // 2: holds only through 1's writes.
    let mut two = Batch::new();
    two.expect(&ROWS, &1, Some(&Row(1)))
        .unwrap()
        .expect_offset("mail", Some(3))
        .expect(&ROWS, &9, Some(&Row(9)))
        .unwrap();
    two.put(&ROWS, &2, &Row(2)).unwrap().append(2, &Happened(2)).unwrap();
    batches.push(two);
    // 3: true of the store, false after 1: refused.
    let mut three = Batch::new();
    three.expect(&ROWS, &1, None).unwrap().put(&ROWS, &3, &Row(3)).unwrap().append(3, &Happened(3)).unwrap();
    batches.push(three);
    // 4: holds only if 3's write was dropped.
    let mut four = Batch::new();
    four.expect(&ROWS, &3, None).unwrap().put(&ROWS, &4, &Row(4)).unwrap().append(4, &Happened(4)).unwrap();
    batches.push(four);
    let mut pending = Vec::new();
    for batch in batches {
        pending.push(journal.submit(batch).await.unwrap());
    }
    assert_eq!(journal.queued(), 4, "the four batches wait together");
    apply_from(&log, applier.clone());
    blocker.durable().await.unwrap();
    let mut outcomes = Vec::new();
    for one in pending {
        outcomes.push(one.durable().await);
    }
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    // batch(9) appended nothing (9 % 3 == 0): 2's event is the log's first.
    assert_eq!(outcomes[1].as_ref().unwrap().first_seq, Some(1));
    assert!(matches!(outcomes[2], Err(CommitError::Conflict(_))), "{:?}", outcomes[2]);
    assert_eq!(outcomes[3].as_ref().unwrap().first_seq, Some(2), "3 took no seq");
    assert_eq!(store.get(&ROWS, &3).unwrap(), None);
    assert_eq!(store.get(&ROWS, &4).unwrap(), Some(Row(4)));
    assert_eq!(log.messages.lock().unwrap().len(), 2, "one group for the blocker, one for the rest");

    let mut stale = Batch::new();
    stale.expect_offset("mail", None).set_offset("mail", 4);
    assert!(matches!(journal.commit(stale).await, Err(CommitError::Conflict(_))));
    let mut fresh = Batch::new();
    fresh.expect_offset("mail", Some(3)).set_offset("mail", 4);
    journal.commit(fresh).await.unwrap();
    assert_eq!(store.offset("mail").unwrap(), Some(4));
    assert!(store.failure().borrow().is_none());
}

/// A node that does not write the log: it forwards each batch to the
/// writer's journal, as the cluster glue does over NATS.
struct Forwarder {
    journal: Journal,
    applier: Arc<Applier>,
    /// The answer to the next forward instead of committing it.
    next_refusal: Mutex<Option<ReplicateError>>,
    /// Holds the next forward until this is sent (or dropped).
    hold_next: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl Replicator for Forwarder {
    fn append(&self, _group: Vec<u8>) -> BoxFuture<'_, Result<u64, ReplicateError>> {
        Box::pin(async { Err(ReplicateError::Refused("a forwarding node appends nothing".into())) })
    }

    fn writes(&self) -> bool {
        false
    }

    fn forward(&self, batch: Vec<u8>) -> BoxFuture<'_, Result<Forwarded, ReplicateError>> {
        Box::pin(async move {
            if let Some(refusal) = self.next_refusal.lock().unwrap().take() {
                return Err(refusal);
            }
            let held = self.hold_next.lock().unwrap().take();
            if let Some(held) = held {
                let _ = held.await;
            }
            let batch = Batch::decode(&batch).map_err(|e| ReplicateError::Refused(e.to_string()))?;
            match self.journal.commit(batch).await {
                Ok(receipt) => Ok(Forwarded { receipt, position: self.applier.position() }),
                Err(CommitError::Conflict(key)) => Err(ReplicateError::Conflict(key)),
                Err(e) => Err(ReplicateError::Failed(e.to_string())),
            }
        })
    }
}

/// Two nodes on one log: the writer `w`, applying it, and `f`, whose
/// journal forwards to the writer's (not applying the log yet: the test
/// starts that with `apply_from(&pair.log, pair.f_applier.clone())`).
struct Pair {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    log: Arc<Log>,
    w: Store,
    w_applier: Arc<Applier>,
    forwarder: Arc<Forwarder>,
    f: Store,
    journal: Journal,
    f_applier: Arc<Applier>,
}

fn forwarding_pair() -> Pair {
    let (w_dir, f_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = Arc::new(Log::default());
    let w = open(w_dir.path());
    let (w_journal, w_applier, _w_task) =
        Journal::start_replicated(&w, JournalOptions::default(), Arc::new(Writer(log.clone()))).unwrap();
    apply_from(&log, w_applier.clone());
    let forwarder = Arc::new(Forwarder {
        journal: w_journal,
        applier: w_applier.clone(),
        next_refusal: Mutex::default(),
        hold_next: Mutex::default(),
    });
    let f = open(f_dir.path());
    let (journal, f_applier, _f_task) =
        Journal::start_replicated(&f, JournalOptions::default(), forwarder.clone()).unwrap();
    Pair { _dirs: (w_dir, f_dir), log, w, w_applier, forwarder, f, journal, f_applier }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_write_forwards_and_answers_once_it_applied() {
    let Pair { _dirs, log, w, w_applier, forwarder, f, journal, f_applier } = forwarding_pair();

    // The writer commits at once; the caller waits for its own node.
    let first = tokio::spawn({
        let journal = journal.clone();
        async move { journal.commit(batch(1)).await }
    });
    assert!(w_applier.reached(1, Duration::from_secs(10)).await, "the writer commits the forwarded batch");
    assert_eq!(w.get(&ROWS, &1).unwrap(), Some(Row(1)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!first.is_finished(), "answered before this node applied the batch");
    apply_from(&log, f_applier.clone());
    let receipt = first.await.unwrap().unwrap();
    assert_eq!(receipt, sugang_storage::Receipt { first_seq: Some(1), seq: 1 });
    assert_eq!(f.get(&ROWS, &1).unwrap(), Some(Row(1)), "a caller reads its own write on its node");

    // Many callers at once: each forwarded, each answered.
    let mut committers = Vec::new();
    for i in 2..=30u64 {
        let journal = journal.clone();
        committers.push(tokio::spawn(async move { journal.commit(batch(i)).await }));
    }
    for committer in committers {
        committer.await.unwrap().unwrap();
    }
    assert_eq!(f.count(&TOTALS, &"rows".to_string()).unwrap(), 30);
    assert_eq!(f.events().last_seq(), w.events().last_seq());

    // A guard is checked by the writer; its conflict comes back.
    let mut stale = Batch::new();
    stale.expect(&ROWS, &1, Some(&Row(99))).unwrap().put(&ROWS, &100, &Row(100)).unwrap();
    match journal.commit(stale).await {
        Err(CommitError::Conflict(key)) => assert!(key.contains("rows"), "{key}"),
        other => panic!("a stale guard must conflict, got {other:?}"),
    }
    assert_eq!(w.get(&ROWS, &100).unwrap(), None);

    // A refusal stores nothing and stops nothing.
    *forwarder.next_refusal.lock().unwrap() = Some(ReplicateError::Refused("no writer now".into()));
    assert!(matches!(journal.commit(batch(31)).await, Err(CommitError::Stopped(_))));
    journal.commit(batch(32)).await.unwrap();
    // A failure is in doubt for its caller alone: the node goes on.
    *forwarder.next_refusal.lock().unwrap() = Some(ReplicateError::Failed("no answer in time".into()));
    assert!(matches!(journal.commit(batch(33)).await, Err(CommitError::Write(_))));
    assert!(f.failure().borrow().is_none(), "a forward in doubt does not fail the store");
    journal.commit(batch(34)).await.unwrap();
    for (i, there) in [(31, false), (32, true), (33, false), (34, true)] {
        assert_eq!(f.get(&ROWS, &i).unwrap().is_some(), there, "row {i}");
    }
    assert!(w.failure().borrow().is_none());
}

/// A forwarded batch whose answer is slow (the writer busy, or the batch in
/// doubt until the forward gives up) holds up none of the node's later
/// batches: they are forwarded and answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_forward_holds_up_no_later_batch() {
    let Pair { _dirs, log, forwarder, f, journal, f_applier, .. } = forwarding_pair();
    apply_from(&log, f_applier.clone());

    let (release, held) = tokio::sync::oneshot::channel();
    *forwarder.hold_next.lock().unwrap() = Some(held);
    let slow = tokio::spawn({
        let journal = journal.clone();
        async move { journal.commit(batch(1)).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while forwarder.hold_next.lock().unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the first batch was never forwarded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 2..=4u64 {
        tokio::time::timeout(Duration::from_secs(10), journal.commit(batch(i)))
            .await
            .unwrap_or_else(|_| panic!("batch {i} waited for the slow forward before it"))
            .unwrap();
    }
    assert!(!slow.is_finished(), "the first batch is still held");
    assert_eq!(f.get(&ROWS, &1).unwrap(), None);
    release.send(()).unwrap();
    slow.await.unwrap().unwrap();
    for i in 1..=4u64 {
        assert_eq!(f.get(&ROWS, &i).unwrap(), Some(Row(i)), "row {i}");
    }
}

/// A log that takes a group's parts as the NATS one does (each part its
/// own message, with the history it belongs to), holding the first append
/// until `hold` lets it go (so the batches sent meanwhile queue up into
/// one group), and failing the part numbered `fail_part` of an append.
struct PartsWriter {
    log: Arc<Log>,
    histories: Mutex<Vec<Option<u64>>>,
    hold: tokio::sync::Semaphore,
    fail_part: Mutex<Option<usize>>,
}

impl Replicator for PartsWriter {
    fn append(&self, group: Vec<u8>) -> BoxFuture<'_, Result<u64, ReplicateError>> {
        Box::pin(async move { Writer(self.log.clone()).append(group).await })
    }

    fn splits_by_history(&self) -> bool {
        true
    }

    fn append_parts(&self, parts: Vec<LogPart>) -> BoxFuture<'_, Appended> {
        Box::pin(async move {
            drop(self.hold.acquire().await.unwrap());
            let mut appended = Appended { positions: Vec::new(), error: None };
            for (i, part) in parts.into_iter().enumerate() {
                if *self.fail_part.lock().unwrap() == Some(i) {
                    appended.error = Some(ReplicateError::Failed("no answer from the log".into()));
                    break;
                }
                self.histories.lock().unwrap().push(part.history);
                appended.positions.push(Writer(self.log.clone()).append(part.payload).await.unwrap());
            }
            appended
        })
    }
}

/// A batch of `history` (if any) with the one event `Happened(i)`.
fn batch_of(i: u64, history: Option<u64>) -> Batch {
    let mut batch = Batch::new();
    batch.put(&ROWS, &i, &Row(i)).unwrap();
    batch.append(i, &Happened(i)).unwrap();
    if let Some(history) = history {
        batch.in_history(history);
    }
    batch
}

/// A group is stored one log message per run of neighbouring batches of
/// one history (their own subject in a cluster's log), in the journal's
/// order, each caller answered with its own event's seq; when a part is
/// in doubt, the parts before it are answered as stored and the rest as in
/// doubt, and the node stops writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_stored_one_message_per_run_of_one_history() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let writer = Arc::new(PartsWriter {
        log: log.clone(),
        histories: Mutex::new(Vec::new()),
        hold: tokio::sync::Semaphore::new(0),
        fail_part: Mutex::new(None),
    });
    let store = open(dir.path());
    let (journal, applier, _task) =
        Journal::start_replicated(&store, JournalOptions::default(), writer.clone()).unwrap();
    apply_from(&log, applier);

    // The first batch's append is held while the next seven queue up.
    let first = journal.submit(batch_of(100, Some(9))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let histories = [Some(1), Some(1), Some(2), Some(2), Some(2), None, Some(1)];
    let mut pending = Vec::new();
    for (i, history) in histories.iter().enumerate() {
        pending.push(journal.submit(batch_of(i as u64 + 1, *history)).await.unwrap());
    }
    writer.hold.add_permits(100);
    first.durable().await.unwrap();
    for (i, pending) in pending.into_iter().enumerate() {
        let receipt = pending.durable().await.unwrap();
        let read = store.events().read::<Happened>(receipt.first_seq.unwrap(), 1).unwrap();
        assert_eq!(read[0].event, Happened(i as u64 + 1), "batch {}'s receipt", i + 1);
    }
    assert_eq!(*writer.histories.lock().unwrap(), [Some(9), Some(1), Some(2), None, Some(1)]);
    let messages: Vec<Vec<u64>> = log
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|m| sugang_storage::log_events::<Happened>(m).unwrap().into_iter().map(|h| h.0).collect())
        .collect();
    assert_eq!(messages, [vec![100], vec![1, 2], vec![3, 4, 5], vec![6], vec![7]]);

    // The second part of the next group is in doubt.
    writer.hold.forget_permits(100);
    *writer.fail_part.lock().unwrap() = Some(1);
    let held = journal.submit(batch_of(200, Some(9))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut pending = Vec::new();
    for i in 11..=13 {
        pending.push(journal.submit(batch_of(i, Some(i))).await.unwrap());
    }
    writer.hold.add_permits(100);
    held.durable().await.unwrap();
    let mut outcomes = Vec::new();
    for pending in pending {
        outcomes.push(pending.durable().await);
    }
    assert!(outcomes[0].is_ok(), "the part stored before it: {:?}", outcomes[0]);
    assert!(matches!(outcomes[1], Err(CommitError::Write(_))), "in doubt: {:?}", outcomes[1]);
    assert!(matches!(outcomes[2], Err(CommitError::Write(_))), "in doubt after it: {:?}", outcomes[2]);
    assert!(store.failure().borrow().is_some(), "a part in doubt stops the node's writes");
    assert_eq!(store.get(&ROWS, &11).unwrap(), Some(Row(11)));
}
