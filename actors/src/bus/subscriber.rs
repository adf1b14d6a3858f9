//! One subscriber worker: follows the log from its offset, in order, and
//! commits each batch of effects together with its new offset.
//!
//! Every commit is guarded (see the bus): it holds only if the worker's
//! stored offset is still the one it started from and, in a cluster, the
//! unit's holder record still names this node's lease. In a cluster a
//! refused commit is not a failure but news: the unit moved (the worker
//! stops, quietly), or the offset moved (an earlier commit whose answer was
//! lost did land: the worker goes on from the stored offset); a commit
//! nobody took (no primary for a moment) or left in doubt is sent again,
//! which its guard makes safe. Embedded, any commit error is a failure.
//!
//! Must not skip or repeat an event: events at or below the offset are
//! ignored, and a batch that does not start right after the offset sends the
//! worker back to the log; so does a batch with newer events committed after
//! it (the worker is behind), which applies the backlog in a few commits. A failure is an `Err`: the supervisor restarts the
//! worker, which starts again from its stored offset.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use sugang_storage::{Batch, CommitError, Committed, Journal, Store};
use tokio::sync::watch;

use super::{Part, Projection};
use crate::event::Event;
use crate::tables::{UNIT_HOLDERS, UnitHolder};

/// Events read from the log per catch-up step (one commit each).
const CATCH_UP_CHUNK: usize = 512;

pub(crate) struct SubscriberArgs {
    /// In a cluster, this node's entry in the unit's holder record.
    pub(crate) holder: Option<UnitHolder>,
    pub(crate) projection: Arc<dyn Projection>,
    pub(crate) part: Part,
    /// The name its offset is stored under (`mypage#2`).
    pub(crate) offset_name: String,
    pub(crate) store: Store,
    pub(crate) journal: Journal,
    pub(crate) scope: String,
    pub(crate) group: String,
    /// Where it publishes its offset, for read-your-writes waits.
    pub(crate) progress: watch::Sender<u64>,
    /// Where it publishes the seq of the last event it emitted, before its
    /// offset moves past the events it reacted to.
    pub(crate) emitted: Arc<AtomicU64>,
    /// Fault injection: the knob that makes its projection panic.
    pub(crate) faults: Arc<crate::faults::Faults>,
}

pub(crate) enum SubscriberMsg {
    /// A batch of committed events, in order, from the publisher.
    Live(Arc<Vec<Committed<Event>>>),
    /// Read everything after the offset from the log.
    CatchUp,
}

pub(crate) struct SubscriberActor;

pub(crate) struct SubscriberState {
    args: SubscriberArgs,
    offset: u64,
    /// Whether its offset is stored (registered); until then its commits
    /// expect none.
    registered: bool,
}

/// How long a cluster node's worker keeps sending a commit nobody took, or
/// waits for its copy of the log to show an offset that moved, before it
/// fails (and is restarted under the restart policy).
const CLUSTER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// The unit moved to another node: the worker stops (see the bus).
pub(crate) const UNIT_MOVED: &str = "the unit moved to another node";

impl Actor for SubscriberActor {
    type Msg = SubscriberMsg;
    type State = SubscriberState;
    type Arguments = SubscriberArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SubscriberMsg>,
        args: SubscriberArgs,
    ) -> Result<SubscriberState, ActorProcessingErr> {
        // Registering (offset 0) protects the log from retention; it is the
        // first thing the worker does (`CatchUp`), not a start-up step: a
        // commit can wait for a cluster's primary, and a failed one is the
        // restart policy's to handle.
        let stored = args.store.offset(&args.offset_name)?;
        let offset = stored.unwrap_or(0);
        args.projection.starting(&args.store, args.part)?;
        if args.projection.reacts() {
            // What it emitted before this start is at or below the log's end.
            args.emitted.fetch_max(args.store.events().last_seq(), Ordering::SeqCst);
        }
        args.progress.send_replace(offset);
        ractor::pg::join_scoped(args.scope.clone(), args.group.clone(), vec![myself.get_cell()]);
        myself.send_message(SubscriberMsg::CatchUp)?;
        tracing::info!(subscriber = %args.offset_name, offset, "subscriber started");
        Ok(SubscriberState { args, offset, registered: stored.is_some() })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SubscriberMsg>,
        message: SubscriberMsg,
        state: &mut SubscriberState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SubscriberMsg::CatchUp => state.catch_up().await?,
            SubscriberMsg::Live(batch) => {
                let Some(last) = batch.last() else { return Ok(()) };
                if last.seq <= state.offset {
                    return Ok(());
                }
                let gap = batch.first().is_some_and(|first| first.seq > state.offset + 1);
                // Behind: more has committed since this batch was published,
                // and its batches wait in the mailbox. Reading the log applies
                // them in a few commits instead of one commit per batch (the
                // queued batches are then skipped), so a subscriber under a
                // sustained load keeps up instead of falling ever further behind.
                let behind = state.args.store.events().last_seq() > last.seq;
                if gap || behind {
                    // What came before this batch, or after it, is in the log.
                    state.catch_up().await?;
                    if last.seq <= state.offset {
                        return Ok(());
                    }
                }
                let fresh: Vec<&Committed<Event>> = batch.iter().filter(|e| e.seq > state.offset).collect();
                state.process(&fresh).await?;
            }
        }
        Ok(())
    }
}

impl SubscriberState {
    /// Commits `batch`. Embedded: as is. In a cluster (see the module doc):
    /// a batch nobody took or left in doubt is sent again; a refused one is
    /// `Ok(None)` once the offset stored here has moved (the worker's
    /// offset follows it), or an error once the unit has moved.
    async fn commit(&mut self, batch: Batch) -> Result<Option<sugang_storage::Receipt>, ActorProcessingErr> {
        let Some(holder) = self.args.holder.clone() else {
            return Ok(Some(self.args.journal.commit(batch).await?));
        };
        let started = tokio::time::Instant::now();
        let encoded = batch.encode()?;
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            let batch = Batch::decode(&encoded).map_err(|e| e.to_string())?;
            let error = match self.args.journal.commit(batch).await {
                Ok(receipt) => return Ok(Some(receipt)),
                Err(e) => e,
            };
            if started.elapsed() >= CLUSTER_PATIENCE {
                return Err(error.into());
            }
            match error {
                CommitError::Conflict(_) => {
                    if self.args.store.get(&UNIT_HOLDERS, &self.args.offset_name)?.as_ref() != Some(&holder) {
                        return Err(UNIT_MOVED.into());
                    }
                    let stored = self.args.store.offset(&self.args.offset_name)?;
                    if stored.is_some() && stored != self.registered.then_some(self.offset) {
                        let offset = stored.unwrap_or(0);
                        tracing::info!(
                            subscriber = %self.args.offset_name,
                            from = self.offset,
                            to = offset,
                            "the stored offset moved (an earlier commit landed): going on from it"
                        );
                        self.offset = offset;
                        self.registered = true;
                        self.args.progress.send_replace(offset);
                        return Ok(None);
                    }
                    // Refused by a copy of the log ahead of this node's:
                    // wait until this node's copy shows why.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
                e => {
                    tracing::warn!(subscriber = %self.args.offset_name, error = %e, "a unit's commit was not taken; sending it again");
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(2));
        }
    }

    async fn catch_up(&mut self) -> Result<(), ActorProcessingErr> {
        if !self.registered {
            let mut batch = Batch::new();
            guard(&self.args, &mut batch, None)?;
            batch.set_offset(&self.args.offset_name, 0);
            if self.commit(batch).await?.is_some() {
                self.registered = true;
            }
        }
        let log = self.args.store.events();
        loop {
            let events = log.read::<Event>(self.offset + 1, CATCH_UP_CHUNK)?;
            if events.is_empty() {
                return Ok(());
            }
            if events[0].seq != self.offset + 1 && self.offset >= log.first_seq()?.unwrap_or(0) {
                return Err(format!(
                    "{}: the log has a gap after seq {} (next is {})",
                    self.args.offset_name, self.offset, events[0].seq
                )
                .into());
            }
            let refs: Vec<&Committed<Event>> = events.iter().collect();
            self.process(&refs).await?;
        }
    }

    /// Applies `events` (consecutive, right after the offset) in one batch
    /// with the new offset.
    async fn process(&mut self, events: &[&Committed<Event>]) -> Result<(), ActorProcessingErr> {
        let Some(last) = events.last().map(|e| e.seq) else { return Ok(()) };
        let name = self.args.projection.name();
        let mut batch = Batch::new();
        let mut effects = 0;
        for event in events {
            if self.args.faults.subscriber_must_panic(name) {
                panic!("fault injected: subscriber {} panics on event {}", self.args.offset_name, event.seq);
            }
            effects += self.args.projection.apply(&self.args.store, event, self.args.part, &mut batch).map_err(|e| {
                tracing::error!(subscriber = %self.args.offset_name, seq = event.seq, event = event.event.name(), error = %e, "projection failed");
                e
            })?;
        }
        guard(&self.args, &mut batch, self.registered.then_some(self.offset))?;
        batch.set_offset(&self.args.offset_name, last);
        if let Some(delay) = self.args.faults.subscriber_delay(name) {
            tokio::time::sleep(delay).await;
        }
        let Some(receipt) = self.commit(batch).await? else {
            // The offset moved past these events (an earlier commit landed,
            // its answer lost): the caller's catch-up goes on from there.
            self.args.projection.committed(&self.args.store, self.args.part, self.offset)?;
            return Ok(());
        };
        self.registered = true;
        if receipt.first_seq.is_some() {
            self.args.emitted.fetch_max(receipt.seq, Ordering::SeqCst);
        }
        self.offset = last;
        metrics::counter!("sugang_subscriber_events_total", "subscriber" => name).increment(events.len() as u64);
        metrics::counter!("sugang_subscriber_effects_total", "subscriber" => name).increment(effects);
        // What follows the commit (the notifier's file) is done before the
        // progress is published: a read-your-writes wait covers it too.
        self.args.projection.committed(&self.args.store, self.args.part, last)?;
        self.args.progress.send_replace(last);
        Ok(())
    }
}

/// Makes `batch` commit only if the worker's stored offset is still `offset`
/// (`None`: not registered yet) and, in a cluster, the unit's holder record
/// still holds this node's token: a stale holder, or a commit sent again
/// after its answer was lost, is refused by the log's writer.
fn guard(args: &SubscriberArgs, batch: &mut Batch, offset: Option<u64>) -> Result<(), ActorProcessingErr> {
    if let Some(holder) = &args.holder {
        batch.expect(&UNIT_HOLDERS, &args.offset_name, Some(holder))?;
    }
    batch.expect_offset(&args.offset_name, offset);
    Ok(())
}
