//! Classification evaluation from probabilities: metrics, report and images.
#![cfg(feature = "burn")]

use exptrack_eval::{ClassificationEvaluation, ModelSpec, TestSet};

#[test]
fn metrics_report_and_images_from_probabilities() {
    // 4 items, 2 classes; item 1 is wrong.
    let probs = vec![0.9, 0.1, 0.7, 0.3, 0.2, 0.8, 0.4, 0.6];
    let labels = [0, 1, 1, 1];
    let e = ClassificationEvaluation::from_probabilities("test", probs, 2, &labels).unwrap();
    assert_eq!(e.predictions, vec![0, 0, 1, 1]);
    assert!((e.accuracy() - 0.75).abs() < 1e-12);
    let nll = -(0.9f64.ln() + 0.3f64.ln() + 0.8f64.ln() + 0.6f64.ln()) / 4.0;
    assert!((e.report.loss - nll).abs() < 1e-12);
    let keys: Vec<String> = e.scalars("ensemble").into_iter().map(|(k, _)| k).collect();
    assert!(
        keys.contains(&"ensemble/test/accuracy".to_owned()),
        "{keys:?}"
    );
    assert!(keys.contains(&"ensemble/test/ece".to_owned()), "{keys:?}");
    let spec = ModelSpec::classifier("x", serde_json::json!({}), vec![2], 2)
        .class_names(vec!["cat".into(), "dog".into()]);
    let r = e.report_json(&spec);
    assert_eq!(r["dog"]["support"], 3);
    assert!(r["macro avg"]["f1-score"].as_f64().is_some());
    assert!(r["weighted avg"]["precision"].as_f64().is_some());
    assert_eq!(r["confusion_matrix"]["matrix"][1][0], 1);
    let data = TestSet::new(vec![0.0; 8], labels.to_vec(), 2).unwrap();
    assert_eq!(e.misclassified(&data.labels), vec![1]);
    let tmp = tempfile::tempdir().unwrap();
    let files = e.write_artifacts(tmp.path(), &data, &spec, "t").unwrap();
    assert_eq!(files.len(), 3);
    for f in &files[1..] {
        assert!(std::fs::read(f).unwrap().starts_with(b"\x89PNG"));
    }
    assert!(ClassificationEvaluation::from_probabilities("t", vec![0.5], 2, &[0]).is_err());
}
