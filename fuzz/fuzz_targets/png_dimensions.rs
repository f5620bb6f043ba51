//! `png_dimensions`: PNG header sniffing for logged images. Properties: it never reads past the
//! IHDR fields, and when the `png` crate decodes the header, both agree on width and height.
#![no_main]

use exptrack_core::png_dimensions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let got = png_dimensions(data);
    if let Some((_, _, channels)) = got {
        assert!(data.len() >= 26);
        assert!((1..=4).contains(&channels));
        // Only the first 26 bytes decide.
        assert_eq!(png_dimensions(&data[..26]), got);
    }
    let decoder = png::Decoder::new(std::io::Cursor::new(data));
    if let Ok(reader) = decoder.read_info() {
        let info = reader.info();
        let (w, h, _) = got.unwrap_or_else(|| {
            panic!(
                "png decodes a {}x{} header, png_dimensions says None",
                info.width, info.height
            )
        });
        assert_eq!((w, h), (info.width, info.height));
    }
});
