//! `sugang demo replay`: the delivery subscriber is stopped; students
//! enroll; the whole process is stopped (SIGTERM) and started again over the
//! same data directory. The stop switch is not persisted, so the start
//! starts delivery again, from its durable offset (read from the server's
//! log), and it catches up. Then the switch itself is shown in the running
//! process: off, nothing ships; on, the read model moves. Every shipment
//! appears exactly once (one delivery and one DELIVERY_STARTED notification
//! per completed enrollment).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Aborted, Server, Timeline, enroll_all, tally};

/// Enrollments before delivery is stopped, and while it is down.
const BEFORE: usize = 3;
const WHILE_DOWN: usize = 12;
/// Enrollments while delivery is switched off again after the restart.
const AFTER: usize = 3;

pub(super) async fn run(t: &Timeline, dir: &Path) -> Result<String, Aborted> {
    let mut server = Server::start(t, dir, &[]).await?;
    let api = server.api.clone();
    let course = api.course("korean", None).await?;
    t.say(format!("registered course {course}"));

    let jobs = (0..BEFORE).map(|i| (course, format!("early-{i}"))).collect();
    let early = enroll_all(&api, jobs, 3).await;
    let early_seq = early.iter().filter_map(|(_, _, r)| r.as_ref().ok()?.seq).max().unwrap_or(0);
    let shipped = api.caught_up("/deliveries", early_seq, Duration::from_secs(10)).await?;
    let shipped = shipped.body["page"]["totalElements"].as_u64().unwrap_or(0);
    t.say(format!(
        "{BEFORE} students enroll: {}; GET /deliveries?after={early_seq}: {shipped} shipments",
        tally(early.iter().map(|(.., r)| r))
    ));

    // 1. Delivery stops.
    let down = api.put("/admin/faults/subscribers/delivery", json!({"down": true})).await?;
    t.say(format!("PUT /admin/faults/subscribers/delivery {{\"down\": true}}: {} {}", down.status, down.body));
    t.expect(down.status == 200, "the delivery subscriber is stopped (200)");

    let jobs = (0..WHILE_DOWN).map(|i| (course, format!("late-{i}"))).collect();
    let late = enroll_all(&api, jobs, 4).await;
    let acknowledged = late.iter().filter(|(.., r)| matches!(r, Ok(r) if r.status == 201)).count();
    let last_seq = late.iter().filter_map(|(_, _, r)| r.as_ref().ok()?.seq).max().unwrap_or(early_seq);
    t.say(format!("{WHILE_DOWN} students enroll while delivery is down: {}", tally(late.iter().map(|(.., r)| r))));
    t.expect(acknowledged == WHILE_DOWN, format!("every enrollment is acknowledged ({acknowledged}/{WHILE_DOWN})"));
    let delivery = api.subscriber("delivery").await?;
    let deliveries = api.all("/deliveries", "deliveries").await?.len();
    t.say(format!(
        "/admin/actors delivery: down {}, offset {}, lag {}; GET /deliveries: {deliveries} shipments",
        delivery["down"], delivery["offset"], delivery["lag"]
    ));
    t.expect(
        delivery["down"] == true && delivery["lag"].as_u64().unwrap_or(0) > 0 && deliveries == BEFORE,
        format!("no shipment starts while delivery is down ({deliveries} shipments, all from before)"),
    );

    // 2. The whole process restarts.
    let pid = server.pid();
    let durable_offset = delivery["offset"].as_u64().unwrap_or(0);
    server.narrate_log(t);
    t.say(format!("SIGTERM to pid {pid}: drain, flush, exit"));
    let status = server.terminate(t).await?;
    t.say(format!("pid {pid} exited: {status}"));
    t.expect(status.success(), "sugang stopped cleanly on SIGTERM (exit 0)");
    let mut server = Server::start(t, dir, &[]).await?;
    let api = server.api.clone();
    server.narrate_log(t);
    // The fault knob is not persisted: a start starts every subscriber, so
    // delivery comes back on its own, from its durable offset.
    let restarted_from = server
        .log()
        .iter()
        .find(|e| e.message.contains("subscriber started") && e.text("subscriber") == Some("delivery"))
        .and_then(|e| e.number("offset"));
    t.say(format!(
        "the restart started delivery again by itself (its down switch is not persisted): the server logged it \
         starting from offset {}",
        restarted_from.map_or("?".to_owned(), |o| o.to_string())
    ));
    t.expect(
        restarted_from == Some(durable_offset),
        format!(
            "delivery resumed from the durable offset it had reached before the restart ({} = {durable_offset})",
            restarted_from.map_or("?".to_owned(), |o| o.to_string())
        ),
    );

    // 3. Catch-up, exactly once.
    let caught = api.caught_up("/deliveries", last_seq, Duration::from_secs(15)).await?;
    let after_restart = api.all("/deliveries", "deliveries").await?.len();
    let delivery = api.subscriber("delivery").await?;
    t.say(format!(
        "GET /deliveries?after={last_seq}: {}; {after_restart} shipments; /admin/actors delivery: down {}, offset {}, \
         lag {}",
        caught.summary(),
        delivery["down"],
        delivery["offset"],
        delivery["lag"]
    ));
    t.expect(
        caught.status == 200 && after_restart == BEFORE + WHILE_DOWN,
        format!(
            "delivery caught up to seq {last_seq}: {after_restart} shipments, {BEFORE} from before and {WHILE_DOWN} \
             from while it was down"
        ),
    );

    // 4. The switch itself, in this process: down stops shipments, up
    // catches them up. Each is checked by its effect on the read model.
    let down = api.put("/admin/faults/subscribers/delivery", json!({"down": true})).await?;
    t.say(format!("PUT /admin/faults/subscribers/delivery {{\"down\": true}}: {} {}", down.status, down.body));
    let jobs = (0..AFTER).map(|i| (course, format!("again-{i}"))).collect();
    let again = enroll_all(&api, jobs, 3).await;
    let again_seq = again.iter().filter_map(|(_, _, r)| r.as_ref().ok()?.seq).max().unwrap_or(last_seq);
    let held = api.all("/deliveries", "deliveries").await?.len();
    t.say(format!(
        "{AFTER} students enroll: {}; GET /deliveries: {held} shipments",
        tally(again.iter().map(|(.., r)| r))
    ));
    t.expect(
        down.status == 200 && held == after_restart,
        format!("delivery is stopped: no shipment starts ({held} shipments, as before the {AFTER} enrollments)"),
    );
    let up = api.put("/admin/faults/subscribers/delivery", json!({"down": false})).await?;
    t.say(format!("PUT /admin/faults/subscribers/delivery {{\"down\": false}}: {} {}", up.status, up.body));
    let caught = api.caught_up("/deliveries", again_seq, Duration::from_secs(15)).await?;
    let moved = api.all("/deliveries", "deliveries").await?.len();
    t.say(format!("GET /deliveries?after={again_seq}: {}; {moved} shipments", caught.summary()));
    t.expect(
        up.status == 200 && caught.status == 200 && moved == held + AFTER,
        format!("delivery is started: the read model moved from {held} to {moved} shipments"),
    );
    server.narrate_log(t);
    let classes = api.all("/classes?status=COMPLETED", "classes").await?;
    let deliveries = api.all("/deliveries", "deliveries").await?;
    let per_class = per_apply_id(&deliveries);
    let missing: Vec<u64> = ids(&classes).into_iter().filter(|id| !per_class.contains_key(id)).collect();
    let doubled: Vec<u64> = per_class.iter().filter(|(_, n)| **n > 1).map(|(id, _)| *id).collect();
    let started = deliveries.iter().filter(|d| d["deliveryStatus"] == "STARTED").count();
    t.say(format!("COMPLETED enrollments {}; shipments {} ({started} STARTED)", classes.len(), deliveries.len()));
    t.expect(
        missing.is_empty() && doubled.is_empty() && deliveries.len() == classes.len() && started == classes.len(),
        format!(
            "every shipment appears exactly once: one STARTED delivery per enrollment (missing {missing:?}, twice {doubled:?})"
        ),
    );

    // The notifier sees each DeliveryStarted event: a replayed shipment would
    // notify twice.
    let seq = api.last_seq().await?;
    let reply = api.caught_up("/notifications", seq, Duration::from_secs(15)).await?;
    t.expect(reply.status == 200, format!("the notifier caught up to seq {seq}"));
    let notices: Vec<Value> = api
        .all("/notifications", "notifications")
        .await?
        .into_iter()
        .filter(|n| n["kind"] == "DELIVERY_STARTED")
        .collect();
    let per_notice = per_apply_id(&notices);
    let notified_once = ids(&classes).iter().all(|id| per_notice.get(id) == Some(&1));
    t.say(format!("GET /notifications?after={seq}: {} DELIVERY_STARTED notifications", notices.len()));
    t.expect(notified_once && notices.len() == classes.len(), "every student was told of their shipment exactly once");

    Ok(format!(
        "delivery was down for {WHILE_DOWN} enrollments; a SIGTERM restart started it again from its offset and it \
         caught up; switched off and on again it held back and then shipped {AFTER} more; all {} enrollments have \
         exactly one shipment and one shipment notice",
        classes.len()
    ))
}

fn ids(items: &[Value]) -> Vec<u64> {
    items.iter().filter_map(|i| i["id"].as_u64()).collect()
}

/// How many of `items` name each `applyId`.
fn per_apply_id(items: &[Value]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for id in items.iter().filter_map(|i| i["applyId"].as_u64()) {
        *counts.entry(id).or_default() += 1;
    }
    counts
}
