//! Starting the system: opening the store, the journal, the supervision tree
//! and the bus; recovering the sagas a previous run left unfinished; and
//! stopping it all with every acknowledged write on disk.

use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;
use sugang_storage::{Journal, JournalOptions, Store, StoreOptions};
use tokio_util::sync::CancellationToken;

use super::commands::{RESERVATION_BASE, RESERVATIONS_COUNTER};
use super::root::{RootChild, RootMsg, RootSupervisor};
use super::{Config, Inner, Live, PaymentHandle, Reservations, StartError, Sugang, Units};
use crate::bus::{Bus, BusMode, Projection};
use crate::course::PROMOTION_BASE;
use crate::course::actor::{CourseCtx, CourseKind, EnrollmentIds, Parking};
use crate::delivery::DeliveryProjection;
use crate::enrollment::actor::{EnrollmentCtx, EnrollmentKind, EnrollmentMsg};
use crate::entity::{Entities, Redelivery};
use crate::faults::Faults;
use crate::gate::actor::GateHandle;
use crate::mypage::MyPageProjection;
use crate::notifier::NotifierProjection;
use crate::payment::actor::{BreakerGate, PaymentActor, PaymentArgs};
use crate::payment::gateway::{PaymentGateway, SimulatedGateway};
use crate::supervision::RestartHistory;
use crate::tables::{COUNTERS, COURSES, ENROLLMENTS, REFUNDS};

impl Sugang {
    /// Opens the data directory, starts the journal and the supervision tree,
    /// and resumes or compensates every saga a previous run left unfinished.
    pub async fn start(config: Config) -> Result<Sugang, StartError> {
        let store = Store::open(
            &config.data_dir,
            StoreOptions { durability: config.durability, cache_capacity: config.cache_capacity },
        )?;
        if let Some(position) = store.log_position() {
            tracing::error!(data_dir = %config.data_dir.display(), position, "a cluster node's store started embedded: refused");
            return Err(StartError::ClusterStore { position });
        }
        let (journal, journal_task) =
            Journal::start(&store, JournalOptions::default()).map_err(|e| StartError::Spawn(e.to_string()))?;
        let system = Sugang::replica(config, store, journal, journal_task);
        system.promote().await?;
        Ok(system)
    }

    /// A system over `store` and its `journal` with no actors yet: a cluster
    /// replica, which serves reads from its copy of the log until
    /// [`Sugang::promote`] makes it the primary.
    pub fn replica(
        config: Config,
        store: Store,
        journal: Journal,
        journal_task: tokio::task::JoinHandle<()>,
    ) -> Sugang {
        let gateway = SimulatedGateway::with_faults(config.gateway_faults);
        Sugang {
            inner: Arc::new(Inner {
                store,
                journal,
                gateway,
                faults: Arc::new(Faults::default()),
                config,
                journal_task: std::sync::Mutex::new(Some(journal_task)),
                live: std::sync::OnceLock::new(),
                units: std::sync::OnceLock::new(),
                starting: tokio::sync::Mutex::new(()),
                stopping: CancellationToken::new(),
            }),
        }
    }

    /// Starts a cluster node's subscribers, on every node: none runs until
    /// the node holds its unit ([`Sugang::hold_unit`]). A second call does
    /// nothing.
    pub async fn share_subscribers(&self) -> Result<(), StartError> {
        let _once = self.inner.starting.lock().await;
        if self.inner.units.get().is_some() {
            return Ok(());
        }
        let spawn_err = |e: ractor::SpawnErr| StartError::Spawn(e.to_string());
        let config = &self.inner.config;
        let (root, _) = Actor::spawn(None, RootSupervisor, ()).await.map_err(spawn_err)?;
        let stop = CancellationToken::new();
        let bus = Bus::start(
            self.inner.store.clone(),
            self.inner.journal.clone(),
            projections(config),
            config.bus.clone(),
            config.restart,
            self.inner.faults.clone(),
            root.get_cell(),
            stop.clone(),
            BusMode::Cluster,
        )
        .await
        .map_err(spawn_err)?;
        if self.inner.units.set(Units { bus, root, stop }).is_err() {
            return Err(StartError::Spawn("the subscribers were started twice".into()));
        }
        Ok(())
    }

    /// Starts the supervision tree over the store as it is, and resumes or
    /// compensates every saga it shows unfinished: at start in embedded
    /// mode; in a cluster, on the node that has just become the primary,
    /// once it has applied the whole log (exactly a restart's recovery).
    /// A second call does nothing.
    pub async fn promote(&self) -> Result<(), StartError> {
        let _once = self.inner.starting.lock().await;
        if self.inner.live.get().is_some() {
            return Ok(());
        }
        let (store, journal, config) = (self.inner.store.clone(), self.inner.journal.clone(), &self.inner.config);
        // The record layout, upgraded once for a store written under an
        // earlier one; then the counts the lists read, rebuilt once for a
        // store written before they were kept; before anything else writes.
        super::layout::upgrade(&store, &journal).await?;
        crate::paging::backfill(&store, &journal).await?;
        let faults = self.inner.faults.clone();
        let gateway = self.inner.gateway.clone();
        let gate = Arc::new(BreakerGate::new());
        let payment_args = {
            let (store, journal, config, gate) = (store.clone(), journal.clone(), config.payment.clone(), gate.clone());
            let gateway: Arc<dyn PaymentGateway> = Arc::new(gateway.clone());
            let faults = faults.clone();
            move || PaymentArgs {
                gate: gate.clone(),
                store: store.clone(),
                journal: journal.clone(),
                gateway: gateway.clone(),
                config: config.clone(),
                faults: faults.clone(),
            }
        };
        let spawn_err = |e: ractor::SpawnErr| StartError::Spawn(e.to_string());
        let (root, _) = Actor::spawn(None, RootSupervisor, ()).await.map_err(spawn_err)?;
        let (payment_ref, _) =
            Actor::spawn_linked(None, PaymentActor, payment_args(), root.get_cell()).await.map_err(spawn_err)?;
        let payment = PaymentHandle::new(payment_ref);
        root.send_message(RootMsg::Adopt(RootChild::Payment {
            handle: payment.clone(),
            args: Box::new(payment_args),
            policy: config.restart,
            history: RestartHistory::default(),
        }))
        .map_err(|e| StartError::Spawn(e.to_string()))?;
        let highest_enrollment = store.scan(&ENROLLMENTS).keys().next_back().transpose()?.unwrap_or(0);
        let highest_entry = store.scan(&crate::waitlist::WAITLIST_ENTRIES).keys().next_back().transpose()?.unwrap_or(0);
        let (promotions, promoted) = tokio::sync::mpsc::unbounded_channel();
        let course_ctx = Arc::new(CourseCtx {
            store: store.clone(),
            journal: journal.clone(),
            faults: faults.clone(),
            enrollment_ids: Arc::new(EnrollmentIds::after(highest_enrollment)),
            parking: Parking {
                limit: config.park_limit,
                // A payment in progress ends within its timeout; the saga's
                // ask of its course must outlast the wait.
                timeout: config.payment.timeout.min(config.ask_timeout / 2),
            },
            waitlist_ids: Arc::new(EnrollmentIds::after(highest_entry)),
            promotions,
        });
        let (courses, _) = Entities::<CourseKind>::start(course_ctx, config.courses.clone(), root.get_cell())
            .await
            .map_err(spawn_err)?;
        let enrollment_ctx = Arc::new(EnrollmentCtx {
            store: store.clone(),
            courses: courses.clone(),
            payment: payment.clone(),
            faults: faults.clone(),
            ask_timeout: config.ask_timeout,
            payment_ask_timeout: config.payment.timeout + Duration::from_secs(5),
        });
        let (classes, _) =
            Entities::<EnrollmentKind>::start(enrollment_ctx, config.enrollments.clone(), root.get_cell())
                .await
                .map_err(spawn_err)?;

        let stop = CancellationToken::new();
        crate::waitlist::run_promotions(
            classes.clone(),
            promoted,
            config.payment.timeout + config.ask_timeout * 3,
            stop.clone(),
        );
        let bus = match self.inner.units.get() {
            // A cluster node: its bus runs already (the units it holds);
            // retention is the primary's, for every node.
            Some(units) => {
                units.bus.retain_here(stop.clone());
                units.bus.clone()
            }
            None => Bus::start(
                store.clone(),
                journal.clone(),
                projections(config),
                config.bus.clone(),
                config.restart,
                faults.clone(),
                root.get_cell(),
                stop.clone(),
                BusMode::Embedded,
            )
            .await
            .map_err(spawn_err)?,
        };

        let waiting_room = GateHandle::start(store.clone(), journal.clone(), config.restart, root.get_cell())
            .await
            .map_err(StartError::Spawn)?;

        let next_course_id = store.scan(&COURSES).keys().next_back().transpose()?.unwrap_or(0) + 1;
        // The seats unfinished sagas hold: their markers.
        let holds = crate::course::actor::holds(&store)?;
        let high_water = [
            store.get(&COUNTERS, &RESERVATIONS_COUNTER.to_owned())?.map(|c| c.0),
            // Below the promotions' range (those keys are the waitlist's,
            // few: at most the waitlist entries being enrolled).
            holds.iter().map(|(_, key)| key.get()).filter(|k| *k < PROMOTION_BASE).max(),
            store.scan(&REFUNDS).keys().rev().find(|k| k.as_ref().map_or(true, |k| *k < PROMOTION_BASE)).transpose()?,
        ]
        .into_iter()
        .flatten()
        .fold(RESERVATION_BASE - 1, u64::max);

        let live = Live {
            courses,
            classes,
            payment: payment.clone(),
            root,
            gate,
            waiting_room,
            next_course_id: tokio::sync::Mutex::new(next_course_id),
            reservations: tokio::sync::Mutex::new(Reservations { next: high_water + 1, limit: high_water }),
            bus,
            stop,
        };
        if self.inner.live.set(live).is_err() {
            return Err(StartError::Spawn("the actors were started twice".into()));
        }
        self.recover(holds).await;
        Ok(())
    }

    /// Rule 4: every saga that was in flight, found by the seat it holds,
    /// is compensated (its seat given back, whatever may have been charged
    /// voided) or, a waitlist promotion, resumed; owed refunds resume in the
    /// payment actor on its own.
    async fn recover(&self, holds: Vec<(crate::model::CourseId, crate::model::EnrollmentId)>) {
        if holds.is_empty() {
            return;
        }
        tracing::warn!(count = holds.len(), "resuming or compensating sagas interrupted by the last stop");
        for (course, key) in holds {
            let id = key.get();
            let Some(live) = self.inner.live.get() else { return };
            let resumed = live
                .classes
                .ask(
                    id,
                    |reply| EnrollmentMsg::Recover { course: Some(course), reply: Some(reply) },
                    self.inner.config.ask_timeout,
                    Redelivery::Idempotent,
                )
                .await;
            match resumed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(enrollment_id = id, error = %e, "compensating an interrupted saga failed; it retries on its own")
                }
                Err(e) => {
                    tracing::warn!(enrollment_id = id, error = %e, "activating an interrupted saga failed; the next start retries")
                }
            }
        }
    }

    /// Stops the tree (entity actors first, then their supervisors and the
    /// payment actor), then the journal, whose last act is a flush. Every
    /// acknowledged write is on disk before this returns, and the data
    /// directory is free for the next start.
    pub async fn shutdown(self) {
        let wait = Some(Duration::from_secs(10));
        if let Some(live) = self.inner.live.get() {
            live.stop.cancel();
            for supervisor in
                [live.courses.supervisor_cell(), live.classes.supervisor_cell(), live.bus.supervisor_cell()]
            {
                supervisor.stop_children_and_wait(Some("shutdown".into()), wait).await;
            }
            if let Some(gate) = live.waiting_room.supervisor_cell() {
                gate.stop_children_and_wait(Some("shutdown".into()), wait).await;
            }
            live.root.stop_children_and_wait(Some("shutdown".into()), wait).await;
            let _ = live.root.stop_and_wait(Some("shutdown".into()), wait).await;
        }
        if let Some(units) = self.inner.units.get() {
            units.stop.cancel();
            units.bus.supervisor_cell().stop_children_and_wait(Some("shutdown".into()), wait).await;
            units.root.stop_children_and_wait(Some("shutdown".into()), wait).await;
            let _ = units.root.stop_and_wait(Some("shutdown".into()), wait).await;
        }
        self.inner.stopping.cancel();
        let task = self.inner.journal_task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let closing = self.inner.store.closing();
        drop(self);
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(10), &mut task).await.is_err()
        {
            tracing::error!("the journal did not stop: a handle is still held somewhere");
            task.abort();
        }
        // Background tasks drop their store handles as they wind down after
        // the cancel: return once the last is gone, so the directory can be
        // opened again at once (its lock released) by whoever comes next.
        if !closing.closed(Duration::from_secs(10)).await {
            tracing::error!("the store is still open after shutdown: a handle is held somewhere");
        }
    }
}

/// The subscribers, in the order their workers start.
fn projections(config: &Config) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(DeliveryProjection),
        Arc::new(MyPageProjection),
        Arc::new(NotifierProjection::new(&config.data_dir)),
        Arc::new(crate::waitlist::view::WaitlistProjection),
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use sugang_storage::{Batch, BoxFuture, Journal, JournalOptions, ReplicateError, Replicator, Store, StoreOptions};

    use super::StartError;
    use crate::tables::COUNTERS;
    use crate::testing::{config, korean, request};
    use crate::{CommandError, Sugang};

    /// A log of one message: keeps what the journal appends for the test
    /// to apply.
    struct OneMessage(Arc<Mutex<Option<Vec<u8>>>>);

    impl Replicator for OneMessage {
        fn append(&self, group: Vec<u8>) -> BoxFuture<'_, Result<u64, ReplicateError>> {
            Box::pin(async move {
                *self.0.lock().unwrap() = Some(group);
                Ok(1)
            })
        }
    }

    /// A cluster node's data directory started without --nats: refused,
    /// before anything is written to it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_nodes_store_is_refused_by_the_embedded_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let sent = Arc::new(Mutex::new(None));
            let (journal, applier, task) =
                Journal::start_replicated(&store, JournalOptions::default(), Arc::new(OneMessage(sent.clone())))
                    .unwrap();
            let mut batch = Batch::new();
            batch.put(&COUNTERS, &"k".to_owned(), &crate::tables::Counter(1)).unwrap();
            let committed = tokio::spawn(async move { journal.commit(batch).await });
            let message = loop {
                if let Some(message) = sent.lock().unwrap().take() {
                    break message;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            };
            applier.apply(1, &message).unwrap();
            committed.await.unwrap().unwrap();
            drop(applier);
            task.await.unwrap();
            assert_eq!(store.log_position(), Some(1));
        }
        let refused = Sugang::start(config(dir.path())).await;
        assert!(matches!(refused, Err(StartError::ClusterStore { position: 1 })), "{:?}", refused.err());
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.log_position(), Some(1), "nothing written by the refused start");
    }

    /// A facade over a store with no actors (a cluster replica) serves reads
    /// and refuses commands as unavailable; promoted, it runs them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_reads_refuses_commands_and_once_promoted_serves_them() {
        let dir = tempfile::tempdir().unwrap();
        let system = Sugang::start(config(dir.path())).await.unwrap();
        let course = korean(&system).await;
        let enrolled = system.enroll(request(course, "kim")).await.unwrap();
        assert!(system.wait_for("delivery", enrolled.seq).await);
        system.shutdown().await;

        let config = config(dir.path());
        let store =
            Store::open(dir.path(), StoreOptions { durability: config.durability, ..StoreOptions::default() }).unwrap();
        let (journal, task) = Journal::start(&store, JournalOptions::default()).unwrap();
        let replica = Sugang::replica(config, store, journal, task);
        assert!(!replica.is_live());
        assert_eq!(replica.course(course).unwrap().unwrap().student_count, 1);
        assert!(replica.wait_for("delivery", enrolled.seq).await, "the offsets stored are the replica's to wait on");
        assert!(matches!(replica.enroll(request(course, "lee")).await, Err(CommandError::Unavailable { .. })));
        assert!(matches!(replica.cancel(enrolled.value.id).await, Err(CommandError::Unavailable { .. })));
        assert_eq!(replica.tree().children.len(), 1, "only the journal runs on a replica");
        assert!(replica.subscribers().await.is_empty());

        replica.promote().await.unwrap();
        replica.promote().await.unwrap();
        assert!(replica.is_live());
        replica.enroll(request(course, "lee")).await.unwrap();
        assert_eq!(replica.course(course).unwrap().unwrap().student_count, 2);
        replica.shutdown().await;
    }

    /// The log two cluster nodes share in [`a_lost_answer_to_a_units_batch_takes_effect_once`]:
    /// what the writer appends, every node applies in order.
    #[derive(Default)]
    struct SharedLog {
        messages: Mutex<Vec<Vec<u8>>>,
        followers: Mutex<Vec<Follower>>,
    }

    /// Where a node's applier gets the log's messages: (position, message).
    type Follower = tokio::sync::mpsc::UnboundedSender<(u64, Vec<u8>)>;

    impl SharedLog {
        /// Applies every message, from the first, on `applier`, in a task.
        fn follow(&self, applier: Arc<sugang_storage::Applier>) {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            for (i, message) in self.messages.lock().unwrap().iter().enumerate() {
                tx.send((i as u64 + 1, message.clone())).unwrap();
            }
            self.followers.lock().unwrap().push(tx);
            tokio::spawn(async move {
                while let Some((position, message)) = rx.recv().await {
                    let applier = applier.clone();
                    let applied = tokio::task::spawn_blocking(move || applier.apply(position, &message)).await;
                    if !matches!(applied, Ok(Ok(()))) {
                        return;
                    }
                }
            });
        }
    }

    /// The log's writer (the primary's journal).
    struct Appends(Arc<SharedLog>);

    impl Replicator for Appends {
        fn append(&self, group: Vec<u8>) -> BoxFuture<'_, Result<u64, ReplicateError>> {
            Box::pin(async move {
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

    /// Another node's journal: forwards each batch to the primary's, and
    /// when told, loses the answer to the next batch that appends events
    /// once the primary has committed it (the primary died answering, or
    /// the reply was lost on the way).
    struct Forwards {
        primary: Journal,
        applier: Arc<sugang_storage::Applier>,
        lose_next_answer: std::sync::atomic::AtomicBool,
    }

    impl Replicator for Forwards {
        fn append(&self, _group: Vec<u8>) -> BoxFuture<'_, Result<u64, ReplicateError>> {
            Box::pin(async { Err(ReplicateError::Refused("this node forwards".into())) })
        }

        fn writes(&self) -> bool {
            false
        }

        fn forward(&self, batch: Vec<u8>) -> BoxFuture<'_, Result<sugang_storage::Forwarded, ReplicateError>> {
            use std::sync::atomic::Ordering;
            Box::pin(async move {
                let batch = Batch::decode(&batch).map_err(|e| ReplicateError::Refused(e.to_string()))?;
                match self.primary.commit(batch).await {
                    Ok(receipt)
                        if receipt.first_seq.is_some()
                            && self
                                .lose_next_answer
                                .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                                .is_ok() =>
                    {
                        Err(ReplicateError::Failed("the primary's answer was lost".into()))
                    }
                    Ok(receipt) => Ok(sugang_storage::Forwarded { receipt, position: self.applier.position() }),
                    Err(sugang_storage::CommitError::Conflict(key)) => Err(ReplicateError::Conflict(key)),
                    Err(e) => Err(ReplicateError::Failed(e.to_string())),
                }
            })
        }
    }

    /// A unit held by a node that is not the primary: its batch commits on
    /// the primary but the answer is lost; the worker sends it again, the
    /// guard on its stored offset refuses it, and the worker goes on from
    /// the offset stored. The textbook ships once, counted once, with one
    /// DeliveryStarted event, on both nodes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_answer_to_a_units_batch_takes_effect_once() {
        use crate::delivery::{DELIVERIES, DELIVERY_COUNTS};
        use crate::event::Event;

        let log = Arc::new(SharedLog::default());
        let (primary_dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let open = |dir: &std::path::Path| {
            let config = config(dir);
            let store =
                Store::open(dir, StoreOptions { durability: config.durability, ..StoreOptions::default() }).unwrap();
            (config, store)
        };
        let (config_p, store_p) = open(primary_dir.path());
        let (journal_p, applier_p, task_p) =
            Journal::start_replicated(&store_p, JournalOptions::default(), Arc::new(Appends(log.clone()))).unwrap();
        log.follow(applier_p.clone());
        let forwards = Arc::new(Forwards {
            primary: journal_p.clone(),
            applier: applier_p.clone(),
            lose_next_answer: false.into(),
        });
        let (config_o, store_o) = open(other_dir.path());
        let (journal_o, applier_o, task_o) =
            Journal::start_replicated(&store_o, JournalOptions::default(), forwards.clone()).unwrap();
        log.follow(applier_o);

        let primary = Sugang::replica(config_p, store_p, journal_p, task_p);
        primary.share_subscribers().await.unwrap();
        primary.promote().await.unwrap();
        let other = Sugang::replica(config_o, store_o, journal_o, task_o);
        other.share_subscribers().await.unwrap();
        other.hold_unit("delivery", "other", 1).await.unwrap();
        assert_eq!(other.held_units(), ["delivery"]);

        let course = korean(&primary).await;
        let first = primary.enroll(request(course, "kim")).await.unwrap();
        assert!(other.wait_for("delivery", first.seq).await);
        forwards.lose_next_answer.store(true, std::sync::atomic::Ordering::SeqCst);
        let second = primary.enroll(request(course, "lee")).await.unwrap();
        // Its delivery is the next batch with events: its answer is lost
        // (decided once the primary has committed it, so waited for too).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while other.store().scan(&DELIVERIES).count() < 2
            || primary.store().scan(&DELIVERIES).count() < 2
            || forwards.lose_next_answer.load(std::sync::atomic::Ordering::SeqCst)
        {
            assert!(tokio::time::Instant::now() < deadline, "the second enrollment was not delivered, its answer lost");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The worker goes on past it: a third enrollment is delivered too.
        let third = primary.enroll(request(course, "park")).await.unwrap();
        while other.store().scan(&DELIVERIES).count() < 3 || primary.store().scan(&DELIVERIES).count() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "the worker did not go on after the lost answer");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(other.held_units(), ["delivery"], "a lost answer does not cost the node its unit");
        let last = primary.store().events().last_seq();
        assert!(other.wait_for("delivery", last).await);
        while other.store().events().last_seq() < last {
            assert!(tokio::time::Instant::now() < deadline, "the other node did not apply the log");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for node in [&primary, &other] {
            let store = node.store();
            assert_eq!(store.scan(&DELIVERIES).count(), 3);
            assert_eq!(store.count(&DELIVERY_COUNTS, &"all".to_owned()).unwrap(), 3, "each delivery counted once");
            let started: Vec<_> = store
                .events()
                .read::<Event>(1, 10_000)
                .unwrap()
                .into_iter()
                .filter_map(|e| match e.event {
                    Event::DeliveryStarted { enrollment_id, .. } => Some(enrollment_id),
                    _ => None,
                })
                .collect();
            assert_eq!(started, [first.value.id, second.value.id, third.value.id], "one DeliveryStarted each");
        }
        // What the test holds of the stores and journals goes first: each
        // node's shutdown waits for its store and journal to close.
        log.followers.lock().unwrap().clear();
        other.shutdown().await;
        drop((forwards, applier_p));
        primary.shutdown().await;
    }

    /// A cluster node's subscribers: a unit's worker runs only while the
    /// node holds it; once the holder record names another node, its
    /// commits are refused and it stops, having applied nothing more; held
    /// again, it resumes from the stored offset, each event once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_unit_runs_only_while_held_and_a_stale_holder_commits_nothing() {
        use crate::delivery::DELIVERIES;
        use crate::tables::{UNIT_HOLDERS, UnitHolder};

        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.bus.max_wait = std::time::Duration::from_millis(300);
        let store =
            Store::open(dir.path(), StoreOptions { durability: config.durability, ..StoreOptions::default() }).unwrap();
        let (journal, task) = Journal::start(&store, JournalOptions::default()).unwrap();
        let node = Sugang::replica(config, store, journal, task);
        node.share_subscribers().await.unwrap();
        node.promote().await.unwrap();
        assert_eq!(node.units(), ["delivery", "mypage", "notifier", "waitlist"]);
        assert!(node.held_units().is_empty());
        let deliveries = |node: &Sugang| node.store().scan(&DELIVERIES).count();

        let course = korean(&node).await;
        let first = node.enroll(request(course, "kim")).await.unwrap();
        assert!(!node.wait_for("delivery", first.seq).await, "no node holds the delivery unit");
        assert_eq!(deliveries(&node), 0);

        node.hold_unit("delivery", "a", 1).await.unwrap();
        assert_eq!(node.held_units(), ["delivery"]);
        assert!(node.wait_for("delivery", first.seq).await);
        assert_eq!(deliveries(&node), 1);
        let offset = node.store().offset("delivery").unwrap();

        // Another node takes the unit over (its holder record, through the log).
        let mut batch = Batch::new();
        batch.put(&UNIT_HOLDERS, &"delivery".to_owned(), &UnitHolder { node: "b".into(), epoch: 2 }).unwrap();
        node.journal().commit(batch).await.unwrap();
        let second = node.enroll(request(course, "lee")).await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while node.held_units().contains(&"delivery".to_owned()) {
            assert!(tokio::time::Instant::now() < deadline, "the stale holder's worker did not stop");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!node.wait_for("delivery", second.seq).await);
        assert_eq!(node.store().offset("delivery").unwrap(), offset, "the stale holder committed nothing");
        assert_eq!(deliveries(&node), 1);

        // A record of an earlier lease that comes late does not take it back.
        assert!(matches!(node.hold_unit("delivery", "a", 1).await, Err(CommandError::Conflict(_))));
        assert!(node.held_units().is_empty());
        node.hold_unit("delivery", "a", 3).await.unwrap();
        assert!(node.wait_for("delivery", second.seq).await);
        assert_eq!(deliveries(&node), 2, "each enrollment delivered once");
        node.drop_unit("delivery").await;
        assert!(node.held_units().is_empty());
        node.shutdown().await;
    }
}
