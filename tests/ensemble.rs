//! Section 4: the ensemble of the best k checkpoints of a quickstart-sized run, checked against an
//! independent computation from the members' saved weights (burn's own record loading, tensor
//! softmax, ECE by hand).
#![cfg(feature = "trainer")]

use exptrack::quickstart::QuickstartArgs;
use exptrack_checkpoint::burn_support::MODEL_FILE;
use exptrack_checkpoint::{CheckpointConfig, Mode, ModelCheckpointer};
use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
use exptrack_eval::{EnsembleOptions, TestSet, evaluate_ensemble, mlp_member, quickstart_spec};
use exptrack_trainer::burn::tensor::activation::softmax;
use exptrack_trainer::burn::tensor::{FloatDType, Tensor, TensorData};
use exptrack_trainer::data::{BatchContext, BatchSource};
use exptrack_trainer::device::parse_device;
use exptrack_trainer::quickstart::{self, CLASSES, FEATURES, Mlp};

const HIDDEN: usize = 64;
const SEED: u64 = 42;
const TRAIN: usize = 3000;
const VALID: usize = 1000;

fn config() -> String {
    quickstart::DEFAULT_CONFIG
        .replace("num_epochs = 8", "num_epochs = 5")
        .replace("max_checkpoints = 2", "max_checkpoints = 10")
        .replace(
            "checkpoint_save_frequency = 200",
            "checkpoint_save_frequency = 0",
        )
        .replace("patience = 3", "patience = 10")
        .replace("train_items = 8000", &format!("train_items = {TRAIN}"))
        .replace("valid_items = 2000", &format!("valid_items = {VALID}"))
        .replace("hidden = 128", &format!("hidden = {HIDDEN}"))
}

/// ECE over 15 equal-width bins `(i/15, (i+1)/15]`, written out again here.
fn ece(probs: &[Vec<f64>], labels: &[usize]) -> f64 {
    let bins = 15usize;
    let mut n = vec![0.0f64; bins];
    let mut conf = vec![0.0f64; bins];
    let mut hit = vec![0.0f64; bins];
    for (p, &y) in probs.iter().zip(labels) {
        let (best, c) = p
            .iter()
            .enumerate()
            .fold((0, -1.0), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
        let mut b = (c * bins as f64).ceil() as usize;
        b = b.saturating_sub(1).min(bins - 1);
        n[b] += 1.0;
        conf[b] += c;
        hit[b] += f64::from(u8::from(best == y));
    }
    let total = labels.len() as f64;
    (0..bins)
        .filter(|&b| n[b] > 0.0)
        .map(|b| (hit[b] / n[b] - conf[b] / n[b]).abs() * n[b] / total)
        .sum()
}

#[test]
fn ensemble_of_best_checkpoints_matches_an_independent_computation() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("quickstart.toml");
    std::fs::write(&cfg_path, config()).unwrap();
    let runs = tmp.path().join("runs");
    let outcome = exptrack::quickstart::run(QuickstartArgs {
        config: Some(cfg_path.clone()),
        runs_dir: Some(runs.clone()),
        quiet: true,
        ..QuickstartArgs::default()
    })
    .expect("quickstart trains");
    assert!(!outcome.result.interrupted);

    // The validation split, regenerated as training made it, as plain floats.
    let (_, valid) = quickstart::generate_dataset(TRAIN, VALID, SEED).unwrap();
    let device = parse_device("cpu").unwrap();
    let ctx = BatchContext {
        device: device.clone(),
        float_dtype: FloatDType::F32,
    };
    let all: Vec<usize> = (0..valid.len()).collect();
    let inputs: Vec<f32> = valid
        .batch(&all, &ctx)
        .unwrap()
        .inputs
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let labels: Vec<usize> = valid.labels().iter().map(|&l| l as usize).collect();
    let data = TestSet::new(inputs.clone(), labels.clone(), FEATURES).unwrap();

    let experiment_id = outcome
        .checkpoint_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let ckpt_config = CheckpointConfig {
        dir: outcome.checkpoint_dir.parent().unwrap().to_path_buf(),
        ..CheckpointConfig::default()
    };
    let checkpointer = ModelCheckpointer::open_read_only(&experiment_id, ckpt_config).unwrap();
    let listed = checkpointer.list();
    assert!(listed.len() >= 4, "only {} checkpoints", listed.len());

    let spec = quickstart_spec(FEATURES, HIDDEN, CLASSES);
    let options = EnsembleOptions::new(3, "valid/accuracy", Mode::Max);
    let ensemble = evaluate_ensemble(
        &checkpointer,
        &options,
        "valid",
        &labels,
        CLASSES,
        mlp_member(&spec, &data, &device),
    )
    .expect("ensemble");

    // Independent choice of members: the 3 largest valid/accuracy, later step first on ties.
    let mut ranked: Vec<(f64, u64)> = listed
        .iter()
        .map(|c| (c.metrics["valid/accuracy"], c.step))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    let expected: Vec<u64> = ranked.iter().take(3).map(|r| r.1).collect();
    assert_eq!(ensemble.member_steps(), expected);

    // Independent probabilities: burn's record loading into a fresh Mlp, tensor softmax.
    let x = Tensor::<2>::from_data(TensorData::new(inputs, [labels.len(), FEATURES]), &device);
    let mut mean = vec![vec![0.0f64; CLASSES]; labels.len()];
    let mut member_acc = Vec::new();
    for step in &expected {
        let mut loaded = checkpointer.load(*step).unwrap();
        assert!(loaded.file(MODEL_FILE).is_some());
        let model = loaded
            .load_model(Mlp::new(FEATURES, HIDDEN, CLASSES, &device))
            .unwrap();
        let p: Vec<f32> = softmax(model.forward(x.clone()), 1)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let mut correct = 0usize;
        for (i, row) in p.chunks_exact(CLASSES).enumerate() {
            let arg = row
                .iter()
                .enumerate()
                .fold((0, -1.0f32), |a, (c, &v)| if v > a.1 { (c, v) } else { a })
                .0;
            correct += usize::from(arg == labels[i]);
            for (m, &v) in mean[i].iter_mut().zip(row) {
                *m += f64::from(v) / expected.len() as f64;
            }
        }
        member_acc.push(correct as f64 / labels.len() as f64);
    }
    let correct = mean
        .iter()
        .zip(&labels)
        .filter(|(p, y)| {
            let arg = p
                .iter()
                .enumerate()
                .fold((0, -1.0), |a, (c, &v)| if v > a.1 { (c, v) } else { a })
                .0;
            arg == **y
        })
        .count();
    let accuracy = correct as f64 / labels.len() as f64;
    let ece = ece(&mean, &labels);
    let n = labels.len() as f64;
    // f32 tensor softmax vs the library's f64 softmax of the logits: an argmax can flip only on
    // a near tie, so allow one item.
    assert!(
        (ensemble.evaluation.accuracy() - accuracy).abs() <= 1.0 / n + 1e-12,
        "ensemble accuracy {} vs independent {accuracy}",
        ensemble.evaluation.accuracy()
    );
    assert!(
        (ensemble.evaluation.ece() - ece).abs() < 2e-3,
        "ensemble ECE {} vs independent {ece}",
        ensemble.evaluation.ece()
    );
    assert!(accuracy > 0.5, "the ensemble learned something: {accuracy}");
    eprintln!(
        "members {expected:?}: accuracies {member_acc:?}; ensemble accuracy {accuracy:.4}, ECE {ece:.4}"
    );

    // Logged under ensemble/valid/... to a run.
    let tracker = ExperimentTracker::builder(ExperimentConfig::named("ensemble-log"))
        .runs_dir(tmp.path().join("eval-runs"))
        .collect_system_info(false)
        .handle_signals(false)
        .build()
        .unwrap();
    ensemble.log(&tracker, expected[0]).unwrap();
    let run_dir = tracker.run_dir().to_path_buf();
    tracker.finish(RunStatus::Completed).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).unwrap()).unwrap();
    let text = summary.to_string();
    for key in [
        "ensemble/valid/accuracy",
        "ensemble/valid/ece",
        "ensemble/valid/f1_macro",
        "ensemble/valid/members",
    ] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
}
