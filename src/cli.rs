//! The command line: `serve` and `token`, every flag also read from its
//! `SUGANG_*` variable, and how the flags become the actor system's
//! [`Config`] and the front's [`ServeConfig`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sugang_actors::{Config, RestartPolicy};
use sugang_http::{Auth, Role, SecretError, ServeConfig};
use sugang_storage::Durability;

#[derive(Parser)]
#[command(name = "sugang", version, about = "Online course enrollment as an actor system on a supervision tree")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the service.
    Serve(Box<ServeArgs>),
    /// Print a bearer token for the configured secret.
    Token(TokenArgs),
    /// A narrated fault-injection demo over its own sugang (a child process):
    /// exits 0 only if every expectation held.
    Demo {
        /// What to break on purpose.
        #[arg(value_enum)]
        scenario: crate::demo::Scenario,
    },
    /// The registration-rush load generator, with an invariant check.
    Rush(Box<crate::rush::RushArgs>),
    /// Check or back up a store.
    #[command(subcommand)]
    Store(crate::store::StoreCommand),
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogFormat {
    /// For people.
    Pretty,
    /// One JSON object per line, for machines.
    Json,
}

/// When a write is acknowledged.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum DurabilityArg {
    /// After an fsync (the default).
    Fsync,
    /// Once applied; flushed within 100 ms. For tests and demos only.
    Relaxed,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on: PORT or :PORT (loopback), HOST:PORT, IPv4:PORT
    /// or [IPv6]:PORT. Without a JWT secret only loopback is accepted.
    #[arg(long, env = "SUGANG_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub(crate) listen: SocketAddr,
    /// The data directory (a fjall store), created if missing; a damaged one is refused.
    #[arg(long, env = "SUGANG_DATA_DIR", default_value = "./sugang-data")]
    pub(crate) data_dir: PathBuf,
    /// The HS256 secret of bearer tokens, at least 32 bytes. Without it the API is open (loopback only).
    #[arg(long, env = "SUGANG_JWT_SECRET", hide_env_values = true)]
    pub(crate) jwt_secret: Option<String>,
    /// How long a payment gateway call may take, in milliseconds.
    #[arg(long, env = "SUGANG_PAYMENT_TIMEOUT_MS", default_value_t = 1000)]
    pub(crate) payment_timeout_ms: u64,
    /// Log lines as `pretty` text or `json`.
    #[arg(long, env = "SUGANG_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub(crate) log_format: LogFormat,
    /// Consecutive gateway failures that open the payment breaker.
    #[arg(long, env = "SUGANG_BREAKER_FAILURES", default_value_t = 5)]
    pub(crate) breaker_failures: u32,
    /// How long the breaker stays open before a probe, in milliseconds.
    #[arg(long, env = "SUGANG_BREAKER_RESET_MS", default_value_t = 5000)]
    pub(crate) breaker_reset_ms: u64,
    /// The cap of the doubling reset timeout, in milliseconds.
    #[arg(long, env = "SUGANG_BREAKER_MAX_RESET_MS", default_value_t = 60_000)]
    pub(crate) breaker_max_reset_ms: u64,
    /// Gateway calls in flight at most (the bulkhead).
    #[arg(long, env = "SUGANG_BULKHEAD", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) bulkhead: u64,
    /// A course actor idle this long passivates, in milliseconds.
    #[arg(long, env = "SUGANG_PASSIVATE_AFTER_MS", default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub(crate) passivate_after_ms: u64,
    /// An enrollment actor idle this long passivates, in milliseconds. Short:
    /// its saga is done once it answered, its record is on disk, and a rush
    /// starts one per request (a 409 too), so idling for minutes holds a
    /// mailbox per request in memory.
    #[arg(long, env = "SUGANG_PASSIVATE_ENROLLMENTS_AFTER_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub(crate) passivate_enrollments_after_ms: u64,
    /// Restarts of one supervised actor (entity, payment, subscriber worker)
    /// allowed within the window …
    #[arg(long, env = "SUGANG_MAX_RESTARTS", default_value_t = 5)]
    pub(crate) max_restarts: usize,
    /// … of this many milliseconds; beyond it the actor is held down.
    #[arg(long, env = "SUGANG_RESTART_WINDOW_MS", default_value_t = 10_000)]
    pub(crate) restart_window_ms: u64,
    /// How long the first hold-down lasts, in milliseconds (doubled by each
    /// hold-down in a row) …
    #[arg(long, env = "SUGANG_RESTART_BACKOFF_MS", default_value_t = 5000)]
    pub(crate) restart_backoff_ms: u64,
    /// … up to this many milliseconds.
    #[arg(long, env = "SUGANG_RESTART_BACKOFF_MAX_MS", default_value_t = 60_000)]
    pub(crate) restart_backoff_max_ms: u64,
    /// Hold-downs in a row after which an actor that fails again stops the
    /// process (exit code 70) instead; 0: never.
    #[arg(long, env = "SUGANG_RESTART_ESCALATE_AFTER", default_value_t = 5)]
    pub(crate) restart_escalate_after: u32,
    /// Asks one entity may have outstanding before new ones are shed.
    #[arg(long, env = "SUGANG_MAX_PENDING", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_pending: u64,
    /// HTTP requests handled at once; beyond it requests are shed with 503.
    #[arg(long, env = "SUGANG_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_in_flight: u64,
    /// When a write is acknowledged.
    #[arg(long, env = "SUGANG_DURABILITY", value_enum, default_value = "fsync")]
    pub(crate) durability: DurabilityArg,
    /// The storage engine's page cache, in MiB: the main lever on resident memory.
    #[arg(long, env = "SUGANG_CACHE_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub(crate) cache_mb: u64,
    /// Run as a node of a cluster on NATS JetStream: the servers' URLs
    /// (`nats://host:port`, comma-separated). Without it sugang runs on its
    /// embedded store.
    #[arg(long, env = "SUGANG_NATS", value_delimiter = ',', requires = "node")]
    pub(crate) nats: Vec<String>,
    /// This node's name in the cluster (letters, digits, `-`, `_`).
    #[arg(long, env = "SUGANG_NODE")]
    pub(crate) node: Option<String>,
    /// Replicas of the cluster's log stream and buckets: 3 on a 3-server
    /// NATS cluster, 1 on a single server (development).
    #[arg(long, env = "SUGANG_NATS_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub(crate) nats_replicas: u64,
    /// How long the primary's lease lives without renewal, in milliseconds:
    /// a dead primary is replaced after about this long.
    #[arg(long, env = "SUGANG_LEASE_TTL_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(300..=600_000))]
    pub(crate) lease_ttl_ms: u64,
    /// Store each course's commits on its own subject of the cluster's log,
    /// `sugang.log.course.<id>`, so that its history reads on its own. It
    /// costs about two log appends per enrollment, one after the other,
    /// instead of one per ten (measured: a quarter of the enrollments/s or
    /// less, bench/README.md). What counts is the primary's setting; every
    /// node of this release reads both layouts.
    #[arg(long, env = "SUGANG_COURSE_SUBJECTS")]
    pub(crate) course_subjects: bool,
}

/// The forms `--listen` accepts, as its refusals name them.
const LISTEN_FORMS: &str = "expected PORT, :PORT, HOST:PORT, IPv4:PORT or [IPv6]:PORT (e.g. 8080, :8080, localhost:8080, 0.0.0.0:8080, [::1]:8080)";

/// `--listen`: a bare port or `:PORT` is loopback (127.0.0.1), an IP
/// address with a port is taken as is, and a host name with a port is
/// resolved (its first IPv4 address, else its first address).
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let port_only = text.strip_prefix(':').unwrap_or(text);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = port_only.parse().map_err(|_| format!("port {port_only} is beyond 65535; {LISTEN_FORMS}"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("no port in {text:?}; {LISTEN_FORMS}"));
    };
    let is_host_name = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
        });
    if !is_host_name || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not an address; {LISTEN_FORMS}"));
    }
    let port: u16 = port.parse().map_err(|_| format!("port {port} is beyond 65535; {LISTEN_FORMS}"))?;
    let resolved: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}; {LISTEN_FORMS}"))?.collect();
    resolved
        .iter()
        .find(|addr| addr.is_ipv4())
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| format!("{host} resolves to no address; {LISTEN_FORMS}"))
}

impl ServeArgs {
    /// The actor system's configuration.
    pub(crate) fn config(&self) -> Config {
        let mut config = Config::new(&self.data_dir);
        config.durability = match self.durability {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::Relaxed => Durability::Relaxed { flush_every_ms: 100 },
        };
        config.cache_capacity = self.cache_mb * 1024 * 1024;
        config.payment.timeout = Duration::from_millis(self.payment_timeout_ms);
        config.payment.breaker.failure_threshold = self.breaker_failures;
        config.payment.breaker.reset_timeout = Duration::from_millis(self.breaker_reset_ms);
        config.payment.breaker.max_reset_timeout = Duration::from_millis(self.breaker_max_reset_ms);
        config.payment.bulkhead = self.bulkhead as usize;
        config.restart = RestartPolicy {
            max_restarts: self.max_restarts,
            within: Duration::from_millis(self.restart_window_ms),
            backoff: Duration::from_millis(self.restart_backoff_ms),
            max_backoff: Duration::from_millis(self.restart_backoff_max_ms),
            escalate_after: (self.restart_escalate_after > 0).then_some(self.restart_escalate_after),
        };
        config.courses.idle = Duration::from_millis(self.passivate_after_ms);
        config.enrollments.idle = Duration::from_millis(self.passivate_enrollments_after_ms);
        for supervision in [&mut config.courses, &mut config.enrollments] {
            supervision.restart = config.restart;
            supervision.max_pending = self.max_pending as usize;
        }
        config
    }

    /// How this node joins a cluster; `None` for the embedded mode.
    pub(crate) fn node_options(&self) -> Option<crate::cluster::NodeOptions> {
        if self.nats.is_empty() {
            return None;
        }
        Some(crate::cluster::NodeOptions {
            urls: self.nats.iter().map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect(),
            node: self.node.clone().unwrap_or_default(),
            replicas: self.nats_replicas as usize,
            lease_ttl: Duration::from_millis(self.lease_ttl_ms),
            course_subjects: self.course_subjects,
        })
    }

    /// `relaxed` acknowledges writes before they are durable: it breaks the
    /// service's first promise, so it is for tests and demos on this machine
    /// only, and refused on any address but loopback.
    pub(crate) fn check_durability(&self) -> Result<(), String> {
        match self.durability {
            DurabilityArg::Relaxed if !self.listen.ip().is_loopback() => Err(format!(
                "refusing --durability relaxed on {}: it acknowledges writes before they are on disk, \
                 for tests and demos on loopback only",
                self.listen
            )),
            _ => Ok(()),
        }
    }

    /// The front's configuration; an empty or short JWT secret is refused.
    pub(crate) fn serve_config(&self) -> Result<ServeConfig, SecretError> {
        let auth = match self.jwt_secret.as_deref() {
            None => Auth::open(),
            Some(secret) => Auth::with_secret(secret)?,
        };
        let mut config = ServeConfig::new(auth);
        config.max_in_flight = self.max_in_flight as usize;
        Ok(config)
    }
}

/// A token's role.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum RoleArg {
    Student,
    Instructor,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Student => Role::Student,
            RoleArg::Instructor => Role::Instructor,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// The holder's role.
    #[arg(long, value_enum)]
    pub(crate) role: RoleArg,
    /// The holder's name (a teacher's or a student's, as the API names them).
    #[arg(long)]
    pub(crate) sub: String,
    /// How long the token is valid, in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    pub(crate) ttl_secs: u64,
    /// The secret the server was started with (at least 32 bytes).
    #[arg(long, env = "SUGANG_JWT_SECRET", hide_env_values = true)]
    pub(crate) jwt_secret: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_a_port_a_host_or_an_address() {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(parse_listen("8080"), Ok(loopback(8080)));
        assert_eq!(parse_listen(":8080"), Ok(loopback(8080)));
        assert_eq!(parse_listen("0"), Ok(loopback(0)));
        assert_eq!(parse_listen("0.0.0.0:8080"), Ok(SocketAddr::from(([0, 0, 0, 0], 8080))));
        assert_eq!(parse_listen("[::1]:8080").map(|a| a.ip().is_loopback() && a.is_ipv6()), Ok(true));
        assert_eq!(parse_listen("localhost:8080").map(|a| a.ip().is_loopback() && a.port() == 8080), Ok(true));
    }

    #[test]
    fn listen_refuses_anything_else_naming_the_forms() {
        for bad in ["", "nowhere", "localhost", ":", "8080:", "99999", ":65536", "localhost:99999", "a b:80", "1.2.3:x"]
        {
            let refused = parse_listen(bad).expect_err(bad);
            assert!(refused.contains("expected PORT, :PORT, HOST:PORT"), "{bad:?}: {refused}");
            assert!(!refused.contains('\n'), "{refused}");
        }
    }
}
