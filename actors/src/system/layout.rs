//! The version of the record layout a store holds, and the one-time upgrade
//! of a store written under an earlier one. Runs at start-up, before anything
//! else writes; a store from a later release is refused.
//!
//! | layout | what changed |
//! | --- | --- |
//! | 1 | (no marker) the fjall release as first written |
//! | 2 | a payment keeps the key its fee was charged under (`charge_keys` folded in); deliveries and my-page views are found by student through the enrollments' own index (`deliveries_by_student` and `mypage_students_by_student` gone); the payments' count is the enrollments' (`payment_counts` gone): three keys fewer per enrollment, four alone |

use sugang_storage::{Batch, Journal, Store, Table};

use super::StartError;
use crate::tables::{CHARGE_KEYS, COUNTERS, COURSES, Counter, Indexed, PAYMENTS};

/// The layout this release reads and writes.
pub(crate) const LAYOUT: u64 = 2;
const LAYOUT_KEY: &str = "layout";
/// Records an upgrade writes per batch.
const CHUNK: usize = 10_000;

/// The student indexes of the read models layout 1 kept.
const DELIVERIES_BY_STUDENT: Table<(String, u64), Indexed> = Table::new("deliveries_by_student");
const STUDENT_VIEWS_BY_STUDENT: Table<(String, u64), Indexed> = Table::new("mypage_students_by_student");
/// The payments' count layout 1 kept.
const PAYMENT_COUNTS: Table<String, sugang_storage::Count> = Table::new("payment_counts");

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

    use serde::Serialize;
    use sugang_storage::{Durability, JournalOptions, Record, StoreOptions};

    use super::*;
    use crate::event::CourseDetails;
    use crate::model::{CourseId, CourseName, EnrollmentId, Fee, MinStudents, PayMethod, StudentName, TeacherName};
    use crate::payment::PayStatus;
    use crate::tables::ChargeKey;
    use crate::{Config, EnrollRequest, PageRequest, Sugang};

    /// A payment as layout 1 wrote it (record version 1: no charge key).
    #[derive(Serialize, serde::Deserialize)]
    struct PaymentV1 {
        enrollment_id: EnrollmentId,
        course_id: CourseId,
        student: StudentName,
        amount: Fee,
        pay_method: PayMethod,
        status: PayStatus,
        approved_at_ms: u64,
    }

    impl Record for PaymentV1 {}

    const PAYMENTS_V1: Table<u64, PaymentV1> = Table::new("payments");

    fn config(dir: &std::path::Path) -> Config {
        let mut config = Config::new(dir);
        config.durability = Durability::Relaxed { flush_every_ms: 50 };
        config
    }

    async fn with_journal(dir: &std::path::Path, write: impl FnOnce(&Store, &mut Batch)) {
        let store = Store::open(dir, StoreOptions::default()).unwrap();
        let (journal, task) = Journal::start(&store, JournalOptions::default()).unwrap();
        let mut batch = Batch::new();
        write(&store, &mut batch);
        journal.commit(batch).await.unwrap();
        drop(journal);
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_layout_1_store_is_upgraded_once_and_keeps_every_charge_key() {
        let dir = tempfile::tempdir().unwrap();
        let system = Sugang::start(config(dir.path())).await.unwrap();
        let details = CourseDetails {
            name: CourseName::parse("korean").unwrap(),
            fee: Fee::parse(100).unwrap(),
            text_book: None,
            capacity: None,
            min_students: MinStudents::parse(1).unwrap(),
        };
        let course = system.register_course(TeacherName::parse("Hong").unwrap(), details).await.unwrap().value.id;
        let mut ids = Vec::new();
        for student in ["a", "b"] {
            let request = EnrollRequest {
                course_id: course,
                student: StudentName::parse(student).unwrap(),
                expected_fee: None,
                pay_method: PayMethod::parse(None).unwrap(),
                pay_account: None,
                addr: None,
                telephone: None,
            };
            ids.push(system.enroll(request).await.unwrap().value.id);
        }
        let seq = system.last_seq();
        for name in ["delivery", "mypage"] {
            assert!(system.wait_for(name, seq).await);
        }
        let keys: Vec<u64> = ids.iter().map(|id| system.payment(*id).unwrap().unwrap().charge_key).collect();
        assert!(keys.iter().zip(&ids).all(|(key, id)| key != &id.get()), "charged under reservation keys: {keys:?}");
        system.shutdown().await;

        // Rewritten as layout 1 stored it: no marker, version-1 payments
        // beside their charge keys, the read models' own student indexes.
        with_journal(dir.path(), |store, batch| {
            batch.delete(&COUNTERS, &LAYOUT_KEY.to_owned());
            for (id, key) in ids.iter().zip(&keys) {
                let p = store.get(&PAYMENTS, &id.get()).unwrap().unwrap();
                let v1 = PaymentV1 {
                    enrollment_id: p.enrollment_id,
                    course_id: p.course_id,
                    student: p.student.clone(),
                    amount: p.amount,
                    pay_method: p.pay_method.clone(),
                    status: p.status,
                    approved_at_ms: p.approved_at_ms,
                };
                batch.put(&PAYMENTS_V1, &id.get(), &v1).unwrap();
                batch.put(&CHARGE_KEYS, &id.get(), &ChargeKey(*key)).unwrap();
                batch.put(&DELIVERIES_BY_STUDENT, &(p.student.as_str().to_owned(), id.get()), &Indexed).unwrap();
                batch.put(&STUDENT_VIEWS_BY_STUDENT, &(p.student.as_str().to_owned(), id.get()), &Indexed).unwrap();
            }
        })
        .await;

        let system = Sugang::start(config(dir.path())).await.unwrap();
        let store = system.store();
        assert_eq!(store.get(&COUNTERS, &LAYOUT_KEY.to_owned()).unwrap(), Some(Counter(LAYOUT)));
        let upgraded: Vec<u64> = ids.iter().map(|id| system.payment(*id).unwrap().unwrap().charge_key).collect();
        assert_eq!(upgraded, keys, "each payment keeps the key its fee was charged under");
        assert_eq!(store.scan(&CHARGE_KEYS).count(), 0);
        assert_eq!(store.scan(&DELIVERIES_BY_STUDENT).count(), 0);
        assert_eq!(store.scan(&STUDENT_VIEWS_BY_STUDENT).count(), 0);
        // The views are still found by student.
        let page = PageRequest { number: 0, size: 20 };
        assert_eq!(system.student_views(Some("a"), page).unwrap().total, 1);
        assert_eq!(system.deliveries(None, Some("b"), page).unwrap().total, 1);
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
