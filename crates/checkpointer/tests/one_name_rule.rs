//! Issue 12: one rule for names shared by the local store and the checkpointer. Every experiment
//! id the store derives from a display name, however hostile, is accepted by the checkpointer;
//! every id the rule refuses, the checkpointer refuses too.
//!
//! Before the fix, `../../escape` became `.._.._escape-…` in the store, which the checkpointer
//! refused ("starts with '.'").

use exptrack_checkpoint::{CheckpointConfig, Error, ModelCheckpointer};
use exptrack_core::metadata::{check_component, derive_experiment_id};
use proptest::prelude::*;

fn config(dir: &std::path::Path) -> CheckpointConfig {
    CheckpointConfig {
        dir: dir.to_path_buf(),
        ..CheckpointConfig::default()
    }
}

#[test]
fn ids_derived_from_hostile_names_are_accepted_and_stay_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ck");
    let long = "y".repeat(300);
    for name in [
        "../../escape",
        "..",
        ".",
        ".hidden",
        "/etc/passwd",
        "a\\b",
        "ü",
        "",
        &long,
    ] {
        let id = derive_experiment_id(name, "0123456789abcdef0123");
        let c = ModelCheckpointer::open(&id, config(&root))
            .unwrap_or_else(|e| panic!("{name:?} -> {id:?}: {e}"));
        drop(c);
        let dir = std::fs::canonicalize(root.join(&id)).unwrap();
        assert_eq!(dir.parent().unwrap(), std::fs::canonicalize(&root).unwrap());
    }
}

#[test]
fn ids_the_rule_refuses_are_refused_by_the_checkpointer() {
    let tmp = tempfile::tempdir().unwrap();
    for id in ["../x", ".x", "", "a/b", "a b", "x\0y", &"z".repeat(201)] {
        assert!(check_component(id).is_err());
        match ModelCheckpointer::open(id, config(tmp.path())) {
            Err(Error::InvalidExperimentId { id: got, .. }) => assert_eq!(got, id),
            other => panic!("{id:?}: {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_checkpointer_agrees_with_the_rule(name in "\\PC{0,40}") {
        let id = derive_experiment_id(&name, "abcdef012345");
        prop_assert!(check_component(&id).is_ok(), "{:?} -> {:?}", name, id);
        let accepted = {
            let tmp = tempfile::tempdir().unwrap();
            ModelCheckpointer::open(&name, config(tmp.path())).is_ok()
        };
        prop_assert_eq!(accepted, check_component(&name).is_ok(), "{:?}", name);
    }
}
