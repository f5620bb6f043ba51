//! Tests of the `[training]` section (`config.rs`), compiled only as `config.rs`'s
//! `#[cfg(test)] mod tests`.

use super::*;

fn table(s: &str) -> toml::Table {
    toml::from_str(s).unwrap()
}

#[test]
fn parses_every_field_from_toml() {
    let t = table(
        r#"
        num_epochs = 3
        batch_size = 16
        learning_rate = 0.01
        weight_decay = 0.001
        optimizer = "sgd"
        momentum = 0.9
        nesterov = true
        scheduler = "plateau"
        warmup_steps = 5
        gradient_clipping = "norm"
        max_grad_norm = 0.5
        gradient_accumulation_steps = 4
        mixed_precision = "bf16"
        log_frequency = 7
        eval_frequency = 11
        checkpoint_save_frequency = 13
        seed = 9
        device = "cpu"
        [scheduler_options]
        factor = 0.5
        patience = 2
        cooldown = 1
        [early_stopping]
        monitor = "valid/accuracy"
        mode = "max"
        patience = 4
        min_delta = 0.01
        check_finite = false
        restore_best_weights = false
        "#,
    );
    let c = TrainingConfig::from_table(&t).unwrap();
    assert_eq!(c.num_epochs, 3);
    assert_eq!(c.optimizer, OptimizerKind::Sgd);
    assert!(c.nesterov);
    assert_eq!(c.scheduler, SchedulerKind::Plateau);
    assert_eq!(c.scheduler_options.factor, 0.5);
    assert_eq!(c.scheduler_options.patience, 2);
    assert_eq!(c.gradient_clipping, ClippingKind::Norm);
    assert_eq!(c.gradient_accumulation_steps, 4);
    assert_eq!(c.mixed_precision, MixedPrecision::Bf16);
    assert_eq!(c.checkpoint_save_frequency, 13);
    let es = c.early_stopping.unwrap();
    assert_eq!(es.mode, Mode::Max);
    assert_eq!(es.patience, 4);
    assert!(!es.restore_best_weights);
}

#[test]
fn unknown_keys_are_named() {
    let err = TrainingConfig::from_table(&table("learnig_rate = 0.1")).unwrap_err();
    assert!(err.to_string().contains("learnig_rate"), "{err}");
    let err = TrainingConfig::from_table(&table("[early_stopping]\npatiense = 1")).unwrap_err();
    assert!(err.to_string().contains("patiense"), "{err}");
}

#[test]
fn bad_values_are_refused() {
    for (src, needle) in [
        ("batch_size = 0", "batch_size"),
        ("learning_rate = -1.0", "learning_rate"),
        (
            "gradient_accumulation_steps = 0",
            "gradient_accumulation_steps",
        ),
        ("device = \"tpu\"", "tpu"),
        ("mixed_precision = \"fp8\"", "fp8"),
        (
            "scheduler = \"onecycle\"\n[scheduler_options]\npct_start = 1.5",
            "pct_start",
        ),
    ] {
        let err = TrainingConfig::from_table(&table(src)).unwrap_err();
        assert!(err.to_string().contains(needle), "{src}: {err}");
    }
}

#[test]
fn every_out_of_range_number_names_key_and_range() {
    for (src, key) in [
        ("num_epochs = 0", "num_epochs"),
        ("batch_size = 0", "batch_size"),
        ("batch_size = 100000000000", "batch_size"),
        ("learning_rate = inf", "learning_rate"),
        ("learning_rate = nan", "learning_rate"),
        ("weight_decay = -0.1", "weight_decay"),
        ("momentum = 2.0", "momentum"),
        ("beta1 = 1.0", "beta1"),
        ("beta2 = -0.5", "beta2"),
        ("epsilon = 0.0", "epsilon"),
        ("loss_scale_init = inf", "loss_scale_init"),
        ("log_frequency = 0", "log_frequency"),
        ("warmup_steps = 100000000000", "warmup_steps"),
        ("max_grad_norm = inf", "max_grad_norm"),
        (
            "[scheduler_options]\ngamma = inf",
            "scheduler_options.gamma",
        ),
        (
            "[scheduler_options]\nmin_lr = -1.0",
            "scheduler_options.min_lr",
        ),
        (
            "[scheduler_options]\nmax_lr = nan",
            "scheduler_options.max_lr",
        ),
        (
            "[early_stopping]\nmin_delta = inf",
            "early_stopping.min_delta",
        ),
    ] {
        let err = TrainingConfig::from_table(&table(src))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{src}: {err}");
        assert!(err.contains("allowed"), "{src}: {err}");
    }
}

#[test]
fn errors_in_an_experiment_file_name_file_line_and_key() {
    let text = "[experiment]\nname = \"x\"\n\n[training]\nbatch_size = 8\nlearning_rate = inf\n";
    let exp = exptrack_core::ExperimentConfig::parse(text, "exp.toml").unwrap();
    let err = TrainingConfig::from_experiment(&exp)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exp.toml:6:1: training.learning_rate = inf is out of range: allowed"),
        "{err}"
    );
    // Wrong types and unknown keys name the line too.
    let text = "[experiment]\nname = \"x\"\n[training]\nbatch_size = -4\n";
    let exp = exptrack_core::ExperimentConfig::parse(text, "exp.toml").unwrap();
    let err = TrainingConfig::from_experiment(&exp)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exp.toml:4:"), "{err}");
    assert!(err.contains("training.batch_size"), "{err}");
    let text = "[experiment]\nname = \"x\"\n[training]\nlearnig_rate = 1.0\n";
    let exp = exptrack_core::ExperimentConfig::parse(text, "exp.toml").unwrap();
    let err = TrainingConfig::from_experiment(&exp)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exp.toml:4:1") && err.contains("learnig_rate"),
        "{err}"
    );
    // Defaults are in range.
    TrainingConfig::default().validate().unwrap();
}

#[test]
fn round_trips_through_a_table() {
    let c = TrainingConfig {
        num_epochs: 2,
        mixed_precision: MixedPrecision::F16,
        early_stopping: Some(EarlyStoppingConfig::default()),
        ..TrainingConfig::default()
    };
    let back = TrainingConfig::from_table(&c.to_table().unwrap()).unwrap();
    assert_eq!(back, c);
}
