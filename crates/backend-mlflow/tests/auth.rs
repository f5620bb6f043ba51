//! A real `mlflow server --app-name basic-auth`: rejected credentials are a permanent
//! authentication error that names which credentials were sent (never their value); the right
//! ones work.

mod common;

use exptrack_core::{ExperimentMetadata, RunContext, RunStatus, Tracker};
use exptrack_mlflow::{Error, MlflowTracker};

const RIGHT: &str = "Right-pw-for-the-auth-test";
const WRONG: &str = "Wrong-pw-for-the-auth-test";

fn ctx(dir: &std::path::Path) -> RunContext {
    RunContext {
        metadata: ExperimentMetadata::new("auth-exp", "ab12cd34ef56ab12cd34ef56"),
        config: toml::Table::new(),
        run_dir: dir.to_path_buf(),
        resumed: false,
    }
}

#[test]
fn wrong_password_is_a_permanent_auth_error_naming_the_credentials() {
    let Some(exe) = common::mlflow_exe() else {
        return;
    };
    let server = common::MlflowServer::start_basic_auth(&exe, RIGHT);
    let tmp = tempfile::tempdir().unwrap();

    let client = MlflowTracker::builder()
        .tracking_uri(server.uri())
        .basic_auth("admin", WRONG)
        .build_client()
        .unwrap();
    let e = client.get_experiment_by_name("auth-exp").unwrap_err();
    assert!(matches!(e, Error::Auth { status: 401, .. }), "{e:?}");
    assert!(!e.is_transient());
    assert_eq!(e.status(), Some(401));
    let shown = format!("{e} | {e:?} | {}", exptrack_core::error::report(&e));
    assert!(shown.contains("authentication failed (HTTP 401"), "{shown}");
    assert!(
        shown.contains("user \"admin\" and a password were sent (set in code)"),
        "{shown}"
    );
    assert!(!shown.contains(WRONG) && !shown.contains(RIGHT), "{shown}");

    // Through the Tracker trait: open fails permanently (the dispatcher disables the tracker and
    // reports it instead of retrying forever).
    let mut t = MlflowTracker::builder()
        .tracking_uri(server.uri())
        .basic_auth("admin", WRONG)
        .build()
        .unwrap();
    let e = t.open(&ctx(tmp.path())).unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("authentication failed"), "{e}");

    // The right password works.
    let mut t = MlflowTracker::builder()
        .tracking_uri(server.uri())
        .basic_auth("admin", RIGHT)
        .build()
        .unwrap();
    t.open(&ctx(tmp.path())).unwrap();
    t.close(RunStatus::Completed).unwrap();
    let exp = server.get(
        "experiments/get-by-name",
        &[("experiment_name", "auth-exp")],
    );
    assert!(exp["experiment"]["experiment_id"].is_string(), "{exp}");
}
