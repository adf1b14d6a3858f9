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
//! Why one primary rather than an owner per course: see the README's
//! cluster section; the foundation crate has per-course leases and fences
//! for the step after this one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sugang_actors::{Config, Sugang};
use sugang_cluster::{AcquireError, Cluster, ClusterConfig, ForwardError as NatsForwardError, LeaseError};
use sugang_http::{
    ClusterLink, ClusterStatus, ForwardError, ForwardedRequest, ForwardedResponse, NodeRole, NodeStatus, StreamStatus,
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
}

/// A forwarded request and where its answer goes (the front answers it).
pub(crate) type Forwarded = (ForwardedRequest, oneshot::Sender<ForwardedResponse>);

/// A started node: the facade (a replica until it becomes the primary), its
/// link for the front, and the forwarded requests for the front to answer.
pub(crate) struct Node {
    pub(crate) sugang: Sugang,
    pub(crate) link: Arc<Link>,
    pub(crate) forwarded: mpsc::Receiver<Forwarded>,
}

/// The journal's way into the log: only the primary has a writer.
struct LogReplicator {
    writer: tokio::sync::Mutex<Option<sugang_cluster::LogWriter>>,
}

impl Replicator for LogReplicator {
    fn append(&self, group: Vec<u8>) -> BoxFuture<'_, Result<u64, ReplicateError>> {
        Box::pin(async move {
            let mut writer = self.writer.lock().await;
            let Some(writer) = writer.as_mut() else {
                return Err(ReplicateError::Refused("this node is not the primary".into()));
            };
            let started = Instant::now();
            let bytes = group.len();
            match writer.append(group).await {
                Ok(position) => {
                    metrics::histogram!("sugang_cluster_append_seconds").record(started.elapsed().as_secs_f64());
                    metrics::counter!("sugang_cluster_append_bytes_total").increment(bytes as u64);
                    metrics::counter!("sugang_cluster_appends_total", "outcome" => "stored").increment(1);
                    Ok(position)
                }
                Err(e) => {
                    metrics::counter!("sugang_cluster_appends_total", "outcome" => "failed").increment(1);
                    Err(ReplicateError::Failed(e.to_string()))
                }
            }
        })
    }
}

/// What the front asks of the cluster.
pub(crate) struct Link {
    cluster: Cluster,
    applier: Arc<Applier>,
    primary: AtomicBool,
    /// Caught up with the log as it was at start.
    caught_up: AtomicBool,
    /// The primary's name as last seen.
    primary_name: std::sync::Mutex<Option<String>>,
    lease_ttl: Duration,
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
        postcard::from_bytes(&answer)
            .map_err(|e| NatsForwardError::Nats { course: 0, source: format!("a malformed answer: {e}").into() })
    }

    async fn status_now(&self) -> Result<ClusterStatus, String> {
        let info = self.cluster.log_info().await.map_err(|e| format!("reading the log stream: {e}"))?;
        let primary = self.cluster.primary().await.map_err(|e| format!("reading the primary lease: {e}"))?;
        let nodes = self.cluster.nodes().await.map_err(|e| format!("reading the node registry: {e}"))?;
        let now = unix_ms();
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
                        self.applier.position()
                    } else {
                        n.applied_position.unwrap_or(0)
                    };
                    NodeStatus {
                        role: if is_primary { NodeRole::Primary } else { NodeRole::Replica },
                        applied_position: applied,
                        lag: last.saturating_sub(applied),
                        heartbeat_age_ms: n.heartbeat_ms_ago.unwrap_or(0),
                        // The primary owns every course; see the module doc.
                        courses_owned: 0,
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
            let payload = postcard::to_allocvec(&request).map_err(|e| ForwardError::Unreachable(e.to_string()))?;
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
    let replicator = Arc::new(LogReplicator { writer: tokio::sync::Mutex::new(None) });
    let (journal, applier, journal_task) =
        Journal::start_replicated(&store, JournalOptions::default(), replicator.clone()).map_err(|e| e.to_string())?;
    follow(cluster.clone(), applier.clone(), store.clone()).await?;
    let started = Instant::now();
    tracing::info!(from = applier.position(), to = log_last, "applying the cluster's log");
    while !applier.reached(log_last, Duration::from_secs(5)).await {
        if store.failure().borrow().is_some() {
            return Err("applying the cluster's log failed (see the log above)".into());
        }
        tracing::info!(at = applier.position(), to = log_last, "still applying the cluster's log");
    }
    tracing::info!(
        position = applier.position(),
        took_ms = started.elapsed().as_millis() as u64,
        "caught up with the log"
    );
    let sugang = Sugang::replica(config, store, journal, journal_task);
    let link = Arc::new(Link {
        cluster: cluster.clone(),
        applier: applier.clone(),
        primary: AtomicBool::new(false),
        caught_up: AtomicBool::new(true),
        primary_name: std::sync::Mutex::new(None),
        lease_ttl: options.lease_ttl,
    });
    link.lookup_primary().await;
    let heartbeat = cluster.start_heartbeat(options.lease_ttl / 3).await.map_err(|e| format!("heartbeat: {e}"))?;
    // Lives as long as the process.
    std::mem::forget(heartbeat);
    let (to_front, forwarded) = mpsc::channel(1024);
    serve_forwarded(&cluster, to_front).await?;
    tokio::spawn(contend(cluster, applier, replicator, sugang.clone(), link.clone(), options.lease_ttl));
    Ok(Node { sugang, link, forwarded })
}

/// Applies every message of the log from the store's position on, for as
/// long as the process lives; the follower is created again after an error.
async fn follow(cluster: Cluster, applier: Arc<Applier>, store: Store) -> Result<(), String> {
    let mut follower =
        cluster.follow_log(applier.position() + 1).await.map_err(|e| format!("following the log: {e}"))?;
    tokio::spawn(async move {
        loop {
            let next = follower.next().await;
            let message = match next {
                Some(Ok(message)) => message,
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
            } else {
                applier.skip(position);
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

/// Answers the requests replicas forward to this node, through the front.
async fn serve_forwarded(cluster: &Cluster, to_front: mpsc::Sender<Forwarded>) -> Result<(), String> {
    let mut commands = cluster.serve_commands().await.map_err(|e| format!("subscribing to forwards: {e}"))?;
    tokio::spawn(async move {
        while let Some(command) = commands.next().await {
            let to_front = to_front.clone();
            tokio::spawn(async move {
                let answer = match postcard::from_bytes::<ForwardedRequest>(command.payload()) {
                    Ok(request) => {
                        let (reply, answer) = oneshot::channel();
                        if to_front.send((request, reply)).await.is_err() {
                            return;
                        }
                        match answer.await {
                            Ok(answer) => answer,
                            Err(_) => return,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a malformed forwarded request");
                        ForwardedResponse { status: 400, headers: Vec::new(), body: Vec::new() }
                    }
                };
                match postcard::to_allocvec(&answer) {
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

/// Contends for the primary lease; once won, takes over the log, starts the
/// actors and renews the lease until the process stops.
async fn contend(
    cluster: Cluster,
    applier: Arc<Applier>,
    replicator: Arc<LogReplicator>,
    sugang: Sugang,
    link: Arc<Link>,
    ttl: Duration,
) {
    let every = ttl / 3;
    let mut lease = loop {
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
    };
    let took = Instant::now();
    tracing::warn!(node = %cluster.node(), epoch = lease.epoch(), "won the primary lease; taking over the log");
    let writer = match cluster.take_over_log(&lease).await {
        Ok(writer) => writer,
        Err(e) => fail_stop(&format!("could not write the takeover marker: {e}")),
    };
    let marker = writer.marker();
    while !applier.reached(marker, Duration::from_secs(5)).await {
        if lease.lapsed() {
            fail_stop("the log was not applied up to the takeover marker before the lease lapsed");
        }
        let _ = cluster.renew(&mut lease).await;
    }
    *replicator.writer.lock().await = Some(writer);
    // Renew while the actors start (recovery may take a while).
    let renewing = tokio::spawn(renew_forever(cluster.clone(), lease, every));
    if let Err(e) = sugang.promote().await {
        fail_stop(&format!("the actors could not start: {e}"));
    }
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
/// lost or lapsed.
async fn renew_forever(cluster: Cluster, mut lease: sugang_cluster::Lease, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match cluster.renew(&mut lease).await {
            Ok(()) => {}
            Err(LeaseError::Lost { .. }) => fail_stop("the primary lease was lost (it expired and was taken)"),
            Err(e) => {
                tracing::warn!(error = %e, "renewing the primary lease failed");
                if lease.lapsed() {
                    fail_stop("the primary lease lapsed: it could not be renewed in time");
                }
            }
        }
    }
}
