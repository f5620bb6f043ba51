//! Media the way MLflow's own client logs it, so the UI shows it: images in `log_image(key=,
//! step=)`'s layout (with the compressed WebP copy its image panel loads), histograms as JSON.

use std::io::Cursor;

use exptrack_core::media::sha256_hex;

/// The longest side of the compressed copy (`mlflow.tracking.multimedia.COMPRESSED_IMAGE_SIZE`).
pub const COMPRESSED_IMAGE_SIZE: u32 = 256;

/// The artifact paths of one image, as mlflow 3.17's `MlflowClient.log_image(key=, step=)`
/// names them: `images/<key, '/' as '~'>+step+<step>+timestamp+<ms>+<id>.png` and the same with
/// `+compressed.webp`. The key keeps the characters `log_image` allows (`[A-Za-z0-9_\-./ ]`);
/// others become `_`. `<id>` is a UUID-shaped hash of the image and its position (where MLflow
/// uses a random UUID), so delivering the same event again overwrites the same files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePaths {
    /// The full-resolution PNG.
    pub png: String,
    /// The compressed WebP copy.
    pub webp: String,
}

impl ImagePaths {
    /// The paths for `tag` at `step`, logged at `timestamp_ms`.
    pub fn new(tag: &str, step: u64, timestamp_ms: i64, png: &[u8]) -> Self {
        let key: String = tag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ') {
                    c
                } else if c == '/' {
                    '~'
                } else {
                    '_'
                }
            })
            .collect();
        let key = if key.is_empty() {
            "image".to_owned()
        } else {
            key
        };
        let mut id_input = Vec::with_capacity(png.len() + tag.len() + 32);
        id_input.extend_from_slice(tag.as_bytes());
        id_input.push(0);
        id_input.extend_from_slice(&step.to_le_bytes());
        id_input.extend_from_slice(&timestamp_ms.to_le_bytes());
        id_input.extend_from_slice(png);
        let h = sha256_hex(&id_input);
        let id = format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        let stem = format!(
            "images/{key}+step+{step}+timestamp+{}+{id}",
            timestamp_ms.max(0)
        );
        ImagePaths {
            png: format!("{stem}.png"),
            webp: format!("{stem}+compressed.webp"),
        }
    }
}

/// The size of the compressed copy, computed as `compress_image_size` does: the longer side
/// becomes 256 and the other keeps the aspect ratio (rounded down, at least 1).
pub fn compressed_size(width: u32, height: u32) -> (u32, u32) {
    let max = u64::from(COMPRESSED_IMAGE_SIZE);
    let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
    let (nw, nh) = if w > h {
        (max, h * max / w)
    } else {
        (w * max / h, max)
    };
    (
        u32::try_from(nw.max(1)).unwrap_or(1),
        u32::try_from(nh.max(1)).unwrap_or(1),
    )
}

/// Decodes `png` and encodes the compressed copy MLflow's image panel shows: scaled to fit
/// 256×256 (box filter when shrinking, nearest pixel when growing) and written as lossless WebP.
/// `Err` says why the PNG could not be converted.
pub fn compressed_webp(png: &[u8]) -> Result<Vec<u8>, String> {
    let mut decoder = png::Decoder::new(Cursor::new(png));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    let size = reader
        .output_buffer_size()
        .ok_or("the PNG is too large to decode")?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    let (channels, color) = match info.color_type {
        png::ColorType::Grayscale => (1, image_webp::ColorType::L8),
        png::ColorType::GrayscaleAlpha => (2, image_webp::ColorType::La8),
        png::ColorType::Rgb => (3, image_webp::ColorType::Rgb8),
        png::ColorType::Rgba => (4, image_webp::ColorType::Rgba8),
        png::ColorType::Indexed => return Err("the PNG's palette was not expanded".into()),
    };
    let (w, h) = (info.width as usize, info.height as usize);
    if w == 0 || h == 0 || info.line_size < w * channels {
        return Err("the PNG has no pixels".into());
    }
    let (nw, nh) = compressed_size(info.width, info.height);
    let scaled = resize(
        &buf,
        info.line_size,
        (w, h),
        channels,
        (nw as usize, nh as usize),
    );
    let mut out = Vec::new();
    image_webp::WebPEncoder::new(&mut out)
        .encode(&scaled, nw, nh, color)
        .map_err(|e| format!("WebP encoding failed: {e}"))?;
    Ok(out)
}

/// Resizes interleaved 8-bit pixels (`stride` bytes per source row) to `to`: each target pixel
/// averages the source pixels its area covers (at least the nearest one).
fn resize(
    src: &[u8],
    stride: usize,
    from: (usize, usize),
    channels: usize,
    to: (usize, usize),
) -> Vec<u8> {
    let (w, h) = from;
    let (nw, nh) = to;
    let span = |i: usize, n: usize, len: usize| {
        let start = i * len / n;
        let end = ((i + 1) * len).div_ceil(n).max(start + 1).min(len);
        (start.min(len.saturating_sub(1)), end)
    };
    let mut out = Vec::with_capacity(nw * nh * channels);
    let mut acc = vec![0u64; channels];
    for y in 0..nh {
        let (y0, y1) = span(y, nh, h);
        for x in 0..nw {
            let (x0, x1) = span(x, nw, w);
            acc.iter_mut().for_each(|a| *a = 0);
            let mut n = 0u64;
            for sy in y0..y1 {
                let row = &src[sy * stride..];
                for sx in x0..x1 {
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a += u64::from(row[sx * channels + c]);
                    }
                    n += 1;
                }
            }
            let n = n.max(1);
            out.extend(acc.iter().map(|a| ((a + n / 2) / n) as u8));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = png::Encoder::new(&mut out, w, h);
        e.set_color(color);
        e.set_depth(depth);
        let mut wr = e.write_header().unwrap();
        wr.write_image_data(data).unwrap();
        wr.finish().unwrap();
        out
    }

    fn decode_webp(b: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut d = image_webp::WebPDecoder::new(Cursor::new(b)).unwrap();
        let (w, h) = d.dimensions();
        let mut buf = vec![0; d.output_buffer_size().unwrap()];
        d.read_image(&mut buf).unwrap();
        (w, h, buf)
    }

    #[test]
    fn paths_follow_log_image() {
        let p = ImagePaths::new("samples/grid", 9, 1_700_000_000_123, b"x");
        let name = p.png.strip_prefix("images/").unwrap();
        let parts: Vec<&str> = name.trim_end_matches(".png").split('+').collect();
        assert_eq!(
            &parts[..5],
            ["samples~grid", "step", "9", "timestamp", "1700000000123"]
        );
        assert_eq!(parts[5].len(), 36, "uuid-shaped id: {}", parts[5]);
        assert_eq!(p.webp, p.png.replace(".png", "+compressed.webp"));
        assert_eq!(
            p,
            ImagePaths::new("samples/grid", 9, 1_700_000_000_123, b"x")
        );
        assert_ne!(
            p,
            ImagePaths::new("samples/grid", 9, 1_700_000_000_123, b"y")
        );
        let odd = ImagePaths::new("a+b:c", 0, 0, b"");
        assert!(odd.png.starts_with("images/a_b_c+step+0+"), "{}", odd.png);
    }

    #[test]
    fn sizes_like_compress_image_size() {
        assert_eq!(compressed_size(512, 256), (256, 128));
        assert_eq!(compressed_size(100, 300), (85, 256));
        assert_eq!(compressed_size(28, 28), (256, 256));
        assert_eq!(compressed_size(10_000, 1), (256, 1));
    }

    #[test]
    fn webp_keeps_the_picture() {
        // 4x2 RGB: left half red, right half blue; shrinks to 256x128.
        let mut data = Vec::new();
        for _y in 0..2 {
            for x in 0..4 {
                data.extend_from_slice(if x < 2 { &[255, 0, 0] } else { &[0, 0, 255] });
            }
        }
        let (w, h, px) = decode_webp(
            &compressed_webp(&png(4, 2, png::ColorType::Rgb, png::BitDepth::Eight, &data)).unwrap(),
        );
        assert_eq!((w, h), (256, 128));
        let at = |x: usize, y: usize| &px[(y * 256 + x) * 3..(y * 256 + x) * 3 + 3];
        assert_eq!(at(0, 0), [255, 0, 0]);
        assert_eq!(at(255, 127), [0, 0, 255]);
        // A 16-bit grey image with alpha larger than 256 shrinks by averaging.
        let mut grey = Vec::new();
        for _ in 0..(512 * 512) {
            grey.extend_from_slice(&[0x80, 0x00, 0xff, 0xff]);
        }
        let (w, h, px) = decode_webp(
            &compressed_webp(&png(
                512,
                512,
                png::ColorType::GrayscaleAlpha,
                png::BitDepth::Sixteen,
                &grey,
            ))
            .unwrap(),
        );
        assert_eq!((w, h), (256, 256));
        assert!(px.chunks(4).all(|p| p == [0x80, 0x80, 0x80, 0xff]));
        assert!(compressed_webp(b"not a png").is_err());
    }
}
