//! The operations views: the supervision tree, the payment actor's breaker
//! and bulkhead, the subscribers and their offsets, the log's last seq.

use std::time::Duration;

use ractor::ActorCell;
use serde::Serialize;

use sugang_storage::{Batch, CommitError, Receipt};

use super::{CommandError, Sugang, internal};
use crate::bus::SubscriberStatus;
use crate::entity::SupervisorSnapshot;
use crate::payment::actor::{PaymentMsg, PaymentSnapshot};
use crate::tables::{UNIT_HOLDERS, UnitHolder};

/// The supervision tree, for `/admin/actors`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeSnapshot {
    pub root: &'static str,
    pub children: Vec<TreeNode>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeNode {
    pub name: &'static str,
    pub alive: bool,
    pub restarts: u64,
    /// While the child is held down by its restart policy: until when, in
    /// unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_down_until: Option<u64>,
    /// While the child is held down: how long until it is started again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<SupervisorSnapshot>,
}

impl TreeNode {
    /// A child with no restarts, not held down, not a supervisor.
    fn plain(name: &'static str, alive: bool) -> Self {
        TreeNode { name, alive, restarts: 0, held_down_until: None, retry_after_ms: None, supervisor: None }
    }
}

impl Sugang {
    // ---- read models (kept by the subscribers) ---------------------------

    /// Waits (bounded) until read model `subscriber` has applied every event
    /// up to `seq`. False when it did not catch up in time.
    pub async fn wait_for(&self, subscriber: &str, seq: u64) -> bool {
        match (self.inner.units.get(), self.inner.live.get()) {
            (None, Some(live)) => live.bus.wait_for(subscriber, seq).await,
            _ => self.stored_wait_for(subscriber, seq).await,
        }
    }

    /// On a cluster node the subscribers' units run on any node and their
    /// offsets arrive with the log: waits (bounded like the bus's wait)
    /// until every offset of `subscriber` stored here has reached `seq`.
    ///
    /// Like the bus's wait, it covers the events the reacting subscribers
    /// (delivery) emit in reaction: once a reactor's offsets have reached
    /// `seq`, its reactions to those events are in the log at or below its
    /// last seq then, which `subscriber` is waited for.
    async fn stored_wait_for(&self, subscriber: &str, seq: u64) -> bool {
        let deadline = tokio::time::Instant::now() + self.inner.config.bus.max_wait;
        let mut through = seq;
        let reactors = self.bus().map(|bus| bus.reactor_names()).unwrap_or_default();
        for reactor in reactors.into_iter().filter(|r| *r != subscriber) {
            if !self.offsets_reach(reactor, seq, deadline).await {
                return false;
            }
            through = through.max(self.store().events().last_seq());
        }
        self.offsets_reach(subscriber, through, deadline).await
    }

    /// Waits until every offset of `subscriber` stored here has reached
    /// `seq`; false at `deadline`.
    async fn offsets_reach(&self, subscriber: &str, seq: u64, deadline: tokio::time::Instant) -> bool {
        let mine =
            |name: &str| name.strip_prefix(subscriber).is_some_and(|rest| rest.is_empty() || rest.starts_with('#'));
        loop {
            let offsets = match self.store().offsets() {
                Ok(offsets) => offsets,
                Err(e) => {
                    tracing::warn!(error = %e, subscriber, "reading the subscribers' offsets failed");
                    return false;
                }
            };
            let theirs: Vec<u64> = offsets.iter().filter(|(name, _)| mine(name)).map(|(_, at)| *at).collect();
            if !theirs.is_empty() && theirs.iter().all(|at| *at >= seq) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops or starts a subscriber (`delivery`, `mypage`, `notifier`).
    /// False for an unknown name.
    pub async fn set_subscriber_down(&self, name: &str, down: bool) -> Result<bool, CommandError> {
        self.bus()
            .ok_or_else(|| CommandError::Unavailable {
                reason: "this node runs no subscribers".into(),
                retry_after: Duration::from_secs(1),
            })?
            .set_down(name.to_owned(), down)
            .await
            .map_err(|reason| CommandError::Unavailable { reason, retry_after: Duration::from_secs(1) })
    }

    /// The subscribers, their offsets and lag (in a cluster, the offsets
    /// stored, wherever their units run).
    pub async fn subscribers(&self) -> Vec<SubscriberStatus> {
        match self.bus() {
            Some(bus) => bus.status().await,
            None => Vec::new(),
        }
    }

    // ---- subscriber units (a cluster node) --------------------------------

    /// Every subscriber unit (`delivery`, `mypage#1`): what the cluster's
    /// nodes share. Empty before [`Sugang::share_subscribers`].
    pub fn units(&self) -> Vec<String> {
        self.inner.units.get().map(|units| units.bus.units()).unwrap_or_default()
    }

    /// The units this node holds.
    pub fn held_units(&self) -> Vec<String> {
        self.inner.units.get().map(|units| units.bus.held()).unwrap_or_default()
    }

    /// Makes `node` `unit`'s holder under the lease epoch `epoch`: stores
    /// the holder record, through the log, then runs the unit's worker here
    /// from its stored offset. From then on a commit of any earlier holder
    /// is refused. A record is only replaced by one of a later epoch, by
    /// compare-and-set on the record as this node's copy shows it: a node
    /// whose record comes late (paused before it was sent) is refused
    /// instead of taking the unit back ([`CommandError::Conflict`]).
    pub async fn hold_unit(&self, unit: &str, node: &str, epoch: u64) -> Result<(), CommandError> {
        let Some(units) = self.inner.units.get() else {
            return Err(CommandError::Internal("this node does not share subscribers".into()));
        };
        let holder = UnitHolder { node: node.to_owned(), epoch };
        let key = unit.to_owned();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = self.store().get(&UNIT_HOLDERS, &key).map_err(internal)?;
            if let Some(current) = &current
                && (current.epoch > epoch || (current.epoch == epoch && current.node != node))
            {
                return Err(CommandError::Conflict(format!(
                    "unit {unit} is held by {}@{} already, a later lease than {node}@{epoch}",
                    current.node, current.epoch
                )));
            }
            if current.as_ref() == Some(&holder) {
                break;
            }
            let mut batch = Batch::new();
            batch.expect(&UNIT_HOLDERS, &key, current.as_ref()).map_err(internal)?;
            batch.put(&UNIT_HOLDERS, &key, &holder).map_err(internal)?;
            match self.inner.journal.commit(batch).await {
                Ok(_) => break,
                // Another record landed first: look again once this node's
                // copy of the log shows it.
                Err(CommitError::Conflict(_)) if attempts < 20 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(CommandError::Unavailable {
                        reason: format!("storing the holder of unit {unit}: {e}"),
                        retry_after: Duration::from_secs(1),
                    });
                }
            }
        }
        match units.bus.hold(key, Some(holder)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(CommandError::NotFound { what: "subscriber unit", id: 0 }),
            Err(e) => Err(CommandError::Internal(format!("starting unit {unit}: {e}"))),
        }
    }

    /// Stops `unit`'s worker here (this node gives the unit up or lost it),
    /// and waits until it has stopped.
    pub async fn drop_unit(&self, unit: &str) {
        if let Some(units) = self.inner.units.get()
            && let Err(e) = units.bus.hold(unit.to_owned(), None).await
        {
            tracing::error!(unit, error = %e, "stopping a unit's worker failed");
        }
    }

    /// Commits a batch a unit's worker on another node sends to this node,
    /// the log's writer (`Batch::encode`): its receipt, once applied here.
    pub async fn commit_forwarded(&self, batch: &[u8]) -> Result<Receipt, CommitError> {
        // Not one this node can read (another release's): nothing stored.
        let batch = Batch::decode(batch).map_err(|e| CommitError::Stopped(format!("a malformed batch: {e}").into()))?;
        self.inner.journal.commit(batch).await
    }

    /// The event seq the log has reached.
    pub fn last_seq(&self) -> u64 {
        self.store().events().last_seq()
    }

    // ---- operations -----------------------------------------------------

    /// The breaker and bulkhead.
    pub async fn payment_snapshot(&self) -> Result<PaymentSnapshot, CommandError> {
        let payment = self.live()?.payment.get();
        ractor::call_t!(payment, |reply| PaymentMsg::Snapshot { reply }, 2000).map_err(|e| CommandError::Unavailable {
            reason: format!("payment actor: {e}"),
            retry_after: Duration::from_secs(1),
        })
    }

    /// The supervision tree.
    pub fn tree(&self) -> TreeSnapshot {
        let running = |cell: ActorCell| cell.get_status() == ractor::ActorStatus::Running;
        let journal_alive =
            self.inner.journal_task.lock().map(|t| t.as_ref().is_some_and(|t| !t.is_finished())).unwrap_or(false);
        let Some(live) = self.inner.live.get() else {
            // A cluster replica: only the journal (its log applier) runs.
            return TreeSnapshot { root: "root", children: vec![TreeNode::plain("journal", journal_alive)] };
        };
        TreeSnapshot {
            root: "root",
            children: vec![
                TreeNode::plain("journal", journal_alive),
                TreeNode {
                    supervisor: Some(live.courses.registry().snapshot()),
                    ..TreeNode::plain("courses", running(live.courses.supervisor_cell()))
                },
                TreeNode {
                    supervisor: Some(live.classes.registry().snapshot()),
                    ..TreeNode::plain("classes", running(live.classes.supervisor_cell()))
                },
                TreeNode::plain("bus", running(self.bus().unwrap_or(&live.bus).supervisor_cell())),
                TreeNode {
                    restarts: live.payment.restarts(),
                    held_down_until: live.payment.held_down_until_ms(),
                    retry_after_ms: live.payment.held_down_for().map(|d| d.as_millis() as u64),
                    ..TreeNode::plain("payment", running(live.payment.get().get_cell()))
                },
                TreeNode {
                    restarts: live.waiting_room.restarts(),
                    ..TreeNode::plain("gate", live.waiting_room.actor().is_ok())
                },
            ],
        }
    }
}
