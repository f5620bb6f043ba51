//! `exptrack_trainer::idx::parse_idx`: MNIST's IDX files. The module is compiled here from its
//! source file (it needs nothing of burn but its two `crate::` imports, shimmed below), so the
//! real parser is fuzzed with sanitizers without building burn. Properties: the value count is
//! the product of the dimensions and never exceeds the input; unsigned-byte arrays re-encode to
//! the input bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/trainer/src/idx.rs"]
mod idx;

/// Shim of `exptrack_trainer::error` (what `idx.rs` imports).
mod error {
    #[derive(Debug)]
    pub enum Error {
        Data(#[allow(dead_code)] String),
        #[allow(dead_code)]
        Io(std::io::Error),
    }
    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }
    pub type Result<T> = std::result::Result<T, Error>;
    pub trait IoContext<T> {
        fn ctx(self, what: &'static str, path: &std::path::Path) -> Result<T>;
    }
    impl<T> IoContext<T> for std::io::Result<T> {
        fn ctx(self, _: &'static str, _: &std::path::Path) -> Result<T> {
            self.map_err(Error::Io)
        }
    }
}

/// Shim of `exptrack_trainer::data` (only the loaders, which are not fuzzed, use it).
#[allow(dead_code)]
mod data {
    pub struct ClassificationData<const D: usize>;
    impl<const D: usize> ClassificationData<D> {
        pub fn new(
            _: Vec<f32>,
            _: Vec<usize>,
            _: Vec<i64>,
            _: usize,
        ) -> crate::error::Result<Self> {
            Ok(ClassificationData)
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(a) = idx::parse_idx(data) else {
        return;
    };
    let count: usize = a.dims.iter().product();
    assert_eq!(a.values.len(), count);
    assert!(a.values.len() <= data.len());
    if data[2] == 0x08 {
        let bytes: Vec<u8> = a.values.iter().map(|v| *v as u8).collect();
        assert_eq!(
            idx::encode_idx_u8(&a.dims, &bytes).ok().as_deref(),
            Some(data)
        );
    }
});
