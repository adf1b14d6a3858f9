//! The node registry: live nodes heartbeat into the `sugang_nodes` bucket
//! (max age = node TTL, so a silent node disappears by itself), and
//! [`Cluster::nodes`] joins it with the lease bucket: each node, the courses
//! it owns and how old each lease is (what `/admin/cluster` will show).
//!
//! Owns the heartbeat records (key `<node>`, a JSON [`Heartbeat`]). Must not
//! write leases.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::layout::Cluster;
use crate::lease::{LeaseInfo, datetime_ms, unix_ms};

/// What a node's registry key holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Heartbeat {
    /// The node.
    pub node: String,
    /// When it joined, unix ms (its clock).
    pub started_at_ms: u64,
    /// The last log position it has applied (its copy of the log).
    #[serde(default)]
    pub applied_position: u64,
}

/// A course a node owns, as the lease bucket says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedCourse {
    /// The course.
    pub course: u64,
    /// The lease's fencing epoch.
    pub epoch: u64,
    /// How long the node has held it, ms (now minus its acquisition).
    pub held_ms: u64,
    /// How long since the lease was last written (acquired or renewed), ms:
    /// near the TTL means the owner stopped renewing.
    pub renewed_ms_ago: u64,
}

/// One node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its name.
    pub node: String,
    /// False for a node that holds live leases but no longer heartbeats
    /// (dead, or paused): its courses come free when their leases expire.
    pub live: bool,
    /// When it joined, unix ms (`None` if not live).
    pub started_at_ms: Option<u64>,
    /// How long since its last heartbeat, ms (`None` if not live).
    pub heartbeat_ms_ago: Option<u64>,
    /// The courses it owns, by course id.
    pub courses: Vec<OwnedCourse>,
    /// The last log position it reported applied (`None` if not live).
    pub applied_position: Option<u64>,
}

/// A running heartbeat task; stops when dropped.
pub struct HeartbeatTask {
    /// The task putting the heartbeat.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HeartbeatTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cluster {
    /// Writes this node's heartbeat once: it is live for the node TTL.
    pub async fn heartbeat(&self) -> Result<(), async_nats::Error> {
        let record = Heartbeat {
            node: self.config.node.clone(),
            started_at_ms: self.started_at_ms,
            applied_position: self.applied.load(std::sync::atomic::Ordering::Relaxed),
        };
        self.nodes.put(self.config.node.as_str(), serde_json::to_vec(&record)?.into()).await?;
        Ok(())
    }

    /// Heartbeats now and then every `every` (a third of the node TTL is a
    /// good period) until the returned task is dropped.
    pub async fn start_heartbeat(&self, every: Duration) -> Result<HeartbeatTask, async_nats::Error> {
        self.heartbeat().await?;
        let cluster = self.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(err) = cluster.heartbeat().await {
                    tracing::warn!(node = %cluster.config.node, error = %err, "heartbeat failed");
                }
            }
        });
        Ok(HeartbeatTask { task })
    }

    /// Records the last log position this node applied: its next heartbeat
    /// reports it.
    pub fn set_applied(&self, position: u64) {
        self.applied.store(position, std::sync::atomic::Ordering::Relaxed);
    }

    /// Removes this node from the registry at once (a clean stop).
    pub async fn leave(&self) -> Result<(), async_nats::Error> {
        self.nodes.delete(self.config.node.as_str()).await?;
        Ok(())
    }

    /// The names of the nodes with a live heartbeat (the node registry
    /// alone: cheaper than [`Cluster::nodes`], which reads the leases too).
    pub async fn live_nodes(&self) -> Result<Vec<String>, async_nats::Error> {
        let mut live = Vec::new();
        for name in crate::layout::bucket_keys(&self.nodes).await? {
            if let Some(entry) = self.nodes.entry(name.as_str()).await?
                && entry.operation == kv::Operation::Put
            {
                live.push(name);
            }
        }
        Ok(live)
    }

    /// Every live node and every node holding a live lease, by name, with
    /// the courses each owns.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, async_nats::Error> {
        let now = unix_ms();
        let mut nodes: BTreeMap<String, NodeInfo> = BTreeMap::new();
        for name in crate::layout::bucket_keys(&self.nodes).await? {
            let Some(entry) = self.nodes.entry(name.as_str()).await? else { continue };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let record: Heartbeat = serde_json::from_slice(&entry.value)?;
            let written = datetime_ms(entry);
            nodes.insert(
                record.node.clone(),
                NodeInfo {
                    node: record.node,
                    live: true,
                    started_at_ms: Some(record.started_at_ms),
                    heartbeat_ms_ago: Some(now.saturating_sub(written)),
                    courses: Vec::new(),
                    applied_position: Some(record.applied_position),
                },
            );
        }
        for LeaseInfo { course, record, written_at_ms, .. } in self.leases().await? {
            let node = nodes.entry(record.node.clone()).or_insert_with(|| NodeInfo {
                node: record.node.clone(),
                live: false,
                started_at_ms: None,
                heartbeat_ms_ago: None,
                courses: Vec::new(),
                applied_position: None,
            });
            node.courses.push(OwnedCourse {
                course,
                epoch: record.epoch,
                held_ms: now.saturating_sub(record.acquired_at_ms),
                renewed_ms_ago: now.saturating_sub(written_at_ms),
            });
        }
        Ok(nodes.into_values().collect())
    }
}
