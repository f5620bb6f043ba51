//! `ExperimentConfig::parse`: the TOML config. Property: a config that parses serializes back
//! (`to_toml_string`) to a document that parses to the same config, hash and experiment id.
#![no_main]

use exptrack_core::ExperimentConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = ExperimentConfig::parse(text, "fuzz.toml") else {
        return;
    };
    let written = cfg.to_toml_string();
    let again = match ExperimentConfig::parse(&written, "written.toml") {
        Ok(c) => c,
        Err(e) => panic!("{text:?} parsed, but its serialization {written:?} does not: {e}"),
    };
    assert_eq!(
        cfg.hash(),
        again.hash(),
        "hash changed: {text:?} -> {written:?}"
    );
    assert_eq!(cfg.experiment_id(), again.experiment_id());
    assert_eq!(cfg.experiment, again.experiment);
    assert_eq!(
        written,
        again.to_toml_string(),
        "serialization is not stable"
    );
});
