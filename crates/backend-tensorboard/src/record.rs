//! TFRecord framing: `u64 LE length | u32 LE masked CRC-32C(length) | data | u32 LE masked
//! CRC-32C(data)`.

/// The constant added by [`mask`].
pub const MASK_DELTA: u32 = 0xA282_EAD8;

/// Bytes of framing before the data (length and its CRC).
pub const HEADER_LEN: usize = 12;

/// Bytes of framing after the data (its CRC).
pub const FOOTER_LEN: usize = 4;

/// Masks a CRC the way TFRecord does: `((c >> 15) | (c << 17)) + 0xA282EAD8` (mod 2^32).
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// The masked CRC-32C (Castagnoli) of `data`.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    mask(crc32c::crc32c(data))
}

/// Appends `data` framed as one record to `out`.
pub fn frame_record(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(HEADER_LEN + data.len() + FOOTER_LEN);
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// Reserves the header of a record whose data will be appended to `out` next; returns the
/// position to pass to [`end_record`].
pub(crate) fn begin_record(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    start
}

/// Completes a record started by [`begin_record`]: fills in the header and appends the data CRC.
pub(crate) fn end_record(out: &mut Vec<u8>, start: usize) {
    let data_start = start + HEADER_LEN;
    let len = ((out.len() - data_start) as u64).to_le_bytes();
    let len_crc = masked_crc32c(&len).to_le_bytes();
    out[start..start + 8].copy_from_slice(&len);
    out[start + 8..data_start].copy_from_slice(&len_crc);
    let data_crc = masked_crc32c(&out[data_start..]).to_le_bytes();
    out.extend_from_slice(&data_crc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    #[allow(clippy::manual_rotate)] // the formula as written in the TFRecord spec
    fn mask_matches_formula() {
        for c in [0u32, 1, 0xE306_9283, u32::MAX, 0x8000_0000] {
            let expected = ((c >> 15) | (c << 17)).wrapping_add(0xA282_EAD8);
            assert_eq!(mask(c), expected);
        }
    }

    #[test]
    fn begin_end_equals_frame() {
        let data = b"hello tensorboard";
        let mut a = vec![1, 2, 3];
        frame_record(&mut a, data);
        let mut b = vec![1, 2, 3];
        let start = begin_record(&mut b);
        b.extend_from_slice(data);
        end_record(&mut b, start);
        assert_eq!(a, b);
        assert_eq!(a.len(), 3 + HEADER_LEN + data.len() + FOOTER_LEN);
    }
}
