//! Single images for evaluation reports: a confusion matrix and a grid of example inputs, as
//! PNG bytes (for `confusion_matrix.png` and `misclassified_examples.png` of `exptrack eval`).

use std::path::PathBuf;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::data::ConfusionMatrix;
use crate::error::{Error, Result};
use crate::render;

/// One tile of an [`example_grid_png`]: an input drawn as a grey-scale image and a caption under
/// it (e.g. `true 3 / pred 5`).
#[derive(Debug, Clone, PartialEq)]
pub struct GridTile {
    /// Row-major values, `height * width` of them; scaled per tile from its minimum (black) to
    /// its maximum (white). Non-finite values are drawn red.
    pub pixels: Vec<f32>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Text under the tile.
    pub caption: String,
}

impl GridTile {
    /// A tile from a flat input vector: `shape` `[h, w]` (or `[c, h, w]`, the first channel) is
    /// used as is; any other shape is laid out as a near-square `ceil(sqrt(n))` wide image
    /// (padding is drawn as the tile's minimum).
    pub fn from_input(values: &[f32], shape: &[usize], caption: impl Into<String>) -> Self {
        let (height, width, take) = match shape {
            [h, w] if h * w == values.len() => (*h, *w, values.len()),
            [c, h, w] if c * h * w == values.len() && *c > 0 => (*h, *w, h * w),
            _ => {
                let n = values.len().max(1);
                let w = (n as f64).sqrt().ceil() as usize;
                (n.div_ceil(w), w, values.len())
            }
        };
        let mut pixels: Vec<f32> = values[..take].to_vec();
        let min = pixels
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f32::INFINITY, f32::min);
        pixels.resize(height * width, if min.is_finite() { min } else { 0.0 });
        GridTile {
            pixels,
            height,
            width,
            caption: caption.into(),
        }
    }
}

fn encode(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    crate::encode_png(rgb, width, height).map_err(|source| Error::Png {
        path: PathBuf::from("<memory>"),
        source,
    })
}

/// A confusion matrix heat map (the same drawing as [`plot_run`](crate::plot_run)'s) as PNG bytes,
/// `side` pixels square (clamped to 64..=4096).
pub fn confusion_matrix_png(m: &ConfusionMatrix, title: &str, side: u32) -> Result<Vec<u8>> {
    if m.is_empty() {
        return Err(Error::Options("an empty confusion matrix".to_owned()));
    }
    let side = side.clamp(64, 4096);
    render::ensure_font()?;
    let mut rgb = vec![0u8; side as usize * side as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (side, side)).into_drawing_area();
        render::confusion_chart(&root, title, m)?;
    }
    encode(&rgb, side, side)
}

/// A grid of input images with a caption under each (at most `columns` per row), titled, as PNG
/// bytes. At most 400 tiles are drawn.
pub fn example_grid_png(tiles: &[GridTile], title: &str, columns: usize) -> Result<Vec<u8>> {
    fn err<E: std::fmt::Debug>(e: E) -> Error {
        Error::Draw {
            chart: "examples".to_owned(),
            message: format!("{e:?}"),
        }
    }
    let tiles = &tiles[..tiles.len().min(400)];
    let columns = columns.clamp(1, 40);
    let rows = tiles.len().div_ceil(columns).max(1);
    let (tile_px, caption_px, pad, header) = (96u32, 18u32, 8u32, 36u32);
    let cell_w = tile_px + pad;
    let cell_h = tile_px + caption_px + pad;
    let width = (cell_w * columns as u32 + pad).max(320);
    let height = header + cell_h * rows as u32 + pad;
    render::ensure_font()?;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title_style = TextStyle::from(("sans-serif", 18).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(
            title.to_owned(),
            (pad as i32, (header / 2) as i32),
            title_style,
        ))
        .map_err(err)?;
        if tiles.is_empty() {
            let style = TextStyle::from(("sans-serif", 15).into_font())
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Top));
            root.draw(&Text::new(
                "no misclassified examples".to_owned(),
                (pad as i32, header as i32 + 8),
                style,
            ))
            .map_err(err)?;
        }
        for (i, t) in tiles.iter().enumerate() {
            let (col, row) = ((i % columns) as u32, (i / columns) as u32);
            let x0 = (pad + col * cell_w) as i32;
            let y0 = (header + row * cell_h) as i32;
            let finite = t.pixels.iter().copied().filter(|v| v.is_finite());
            let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
            let span = if hi > lo { hi - lo } else { 1.0 };
            let (h, w) = (t.height.max(1), t.width.max(1));
            let px = (tile_px as usize / h.max(w)).max(1) as i32;
            for r in 0..h {
                for c in 0..w {
                    let v = t.pixels.get(r * w + c).copied().unwrap_or(f32::NAN);
                    let color = if v.is_finite() {
                        let g = (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8;
                        RGBColor(g, g, g)
                    } else {
                        RGBColor(214, 39, 40)
                    };
                    let (x, y) = (x0 + c as i32 * px, y0 + r as i32 * px);
                    root.draw(&Rectangle::new([(x, y), (x + px, y + px)], color.filled()))
                        .map_err(err)?;
                }
            }
            let style = TextStyle::from(("sans-serif", 12).into_font())
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Top));
            root.draw(&Text::new(
                t.caption.clone(),
                (x0, y0 + tile_px as i32 + 2),
                style,
            ))
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    encode(&rgb, width, height)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png_bytes: &[u8]) -> (u32, u32) {
        let d = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let r = d.read_info().unwrap();
        (r.info().width, r.info().height)
    }

    #[test]
    fn grid_and_confusion_are_pngs_of_the_expected_size() {
        let tiles: Vec<GridTile> = (0..7)
            .map(|i| GridTile::from_input(&[i as f32; 16], &[16], format!("true {i} / pred 0")))
            .collect();
        assert_eq!((tiles[0].height, tiles[0].width), (4, 4));
        let png = example_grid_png(&tiles, "misclassified", 3).unwrap();
        let (w, h) = decode(&png);
        assert_eq!(w, 3 * 104 + 8);
        assert_eq!(h, 36 + 3 * (96 + 18 + 8) + 8);
        let m = ConfusionMatrix::new(vec![vec![5.0, 1.0], vec![2.0, 7.0]]);
        let png = confusion_matrix_png(&m, "cm", 300).unwrap();
        assert_eq!(decode(&png), (300, 300));
        assert!(confusion_matrix_png(&ConfusionMatrix::new(vec![]), "x", 300).is_err());
    }

    #[test]
    fn image_shapes_are_kept_and_odd_lengths_are_padded() {
        let t = GridTile::from_input(&[0.0; 28 * 28], &[28, 28], "");
        assert_eq!((t.height, t.width), (28, 28));
        let t = GridTile::from_input(&[1.0; 3 * 8 * 8], &[3, 8, 8], "");
        assert_eq!((t.height, t.width, t.pixels.len()), (8, 8, 64));
        let t = GridTile::from_input(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5], "");
        assert_eq!((t.height, t.width, t.pixels.len()), (2, 3, 6));
        assert_eq!(t.pixels[5], 1.0);
    }
}
