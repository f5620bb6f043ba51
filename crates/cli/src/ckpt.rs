//! `exptrack ckpt list | verify | prune | export-best`.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use exptrack_checkpoint::{
    CheckpointConfig, CheckpointInfo, Location, ModelCheckpointer, REGISTRY_JSON,
};
use serde_json::{Value, json};

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::output::{self, Table, num, size};

/// Which checkpoints to look at and which retention/best settings apply.
#[derive(Debug, Args)]
pub(crate) struct DirArgs {
    /// An experiment's checkpoint directory (`<checkpoints>/<experiment_id>`, holding
    /// `registry.json` and `ckpt-*`), or a root holding several of them; or an object-store URL
    /// of one experiment, `s3://bucket/prefix/<experiment_id>` (also `gs://`, `az://`; needs the
    /// cli's `s3`/`gcs`/`azure` feature; credentials from the usual environment variables).
    dir: PathBuf,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// Read retention settings from the `[checkpointing]` table of this experiment config.
    #[arg(long, value_name = "TOML")]
    config: Option<PathBuf>,
    /// Metric that defines the best checkpoint (default: the one recorded in registry.json).
    #[arg(long)]
    monitor: Option<String>,
    /// Whether a smaller or larger monitor value is better (default: as recorded).
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Retention: keep the newest N checkpoints.
    #[arg(long, value_name = "N")]
    keep_last: Option<usize>,
    /// Retention: keep the K best checkpoints by --monitor.
    #[arg(long, value_name = "K")]
    keep_best: Option<usize>,
    /// Retention: keep every checkpoint whose step is a multiple of N.
    #[arg(long, value_name = "N")]
    keep_every: Option<u64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ModeArg {
    /// Smaller is better.
    Min,
    /// Larger is better.
    Max,
}

#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Only print what would be deleted.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Destination directory (created if needed).
    out: PathBuf,
}

/// One experiment's checkpoint directory: `root/<id>`.
#[derive(Debug)]
struct ExpDir {
    root: PathBuf,
    id: String,
}

impl ExpDir {
    fn path(&self) -> PathBuf {
        self.root.join(&self.id)
    }
}

fn is_experiment_dir(p: &Path) -> bool {
    if p.join(REGISTRY_JSON).is_file() {
        return true;
    }
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("ckpt-")
                    && e.file_type().is_ok_and(|t| t.is_dir())
            })
        })
        .unwrap_or(false)
}

/// DIR is an experiment directory, or a root whose children are, or the URL of one experiment.
fn experiment_dirs(dir: &Path) -> Result<Vec<ExpDir>> {
    let location = Location::from_dir(dir).map_err(|e| CliError::usage(e.to_string()))?;
    if let Location::Object(url) = location {
        let (root, id) =
            Location::split_experiment(&url).map_err(|e| CliError::usage(e.to_string()))?;
        return Ok(vec![ExpDir {
            root: root.into(),
            id,
        }]);
    }
    if !dir.is_dir() {
        return Err(
            CliError::usage(format!("{} is not a directory", dir.display()))
                .hint("pass a checkpoint directory such as checkpoints/<experiment_id>"),
        );
    }
    let split = |p: &Path| -> Option<ExpDir> {
        let abs = std::path::absolute(p).ok()?;
        Some(ExpDir {
            root: abs.parent()?.to_path_buf(),
            id: abs.file_name()?.to_string_lossy().into_owned(),
        })
    };
    if is_experiment_dir(dir) {
        return split(dir)
            .map(|d| vec![d])
            .ok_or_else(|| CliError::usage(format!("{} has no parent directory", dir.display())));
    }
    let mut out: Vec<ExpDir> = std::fs::read_dir(dir)
        .map_err(|e| CliError::backend(format!("reading {}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && is_experiment_dir(p))
        .filter_map(|p| split(&p))
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    if out.is_empty() {
        return Err(CliError::usage(format!(
            "no checkpoints in {} (no registry.json or ckpt-* directories)",
            dir.display()
        ))
        .hint("pass the experiment's checkpoint directory, e.g. checkpoints/<experiment_id>"));
    }
    Ok(out)
}

/// Monitor and mode recorded in `registry.json`, if any.
fn recorded_monitor(exp: &Path) -> (Option<String>, Option<exptrack_checkpoint::Mode>) {
    let Ok(bytes) = std::fs::read(exp.join(REGISTRY_JSON)) else {
        return (None, None);
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return (None, None);
    };
    let monitor = v.get("monitor").and_then(Value::as_str).map(str::to_owned);
    let mode = match v.get("mode").and_then(Value::as_str) {
        Some("max") => Some(exptrack_checkpoint::Mode::Max),
        Some("min") => Some(exptrack_checkpoint::Mode::Min),
        _ => None,
    };
    (monitor, mode)
}

fn config_for(exp: &ExpDir, p: &PolicyArgs) -> Result<CheckpointConfig> {
    let mut cfg = match &p.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("reading {}: {e}", path.display())))?;
            let doc: toml::Table = toml::from_str(&text)
                .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
            let table = doc
                .get("checkpointing")
                .and_then(toml::Value::as_table)
                .cloned()
                .unwrap_or_default();
            CheckpointConfig::from_table(&table).map_err(|e| {
                CliError::usage(format!("[checkpointing] in {}: {e}", path.display()))
            })?
        }
        None => CheckpointConfig::default(),
    };
    cfg.dir = exp.root.clone();
    let (rec_monitor, rec_mode) = if Location::from_dir(&exp.root).is_ok_and(|l| l.is_remote()) {
        // No files to peek at: ask the store (read-only) what the writer recorded.
        ModelCheckpointer::open_read_only(&exp.id, cfg.clone())
            .ok()
            .and_then(|c| c.recorded_monitor())
            .map_or((None, None), |(m, mode)| (Some(m), Some(mode)))
    } else {
        recorded_monitor(&exp.path())
    };
    if let Some(m) = &p.monitor {
        cfg.monitor = Some(m.clone());
    } else if cfg.monitor.is_none() {
        cfg.monitor = rec_monitor;
    }
    match p.mode {
        Some(ModeArg::Min) => cfg.mode = exptrack_checkpoint::Mode::Min,
        Some(ModeArg::Max) => cfg.mode = exptrack_checkpoint::Mode::Max,
        None if p.config.is_none() => {
            if let Some(m) = rec_mode {
                cfg.mode = m;
            }
        }
        None => {}
    }
    if p.keep_last.is_some() {
        cfg.max_checkpoints = p.keep_last;
    }
    if p.keep_best.is_some() {
        cfg.keep_best = p.keep_best;
    }
    if p.keep_every.is_some() {
        cfg.keep_every = p.keep_every;
    }
    cfg.validate()
        .map_err(|e| CliError::usage(format!("retention settings: {e}")))?;
    Ok(cfg)
}

fn ckpt_err(what: &str, exp: &ExpDir, e: exptrack_checkpoint::Error) -> CliError {
    let msg = format!("{what} {}: {e}", exp.path().display());
    if e.is_corruption() {
        CliError::check(msg)
    } else {
        CliError::backend(msg)
    }
}

fn open_ro(exp: &ExpDir, p: &PolicyArgs) -> Result<ModelCheckpointer> {
    let cfg = config_for(exp, p)?;
    ModelCheckpointer::open_read_only(&exp.id, cfg).map_err(|e| ckpt_err("opening", exp, e))
}

fn info_json(c: &CheckpointInfo, latest: bool, best: bool) -> Value {
    json!({
        "step": c.step,
        "epoch": c.epoch,
        "dir": c.dir,
        "created_ms": c.created_ms,
        "metrics": c.metrics.iter().map(|(k, v)| (k.clone(), json_num(*v))).collect::<serde_json::Map<_, _>>(),
        "files": c.files.iter().map(|f| json!({"name": f.name, "size": f.size, "stored_size": f.stored_size, "hash": f.hash.to_string()})).collect::<Vec<_>>(),
        "total_size": c.total_size(),
        "stored_size": c.stored_size(),
        "latest": latest,
        "best": best,
    })
}

fn json_num(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(num(v)))
}

pub(crate) fn list(a: &DirArgs) -> Result<()> {
    let mut all = Vec::new();
    for exp in experiment_dirs(&a.dir)? {
        let ck = open_ro(&exp, &a.policy)?;
        let latest = ck.latest().map(|c| c.step);
        let best = ck.best().map(|c| c.step);
        let monitor = ck.config().monitor.clone();
        all.push((exp, ck.list(), latest, best, monitor));
    }
    if a.json {
        let v: Vec<Value> = all
            .iter()
            .map(|(exp, list, latest, best, monitor)| {
                json!({
                    "experiment_id": exp.id,
                    "dir": exp.path(),
                    "monitor": monitor,
                    "latest": latest,
                    "best": best,
                    "checkpoints": list.iter().map(|c| info_json(c, Some(c.step) == *latest, Some(c.step) == *best)).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    for (i, (exp, list, latest, best, monitor)) in all.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{} ({} checkpoints)", exp.path().display(), list.len());
        let mon_col = monitor.clone().unwrap_or_else(|| "METRICS".to_owned());
        let mut t = Table::new([
            "STEP".to_owned(),
            "EPOCH".to_owned(),
            "CREATED".to_owned(),
            "FILES".to_owned(),
            "SIZE".to_owned(),
            mon_col.to_uppercase(),
            String::new(),
        ]);
        for c in list {
            let metric = match monitor {
                Some(m) => c
                    .metrics
                    .get(m)
                    .map(|v| num(*v))
                    .unwrap_or_else(|| "-".into()),
                None => c
                    .metrics
                    .iter()
                    .map(|(k, v)| format!("{k}={}", num(*v)))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            let mut flags = Vec::new();
            if Some(c.step) == *latest {
                flags.push("latest");
            }
            if Some(c.step) == *best {
                flags.push("best");
            }
            let created = chrono::DateTime::from_timestamp_millis(c.created_ms)
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string()
                })
                .unwrap_or_default();
            t.row([
                c.step.to_string(),
                c.epoch.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
                created,
                c.files.len().to_string(),
                size(c.stored_size()),
                metric,
                flags.join(","),
            ]);
        }
        print!("{}", t.render());
    }
    Ok(())
}

pub(crate) fn verify(ctx: &Ctx, a: &DirArgs) -> Result<()> {
    let mut bad = Vec::new();
    let mut ok = 0usize;
    let mut results = Vec::new();
    for exp in experiment_dirs(&a.dir)? {
        let ck = open_ro(&exp, &a.policy)?;
        let report = ck.reconcile_report();
        for d in &report.unreadable {
            let msg = format!(
                "{}: checkpoint.json is unreadable",
                exp.path().join(d).display()
            );
            bad.push(msg.clone());
            results.push(json!({"experiment_id": exp.id, "dir": exp.path().join(d), "ok": false, "error": msg}));
        }
        let list = ck.list();
        let pb = output::bar(
            ctx.progress,
            list.len() as u64,
            &format!("verifying {}", exp.id),
        );
        let plain = !output::interactive(ctx.progress) && !a.json;
        for c in &list {
            let r = ck.verify(c.step);
            pb.inc(1);
            match r {
                Ok(()) => {
                    ok += 1;
                    if plain {
                        println!(
                            "ok       {}  step {}  {} files  {}",
                            c.dir.display(),
                            c.step,
                            c.files.len(),
                            size(c.total_size())
                        );
                    } else {
                        pb.println(format!("ok       {}  step {}", c.dir.display(), c.step));
                    }
                    results.push(
                        json!({"experiment_id": exp.id, "step": c.step, "dir": c.dir, "ok": true}),
                    );
                }
                Err(e) => {
                    let msg = e.to_string().replace('\n', " ");
                    if plain {
                        println!("CORRUPT  {}  step {}: {msg}", c.dir.display(), c.step);
                    } else {
                        pb.println(format!(
                            "CORRUPT  {}  step {}: {msg}",
                            c.dir.display(),
                            c.step
                        ));
                    }
                    results.push(json!({"experiment_id": exp.id, "step": c.step, "dir": c.dir, "ok": false, "error": msg}));
                    bad.push(format!("step {} in {}: {msg}", c.step, exp.id));
                }
            }
        }
        pb.finish_and_clear();
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": bad.is_empty(), "verified": ok, "corrupt": bad.len(), "checkpoints": results})).unwrap_or_default()
        );
    } else {
        println!("{ok} checkpoint(s) verified, {} corrupt", bad.len());
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(CliError::check(format!(
            "{} corrupt checkpoint(s); first: {}",
            bad.len(),
            bad[0]
        ))
        .hint("restore from a backup, or resume from an older checkpoint (load_latest_valid skips corrupt ones)"))
    }
}

pub(crate) fn prune(a: &PruneArgs) -> Result<()> {
    let d = &a.dir;
    let mut total = 0usize;
    let mut json_out = Vec::new();
    for exp in experiment_dirs(&d.dir)? {
        // Retention must be explicit: with no rule given, pruning would delete nothing (a
        // monitor alone is no deletion rule), which is never what `prune` was called for.
        let p = &d.policy;
        if p.config.is_none()
            && p.keep_last.is_none()
            && p.keep_best.is_none()
            && p.keep_every.is_none()
        {
            return Err(CliError::usage("no retention rule given")
                .hint("give --keep-last N, --keep-best K (with --monitor) and/or --keep-every N, or --config experiment.toml"));
        }
        let cfg = config_for(&exp, p)?;
        let steps = if a.dry_run {
            let ck = ModelCheckpointer::open_read_only(&exp.id, cfg)
                .map_err(|e| ckpt_err("opening", &exp, e))?;
            ck.prune_plan()
        } else {
            let mut ck = ModelCheckpointer::open(&exp.id, cfg).map_err(|e| {
                ckpt_err("opening for pruning", &exp, e)
                    .hint("another process (a training run?) may hold the directory; try --dry-run")
            })?;
            ck.prune().map_err(|e| ckpt_err("pruning", &exp, e))?
        };
        total += steps.len();
        let verb = if a.dry_run { "would delete" } else { "deleted" };
        if !d.json {
            for s in &steps {
                println!(
                    "{verb} {}",
                    exp.path().join(format!("ckpt-{s:012}")).display()
                );
            }
        }
        json_out.push(json!({"experiment_id": exp.id, "dir": exp.path(), "dry_run": a.dry_run, "steps": steps}));
    }
    if d.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json_out).unwrap_or_default()
        );
    } else {
        println!(
            "{total} checkpoint(s) {}",
            if a.dry_run {
                "would be deleted (dry run)"
            } else {
                "deleted"
            }
        );
    }
    Ok(())
}

pub(crate) fn export_best(a: &ExportArgs) -> Result<()> {
    let exps = experiment_dirs(&a.dir.dir)?;
    if exps.len() != 1 {
        return Err(CliError::usage(format!(
            "{} holds {} experiments; export-best needs one",
            a.dir.dir.display(),
            exps.len()
        ))
        .hint("pass the experiment's directory, e.g. checkpoints/<experiment_id>"));
    }
    let exp = &exps[0];
    let ck = open_ro(exp, &a.dir.policy)?;
    let Some(monitor) = ck.config().monitor.clone() else {
        return Err(CliError::usage(format!(
            "no best checkpoint in {}: no monitor metric is recorded",
            exp.path().display()
        ))
        .hint("pass --monitor METRIC (and --mode min|max)"));
    };
    let info = ck.export_best(&a.out).map_err(|e| {
        let base = ckpt_err("exporting best checkpoint from", exp, e);
        if base.message.contains("no best checkpoint") {
            CliError::usage(base.message).hint(format!(
                "no checkpoint has the metric {monitor:?}; pass --monitor"
            ))
        } else {
            base
        }
    })?;
    if a.dir.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info_json(&info, false, true)).unwrap_or_default()
        );
    } else {
        println!(
            "exported step {} ({monitor} = {}) to {}: {}",
            info.step,
            info.metrics
                .get(&monitor)
                .map(|v| num(*v))
                .unwrap_or_else(|| "-".into()),
            a.out.display(),
            info.files
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
