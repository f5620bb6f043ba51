//! Content hashes of checkpoint files: BLAKE3 (default) or SHA-256, recorded with the algorithm.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// The algorithm that hashes a checkpoint's files (`[checkpointing] hash`).
///
/// BLAKE3 (the default) runs at ~3.3 GB/s on one core here, faster than the page cache can be
/// read, so verifying a load costs less than the read it checks. SHA-256 (~1.5 GB/s with SHA-NI)
/// is there for matching digests against other tools; checkpoints of format version 1 use it.
///
/// ```
/// use exptrack_checkpoint::HashAlgo;
/// assert_eq!("sha256".parse::<HashAlgo>(), Ok(HashAlgo::Sha256));
/// assert_eq!(HashAlgo::default().to_string(), "blake3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HashAlgo {
    /// BLAKE3, 256-bit output (the `blake3` crate).
    #[default]
    Blake3,
    /// SHA-256 (the `sha2` crate).
    Sha256,
}

impl HashAlgo {
    /// The lowercase name used in configs and in recorded digests (`blake3`, `sha256`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Blake3 => "blake3",
            HashAlgo::Sha256 => "sha256",
        }
    }

    /// Length of a digest in bytes.
    pub(crate) fn digest_len(self) -> usize {
        32
    }

    /// The digest of `data` (one thread).
    pub fn digest(self, data: &[u8]) -> FileHash {
        let mut h = Hasher::new(self);
        h.update(data);
        h.finish()
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blake3" => Ok(HashAlgo::Blake3),
            "sha256" => Ok(HashAlgo::Sha256),
            other => Err(format!(
                "unknown hash algorithm {other:?} (expected \"blake3\" or \"sha256\")"
            )),
        }
    }
}

/// A recorded content digest: the algorithm and the lowercase hex digest. In JSON it is one string,
/// `"blake3:<hex>"` or `"sha256:<hex>"`.
///
/// ```
/// use exptrack_checkpoint::{FileHash, HashAlgo};
/// let h = HashAlgo::Blake3.digest(b"abc");
/// assert_eq!(h.to_string(), format!("blake3:{}", h.hex()));
/// assert_eq!(h.to_string().parse::<FileHash>(), Ok(h));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileHash {
    algo: HashAlgo,
    hex: String,
}

impl FileHash {
    /// A digest from its algorithm and hex text (checked: the algorithm's length, hex digits;
    /// stored lowercase).
    pub fn new(algo: HashAlgo, hex: &str) -> Result<Self, String> {
        let want = algo.digest_len() * 2;
        if hex.len() != want || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{algo} digest must be {want} hex digits, got {:?}",
                truncate(hex)
            ));
        }
        Ok(FileHash {
            algo,
            hex: hex.to_ascii_lowercase(),
        })
    }

    pub(crate) fn from_bytes(algo: HashAlgo, digest: &[u8]) -> Self {
        FileHash {
            algo,
            hex: hex::encode(digest),
        }
    }

    /// The algorithm.
    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    /// The lowercase hex digest.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

impl fmt::Display for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.hex)
    }
}

impl FromStr for FileHash {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("digest {:?} is not <algorithm>:<hex>", truncate(s)))?;
        FileHash::new(algo.parse()?, hex)
    }
}

impl Serialize for FileHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FileHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher of either algorithm.
#[derive(Debug)]
pub(crate) enum Hasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub(crate) fn new(algo: HashAlgo) -> Self {
        match algo {
            HashAlgo::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
            HashAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    /// Adds `data` on this thread.
    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Blake3(h) => {
                h.update(data);
            }
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// Adds `data`, spreading BLAKE3's tree over rayon's pool when `parallel` (SHA-256 is a chain
    /// and always runs on this thread).
    pub(crate) fn update_par(&mut self, data: &[u8], parallel: bool) {
        match self {
            Hasher::Blake3(h) if parallel => {
                h.update_rayon(data);
            }
            other => other.update(data),
        }
    }

    pub(crate) fn finish(self) -> FileHash {
        match self {
            Hasher::Blake3(h) => FileHash::from_bytes(HashAlgo::Blake3, h.finalize().as_bytes()),
            Hasher::Sha256(h) => FileHash::from_bytes(HashAlgo::Sha256, &h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // BLAKE3 and SHA-256 of "abc" from their specifications' test vectors.
        assert_eq!(
            HashAlgo::Blake3.digest(b"abc").hex(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(
            HashAlgo::Sha256.digest(b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parallel_update_agrees_with_serial() {
        let data: Vec<u8> = (0..(5u32 << 20) + 77)
            .map(|i| ((i * 31) >> 3) as u8)
            .collect();
        for algo in [HashAlgo::Blake3, HashAlgo::Sha256] {
            let mut h = Hasher::new(algo);
            for piece in data.chunks(2 << 20) {
                h.update_par(piece, true);
            }
            assert_eq!(h.finish(), algo.digest(&data));
        }
    }

    #[test]
    fn parse_rejects_bad_digests() {
        let hex64 = "ab".repeat(32);
        assert!(format!("blake3:{hex64}").parse::<FileHash>().is_ok());
        assert!(format!("BLAKE3:{hex64}").parse::<FileHash>().is_err());
        assert!(format!("md5:{hex64}").parse::<FileHash>().is_err());
        assert!(hex64.parse::<FileHash>().is_err());
        assert!(
            format!("sha256:{}", &hex64[2..])
                .parse::<FileHash>()
                .is_err()
        );
        assert!(
            format!("sha256:{}zz", &hex64[2..])
                .parse::<FileHash>()
                .is_err()
        );
        let upper = format!("sha256:{}", hex64.to_uppercase());
        assert_eq!(
            upper.parse::<FileHash>().map(|h| h.hex().to_owned()),
            Ok(hex64)
        );
    }
}
