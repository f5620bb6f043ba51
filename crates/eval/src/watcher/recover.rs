//! Recovery after a crash: steps a previous watcher logged to its run but did not record.

use super::*;

impl EvalWatcher<'_> {
    /// Steps with at least one `eval/<dataset>/` metric in a run's log (any dataset this state file
    /// has ever had).
    pub(super) fn logged_steps_in(&self, run_dir: &Path) -> Result<BTreeSet<u64>> {
        let mut steps = BTreeSet::new();
        if !run_dir.join(exptrack_core::store::files::EVENTS).is_file() {
            return Ok(steps);
        }
        let reader = RunReader::open(run_dir).map_err(|e| self.track_err(e))?;
        let prefixes: Vec<String> = self
            .state
            .datasets
            .iter()
            .map(|d| format!("eval/{d}/"))
            .collect();
        for (_, event) in reader.events().map_err(|e| self.track_err(e))? {
            if let Event::Metrics { step, values, .. } = event
                && values
                    .iter()
                    .any(|m| prefixes.iter().any(|p| m.key.starts_with(p.as_str())))
            {
                steps.insert(step);
            }
        }
        Ok(steps)
    }

    /// Records steps that a previous watcher logged but did not record.
    pub(crate) fn recover(&mut self) -> Result<()> {
        let mut logged = BTreeMap::new();
        for dir in self.state.runs.clone() {
            let run_id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for step in self.logged_steps_in(&dir)? {
                logged.entry(step).or_insert_with(|| run_id.clone());
            }
        }
        for (step, run_id) in logged {
            if self.state.steps.contains_key(&step) {
                continue;
            }
            tracing::info!(
                step,
                run = %run_id,
                "step was logged by a previous watcher that stopped before recording it; not evaluated again"
            );
            self.state.steps.insert(
                step,
                StepRecord {
                    kind: RecordKind::Evaluated,
                    reason: Some("recovered from the run log".to_owned()),
                    created_ms: None,
                    recorded_ms: now_ms(),
                    run_id: Some(run_id),
                },
            );
            self.recovered.push(step);
        }
        Ok(())
    }
}
