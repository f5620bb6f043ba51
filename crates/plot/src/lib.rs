//! # exptrack-plot
//!
//! Training curves and confusion matrices of an exptrack run, as PNG and SVG, drawn with
//! [plotters](https://docs.rs/plotters).
//!
//! [`plot_run`] reads a run from the local store (`runs/<experiment_id>/<run_id>/`, through
//! [`exptrack_core::store::RunReader`]) and writes, for every quantity the run logged:
//!
//! | file | contents |
//! |---|---|
//! | `loss.png`, `loss.svg` | every `*loss` metric (`train/loss`, `valid/loss`, `val_loss`, ...) on one chart |
//! | `accuracy.png`, `accuracy.svg` | every `*accuracy` / `*_acc` metric |
//! | `lr.png`, `lr.svg` | the learning rate (`lr`, `learning_rate`, `*_lr`) |
//! | `confusion_matrix.png`, `.svg` | the confusion matrix, when the run recorded one |
//!
//! Metrics of the run's companion runs ([`companion_run_dirs`]: an evaluator that logs into the
//! training run from another process keeps its own log under `<run_dir>/companions/`) are drawn
//! with the run's own.
//!
//! Train, validation and test series of a quantity share one chart (x = step), one line each; see
//! [`Quantity::of_key`] for how keys are grouped. Non-finite values are left out of the lines.
//!
//! ## Confusion matrix convention
//! A run records a confusion matrix as JSON, `counts[true][predicted]`, either as a plain square
//! 2-D array (`[[50, 2], [3, 45]]`) or as `{"matrix": [[...]], "labels": ["cat", "dog"]}`, in
//! either place:
//! - a Text event (`tracker.log_text(step, "confusion_matrix", &json)`): the latest step wins;
//! - `results.json` `extra` (`tracker.set_result("confusion_matrix", json)`).
//!
//! Tags/keys ending in `/confusion_matrix` (e.g. `valid/confusion_matrix`) are plotted too, one
//! image each, named after the tag with `/` replaced by `_`. [`ConfusionMatrix::to_json`]
//! produces the object form.
//!
//! The PNG renderer uses an embedded DejaVu Sans font (Bitstream Vera license, in
//! `assets/DejaVuSans-LICENSE.txt`), so it needs no system fonts or fontconfig.
//!
//! # Example
//! ```
//! use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! let tracker = ExperimentTracker::builder(ExperimentConfig::named("demo"))
//!     .runs_dir(tmp.path().join("runs"))
//!     .collect_system_info(false)
//!     .handle_signals(false)
//!     .build()?;
//! for step in 1..=20u64 {
//!     let loss = 1.0 / step as f64;
//!     tracker.log_metrics(step, &[("train/loss", loss), ("valid/loss", loss * 1.2)])?;
//! }
//! let run_dir = tracker.run_dir().to_path_buf();
//! tracker.finish(RunStatus::Completed)?;
//!
//! let written = exptrack_plot::plot_run(&run_dir, tmp.path().join("plots"))?;
//! assert!(written.iter().any(|p| p.ends_with("loss.png")));
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//! None: PNG (bitmap backend + embedded font) and SVG are always built.

#![warn(missing_debug_implementations, unreachable_pub)]

mod data;
mod error;
mod images;
mod render;

use std::path::{Path, PathBuf};

use exptrack_core::store::{RunReader, write_atomic};
use plotters::prelude::{BitMapBackend, IntoDrawingArea, SVGBackend};

pub use data::{
    CONFUSION_MATRIX_TAG, ConfusionMatrix, Quantity, Series, collect_confusion, collect_series,
    is_confusion_tag,
};
pub use error::{Error, Result};
pub use images::{GridTile, confusion_matrix_png, example_grid_png};

/// Output formats and image size.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlotOptions {
    /// Image width in pixels (SVG user units); default 960.
    pub width: u32,
    /// Image height in pixels; default 600.
    pub height: u32,
    /// Write PNG files (default true).
    pub png: bool,
    /// Write SVG files (default true).
    pub svg: bool,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            width: 960,
            height: 600,
            png: true,
            svg: true,
        }
    }
}

impl PlotOptions {
    /// Sets the image size.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.width = width;
        self.height = height;
        self
    }

    /// Chooses the formats.
    pub fn formats(mut self, png: bool, svg: bool) -> Self {
        self.png = png;
        self.svg = svg;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.width < 64 || self.height < 64 || self.width > 16384 || self.height > 16384 {
            return Err(Error::Options(format!(
                "image size {}x{} is outside 64..=16384",
                self.width, self.height
            )));
        }
        if !self.png && !self.svg {
            return Err(Error::Options("no output format selected".to_owned()));
        }
        Ok(())
    }
}

/// Plots a stored run into `out_dir` (created if needed) with default options; returns the
/// files written (PNG and SVG per chart), or an empty list when the run logged nothing to plot.
pub fn plot_run(run_dir: impl AsRef<Path>, out_dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    plot_run_with(run_dir, out_dir, &PlotOptions::default())
}

/// [`plot_run`] with explicit options.
pub fn plot_run_with(
    run_dir: impl AsRef<Path>,
    out_dir: impl AsRef<Path>,
    options: &PlotOptions,
) -> Result<Vec<PathBuf>> {
    options.validate()?;
    let run_dir = run_dir.as_ref();
    let out_dir = out_dir.as_ref();
    let run_err = |source| Error::Run {
        run_dir: run_dir.to_path_buf(),
        source,
    };
    let reader = RunReader::open(run_dir).map_err(run_err)?;
    let meta = reader.metadata().map_err(run_err)?;
    let mut events: Vec<_> = reader
        .events()
        .map_err(run_err)?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    // Companion runs (an evaluator's own log beside the training run): their metrics are the
    // same run's curves.
    for dir in companion_run_dirs(run_dir) {
        match RunReader::open(&dir).and_then(|r| r.events()) {
            Ok(more) => events.extend(
                more.into_iter()
                    .map(|(_, e)| e)
                    .filter(|e| matches!(e, exptrack_core::Event::Metrics { .. })),
            ),
            Err(e) => tracing::warn!(dir = %dir.display(), "companion run skipped: {e}"),
        }
    }
    let results = reader.results().map_err(run_err)?;

    let series = collect_series(&events);
    let confusion = collect_confusion(&events, results.as_ref().map(|r| &r.extra));
    if series.is_empty() && confusion.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::Write {
        path: out_dir.to_path_buf(),
        source: exptrack_core::Error::Io {
            context: "creating plot directory",
            path: out_dir.to_path_buf(),
            source: e,
        },
    })?;
    let run_label = format!("{} / {}", meta.experiment_name, meta.run_id);

    let mut written = Vec::new();
    for (quantity, series) in &series {
        let title = format!("{} — {run_label}", quantity.label());
        render_both(
            out_dir,
            quantity.file_stem(),
            options,
            &mut written,
            |root| render::line_chart(root, &title, *quantity, series),
            |root| render::line_chart(root, &title, *quantity, series),
        )?;
    }
    for (tag, m) in &confusion {
        let stem = tag.replace('/', "_");
        let title = format!("{tag} — {run_label}");
        // A square image, as large as the configured size allows.
        let side = options.width.min(options.height);
        let opts = PlotOptions {
            width: side,
            height: side,
            ..options.clone()
        };
        render_both(
            out_dir,
            &stem,
            &opts,
            &mut written,
            |root| render::confusion_chart(root, &title, m),
            |root| render::confusion_chart(root, &title, m),
        )?;
    }
    Ok(written)
}

/// The directory under a run's directory where processes that log *into* that run from beside it
/// (an evaluator) keep their own local runs: `<run_dir>/companions/<experiment_id>/<run_id>/`.
pub const COMPANIONS_DIR: &str = "companions";

/// The companion runs of a run: every `<run_dir>/companions/*/*/` with an event log, sorted.
pub fn companion_run_dirs(run_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(experiments) = std::fs::read_dir(run_dir.join(COMPANIONS_DIR)) else {
        return out;
    };
    for exp in experiments.flatten() {
        let Ok(runs) = std::fs::read_dir(exp.path()) else {
            continue;
        };
        for run in runs.flatten() {
            let dir = run.path();
            if dir.join(exptrack_core::store::files::EVENTS).is_file() {
                out.push(dir);
            }
        }
    }
    out.sort();
    out
}

type BitmapArea<'a> = plotters::drawing::DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type SvgArea<'a> = plotters::drawing::DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Renders one chart to `<stem>.png` and/or `<stem>.svg`.
fn render_both(
    out_dir: &Path,
    stem: &str,
    options: &PlotOptions,
    written: &mut Vec<PathBuf>,
    draw_png: impl FnOnce(&BitmapArea<'_>) -> Result<()>,
    draw_svg: impl FnOnce(&SvgArea<'_>) -> Result<()>,
) -> Result<()> {
    let size = (options.width, options.height);
    // Both backends measure text with the font (the SVG one for layout only).
    render::ensure_font()?;
    if options.png {
        let path = out_dir.join(format!("{stem}.png"));
        let mut rgb = vec![0u8; options.width as usize * options.height as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
            draw_png(&root)?;
        }
        let bytes =
            encode_png(&rgb, options.width, options.height).map_err(|source| Error::Png {
                path: path.clone(),
                source,
            })?;
        write_file(&path, &bytes)?;
        written.push(path);
    }
    if options.svg {
        let path = out_dir.join(format!("{stem}.svg"));
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
            draw_svg(&root)?;
        }
        write_file(&path, svg.as_bytes())?;
        written.push(path);
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn encode_png(
    rgb: &[u8],
    width: u32,
    height: u32,
) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::with_capacity(rgb.len() / 8);
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::High);
        let mut w = enc.write_header()?;
        w.write_image_data(rgb)?;
        w.finish()?;
    }
    Ok(out)
}
