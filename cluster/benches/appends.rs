//! Fenced appends against real nats-server processes on this machine: R1 on
//! one server, R3 on a 3-server JetStream cluster. For each, `owners`
//! course owners append enrollment-sized commit batches (6 writes and 4
//! events, like one enrollment of the embedded journal) as fast as their acks
//! come back, for a few seconds; printed: appends/s, p50/p99 append latency,
//! and the NATS messages and bytes per append from the client's statistics
//! (one publish out and one ack in is one round trip).
//!
//! Then a takeover: a course with 1,000 commits is released by its owner and
//! taken by another node, which acquires the lease, appends its marker and
//! replays the history; printed: how long that took (an owner that dies
//! rather than releasing adds up to one lease TTL before the lease is free).
//!
//! `cargo bench -p sugang-cluster --bench appends` (set SUGANG_BENCH_SECS to
//! change the 3 s per row). Everything shares the machine's two cores: the
//! servers, the client and the bench.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sugang_cluster::{Cluster, ClusterConfig, CommitBatch, Event, LocalNats, Write};

fn batch(course: u64, enrollment: u64) -> CommitBatch {
    let writes = (0..6)
        .map(|i| Write { key: format!("t{i}/{course}/{enrollment}").into_bytes(), value: Some(vec![7u8; 48]) })
        .collect();
    let events = (0..4).map(|_| Event { key: enrollment, payload: vec![9u8; 64] }).collect();
    CommitBatch { writes, events }
}

struct Row {
    replicas: usize,
    owners: usize,
    appends: u64,
    secs: f64,
    p50: Duration,
    p99: Duration,
    out_msgs: f64,
    in_msgs: f64,
    out_bytes: f64,
    retried: u64,
}

async fn run(nats: &LocalNats, replicas: usize, owners: usize, secs: f64, first_course: u64) -> Row {
    let mut config = ClusterConfig::new(nats.urls(), format!("bench{owners}"));
    config.replicas = replicas;
    let cluster = Cluster::connect(config).await.expect("connect");
    let mut handles = Vec::new();
    let mut owned = Vec::new();
    for i in 0..owners {
        owned.push(cluster.own(first_course + i as u64).await.expect("own a course"));
    }
    let stats = cluster.statistics();
    let (out0, in0, bytes0) = (
        stats.out_messages.load(Ordering::Relaxed),
        stats.in_messages.load(Ordering::Relaxed),
        stats.out_bytes.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    for mut owner in owned {
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut retried = 0;
            let mut n = 0;
            while Instant::now() < until {
                n += 1;
                let sent = Instant::now();
                let appended = owner.append(&batch(owner.course(), n)).await.expect("append");
                latencies.push(sent.elapsed());
                retried += u64::from(appended.attempts > 1);
            }
            (latencies, retried)
        }));
    }
    let mut latencies = Vec::new();
    let mut retried = 0;
    for handle in handles {
        let (mut l, r) = handle.await.expect("owner task");
        latencies.append(&mut l);
        retried += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let appends = latencies.len() as u64;
    let (out1, in1, bytes1) = (
        stats.out_messages.load(Ordering::Relaxed),
        stats.in_messages.load(Ordering::Relaxed),
        stats.out_bytes.load(Ordering::Relaxed),
    );
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Row {
        replicas,
        owners,
        appends,
        secs: elapsed,
        p50: at(0.50),
        p99: at(0.99),
        out_msgs: (out1 - out0) as f64 / appends as f64,
        in_msgs: (in1 - in0) as f64 / appends as f64,
        out_bytes: (bytes1 - bytes0) as f64 / appends as f64,
        retried,
    }
}

/// Releases a course with `commits` commits and times another node's
/// takeover: acquire, marker, replay.
async fn takeover(nats: &LocalNats, replicas: usize, commits: u64, course: u64) -> (Duration, usize) {
    let connect = |node: &str| {
        let mut config = ClusterConfig::new(nats.urls(), node);
        config.replicas = replicas;
        Cluster::connect(config)
    };
    let old = connect("takeover-old").await.expect("connect");
    let new = connect("takeover-new").await.expect("connect");
    let mut owner = old.own(course).await.expect("own");
    for n in 1..=commits {
        owner.append(&batch(course, n)).await.expect("append");
    }
    owner.release().await.expect("release");
    let started = Instant::now();
    let taken = new.own(course).await.expect("take over");
    let history = new.course_history(course, 1, Some(taken.takeover_seq())).await.expect("replay");
    (started.elapsed(), history.len())
}

fn main() {
    let secs: f64 = std::env::var("SUGANG_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut rows = Vec::new();
    let mut takeovers = Vec::new();
    for replicas in [1, 3] {
        let nats = if replicas == 1 { LocalNats::single() } else { LocalNats::cluster3() }
            .expect("local nats-server (apt-get install nats-server)");
        for (i, owners) in [1usize, 16, 64].into_iter().enumerate() {
            rows.push(runtime.block_on(run(&nats, replicas, owners, secs, 1000 * (i as u64 + 1))));
        }
        takeovers.push((replicas, runtime.block_on(takeover(&nats, replicas, 1000, 99_999))));
    }
    println!(
        "| replicas | owners | appends/s | p50 | p99 | msgs out/append | msgs in/append | bytes out/append | retried |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in rows {
        println!(
            "| R{} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} | {:.2} | {:.0} | {} |",
            r.replicas,
            r.owners,
            r.appends as f64 / r.secs,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.out_msgs,
            r.in_msgs,
            r.out_bytes,
            r.retried,
        );
    }
    println!();
    for (replicas, (took, entries)) in takeovers {
        println!(
            "R{replicas} takeover of a course with 1000 commits: {:.1} ms (acquire, marker, replay of {entries} entries)",
            took.as_secs_f64() * 1e3
        );
    }
}
