//! `set_result` values are events: in the write-ahead log (so a crash loses none and a resumed run
//! still reports them), delivered to every tracker, and in `results.json`; and the provenance
//! backends show as "Source" / "Created by" is collected with the run's metadata.

mod common;

use common::{Behaviour, TestTracker};
use exptrack_core::store::RunReader;
use exptrack_core::{Event, ExperimentConfig, ExperimentTracker, Resume, RunStatus, SystemInfo};
use serde_json::json;

fn builder(dir: &std::path::Path) -> exptrack_core::ExperimentTrackerBuilder {
    ExperimentTracker::builder(ExperimentConfig::named("results-test"))
        .runs_dir(dir)
        .handle_signals(false)
        .collect_system_info(false)
}

fn results_in(events: &[(u64, Event)]) -> Vec<(String, serde_json::Value)> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Result { key, value, .. } => Some((key.clone(), value.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn results_are_logged_delivered_and_survive_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, seen) = TestTracker::new("a", Behaviour::default());
    let t = builder(tmp.path())
        .with_tracker(Box::new(a))
        .build()
        .unwrap();
    let run_dir = t.run_dir().to_path_buf();
    t.log_metrics(0, &[("loss", 1.0)]).unwrap();
    t.set_result("best_epoch", json!(7)).unwrap();
    t.set_result("test/accuracy", json!(0.9)).unwrap();
    t.flush().unwrap();
    let want = vec![
        ("best_epoch".to_owned(), json!(7)),
        ("test/accuracy".to_owned(), json!(0.9)),
    ];
    assert_eq!(results_in(&seen.lock().unwrap().events), want, "delivered");
    let logged = RunReader::open(&run_dir).unwrap().events().unwrap();
    assert_eq!(
        results_in(&logged),
        want,
        "in events.jsonl before the run ends"
    );

    // The process dies (the guard marks the run failed; nothing writes results.json).
    drop(t);
    assert!(
        RunReader::open(&run_dir)
            .unwrap()
            .results()
            .unwrap()
            .is_none()
    );

    // The resumed run still knows the earlier results; a later value replaces one.
    let t = builder(tmp.path())
        .resume(Resume::LatestUnfinished)
        .build()
        .unwrap();
    assert_eq!(t.run_dir(), run_dir);
    t.set_result("test/accuracy", json!(0.95)).unwrap();
    t.finish(RunStatus::Completed).unwrap();
    let results = RunReader::open(&run_dir)
        .unwrap()
        .results()
        .unwrap()
        .unwrap();
    assert_eq!(results.extra["best_epoch"], json!(7));
    assert_eq!(results.extra["test/accuracy"], json!(0.95));
}

#[test]
fn result_events_round_trip_through_json() {
    let e = Event::Result {
        key: "best".into(),
        value: json!({"epoch": 3, "tags": ["a"]}),
        timestamp_ms: 5,
    };
    let text = serde_json::to_string(&e).unwrap();
    assert!(text.contains(r#""kind":"result""#), "{text}");
    assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), e);
}

#[test]
fn system_info_names_the_program_and_the_user() {
    let info = SystemInfo::collect(std::path::Path::new("."));
    let exe = std::env::current_exe().unwrap();
    assert_eq!(info.program, exe.display().to_string());
    let user = ["LOGNAME", "USER", "LNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()));
    assert_eq!(Some(info.user.clone()).filter(|u| !u.is_empty()), user);
    // Old metadata.json files (without the fields) still load.
    let old: SystemInfo = serde_json::from_str(
        r#"{"hostname":"h","os":"linux","arch":"x86_64","cpu_cores":1,"total_memory_bytes":0,"crate_versions":{}}"#,
    )
    .unwrap();
    assert_eq!((old.user.as_str(), old.program.as_str()), ("", ""));
}
