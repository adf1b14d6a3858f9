//! Damage is detected, never ignored: a store whose files were cut short,
//! zeroed or overwritten either refuses to open, naming what is wrong, or
//! opens with every acknowledged batch intact. It never opens at an older
//! state in silence.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sugang_storage::{Batch, Journal, JournalOptions, OpenError, Record, Store, StoreOptions, Table};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Row {
    id: u64,
    filler: String,
}
impl Record for Row {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Noted {
    id: u64,
}
impl Record for Noted {}

const ROWS: Table<u64, Row> = Table::new("rows");
const BATCHES: u64 = 3_000;

fn row(id: u64) -> Row {
    Row { id, filler: format!("{id:>8}").repeat(8) }
}

/// A store of `BATCHES` acknowledged batches (one row and one event each),
/// cleanly closed; with `rotate`, written in two sessions so that fjall has
/// flushed tables as well as its journal.
fn build(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = Store::open(dir, StoreOptions::default()).unwrap();
        let (journal, task) = Journal::start(&store, JournalOptions::default()).unwrap();
        for id in 1..=BATCHES {
            let mut batch = Batch::new();
            batch.put(&ROWS, &id, &row(id)).unwrap();
            batch.append(id, &Noted { id }).unwrap();
            journal.commit(batch).await.unwrap();
        }
        drop(journal);
        task.await.unwrap();
        drop(store);
    });
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// The last 4 KiB cut off (or the whole file, if smaller).
    Truncate,
    /// 4 KiB of zeros in the middle.
    Zero,
    /// 64 random bytes in the middle.
    Random,
}

fn damage(path: &Path, how: Damage, seed: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    match how {
        Damage::Truncate => file.set_len(len.saturating_sub(4096)).unwrap(),
        Damage::Zero => {
            let at = (len / 2).saturating_sub(2048);
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(&vec![0u8; 4096.min(len as usize)]).unwrap();
        }
        Damage::Random => {
            let mut rng = fastrand::Rng::with_seed(seed);
            let at = len / 2;
            file.seek(SeekFrom::Start(at)).unwrap();
            let bytes: Vec<u8> = (0..64).map(|_| rng.u8(..)).collect();
            file.write_all(&bytes).unwrap();
        }
    }
    file.sync_all().unwrap();
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::metadata(&path).unwrap().len() > 0 && !path.ends_with("sugang.lock") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// What opening a damaged store came to.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Outcome {
    Refused,
    Intact,
    /// Opened, but acknowledged batches are missing or changed: the bug.
    Lost,
}

fn outcome(dir: &Path) -> (Outcome, String) {
    let store = match Store::open(dir, StoreOptions::default()) {
        Err(e @ (OpenError::Damaged { .. } | OpenError::IncompatibleFormat { .. })) => {
            return (Outcome::Refused, e.to_string());
        }
        Err(other) => panic!("a damaged store gave an unexpected error: {other}"),
        Ok(store) => store,
    };
    let mut rows = BTreeMap::new();
    for item in store.scan(&ROWS) {
        match item {
            Ok((id, value)) => {
                rows.insert(id, value);
            }
            Err(e) => return (Outcome::Lost, format!("opened, then a read failed: {e}")),
        }
    }
    let events = match store.events().read::<Noted>(1, usize::MAX) {
        Ok(events) => events,
        Err(e) => return (Outcome::Lost, format!("opened, then the log failed: {e}")),
    };
    let intact = rows.len() as u64 == BATCHES
        && (1..=BATCHES).all(|id| rows.get(&id) == Some(&row(id)))
        && events.len() as u64 == BATCHES
        && events.iter().zip(1..).all(|(e, id)| e.seq == id && e.event.id == id);
    if intact {
        (Outcome::Intact, String::new())
    } else {
        (Outcome::Lost, format!("opened with {} rows and {} events of {BATCHES}", rows.len(), events.len()))
    }
}

#[test]
fn damaged_files_are_refused_or_harmless_never_an_older_state() {
    let pristine = tempfile::tempdir().unwrap();
    build(pristine.path());
    let names = files(pristine.path());
    assert!(names.len() >= 3, "{names:?}");
    let mut report = Vec::new();
    let mut lost = Vec::new();
    for (n, name) in names.iter().enumerate() {
        let relative = name.strip_prefix(pristine.path()).unwrap().to_path_buf();
        for how in [Damage::Truncate, Damage::Zero, Damage::Random] {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), copy.path());
            damage(&copy.path().join(&relative), how, n as u64);
            let (result, detail) = outcome(copy.path());
            report.push(format!("{:<50} {how:?}: {result:?} {detail}", relative.display()));
            if result == Outcome::Lost {
                lost.push(format!("{} {how:?}: {detail}", relative.display()));
            }
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(lost.is_empty(), "damage went unnoticed:\n{}", lost.join("\n"));
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
