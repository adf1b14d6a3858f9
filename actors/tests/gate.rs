//! The waiting room through the [`Sugang`] facade over a real store: a
//! restart keeps every place and admission (and the key that signed them),
//! admissions are bound to their student and expire, one live ticket per
//! student, and a gate that is off lets everyone in.
//!
//! Every wait is a poll of a condition with a deadline, never a bare sleep.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sugang_actors::{AdmissionError, Config, GateSettings, StudentName, Sugang, TicketStatus, TicketView};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn student(name: &str) -> StudentName {
    StudentName::parse(name).unwrap()
}

fn settings(rate: u32, opens_at_ms: Option<u64>, ttl: u32) -> GateSettings {
    GateSettings { enabled: true, admit_per_second: rate, opens_at_ms, admission_ttl_secs: ttl }
}

async fn eventually<F: Future<Output = bool>>(what: &str, within: Duration, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ticket(system: &Sugang, id: u64) -> TicketView {
    system.ticket(id).await.expect("answered").expect("the ticket exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_place_every_admission_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(Config::new(dir.path())).await.unwrap();
    system.set_gate(settings(2, Some(now_ms() + 600_000), 600)).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let (view, new) = system.take_ticket(student(&format!("s{i:02}"))).await.unwrap();
        assert!(new);
        assert_eq!((view.status, view.position), (TicketStatus::Waiting, None), "early: no place before the opening");
        ids.push(view.ticket.id);
    }
    assert_eq!(ids, (1..=40).collect::<Vec<_>>(), "dense ticket ids");
    system.set_gate(settings(2, Some(now_ms()), 600)).await.unwrap();
    eventually("two admissions", Duration::from_secs(5), || async { system.gate().await.unwrap().admitted_total >= 2 })
        .await;
    let mut before = Vec::new();
    for id in &ids {
        before.push(ticket(&system, *id).await);
    }
    let places: Vec<u64> = before.iter().map(|v| v.ticket.place.expect("placed by the shuffle")).collect();
    let mut sorted = places.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=40).collect::<Vec<_>>(), "the shuffle gave each early ticket one place");
    assert_ne!(places, sorted, "40 early tickets placed in arrival order: no shuffle");
    system.shutdown().await;

    let system = Sugang::start(Config::new(dir.path())).await.unwrap();
    for old in &before {
        let now = ticket(&system, old.ticket.id).await;
        assert_eq!(now.ticket.place, old.ticket.place, "ticket {}'s place kept", old.ticket.id);
        assert_eq!(now.ticket.taken_at_ms, old.ticket.taken_at_ms);
        if let Some(admission) = &old.admission {
            assert_eq!(now.admission.as_ref(), Some(admission), "an admission and its token kept");
            assert_eq!(system.check_admission(&old.ticket.student, Some(admission)), Ok(()), "the key was kept");
        }
        let (again, new) = system.take_ticket(old.ticket.student.clone()).await.unwrap();
        assert!(!new);
        assert_eq!(again.ticket.id, old.ticket.id, "the same ticket on asking again after a restart");
    }
    let status = system.gate().await.unwrap();
    assert_eq!(status.settings, settings(2, status.settings.opens_at_ms, 600), "settings kept");
    assert!(status.admitted_total >= 2);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_are_not_shared_between_students_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(Config::new(dir.path())).await.unwrap();
    let (kim, lee) = (student("Kim"), student("Lee"));
    assert_eq!(system.check_admission(&kim, None), Ok(()), "the gate is off by default: everyone is let in");
    system.set_gate(settings(1000, None, 1)).await.unwrap();
    assert_eq!(system.check_admission(&kim, None), Err(AdmissionError::Missing));
    let (view, new) = system.take_ticket(kim.clone()).await.unwrap();
    assert!(new);
    let id = view.ticket.id;
    let mut admitted = view;
    eventually("Kim's admission", Duration::from_secs(5), || {
        let system = system.clone();
        async move { ticket(&system, id).await.status == TicketStatus::Admitted }
    })
    .await;
    if admitted.admission.is_none() {
        admitted = ticket(&system, id).await;
    }
    let token = admitted.admission.clone().expect("an admitted ticket carries its token");
    assert_eq!(system.check_admission(&kim, Some(&token)), Ok(()));
    assert_eq!(system.check_admission(&lee, Some(&token)), Err(AdmissionError::NotYours));
    assert_eq!(system.check_admission(&kim, Some("1.2.3")), Err(AdmissionError::Invalid));
    let (same, new) = system.take_ticket(kim.clone()).await.unwrap();
    assert_eq!((same.ticket.id, new), (id, false), "one live ticket per student");
    eventually("the admission's expiry", Duration::from_secs(5), || {
        let system = system.clone();
        async move { ticket(&system, id).await.status == TicketStatus::Expired }
    })
    .await;
    assert_eq!(ticket(&system, id).await.admission, None, "an expired ticket shows no token");
    assert_eq!(system.check_admission(&kim, Some(&token)), Err(AdmissionError::Expired));
    let (fresh, new) = system.take_ticket(kim.clone()).await.unwrap();
    assert!(new && fresh.ticket.id != id, "after expiry the student queues again with a new ticket");
    system.set_gate(GateSettings { enabled: false, ..settings(1000, None, 1) }).await.unwrap();
    assert_eq!(system.check_admission(&kim, None), Ok(()), "a gate turned off lets everyone in");
    let (open, _) = system.take_ticket(student("Park")).await.unwrap();
    assert_eq!(open.status, TicketStatus::Admitted, "with the gate off a ticket is admitted at once");
    system.shutdown().await;
}
