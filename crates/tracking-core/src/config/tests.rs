//! Unit tests of the config and its hash. The parent declares this file as `#[cfg(test)] mod tests;`, so
//! none of it is compiled into the library.

use super::*;

#[test]
fn line_col_counts_from_one() {
    assert_eq!(line_col("abc\ndef", 5), (2, 2));
    assert_eq!(line_col("abc", 0), (1, 1));
}

#[test]
fn malformed_toml_reports_line_and_column() {
    let text = "[experiment]\nname = \"x\"\nlr = = 3\n";
    let err = ExperimentConfig::parse(text, "exp.toml").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("exp.toml:3:"), "{msg}");
    match err {
        Error::ConfigParse { line, column, .. } => {
            assert_eq!(line, 3);
            assert!(column >= 5, "column {column}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unknown_key_in_known_section_is_named() {
    let text = "[experiment]\nname = \"x\"\n\n[tracking]\nuse_tensorbaord = true\n";
    let err = ExperimentConfig::parse(text, "exp.toml").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("use_tensorbaord"), "{msg}");
    assert!(msg.starts_with("exp.toml:5:"), "{msg}");
}

#[test]
fn missing_name_is_an_error() {
    let err = ExperimentConfig::parse("[experiment]\ntags=[]\n", "c.toml").unwrap_err();
    assert!(err.to_string().contains("name"), "{err}");
}

#[test]
fn unknown_sections_are_kept_and_hashed() {
    let a = ExperimentConfig::parse("[experiment]\nname=\"x\"\n[model]\nd=1\n", "a").unwrap();
    let b = ExperimentConfig::parse("[experiment]\nname=\"x\"\n[model]\nd=2\n", "b").unwrap();
    assert!(a.section("model").is_some());
    assert_ne!(a.hash(), b.hash());
}

#[test]
fn tracking_is_excluded_by_default_and_exclusions_are_configurable() {
    let a = ExperimentConfig::parse(
        "[experiment]\nname=\"x\"\n[tracking]\nuse_mlflow=false\n",
        "a",
    )
    .unwrap();
    let b = ExperimentConfig::parse(
        "[experiment]\nname=\"x\"\n[tracking]\nuse_mlflow=true\n",
        "b",
    )
    .unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.experiment_id(), b.experiment_id());
    let c = ExperimentConfig::parse(
        "[experiment]\nname=\"x\"\nhash_exclude=[\"training.log_frequency\"]\n[training]\nlog_frequency=1\nlr=0.1\n",
        "c",
    )
    .unwrap();
    let d = ExperimentConfig::parse(
        "[experiment]\nname=\"x\"\nhash_exclude=[\"training.log_frequency\"]\n[training]\nlog_frequency=50\nlr=0.1\n",
        "d",
    )
    .unwrap();
    assert_eq!(c.hash(), d.hash());
    let e = ExperimentConfig::parse(
        "[experiment]\nname=\"x\"\nhash_exclude=[\"training.log_frequency\"]\n[training]\nlog_frequency=50\nlr=0.2\n",
        "e",
    )
    .unwrap();
    assert_ne!(d.hash(), e.hash());
}

#[test]
fn layout_and_number_form_do_not_change_the_hash() {
    let a = ExperimentConfig::parse(
        "[experiment]\nname = \"x\"\n[training]\nlr = 1.0\nsizes = [1, 2]\n",
        "a",
    )
    .unwrap();
    let b = ExperimentConfig::parse(
        "# comment\ntraining = { sizes = [1,2], lr = 1 }\n[experiment]\n'name'=\"x\"\n",
        "b",
    )
    .unwrap();
    assert_eq!(a.hash(), b.hash());
    assert!(a.experiment_id().starts_with("x-"));
    assert_eq!(a.experiment_id().len(), "x-".len() + 12);
}
