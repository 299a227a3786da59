//! Kafka's variable-length integers: zigzag-encoded, then LEB128 (7 bits per byte, low
//! groups first, high bit set on every byte but the last). Records inside a RecordBatch v2
//! use them for every length, delta and count.

use bytes::BufMut;

use crate::{Error, Result};

/// Longest encoding of a 32-bit varint.
pub const VARINT_MAX_LEN: usize = 5;
/// Longest encoding of a 64-bit varlong.
pub const VARLONG_MAX_LEN: usize = 10;

fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bytes that `put_varint(v)` writes.
pub fn varint_len(v: i32) -> usize {
    uleb_len(u64::from(zigzag32(v)))
}

/// Bytes that `put_varlong(v)` writes.
pub fn varlong_len(v: i64) -> usize {
    uleb_len(zigzag64(v))
}

fn uleb_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Appends the zigzag varint encoding of `v`.
pub fn put_varint(buf: &mut impl BufMut, v: i32) {
    put_uleb(buf, u64::from(zigzag32(v)));
}

/// Appends the zigzag varlong encoding of `v`.
pub fn put_varlong(buf: &mut impl BufMut, v: i64) {
    put_uleb(buf, zigzag64(v));
}

/// Appends the unsigned varint encoding of `v` (Kafka's `UNSIGNED_VARINT`, the length of a
/// compact string or byte string in flexible versions).
pub fn put_unsigned_varint(buf: &mut impl BufMut, v: u32) {
    put_uleb(buf, u64::from(v));
}

fn put_uleb(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Reads a zigzag varint from `buf[*pos..]` and advances `pos` past it; on error `pos`
/// stays where it was.
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i32> {
    let mut end = *pos;
    let raw = get_uleb(buf, &mut end, VARINT_MAX_LEN, "varint")?;
    if raw > u64::from(u32::MAX) {
        return Err(Error::Invalid {
            field: "varint",
            reason: "value does not fit in 32 bits".into(),
        });
    }
    *pos = end;
    Ok(unzigzag64(raw) as i32)
}

/// Reads a zigzag varlong from `buf[*pos..]` and advances `pos` past it.
pub fn get_varlong(buf: &[u8], pos: &mut usize) -> Result<i64> {
    get_uleb(buf, pos, VARLONG_MAX_LEN, "varlong").map(unzigzag64)
}

fn get_uleb(buf: &[u8], pos: &mut usize, max_len: usize, what: &'static str) -> Result<u64> {
    let mut value: u64 = 0;
    for i in 0..max_len {
        let Some(&byte) = buf.get(*pos + i) else {
            return Err(Error::Truncated {
                context: what,
                needed: 1,
            });
        };
        let bits = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        // The last permitted byte may only carry the bits that still fit in 64 bits.
        if shift == 63 && bits > 1 {
            return Err(Error::Invalid {
                field: what,
                reason: "value does not fit in 64 bits".into(),
            });
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            *pos += i + 1;
            return Ok(value);
        }
    }
    Err(Error::Invalid {
        field: what,
        reason: format!("longer than {max_len} bytes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Vectors from Kafka's ByteUtilsTest: zigzag maps 0,-1,1,-2,2 to 0,1,2,3,4.
    #[test]
    fn known_encodings() {
        let check = |v: i64, expected: &[u8]| {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(buf, expected, "encoding of {v}");
            let mut pos = 0;
            assert_eq!(get_varlong(&buf, &mut pos).unwrap(), v);
            assert_eq!(pos, expected.len());
        };
        check(0, &[0x00]);
        check(-1, &[0x01]);
        check(1, &[0x02]);
        check(-64, &[0x7f]);
        check(64, &[0x80, 0x01]);
        check(300, &[0xd8, 0x04]);
        check(
            i64::MIN,
            &[0xff; 9].iter().copied().chain([0x01]).collect::<Vec<_>>(),
        );
    }

    #[test]
    fn rejects_overlong_and_truncated() {
        let mut pos = 0;
        assert!(get_varint(&[0x80; 6], &mut pos).is_err());
        assert!(get_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f], &mut pos).is_err());
        assert!(get_varlong(&[0x80, 0x80], &mut pos).is_err());
        assert!(get_varlong(
            &[0xff; 9].iter().copied().chain([0x02]).collect::<Vec<_>>(),
            &mut pos
        )
        .is_err());
        assert_eq!(pos, 0, "a failed read does not advance");
    }

    proptest! {
        #[test]
        fn varint_round_trip(v in any::<i32>()) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            prop_assert_eq!(buf.len(), varint_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varint(&buf, &mut pos).unwrap(), v);
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn varlong_round_trip(v in any::<i64>()) {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            prop_assert_eq!(buf.len(), varlong_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varlong(&buf, &mut pos).unwrap(), v);
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn varint_decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let mut pos = 0;
            let _ = get_varint(&bytes, &mut pos);
            prop_assert!(pos <= bytes.len());
            let mut pos = 0;
            let _ = get_varlong(&bytes, &mut pos);
            prop_assert!(pos <= bytes.len());
        }
    }
}
