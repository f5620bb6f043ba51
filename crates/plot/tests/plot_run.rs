//! End-to-end: a run written by the real tracker is plotted; PNGs are decoded and SVGs parsed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
use exptrack_plot::{ConfusionMatrix, PlotOptions, plot_run, plot_run_with};

fn tracker(root: &Path) -> ExperimentTracker {
    ExperimentTracker::builder(ExperimentConfig::named("plot-test"))
        .runs_dir(root.join("runs"))
        .collect_system_info(false)
        .handle_signals(false)
        .build()
        .unwrap()
}

/// A run with train/valid loss, valid accuracy, lr, an unrelated metric and a confusion matrix.
fn sample_run(root: &Path) -> PathBuf {
    let t = tracker(root);
    for step in 1..=100u64 {
        let x = step as f64;
        t.log_metrics(
            step,
            &[
                ("train/loss", 2.0 / x.sqrt()),
                ("train/lr", 0.01 * (1.0 - x / 120.0)),
                ("train/grad_norm", 3.0),
            ],
        )
        .unwrap();
        if step % 10 == 0 {
            t.log_metrics(
                step,
                &[
                    ("valid/loss", 2.2 / x.sqrt()),
                    ("valid/accuracy", 1.0 - 0.5 / x.sqrt()),
                ],
            )
            .unwrap();
        }
    }
    // A NaN must not break the chart.
    t.log_metric(101, "train/loss", f64::NAN).unwrap();
    let m = ConfusionMatrix {
        labels: vec!["cat".into(), "dog".into(), "bird".into()],
        counts: vec![
            vec![50.0, 3.0, 1.0],
            vec![4.0, 40.0, 6.0],
            vec![0.0, 2.0, 44.0],
        ],
    };
    t.log_text(100, "confusion_matrix", &m.to_json().to_string())
        .unwrap();
    let dir = t.run_dir().to_path_buf();
    t.finish(RunStatus::Completed).unwrap();
    dir
}

fn decode_png(path: &Path) -> (u32, u32, Vec<u8>, png::ColorType) {
    let file = std::fs::File::open(path).unwrap();
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf, info.color_type)
}

fn distinct_colours(rgb: &[u8]) -> usize {
    rgb.chunks_exact(3)
        .map(|p| (p[0], p[1], p[2]))
        .collect::<HashSet<_>>()
        .len()
}

fn count(svg: &str, needle: &str) -> usize {
    svg.matches(needle).count()
}

/// Data lines are the only `<polyline>`s drawn with a stroke width of 2.
fn series_lines(svg: &str) -> usize {
    svg.split("<polyline")
        .skip(1)
        .filter(|el| {
            let el = &el[..el.find("/>").unwrap_or(el.len())];
            el.contains("stroke-width=\"2\"")
        })
        .count()
}

#[test]
fn plots_curves_and_confusion_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run(tmp.path());
    let out = tmp.path().join("plots");
    let written = plot_run(&run, &out).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "accuracy.png",
            "accuracy.svg",
            "confusion_matrix.png",
            "confusion_matrix.svg",
            "loss.png",
            "loss.svg",
            "lr.png",
            "lr.svg"
        ]
    );
    for p in &written {
        assert!(p.starts_with(&out), "{p:?}");
        assert!(p.is_file());
    }

    for (name, w, h) in [
        ("loss.png", 960, 600),
        ("accuracy.png", 960, 600),
        ("lr.png", 960, 600),
        ("confusion_matrix.png", 600, 600),
    ] {
        let (pw, ph, rgb, colour) = decode_png(&out.join(name));
        assert_eq!((pw, ph), (w, h), "{name}");
        assert_eq!(colour, png::ColorType::Rgb);
        // Not blank: a white background plus axes, text (anti-aliased) and coloured series.
        let n = distinct_colours(&rgb);
        assert!(n > 20, "{name}: only {n} distinct colours");
        let non_white = rgb
            .chunks_exact(3)
            .filter(|p| p != &[255, 255, 255])
            .count();
        assert!(
            non_white > 2000,
            "{name}: only {non_white} non-white pixels"
        );
    }
    // Series colours are present in the loss chart: train blue, valid orange.
    let (_, _, rgb, _) = decode_png(&out.join("loss.png"));
    let colours: HashSet<_> = rgb.chunks_exact(3).map(|p| (p[0], p[1], p[2])).collect();
    assert!(colours.contains(&(31, 119, 180)), "train colour missing");
    assert!(colours.contains(&(255, 127, 14)), "valid colour missing");

    let svg = |n: &str| std::fs::read_to_string(out.join(n)).unwrap();
    let loss = svg("loss.svg");
    assert!(loss.starts_with("<svg"));
    assert_eq!(series_lines(&loss), 2, "train/loss + valid/loss");
    assert!(loss.contains("train/loss") && loss.contains("valid/loss"));
    // valid/loss has 10 points, drawn with markers; train/loss (100 points) has none.
    assert_eq!(count(&loss, "<circle"), 10);
    assert_eq!(series_lines(&svg("accuracy.svg")), 1);
    assert_eq!(series_lines(&svg("lr.svg")), 1);
    assert!(!loss.contains("grad_norm"));

    let cm = svg("confusion_matrix.svg");
    // 9 cells, each count printed, class labels on the axes.
    for label in [
        "cat",
        "dog",
        "bird",
        "\n50\n</text>",
        "\n44\n</text>",
        "\n6\n</text>",
    ] {
        assert!(
            cm.contains(label),
            "{label:?} missing from confusion matrix"
        );
    }
    assert!(count(&cm, "<rect") >= 9);
}

#[test]
fn confusion_matrix_from_results_extra() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tracker(tmp.path());
    t.set_result(
        "valid/confusion_matrix",
        serde_json::json!([[7, 1], [2, 9]]),
    )
    .unwrap();
    t.set_result("tiny/confusion_matrix", serde_json::json!([[5]]))
        .unwrap();
    let dir = t.run_dir().to_path_buf();
    t.finish(RunStatus::Completed).unwrap();
    let out = tmp.path().join("p");
    let written = plot_run_with(&dir, &out, &PlotOptions::default().formats(false, true)).unwrap();
    assert_eq!(
        written,
        vec![
            out.join("tiny_confusion_matrix.svg"),
            out.join("valid_confusion_matrix.svg")
        ]
    );
    let cm = std::fs::read_to_string(&written[1]).unwrap();
    assert!(cm.contains("\n9\n</text>") && cm.contains("\n7\n</text>"));
    // Exactly one cell per class pair (plus the background rectangle).
    assert_eq!(count(&cm, "<rect"), 1 + 4);
    let tiny = std::fs::read_to_string(&written[0]).unwrap();
    assert!(tiny.contains("\n5\n</text>"));
    assert_eq!(count(&tiny, "<rect"), 1 + 1);
}

#[test]
fn empty_run_writes_nothing_and_bad_options_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tracker(tmp.path());
    t.log_metric(1, "train/grad_norm", 1.0).unwrap();
    let dir = t.run_dir().to_path_buf();
    t.finish(RunStatus::Completed).unwrap();
    let out = tmp.path().join("p");
    assert!(plot_run(&dir, &out).unwrap().is_empty());
    assert!(!out.exists());
    assert!(matches!(
        plot_run_with(&dir, &out, &PlotOptions::default().size(0, 10)),
        Err(exptrack_plot::Error::Options(_))
    ));
    assert!(matches!(
        plot_run(tmp.path().join("nope"), &out),
        Err(exptrack_plot::Error::Run { .. })
    ));
}

#[test]
fn single_point_and_constant_series_render() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tracker(tmp.path());
    t.log_metrics(3, &[("train/loss", 0.5), ("valid/accuracy", 1.0)])
        .unwrap();
    let dir = t.run_dir().to_path_buf();
    t.finish(RunStatus::Completed).unwrap();
    let out = tmp.path().join("p");
    let written = plot_run(&dir, &out).unwrap();
    assert_eq!(written.len(), 4);
    let loss = std::fs::read_to_string(out.join("loss.svg")).unwrap();
    assert_eq!(count(&loss, "<circle"), 1);
    let (w, h, rgb, _) = decode_png(&out.join("accuracy.png"));
    assert_eq!((w, h), (960, 600));
    assert!(distinct_colours(&rgb) > 10);
}
