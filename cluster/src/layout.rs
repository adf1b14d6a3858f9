//! The cluster's layout on JetStream: the connection, the stream that is the
//! log, the key-value buckets for leases and nodes, and the subject names.
//!
//! Owns the names (one place: every other module asks here) and creating or
//! verifying the stream and buckets with the configured replicas. Must not
//! publish to the log or write a bucket: the modules that own those records
//! do.
//!
//! # Subjects
//!
//! - `sugang.log.course.<course>`: the log of one course. Every commit batch
//!   of its owner and every takeover marker, one message each, so a course's
//!   history reads on its own and its last subject sequence is the fence.
//!   The enrollment ids a batch touches are in its `Sugang-Enrollments`
//!   header: a subject per enrollment would break the per-subject fence, and
//!   NATS 2.9 has no atomic multi-message publish.
//! - `sugang.cmd.<node>.course.<course>`: commands forwarded to a course's
//!   owner `node` (request-reply).
//! - KV `sugang_leases`, key `course.<course>`: who owns a course; key
//!   `primary`: the service's primary; keys `unit.<subscriber>[.<part>]`:
//!   who runs a subscriber unit (see `unit`).
//! - KV `sugang_nodes`, key `<node>`: live nodes' heartbeats.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

/// What a node needs to join the cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`); the client fails over between them.
    pub urls: Vec<String>,
    /// This node's name: the lease holder's name, its command subject, its
    /// registry key. Letters, digits, `-` and `_` only.
    pub node: String,
    /// Replicas of the log stream and buckets: 1 on a single server, 3 on a
    /// 3-server cluster.
    pub replicas: usize,
    /// How long a course lease lives without renewal (the lease bucket's
    /// max age): a dead owner's courses are free again after this.
    pub lease_ttl: Duration,
    /// How long a node's heartbeat lives: a node silent for this long is
    /// gone from [`Cluster::nodes`](crate::Cluster::nodes).
    pub node_ttl: Duration,
    /// How long a fenced append keeps retrying while JetStream has no
    /// leader (a NATS server died) before giving up as unavailable.
    pub append_timeout: Duration,
    /// How long a forwarded command waits for the owner's reply.
    pub forward_timeout: Duration,
}

impl ClusterConfig {
    /// Defaults for `node` on `urls`: R1, 5 s leases, 5 s heartbeats.
    pub fn new(urls: Vec<String>, node: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            urls,
            node: node.into(),
            replicas: 1,
            lease_ttl: Duration::from_secs(5),
            node_ttl: Duration::from_secs(5),
            append_timeout: Duration::from_secs(10),
            forward_timeout: Duration::from_secs(5),
        }
    }
}

/// The log stream's name.
pub(crate) const LOG_STREAM: &str = "sugang_log";
/// The lease bucket's name.
pub(crate) const LEASE_BUCKET: &str = "sugang_leases";
/// The node registry bucket's name.
pub(crate) const NODE_BUCKET: &str = "sugang_nodes";
/// Every subject of the log.
pub(crate) const LOG_SUBJECTS: &str = "sugang.log.>";
/// The prefix of a course's log subject.
const COURSE_LOG_PREFIX: &str = "sugang.log.course.";

/// The log subject of `course`.
pub(crate) fn course_subject(course: u64) -> String {
    format!("{COURSE_LOG_PREFIX}{course}")
}

/// The course of a log subject, `None` for a subject that is not a course's.
pub(crate) fn course_of_subject(subject: &str) -> Option<u64> {
    subject.strip_prefix(COURSE_LOG_PREFIX)?.parse().ok()
}

/// The lease key of `course`.
pub(crate) fn lease_key(course: u64) -> String {
    if course == crate::primary::PRIMARY_LEASE { "primary".to_string() } else { format!("course.{course}") }
}

/// The course of a lease key.
pub(crate) fn course_of_lease_key(key: &str) -> Option<u64> {
    key.strip_prefix("course.")?.parse().ok()
}

/// The subject `node` serves `course`'s commands on.
pub(crate) fn command_subject(node: &str, course: u64) -> String {
    format!("sugang.cmd.{node}.course.{course}")
}

/// Every command subject of `node`.
pub(crate) fn node_commands(node: &str) -> String {
    format!("sugang.cmd.{node}.course.*")
}

/// The log stream's state (see [`Cluster::log_info`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogInfo {
    /// The stream's name.
    pub name: String,
    /// Its replicas.
    pub replicas: usize,
    /// Its last sequence.
    pub last_position: u64,
    /// The server leading it (`None` on a single server).
    pub leader: Option<String>,
}

/// Why the cluster could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration cannot work (a bad node name, no URL, replicas not 1–5).
    #[error("bad cluster configuration: {0}")]
    Config(String),
    /// No NATS server could be reached.
    #[error("could not connect to NATS at {urls:?}: {source}")]
    Connect {
        /// The URLs tried.
        urls: Vec<String>,
        /// The client's error.
        source: async_nats::ConnectError,
    },
    /// The stream or a bucket could not be created or does not match.
    #[error("could not create or verify {what}: {source}")]
    Layout {
        /// Which stream or bucket.
        what: &'static str,
        /// JetStream's answer.
        source: async_nats::Error,
    },
}

/// Checks a node name: it becomes a subject token and a KV key.
fn valid_node(node: &str) -> bool {
    !node.is_empty() && node.len() <= 64 && node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A connection to the cluster with its stream and buckets. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    /// The core client: requests, replies, subscriptions.
    pub(crate) client: async_nats::Client,
    /// JetStream on that client: publishes with acks, stream reads.
    pub(crate) js: jetstream::Context,
    /// The log stream (course subjects).
    pub(crate) log: stream::Stream,
    /// Course leases.
    pub(crate) leases: kv::Store,
    /// Node heartbeats.
    pub(crate) nodes: kv::Store,
    /// What this node was configured with.
    pub(crate) config: std::sync::Arc<ClusterConfig>,
    /// When this node joined, unix ms: what its heartbeat reports.
    pub(crate) started_at_ms: u64,
    /// The last log position this node applied: what its heartbeat reports.
    pub(crate) applied: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Cluster {
    /// Connects to `config.urls` and creates (or verifies) the log stream and
    /// the lease and node buckets with `config.replicas`. Retries for up to
    /// 30 s while JetStream has no meta leader yet (a cluster just started).
    pub async fn connect(config: ClusterConfig) -> Result<Cluster, ConnectError> {
        if !valid_node(&config.node) {
            return Err(ConnectError::Config(format!(
                "node name {:?}: use 1–64 letters, digits, '-' or '_'",
                config.node
            )));
        }
        if config.urls.is_empty() {
            return Err(ConnectError::Config("no NATS URL".into()));
        }
        if !(1..=5).contains(&config.replicas) {
            return Err(ConnectError::Config(format!("replicas {}: use 1 to 5", config.replicas)));
        }
        let mut addrs = Vec::new();
        for url in &config.urls {
            let addr = url
                .parse::<async_nats::ServerAddr>()
                .map_err(|err| ConnectError::Config(format!("NATS URL {url:?}: {err}")))?;
            addrs.push(addr);
        }
        let client = async_nats::ConnectOptions::new()
            .name(format!("sugang-{}", config.node))
            .connection_timeout(Duration::from_secs(5))
            .connect(addrs)
            .await
            .map_err(|source| ConnectError::Connect { urls: config.urls.clone(), source })?;
        // Requests and acks time out after 2 s rather than 5: an append then
        // retries (de-duplicated) while a stream elects a new leader.
        let js = jetstream::ContextBuilder::new().timeout(Duration::from_secs(2)).build(client.clone());
        let log_config = stream::Config {
            name: LOG_STREAM.to_string(),
            subjects: vec![LOG_SUBJECTS.to_string()],
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            // The log is the durable point: nothing ages out, duplicates of a
            // retried append are dropped within two minutes.
            duplicate_window: Duration::from_secs(120),
            discard: stream::DiscardPolicy::New,
            allow_direct: true,
            ..Default::default()
        };
        let log = retry_layout("the log stream", || js.get_or_create_stream(log_config.clone())).await?;
        check_replicas("the log stream", log.cached_info().config.num_replicas, config.replicas)?;
        let leases = bucket(
            &js,
            "the lease bucket",
            LEASE_BUCKET,
            "sugang course ownership leases (TTL = lease duration)",
            config.lease_ttl,
            config.replicas,
        )
        .await?;
        let nodes = bucket(
            &js,
            "the node bucket",
            NODE_BUCKET,
            "sugang node heartbeats (TTL = node liveness)",
            config.node_ttl,
            config.replicas,
        )
        .await?;
        for (what, name) in [("the lease bucket", LEASE_BUCKET), ("the node bucket", NODE_BUCKET)] {
            let stream = retry_layout(what, || js.get_stream(format!("KV_{name}"))).await?;
            check_replicas(what, stream.cached_info().config.num_replicas, config.replicas)?;
            let max_age = stream.cached_info().config.max_age;
            let want = if name == LEASE_BUCKET { config.lease_ttl } else { config.node_ttl };
            if max_age != want {
                return Err(ConnectError::Layout {
                    what,
                    source: format!("exists with a TTL of {max_age:?}, configured {want:?}").into(),
                });
            }
        }
        Ok(Cluster {
            client,
            js,
            log,
            leases,
            nodes,
            config: std::sync::Arc::new(config),
            started_at_ms: crate::lease::unix_ms(),
            applied: Default::default(),
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.config.node
    }

    /// The configuration this node joined with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The replicas the log stream has now, as JetStream reports them.
    pub async fn log_replicas(&self) -> Result<usize, async_nats::Error> {
        Ok(self.log.get_info().await?.config.num_replicas)
    }

    /// The NATS client's counters (messages and bytes in and out): what the
    /// round trips per append are measured with.
    pub fn statistics(&self) -> std::sync::Arc<async_nats::Statistics> {
        self.client.statistics()
    }

    /// The server name of the log stream's leader (`None` on a single
    /// server that reports no cluster).
    pub async fn log_leader(&self) -> Result<Option<String>, async_nats::Error> {
        Ok(self.log.get_info().await?.cluster.and_then(|c| c.leader))
    }

    /// The log stream as JetStream reports it now (one request).
    pub async fn log_info(&self) -> Result<LogInfo, async_nats::Error> {
        let info = self.log.get_info().await?;
        Ok(LogInfo {
            name: info.config.name.clone(),
            replicas: info.config.num_replicas,
            last_position: info.state.last_sequence,
            leader: info.cluster.and_then(|c| c.leader),
        })
    }

    /// The last sequence of the whole log (0 when empty): the global seq.
    pub async fn log_last_seq(&self) -> Result<u64, async_nats::Error> {
        Ok(self.log.get_info().await?.state.last_sequence)
    }
}

fn check_replicas(what: &'static str, have: usize, want: usize) -> Result<(), ConnectError> {
    if have == want {
        Ok(())
    } else {
        Err(ConnectError::Layout { what, source: format!("exists with {have} replicas, configured {want}").into() })
    }
}

/// The keys of a bucket (live values and delete markers alike; the caller
/// reads each entry), from a stream-info request that lists the bucket's
/// subjects: one request for up to the server's page (100,000 subjects),
/// another per further page.
///
/// Not `kv::Store::keys`: that creates a consumer per listing, and while a
/// NATS server of the cluster is down consumer creation can fail for tens
/// of seconds (seen here: every listing failed for 30 s after one of three
/// servers was killed, while reads and writes of the same bucket went on).
/// A stream-info request needs only the bucket's stream group (its leader),
/// not the meta leader a consumer's creation needs. (Reading an entry is a
/// direct get any replica answers: a listing is still a little less
/// available than a read while the group elects a leader.)
pub(crate) async fn bucket_keys(store: &kv::Store) -> Result<std::collections::BTreeSet<String>, async_nats::Error> {
    use futures_util::TryStreamExt;
    let mut subjects = store.stream.info_with_subjects(format!("{}>", store.prefix)).await?;
    // Every subject of a bucket's stream is under its prefix: once that
    // many are read, asking for another page would only cost a request.
    let total = subjects.info.state.subjects_count;
    let mut keys = std::collections::BTreeSet::new();
    while (keys.len() as u64) < total {
        let Some((subject, _count)) = subjects.try_next().await? else { break };
        if let Some(key) = subject.strip_prefix(store.prefix.as_str()) {
            keys.insert(key.to_owned());
        }
    }
    Ok(keys)
}

/// Creates (or finds) a key-value bucket keeping one value per key for
/// `ttl`. The bucket's stream is created here, with the settings
/// `async-nats` gives a bucket, because its `create_key_value` first reads
/// account details that NATS 2.9 does not send.
async fn bucket(
    js: &jetstream::Context,
    what: &'static str,
    name: &str,
    description: &str,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, ConnectError> {
    let stream_config = stream::Config {
        name: format!("KV_{name}"),
        description: Some(description.to_string()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: ttl,
        // De-duplication may not outlive the values.
        duplicate_window: ttl.min(Duration::from_secs(120)),
        storage: stream::StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    retry_layout(what, || js.get_or_create_stream(stream_config.clone())).await?;
    retry_layout(what, || js.get_key_value(name)).await
}

/// Runs a layout call until it succeeds, retrying for up to 30 s (a cluster
/// that just started has no JetStream meta leader for a few seconds).
async fn retry_layout<T, E, F, Fut>(what: &'static str, mut call: F) -> Result<T, ConnectError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Into<async_nats::Error>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut pause = Duration::from_millis(50);
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if tokio::time::Instant::now() >= deadline => {
                return Err(ConnectError::Layout { what, source: err.into() });
            }
            Err(err) => {
                tracing::debug!(what, error = %err.into(), "JetStream not ready, retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}
