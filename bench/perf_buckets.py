#!/usr/bin/env python3
"""bench/perf_buckets.py: where the server's CPU goes, from a perf recording.

Reads `perf script -F comm,tid,ip,sym` output (of a `perf record -g --call-graph
dwarf` of `sugang serve`) and prints each sample's share by owner: a sample goes
to the first bucket (in the order below) that any frame of its stack matches, so
the shares add up to 100 %. With --cross, prints instead the inclusive share of
cross-cutting costs (a sample counts for every one its stack touches).

    perf record -F 999 -g --call-graph dwarf,16384 -p "$(pidof sugang)" -o perf.data -- sleep 9
    perf script -i perf.data -F comm,tid,ip,sym > script.txt
    bench/perf_buckets.py script.txt            # by owner
    bench/perf_buckets.py --cross script.txt    # malloc, tracing, postcard, ...

Used for the tables in bench/PROFILE.md. bench/cluster.sh runs it on a
cluster's primary with PERF=DIR.
"""
import collections
import re
import sys

OWNERS = [
    # A cluster node (`sugang serve --nats`): what every node does for every
    # enrollment (apply the log), then the NATS client and the cluster glue.
    ("cluster: applying the log (every node, all of it)", r"replicated::Applier|sugang::cluster::follow"),
    ("cluster: NATS client (appends, forwards, the log's delivery)", r"async_nats::"),
    ("cluster: forwarding, units, leases (the glue)", r"sugang::cluster::|sugang_cluster::"),
    ("journal: fjall batch apply (memtable inserts)", r"WriteBatch::commit"),
    ("journal: building the fjall batch", r"Group::into_batch|WriteBatch::with_capacity"),
    ("journal: persist (journal write + fdatasync)", r"Database::persist|write_watermark"),
    ("journal: group assembly (coalesce, envelopes)", r"journal::Writer::run|Group::coalesce|commit_group"),
    ("fjall background flush/compaction", r"fjall::flush::worker|fjall::worker_pool|compaction"),
    ("subscribers (log reads, projections)", r"SubscriberState|EventLog::read|bus::subscriber|Projection"),
    ("course actor", r"CourseActor"),
    ("enrollment actor", r"EnrollmentActor"),
    ("payment actor", r"PaymentActor|payment::"),
    ("facade (Sugang::enroll etc.)", r"sugang_actors::system"),
    ("http (hyper, axum, JSON, middleware)", r"hyper::|axum::|sugang_http"),
    ("ractor other", r"ractor::"),
    ("tokio runtime (park/unpark/scheduling)", r"tokio::runtime"),
]

CROSS = [
    ("malloc/free", r"^_int_malloc|^malloc|^cfree|^_int_free|malloc_consolidate|unlink_chunk|^realloc|_int_realloc"),
    ("tracing spans/events", r"tracing_subscriber|tracing_core::|tracing::span|tracing::__macro|sharded_slab"),
    ("postcard (records and events)", r"postcard|serde_core::de"),
    ("EventLog::read", r"EventLog::read"),
    ("event decode in subscribers", r"Deserialize for sugang_actors::event"),
    ("entity registry", r"sugang_actors::entity"),
    ("metrics", r"metrics::|metrics_exporter|metrics_util"),
    ("serde_json", r"serde_json"),
    ("ractor spawn", r"ractor::actor::Actor::spawn|ActorRuntime<TActor>::new|spawn_linked|ActorCell::new"),
]


def stacks(path):
    with open(path, errors="replace") as f:
        frames, head = [], None
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if head is not None:
                    yield frames
                frames, head = [], None
                continue
            if head is None:
                head = line
                continue
            parts = line.strip().split(" ", 1)
            frames.append(parts[1] if len(parts) > 1 else parts[0])
        if head is not None:
            yield frames


def main():
    args = sys.argv[1:]
    cross = "--cross" in args
    path = [a for a in args if a != "--cross"][0]
    cats = [(name, re.compile(rx)) for name, rx in (CROSS if cross else OWNERS)]
    counts, total = collections.Counter(), 0
    for frames in stacks(path):
        total += 1
        if cross:
            for name, rx in cats:
                if any(rx.search(s) for s in frames):
                    counts[name] += 1
        else:
            owner = next((name for name, rx in cats if any(rx.search(s) for s in frames)), "other")
            counts[owner] += 1
    for name, n in counts.most_common():
        print(f"{100 * n / max(total, 1):6.2f} %  {name}")
    print(f"{total} samples")


if __name__ == "__main__":
    main()
