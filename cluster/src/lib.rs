//! sugang's cluster on NATS JetStream (issue 16): a library, tested against
//! real `nats-server` processes, that `sugang serve --nats` stands on. The
//! service uses the log with one writer at a time (`primary`: the primary
//! lease, the takeover marker, fenced appends, following the log), the
//! subscriber units' leases (`unit`), forwarding, and the node registry;
//! with `--course-subjects` the primary files each course's commits under
//! that course's subject ([`LogWriter::append_all`]), where
//! [`Cluster::follow_course`] reads them; per-course leases and per-course
//! fenced appends (`lease`, `owner`, `replay`) are here, tested, for an
//! owner per course, which the service does not use yet. The embedded single-node mode does not use this crate.
//!
//! What is here:
//!
//! - **Layout** ([`Cluster::connect`]): one log stream `sugang_log` on
//!   `sugang.log.course.<id>` subjects (a course's history reads on its own;
//!   the stream sequence is the global seq) and two key-value buckets,
//!   `sugang_leases` and `sugang_nodes`, all R1 or R3 as configured, created
//!   or verified at connect.
//! - **Course leases** ([`Cluster::acquire`], [`Cluster::renew`],
//!   [`Cluster::release`]): one live owner per course, a key whose max age
//!   is the lease TTL, compare-and-set on the revision held.
//! - **Fenced appends** ([`Cluster::take_over`], [`CourseOwner::append`]):
//!   one message per commit batch (state writes and events together), each
//!   published with `Nats-Expected-Last-Subject-Sequence`; a new owner's
//!   takeover marker makes every append of an earlier owner fail on the
//!   server, so a paused or partitioned owner can never commit.
//! - **Replay** ([`Cluster::course_history`], [`Cluster::log_reader`]): a
//!   course's history from a seq (to rebuild it after a takeover, from a
//!   snapshot's seq), and the whole log in order (for read replicas), both
//!   checking each course's chain.
//! - **Forwarding** ([`Cluster::serve_commands`], [`Cluster::forward`]):
//!   request-reply to a course's owner, with typed "no owner / not owner /
//!   unreachable" errors the caller retries on after a lease lookup.
//! - **Node registry** ([`Cluster::start_heartbeat`], [`Cluster::nodes`]):
//!   live nodes, the courses each owns and the lease ages.
//! - **Local servers** ([`LocalNats`]): one server or a 3-server JetStream
//!   cluster on loopback, for tests, benchmarks and demos.
//!
//! NATS 2.9 (Debian's) is the floor: no atomic multi-message publish, no
//! per-message TTL, so a commit group is one message and a lease TTL is its
//! bucket's max age.
//!
//! # Cost and durability of an append
//!
//! One fenced append is one NATS round trip (a publish out, its ack in;
//! measured by `cargo bench -p sugang-cluster --bench appends`, which prints
//! the client's message counts per append), plus a lease renewal per owned
//! course every fraction of the lease TTL, whatever the append rate. An ack
//! means the stream's replicas stored the message: on R3 a quorum of two
//! servers. NATS 2.9 fsyncs its file store every two minutes (it has no
//! `sync_interval` setting yet), so an acknowledged append survives the
//! SIGKILL of any server, and on R3 the loss of one machine, but not a power
//! cut of a majority of the servers at once; R1 is for development.
//!
//! Measured on this project's 2-core machine, servers, client and bench
//! sharing the cores (enrollment-sized batches of 6 writes and 4 events,
//! ~930 bytes on the wire): R1 15 K appends/s from one owner (p99 0.16 ms),
//! 45 K/s from 64 owners (p99 9 ms); R3 2.5 K/s from one owner (p99 1.6 ms),
//! 19 K/s from 64 owners (p99 14 ms). A takeover of a course with 1,000
//! commits (acquire, marker, replay) takes 9–13 ms once the lease is free.
//!
//! # Layout
//!
//! - `layout`: [`ClusterConfig`], [`Cluster::connect`], the stream, bucket
//!   and subject names.
//! - `lease`: course leases in the lease bucket ([`Lease`], [`LeaseInfo`]).
//! - `owner`: takeover markers, fenced appends, [`CommitBatch`],
//!   [`CourseOwner`].
//! - `replay`: reading a course's history and the whole log ([`LogEntry`],
//!   [`LogReader`]).
//! - `forward`: command subjects, [`Cluster::forward`], [`Commands`].
//! - `registry`: heartbeats and [`Cluster::nodes`].
//! - `primary`: the service's log: the primary lease, takeover marker,
//!   [`LogWriter`], [`LogFollower`].
//! - `unit`: subscriber unit leases ([`UnitLease`]).
//! - `local`: [`LocalNats`], nats-server processes for tests.

mod forward;
mod layout;
mod lease;
mod local;
mod owner;
mod primary;
mod registry;
mod replay;
mod unit;

pub use forward::{CommandRequest, Commands, ForwardError};
pub use layout::{Cluster, ClusterConfig, ConnectError, LogInfo};
pub use lease::{AcquireError, Kept, Lease, LeaseError, LeaseInfo, LeaseRecord};
pub use local::{LocalNats, LocalNatsError};
pub use owner::{AppendError, Appended, CommitBatch, CourseOwner, Event, OwnError, Tail, TakeoverError, Write};
pub use primary::{
    COMMIT_FORMAT, COMMIT_SUBJECT, LogAppendError, LogAppended, LogFollower, LogMessage, LogPart, LogWriter,
    MARKER_SUBJECT,
};
pub use registry::{Heartbeat, HeartbeatTask, NodeInfo, OwnedCourse};
pub use replay::{EntryKind, LogEntry, LogReader, ReplayError};
pub use unit::UnitLease;
