//! What `finish` reports: per tracker, what it durably holds and what went wrong, and the lines
//! printed at the end of a run.

use std::path::PathBuf;

use crate::metadata::RunStatus;

/// How one tracker fared, reported by `finish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerReport {
    /// Tracker name.
    pub name: String,
    /// Last sequence number it durably stored (acknowledged by a successful flush or close).
    pub delivered_seq: u64,
    /// Last sequence number of the run.
    pub last_seq: u64,
    /// Whether it received every event and was closed.
    pub complete: bool,
    /// Errors it reported (permanent errors skip their batch; transient ones that outlived the
    /// finish timeout leave events in the spool).
    pub errors: Vec<String>,
}

/// What `finish` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishReport {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The final status recorded.
    pub status: RunStatus,
    /// Sequence number of the last event in the local store.
    pub last_seq: u64,
    /// Per tracker.
    pub trackers: Vec<TrackerReport>,
    /// Errors of the local store itself.
    pub store_errors: Vec<String>,
}

impl TrackerReport {
    /// Whether this tracker received every event, was closed and reported no error.
    pub fn is_ok(&self) -> bool {
        self.complete && self.errors.is_empty()
    }

    /// Events of the run this tracker has not durably stored: they are only in the local store
    /// (`events.jsonl`) until a sync delivers them.
    pub fn undelivered(&self) -> u64 {
        self.last_seq.saturating_sub(self.delivered_seq)
    }

    /// Whether the tracker stored nothing of the run.
    pub fn got_nothing(&self) -> bool {
        self.delivered_seq == 0 && self.last_seq > 0
    }

    /// The first error it reported (usually the cause of the others), with a count of the rest.
    pub fn cause(&self) -> Option<String> {
        let first = self.errors.first()?;
        Some(match self.errors.len() {
            1 => first.clone(),
            n => format!("{first} (and {} more error(s))", n - 1),
        })
    }
}

impl FinishReport {
    /// Whether the store and every tracker got everything without error.
    pub fn is_complete(&self) -> bool {
        self.store_errors.is_empty() && self.trackers.iter().all(TrackerReport::is_ok)
    }

    /// The report of the tracker called `name`.
    pub fn tracker(&self, name: &str) -> Option<&TrackerReport> {
        self.trackers.iter().find(|b| b.name == name)
    }

    /// Whether the tracker called `name` received the whole run (false for an unknown name).
    pub fn reached(&self, name: &str) -> bool {
        self.tracker(name).is_some_and(|b| b.complete)
    }

    /// One line per problem, for printing at the end of a run (empty when
    /// [`is_complete`](Self::is_complete)): each failed tracker with its cause, how many events are
    /// only in the local store, and the command that delivers them later
    /// (`exptrack sync RUN_DIR --to NAME`); then each error of the local store.
    ///
    /// ```
    /// # use exptrack_core::{TrackerReport, FinishReport, RunStatus};
    /// let report = FinishReport {
    ///     run_dir: "runs/demo/r1".into(),
    ///     status: RunStatus::Completed,
    ///     last_seq: 49,
    ///     trackers: vec![TrackerReport {
    ///         name: "mlflow".into(),
    ///         delivered_seq: 0,
    ///         last_seq: 49,
    ///         complete: false,
    ///         errors: vec!["open failed: HTTP 401".into()],
    ///     }],
    ///     store_errors: vec![],
    /// };
    /// let lines = report.problem_lines();
    /// assert_eq!(lines.len(), 1);
    /// assert!(lines[0].starts_with("mlflow: FAILED, nothing delivered: open failed: HTTP 401;"));
    /// assert!(lines[0].contains("all 49 events are only in the local store"));
    /// assert!(lines[0].contains("exptrack sync runs/demo/r1 --to mlflow"));
    /// ```
    pub fn problem_lines(&self) -> Vec<String> {
        self.problem_lines_with(|name| name.to_owned())
    }

    /// [`problem_lines`](Self::problem_lines) with the `--to` argument of the sync command chosen
    /// per tracker name (e.g. `mlflow=http://host:5000` when the URI is not in the environment).
    pub fn problem_lines_with(&self, sync_target: impl Fn(&str) -> String) -> Vec<String> {
        let mut lines = Vec::new();
        for b in &self.trackers {
            if b.is_ok() {
                continue;
            }
            let state = if b.complete {
                "delivered with errors".to_owned()
            } else if b.got_nothing() {
                "FAILED, nothing delivered".to_owned()
            } else {
                format!(
                    "FAILED, {} of {} events delivered",
                    b.delivered_seq, b.last_seq
                )
            };
            let mut line = format!("{}: {state}", b.name);
            match b.cause() {
                Some(c) => line.push_str(&format!(": {}", c.replace(['\n', '\r'], " "))),
                None if !b.complete => line.push_str(": did not finish in time"),
                None => {}
            }
            if b.undelivered() > 0 {
                let how_many = if b.got_nothing() {
                    format!("all {} events are", b.undelivered())
                } else if b.undelivered() == 1 {
                    "1 event is".to_owned()
                } else {
                    format!("{} events are", b.undelivered())
                };
                line.push_str(&format!(
                    "; {how_many} only in the local store ({}); deliver them with `exptrack sync {} --to {}`",
                    self.run_dir.join("events.jsonl").display(),
                    self.run_dir.display(),
                    sync_target(&b.name)
                ));
            }
            lines.push(line);
        }
        for e in &self.store_errors {
            lines.push(format!("local store: {}", e.replace(['\n', '\r'], " ")));
        }
        lines
    }
}

impl std::fmt::Display for FinishReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} finished as {} with {} events",
            self.run_dir.display(),
            self.status,
            self.last_seq
        )?;
        for line in self.problem_lines() {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}
