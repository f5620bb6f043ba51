//! Drawing with plotters, generic over the bitmap and SVG backends.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::data::{ConfusionMatrix, Quantity, Series};
use crate::error::{Error, Result};

/// DejaVu Sans (Bitstream Vera license, see `assets/DejaVuSans-LICENSE.txt`), embedded so that
/// rendering works on machines without fontconfig or any installed font.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers the embedded font as `sans-serif` for the bitmap backend, once per process.
pub(crate) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok { Ok(()) } else { Err(Error::Font) }
}

/// Series colours (Tableau 10): train, validation, test, then the rest.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Series with at most this many points also get a marker per point.
const MARKER_MAX_POINTS: usize = 60;

fn draw_err<E: std::fmt::Debug>(chart: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Draw {
        chart: chart.to_owned(),
        message: format!("{e:?}"),
    }
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let d = if lo == 0.0 { 0.5 } else { lo.abs() * 0.1 };
        return (lo - d, hi + d);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// Draws one line chart (every series of a quantity) onto `root`.
pub(crate) fn line_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    quantity: Quantity,
    series: &[Series],
) -> Result<()> {
    let name = quantity.file_stem();
    let err = draw_err(name);
    root.fill(&WHITE).map_err(&err)?;
    let (mut x_lo, mut x_hi) = (u64::MAX, 0u64);
    let (mut y_lo, mut y_hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for s in series {
        for (x, y) in s.finite() {
            x_lo = x_lo.min(x);
            x_hi = x_hi.max(x);
            y_lo = y_lo.min(y);
            y_hi = y_hi.max(y);
        }
    }
    if x_lo > x_hi {
        (x_lo, x_hi) = (0, 1);
    }
    let (x_lo, x_hi) = if x_lo == x_hi {
        (x_lo as f64 - 0.5, x_hi as f64 + 0.5)
    } else {
        (x_lo as f64, x_hi as f64)
    };
    let (y_lo, y_hi) = padded(y_lo, y_hi);

    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
        .map_err(&err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(quantity.label())
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(210, 210, 210))
        .x_label_formatter(&|x| format_step(*x))
        .y_label_formatter(&|y| format_value(*y, y_lo, y_hi))
        .draw()
        .map_err(&err)?;

    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let style = ShapeStyle::from(&color).stroke_width(2);
        // One path per series: non-finite values are skipped, not drawn as gaps, so that the
        // series stays a single element.
        let pts: Vec<(f64, f64)> = s.finite().map(|(x, y)| (x as f64, y)).collect();
        let marker = pts.len() <= MARKER_MAX_POINTS;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), style))
            .map_err(&err)?
            .label(s.key.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 3), (x + 16, y + 3)], color.filled()));
        if marker {
            chart
                .draw_series(
                    pts.iter()
                        .map(|p| Circle::new(*p, 3, color.filled()))
                        .collect::<Vec<_>>(),
                )
                .map_err(&err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(if quantity == Quantity::Accuracy {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        })
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
}

fn format_step(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        String::new()
    }
}

/// Formats a y tick for an axis spanning `lo..hi`: one format for the whole axis, decimals
/// from the span, scientific notation for very small or very large magnitudes.
fn format_value(y: f64, lo: f64, hi: f64) -> String {
    let mag = lo.abs().max(hi.abs());
    if mag >= 1e5 || (mag > 0.0 && mag < 1e-3) {
        return if y == 0.0 {
            "0".to_owned()
        } else {
            format!("{y:.2e}")
        };
    }
    let span = (hi - lo).abs().max(f64::MIN_POSITIVE);
    let decimals = (2.0 - span.log10().floor()).clamp(0.0, 8.0) as usize;
    let s = format!("{y:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// Draws a confusion matrix heat map (colour = row-normalised rate, text = the count).
pub(crate) fn confusion_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    m: &ConfusionMatrix,
) -> Result<()> {
    let err = draw_err("confusion_matrix");
    root.fill(&WHITE).map_err(&err)?;
    let n = i32::try_from(m.len()).map_err(|_| Error::Draw {
        chart: "confusion_matrix".to_owned(),
        message: "too many classes".to_owned(),
    })?;
    let labels = &m.labels;
    // `0..n - 1` holds the n class indices; segmented, each gets one cell.
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
        .map_err(&err)?;
    // Show at most ~20 class labels per axis.
    let every = (n / 20 + 1).max(1);
    let label_of = |v: &SegmentValue<i32>, flip: bool| -> String {
        match v {
            SegmentValue::CenterOf(i) if *i >= 0 && *i < n && *i % every == 0 => {
                let i = if flip { n - 1 - *i } else { *i };
                usize::try_from(i)
                    .ok()
                    .and_then(|i| labels.get(i))
                    .cloned()
                    .unwrap_or_default()
            }
            _ => String::new(),
        }
    };
    let n_labels = usize::try_from(n).unwrap_or(0) + 1;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("predicted")
        .y_desc("true")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .x_labels(n_labels)
        .y_labels(n_labels)
        .x_label_formatter(&|v| label_of(v, false))
        .y_label_formatter(&|v| label_of(v, true))
        .draw()
        .map_err(&err)?;

    let show_numbers = n <= 30;
    let mut cells = Vec::new();
    let mut texts = Vec::new();
    for (r, row) in m.counts.iter().enumerate() {
        let total: f64 = row.iter().filter(|v| v.is_finite()).sum();
        let y = n - 1 - r as i32;
        for (c, v) in row.iter().enumerate() {
            let rate = if total > 0.0 && v.is_finite() {
                (v / total).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let color = heat(rate);
            let x = c as i32;
            cells.push(Rectangle::new(
                [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ],
                color.filled(),
            ));
            if show_numbers {
                let text_color: &'static RGBColor = if rate > 0.5 { &WHITE } else { &BLACK };
                let style = TextStyle::from(("sans-serif", 15).into_font())
                    .color(text_color)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                texts.push((format_count(*v), x, y, style));
            }
        }
    }
    chart.draw_series(cells).map_err(&err)?;
    // Cell centres, in pixels.
    let plot = chart.plotting_area();
    for (t, x, y, style) in texts {
        let (x0, y0) = plot.map_coordinate(&(SegmentValue::Exact(x), SegmentValue::Exact(y + 1)));
        let (x1, y1) = plot.map_coordinate(&(SegmentValue::Exact(x + 1), SegmentValue::Exact(y)));
        let centre = ((x0 + x1) / 2, (y0 + y1) / 2);
        root.draw(&Text::new(t, centre, style)).map_err(&err)?;
    }
    root.present().map_err(&err)?;
    Ok(())
}

fn format_count(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// White → dark blue.
fn heat(rate: f64) -> RGBColor {
    let lerp = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * rate).round() as u8;
    RGBColor(lerp(247, 8), lerp(251, 48), lerp(255, 107))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_labels() {
        assert_eq!(format_value(0.5, 0.0, 2.5), "0.5");
        assert_eq!(format_value(0.0, 0.0, 2.5), "0");
        assert_eq!(format_value(2.25, 0.0, 2.5), "2.25");
        assert_eq!(format_value(0.0018, 0.0, 0.002), "0.0018");
        assert_eq!(format_value(0.0008, 0.0, 0.002), "0.0008");
        assert_eq!(format_value(1e-5, 0.0, 2e-5), "1.00e-5");
        assert_eq!(format_value(150000.0, 0.0, 2e5), "1.50e5");
        assert_eq!(format_count(3.0), "3");
        assert_eq!(format_count(0.25), "0.25");
    }

    #[test]
    fn padding_never_collapses() {
        let (a, b) = padded(1.0, 1.0);
        assert!(a < 1.0 && b > 1.0);
        let (a, b) = padded(0.0, 0.0);
        assert!(a < 0.0 && b > 0.0);
        assert_eq!(padded(f64::INFINITY, f64::NEG_INFINITY), (0.0, 1.0));
    }
}
