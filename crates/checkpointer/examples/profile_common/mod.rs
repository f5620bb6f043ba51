//! What the `save_profile` and `load_profile` examples share: arguments `SIZE(M) ROUNDS [DIR]`,
//! the payload, and the table of medians.

use std::time::Duration;

/// The parsed arguments and what they set up.
pub struct Setup {
    /// Payload bytes (a cheap pseudo-random pattern).
    pub data: Vec<u8>,
    /// Interleaved rounds to run.
    pub rounds: usize,
    /// Scratch directory on the disk under test (removed on drop).
    pub tmp: tempfile::TempDir,
}

/// Parses `SIZE ROUNDS [DIR]` (defaults 64M, 5, the system temp dir).
pub fn setup() -> Result<Setup, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let size_mb: usize = args
        .get(1)
        .map(|s| s.trim_end_matches('M').parse())
        .transpose()?
        .unwrap_or(64);
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let base = args
        .get(3)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(base)?;
    let data = (0..size_mb << 20)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
        .collect();
    Ok(Setup { data, rounds, tmp })
}

/// Prints the median and minimum of each named series.
pub fn print_medians(names: &[&str], times: &mut [Vec<Duration>]) {
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    for (name, v) in names.iter().zip(times.iter_mut()) {
        v.sort();
        println!(
            "{name:>width$}: median {:>8.1} ms  min {:>8.1} ms",
            v[v.len() / 2].as_secs_f64() * 1e3,
            v[0].as_secs_f64() * 1e3
        );
    }
}
