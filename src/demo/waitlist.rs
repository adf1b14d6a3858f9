//! `sugang demo waitlist`: a course of two seats is full and keeps a
//! waitlist of three. A student cancels: the seat goes to the first in line
//! in the commit that frees it (another student asking at that moment is
//! told the course is full), and that student is enrolled with the card
//! stored when they joined. Another cancels: the next in line's card is
//! declined, the entry fails, and the seat passes to the one after, who is
//! enrolled. Every step is read back over the API: entries, positions,
//! classes, payments, notifications.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Aborted, Api, Reply, Server, Timeline, ms};

/// The card the simulated gateway declines.
const DECLINED: &str = "4000000000000002";
const APPROVED: &str = "4242424242424242";

pub(super) async fn run(t: &Timeline, dir: &Path) -> Result<String, Aborted> {
    let mut server = Server::start(t, dir, &[]).await?;
    let api = server.api.clone();
    let created = api
        .post(
            "/courses",
            json!({"name": "korean", "teacher": "Hong-Gil-dong", "fee": 10000, "textBook": "kor_book",
                   "capacity": 2, "waitlistCapacity": 3}),
        )
        .await?;
    let course = created.body["id"]
        .as_u64()
        .ok_or_else(|| Aborted(format!("registering the course answered {}", created.summary())))?;
    t.say(format!("registered course {course}: 2 seats, a waitlist of 3 places"));

    // 1. Full, and a waitlist forms.
    let kim = class_of(&api.post("/classes", enroll(course, "Kim", APPROVED)).await?, "Kim")?;
    let lee = class_of(&api.post("/classes", enroll(course, "Lee", APPROVED)).await?, "Lee")?;
    t.say(format!("Kim and Lee enroll: classes {kim} and {lee}; the course is full"));
    let mut entries = Vec::new();
    for (student, card) in [("Park", APPROVED), ("Choi", DECLINED), ("Jung", APPROVED)] {
        let reply = api.post("/classes", join(course, student, card)).await?;
        t.say(format!(
            "{student} asks with \"waitlist\": true{}: {} Location {}, position {}",
            if card == DECLINED { " (a card that will be declined)" } else { "" },
            reply.status,
            reply.body["_links"]["self"]["href"].as_str().unwrap_or("?"),
            reply.body["position"]
        ));
        let position = reply.body["position"].as_u64();
        t.expect(
            reply.status == 202 && position == Some(entries.len() as u64 + 1),
            format!("{student} joins the waitlist (202) at position {}", entries.len() + 1),
        );
        entries.push(reply.body["id"].as_u64().ok_or_else(|| Aborted(format!("{student} got no entry id")))?);
    }
    let again = api.post("/classes", join(course, "Park", APPROVED)).await?;
    t.expect(
        again.status == 200 && again.body["id"].as_u64() == Some(entries[0]),
        format!("Park asking again gets the same entry back ({} {})", again.status, again.body["id"]),
    );
    let full = api.post("/classes", join(course, "Yoon", APPROVED)).await?;
    let detail = full.body["detail"].as_str().unwrap_or_default().to_owned();
    t.say(format!("Yoon asks too: {} — {detail}", full.summary()));
    t.expect(full.status == 409 && detail.contains("waitlist"), "the waitlist is full: 409, and the detail says so");
    let shown = api.get(&format!("/courses/{course}")).await?;
    t.say(format!(
        "GET /courses/{course}: studentCount {}, waitlistLength {}",
        shown.body["studentCount"], shown.body["waitlistLength"]
    ));
    let (park, choi, jung) = (entries[0], entries[1], entries[2]);

    // 2. Kim cancels: the seat is Park's in the same commit.
    t.say(format!("Kim cancels (DELETE /classes/{kim}), and Han asks for a seat at the same moment"));
    let canceled_at = Instant::now();
    let kim_path = format!("/classes/{kim}");
    let han = async {
        // Han asks the moment the seat frees.
        tokio::time::sleep(Duration::from_millis(2)).await;
        api.post("/classes", enroll(course, "Han", APPROVED)).await
    };
    let (canceled, rival) = tokio::join!(api.send(reqwest::Method::DELETE, &kim_path, None), han);
    let (canceled, rival) = (canceled?, rival?);
    t.note(format!("DELETE /classes/{kim}: {}; Han's POST /classes: {}", canceled.status, rival.summary()));
    t.expect(rival.status == 409, "Han is told the course is full: the seat never came free for him, it went to Park");
    let park_entry = until_status(&api, park, "ENROLLED", Duration::from_secs(10)).await?;
    let after = canceled_at.elapsed();
    server.narrate_log(t);
    let park_class = park_entry.body["classId"].as_u64();
    t.say(format!(
        "GET /waitlists/{park}: {} with classId {} ({} after the cancellation)",
        park_entry.body["status"],
        park_entry.body["classId"],
        ms(after)
    ));
    t.expect(park_entry.body["status"] == "ENROLLED" && park_class.is_some(), "Park, first in line, is enrolled");
    let payment = match park_class {
        Some(class) => api.get(&format!("/payments/{class}")).await?.body["payStatus"].clone(),
        None => Value::Null,
    };
    t.expect(payment == "APPROVED", format!("charged with the card stored when Park joined (payStatus {payment})"));
    let moved = api.get(&format!("/waitlists/{choi}")).await?.body["position"].as_u64();
    t.expect(moved == Some(1), format!("Choi moved up to position {}", moved.map_or("?".into(), |p| p.to_string())));

    // 3. Lee cancels: Choi's card is declined, the seat passes to Jung.
    t.say(format!("Lee cancels (DELETE /classes/{lee})"));
    let canceled = api.send(reqwest::Method::DELETE, &format!("/classes/{lee}"), None).await?;
    t.note(format!("DELETE /classes/{lee}: {}", canceled.status));
    let choi_entry = until_status(&api, choi, "FAILED", Duration::from_secs(10)).await?;
    let jung_entry = until_status(&api, jung, "ENROLLED", Duration::from_secs(10)).await?;
    server.narrate_log(t);
    t.say(format!(
        "GET /waitlists/{choi}: {}; GET /waitlists/{jung}: {} with classId {}",
        choi_entry.body["status"], jung_entry.body["status"], jung_entry.body["classId"]
    ));
    t.expect(choi_entry.body["status"] == "FAILED", "Choi's declined card fails the entry");
    t.expect(jung_entry.body["status"] == "ENROLLED", "the seat passed on to Jung, who is enrolled");

    // 4. The books balance.
    let shown = api.get(&format!("/courses/{course}")).await?;
    let completed = api.all(&format!("/classes?courseId={course}&status=COMPLETED"), "classes").await?;
    let students: Vec<&str> = completed.iter().filter_map(|c| c["student"].as_str()).collect();
    t.say(format!(
        "GET /courses/{course}: studentCount {}, waitlistLength {}; COMPLETED classes of {students:?}",
        shown.body["studentCount"], shown.body["waitlistLength"]
    ));
    t.expect(
        shown.body["studentCount"] == 2 && students == ["Park", "Jung"],
        format!("both seats are held, by Park and Jung ({} completed classes = 2 seats)", completed.len()),
    );
    let seq = api.last_seq().await?;
    let caught = api.caught_up("/notifications", seq, Duration::from_secs(15)).await?;
    t.expect(caught.status == 200, format!("the notifier caught up to seq {seq}"));
    let notes = api.all("/notifications", "notifications").await?;
    let told = |who: &str, kind: &str| notes.iter().any(|n| n["recipient"] == who && n["kind"] == kind);
    let kinds = ["WAITLIST_ENROLLED", "WAITLIST_FAILED"];
    t.say(format!(
        "notifications: Park {kinds0} {}, Choi {kinds1} {}, Jung {kinds0} {}",
        told("Park", kinds[0]),
        told("Choi", kinds[1]),
        told("Jung", kinds[0]),
        kinds0 = kinds[0],
        kinds1 = kinds[1],
    ));
    t.expect(
        told("Park", kinds[0]) && told("Choi", kinds[1]) && told("Jung", kinds[0]),
        "each student was told what became of their place",
    );
    server.narrate_log(t);
    Ok(format!(
        "a cancellation gave the seat to the first in line at once (Han, asking then, was told full) and Park was \
         enrolled {} later; a declined card failed Choi's entry and the seat passed to Jung",
        ms(after)
    ))
}

fn enroll(course: u64, student: &str, card: &str) -> Value {
    json!({"courseId": course, "student": student, "payAccount": card, "addr": "Seoul"})
}

fn join(course: u64, student: &str, card: &str) -> Value {
    json!({"courseId": course, "student": student, "payAccount": card, "addr": "Seoul", "waitlist": true})
}

/// The class id of a 201, or why the demo cannot go on.
fn class_of(reply: &Reply, student: &str) -> Result<u64, Aborted> {
    match reply.body["id"].as_u64() {
        Some(id) if reply.status == 201 => Ok(id),
        _ => Err(Aborted(format!("enrolling {student} answered {}", reply.summary()))),
    }
}

/// Polls `GET /waitlists/{id}` until its status is `status` (at most `within`).
async fn until_status(api: &Api, id: u64, status: &str, within: Duration) -> Result<Reply, Aborted> {
    let deadline = Instant::now() + within;
    loop {
        let reply = api.get(&format!("/waitlists/{id}")).await?;
        if reply.body["status"] == status || Instant::now() > deadline {
            return Ok(reply);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
