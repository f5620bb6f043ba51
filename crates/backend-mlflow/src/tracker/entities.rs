//! `runs/log-batch` requests: keys checked (and repaired) against MLflow's rules, values cut to
//! its limits, entities gathered into requests within the server's per-request limits, a changed
//! param reported without losing the rest of the request.

use super::MlflowTracker;
use crate::error::{Error, Result, excerpt};
use crate::types::{KeyValue, MetricPoint};
use crate::validate::{
    MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_PARAM_VALUE_LENGTH, MAX_PARAMS_PER_BATCH,
    MAX_TAG_VALUE_LENGTH, MAX_TAGS_PER_BATCH, key_problem, sanitize_key, truncate_chars,
};

/// One `log-batch` request being assembled.
#[derive(Debug, Default)]
pub(super) struct Pending {
    metrics: Vec<MetricPoint>,
    params: Vec<KeyValue>,
    tags: Vec<KeyValue>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.params.is_empty() && self.tags.is_empty()
    }
    fn entities(&self) -> usize {
        self.metrics.len() + self.params.len() + self.tags.len()
    }
    fn room_for(&self, kind: EntityKind) -> bool {
        if self.entities() >= MAX_ENTITIES_PER_BATCH {
            return false;
        }
        match kind {
            EntityKind::Metric => self.metrics.len() < MAX_METRICS_PER_BATCH,
            EntityKind::Param => self.params.len() < MAX_PARAMS_PER_BATCH,
            EntityKind::Tag => self.tags.len() < MAX_TAGS_PER_BATCH,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum EntityKind {
    Metric,
    Param,
    Tag,
}

impl EntityKind {
    fn name(self) -> &'static str {
        match self {
            EntityKind::Metric => "metric",
            EntityKind::Param => "param",
            EntityKind::Tag => "tag",
        }
    }
}

pub(super) enum Entity {
    Metric(MetricPoint),
    Param(KeyValue),
    Tag(KeyValue),
}

impl MlflowTracker {
    /// Validates (and in the default mode repairs) a key; `None` (with a problem recorded) when
    /// the entity must be dropped.
    pub(super) fn check_key(
        &mut self,
        kind: EntityKind,
        key: &str,
        problems: &mut Vec<String>,
    ) -> Option<String> {
        let Some(reason) = key_problem(key) else {
            return Some(key.to_owned());
        };
        if self.strict {
            problems.push(
                Error::InvalidKey {
                    kind: kind.name(),
                    key: key.to_owned(),
                    reason,
                }
                .to_string(),
            );
            return None;
        }
        let fixed = sanitize_key(key);
        if self.warned.insert(format!("key:{}:{key}", kind.name())) {
            tracing::warn!(
                target: "exptrack_mlflow",
                "{} key {key:?} is not valid for MLflow ({reason}); logging it as {fixed:?}",
                kind.name()
            );
        }
        Some(fixed)
    }

    pub(super) fn check_tag(
        &mut self,
        kv: KeyValue,
        problems: &mut Vec<String>,
    ) -> Option<KeyValue> {
        let key = self.check_key(EntityKind::Tag, &kv.key, problems)?;
        let (v, cut) = truncate_chars(&kv.value, MAX_TAG_VALUE_LENGTH);
        if cut && self.warned.insert(format!("tagval:{key}")) {
            tracing::warn!(
                target: "exptrack_mlflow",
                "tag {key:?} is longer than {MAX_TAG_VALUE_LENGTH} characters; truncated"
            );
        }
        Some(KeyValue::new(key, v.to_owned()))
    }

    /// Sends the pending request; on a "changed param" rejection resends without params and
    /// records the problem. Transient errors are returned.
    pub(super) fn send(&mut self, pending: &mut Pending, problems: &mut Vec<String>) -> Result<()> {
        if pending.is_empty() {
            self.delivered = self.added_through;
            return Ok(());
        }
        let run_id = self.open_run()?.run_id.clone();
        let p = std::mem::take(pending);
        let r = self.send_request(&run_id, p, problems);
        if r.is_ok() {
            // Every event fully added so far is now on the server.
            self.delivered = self.added_through;
        }
        r
    }

    fn send_request(&mut self, run_id: &str, p: Pending, problems: &mut Vec<String>) -> Result<()> {
        match self
            .client
            .log_batch(run_id, &p.metrics, &p.params, &p.tags)
        {
            Ok(()) => {
                for kv in p.params {
                    self.params.insert(kv.key, kv.value);
                }
                Ok(())
            }
            Err(e) if e.is_transient() => {
                // Nothing was committed (the server's log-batch is one transaction); the caller
                // returns a transient error and the batch is redelivered.
                Err(e)
            }
            Err(e) => {
                let params_rejected = e.status() == Some(400) && !p.params.is_empty();
                problems.push(e.to_string());
                if params_rejected {
                    // The server rolls the whole request back: deliver the rest without params.
                    if !(p.metrics.is_empty() && p.tags.is_empty()) {
                        match self.client.log_batch(run_id, &p.metrics, &[], &p.tags) {
                            Ok(()) => {}
                            Err(e) if e.is_transient() => return Err(e),
                            Err(e) => problems.push(e.to_string()),
                        }
                    }
                    // Keep the params that do go through, one at a time.
                    for kv in p.params {
                        match self
                            .client
                            .log_batch(run_id, &[], std::slice::from_ref(&kv), &[])
                        {
                            Ok(()) => {
                                self.params.insert(kv.key, kv.value);
                            }
                            Err(e) if e.is_transient() => return Err(e),
                            Err(_) => {}
                        }
                    }
                }
                Ok(())
            }
        }
    }

    pub(super) fn push(
        &mut self,
        pending: &mut Pending,
        kind: EntityKind,
        entity: Entity,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        if !pending.room_for(kind) {
            self.send(pending, problems)?;
        }
        match entity {
            Entity::Metric(m) => pending.metrics.push(m),
            Entity::Param(p) => pending.params.push(p),
            Entity::Tag(t) => pending.tags.push(t),
        }
        Ok(())
    }

    pub(super) fn add_param(
        &mut self,
        pending: &mut Pending,
        key: &str,
        value: String,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        let Some(key) = self.check_key(EntityKind::Param, key, problems) else {
            return Ok(());
        };
        let value = {
            let (v, cut) = truncate_chars(&value, MAX_PARAM_VALUE_LENGTH);
            if cut && self.warned.insert(format!("paramval:{key}")) {
                tracing::warn!(
                    target: "exptrack_mlflow",
                    "param {key:?} is longer than {MAX_PARAM_VALUE_LENGTH} characters ({}); truncated",
                    value.chars().count()
                );
            }
            v.to_owned()
        };
        let earlier = self.params.get(&key).cloned().or_else(|| {
            pending
                .params
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.value.clone())
        });
        match earlier {
            Some(old) if old == value => Ok(()),
            Some(old) => {
                problems.push(
                    Error::ParamChanged {
                        run_id: self.run_id().unwrap_or_default().to_owned(),
                        key,
                        old: excerpt(&old, 200),
                        new: excerpt(&value, 200),
                    }
                    .to_string(),
                );
                Ok(())
            }
            None => self.push(
                pending,
                EntityKind::Param,
                Entity::Param(KeyValue::new(key, value)),
                problems,
            ),
        }
    }
}
