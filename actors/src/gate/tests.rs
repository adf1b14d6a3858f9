//! The gate's rules on the pure parts (queue, shuffle, ticker, tokens), and
//! the gate actor's admission rate on a paused clock.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::*;

fn student(name: &str) -> StudentName {
    StudentName::parse(name).expect("a valid name")
}

fn key() -> AdmissionKey {
    AdmissionKey::new(&[7; 32])
}

#[test]
fn the_shuffle_is_a_permutation() {
    let ids: Vec<u64> = (1..=5_000).collect();
    let shuffled = shuffle(ids.clone()).expect("the OS random source");
    assert_eq!(shuffled.len(), ids.len());
    let seen: BTreeSet<u64> = shuffled.iter().copied().collect();
    assert_eq!(seen, ids.iter().copied().collect::<BTreeSet<_>>(), "every ticket once, none invented");
    assert_ne!(shuffled, ids, "5000 tickets left in arrival order: no shuffle happened");
}

#[test]
fn the_shuffle_is_uniform_over_small_permutations() {
    // 3 tickets have 6 orders; 6,000 shuffles give each ~1,000. A biased
    // shuffle (e.g. swapping with any index, or sorting by a random key of
    // few bits) lands far outside 850..1150 (> 4.9 sigma either way).
    let mut counts: HashMap<Vec<u64>, u32> = HashMap::new();
    for _ in 0..6_000 {
        *counts.entry(shuffle(vec![1, 2, 3]).expect("random")).or_default() += 1;
    }
    assert_eq!(counts.len(), 6, "{counts:?}");
    for (order, n) in &counts {
        assert!((850..1150).contains(n), "order {order:?} drawn {n} times of 6000: {counts:?}");
    }
}

#[test]
fn early_tickets_are_placed_by_the_shuffle_and_later_ones_served_in_order() {
    let mut q = Queue::default();
    for i in 0..10 {
        let t = q.take(student(&format!("early-{i}")), 1_000 + i, false);
        assert_eq!(t.place, None, "taken before the opening: no place yet");
    }
    assert_eq!(q.waiting_count(), 10);
    assert_eq!(q.placed_waiting(), 0);
    let order = shuffle(q.early().to_vec()).expect("random");
    let placed = q.place_early(order.clone());
    assert_eq!(placed.iter().map(|t| t.id).collect::<Vec<_>>(), order, "places follow the shuffle");
    assert_eq!(placed.iter().map(|t| t.place.unwrap()).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    let late: Vec<u64> = (0..5).map(|i| q.take(student(&format!("late-{i}")), 5_000 + i, true).id).collect();
    assert_eq!(late.iter().map(|id| q.get(*id).unwrap().place.unwrap()).collect::<Vec<_>>(), vec![11, 12, 13, 14, 15]);

    let mut admitted = Vec::new();
    for n in [3, 0, 4, 100] {
        admitted.extend(q.admit(n, 9_000, Duration::from_secs(60)).into_iter().map(|t| t.id));
    }
    let expected: Vec<u64> = order.into_iter().chain(late).collect();
    assert_eq!(admitted, expected, "admitted exactly in place order");
    assert_eq!(q.admitted_total(), 15);
    assert_eq!(q.waiting_count(), 0);
}

#[test]
fn positions_count_from_one_among_the_waiting_and_eta_rounds_up() {
    let mut q = Queue::default();
    let ids: Vec<u64> = (0..5).map(|i| q.take(student(&format!("s{i}")), 0, true).id).collect();
    q.admit(2, 10, Duration::from_secs(60));
    let view = |q: &Queue, id: u64| q.view(q.get(id).unwrap(), 20, 2, &key());
    assert_eq!(view(&q, ids[0]).status, TicketStatus::Admitted);
    assert!(view(&q, ids[0]).admission.is_some());
    assert_eq!(view(&q, ids[0]).position, None);
    assert_eq!(view(&q, ids[2]).position, Some(1));
    assert_eq!(view(&q, ids[4]).position, Some(3));
    assert_eq!(view(&q, ids[4]).eta_secs, Some(2), "3 places at 2/s: 1.5 s rounded up");
    assert_eq!(view(&q, ids[4]).admission, None);
}

#[test]
fn one_live_ticket_per_student_and_a_new_one_after_expiry() {
    let mut q = Queue::default();
    let kim = student("Kim");
    let first = q.take(kim.clone(), 0, true);
    assert_eq!(q.live_ticket_of(&kim, 1).map(|t| t.id), Some(first.id));
    assert_eq!(q.live_ticket_of(&student("Lee"), 1), None);
    q.admit(1, 100, Duration::from_secs(1));
    assert_eq!(q.live_ticket_of(&kim, 1_099).map(|t| t.id), Some(first.id), "admitted: still the live one");
    assert_eq!(q.live_ticket_of(&kim, 1_100), None, "expired: the student may queue again");
    assert_eq!(q.get(first.id).unwrap().status(1_100), TicketStatus::Expired);
}

#[test]
fn the_queue_rebuilds_from_stored_tickets_with_every_place() {
    let mut q = Queue::default();
    for i in 0..4 {
        q.take(student(&format!("e{i}")), i, false);
    }
    let order = shuffle(q.early().to_vec()).expect("random");
    q.place_early(order);
    q.take(student("late"), 10, true);
    q.take(student("early-again"), 11, false);
    q.admit(2, 20, Duration::from_secs(60));
    let stored: Vec<Ticket> = (1..=6).rev().map(|id| q.get(id).unwrap().clone()).collect();
    let r = Queue::from_tickets(stored);
    for id in 1..=6 {
        assert_eq!(r.get(id), q.get(id));
        assert_eq!(r.view(r.get(id).unwrap(), 30, 1, &key()), q.view(q.get(id).unwrap(), 30, 1, &key()));
    }
    assert_eq!((r.admitted_total(), r.admitted_through(), r.waiting_count()), (2, 2, 4));
    assert_eq!(r.early(), q.early());
}

#[test]
fn admissions_are_bound_to_their_student_and_expire() {
    let (key, kim, lee) = (key(), student("Kim"), student("Lee"));
    let token = key.sign(3, &kim, 10_000);
    assert_eq!(key.verify(&token, &kim, 9_999), Ok(3));
    assert_eq!(key.verify(&token, &lee, 9_999), Err(AdmissionError::NotYours), "not shared between students");
    assert_eq!(key.verify(&token, &kim, 10_000), Err(AdmissionError::Expired));
    let longer = token.replacen("10000", "99999", 1);
    assert_eq!(key.verify(&longer, &kim, 10_000), Err(AdmissionError::NotYours), "a stretched expiry fails the HMAC");
    assert_eq!(AdmissionKey::new(&[8; 32]).verify(&token, &kim, 0), Err(AdmissionError::NotYours), "another key");
    for garbage in ["", "x", "1.2", "1.2.zz", "a.b.c", &format!("{token}0")] {
        assert_eq!(key.verify(garbage, &kim, 0), Err(AdmissionError::Invalid), "{garbage:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_ticker_holds_the_rate_smoothly_and_follows_a_live_change() {
    let start = tokio::time::Instant::now();
    let mut ticker = Ticker::new(start);
    let mut per_second = Vec::new();
    let (mut waiting, mut total) = (1_000_000u64, 0u64);
    for second in 0..20 {
        let rate = if second < 10 { 500 } else { 120 };
        let mut this_second = 0;
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(10)).await;
            let n = ticker.admit(tokio::time::Instant::now(), rate, waiting);
            assert!(n <= u64::from(rate) / 10, "a tick admitted {n}: more than a tenth of a second's worth");
            waiting -= n;
            this_second += n;
        }
        total += this_second;
        per_second.push(this_second);
    }
    for (s, n) in per_second.iter().enumerate() {
        let rate = if s < 10 { 500 } else { 120 };
        // The first second of each rate may differ by the bucket's burst.
        let slack = if s == 0 || s == 10 { rate / 10 + 1 } else { 1 };
        assert!(n.abs_diff(rate) <= slack, "second {s}: {n} admitted at {rate}/s ({per_second:?})");
    }
    assert_eq!(total, 1_000_000 - waiting);
}

#[tokio::test(start_paused = true)]
async fn the_ticker_never_admits_more_than_are_waiting_nor_saves_up_while_idle() {
    let mut ticker = Ticker::new(tokio::time::Instant::now());
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(ticker.admit(tokio::time::Instant::now(), 1_000, 0), 0);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(ticker.admit(tokio::time::Instant::now(), 1_000, 5), 5);
    let burst = ticker.admit(tokio::time::Instant::now(), 1_000, 1_000_000);
    assert!(burst <= 100, "an idle minute saved up {burst}: the burst is a tenth of a second");
}

mod actor {
    use std::sync::Arc;

    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use sugang_storage::{Durability, Journal, JournalOptions, Store, StoreOptions};

    use super::*;
    use crate::gate::actor::{GateHandle, GateMsg};
    use crate::supervision::RestartPolicy;

    struct Parent;
    impl Actor for Parent {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    /// A gate actor on a new store (in a temporary directory, kept alive by
    /// the first item), under a parent that stands in for the root.
    async fn supervised_gate(durability: Durability) -> (tempfile::TempDir, ActorRef<()>, GateHandle) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions { durability, ..StoreOptions::default() }).expect("open");
        let (journal, _task) = Journal::start(&store, JournalOptions::default()).expect("journal");
        let (parent, _) = Actor::spawn(None, Parent, ()).await.expect("parent");
        let gate = GateHandle::start(store, journal, RestartPolicy::default(), parent.get_cell()).await.expect("gate");
        (dir, parent, gate)
    }

    async fn ask<T: Send + 'static>(
        gate: &GateHandle,
        msg: impl FnOnce(ractor::RpcReplyPort<Result<T, crate::gate::actor::GateFailure>>) -> GateMsg,
    ) -> T {
        let actor = gate.actor().expect("running");
        ractor::call!(actor, msg).expect("answered").expect("accepted")
    }

    /// The gate actor on a paused tokio clock: 3,000 waiting at 200/s are
    /// admitted at 200 per (virtual) second, then at 50/s after a live change.
    #[tokio::test(start_paused = true)]
    async fn the_gate_admits_at_the_configured_rate_on_a_paused_clock() {
        let (_dir, parent, gate) = supervised_gate(Durability::Relaxed { flush_every_ms: 1000 }).await;
        let rate =
            |r: u32| GateSettings { enabled: true, admit_per_second: r, opens_at_ms: None, admission_ttl_secs: 600 };
        ask(&gate, |reply| GateMsg::Set { settings: rate(200), reply }).await;
        for i in 0..3_000 {
            ask(&gate, |reply| GateMsg::Take { student: student(&format!("s{i}")), reply }).await;
        }
        let admitted =
            |gate: GateHandle| async move { ask(&gate, |reply| GateMsg::Status { reply }).await.admitted_total };
        let before = admitted(gate.clone()).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = admitted(gate.clone()).await;
        assert!((after - before).abs_diff(1_000) <= 21, "{} admitted in 5 s at 200/s", after - before);

        ask(&gate, |reply| GateMsg::Set { settings: rate(50), reply }).await;
        let before = admitted(gate.clone()).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = admitted(gate.clone()).await;
        assert!((after - before).abs_diff(500) <= 21, "{} admitted in 10 s at 50/s", after - before);
        let arc: Arc<_> = gate.shared().clone();
        assert!(arc.enabled.load(std::sync::atomic::Ordering::SeqCst));
        parent.stop_children_and_wait(None, None).await;
        parent.stop(None);
    }

    /// A ticket taken after the opening but before the gate's next tick has
    /// shuffled the early tickets in must not be placed ahead of them: it
    /// arrived later than every one of them (API.md: arriving early gives
    /// no advantage, and after the opening the queue is FIFO). On a paused
    /// tokio clock no tick runs between the opening (wall clock) and the
    /// late take, so the window is certain.
    #[tokio::test(start_paused = true)]
    async fn a_ticket_taken_at_the_opening_before_the_shuffle_queues_behind_the_early_ones() {
        let (_dir, parent, gate) = supervised_gate(Durability::Relaxed { flush_every_ms: 1000 }).await;
        let opens_at = crate::faults::now_ms() + 300;
        let settings =
            GateSettings { enabled: true, admit_per_second: 1, opens_at_ms: Some(opens_at), admission_ttl_secs: 600 };
        ask(&gate, |reply| GateMsg::Set { settings, reply }).await;
        let mut early = Vec::new();
        for i in 0..20 {
            let (view, _) = ask(&gate, |reply| GateMsg::Take { student: student(&format!("early-{i}")), reply }).await;
            assert_eq!(view.ticket.place, None, "taken before the opening");
            early.push(view.ticket.id);
        }
        // The opening passes on the wall clock; the paused tokio clock runs
        // no tick meanwhile.
        while crate::faults::now_ms() <= opens_at {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (late, _) = ask(&gate, |reply| GateMsg::Take { student: student("late"), reply }).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let late_place = ask(&gate, |reply| GateMsg::Get { id: late.ticket.id, reply })
            .await
            .and_then(|v| v.ticket.place)
            .expect("placed");
        for id in early {
            let place = ask(&gate, |reply| GateMsg::Get { id, reply })
                .await
                .and_then(|v| v.ticket.place)
                .expect("the early ticket was placed by the shuffle");
            assert!(place < late_place, "early ticket {id} got place {place}, behind the late ticket's {late_place}");
        }
        parent.stop_children_and_wait(None, None).await;
        parent.stop(None);
    }

    /// A gate actor that fails is restarted by its supervisor from disk:
    /// every ticket keeps its place and its id, and asking again finds it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_gate_is_restarted_from_disk_with_every_place() {
        let (_dir, parent, gate) = supervised_gate(StoreOptions::default().durability).await;
        let settings = GateSettings { enabled: true, admit_per_second: 1, opens_at_ms: None, admission_ttl_secs: 600 };
        ask(&gate, |reply| GateMsg::Set { settings, reply }).await;
        let mut before = Vec::new();
        for i in 0..10 {
            before.push(ask(&gate, |reply| GateMsg::Take { student: student(&format!("s{i}")), reply }).await.0);
        }
        let old = gate.actor().expect("running");
        old.send_message(GateMsg::Poisoned("injected for the test".into())).expect("sent");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while gate.actor().map(|a| a.get_id()).ok() == Some(old.get_id()) || gate.actor().is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the gate was not restarted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(gate.restarts(), 1);
        for view in &before {
            let id = view.ticket.id;
            let now = ask(&gate, |reply| GateMsg::Get { id, reply }).await.expect("the ticket is still there");
            assert_eq!((now.ticket.place, now.ticket.taken_at_ms), (view.ticket.place, view.ticket.taken_at_ms));
            let (again, new) = ask(&gate, |reply| GateMsg::Take { student: view.ticket.student.clone(), reply }).await;
            assert_eq!((again.ticket.id, new), (id, false), "the same ticket after the restart");
        }
        let status = ask(&gate, |reply| GateMsg::Status { reply }).await;
        assert_eq!(status.settings.admit_per_second, 1, "the settings were reloaded too");
        parent.stop_children_and_wait(None, None).await;
        parent.stop(None);
    }
}
