//! The README's program, compiled and run: `tests/readme/program.rs` is the README's `rust` block
//! (the first test checks that they are identical, byte for byte) and runs here, twice, on the
//! README's own `experiment.toml`: it trains, then reports the experiment as completed.

mod program {
    include!("readme/program.rs");

    /// The program's `main`.
    pub(super) fn run() -> exptrack::Result<()> {
        main()
    }
}

use std::path::Path;

/// The body of the README's first code block whose fence is exactly ```` ```{info} ````.
fn readme_block(info: &str, starting_with: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let fence = format!("```{info}\n");
    let mut rest = readme.as_str();
    while let Some(i) = rest.find(&fence) {
        let body = &rest[i + fence.len()..];
        let end = body
            .find("```")
            .expect("unterminated code block in README.md");
        if body.starts_with(starting_with) {
            return body[..end].to_owned();
        }
        rest = &body[end + 3..];
    }
    panic!("README.md has no ```{info} block starting with {starting_with:?}");
}

#[test]
fn the_readme_program_is_the_one_this_test_runs() {
    assert_eq!(
        readme_block("rust", "use exptrack::"),
        include_str!("readme/program.rs"),
        "README.md's program and tests/readme/program.rs differ: keep them identical"
    );
}

#[test]
fn the_readme_program_trains_then_reports_the_experiment_completed() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("experiment.toml"),
        readme_block("toml", "# experiment.toml"),
    )
    .unwrap();
    // The program reads `experiment.toml` and writes `runs/` in the working directory (this
    // test binary runs nothing else that depends on it).
    std::env::set_current_dir(tmp.path()).unwrap();

    program::run().unwrap();
    let runs = tmp.path().join("runs");
    let experiments: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "checkpoints"))
        .collect();
    assert_eq!(experiments.len(), 1, "{experiments:?}");
    let run_dirs: Vec<_> = std::fs::read_dir(&experiments[0])
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(run_dirs.len(), 1, "{run_dirs:?}");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dirs[0].join("results.json")).unwrap()).unwrap();
    let accuracy = results["extra"]["valid/accuracy"]
        .as_f64()
        .unwrap_or_else(|| panic!("no valid/accuracy in {results}"));
    assert!(accuracy > 0.5, "valid/accuracy {accuracy}");
    let id = experiments[0].file_name().unwrap();
    assert!(
        runs.join("checkpoints")
            .join(id)
            .join("results.json")
            .is_file()
    );

    // Rerun: already completed, nothing trained, no new run.
    program::run().unwrap();
    assert_eq!(std::fs::read_dir(&experiments[0]).unwrap().count(), 1);
}
