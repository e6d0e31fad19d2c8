//! Avro's binary encoding at the byte level: varints, lengths, blocks, dates and decimals.
//!
//! No Python here, so `cargo test` covers the decoder's edge cases without an interpreter.
//! Every reader answers `None` for bytes it will not judge (truncated, too wide, out of
//! range): the extension then hands the message to fastavro, whose verdict counts.

/// A position in one message's bytes.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    pub fn new(buf: &'a [u8], pos: usize) -> Self {
        Cursor { buf, pos }
    }

    #[inline]
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The next `len` bytes.
    #[inline]
    pub fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let slice = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    /// A zigzag varint of at most 64 bits (Avro int and long alike, as fastavro reads them).
    #[inline]
    pub fn long(&mut self) -> Option<i64> {
        let mut raw: u64 = 0;
        let mut shift = 0u32;
        loop {
            let byte = *self.buf.get(self.pos)?;
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return None; // wider than 64 bits
            }
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
    }

    /// A length (of bytes or a string): a long that must not be negative.
    #[inline]
    pub fn length(&mut self) -> Option<usize> {
        usize::try_from(self.long()?).ok()
    }

    /// Items in the next block of an array or map; 0 ends it. A negative count is followed by
    /// the block's size in bytes (for readers that skip), which is read and not needed.
    #[inline]
    pub fn block(&mut self) -> Option<usize> {
        let count = self.long()?;
        if count < 0 {
            self.long()?;
        }
        let count = usize::try_from(count.unsigned_abs()).ok()?;
        // Every item takes at least a byte unless it is empty (null, an empty record): a count
        // beyond what is left is a lie or a flood; fastavro decides which.
        if count > self.buf.len() - self.pos && count > 1 << 16 {
            return None;
        }
        Some(count)
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian (year, month, day), for any i64 that does
/// not overflow (H. Hinnant's `civil_from_days`); the caller checks the year's range.
pub fn civil_from_days(days: i64) -> Option<(i64, u8, u8)> {
    let z = days.checked_add(719_468)?;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    Some((yoe + era * 400 + i64::from(month <= 2), month, day))
}

/// The text of a decimal stored as big-endian two's complement `raw` with `scale`, as Python's
/// `Decimal` prints it from fastavro; `None` beyond 16 bytes or `precision` digits (fastavro
/// rounds those; let it).
pub fn decimal_text(raw: &[u8], precision: u32, scale: u32) -> Option<String> {
    if raw.len() > 16 {
        return None;
    }
    let mut unscaled: i128 = if raw.first().is_some_and(|b| b & 0x80 != 0) {
        -1
    } else {
        0
    };
    for byte in raw {
        unscaled = (unscaled << 8) | i128::from(*byte);
    }
    let digits = unscaled.unsigned_abs().to_string();
    if digits.len() > precision as usize {
        return None;
    }
    let scale = scale as usize;
    let mut text = String::with_capacity(digits.len() + scale + 3);
    if unscaled < 0 {
        text.push('-');
    }
    if scale == 0 {
        text.push_str(&digits);
    } else if digits.len() > scale {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        text.push_str(whole);
        text.push('.');
        text.push_str(fraction);
    } else {
        text.push_str("0.");
        text.extend(std::iter::repeat_n('0', scale - digits.len()));
        text.push_str(&digits);
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zigzag(value: i64) -> Vec<u8> {
        let mut raw = ((value << 1) ^ (value >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let byte = (raw & 0x7f) as u8;
            raw >>= 7;
            if raw == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    #[test]
    fn longs_round_trip_at_every_width() {
        for value in [
            0,
            -1,
            1,
            63,
            -64,
            64,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let bytes = zigzag(value);
            let mut cursor = Cursor::new(&bytes, 0);
            assert_eq!(cursor.long(), Some(value), "{value}");
            assert_eq!(cursor.pos(), bytes.len());
        }
    }

    #[test]
    fn a_varint_wider_than_64_bits_is_refused() {
        // Ten bytes whose last carries more than the 64th bit.
        let mut bytes = vec![0xff; 9];
        bytes.push(0x02);
        assert_eq!(Cursor::new(&bytes, 0).long(), None);
        // Eleven bytes: continues past the tenth.
        let bytes = [0x80u8; 11];
        assert_eq!(Cursor::new(&bytes, 0).long(), None);
    }

    #[test]
    fn truncated_input_is_refused_and_never_read_past() {
        assert_eq!(Cursor::new(&[0x80, 0x80], 0).long(), None);
        assert_eq!(Cursor::new(&[], 0).long(), None);
        let mut cursor = Cursor::new(&[1, 2, 3], 1);
        assert_eq!(cursor.take(3), None);
        assert_eq!(cursor.take(2), Some(&[2u8, 3][..]));
        assert_eq!(cursor.take(usize::MAX), None); // no overflow on the end offset
    }

    #[test]
    fn negative_lengths_are_refused() {
        assert_eq!(Cursor::new(&zigzag(-1), 0).length(), None);
        assert_eq!(Cursor::new(&zigzag(5), 0).length(), Some(5));
    }

    #[test]
    fn blocks_with_a_negative_count_skip_their_byte_size() {
        let mut bytes = zigzag(-2);
        bytes.extend(zigzag(10));
        bytes.extend([7, 7]);
        let mut cursor = Cursor::new(&bytes, 0);
        assert_eq!(cursor.block(), Some(2));
        assert_eq!(cursor.take(2), Some(&[7u8, 7][..]));
        assert_eq!(Cursor::new(&zigzag(i64::MIN), 0).block(), None); // and no byte size after
    }

    #[test]
    fn a_block_count_far_beyond_the_bytes_left_is_refused() {
        assert_eq!(Cursor::new(&zigzag(1 << 40), 0).block(), None);
        // Small counts pass even beyond the bytes left: empty items take no bytes.
        assert_eq!(Cursor::new(&zigzag(1000), 0).block(), Some(1000));
    }

    #[test]
    fn civil_dates_match_the_calendar() {
        assert_eq!(civil_from_days(0), Some((1970, 1, 1)));
        assert_eq!(civil_from_days(-1), Some((1969, 12, 31)));
        assert_eq!(civil_from_days(11_016), Some((2000, 2, 29)));
        assert_eq!(civil_from_days(2_932_896), Some((9999, 12, 31)));
        assert_eq!(civil_from_days(-719_162), Some((1, 1, 1)));
        assert_eq!(civil_from_days(-719_163), Some((0, 12, 31))); // out of Python's range
        assert_eq!(civil_from_days(i64::MAX), None);
    }

    #[test]
    fn decimals_print_as_python_prints_them() {
        assert_eq!(decimal_text(&[0x30, 0x39], 5, 2).as_deref(), Some("123.45"));
        assert_eq!(
            decimal_text(&[0xcf, 0xc7], 5, 2).as_deref(),
            Some("-123.45")
        );
        assert_eq!(decimal_text(&[0x05], 5, 3).as_deref(), Some("0.005"));
        assert_eq!(decimal_text(&[0x00], 5, 0).as_deref(), Some("0"));
        assert_eq!(decimal_text(&[], 5, 0).as_deref(), Some("0"));
        assert_eq!(decimal_text(&[0x30, 0x39], 4, 2), None); // five digits, precision four
        assert_eq!(decimal_text(&[0x01; 17], 38, 0), None); // wider than an i128
    }
}
