//! Where a sweep stands, per shard: from the daemon's runs and the shards' journals.

use std::collections::HashMap;

use serde::Serialize;

use crate::local::JournalEntry;
use crate::{Existing, SweepFile};

/// One shard's cells by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShardStatus {
    pub index: usize,
    pub cells: usize,
    /// A run of the cell is closed in the daemon.
    pub done: usize,
    /// The cell's latest attempt is open in the daemon and no journal says it ended: training
    /// now, or a worker killed without a trace (a resubmission retries it).
    pub running: usize,
    /// The cell's latest attempt ended in failure (journal), and none is closed.
    pub failed: usize,
    /// Not started.
    pub pending: usize,
}

/// The status of every shard of `count`: `existing` from the daemon, `journals` from the
/// state folder, `open` the run ids the daemon holds open (not closed).
pub fn status(
    sweep: &SweepFile,
    count: usize,
    existing: &Existing,
    open: &[String],
    journals: &[JournalEntry],
) -> Vec<ShardStatus> {
    // The last outcome of each run id.
    let mut outcome: HashMap<&str, &str> = HashMap::new();
    for e in journals {
        outcome.insert(e.run_id.as_str(), e.outcome.as_str());
    }
    let count = count.max(1);
    let mut shards: Vec<ShardStatus> = (0..count)
        .map(|index| ShardStatus {
            index,
            ..ShardStatus::default()
        })
        .collect();
    for (position, cell) in sweep.cells().iter().enumerate() {
        let id = cell.id(&sweep.name);
        let s = &mut shards[position % count];
        s.cells += 1;
        if existing.is_closed(&id) {
            s.done += 1;
            continue;
        }
        // The latest attempt: the open run with the highest attempt, or a journal entry.
        let attempts = existing.runs.get(&id).map_or(0, |r| r.1);
        let latest = if attempts <= 1 {
            id.clone()
        } else {
            format!("{id}:a{attempts}")
        };
        let failed_in_journal = |run: &str| outcome.get(run) == Some(&"failed");
        if open.contains(&latest) && !failed_in_journal(&latest) {
            s.running += 1;
        } else if failed_in_journal(&latest) || attempts > 0 {
            s.failed += 1;
        } else if journals
            .iter()
            .any(|e| e.run_id.starts_with(&id) && e.outcome == "failed")
        {
            // A worker that failed before opening its run.
            s.failed += 1;
        } else {
            s.pending += 1;
        }
    }
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_counted_per_shard_by_state() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../config/sweeps/demo-live.toml");
        let sweep = SweepFile::load(&path).unwrap();
        let ids: Vec<String> = sweep.cells().iter().map(|c| c.id(&sweep.name)).collect();
        // Cell 0 closed; cell 1 open (training); cell 2 failed (journal); cell 3 not started.
        let existing = Existing::from_runs([
            (ids[0].as_str(), true),
            (ids[1].as_str(), false),
            (ids[2].as_str(), false),
        ]);
        let open = vec![ids[1].clone(), ids[2].clone()];
        let journals = vec![JournalEntry {
            run_id: ids[2].clone(),
            outcome: "failed".into(),
            seconds: 1.0,
            error: Some("boom".into()),
            log: String::new(),
            shard: None,
        }];
        let st = status(&sweep, 2, &existing, &open, &journals);
        assert_eq!(
            st,
            [
                ShardStatus {
                    index: 0,
                    cells: 2,
                    done: 1,
                    running: 0,
                    failed: 1,
                    pending: 0
                },
                ShardStatus {
                    index: 1,
                    cells: 2,
                    done: 0,
                    running: 1,
                    failed: 0,
                    pending: 1
                },
            ]
        );
    }
}
