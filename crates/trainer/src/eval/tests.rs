//! Unit tests of the evaluation metrics. The parent declares this file as `#[cfg(test)] mod tests;`, so
//! none of it is compiled into the library.

use super::*;

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
}

#[test]
fn classification_matches_hand_computation() {
    // targets 0 0 0 1 1 2 ; preds 0 0 1 1 2 2
    // class0: tp2 fp0 fn1 -> p 1, r 2/3, f1 0.8; support 3
    // class1: tp1 fp1 fn1 -> p .5, r .5, f1 .5; support 2
    // class2: tp1 fp1 fn0 -> p .5, r 1, f1 2/3; support 1
    let m = classification_metrics(&[0, 0, 1, 1, 2, 2], &[0, 0, 0, 1, 1, 2], 3).unwrap();
    close(m.accuracy, 4.0 / 6.0);
    close(m.precision_macro, (1.0 + 0.5 + 0.5) / 3.0);
    close(m.recall_macro, (2.0 / 3.0 + 0.5 + 1.0) / 3.0);
    close(m.f1_macro, (0.8 + 0.5 + 2.0 / 3.0) / 3.0);
    close(m.precision_weighted, (3.0 * 1.0 + 2.0 * 0.5 + 0.5) / 6.0);
    close(m.recall_weighted, (3.0 * 2.0 / 3.0 + 2.0 * 0.5 + 1.0) / 6.0);
    close(m.f1_weighted, (3.0 * 0.8 + 2.0 * 0.5 + 2.0 / 3.0) / 6.0);
    assert_eq!(
        m.confusion,
        vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
    );
    let r = m.report_json(Some(&["a".into(), "b".into(), "c".into()]));
    close(r["a"]["f1-score"].as_f64().unwrap(), 0.8);
    assert_eq!(r["c"]["support"], 1);
    close(r["accuracy"].as_f64().unwrap(), 4.0 / 6.0);
    assert_eq!(r["macro avg"]["support"], 6);
}

#[test]
fn absent_classes_are_left_out_and_zero_division_is_zero() {
    // class 2 never occurs nor is predicted: excluded from the macro average.
    // class 1 is never predicted: precision 0.
    let m = classification_metrics(&[0, 0], &[0, 1], 3).unwrap();
    assert_eq!(m.per_class.len(), 2);
    close(m.precision_macro, (0.5 + 0.0) / 2.0);
    close(m.recall_macro, (1.0 + 0.0) / 2.0);
    assert!(classification_metrics(&[0], &[3], 3).is_err());
}

#[test]
fn regression_matches_hand_computation() {
    // errors: 0.5, -0.5, 0, 1 ; targets mean 2.5, ss_tot = 2.25+.25+.25+2.25 = 5
    let m = regression_metrics(&[1.5, 1.5, 3.0, 5.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    close(m.mse, (0.25 + 0.25 + 0.0 + 1.0) / 4.0);
    close(m.mae, 2.0 / 4.0);
    close(m.rmse, (1.5f64 / 4.0).sqrt());
    close(m.r2, 1.0 - 1.5 / 5.0);
    close(regression_metrics(&[2.0], &[2.0]).unwrap().r2, 1.0);
}

#[test]
fn uncertainty_matches_hand_computation() {
    // 4 items, 2 classes, 2 bins: (0, .5], (.5, 1]
    // item: probs        conf  pred target correct
    // 0:   [.9 .1]       .9    0    0      1
    // 1:   [.8 .2]       .8    0    1      0
    // 2:   [.4 .6]       .6    1    1      1
    // 3:   [.5 .5]       .5    0    0      1   -> bin 0 (conf exactly .5)
    let p = [0.9, 0.1, 0.8, 0.2, 0.4, 0.6, 0.5, 0.5];
    let m = uncertainty_metrics(&p, 2, &[0, 1, 1, 0], 2).unwrap();
    let h = |a: f64, b: f64| -(a * a.ln() + b * b.ln());
    close(
        m.mean_entropy,
        (h(0.9, 0.1) + h(0.8, 0.2) + h(0.4, 0.6) + h(0.5, 0.5)) / 4.0,
    );
    close(m.mean_confidence, (0.9 + 0.8 + 0.6 + 0.5) / 4.0);
    // bin1: n=3, acc 2/3, conf 2.3/3 ; bin0: n=1, acc 1, conf .5
    let ece = (2.0 / 3.0 - 2.3 / 3.0f64).abs() * 3.0 / 4.0 + (1.0f64 - 0.5).abs() / 4.0;
    close(m.ece, ece);
}

#[test]
fn kfold_splits_like_sklearn_and_aggregates() {
    let folds = kfold_indices(10, 3, 0, false).unwrap();
    let sizes: Vec<usize> = folds.iter().map(|(_, v)| v.len()).collect();
    assert_eq!(sizes, vec![4, 3, 3]);
    assert_eq!(folds[1].1, vec![4, 5, 6]);
    assert_eq!(folds[1].0, vec![0, 1, 2, 3, 7, 8, 9]);
    let cv = cross_validate(10, 3, 1, |i, train, valid| {
        assert_eq!(train.len() + valid.len(), 10);
        Ok(vec![("acc".into(), [0.5, 0.7, 0.9][i])])
    })
    .unwrap();
    let (m, s) = cv.summary("acc").unwrap();
    close(m, 0.7);
    close(s, (0.08f64 / 3.0).sqrt());
    assert!(kfold_indices(3, 4, 0, false).is_err());
}
