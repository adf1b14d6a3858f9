//! `sugang serve --nats … --node …`: a node of a cluster on NATS JetStream.
//!
//! One node at a time is the *primary*: it holds the primary lease (a key
//! with a TTL in a JetStream key-value bucket, renewed every third of it),
//! runs the supervision tree, and its journal writes every commit group to
//! the log stream, fenced on the stream's last sequence, answering a client
//! only once the stream has stored the group (R3: a quorum of the NATS
//! servers) and the node has applied it. Every node — the primary too —
//! follows the whole log in order and applies it to its local store
//! (`sugang_storage::Applier`), so every node serves the read models from
//! its own copy, with the same event seqs. A replica forwards every command
//! to the primary over NATS request-reply (`sugang_http::ClusterLink`).
//!
//! When the primary dies or stops renewing, its lease expires; the first
//! node to take it writes a takeover marker (from then on the old primary's
//! appends are refused by the server), applies the log up to the marker,
//! and starts the actors exactly as a restart does: sagas, promotions and
//! owed refunds resume. A primary that loses its lease or whose append is
//! fenced stops the process (exit 70): its supervisor starts it again, as
//! a replica.
//!
//! The subscribers' work is shared: every node runs a bus, and each
//! subscriber *unit* (a worker: `delivery`, `mypage#1`) runs on the node
//! that holds its lease (`unit.<name>` in the lease bucket), the nodes
//! taking their fair share as they come and go. A unit's worker on a node
//! that is not the primary reads the events from its copy of the log and
//! sends each batch of effects to the primary to commit; every batch is
//! guarded by the unit's holder record and the worker's offset, so each
//! event takes effect once, whichever node handles it, and a node that lost
//! a unit (paused past its lease) commits nothing more for it once the next
//! holder has written its (later) record.
//!
//! Why one primary rather than an owner per course: see the README's
//! cluster section; the foundation crate has per-course leases and fences
//! for the step after this one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sugang_actors::{Config, Sugang};
use sugang_cluster::{AcquireError, Cluster, ClusterConfig, ForwardError as NatsForwardError, Kept, LeaseError};
use sugang_http::{
    ClusterLink, ClusterStatus, ForwardError, ForwardedRequest, ForwardedResponse, NodeRole, NodeStatus, StreamStatus,
    UnitStatus,
};
use sugang_storage::{Applier, BoxFuture, Journal, JournalOptions, ReplicateError, Replicator, Store, StoreOptions};
use tokio::sync::{mpsc, oneshot};

/// How a node joins its cluster (from `serve`'s flags).
#[derive(Clone, Debug)]
pub(crate) struct NodeOptions {
    pub(crate) urls: Vec<String>,
    pub(crate) node: String,
    pub(crate) replicas: usize,
    pub(crate) lease_ttl: Duration,
    /// Each course's commits on its own subject of the log (`--course-subjects`).
    pub(crate) course_subjects: bool,
}

/// A forwarded request and where its answer goes (the front answers it).
pub(crate) type Forwarded = (ForwardedRequest, oneshot::Sender<ForwardedResponse>);

/// A started node: the facade (a replica until it becomes the primary), its
/// link for the front, and the forwarded requests for the front to answer.
pub(crate) struct Node {
    pub(crate) sugang: Sugang,
    pub(crate) link: Arc<Link>,
    pub(crate) forwarded: mpsc::Receiver<Forwarded>,
    /// Answers once the primary lease is released after the node stopped
    /// (closed at once if this node never was the primary).
    pub(crate) released: oneshot::Receiver<()>,
}

/// The journal's way into the log: only the primary has a writer; another
/// node forwards each batch (its subscriber units' effects) to it.
struct LogReplicator {
    writer: tokio::sync::Mutex<Option<sugang_cluster::LogWriter>>,
    /// Set once `writer` is: this node writes the log.
    writing: AtomicBool,
    /// How a batch reaches the primary (set once the link exists).
    link: std::sync::OnceLock<Arc<Link>>,
    /// Each course's batches on its own subject (`--course-subjects`).
    course_subjects: bool,
}

impl LogReplicator {
    /// A replicator that writes the log through `writer`, or (`None`) not
    /// yet: it forwards until it has one.
    fn new(writer: Option<sugang_cluster::LogWriter>, course_subjects: bool) -> LogReplicator {
        LogReplicator {
            writing: AtomicBool::new(writer.is_some()),
            writer: tokio::sync::Mutex::new(writer),
            link: std::sync::OnceLock::new(),
            course_subjects,
        }
    }
}

impl Replicator for LogReplicator {
    fn splits_by_history(&self) -> bool {
        self.course_subjects
    }

    fn writes(&self) -> bool {
        self.writing.load(Ordering::SeqCst)
    }

    fn forward(&self, batch: Vec<u8>) -> BoxFuture<'_, Result<sugang_storage::Forwarded, ReplicateError>> {
        Box::pin(async move {
            let Some(link) = self.link.get() else {
                return Err(ReplicateError::Refused("this node is not connected to the cluster yet".into()));
            };
            let started = Instant::now();
            let outcome = link.commit(batch).await;
            let label = match &outcome {
                Ok(_) => "committed",
                Err(ReplicateError::Conflict(_)) => "conflict",
                Err(ReplicateError::Failed(_)) => "failed",
                Err(_) => "refused",
            };
            metrics::counter!("sugang_cluster_forwarded_commits_total", "outcome" => label).increment(1);
            metrics::histogram!("sugang_cluster_forwarded_commit_seconds").record(started.elapsed().as_secs_f64());
            outcome
        })
    }

    fn append(&self, group: Vec<u8>) -> BoxFuture<'_, Result<u64, ReplicateError>> {
        Box::pin(async move {
            let appended = self.append_parts(vec![sugang_storage::LogPart { history: None, payload: group }]).await;
            match (appended.positions.first(), appended.error) {
                (_, Some(error)) => Err(error),
                (Some(&position), None) => Ok(position),
                (None, None) => Err(ReplicateError::Failed("the log stored nothing and said nothing".into())),
            }
        })
    }

    /// Each part on its course's subject (a part of several courses'
    /// batches, or of none, on the commit subject), one after the other
    /// ([`sugang_cluster::LogWriter::append_all`]).
    fn append_parts(&self, parts: Vec<sugang_storage::LogPart>) -> BoxFuture<'_, sugang_storage::Appended> {
        Box::pin(async move {
            let mut writer = self.writer.lock().await;
            let Some(writer) = writer.as_mut() else {
                let error = ReplicateError::Refused("this node is not the primary".into());
                return sugang_storage::Appended { positions: Vec::new(), error: Some(error) };
            };
            let started = Instant::now();
            let sizes: Vec<usize> = parts.iter().map(|part| part.payload.len()).collect();
            let parts = parts
                .into_iter()
                .map(|part| sugang_cluster::LogPart { course: part.history, payload: part.payload.into() })
                .collect();
            let appended = writer.append_all(parts).await;
            let stored = appended.positions.len();
            metrics::histogram!("sugang_cluster_append_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("sugang_cluster_append_parts").record(sizes.len() as f64);
            metrics::counter!("sugang_cluster_append_bytes_total")
                .increment(sizes[..stored].iter().sum::<usize>() as u64);
            metrics::counter!("sugang_cluster_appends_total", "outcome" => "stored").increment(stored as u64);
            let error = appended.error.map(|e| {
                let bytes = sizes.get(stored).copied().unwrap_or(0);
                match e {
                    // Refused before it was sent (larger than the server's
                    // max payload): nothing of it stored, the journal sends
                    // it in parts.
                    e @ sugang_cluster::LogAppendError::Invalid(_) => {
                        metrics::counter!("sugang_cluster_appends_total", "outcome" => "too_large").increment(1);
                        ReplicateError::TooLarge(format!("{bytes} bytes: {e}"))
                    }
                    // Refused by the server: a newer primary wrote after
                    // this one's last append. Nothing of the rest is stored.
                    e @ sugang_cluster::LogAppendError::Fenced { .. } => {
                        metrics::counter!("sugang_cluster_appends_total", "outcome" => "fenced").increment(1);
                        ReplicateError::Fenced(e.to_string())
                    }
                    e => {
                        metrics::counter!("sugang_cluster_appends_total", "outcome" => "failed").increment(1);
                        ReplicateError::Failed(e.to_string())
                    }
                }
            });
            sugang_storage::Appended { positions: appended.positions, error }
        })
    }
}

/// The format byte in front of everything nodes send each other over
/// NATS ([`to_wire`]): a node of another release (a rolling upgrade) is
/// told it cannot be read, never misread. Not 0 to 3 (the first byte of
/// the releases before it, a postcard enum variant) nor 100 or more (that
/// of their HTTP answers, a status code).
const WIRE_FORMAT: u8 = 0x53;

/// `value` in the nodes' wire format: [`WIRE_FORMAT`], then postcard.
fn to_wire<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_extend(value, vec![WIRE_FORMAT])
}

/// What [`from_wire`] could not read.
#[derive(Debug)]
enum WireError {
    /// The empty answer of a node that could not read what it was sent: it
    /// did nothing with it.
    NotUnderstood,
    /// Not this release's format, or garbage: whatever it says (an answer
    /// may come after the work was done) is unknown.
    Unreadable(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::NotUnderstood => {
                f.write_str("an empty answer: the other node could not read our message (a node of another release?)")
            }
            WireError::Unreadable(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for WireError {}

/// Reads what [`to_wire`] wrote.
fn from_wire<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    match bytes.split_first() {
        Some((&WIRE_FORMAT, rest)) => match postcard::take_from_bytes(rest) {
            Ok((value, [])) => Ok(value),
            Ok((_, trailing)) => Err(WireError::Unreadable(format!("{} bytes after the message", trailing.len()))),
            Err(e) => Err(WireError::Unreadable(e.to_string())),
        },
        Some((format, _)) => {
            Err(WireError::Unreadable(format!("the unknown wire format {format} (a node of another release?)")))
        }
        None => Err(WireError::NotUnderstood),
    }
}

/// What a node sends the primary: a request a client made of it, or a
/// batch of its subscriber units' effects to commit (`Batch::encode`).
#[derive(serde::Serialize, serde::Deserialize)]
enum ToPrimary {
    Request(ForwardedRequest),
    Commit(Vec<u8>),
}

/// The primary's answer to a forwarded commit.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum CommitAnswer {
    /// Committed and applied on the primary: its receipt, and a log
    /// position at or past the group that holds it.
    Committed { first_seq: Option<u64>, seq: u64, position: u64 },
    /// Nothing stored: the node is not (or no longer) the log's writer.
    Refused(String),
    /// Nothing stored: a guard did not hold (the unit moved, or the batch
    /// was committed already).
    Conflict(String),
    /// The primary's journal failed: the batch may or may not be stored.
    Failed(String),
}

/// How long a forwarded commit keeps looking for a primary that can take it.
const COMMIT_PATIENCE: Duration = Duration::from_secs(15);

/// What the front asks of the cluster.
pub(crate) struct Link {
    cluster: Cluster,
    /// The position this node has applied (not the applier itself: the
    /// link must not keep the store open once the node stops).
    applied: tokio::sync::watch::Receiver<u64>,
    primary: AtomicBool,
    /// Caught up with the log as it was at start.
    caught_up: AtomicBool,
    /// The primary's name as last seen.
    primary_name: std::sync::Mutex<Option<String>>,
    lease_ttl: Duration,
    /// The facade, for the number of courses the primary owns (weak, for
    /// the same reason).
    sugang: sugang_actors::WeakSugang,
}

impl Link {
    fn set_primary_name(&self, name: Option<String>) {
        *self.primary_name.lock().unwrap_or_else(|e| e.into_inner()) = name;
    }

    fn primary_name(&self) -> Option<String> {
        self.primary_name.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn lookup_primary(&self) -> Option<String> {
        match self.cluster.primary().await {
            Ok(lease) => {
                let name = lease.map(|l| l.record.node);
                self.set_primary_name(name.clone());
                name
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the primary lease failed");
                self.primary_name()
            }
        }
    }

    /// Returns once `node` no longer holds the primary lease (checked
    /// every third of the TTL).
    async fn primary_gone(&self, node: &str) {
        loop {
            tokio::time::sleep(self.lease_ttl / 3).await;
            match self.cluster.primary().await {
                Ok(Some(lease)) if lease.record.node == node => {}
                Ok(_) => return,
                Err(e) => tracing::debug!(error = %e, "reading the primary lease failed"),
            }
        }
    }

    async fn forward_once(&self, node: &str, payload: Vec<u8>) -> Result<ForwardedResponse, NatsForwardError> {
        let answer = self.cluster.forward_to(node, 0, payload.into()).await?;
        from_wire(&answer).map_err(|e| match e {
            // Nothing was done: as if the node were not reached.
            WireError::NotUnderstood => NatsForwardError::Nats { course: 0, source: e.into() },
            // It may have been done: in doubt, as an answer that never came.
            WireError::Unreadable(reason) => {
                tracing::warn!(node, %reason, "an unreadable answer to a forwarded request: in doubt");
                NatsForwardError::TimedOut { course: 0, node: node.to_owned(), waited: Duration::ZERO }
            }
        })
    }

    /// Commits `batch` through the primary, waiting (bounded) for one that
    /// takes it: nothing is stored while there is none, so trying again is
    /// safe; a primary that dies with the batch in flight leaves it in
    /// doubt (`Failed`), which its guards make safe to send again.
    async fn commit(&self, batch: Vec<u8>) -> Result<sugang_storage::Forwarded, ReplicateError> {
        let payload = to_wire(&ToPrimary::Commit(batch)).map_err(|e| ReplicateError::Refused(e.to_string()))?;
        let deadline = Instant::now() + COMMIT_PATIENCE;
        let mut refused = String::from("no primary");
        while Instant::now() < deadline {
            let node = match self.primary_name() {
                Some(node) => node,
                None => match self.lookup_primary().await {
                    Some(node) => node,
                    None => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                },
            };
            if node == self.cluster.node() {
                // This node is becoming the primary: its journal writes the
                // log itself from its next group on.
                return Err(ReplicateError::Refused("this node is becoming the primary".into()));
            }
            let answer = tokio::select! {
                answer = self.cluster.forward_to(&node, 0, payload.clone().into()) => answer,
                () = self.primary_gone(&node) => {
                    return Err(ReplicateError::Failed(format!("the primary {node} lost its lease with the batch in flight")));
                }
            };
            let answer = match answer {
                Ok(answer) => answer,
                Err(NatsForwardError::TimedOut { .. }) => {
                    return Err(ReplicateError::Failed(format!("the primary {node} did not answer in time")));
                }
                Err(e) => {
                    refused = e.to_string();
                    self.set_primary_name(None);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            match from_wire::<CommitAnswer>(&answer) {
                Ok(CommitAnswer::Committed { first_seq, seq, position }) => {
                    return Ok(sugang_storage::Forwarded {
                        receipt: sugang_storage::Receipt { first_seq, seq },
                        position,
                    });
                }
                Ok(CommitAnswer::Refused(reason)) => {
                    refused = reason;
                    self.set_primary_name(None);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Ok(CommitAnswer::Conflict(reason)) => return Err(ReplicateError::Conflict(reason)),
                Ok(CommitAnswer::Failed(reason)) => return Err(ReplicateError::Failed(reason)),
                // Not read there, nothing stored: as a refusal, try again.
                Err(e @ WireError::NotUnderstood) => {
                    refused = format!("{node}: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(WireError::Unreadable(reason)) => {
                    return Err(ReplicateError::Failed(format!("an unreadable answer from {node}: {reason}")));
                }
            }
        }
        Err(ReplicateError::Refused(format!("no primary took the batch within {COMMIT_PATIENCE:?}: {refused}")))
    }

    async fn status_now(&self) -> Result<ClusterStatus, String> {
        // Four reads of NATS, side by side: one round trip's wait, not four.
        let (info, primary, nodes, units) = tokio::join!(
            self.cluster.log_info(),
            self.cluster.primary(),
            self.cluster.nodes(),
            self.cluster.unit_leases()
        );
        let info = info.map_err(|e| format!("reading the log stream: {e}"))?;
        let primary = primary.map_err(|e| format!("reading the primary lease: {e}"))?;
        let nodes = nodes.map_err(|e| format!("reading the node registry: {e}"))?;
        let units = units.map_err(|e| format!("reading the unit leases: {e}"))?;
        let now = unix_ms();
        let (courses, offsets, last_seq) = match self.sugang.upgrade() {
            Some(sugang) => (
                sugang
                    .courses(None, sugang_actors::PageRequest { number: 0, size: 1 })
                    .map_err(|e| format!("counting the courses: {e}"))?
                    .total as u64,
                sugang.store().offsets().map_err(|e| format!("reading the subscribers' offsets: {e}"))?,
                sugang.last_seq(),
            ),
            None => (0, Vec::new(), 0),
        };
        let units_of = |node: &str| -> Vec<UnitStatus> {
            units
                .iter()
                .filter(|u| u.node == node)
                .map(|u| {
                    let offset = offsets.iter().find(|(name, _)| *name == u.unit).map_or(0, |(_, at)| *at);
                    UnitStatus {
                        name: u.unit.clone(),
                        offset,
                        lag: last_seq.saturating_sub(offset),
                        lease_age_ms: u.renewed_ms_ago,
                    }
                })
                .collect()
        };
        let primary_name = primary.as_ref().map(|p| p.record.node.clone());
        let last = info.last_position;
        Ok(ClusterStatus {
            node: self.cluster.node().to_string(),
            role: if self.primary.load(Ordering::SeqCst) { NodeRole::Primary } else { NodeRole::Replica },
            primary: primary_name.clone(),
            lease_ttl_ms: self.lease_ttl.as_millis() as u64,
            lease_age_ms: primary.as_ref().map(|p| now.saturating_sub(p.written_at_ms)),
            stream: StreamStatus {
                name: info.name,
                replicas: info.replicas as u64,
                last_position: last,
                leader: info.leader,
            },
            nodes: nodes
                .into_iter()
                .filter(|n| n.live)
                .map(|n| {
                    let is_primary = primary_name.as_deref() == Some(n.node.as_str());
                    let applied = if n.node == self.cluster.node() {
                        *self.applied.borrow()
                    } else {
                        n.applied_position.unwrap_or(0)
                    };
                    NodeStatus {
                        role: if is_primary { NodeRole::Primary } else { NodeRole::Replica },
                        applied_position: applied,
                        lag: last.saturating_sub(applied),
                        heartbeat_age_ms: n.heartbeat_ms_ago.unwrap_or(0),
                        // The primary owns every course; see the module doc.
                        courses_owned: if is_primary { courses } else { 0 },
                        units: units_of(&n.node),
                        name: n.node,
                    }
                })
                .collect(),
        })
    }
}

impl ClusterLink for Link {
    fn node(&self) -> &str {
        self.cluster.node()
    }

    fn is_primary(&self) -> bool {
        self.primary.load(Ordering::SeqCst)
    }

    fn is_ready(&self) -> bool {
        self.caught_up.load(Ordering::SeqCst) && (self.is_primary() || self.primary_name().is_some())
    }

    fn forward(
        &self,
        request: ForwardedRequest,
    ) -> Pin<Box<dyn Future<Output = Result<ForwardedResponse, ForwardError>> + Send + '_>> {
        Box::pin(async move {
            let payload =
                to_wire(&ToPrimary::Request(request)).map_err(|e| ForwardError::Unreachable(e.to_string()))?;
            // The primary as last seen, then once more after a fresh look at
            // the lease: it may have changed hands since.
            let mut node = match self.primary_name() {
                Some(node) => node,
                None => self.lookup_primary().await.ok_or(ForwardError::NoPrimary)?,
            };
            let mut looked_up = false;
            loop {
                let outcome = tokio::select! {
                    outcome = self.forward_once(&node, payload.clone()) => outcome,
                    // A primary that died holding the request never answers:
                    // say so once its lease is gone or taken, not after the
                    // whole forward timeout.
                    () = self.primary_gone(&node) => {
                        tracing::warn!(primary = %node, "the primary lost its lease while a forwarded request was in flight");
                        Err(NatsForwardError::TimedOut { course: 0, node: node.clone(), waited: Duration::ZERO })
                    }
                };
                match outcome {
                    Ok(answer) => return Ok(answer),
                    Err(e) if e.retry_after_lookup() && !looked_up => {
                        looked_up = true;
                        tracing::info!(primary = %node, error = %e, "forward failed; looking the primary up again");
                        node = self.lookup_primary().await.ok_or(ForwardError::NoPrimary)?;
                    }
                    Err(NatsForwardError::TimedOut { .. }) => return Err(ForwardError::TimedOut),
                    Err(NatsForwardError::NoOwner { .. }) => return Err(ForwardError::NoPrimary),
                    Err(e) => return Err(ForwardError::Unreachable(e.to_string())),
                }
            }
        })
    }

    fn status(&self) -> Pin<Box<dyn Future<Output = Result<ClusterStatus, String>> + Send + '_>> {
        Box::pin(self.status_now())
    }
}

/// Whether a NATS URL names a loopback host (`nats://127.0.0.1:4222`,
/// `localhost:4222`, `[::1]:4222`).
pub(crate) fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.rsplit_once(':').map_or(host_port, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The process stops: this node may no longer write (its lease is lost, or
/// its writes are fenced). Its supervisor starts it again, as a replica.
fn fail_stop(reason: &str) -> ! {
    tracing::error!(reason, decision = "fail-stop", "this node stops: it is no longer the primary");
    std::process::exit(70)
}

/// Joins the cluster: connects, opens the local store, applies the log
/// until caught up, and starts contending for the primary lease.
pub(crate) async fn start(options: NodeOptions, config: Config) -> Result<Node, String> {
    let mut cluster_config = ClusterConfig::new(options.urls.clone(), options.node.clone());
    cluster_config.replicas = options.replicas;
    cluster_config.lease_ttl = options.lease_ttl;
    cluster_config.node_ttl = options.lease_ttl;
    // A forwarded enrollment may wait for the payment gateway and its
    // retries: give it what the primary gives it, and then some.
    cluster_config.forward_timeout = config.payment.timeout + config.ask_timeout * 4;
    let cluster = Cluster::connect(cluster_config).await.map_err(|e| e.to_string())?;
    claim_name(&cluster, options.lease_ttl).await?;
    let store = Store::open(
        &config.data_dir,
        // The log is the durable point: the local store is a copy of it,
        // persisted about once a second (see sugang_storage::Applier).
        StoreOptions {
            durability: sugang_storage::Durability::Relaxed { flush_every_ms: 1000 },
            cache_capacity: config.cache_capacity,
        },
    )
    .map_err(|e| format!("cannot use data directory {}: {e}", config.data_dir.display()))?;
    let log_last = cluster.log_last_seq().await.map_err(|e| format!("reading the log stream: {e}"))?;
    match store.log_position() {
        None if store.events().last_seq() > 0 => {
            return Err(format!(
                "data directory {} holds an embedded store: a cluster node needs an empty one, or one of this \
                 cluster's",
                config.data_dir.display()
            ));
        }
        Some(position) if position > log_last => {
            return Err(format!(
                "data directory {} has applied the log up to {position}, but the cluster's log ends at {log_last}: \
                 it belongs to another cluster (or the log was recreated)",
                config.data_dir.display()
            ));
        }
        _ => {}
    }
    let identity = cluster.log_identity().await.map_err(|e| format!("reading the log's first message: {e}"))?;
    if let Some(identity) = &identity {
        store.bind_log(identity).map_err(|e| {
            tracing::error!(error = %e, data_dir = %config.data_dir.display(), "a data directory of another log");
            format!(
                "data directory {} belongs to another cluster (or to this one before its log was created again): {e}",
                config.data_dir.display()
            )
        })?;
    }
    let replicator = Arc::new(LogReplicator::new(None, options.course_subjects));
    let (journal, applier, journal_task) =
        Journal::start_replicated(&store, JournalOptions::default(), replicator.clone()).map_err(|e| e.to_string())?;
    let stop_following = tokio_util::sync::CancellationToken::new();
    follow(cluster.clone(), applier.clone(), store.clone(), stop_following.clone()).await?;
    let started = Instant::now();
    tracing::info!(from = applier.position(), to = log_last, "applying the cluster's log");
    while !applier.reached(log_last, Duration::from_secs(5)).await {
        if let Some(reason) = store.failure().borrow().clone() {
            return Err(format!("applying the cluster's log failed: {reason}"));
        }
        tracing::info!(at = applier.position(), to = log_last, "still applying the cluster's log");
    }
    tracing::info!(
        position = applier.position(),
        took_ms = started.elapsed().as_millis() as u64,
        "caught up with the log"
    );
    let sugang = Sugang::replica(config, store.clone(), journal, journal_task);
    if identity.is_none() {
        let (cluster, applier, stopping) = (cluster.clone(), applier.clone(), sugang.stopping());
        tokio::spawn(async move {
            tokio::select! {
                () = bind_once_written(cluster, applier, store) => {}
                () = stopping.cancelled() => {}
            }
        });
    }
    // The log is followed until the actors have stopped (their last writes
    // come back through it), then let go of the store.
    {
        let stopping = sugang.stopping();
        tokio::spawn(async move {
            stopping.cancelled().await;
            stop_following.cancel();
        });
    }
    let link = Arc::new(Link {
        cluster: cluster.clone(),
        applied: applier.watch(),
        primary: AtomicBool::new(false),
        caught_up: AtomicBool::new(true),
        primary_name: std::sync::Mutex::new(None),
        lease_ttl: options.lease_ttl,
        sugang: sugang.downgrade(),
    });
    link.lookup_primary().await;
    let _ = replicator.link.set(link.clone());
    // A JetStream cluster just started can refuse the buckets' first
    // writes for a few seconds (their streams have no leader yet).
    let started_heartbeat = Instant::now();
    let heartbeat = loop {
        match cluster.start_heartbeat(options.lease_ttl / 3).await {
            Ok(heartbeat) => break heartbeat,
            Err(e) if started_heartbeat.elapsed() < Duration::from_secs(30) => {
                tracing::info!(error = %e, "the node registry is not writable yet; trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(format!("heartbeat: {e}")),
        }
    };
    let stopping = sugang.stopping();
    {
        let (cluster, stopping) = (cluster.clone(), stopping.clone());
        tokio::spawn(async move {
            stopping.cancelled().await;
            drop(heartbeat);
            if let Err(e) = cluster.leave().await {
                tracing::warn!(error = %e, "leaving the node registry failed");
            }
        });
    }
    let (to_front, forwarded) = mpsc::channel(1024);
    let writer = Writer { sugang: sugang.downgrade(), applied: applier.watch(), replicator: replicator.clone() };
    serve_forwarded(&cluster, to_front, writer).await?;
    sugang.share_subscribers().await.map_err(|e| format!("starting the subscribers: {e}"))?;
    tokio::spawn(share_units(cluster.clone(), sugang.downgrade(), options.lease_ttl, stopping.clone()));
    let (released_tx, released) = oneshot::channel();
    tokio::spawn(contend(
        cluster,
        applier,
        replicator,
        sugang.downgrade(),
        link.clone(),
        options.lease_ttl,
        stopping,
        released_tx,
    ));
    Ok(Node { sugang, link, forwarded, released })
}

/// Waits until no live node has this node's name: a heartbeat of it that
/// lapses was a previous run's; one renewed meanwhile is another process's.
/// Two nodes of one name share its forwarding subject, so a replica's "not
/// the primary" (503: not done) could answer a command the primary did.
/// Two started at the same instant can still both pass: names are the
/// operator's to keep apart; this catches the mistake when it is made.
async fn claim_name(cluster: &Cluster, ttl: Duration) -> Result<(), String> {
    let deadline = Instant::now() + (ttl * 3).max(Duration::from_secs(30));
    let mut last_age: Option<u64> = None;
    loop {
        let nodes = match cluster.nodes().await {
            Ok(nodes) => nodes,
            // A JetStream cluster just started: the bucket's stream may
            // have no leader for a few seconds.
            Err(e) if Instant::now() < deadline => {
                tracing::info!(error = %e, "the node registry is not readable yet; trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(e) => return Err(format!("reading the node registry: {e}")),
        };
        let Some(age) = nodes.iter().find(|n| n.live && n.node == cluster.node()).and_then(|n| n.heartbeat_ms_ago)
        else {
            return Ok(());
        };
        if last_age.is_some_and(|last| age < last) || Instant::now() >= deadline {
            tracing::error!(node = %cluster.node(), heartbeat_age_ms = age, "another live node has this node's name");
            return Err(format!(
                "another live node is named {:?} (its heartbeat is being renewed): give every node its own --node",
                cluster.node()
            ));
        }
        if last_age.is_none() {
            tracing::info!(
                node = %cluster.node(),
                heartbeat_age_ms = age,
                "a heartbeat of this node's name is live: waiting for it to lapse (a previous run of this node)"
            );
        }
        last_age = Some(age);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ties a store that joined an empty log to that log once its first
/// message is applied (see [`Store::bind_log`]).
async fn bind_once_written(cluster: Cluster, applier: Arc<Applier>, store: Store) {
    if applier.watch().wait_for(|position| *position >= 1).await.is_err() {
        return;
    }
    loop {
        match cluster.log_identity().await {
            Ok(Some(identity)) => {
                if let Err(e) = store.bind_log(&identity) {
                    tracing::error!(error = %e, "this node's store could not be tied to the cluster's log");
                }
                return;
            }
            Ok(None) => {
                tracing::warn!("the log's first message is gone: this node's store is not tied to the log");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the log's first message failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// How long the log follower may stay silent before it checks whether the
/// log has moved on without it.
const STALL_CHECK: Duration = Duration::from_secs(2);

/// Applies every message of the log from the store's position on, until
/// `stop`; the follower is created again after an error.
async fn follow(
    cluster: Cluster,
    applier: Arc<Applier>,
    store: Store,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let mut follower =
        cluster.follow_log(applier.position() + 1).await.map_err(|e| format!("following the log: {e}"))?;
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(STALL_CHECK, follower.next()) => next,
                () = stop.cancelled() => return,
            };
            let Ok(next) = next else {
                // Quiet for a while: fine if the log has nothing more, but a
                // consumer whose server died can stay silent while the log
                // moves on (and the primary waits for its own writes to come
                // back): then follow again from where this node is.
                match cluster.log_last_seq().await {
                    Ok(last) if last > applier.position() => {
                        tracing::warn!(
                            at = applier.position(),
                            last,
                            "the log moved on but nothing arrived; following again"
                        );
                        metrics::counter!("sugang_cluster_refollows_total").increment(1);
                        follower = refollow(&cluster, &applier).await;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "reading the log's last position failed"),
                }
                continue;
            };
            let message = match next {
                Some(Ok(message)) => message,
                // Not a message the log can be copied past: following again
                // would meet it again, forever; fail-stop, saying why.
                Some(Err(sugang_cluster::ReplayError::Malformed { seq, subject, reason })) => {
                    let e = applier.reject(seq, format!("{reason} (on {subject})"));
                    tracing::error!(error = %e, position = seq, "the log could not be followed; this node stops following");
                    return;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, at = applier.position(), "following the log failed; following again");
                    follower = refollow(&cluster, &applier).await;
                    continue;
                }
                None => {
                    tracing::warn!(at = applier.position(), "the log's consumer closed; following again");
                    follower = refollow(&cluster, &applier).await;
                    continue;
                }
            };
            let position = message.position;
            if message.commit {
                let applier = applier.clone();
                let applied = tokio::task::spawn_blocking(move || applier.apply(position, &message.payload)).await;
                match applied {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, position, "the log could not be applied; this node stops following");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, position, "the log applier thread failed");
                        return;
                    }
                }
            } else if let Err(e) = applier.skip(position) {
                tracing::error!(error = %e, position, "the log could not be followed; this node stops following");
                return;
            }
            cluster.set_applied(position);
            if store.failure().borrow().is_some() {
                return;
            }
        }
    });
    Ok(())
}

async fn refollow(cluster: &Cluster, applier: &Applier) -> sugang_cluster::LogFollower {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match cluster.follow_log(applier.position() + 1).await {
            Ok(follower) => return follower,
            Err(e) => tracing::warn!(error = %e, "following the log failed; retrying"),
        }
    }
}

/// What commits the batches other nodes forward: this node's journal, once
/// it writes the log (weak handles: they must not keep the node's store
/// open once it stops).
struct Writer {
    sugang: sugang_actors::WeakSugang,
    applied: tokio::sync::watch::Receiver<u64>,
    replicator: Arc<LogReplicator>,
}

impl Writer {
    async fn commit(&self, batch: &[u8]) -> CommitAnswer {
        if !self.replicator.writes() {
            return CommitAnswer::Refused("this node is not the primary".into());
        }
        let Some(sugang) = self.sugang.upgrade() else {
            return CommitAnswer::Refused("this node is stopping".into());
        };
        match sugang.commit_forwarded(batch).await {
            // Answered once applied here: the position now holds it.
            Ok(receipt) => CommitAnswer::Committed {
                first_seq: receipt.first_seq,
                seq: receipt.seq,
                position: *self.applied.borrow(),
            },
            Err(sugang_storage::CommitError::Conflict(reason)) => CommitAnswer::Conflict(reason),
            // Nothing of it was stored, for certain: another primary may take it.
            Err(e @ (sugang_storage::CommitError::Stopped(_) | sugang_storage::CommitError::Closed)) => {
                CommitAnswer::Refused(e.to_string())
            }
            Err(e) => {
                tracing::warn!(error = %e, "a forwarded unit batch is in doubt");
                CommitAnswer::Failed(e.to_string())
            }
        }
    }
}

/// Answers what other nodes forward to this node: clients' requests,
/// through the front, and their units' batches, through the journal.
async fn serve_forwarded(cluster: &Cluster, to_front: mpsc::Sender<Forwarded>, writer: Writer) -> Result<(), String> {
    let mut commands = cluster.serve_commands().await.map_err(|e| format!("subscribing to forwards: {e}"))?;
    let writer = Arc::new(writer);
    tokio::spawn(async move {
        while let Some(command) = commands.next().await {
            let (to_front, writer) = (to_front.clone(), writer.clone());
            tokio::spawn(async move {
                let encoded = match from_wire::<ToPrimary>(command.payload()) {
                    Ok(ToPrimary::Request(request)) => {
                        let (reply, answer) = oneshot::channel();
                        if to_front.send((request, reply)).await.is_err() {
                            return;
                        }
                        match answer.await {
                            Ok(answer) => to_wire(&answer),
                            Err(_) => return,
                        }
                    }
                    Ok(ToPrimary::Commit(batch)) => to_wire(&writer.commit(&batch).await),
                    Err(e) => {
                        // Answered empty: whatever its release, the sender
                        // reads that as "not understood", never as an answer.
                        tracing::warn!(error = %e, "a forwarded message this node cannot read");
                        Ok(Vec::new())
                    }
                };
                match encoded {
                    Ok(bytes) => {
                        if let Err(e) = command.respond(bytes.into()).await {
                            tracing::warn!(error = %e, "answering a forwarded request failed");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "encoding a forwarded answer failed"),
                }
            });
        }
    });
    Ok(())
}

/// Makes this node `unit`'s holder, within half a lease TTL (the lease is
/// not renewed meanwhile).
async fn hold(system: &Sugang, unit: &str, node: &str, epoch: u64, ttl: Duration) -> Result<(), String> {
    match tokio::time::timeout(ttl / 2, system.hold_unit(unit, node, epoch)).await {
        Ok(held) => held.map_err(|e| e.to_string()),
        Err(_) => Err(format!("not done within {:?}", ttl / 2)),
    }
}

/// Takes and keeps this node's fair share of the subscriber units: every
/// third of the lease TTL it renews the unit leases it holds (stopping the
/// worker of one it lost), gives up units beyond its share (a node joined),
/// and acquires free ones up to it (a node left or died: its leases expire).
/// On stop, once the workers have stopped, it releases them all, for the
/// other nodes to take at once.
async fn share_units(
    cluster: Cluster,
    sugang: sugang_actors::WeakSugang,
    ttl: Duration,
    stopping: tokio_util::sync::CancellationToken,
) {
    let mut held: std::collections::BTreeMap<String, sugang_cluster::Lease> = std::collections::BTreeMap::new();
    let mut ticks = tokio::time::interval(ttl / 3);
    let mut last_live: Option<usize> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stopping.cancelled() => {
                for (unit, lease) in std::mem::take(&mut held) {
                    if let Err(e) = cluster.release(lease).await {
                        tracing::warn!(unit, error = %e, "releasing a unit lease failed; it expires on its own");
                    }
                }
                return;
            }
        }
        let Some(system) = sugang.upgrade() else { return };
        let units = system.units();
        // Renew what is held; a lease lost or lapsed stops its worker.
        let mut lost = Vec::new();
        for (unit, lease) in held.iter_mut() {
            // Lost or lapsed, it is taken back if nobody else holds it
            // (safe: the unit's commits are fenced by its holder record).
            match cluster.keep(lease).await {
                Ok(Kept::Renewed) => {}
                Ok(Kept::TakenBack) => tracing::info!(unit, epoch = lease.epoch(), "took a unit lease back"),
                Ok(Kept::Unanswered(e)) => tracing::warn!(unit, error = %e, "renewing a unit lease failed"),
                Err(LeaseError::Lost { .. }) => lost.push(unit.clone()),
                Err(e) if lease.lapsed() => {
                    tracing::warn!(unit, error = %e, "a unit lease lapsed and could not be taken back");
                    lost.push(unit.clone());
                }
                Err(e) => tracing::warn!(unit, error = %e, "taking a unit lease back failed"),
            }
        }
        for unit in lost {
            held.remove(&unit);
            metrics::counter!("sugang_cluster_units_total", "event" => "lost").increment(1);
            tracing::warn!(unit, node = %cluster.node(), "lost a subscriber unit's lease: its worker stops here");
            system.drop_unit(&unit).await;
        }
        // A unit whose lease this node renewed but whose worker stopped here
        // because the holder record names another node: two nodes took the
        // lease at once (NATS 2.9's compare-and-set on a key is not atomic in
        // a clustered bucket, nats-server#4320) and the other's record came
        // last; that node's renewal fails, this one's worker must run again.
        // The guards keep the work exactly-once meanwhile.
        let running = system.held_units();
        for (unit, lease) in &held {
            if running.contains(unit) {
                continue;
            }
            tracing::warn!(unit, epoch = lease.epoch(), "holding a unit's lease but not its record: claiming it again");
            if let Err(e) = hold(&system, unit, cluster.node(), lease.epoch(), ttl).await {
                tracing::warn!(unit, error = %e, "claiming a unit again failed; trying again next time");
            }
        }
        // Bounded (a slow read must not hold the next renewal past the
        // TTL); when it fails, the count last read stands: units of a dead
        // node are still taken over while the registry is slow to answer.
        let bound = (ttl / 3).max(Duration::from_millis(500));
        let nodes = tokio::time::timeout(bound, cluster.live_nodes())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {bound:?}").into()));
        let live = match nodes {
            Ok(nodes) => {
                last_live = Some(nodes.len().max(1));
                nodes.len().max(1)
            }
            Err(e) => match last_live {
                Some(live) => {
                    tracing::warn!(error = %e, live, "reading the node registry failed: sharing by the count last read");
                    live
                }
                None => {
                    tracing::warn!(error = %e, "reading the node registry failed: the units are shared next time");
                    continue;
                }
            },
        };
        let share = units.len().div_ceil(live);
        tracing::debug!(live, share, held = held.len(), "sharing the subscriber units");
        // Beyond the share: give the last ones up (stopped first, then
        // released, so their next holder starts after the last commit here).
        while held.len() > share {
            let Some((unit, lease)) = held.pop_last() else { break };
            system.drop_unit(&unit).await;
            if let Err(e) = cluster.release(lease).await {
                tracing::warn!(unit, error = %e, "releasing a unit lease failed; it expires on its own");
            }
            metrics::counter!("sugang_cluster_units_total", "event" => "released").increment(1);
            tracing::info!(unit, node = %cluster.node(), share, "gave a subscriber unit up for another node");
        }
        for unit in &units {
            if held.len() >= share {
                break;
            }
            if held.contains_key(unit) {
                continue;
            }
            let lease = match cluster.acquire_unit(unit).await {
                Ok(lease) => lease,
                Err(AcquireError::Held { .. }) => continue,
                Err(e) => {
                    tracing::warn!(unit, error = %e, "acquiring a unit lease failed");
                    continue;
                }
            };
            match hold(&system, unit, cluster.node(), lease.epoch(), ttl).await {
                Ok(()) => {
                    metrics::counter!("sugang_cluster_units_total", "event" => "acquired").increment(1);
                    tracing::info!(unit, node = %cluster.node(), epoch = lease.epoch(), "took a subscriber unit");
                    held.insert(unit.clone(), lease);
                }
                Err(e) => {
                    tracing::warn!(unit, error = %e, "could not take a subscriber unit; giving its lease back");
                    system.drop_unit(unit).await;
                    if let Err(e) = cluster.release(lease).await {
                        tracing::warn!(unit, error = %e, "releasing a unit lease failed; it expires on its own");
                    }
                }
            }
        }
        metrics::gauge!("sugang_cluster_units_held").set(held.len() as f64);
    }
}

/// Contends for the primary lease; once won, takes over the log, starts the
/// actors and renews the lease until the node stops (`stopping`), when it
/// gives the lease up for another node to take over at once.
#[allow(clippy::too_many_arguments)]
async fn contend(
    cluster: Cluster,
    applier: Arc<Applier>,
    replicator: Arc<LogReplicator>,
    sugang: sugang_actors::WeakSugang,
    link: Arc<Link>,
    ttl: Duration,
    stopping: tokio_util::sync::CancellationToken,
    released: oneshot::Sender<()>,
) {
    let every = ttl / 3;
    let acquired = async {
        loop {
            match cluster.acquire_primary().await {
                Ok(lease) => break lease,
                Err(AcquireError::Held { owner, .. }) => {
                    if owner.is_some() {
                        link.set_primary_name(owner);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "contending for the primary lease failed"),
            }
            tokio::time::sleep(every).await;
        }
    };
    let mut lease = tokio::select! {
        lease = acquired => lease,
        () = stopping.cancelled() => return,
    };
    let took = Instant::now();
    tracing::warn!(node = %cluster.node(), epoch = lease.epoch(), "won the primary lease; taking over the log");
    // A log with no leader for a while (a NATS server lost) is waited out,
    // holding the lease, rather than leaving the cluster with no primary.
    let writer = loop {
        match cluster.take_over_log(&lease).await {
            Ok(writer) => break writer,
            Err(e @ sugang_cluster::LogAppendError::Unavailable { .. }) if took.elapsed() < TAKEOVER_PATIENCE => {
                tracing::warn!(error = %e, "the takeover marker could not be written yet; trying again");
                hold_primary(&cluster, &mut lease).await;
            }
            Err(e) => fail_stop(&format!("could not write the takeover marker: {e}")),
        }
    };
    let marker = writer.marker();
    // Renewed every third of the TTL while the log is applied up to the
    // marker: a catch-up longer than the TTL must not lose the lease.
    while !applier.reached(marker, every).await {
        if sugang.upgrade().is_none_or(|system| system.store().failure().borrow().is_some()) {
            fail_stop("the log could not be applied up to the takeover marker (see the log above)");
        }
        match cluster.renew(&mut lease).await {
            Ok(()) => {}
            Err(LeaseError::Lost { .. }) => fail_stop("the primary lease was lost while applying up to the marker"),
            Err(e) => {
                tracing::warn!(error = %e, at = applier.position(), marker, "renewing the primary lease failed");
                if lease.lapsed() {
                    fail_stop("the log was not applied up to the takeover marker before the lease lapsed");
                }
            }
        }
    }
    drop(applier);
    *replicator.writer.lock().await = Some(writer);
    replicator.writing.store(true, Ordering::SeqCst);
    // Renew while the actors start (recovery may take a while).
    let renewing = tokio::spawn(renew_until(cluster.clone(), lease, every, stopping.clone(), released));
    let Some(system) = sugang.upgrade() else { return };
    if let Err(e) = system.promote().await {
        fail_stop(&format!("the actors could not start: {e}"));
    }
    drop(system);
    link.set_primary_name(Some(cluster.node().to_string()));
    link.primary.store(true, Ordering::SeqCst);
    metrics::counter!("sugang_cluster_takeovers_total").increment(1);
    tracing::warn!(
        node = %cluster.node(),
        marker,
        took_ms = took.elapsed().as_millis() as u64,
        "this node is the primary"
    );
    let _ = renewing.await;
}

/// Renews the primary lease every `every`; the process stops once it is
/// lost or lapsed. Once the node stops (its actors have stopped: nothing
/// writes any more), releases it so another node takes over at once.
async fn renew_until(
    cluster: Cluster,
    mut lease: sugang_cluster::Lease,
    every: Duration,
    stopping: tokio_util::sync::CancellationToken,
    released: oneshot::Sender<()>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stopping.cancelled() => {
                match cluster.release(lease).await {
                    Ok(()) => tracing::info!(node = %cluster.node(), "released the primary lease"),
                    Err(e) => tracing::warn!(error = %e, "releasing the primary lease failed; it expires on its own"),
                }
                let _ = released.send(());
                return;
            }
        }
        match cluster.keep(&mut lease).await {
            Ok(Kept::Renewed) => {}
            Ok(Kept::TakenBack) => primary_taken_back(&cluster, &lease, Duration::ZERO),
            Ok(Kept::Unanswered(e)) => tracing::warn!(error = %e, "renewing the primary lease failed"),
            Err(LeaseError::Lost { .. }) => fail_stop("the primary lease was lost: another node holds it"),
            Err(e) => {
                tracing::warn!(error = %e, lapsed = lease.lapsed(), "the primary lease was not kept: taking it back");
                retake_primary(&cluster, &mut lease, every).await;
            }
        }
    }
}

/// How long a node that won the primary lease keeps trying to write its
/// takeover marker while the log does not take appends.
const TAKEOVER_PATIENCE: Duration = Duration::from_secs(30);

/// Keeps the primary lease while the takeover waits for the log: renewed,
/// or taken back if it lapsed and no other node took it (safe: the marker
/// is fenced on the log's last sequence); the process stops if another
/// node holds it.
async fn hold_primary(cluster: &Cluster, lease: &mut sugang_cluster::Lease) {
    match cluster.keep(lease).await {
        Ok(Kept::Renewed | Kept::TakenBack) => {}
        Ok(Kept::Unanswered(e)) => tracing::warn!(error = %e, "renewing the primary lease failed"),
        Err(LeaseError::Lost { .. }) => fail_stop("the primary lease was lost before the takeover marker"),
        Err(e) => tracing::warn!(error = %e, "taking the primary lease back failed; trying again"),
    }
}

/// How often a primary whose lease lapsed tries to take it back.
const RETAKE_EVERY: Duration = Duration::from_millis(100);

/// How long a primary whose lease lapsed keeps trying to take it back
/// while NATS does not answer: a NATS cluster that lost a
/// server takes up to 15 s here to elect new stream leaders.
const RETAKE_PATIENCE: Duration = Duration::from_secs(15);

/// The primary's lease was lost or lapsed unrenewed: takes it back unless
/// another node holds it, and the process stops otherwise. Taking it back
/// is safe whoever held it meanwhile: every append of this node is fenced
/// on the log's last sequence, so a node that took the log over (its
/// marker) has already made this node's next append refused, and this
/// node stops then. What it spares: a whole takeover (a restart, the
/// actors' recovery) each time the servers take longer than a TTL to elect
/// the lease bucket's leader.
async fn retake_primary(cluster: &Cluster, lease: &mut sugang_cluster::Lease, every: Duration) {
    let started = Instant::now();
    loop {
        match cluster.retake(lease).await {
            Ok(()) => return primary_taken_back(cluster, lease, started.elapsed()),
            Err(LeaseError::Lost { .. }) => fail_stop("the primary lease was lost: another node holds it"),
            Err(e) if started.elapsed() >= RETAKE_PATIENCE => {
                fail_stop(&format!("the primary lease could not be taken back within {RETAKE_PATIENCE:?}: {e}"))
            }
            Err(e) => tracing::debug!(error = %e, "taking the primary lease back failed; trying again"),
        }
        // More often than the other nodes contend (every third of the TTL):
        // the first write the lease bucket's new leader takes wins, and the
        // node already serving as the primary should be that one.
        tokio::time::sleep(every.min(RETAKE_EVERY)).await;
    }
}

/// Counts and says that the primary took its lease back, `after` the
/// first failed attempt.
fn primary_taken_back(cluster: &Cluster, lease: &sugang_cluster::Lease, after: Duration) {
    metrics::counter!("sugang_cluster_primary_retaken_total").increment(1);
    tracing::warn!(
        node = %cluster.node(),
        epoch = lease.epoch(),
        after_ms = after.as_millis() as u64,
        "took the primary lease back"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_reads_its_own_and_refuses_another_release_or_garbage() {
        let unreadable = |e: WireError, what: &str| matches!(&e, WireError::Unreadable(r) if r.contains(what));
        let answer = CommitAnswer::Committed { first_seq: Some(7), seq: 9, position: 12 };
        let bytes = to_wire(&answer).unwrap();
        assert_eq!(bytes[0], WIRE_FORMAT);
        assert!(matches!(
            from_wire::<CommitAnswer>(&bytes),
            Ok(CommitAnswer::Committed { first_seq: Some(7), seq: 9, position: 12 })
        ));
        // The releases without the format byte: their first byte is
        // postcard's variant index, or a status code's, never this format.
        let unversioned = postcard::to_allocvec(&answer).unwrap();
        assert!(unreadable(from_wire::<CommitAnswer>(&unversioned).unwrap_err(), "unknown wire format 0"));
        let commit = postcard::to_allocvec(&ToPrimary::Commit(vec![WIRE_FORMAT, 1, 2])).unwrap();
        assert!(from_wire::<ToPrimary>(&commit).err().is_some_and(|e| unreadable(e, "unknown wire format 1")));
        for status in [100u16, 200, 201, 409, 503] {
            let old =
                postcard::to_allocvec(&ForwardedResponse { status, headers: Vec::new(), body: Vec::new() }).unwrap();
            assert!(from_wire::<ForwardedResponse>(&old).is_err(), "{status}");
        }
        let mut later = bytes.clone();
        later[0] = WIRE_FORMAT + 1;
        assert!(unreadable(from_wire::<CommitAnswer>(&later).unwrap_err(), "another release"));
        // The empty answer of a node that could not read the message: it
        // did nothing, unlike an answer that cannot be read.
        assert!(matches!(from_wire::<CommitAnswer>(&[]), Err(WireError::NotUnderstood)));
        // Garbage after the right byte, or bytes after a whole message, is
        // unreadable, not a panic and not a shorter message.
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(unreadable(from_wire::<CommitAnswer>(&trailing).unwrap_err(), "1 bytes after"));
        for garbage in [&[WIRE_FORMAT][..], &[WIRE_FORMAT, 0xff, 0xff, 0xff], &[WIRE_FORMAT, 9, 1, 2]] {
            assert!(matches!(from_wire::<CommitAnswer>(garbage), Err(WireError::Unreadable(_))), "{garbage:?}");
            assert!(from_wire::<ToPrimary>(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn only_loopback_nats_urls_count_as_loopback() {
        for url in [
            "nats://127.0.0.1:4222",
            "nats://localhost:4222",
            "127.0.0.2:4222",
            "nats://[::1]:4222",
            "nats://u:p@127.0.0.1:4222",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "nats://10.0.0.5:4222",
            "nats://nats.example.org:4222",
            "nats://[2001:db8::1]:4222",
            "nats://127.0.0.1.evil.org:4222",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
    use sugang_cluster::LocalNats;
    use sugang_storage::{Batch, Record, Table};

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Blob(Vec<u8>);
    impl Record for Blob {}
    const BLOBS: Table<u64, Blob> = Table::new("blobs");

    /// The primary's journal on a real server: what NATS refuses for its
    /// size (more than its 1 MiB max payload in one message) is stored in
    /// parts, not taken for a failed write that stops the primary.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs nats-server"]
    async fn a_group_past_the_servers_max_payload_is_stored_in_parts() {
        let nats = LocalNats::single().expect("nats-server");
        let cluster = Cluster::connect(ClusterConfig::new(nats.urls(), "n1")).await.expect("connect");
        let lease = cluster.acquire_primary().await.expect("lease");
        let writer = cluster.take_over_log(&lease).await.expect("marker");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("store");
        let replicator = Arc::new(LogReplicator::new(Some(writer), false));
        let (journal, applier, _task) =
            Journal::start_replicated(&store, JournalOptions::default(), replicator).expect("journal");
        follow(cluster.clone(), applier.clone(), store.clone(), Default::default()).await.expect("follow");

        // 300 commits of 16 KB at once: the journal groups them far past
        // 1 MiB (what a rush of enrollments does with up to 1024 batches).
        let mut committers = Vec::new();
        for i in 0..300u64 {
            let journal = journal.clone();
            committers.push(tokio::spawn(async move {
                let mut batch = Batch::new();
                batch.put(&BLOBS, &i, &Blob(vec![1; 16 * 1024])).expect("encode");
                journal.commit(batch).await
            }));
        }
        for (i, committer) in committers.into_iter().enumerate() {
            let committed = committer.await.expect("join");
            assert!(committed.is_ok(), "commit {i}: {committed:?}");
        }
        assert!(store.failure().borrow().is_none(), "the primary keeps writing");
        assert_eq!(store.scan(&BLOBS).keys().count(), 300);
        let last = cluster.log_last_seq().await.expect("log");
        assert!(last > 2, "stored in several messages after the marker (log at {last})");
    }

    /// A plain NATS publish on `subject`, as `nats pub` would do it: what
    /// another client of the servers can put in the log's stream.
    fn publish_raw(nats: &LocalNats, subject: &str, payload: &[u8]) {
        publish_raw_with_headers(nats, subject, "NATS/1.0\r\n\r\n", payload);
    }

    /// A message someone else published on the log's subjects holds no
    /// group: every node skips it alike, and a node still starts, catches
    /// up and takes over after it (before, every node re-read it forever).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs nats-server"]
    async fn a_foreign_message_in_the_log_is_skipped_and_the_cluster_goes_on() {
        let nats = LocalNats::single().expect("nats-server");
        // The stream exists once a node connected.
        Cluster::connect(cluster_config(&nats, "setup")).await.expect("connect");
        publish_raw(&nats, "sugang.log.junk", b"hello");
        let dir = tempfile::tempdir().expect("tempdir");
        let started =
            tokio::time::timeout(Duration::from_secs(20), start(options(&nats, "n1"), Config::new(dir.path())))
                .await
                .expect("a node must not stall at a foreign message")
                .expect("n1 starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !started.link.is_primary() {
            assert!(Instant::now() < deadline, "n1 never became the primary");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(*started.link.applied.borrow() >= 2, "past the foreign message (1) and n1's marker (2)");
        assert!(started.sugang.store().failure().borrow().is_none());
    }

    /// A message on the commit subject that is not a commit cannot be
    /// skipped (it may be a group this version cannot read): the node
    /// fails, saying why, instead of re-reading it forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs nats-server"]
    async fn a_malformed_commit_fails_the_node_instead_of_stalling_it() {
        let nats = LocalNats::single().expect("nats-server");
        Cluster::connect(cluster_config(&nats, "setup")).await.expect("connect");
        publish_raw(&nats, sugang_cluster::COMMIT_SUBJECT, b"not a group");
        let refused = refused_start(&nats).await;
        assert!(refused.contains("applying the cluster's log failed"), "{refused}");
    }

    /// A commit of a later release's log format (its `Sugang-Format`
    /// header) is not applied as if it were this release's: the node
    /// fails, saying which format it met.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs nats-server"]
    async fn a_commit_of_a_later_log_format_fails_the_node_instead_of_being_misread() {
        let nats = LocalNats::single().expect("nats-server");
        Cluster::connect(cluster_config(&nats, "setup")).await.expect("connect");
        let later = sugang_cluster::COMMIT_FORMAT + 1;
        let headers = format!("NATS/1.0\r\nSugang-Kind: commit\r\nSugang-Format: {later}\r\n\r\n");
        publish_raw_with_headers(&nats, sugang_cluster::COMMIT_SUBJECT, &headers, b"a later layout");
        let refused = refused_start(&nats).await;
        assert!(refused.contains(&format!("log format \"{later}\"")), "{refused}");
    }

    /// Why a node `n1` could not start on the log of `nats`: it must fail,
    /// within 20 s, not stall.
    async fn refused_start(nats: &LocalNats) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let started =
            tokio::time::timeout(Duration::from_secs(20), start(options(nats, "n1"), Config::new(dir.path())))
                .await
                .expect("a node must not stall at a log it cannot copy");
        started.err().expect("n1 cannot copy this log")
    }

    /// [`publish_raw`] with NATS headers (`headers`: the whole header
    /// block, `NATS/1.0` line and blank line included).
    fn publish_raw_with_headers(nats: &LocalNats, subject: &str, headers: &str, payload: &[u8]) {
        use std::io::{BufRead, BufReader, Write};
        let addr = nats.url(0);
        let mut stream = std::net::TcpStream::connect(addr.trim_start_matches("nats://")).expect("connect");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("INFO");
        let total = headers.len() + payload.len();
        write!(
            stream,
            "CONNECT {{\"verbose\":false,\"headers\":true}}\r\nHPUB {subject} {} {total}\r\n{headers}",
            headers.len()
        )
        .expect("HPUB");
        stream.write_all(payload).expect("payload");
        stream.write_all(b"\r\nPING\r\n").expect("PING");
        line.clear();
        reader.read_line(&mut line).expect("PONG");
        assert!(line.starts_with("PONG"), "{line}");
    }

    /// Writes `commits` groups into the log of `nats` as its primary, with
    /// the store in `dir`, on a runtime of its own that ends with it (so
    /// that the store is closed when this returns).
    fn fill_log(nats: &LocalNats, dir: &std::path::Path, commits: u64) {
        let (urls, dir) = (nats.urls(), dir.to_path_buf());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async move {
                let cluster = Cluster::connect(ClusterConfig {
                    lease_ttl: TTL,
                    node_ttl: TTL,
                    ..ClusterConfig::new(urls, "filler")
                })
                .await
                .expect("connect");
                let lease = cluster.acquire_primary().await.expect("lease");
                let writer = cluster.take_over_log(&lease).await.expect("marker");
                let store = Store::open(&dir, StoreOptions::default()).expect("store");
                let replicator = Arc::new(LogReplicator::new(Some(writer), false));
                let (journal, applier, _task) =
                    Journal::start_replicated(&store, JournalOptions::default(), replicator).expect("journal");
                follow(cluster.clone(), applier, store.clone(), Default::default()).await.expect("follow");
                for i in 0..commits {
                    let mut batch = Batch::new();
                    batch.put(&BLOBS, &i, &Blob(vec![1; 8])).expect("encode");
                    journal.commit(batch).await.expect("commit");
                }
                cluster.release(lease).await.expect("release");
            });
        })
        .join()
        .expect("filler");
    }

    /// A node's directory that copied another log (another cluster, or
    /// this one before its stream was created again) is refused, even when
    /// the log it joins is long enough for its position to fit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs nats-server"]
    async fn a_data_directory_of_another_log_is_refused() {
        let (first, second) = (LocalNats::single().expect("nats-server"), LocalNats::single().expect("nats-server"));
        let dir = tempfile::tempdir().expect("tempdir");
        // n1 joins the first cluster while its log is empty, becomes its
        // primary, and stops (its runtime ends).
        let (urls, path) = (first.urls(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().expect("runtime").block_on(async move {
                let options =
                    NodeOptions { urls, node: "n1".into(), replicas: 1, lease_ttl: TTL, course_subjects: false };
                let node = start(options, Config::new(&path)).await.expect("n1 joins");
                let deadline = Instant::now() + Duration::from_secs(20);
                while !node.link.is_primary() || node.sugang.store().log_identity().is_none() {
                    assert!(Instant::now() < deadline, "n1 never became the primary, tied to its log");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .join()
        .expect("the first cluster");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        fill_log(&second, elsewhere.path(), 30);

        let joined = start(options(&second, "n1"), Config::new(dir.path())).await;
        let refused = joined.err().expect("a directory of another log must be refused");
        assert!(refused.contains("belongs to another cluster"), "{refused}");

        // Its own cluster still takes it.
        start(options(&first, "n1"), Config::new(dir.path())).await.expect("the directory's own cluster");
    }

    /// The tests' lease and heartbeat TTL: long enough that a primary on a
    /// busy test machine never misses a renewal (it would exit the process).
    const TTL: Duration = Duration::from_secs(5);

    /// What [`start`] joins with under [`options`].
    fn cluster_config(nats: &LocalNats, node: &str) -> ClusterConfig {
        let mut config = ClusterConfig::new(nats.urls(), node);
        config.lease_ttl = TTL;
        config.node_ttl = TTL;
        config
    }

    fn options(nats: &LocalNats, node: &str) -> NodeOptions {
        NodeOptions { urls: nats.urls(), node: node.into(), replicas: 1, lease_ttl: TTL, course_subjects: false }
    }

    /// A second live node under a name already in use is refused; a node
    /// restarted under its own name joins once its old heartbeat lapsed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs nats-server"]
    async fn a_second_live_node_of_the_same_name_is_refused() {
        let nats = LocalNats::single().expect("nats-server");
        let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let _first = start(options(&nats, "n1"), Config::new(a.path())).await.expect("the first n1");
        let twin = start(options(&nats, "n1"), Config::new(b.path())).await;
        let refused = twin.err().expect("a second live n1 must be refused");
        assert!(refused.contains("another live node is named \"n1\""), "{refused}");

        // A previous run of n2 that died: its last heartbeat lapses.
        Cluster::connect(cluster_config(&nats, "n2")).await.expect("connect").heartbeat().await.expect("heartbeat");
        let c = tempfile::tempdir().expect("tempdir");
        start(options(&nats, "n2"), Config::new(c.path())).await.expect("n2 restarted");
    }
}
