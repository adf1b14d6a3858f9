//! The rush against several nodes of a cluster: which node the checks read
//! from, and whether every other node sees the same enrollments, seat counts
//! and payments. Every node applies the same log, so once each has caught
//! up with the last seq the rush was answered, their views must agree; a
//! node that disagrees for longer than [`CONVERGE_LIMIT`] is a violation.
//!
//! Owns the comparison only; the invariants themselves are `check`'s.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use super::{Api, RushError, field_u64};

/// How long a node may take to show what the reader shows.
const CONVERGE_LIMIT: Duration = Duration::from_secs(15);
/// How many differences a violation names (the rest are counted).
const SHOWN: usize = 5;

/// The first node that answers, caught up with `seq` (the one the checks
/// read from), and the other nodes that answer. A node that gives no
/// answer (killed, stopped) is left out and said so: it has nothing to
/// compare. An error when no node answers.
pub(super) async fn reader(nodes: &[Api], seq: u64) -> Result<(Api, Vec<Api>), RushError> {
    if let [only] = nodes {
        // One server: the checks wait for its read models themselves.
        return Ok((only.clone(), Vec::new()));
    }
    let mut answering = Vec::new();
    let mut last_error = None;
    for node in nodes {
        // A read model asked `?after=` answers once this node has applied
        // the log up to `seq` (on a replica: once it has caught up).
        match node.get(&format!("/payments?after={seq}&size=1")).await {
            Ok(_) => answering.push(node.clone()),
            Err(error @ (RushError::Unreachable { .. } | RushError::Http { .. })) => {
                println!("checks: {} does not answer ({error}): left out", node.base);
                last_error = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    if answering.is_empty() {
        return Err(last_error.unwrap_or(RushError::Shape { what: "no --url given".into() }));
    }
    let reader = answering.remove(0);
    let others = match answering.len() {
        1 => "1 other node".to_owned(),
        n => format!("{n} other nodes"),
    };
    println!("checks: read from {}, compared with {others}", reader.base);
    Ok((reader, answering))
}

/// What one node shows of the rush's courses.
#[derive(PartialEq, Eq)]
struct View {
    /// Each class of the rush's courses: course, student, status.
    classes: BTreeMap<u64, (u64, String, String)>,
    /// Each of the rush's courses: its studentCount.
    seats: BTreeMap<u64, u64>,
    /// The payment of each class of the rush's courses: its payStatus.
    payments: BTreeMap<u64, String>,
}

impl View {
    async fn of(api: &Api, courses: &HashSet<u64>) -> Result<View, RushError> {
        let mut classes = BTreeMap::new();
        for item in api.list("/classes", "classes").await? {
            let course = field_u64(&item, "courseId", "a class")?;
            if courses.contains(&course) {
                let student = item["student"].as_str().unwrap_or_default().to_owned();
                let status = item["status"].as_str().unwrap_or_default().to_owned();
                classes.insert(field_u64(&item, "id", "a class")?, (course, student, status));
            }
        }
        let mut seats = BTreeMap::new();
        for item in api.list("/courses", "courses").await? {
            let id = field_u64(&item, "id", "a course")?;
            if courses.contains(&id) {
                seats.insert(id, field_u64(&item, "studentCount", "a course")?);
            }
        }
        let mut payments = BTreeMap::new();
        for item in api.list("/payments", "payments").await? {
            let apply_id = field_u64(&item, "applyId", "a payment")?;
            if classes.contains_key(&apply_id) {
                payments.insert(apply_id, item["payStatus"].as_str().unwrap_or_default().to_owned());
            }
        }
        Ok(View { classes, seats, payments })
    }

    /// How `other` differs from this view, one line per difference.
    fn differences(&self, other: &View) -> Vec<String> {
        let mut out = Vec::new();
        diff(&mut out, "class", &self.classes, &other.classes);
        diff(&mut out, "studentCount of course", &self.seats, &other.seats);
        diff(&mut out, "payment of class", &self.payments, &other.payments);
        out
    }
}

fn diff<V: PartialEq + std::fmt::Debug>(
    out: &mut Vec<String>,
    what: &str,
    ours: &BTreeMap<u64, V>,
    theirs: &BTreeMap<u64, V>,
) {
    for (id, value) in ours {
        match theirs.get(id) {
            Some(seen) if seen == value => {}
            Some(seen) => out.push(format!("{what} {id} is {seen:?} there, {value:?} on the reader")),
            None => out.push(format!("{what} {id} is missing there ({value:?} on the reader)")),
        }
    }
    for (id, seen) in theirs {
        if !ours.contains_key(id) {
            out.push(format!("{what} {id} is there ({seen:?}), not on the reader"));
        }
    }
}

/// Every node of `others` shows the same classes, seat counts and payments
/// of the rush's courses as `reader`, within [`CONVERGE_LIMIT`]; one
/// violation per node that does not.
pub(super) async fn same_everywhere(reader: &Api, others: &[Api], courses: &[u64]) -> Result<Vec<String>, RushError> {
    let courses: HashSet<u64> = courses.iter().copied().collect();
    let mut violations = Vec::new();
    for other in others {
        let deadline = Instant::now() + CONVERGE_LIMIT;
        loop {
            // The reader is read again too: sagas a takeover resumed may
            // still be finishing on both.
            let ours = View::of(reader, &courses).await?;
            let theirs = View::of(other, &courses).await?;
            let differences = ours.differences(&theirs);
            if differences.is_empty() {
                println!("checks: {} shows the same {} classes as {}", other.base, ours.classes.len(), reader.base);
                break;
            }
            if Instant::now() >= deadline {
                let shown: Vec<&str> = differences.iter().take(SHOWN).map(String::as_str).collect();
                violations.push(format!(
                    "nodes disagree: {} differs from {} in {} ways after {} s: {}",
                    other.base,
                    reader.base,
                    differences.len(),
                    CONVERGE_LIMIT.as_secs(),
                    shown.join("; ")
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(violations)
}
