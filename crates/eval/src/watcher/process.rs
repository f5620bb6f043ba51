//! Evaluating one checkpoint: under a lease, with retries of transient failures, and recording
//! the outcome in the state file.

use super::*;

impl EvalWatcher<'_> {
    pub(super) fn record(
        &mut self,
        step: u64,
        kind: RecordKind,
        reason: Option<String>,
        created: Option<i64>,
    ) -> Result<()> {
        self.attempts.remove(&step);
        self.state.steps.insert(
            step,
            StepRecord {
                kind,
                reason,
                created_ms: created,
                recorded_ms: now_ms(),
                run_id: (kind == RecordKind::Evaluated).then(|| self.run_id.clone()),
            },
        );
        self.state.save(&self.state_path)
    }

    /// Deals with one step: lease, load, evaluate, log, flush, record.
    pub(super) fn process(&mut self, step: u64, listed_created: Option<i64>) -> Result<Evaluated> {
        use exptrack_checkpoint::Error as CkErr;
        let done = |outcome, epoch| Evaluated {
            step,
            epoch,
            outcome,
        };
        let lease = match self.checkpointer.lease(step) {
            Ok(l) => l,
            Err(CkErr::NotFound { .. }) => return self.missed(step, listed_created),
            Err(e) => return self.retry(step, None, listed_created, format!("lease: {e}")),
        };
        let loaded = match self.checkpointer.load(step) {
            Ok(c) => c,
            Err(CkErr::NotFound { .. }) => return self.missed(step, listed_created),
            Err(e) if is_corrupt(&e) => {
                let reason = e.to_string();
                tracing::warn!(
                    experiment = %self.experiment_id,
                    step,
                    error = %reason,
                    "corrupt checkpoint skipped"
                );
                self.record(
                    step,
                    RecordKind::Corrupt,
                    Some(reason.clone()),
                    listed_created,
                )?;
                return Ok(done(Outcome::Corrupt { reason }, None));
            }
            Err(e) => return self.retry(step, None, listed_created, format!("load: {e}")),
        };
        let epoch = loaded.info.epoch;
        let created = Some(loaded.info.created_ms);

        let started = Instant::now();
        let mut values: BTreeMap<String, f64> = BTreeMap::new();
        for (name, evaluator) in &mut self.datasets {
            let result = catch_unwind(AssertUnwindSafe(|| evaluator.evaluate(&loaded)));
            let metrics = match result {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    let reason = format!("dataset {name}: {e}");
                    return self.retry(step, epoch, created, reason);
                }
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".to_owned());
                    let reason = format!("dataset {name}: evaluator panicked: {msg}");
                    return self.retry(step, epoch, created, reason);
                }
            };
            for (k, v) in metrics {
                values.insert(format!("eval/{name}/{k}"), v);
            }
        }
        drop(loaded);

        if !values.is_empty() {
            let mut pairs: Vec<(&str, f64)> =
                values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let removed = self.removed_before_evaluation();
            if removed > 0 {
                pairs.push((SKIPPED_PRUNED_METRIC, removed as f64));
            }
            self.sink
                .get()
                .log_metrics(step, &pairs)
                .map_err(|e| self.track_err(e))?;
            // While a backend is failing, wait less: the local store is what the record needs.
            let wait = if self.backend_degraded {
                self.flush_timeout.min(DEGRADED_FLUSH_TIMEOUT)
            } else {
                self.flush_timeout
            };
            let flushed = self.sink.get().flush_timeout(wait);
            self.backend_degraded = flushed.is_err();
            if let Err(e) = flushed {
                // The local store is written before any backend; only the local copy matters for
                // the record (backends are replayed from it).
                if self.logged_steps_in(&self.run_dir)?.contains(&step) {
                    tracing::warn!(
                        step,
                        error = %e,
                        "a backend did not confirm the flush; the metrics are in the local store and will be redelivered"
                    );
                } else {
                    return Err(self.track_err(e));
                }
            }
        }
        #[cfg(feature = "testing")]
        if self.abort_after_log == Some(step) {
            std::process::abort();
        }
        self.record(step, RecordKind::Evaluated, None, created)?;
        drop(lease);
        tracing::info!(
            experiment = %self.experiment_id,
            step,
            secs = started.elapsed().as_secs_f64(),
            "checkpoint evaluated"
        );
        Ok(done(Outcome::Evaluated { metrics: values }, epoch))
    }

    pub(super) fn missed(&mut self, step: u64, created: Option<i64>) -> Result<Evaluated> {
        tracing::warn!(
            experiment = %self.experiment_id,
            step,
            "checkpoint was pruned by retention before it could be evaluated (evaluation is \
             slower than checkpointing, or the watcher was down); raise keep-last or evaluate faster"
        );
        self.record(step, RecordKind::MissedByRetention, None, created)?;
        Ok(Evaluated {
            step,
            epoch: None,
            outcome: Outcome::MissedByRetention,
        })
    }

    pub(super) fn retry(
        &mut self,
        step: u64,
        epoch: Option<u64>,
        created: Option<i64>,
        reason: String,
    ) -> Result<Evaluated> {
        let n = self.attempts.entry(step).or_insert(0);
        *n += 1;
        let attempt = *n;
        if attempt >= self.max_attempts {
            tracing::warn!(step, attempts = attempt, error = %reason, "checkpoint skipped after repeated failures");
            self.record(step, RecordKind::Failed, Some(reason.clone()), created)?;
            return Ok(Evaluated {
                step,
                epoch,
                outcome: Outcome::Failed {
                    attempts: attempt,
                    reason,
                },
            });
        }
        tracing::warn!(step, attempt, error = %reason, "checkpoint evaluation failed; retrying on the next poll");
        Ok(Evaluated {
            step,
            epoch,
            outcome: Outcome::Retrying { attempt, reason },
        })
    }
}
