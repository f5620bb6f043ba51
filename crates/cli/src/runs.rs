//! `exptrack runs list | show | compare`.

use std::collections::{BTreeMap, BTreeSet};

use clap::Args;
use exptrack_core::store::{RunEntry, RunReader, Summary, best_of, list_runs};
use exptrack_core::{CheckpointReport, CheckpointSet, ExperimentMetadata, RunStatus};
use serde_json::{Value, json};

use crate::Ctx;
use crate::error::{CliError, Result, from_core};
use crate::output::{Table, duration, num, size};

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only runs of this experiment (name or id).
    #[arg(long, short)]
    experiment: Option<String>,
    /// Only runs with this status (running, completed, failed, killed).
    #[arg(long)]
    status: Option<RunStatus>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Run id, unique prefix, EXPERIMENT_ID/RUN_ID, or run directory.
    run: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// Runs to compare (ids, unique prefixes, EXPERIMENT_ID/RUN_ID, or run directories).
    #[arg(required = true, num_args = 1..)]
    runs: Vec<String>,
    /// Show every config key, not only those that differ.
    #[arg(long)]
    all: bool,
    /// Include `system/*` metrics.
    #[arg(long)]
    system: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Wall-clock duration of a run in seconds (until now while it is running).
fn duration_secs(m: &ExperimentMetadata) -> f64 {
    let end = m.end_time.unwrap_or_else(chrono::Utc::now);
    (end - m.start_time).num_milliseconds() as f64 / 1000.0
}

fn run_json(e: &RunEntry) -> Value {
    let m = &e.metadata;
    json!({
        "experiment_id": m.experiment_id,
        "experiment_name": m.experiment_name,
        "run_id": m.run_id,
        "status": m.status,
        "start_time": m.start_time,
        "end_time": m.end_time,
        "duration_secs": duration_secs(m),
        "dir": e.dir,
    })
}

pub(crate) fn list(ctx: &Ctx, a: &ListArgs) -> Result<()> {
    let runs = list_runs(&ctx.runs_dir).map_err(|e| from_core(e, "listing runs"))?;
    let runs: Vec<_> =
        runs.into_iter()
            .filter(|r| {
                a.experiment.as_deref().is_none_or(|x| {
                    r.metadata.experiment_name == x || r.metadata.experiment_id == x
                }) && a.status.is_none_or(|s| r.metadata.status == s)
            })
            .collect();
    if a.json {
        let v: Vec<Value> = runs.iter().map(run_json).collect();
        println!("{}", pretty(&Value::Array(v)));
        return Ok(());
    }
    if runs.is_empty() {
        eprintln!("no runs under {}", ctx.runs_dir.display());
        return Ok(());
    }
    let mut t = Table::new(["RUN", "EXPERIMENT", "STATUS", "STARTED", "DURATION"]);
    for r in &runs {
        let m = &r.metadata;
        t.row([
            m.run_id.clone(),
            m.experiment_id.clone(),
            m.status.to_string(),
            m.start_time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
            duration(duration_secs(m)),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Summary of a run: `results.json`'s when completed, else `summary.json`.
fn summary_of(reader: &RunReader) -> Result<(Summary, Option<exptrack_core::store::RunResults>)> {
    let results = reader
        .results()
        .map_err(|e| from_core(e, "reading results.json"))?;
    let summary = match &results {
        Some(r) if !r.summary.is_empty() => r.summary.clone(),
        _ => reader
            .summary()
            .map_err(|e| from_core(e, "reading summary.json"))?,
    };
    Ok((summary, results))
}

pub(crate) fn show(ctx: &Ctx, a: &ShowArgs) -> Result<()> {
    let entry = ctx.find_run(&a.run)?;
    let reader = RunReader::open(&entry.dir).map_err(|e| from_core(e, "opening run"))?;
    let m = &entry.metadata;
    let config = reader
        .config()
        .map_err(|e| from_core(e, "reading config"))?;
    let (mut summary, results) = summary_of(&reader)?;
    // Series an evaluator logged into this run from beside it (its own log, under companions/).
    for dir in exptrack_plot::companion_run_dirs(&entry.dir) {
        if let Ok(r) = RunReader::open(&dir)
            && let Ok((extra, _)) = summary_of(&r)
        {
            for (k, v) in extra {
                summary.entry(k).or_insert(v);
            }
        }
    }
    let cursors = reader
        .cursors()
        .map_err(|e| from_core(e, "reading cursors"))?;
    let last_seq = reader
        .last_seq()
        .map_err(|e| from_core(e, "reading event log"))?;
    let checkpoints = reader
        .checkpoints()
        .map_err(|e| from_core(e, "reading event log"))?;

    if a.json {
        let v = json!({
            "run": run_json(&entry),
            "metadata": m,
            "config": config,
            "summary": summary,
            "results_extra": results.as_ref().map(|r| &r.extra),
            "events": last_seq,
            "cursors": cursors,
            "checkpoints": {
                "present": checkpoints.present().map(CheckpointReport::manifest).collect::<Vec<_>>(),
                "best": checkpoints.best().map(|r| r.step),
                "pruned": checkpoints.pruned().collect::<Vec<_>>(),
            },
        });
        println!("{}", pretty(&v));
        return Ok(());
    }

    println!("run         {}", m.run_id);
    println!("experiment  {} ({})", m.experiment_name, m.experiment_id);
    println!("status      {}", m.status);
    println!(
        "started     {}",
        m.start_time.with_timezone(&chrono::Local).to_rfc3339()
    );
    if let Some(end) = m.end_time {
        println!(
            "ended       {}",
            end.with_timezone(&chrono::Local).to_rfc3339()
        );
    }
    println!("duration    {}", duration(duration_secs(m)));
    println!("config hash {}", m.config_hash);
    if !m.description.is_empty() {
        println!("description {}", m.description);
    }
    if !m.tags.is_empty() {
        println!("tags        {}", m.tags.join(", "));
    }
    if let Some(g) = &m.system.git {
        println!(
            "git         {}{}{}",
            g.commit,
            if g.dirty { " (dirty)" } else { "" },
            g.branch
                .as_deref()
                .map(|b| format!(" on {b}"))
                .unwrap_or_default()
        );
    }
    if !m.system.hostname.is_empty() {
        println!(
            "host        {} ({} {})",
            m.system.hostname, m.system.os, m.system.arch
        );
    }
    println!("directory   {}", entry.dir.display());

    if !summary.is_empty() {
        println!("\nmetrics");
        let mut t = Table::new(["KEY", "LAST", "MIN", "@STEP", "MAX", "@STEP", "COUNT"]);
        for (k, s) in &summary {
            t.row([
                k.clone(),
                num(s.last),
                num(s.min),
                s.min_step.to_string(),
                num(s.max),
                s.max_step.to_string(),
                s.count.to_string(),
            ]);
        }
        print!("{}", indent(&t.render()));
    }
    if let Some(r) = &results
        && !r.extra.is_empty()
    {
        println!("\nresults");
        let mut t = Table::new(["KEY", "VALUE"]);
        for (k, v) in &r.extra {
            let mut s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if s.len() > 80 {
                s.truncate(s.char_indices().nth(77).map_or(s.len(), |(i, _)| i));
                s.push_str("...");
            }
            t.row([k.clone(), s]);
        }
        print!("{}", indent(&t.render()));
    }
    if !checkpoints.is_empty() {
        print!("{}", checkpoints_section(&checkpoints));
    }
    if !config.is_empty() {
        println!("\nconfig");
        let text = toml::to_string_pretty(&config).unwrap_or_default();
        print!("{}", indent(&text));
    }
    println!("\nevents      {last_seq}");
    if !cursors.is_empty() {
        println!("backends");
        let mut t = Table::new(["BACKEND", "DELIVERED", "PENDING"]);
        for (b, c) in &cursors {
            t.row([
                b.clone(),
                c.to_string(),
                last_seq.saturating_sub(*c).to_string(),
            ]);
        }
        print!("{}", indent(&t.render()));
    }
    Ok(())
}

/// The checkpoints the run reported that still exist (step, epoch, size, the first file's
/// digest, the best one) and how many retention deleted.
fn checkpoints_section(set: &CheckpointSet) -> String {
    let present: Vec<&CheckpointReport> = set.present().collect();
    let pruned = set.pruned().count();
    let mut out = format!("\ncheckpoints ({} present", present.len());
    if pruned > 0 {
        out.push_str(&format!(", {pruned} pruned by retention"));
    }
    out.push_str(")\n");
    let best = set.best().map(|r| r.step);
    let mut t = Table::new(["STEP", "EPOCH", "SIZE", "HASH", "BEST"]);
    for r in present {
        t.row([
            r.step.to_string(),
            r.epoch.map(|e| e.to_string()).unwrap_or_default(),
            size(r.total_size()),
            r.files
                .first()
                .map(|f| hash_prefix(&f.hash))
                .unwrap_or_default(),
            if best == Some(r.step) { "best" } else { "" }.to_owned(),
        ]);
    }
    out.push_str(&indent(&t.render()));
    out
}

/// `algo:` and the first 12 digits of a digest (`blake3:1f0c…` → `blake3:1f0c2a9b3e4d`).
fn hash_prefix(hash: &str) -> String {
    let (algo, digest) = hash.split_once(':').unwrap_or(("", hash));
    let digits: String = digest.chars().take(12).collect();
    if algo.is_empty() {
        digits
    } else {
        format!("{algo}:{digits}")
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("  {l}\n")
            }
        })
        .collect()
}

/// Flattens a TOML table into dotted keys.
fn flatten(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) => flatten(&key, inner, out),
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

pub(crate) fn compare(ctx: &Ctx, a: &CompareArgs) -> Result<()> {
    let mut runs = Vec::new();
    let mut extras: Vec<BTreeMap<String, Value>> = Vec::new();
    for id in &a.runs {
        let entry = ctx.find_run(id)?;
        let reader = RunReader::open(&entry.dir).map_err(|e| from_core(e, "opening run"))?;
        let config = reader
            .config()
            .map_err(|e| from_core(e, "reading config"))?;
        let mut flat = BTreeMap::new();
        flatten("", &config, &mut flat);
        let (summary, results) = summary_of(&reader)?;
        runs.push((entry, flat, summary));
        extras.push(results.map(|r| r.extra).unwrap_or_default());
    }
    let mut seen = BTreeSet::new();
    for (e, _, _) in &runs {
        if !seen.insert(e.dir.clone()) {
            return Err(CliError::usage(format!(
                "run {} is given twice",
                e.metadata.run_id
            )));
        }
    }

    let keys: BTreeSet<&String> = runs.iter().flat_map(|(_, f, _)| f.keys()).collect();
    let mut config_rows: Vec<(String, Vec<Option<String>>)> = Vec::new();
    for k in keys {
        let vals: Vec<Option<String>> = runs.iter().map(|(_, f, _)| f.get(k).cloned()).collect();
        let differs = vals.iter().any(|v| v != &vals[0]);
        if differs || a.all {
            config_rows.push((k.clone(), vals));
        }
    }
    let metric_keys: BTreeSet<&String> = runs
        .iter()
        .flat_map(|(_, _, s)| s.keys())
        .filter(|k| a.system || !k.starts_with("system/"))
        .collect();

    // `results.json` values set with `set_result` (test accuracy, best epoch, ...).
    let result_keys: BTreeSet<&String> = extras.iter().flat_map(BTreeMap::keys).collect();

    if a.json {
        let run_list: Vec<Value> = runs.iter().map(|(e, _, _)| run_json(e)).collect();
        let config: serde_json::Map<String, Value> = config_rows
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let metrics: serde_json::Map<String, Value> = metric_keys
            .iter()
            .map(|k| {
                let per_run: Vec<Value> = runs
                    .iter()
                    .map(|(_, _, s)| match s.get(*k) {
                        None => Value::Null,
                        Some(m) => {
                            let best = best_of(k, m);
                            json!({
                                "final": json_num(m.last),
                                "final_step": m.last_step,
                                "best": best.map(|b| json_num(b.0)),
                                "best_step": best.map(|b| b.1),
                                "min": json_num(m.min),
                                "max": json_num(m.max),
                            })
                        }
                    })
                    .collect();
                ((*k).clone(), Value::Array(per_run))
            })
            .collect();
        let results: serde_json::Map<String, Value> = result_keys
            .iter()
            .map(|k| {
                let per_run: Vec<Value> = extras
                    .iter()
                    .map(|x| x.get(*k).cloned().unwrap_or(Value::Null))
                    .collect();
                ((*k).clone(), Value::Array(per_run))
            })
            .collect();
        let v = json!({
            "runs": run_list,
            "config_diff": config,
            "metrics": metrics,
            "results": results,
        });
        println!("{}", pretty(&v));
        return Ok(());
    }

    let mut head = vec![String::new()];
    head.extend(runs.iter().map(|(e, _, _)| e.metadata.run_id.clone()));
    let mut t = Table::new(head.clone());
    t.row(
        std::iter::once("experiment".to_owned()).chain(
            runs.iter()
                .map(|(e, _, _)| e.metadata.experiment_name.clone()),
        ),
    );
    t.row(
        std::iter::once("status".to_owned())
            .chain(runs.iter().map(|(e, _, _)| e.metadata.status.to_string())),
    );
    t.row(
        std::iter::once("duration".to_owned()).chain(
            runs.iter()
                .map(|(e, _, _)| duration(duration_secs(&e.metadata))),
        ),
    );
    print!("{}", t.render());

    println!(
        "\nconfig ({})",
        if a.all { "all keys" } else { "differences" }
    );
    if config_rows.is_empty() {
        println!("  (identical)");
    } else {
        let mut t = Table::new(head.clone());
        for (k, vals) in &config_rows {
            t.row(
                std::iter::once(k.clone()).chain(
                    vals.iter()
                        .map(|v| v.clone().unwrap_or_else(|| "-".to_owned())),
                ),
            );
        }
        print!("{}", indent(&t.render()));
    }

    println!("\nmetrics (final / best@step)");
    let mut t = Table::new(head);
    for k in &metric_keys {
        t.row(
            std::iter::once((*k).clone()).chain(runs.iter().map(|(_, _, s)| match s.get(*k) {
                None => "-".to_owned(),
                Some(m) => match best_of(k, m) {
                    Some((b, step)) => format!("{} / {}@{}", num(m.last), num(b), step),
                    None => num(m.last),
                },
            })),
        );
    }
    if t.is_empty() {
        println!("  (no metrics)");
    } else {
        print!("{}", indent(&t.render()));
    }
    if !result_keys.is_empty() {
        println!("\nresults");
        let mut head = vec![String::new()];
        head.extend(runs.iter().map(|(e, _, _)| e.metadata.run_id.clone()));
        let mut t = Table::new(head);
        for k in &result_keys {
            t.row(
                std::iter::once((*k).clone()).chain(extras.iter().map(|x| match x.get(*k) {
                    None => "-".to_owned(),
                    Some(Value::Number(n)) => n.as_f64().map(num).unwrap_or_else(|| n.to_string()),
                    Some(Value::String(s)) if s.len() <= 40 => s.clone(),
                    Some(v) => {
                        let s = v.to_string();
                        if s.len() > 40 { "(...)".to_owned() } else { s }
                    }
                })),
            );
        }
        print!("{}", indent(&t.render()));
    }
    Ok(())
}

fn json_num(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(num(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_nested_tables() {
        let t: toml::Table = toml::from_str("a = 1\n[b]\nc = \"x\"\n[b.d]\ne = true").unwrap();
        let mut out = BTreeMap::new();
        flatten("", &t, &mut out);
        assert_eq!(out["a"], "1");
        assert_eq!(out["b.c"], "x");
        assert_eq!(out["b.d.e"], "true");
    }

    #[test]
    fn hash_prefixes_keep_the_algorithm() {
        assert_eq!(
            hash_prefix("blake3:0123456789abcdef0123"),
            "blake3:0123456789ab"
        );
        assert_eq!(hash_prefix("abcdef"), "abcdef");
    }
}
