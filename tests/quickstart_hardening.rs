//! Issue 12 through the real quickstart binary (`cargo run --release --example quickstart --
//! --config FILE`, here in the test's profile): bad numbers in the config are config errors naming the key,
//! its line and the allowed range (never a panic, exit 101), and an experiment named
//! `../../escape` trains and lands inside the runs directory.
//!
//! The binary is the one `cargo test` builds beside this test, or built once (see
//! `quickstart_bin`). (The release build is the same code; building it here would add a release
//! build of burn to every cold test run.)

mod quickstart_bin;

use std::path::Path;
use std::process::{Command, Output};

use quickstart_bin::quickstart_binary;

fn run_quickstart(dir: &Path, config: &str) -> (Output, String) {
    quickstart_bin::run_in(dir, config, &["--quiet"], &[])
}

const SMALL: &str = r#"
[training]
num_epochs = 1
batch_size = 64
learning_rate = 0.005
device = "cpu"
progress = false

[quickstart]
train_items = 256
valid_items = 128
hidden = 16
"#;

/// Before the fix: `finish_timeout_secs = inf` panicked in `Duration::from_secs_f64` (exit 101)
/// and `system_metrics_interval_secs = 1e19` panicked the sampler thread.
#[test]
fn bad_numbers_are_config_errors_naming_key_line_and_range() {
    for (section, line, key) in [
        (
            "tracking",
            "finish_timeout_secs = inf",
            "tracking.finish_timeout_secs",
        ),
        (
            "tracking",
            "system_metrics_interval_secs = 1e19",
            "tracking.system_metrics_interval_secs",
        ),
        ("tracking", "queue_capacity = 0", "tracking.queue_capacity"),
        ("training", "learning_rate = inf", "training.learning_rate"),
        ("training", "beta2 = 1.5", "training.beta2"),
        ("training", "batch_size = -4", "training.batch_size"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        // The bad key is on line 5 of the file.
        let config = if section == "tracking" {
            format!("[experiment]\nname = \"bad-numbers\"\n\n[tracking]\n{line}\n")
        } else {
            format!("[experiment]\nname = \"bad-numbers\"\n\n[training]\n{line}\n")
        };
        let (out, text) = run_quickstart(tmp.path(), &config);
        assert_ne!(out.status.code(), Some(101), "{line}: panicked:\n{text}");
        assert!(!out.status.success(), "{line}: accepted:\n{text}");
        assert!(!text.contains("panicked"), "{line}:\n{text}");
        assert!(
            text.contains("quick.toml:5:"),
            "{line}: no file:line:\n{text}"
        );
        assert!(text.contains(key), "{line}: key not named:\n{text}");
        if !line.contains("-4") {
            assert!(text.contains("allowed"), "{line}: no range:\n{text}");
        }
    }
}

/// Before the fix, the store turned the name into `.._.._escape-…`, which the checkpointer
/// refused ("starts with '.'"), so the quickstart failed.
#[test]
fn an_experiment_named_dot_dot_escape_trains_inside_the_runs_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("a/b/work");
    std::fs::create_dir_all(&work).unwrap();
    let config = format!(
        "[experiment]\nname = \"../../escape\"\n\n[tracking]\nruns_dir = \"runs\"\n\n\
         [checkpointing]\ndir = \"runs/checkpoints\"\n{SMALL}"
    );
    let (out, text) = run_quickstart(&work, &config);
    assert!(out.status.success(), "{text}");
    let runs = work.join("runs");
    let exp_dirs: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "checkpoints")
        .collect();
    assert_eq!(exp_dirs.len(), 1, "{exp_dirs:?}");
    let id = &exp_dirs[0];
    assert!(exptrack_core::metadata::check_component(id).is_ok(), "{id}");
    assert!(
        runs.join("checkpoints").join(id).is_dir(),
        "checkpoints of {id}"
    );
    let run = std::fs::read_dir(runs.join(id))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(
        meta["experiment_name"], "../../escape",
        "the display name is kept verbatim"
    );
    assert_eq!(meta["status"], "completed");
    // Nothing escaped: `../../escape` from the work dir would be tmp/a/escape.
    assert!(!tmp.path().join("a/escape").exists());
    assert!(!tmp.path().join("escape").exists());
}

/// Issue 18: what the quickstart prints to look at the run works as printed right after the
/// README's first command (in the repository, where no `exptrack` binary is installed yet).
#[test]
fn the_printed_runs_show_command_works_as_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("quick.toml");
    std::fs::write(
        &cfg,
        format!("[experiment]\nname = \"printed-command\"\n\n[tracking]\nuse_tensorboard = false\n{SMALL}"),
    )
    .unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(quickstart_binary())
        .arg("--config")
        .arg(&cfg)
        .arg("--runs")
        .arg(tmp.path().join("runs"))
        .arg("--quiet")
        .current_dir(repo)
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("WANDB_API_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.contains(" runs show "))
        .unwrap_or_else(|| panic!("no `runs show` command printed:\n{stdout}"));
    let words: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(
        &words[..5],
        ["cargo", "run", "-p", "exptrack-cli", "--"],
        "{printed}"
    );
    let run_dir = Path::new(words[words.len() - 1]);
    // In a target directory of its own: a default-feature build of the CLI in the suite's own
    // target directory would replace the `exptrack` binary (built with the suite's features)
    // that other tests run.
    let own_target = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .join("printed-command");
    let shown = Command::new(env!("CARGO"))
        .args(&words[1..])
        .current_dir(repo)
        .env("CARGO_TARGET_DIR", &own_target)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "`{printed}` failed:\n{text}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let run_id = run_dir.file_name().unwrap().to_string_lossy();
    assert!(
        text.contains(run_id.as_ref()),
        "`{printed}` printed:\n{text}"
    );
}
