//! The `[checkpointing]` section of the experiment config.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, Result};

/// Whether a smaller or a larger value of the monitored metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Smaller is better (losses).
    #[default]
    Min,
    /// Larger is better (accuracies).
    Max,
}

impl Mode {
    /// True when `a` is strictly better than `b`. NaN is never better than anything.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Mode::Min => a < b,
            Mode::Max => a > b,
        }
    }
}

/// Per-file compression of stored checkpoint files.
///
/// In TOML: `compression = "off"` (default), `"zstd"` (level 3), an integer level `1..=22`, or
/// `"zstd:N"`; `false`/`true` mean off/level 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Files are stored as given.
    #[default]
    Off,
    /// zstd at this level (1..=22; 1 is fastest).
    Zstd(i32),
}

impl Serialize for Compression {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Compression::Off => s.serialize_str("off"),
            Compression::Zstd(level) => s.serialize_str(&format!("zstd:{level}")),
        }
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Compression;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""off", "zstd", "zstd:N", an integer zstd level 1..=22, or a bool"#)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Compression, E> {
                Ok(if v {
                    Compression::Zstd(3)
                } else {
                    Compression::Off
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Compression, E> {
                if (1..=22).contains(&v) {
                    // In range, so the cast is lossless.
                    Ok(Compression::Zstd(v as i32))
                } else if v == 0 {
                    Ok(Compression::Off)
                } else {
                    Err(E::custom(format!("zstd level {v} out of range 1..=22")))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Compression, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Compression, E> {
                match v {
                    "off" | "none" | "false" => Ok(Compression::Off),
                    "zstd" => Ok(Compression::Zstd(3)),
                    other => match other.strip_prefix("zstd:").map(str::parse::<i64>) {
                        Some(Ok(level)) => self.visit_i64(level),
                        _ => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                    },
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A deserialization error's message, prefixed with the key it is about when the message does not
/// say (found by deserializing each key alone).
fn name_the_key(table: &toml::Table, e: &toml::de::Error) -> String {
    let message = e.to_string().trim().to_owned();
    for (key, value) in table {
        let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
        if toml::Value::Table(alone)
            .try_into::<CheckpointConfig>()
            .is_err()
        {
            if message.contains(key.as_str()) {
                return message;
            }
            return format!("{key}: {message}");
        }
    }
    message
}

/// The `[checkpointing]` table.
///
/// ```toml
/// [checkpointing]
/// dir = "checkpoints"        # root; checkpoints go to <dir>/<experiment_id>/ckpt-<step>/
/// max_checkpoints = 3        # keep the last 3
/// keep_best = 2              # and the 2 best by `monitor`
/// monitor = "val_loss"
/// mode = "min"
/// keep_every = 10000         # and every checkpoint whose step is a multiple of 10000
/// compression = "off"        # or "zstd", "zstd:N", an integer level
/// hash = "blake3"            # or "sha256" (the digest of each file, verified on every load)
/// async = true               # ModelCheckpointer::save_auto() uses save_async
/// max_in_flight = 1          # background saves accepted before save_async blocks
/// keep_in_page_cache = false # true: saved and loaded bytes stay in the page cache
/// ```
///
/// Nothing is deleted except by an explicit rule (`max_checkpoints`, `keep_best >= 1`,
/// `keep_every`): with none of them set every checkpoint is kept, also when `monitor` is set
/// (`monitor` alone only defines the best checkpoint). With rules, a checkpoint is deleted only
/// when no rule keeps it; the latest, the best and leased checkpoints are never deleted. Unknown
/// keys and out-of-range values are errors naming the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Root directory (default `checkpoints`).
    pub dir: PathBuf,
    /// Keep the newest N checkpoints (`KeepLast`). Unset: no such rule.
    pub max_checkpoints: Option<usize>,
    /// Keep the k best checkpoints by `monitor` (`KeepBest`). Unset or 0: no such rule (the single
    /// best checkpoint is still never deleted by the other rules). Needs `monitor`.
    pub keep_best: Option<usize>,
    /// Metric that defines "best", e.g. `val_loss`. Unset: no best checkpoint.
    pub monitor: Option<String>,
    /// Whether smaller (`min`, default) or larger (`max`) `monitor` values are better.
    pub mode: Mode,
    /// Keep every checkpoint whose step is a multiple of N (`KeepEvery`).
    pub keep_every: Option<u64>,
    /// Per-file compression (off by default: zstd is CPU work that a fast disk does not wait for;
    /// see docs/performance.md).
    pub compression: Compression,
    /// Algorithm of the per-file digests written from now on (BLAKE3 by default; `sha256` to
    /// match digests against other tools). Loads verify with the algorithm each checkpoint records.
    pub hash: crate::HashAlgo,
    /// Whether the trainer should save in the background ([`ModelCheckpointer::save_auto`](crate::ModelCheckpointer::save_auto)).
    #[serde(rename = "async")]
    pub async_save: bool,
    /// How many background saves may be accepted and unfinished before `save_async` blocks (>= 1).
    pub max_in_flight: usize,
    /// fsync files and directories (default true). Turning it off keeps atomicity against process
    /// crashes but not against power loss; meant for scratch runs and tests.
    pub fsync: bool,
    /// Keep checkpoint bytes in the page cache (default false). By default a durable save drops
    /// each file's bytes from the cache once they are on the disk, a few MiB behind the writer,
    /// and a load or verify of a big file that was not cached drops what it has read (a cached
    /// file stays cached). A save or a cold load then needs a few MiB of cache instead of the
    /// checkpoint's size, does not push the training data out of the cache, and on a VM that
    /// returns free guest memory to its host (free page reporting) it saves a host fault per
    /// page: that made a 2 GiB save 2-3x slower than the disk and a cold 2 GiB load swing
    /// between 1.1 and 4 s. The cost: a load right after a save, or a second load of the same
    /// checkpoint, reads from the disk. Without `fsync` saves drop nothing.
    pub keep_in_page_cache: bool,
    /// Restart a completed experiment: `resume_or_start` archives its checkpoints instead of
    /// reporting it as completed. Normally set from a `--force` flag rather than the file.
    pub force: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            dir: PathBuf::from("checkpoints"),
            max_checkpoints: None,
            keep_best: None,
            monitor: None,
            mode: Mode::Min,
            keep_every: None,
            compression: Compression::Off,
            hash: crate::HashAlgo::Blake3,
            async_save: false,
            max_in_flight: 1,
            fsync: true,
            keep_in_page_cache: false,
            force: false,
        }
    }
}

impl CheckpointConfig {
    /// Parses the `[checkpointing]` table. Unknown keys and bad values are [`Error::Config`] naming the key.
    pub fn from_table(table: &toml::Table) -> Result<Self> {
        let cfg: CheckpointConfig =
            toml::Value::Table(table.clone())
                .try_into()
                .map_err(|e: toml::de::Error| Error::Config {
                    message: name_the_key(table, &e),
                })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks value ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| {
            Err(Error::Config {
                message: m.to_owned(),
            })
        };
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be >= 1");
        }
        if self.max_checkpoints == Some(0) {
            return bad("max_checkpoints must be >= 1 (leave it unset to keep all)");
        }
        if self.keep_every == Some(0) {
            return bad("keep_every must be >= 1");
        }
        if self.keep_best.is_some_and(|k| k > 0) && self.monitor.is_none() {
            return bad("keep_best needs monitor (the metric that defines best)");
        }
        if let Compression::Zstd(level) = self.compression
            && !(1..=22).contains(&level)
        {
            return bad("compression level must be in 1..=22");
        }
        Ok(())
    }

    /// The retention policy the config describes.
    pub fn policy(&self) -> crate::RetentionPolicy {
        let mut p = crate::RetentionPolicy::new();
        if let Some(n) = self.max_checkpoints {
            p = p.with(crate::Rule::KeepLast(n));
        }
        if let Some(monitor) = &self.monitor {
            p = p.best_by(monitor.clone(), self.mode);
            // Only an explicit `keep_best` is a rule: `monitor` alone must not delete anything.
            if let Some(k) = self.keep_best.filter(|k| *k > 0) {
                p = p.with(crate::Rule::KeepBest {
                    k,
                    monitor: monitor.clone(),
                    mode: self.mode,
                });
            }
        }
        if let Some(n) = self.keep_every {
            p = p.with(crate::Rule::KeepEvery(n));
        }
        p
    }
}
