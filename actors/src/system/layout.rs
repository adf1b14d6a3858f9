//! The version of the record layout a store holds, and the one-time upgrade
//! of a store written under an earlier one. Runs at start-up, before anything
//! else writes; a store from a later release is refused.
//!
//! | layout | what changed |
//! | --- | --- |
//! | 1 | (no marker) the fjall release as first written |
//! | 2 | a canceled enrollment keeps its (canceled) seat, so a course's seats index its enrollments (`enrollments_by_course` gone); a payment keeps the key its fee was charged under (`charge_keys` folded in); deliveries and my-page views are found by student through the enrollments' own index (`deliveries_by_student` and `mypage_students_by_student` gone); the payments' count is the enrollments' (`payment_counts` gone); a saga's seat hold is its own marker of an unfinished saga (`pending_seats` gone): six keys fewer per enrollment, seven alone |

use sugang_storage::{Batch, Journal, Store, Table};

use super::StartError;
use crate::tables::{
    CHARGE_KEYS, COUNTERS, COURSES, Counter, ENROLLMENTS, Indexed, PAYMENTS, SEATS, SeatState, StoredSeat,
};

/// The layout this release reads and writes.
pub(crate) const LAYOUT: u64 = 2;
const LAYOUT_KEY: &str = "layout";
/// Records an upgrade writes per batch.
const CHUNK: usize = 10_000;

/// The student indexes of the read models layout 1 kept.
const DELIVERIES_BY_STUDENT: Table<(String, u64), Indexed> = Table::new("deliveries_by_student");
const STUDENT_VIEWS_BY_STUDENT: Table<(String, u64), Indexed> = Table::new("mypage_students_by_student");
/// Layout 1's markers of unfinished sagas (the hold itself is the marker
/// now: `course::actor::holds`).
const PENDING: Table<u64, Indexed> = Table::new("pending_seats");
/// Layout 1's index of a course's enrollments.
const ENROLLMENTS_BY_COURSE: Table<(u64, u64), Indexed> = Table::new("enrollments_by_course");
/// The payments' count layout 1 kept.
const PAYMENT_COUNTS: Table<String, sugang_storage::Count> = Table::new("payment_counts");

/// Marks a store being filled from scratch (benchmarks) as written in
/// [`LAYOUT`].
pub(crate) fn mark_current(batch: &mut Batch) -> Result<(), sugang_storage::EncodeError> {
    batch.put(&COUNTERS, &LAYOUT_KEY.to_owned(), &Counter(LAYOUT))?;
    Ok(())
}

/// Upgrades the store to [`LAYOUT`] (a new store just gets the marker), or
/// refuses a store written by a later release.
pub(crate) async fn upgrade(store: &Store, journal: &Journal) -> Result<(), StartError> {
    let found = match store.get(&COUNTERS, &LAYOUT_KEY.to_owned())? {
        Some(Counter(found)) => found,
        None if store.scan(&COURSES).keys().next().is_none() => LAYOUT,
        None => 1,
    };
    if found > LAYOUT {
        return Err(StartError::Spawn(format!(
            "this store's records are in layout {found}, written by a later release; this release reads layout {LAYOUT}"
        )));
    }
    let started = std::time::Instant::now();
    let encode = |e: sugang_storage::EncodeError| StartError::Spawn(format!("upgrading the record layout: {e}"));
    let commit = |batch: Batch| async move {
        journal
            .commit(batch)
            .await
            .map(|_| ())
            .map_err(|e| StartError::Spawn(format!("upgrading the record layout: {e}")))
    };
    if found < 2 {
        let mut batch = Batch::new();
        for item in store.scan(&CHARGE_KEYS) {
            let (id, key) = item?;
            if let Some(mut payment) = store.get(&PAYMENTS, &id)? {
                payment.charge_key = key.0;
                batch.put(&PAYMENTS, &id, &payment).map_err(encode)?;
            }
            batch.delete(&CHARGE_KEYS, &id);
            if batch.key_count() >= CHUNK {
                commit(std::mem::take(&mut batch)).await?;
            }
        }
        // A canceled enrollment's seat was deleted: put back as canceled.
        for key in store.scan(&ENROLLMENTS_BY_COURSE).keys() {
            let (course, id) = key?;
            if !store.contains(&SEATS, &(course, id))?
                && let Some(enrollment) = store.get(&ENROLLMENTS, &id)?
            {
                let seat = StoredSeat { student: enrollment.student, fee: enrollment.fee, state: SeatState::Canceled };
                batch.put(&SEATS, &(course, id), &seat).map_err(encode)?;
            }
            batch.delete(&ENROLLMENTS_BY_COURSE, &(course, id));
            if batch.key_count() >= CHUNK {
                commit(std::mem::take(&mut batch)).await?;
            }
        }
        for key in store.scan(&PENDING).keys() {
            batch.delete(&PENDING, &key?);
        }
        for table in [&DELIVERIES_BY_STUDENT, &STUDENT_VIEWS_BY_STUDENT] {
            for key in store.scan(table).keys() {
                batch.delete(table, &key?);
                if batch.key_count() >= CHUNK {
                    commit(std::mem::take(&mut batch)).await?;
                }
            }
        }
        batch.delete(&PAYMENT_COUNTS, &"all".to_owned());
        commit(batch).await?;
    }
    if found < LAYOUT || store.get(&COUNTERS, &LAYOUT_KEY.to_owned())?.is_none() {
        let mut batch = Batch::new();
        batch.put(&COUNTERS, &LAYOUT_KEY.to_owned(), &Counter(LAYOUT)).map_err(encode)?;
        commit(batch).await?;
    }
    if found < LAYOUT {
        tracing::info!(
            from = found,
            to = LAYOUT,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "record layout upgraded"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sugang_storage::{JournalOptions, StoreOptions};

    use super::*;
    use crate::course::Seat;
    use crate::model::{Fee, StudentName};
    use crate::payment::PaymentV1;
    use crate::payment::gateway::ChargeStatus;
    use crate::tables::ChargeKey;
    use crate::testing::{config, korean, request};
    use crate::{EnrollmentFilter, PageRequest, Sugang};

    const PAYMENTS_V1: Table<u64, PaymentV1> = Table::new("payments");
    /// Version 1 seats were the course's `Seat` itself.
    const SEATS_V1: Table<(u64, u64), Seat> = Table::new("seats");

    impl sugang_storage::Record for Seat {}

    async fn with_journal(dir: &std::path::Path, write: impl FnOnce(&Store, &mut Batch)) {
        let store = Store::open(dir, StoreOptions::default()).unwrap();
        let (journal, task) = Journal::start(&store, JournalOptions::default()).unwrap();
        let mut batch = Batch::new();
        write(&store, &mut batch);
        journal.commit(batch).await.unwrap();
        drop(journal);
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    }

    /// A store with one course and these students enrolled, those at
    /// `canceled` canceled, the read models caught up and the system
    /// stopped: the course, the enrollment ids and their charge keys.
    async fn enrolled(
        dir: &std::path::Path,
        students: &[&str],
        canceled: &[usize],
    ) -> (crate::model::CourseId, Vec<crate::model::EnrollmentId>, Vec<u64>) {
        let system = Sugang::start(config(dir)).await.unwrap();
        let course = korean(&system).await;
        let mut ids = Vec::new();
        for student in students {
            ids.push(system.enroll(request(course, student)).await.unwrap().value.id);
        }
        for &i in canceled {
            system.cancel(ids[i]).await.unwrap();
        }
        let seq = system.last_seq();
        for name in ["delivery", "mypage"] {
            assert!(system.wait_for(name, seq).await);
        }
        let keys: Vec<u64> = ids.iter().map(|id| system.payment(*id).unwrap().unwrap().charge_key).collect();
        assert!(keys.iter().zip(&ids).all(|(key, id)| key != &id.get()), "charged under reservation keys: {keys:?}");
        system.shutdown().await;
        (course, ids, keys)
    }

    /// Rewrites enrollment `id` of course `c` as layout 1 stored it: its
    /// payment at version 1 beside its charge key (unless `folded`: as if an
    /// upgrade's first chunk had done it), and the indexes and marker layout
    /// 1 kept.
    fn as_layout_1(store: &Store, batch: &mut Batch, c: u64, id: u64, key: u64, folded: bool) {
        let p = store.get(&PAYMENTS, &id).unwrap().unwrap();
        if !folded {
            let v1 = PaymentV1 {
                enrollment_id: p.enrollment_id,
                course_id: p.course_id,
                student: p.student.clone(),
                amount: p.amount,
                pay_method: p.pay_method.clone(),
                status: p.status,
                approved_at_ms: p.approved_at_ms,
            };
            batch.put(&PAYMENTS_V1, &id, &v1).unwrap();
            batch.put(&CHARGE_KEYS, &id, &ChargeKey(key)).unwrap();
        }
        batch.put(&DELIVERIES_BY_STUDENT, &(p.student.as_str().to_owned(), id), &Indexed).unwrap();
        batch.put(&STUDENT_VIEWS_BY_STUDENT, &(p.student.as_str().to_owned(), id), &Indexed).unwrap();
        batch.put(&PENDING, &key, &Indexed).unwrap();
        batch.put(&ENROLLMENTS_BY_COURSE, &(c, id), &Indexed).unwrap();
    }

    /// The upgrade is done: the marker, every charge key on its payment, and
    /// layout 1's tables emptied.
    fn assert_upgraded(system: &Sugang, ids: &[crate::model::EnrollmentId], keys: &[u64]) {
        let store = system.store();
        assert_eq!(store.get(&COUNTERS, &LAYOUT_KEY.to_owned()).unwrap(), Some(Counter(LAYOUT)));
        let upgraded: Vec<u64> = ids.iter().map(|id| system.payment(*id).unwrap().unwrap().charge_key).collect();
        assert_eq!(upgraded, keys, "each payment keeps the key its fee was charged under");
        for (name, left) in [
            ("charge_keys", store.scan(&CHARGE_KEYS).count()),
            ("deliveries_by_student", store.scan(&DELIVERIES_BY_STUDENT).count()),
            ("mypage_students_by_student", store.scan(&STUDENT_VIEWS_BY_STUDENT).count()),
            ("pending_seats", store.scan(&PENDING).count()),
            ("enrollments_by_course", store.scan(&ENROLLMENTS_BY_COURSE).count()),
        ] {
            assert_eq!(left, 0, "{name} is emptied");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_layout_1_store_is_upgraded_once_keeping_every_charge_key_seat_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        // b's enrollment is canceled: layout 1 deleted its seat.
        let (course, ids, keys) = enrolled(dir.path(), &["a", "b"], &[1]).await;

        // Rewritten as layout 1 stored it: no marker, version-1 payments
        // beside their charge keys, the read models' own student indexes,
        // the course's index of its enrollments, version-1 seats, a canceled
        // enrollment's seat deleted.
        let c = course.get();
        with_journal(dir.path(), |store, batch| {
            batch.delete(&COUNTERS, &LAYOUT_KEY.to_owned());
            let seat =
                Seat { student: StudentName::parse("a").unwrap(), fee: Fee::parse(100).unwrap(), confirmed: true };
            batch.put(&SEATS_V1, &(c, ids[0].get()), &seat).unwrap();
            batch.delete(&SEATS, &(c, ids[1].get()));
            for (id, key) in ids.iter().zip(&keys) {
                as_layout_1(store, batch, c, id.get(), *key, false);
            }
        })
        .await;

        let system = Sugang::start(config(dir.path())).await.unwrap();
        let store = system.store();
        assert_upgraded(&system, &ids, &keys);
        // The views are still found by student, the enrollments by course
        // (through its seats, the canceled one's put back), and the course
        // counts its one seat taken.
        let page = PageRequest { number: 0, size: 20 };
        assert_eq!(system.student_views(Some("a"), page).unwrap().total, 1);
        assert_eq!(system.deliveries(None, Some("b"), page).unwrap().total, 1);
        let by_course = EnrollmentFilter { course_id: Some(c), ..Default::default() };
        let listed: Vec<_> = system.enrollments(&by_course, page).unwrap().items.iter().map(|e| e.id).collect();
        assert_eq!(listed, ids);
        assert_eq!(store.get(&SEATS, &(c, ids[1].get())).unwrap().map(|s| s.state), Some(SeatState::Canceled));
        let counts = system.seat_counts(course).unwrap();
        assert_eq!((counts.confirmed, counts.pending), (1, 0));
        system.shutdown().await;
    }

    /// A crash during the upgrade leaves a store some of whose chunks are
    /// committed and whose marker is not written (it is written last): the
    /// next start finishes the upgrade from there, keeping the charge keys
    /// already folded in and folding the rest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_whose_upgrade_was_cut_short_is_finished_on_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let (course, ids, keys) = enrolled(dir.path(), &["a", "b", "c", "d"], &[1, 2]).await;

        // As a crash after the first chunk leaves it: a's charge key folded
        // into its payment (and gone from `charge_keys`), the rest as layout
        // 1 wrote them (b and c canceled, their seats deleted), no marker.
        let c = course.get();
        with_journal(dir.path(), |store, batch| {
            batch.delete(&COUNTERS, &LAYOUT_KEY.to_owned());
            for (i, (id, key)) in ids.iter().zip(&keys).enumerate() {
                if i == 1 || i == 2 {
                    // A canceled enrollment's seat was deleted.
                    batch.delete(&SEATS, &(c, id.get()));
                }
                as_layout_1(store, batch, c, id.get(), *key, i == 0);
            }
        })
        .await;

        let system = Sugang::start(config(dir.path())).await.unwrap();
        let store = system.store();
        assert_upgraded(&system, &ids, &keys);
        let page = PageRequest { number: 0, size: 20 };
        let by_course = EnrollmentFilter { course_id: Some(c), ..Default::default() };
        let listed = system.enrollments(&by_course, page).unwrap();
        assert_eq!(listed.items.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
        assert_eq!(listed.total, 4);
        for id in &ids[1..3] {
            assert_eq!(store.get(&SEATS, &(c, id.get())).unwrap().map(|s| s.state), Some(SeatState::Canceled));
        }
        let counts = system.seat_counts(course).unwrap();
        assert_eq!((counts.confirmed, counts.pending), (2, 0));
        // A cancellation after the upgrade refunds under the key the fee was
        // charged under (a reservation key), whether it was folded before
        // the crash (a) or after (d): this start's gateway saw no charge, so
        // the refund shows as a void of that key, and none of the id.
        for i in [0, 3] {
            system.cancel(ids[i]).await.unwrap();
            let gateway = system.gateway();
            assert_eq!(gateway.charge_of(keys[i]), Some(ChargeStatus::Voided), "refunded under its charge key");
            assert_eq!(gateway.charge_of(ids[i].get()), None, "nothing refunded under the enrollment id");
        }
        system.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_from_a_later_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Sugang::start(config(dir.path())).await.unwrap().shutdown().await;
        with_journal(dir.path(), |_, batch| {
            batch.put(&COUNTERS, &LAYOUT_KEY.to_owned(), &Counter(LAYOUT + 1)).unwrap();
        })
        .await;
        let refused = Sugang::start(config(dir.path())).await.err().expect("a later layout is refused");
        assert!(refused.to_string().contains("later release"), "{refused}");
    }
}
