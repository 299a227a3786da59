//! Primitives of the native protocol's payloads (DESIGN §4): big-endian integers, strings
//! (`u16` length + UTF-8, 0xFFFF = null), bytes (`i32` length, -1 = null), arrays (`i32`
//! count, -1 = null), and the [`Encode`] / [`Decode`] traits every message implements.
//!
//! Why a [`Reader`] over [`Bytes`] rather than a `&[u8]` cursor: record batches are carried
//! as opaque bytes, and slicing them out of the frame with `Bytes::split_to` costs a
//! reference count, not a copy. Why every length is checked before anything is allocated:
//! a frame comes from an untrusted peer, and a 4-byte input claiming 2^31 elements must be
//! a typed error, not an out-of-memory abort.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frame::SplicedFrame;
use crate::records::Records;
use crate::types::{BrokerId, LeaderEpoch, Offset, PartitionId};
use crate::{Error, Result};

/// Longest string the format carries: 0xFFFF is the null marker, so one less.
pub const STRING_MAX_LEN: usize = 0xFFFE;
/// The `u16` length that marks a null string (the bits of `i16` -1).
pub const STRING_NULL_LEN: u16 = 0xFFFF;
/// Longest byte string and largest array count: lengths are `i32` on the wire, -1 is null.
pub const BYTES_MAX_LEN: usize = i32::MAX as usize;
/// Initial capacity ceiling of a decoded array; the vector grows from there only as real
/// elements are decoded, so memory stays proportional to the input.
const ARRAY_PREALLOC_MAX: usize = 1024;

/// A value that can be appended to a payload.
pub trait Encode {
    /// Appends the wire form of `self`; fails only when a length does not fit its field.
    fn encode(&self, buf: &mut BytesMut) -> Result<()>;
    /// Bytes that [`Encode::encode`] appends, so callers can reserve once.
    fn encoded_len(&self) -> usize;
    /// Appends the wire form of `self` to a frame, sharing long byte strings (record
    /// batches) instead of copying them ([`SplicedFrame::put_shared`]); the bytes are the
    /// same as [`Encode::encode`]'s.
    fn encode_spliced(&self, frame: &mut SplicedFrame) -> Result<()> {
        self.encode(frame.head_mut())
    }
}

/// A value that can be read from a payload.
pub trait Decode: Sized {
    /// The fewest bytes any encoding of `Self` takes: arrays use it to reject counts the
    /// remaining input could not possibly hold, before allocating.
    const MIN_LEN: u32;
    /// Reads one value, advancing the reader past it.
    fn decode(r: &mut Reader) -> Result<Self>;
}

/// A type with a null form on the wire, so that `Option<Self>` can be encoded.
pub trait Nullable: Sized {
    /// The fewest bytes of the null or non-null form.
    const NULLABLE_MIN_LEN: u32;
    /// Appends `Some(v)` or the null marker.
    fn encode_nullable(value: Option<&Self>, buf: &mut BytesMut) -> Result<()>;
    /// Bytes that [`Nullable::encode_nullable`] appends.
    fn nullable_len(value: Option<&Self>) -> usize;
    /// Reads a value or the null marker.
    fn decode_nullable(r: &mut Reader) -> Result<Option<Self>>;
}

/// Cursor over one payload. `context` names the field being read, so errors say where the
/// input went wrong (`truncated ProducePartition.records: 12 more bytes needed`).
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
    context: &'static str,
}

impl Reader {
    /// A reader over the whole of `buf`.
    pub fn new(buf: Bytes) -> Reader {
        Reader {
            buf,
            context: "message",
        }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Names the field about to be read, for error messages.
    pub fn set_context(&mut self, context: &'static str) {
        self.context = context;
    }

    /// The field being read, as last set by [`Reader::set_context`].
    pub fn context(&self) -> &'static str {
        self.context
    }

    /// Succeeds only when every byte was consumed: trailing bytes mean the peer encoded
    /// something this decoder does not know about.
    pub fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes {
                context: self.context,
                remaining: self.buf.len(),
            })
        }
    }

    fn ensure(&self, n: usize) -> Result<()> {
        if n > self.buf.len() {
            return Err(Error::Truncated {
                context: self.context,
                needed: n - self.buf.len(),
            });
        }
        Ok(())
    }

    /// The next `n` bytes as a zero-copy slice of the input.
    pub fn get_slice(&mut self, n: usize) -> Result<Bytes> {
        self.ensure(n)?;
        Ok(self.buf.split_to(n))
    }

    /// The next `N` bytes as an array.
    pub fn get_array_of<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.ensure(N)?;
        let mut out = [0u8; N];
        self.buf.copy_to_slice(&mut out);
        Ok(out)
    }

    /// Reads an `i8`.
    pub fn get_i8(&mut self) -> Result<i8> {
        self.get_array_of::<1>().map(i8::from_be_bytes)
    }
    /// Reads a `u8`.
    pub fn get_u8(&mut self) -> Result<u8> {
        self.get_array_of::<1>().map(u8::from_be_bytes)
    }
    /// Reads a big-endian `i16`.
    pub fn get_i16(&mut self) -> Result<i16> {
        self.get_array_of::<2>().map(i16::from_be_bytes)
    }
    /// Reads a big-endian `u16`.
    pub fn get_u16(&mut self) -> Result<u16> {
        self.get_array_of::<2>().map(u16::from_be_bytes)
    }
    /// Reads a big-endian `i32`.
    pub fn get_i32(&mut self) -> Result<i32> {
        self.get_array_of::<4>().map(i32::from_be_bytes)
    }
    /// Reads a big-endian `u32`.
    pub fn get_u32(&mut self) -> Result<u32> {
        self.get_array_of::<4>().map(u32::from_be_bytes)
    }
    /// Reads a big-endian `i64`.
    pub fn get_i64(&mut self) -> Result<i64> {
        self.get_array_of::<8>().map(i64::from_be_bytes)
    }
    /// Reads a big-endian `u64`.
    pub fn get_u64(&mut self) -> Result<u64> {
        self.get_array_of::<8>().map(u64::from_be_bytes)
    }

    /// Reads a boolean: one byte, 0 or 1; anything else is an error, so that every value
    /// has exactly one encoding.
    pub fn get_bool(&mut self) -> Result<bool> {
        match self.get_u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(Error::Invalid {
                field: self.context,
                reason: format!("boolean byte {other}, expected 0 or 1"),
            }),
        }
    }

    /// Reads a string that may be null.
    pub fn get_nullable_string(&mut self) -> Result<Option<String>> {
        let len = self.get_u16()?;
        if len == STRING_NULL_LEN {
            return Ok(None);
        }
        let raw = self.get_slice(usize::from(len))?;
        match std::str::from_utf8(&raw) {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(e) => Err(Error::Invalid {
                field: self.context,
                reason: format!("string is not valid UTF-8: {e}"),
            }),
        }
    }

    /// Reads a string; null is an error.
    pub fn get_string(&mut self) -> Result<String> {
        self.get_nullable_string()?
            .ok_or_else(|| self.null_error("string"))
    }

    /// Reads a byte string that may be null, as a zero-copy slice of the input.
    pub fn get_nullable_bytes(&mut self) -> Result<Option<Bytes>> {
        match self.get_len()? {
            None => Ok(None),
            Some(len) => self.get_slice(len).map(Some),
        }
    }

    /// Reads a byte string; null is an error.
    pub fn get_bytes(&mut self) -> Result<Bytes> {
        self.get_nullable_bytes()?
            .ok_or_else(|| self.null_error("byte string"))
    }

    /// Reads an array that may be null. `min_element_len` is the fewest bytes one element
    /// takes; a count that the remaining input cannot hold is refused before allocating.
    pub fn get_nullable_array<T>(
        &mut self,
        min_element_len: u32,
        mut element: impl FnMut(&mut Reader) -> Result<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some(count) = self.get_len()? else {
            return Ok(None);
        };
        // Zero-sized elements still cost a loop iteration; count them as one byte so the
        // loop is bounded by the input too.
        let min_len = u64::from(min_element_len.max(1));
        let needed = count as u64 * min_len;
        if needed > self.buf.len() as u64 {
            return Err(Error::Invalid {
                field: self.context,
                reason: format!(
                    "array of {count} elements needs at least {needed} bytes, only {} remain",
                    self.buf.len()
                ),
            });
        }
        let mut out = Vec::with_capacity(count.min(ARRAY_PREALLOC_MAX));
        for _ in 0..count {
            out.push(element(self)?);
        }
        Ok(Some(out))
    }

    /// Reads an array; null is an error.
    pub fn get_array<T>(
        &mut self,
        min_element_len: u32,
        element: impl FnMut(&mut Reader) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.get_nullable_array(min_element_len, element)?
            .ok_or_else(|| self.null_error("array"))
    }

    /// Reads an `i32` length or count: `None` for -1 (null), an error for other negatives.
    fn get_len(&mut self) -> Result<Option<usize>> {
        let len = self.get_i32()?;
        match len {
            -1 => Ok(None),
            n if n < -1 => Err(Error::NegativeLength {
                field: self.context,
                length: n,
            }),
            // Non-negative i32 always fits in usize on the 32- and 64-bit targets we build.
            n => Ok(Some(n as usize)),
        }
    }

    fn null_error(&self, what: &str) -> Error {
        Error::Invalid {
            field: self.context,
            reason: format!("null where a {what} is required"),
        }
    }
}

/// Appends a string (`u16` length + UTF-8).
pub fn put_string(buf: &mut impl BufMut, s: &str) -> Result<()> {
    if s.len() > STRING_MAX_LEN {
        return Err(Error::TooLong {
            what: "string",
            len: s.len(),
            max: STRING_MAX_LEN,
        });
    }
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
    Ok(())
}

/// Appends a string or the null marker.
pub fn put_nullable_string(buf: &mut impl BufMut, s: Option<&str>) -> Result<()> {
    match s {
        Some(s) => put_string(buf, s),
        None => {
            buf.put_u16(STRING_NULL_LEN);
            Ok(())
        }
    }
}

/// Appends an `i32` length or count, refusing values the field cannot carry.
pub fn put_len(buf: &mut impl BufMut, what: &'static str, len: usize) -> Result<()> {
    if len > BYTES_MAX_LEN {
        return Err(Error::TooLong {
            what,
            len,
            max: BYTES_MAX_LEN,
        });
    }
    buf.put_i32(len as i32);
    Ok(())
}

/// Appends the null marker of bytes and arrays (`i32` -1).
pub fn put_null(buf: &mut impl BufMut) {
    buf.put_i32(-1);
}

/// Appends a byte string (`i32` length + bytes).
pub fn put_bytes(buf: &mut impl BufMut, b: &[u8]) -> Result<()> {
    put_len(buf, "byte string", b.len())?;
    buf.put_slice(b);
    Ok(())
}

/// Appends a byte string or the null marker.
pub fn put_nullable_bytes(buf: &mut impl BufMut, b: Option<&[u8]>) -> Result<()> {
    match b {
        Some(b) => put_bytes(buf, b),
        None => {
            put_null(buf);
            Ok(())
        }
    }
}

macro_rules! impl_int {
    ($($ty:ty, $get:ident, $put:ident;)*) => {$(
        impl Encode for $ty {
            fn encode(&self, buf: &mut BytesMut) -> Result<()> {
                buf.$put(*self);
                Ok(())
            }
            fn encoded_len(&self) -> usize {
                std::mem::size_of::<$ty>()
            }
        }
        impl Decode for $ty {
            const MIN_LEN: u32 = std::mem::size_of::<$ty>() as u32;
            fn decode(r: &mut Reader) -> Result<Self> {
                r.$get()
            }
        }
    )*};
}

impl_int! {
    i8, get_i8, put_i8;
    u8, get_u8, put_u8;
    i16, get_i16, put_i16;
    u16, get_u16, put_u16;
    i32, get_i32, put_i32;
    u32, get_u32, put_u32;
    i64, get_i64, put_i64;
    u64, get_u64, put_u64;
}

macro_rules! impl_newtype {
    ($($ty:ident($inner:ty);)*) => {$(
        impl Encode for $ty {
            fn encode(&self, buf: &mut BytesMut) -> Result<()> {
                self.0.encode(buf)
            }
            fn encoded_len(&self) -> usize {
                self.0.encoded_len()
            }
        }
        impl Decode for $ty {
            const MIN_LEN: u32 = <$inner>::MIN_LEN;
            fn decode(r: &mut Reader) -> Result<Self> {
                <$inner>::decode(r).map($ty)
            }
        }
    )*};
}

impl_newtype! {
    Offset(i64);
    LeaderEpoch(i32);
    BrokerId(i32);
    PartitionId(i32);
}

impl Encode for bool {
    fn encode(&self, buf: &mut BytesMut) -> Result<()> {
        buf.put_u8(u8::from(*self));
        Ok(())
    }
    fn encoded_len(&self) -> usize {
        1
    }
}

impl Decode for bool {
    const MIN_LEN: u32 = 1;
    fn decode(r: &mut Reader) -> Result<Self> {
        r.get_bool()
    }
}

impl<const N: usize> Encode for [u8; N] {
    fn encode(&self, buf: &mut BytesMut) -> Result<()> {
        buf.put_slice(self);
        Ok(())
    }
    fn encoded_len(&self) -> usize {
        N
    }
}

impl<const N: usize> Decode for [u8; N] {
    const MIN_LEN: u32 = N as u32;
    fn decode(r: &mut Reader) -> Result<Self> {
        r.get_array_of::<N>()
    }
}

impl Encode for String {
    fn encode(&self, buf: &mut BytesMut) -> Result<()> {
        put_string(buf, self)
    }
    fn encoded_len(&self) -> usize {
        2 + self.len()
    }
}

impl Decode for String {
    const MIN_LEN: u32 = 2;
    fn decode(r: &mut Reader) -> Result<Self> {
        r.get_string()
    }
}

impl Nullable for String {
    const NULLABLE_MIN_LEN: u32 = 2;
    fn encode_nullable(value: Option<&Self>, buf: &mut BytesMut) -> Result<()> {
        put_nullable_string(buf, value.map(String::as_str))
    }
    fn nullable_len(value: Option<&Self>) -> usize {
        2 + value.map_or(0, String::len)
    }
    fn decode_nullable(r: &mut Reader) -> Result<Option<Self>> {
        r.get_nullable_string()
    }
}

impl Encode for Bytes {
    fn encode(&self, buf: &mut BytesMut) -> Result<()> {
        put_bytes(buf, self)
    }
    fn encoded_len(&self) -> usize {
        4 + self.len()
    }
    fn encode_spliced(&self, frame: &mut SplicedFrame) -> Result<()> {
        put_len(frame.head_mut(), "byte string", self.len())?;
        frame.put_shared(self);
        Ok(())
    }
}

impl Decode for Bytes {
    const MIN_LEN: u32 = 4;
    fn decode(r: &mut Reader) -> Result<Self> {
        r.get_bytes()
    }
}

impl Nullable for Bytes {
    const NULLABLE_MIN_LEN: u32 = 4;
    fn encode_nullable(value: Option<&Self>, buf: &mut BytesMut) -> Result<()> {
        put_nullable_bytes(buf, value.map(|b| &b[..]))
    }
    fn nullable_len(value: Option<&Self>) -> usize {
        4 + value.map_or(0, Bytes::len)
    }
    fn decode_nullable(r: &mut Reader) -> Result<Option<Self>> {
        r.get_nullable_bytes()
    }
}

impl Encode for Records {
    /// Records in a file are read here: only [`Encode::encode_spliced`] sends them from
    /// the file.
    fn encode(&self, buf: &mut BytesMut) -> Result<()> {
        match self {
            Records::Memory(bytes) => bytes.encode(buf),
            Records::File(slice) => {
                put_len(buf, "byte string", slice.len())?;
                slice.read_into(buf).map_err(|e| Error::Invalid {
                    field: "records",
                    reason: format!("reading them from their file failed: {e}"),
                })
            }
        }
    }
    fn encoded_len(&self) -> usize {
        4 + self.len()
    }
    fn encode_spliced(&self, frame: &mut SplicedFrame) -> Result<()> {
        match self {
            Records::Memory(bytes) => bytes.encode_spliced(frame),
            Records::File(slice) => {
                put_len(frame.head_mut(), "byte string", slice.len())?;
                frame.put_file(slice);
                Ok(())
            }
        }
    }
}

impl Decode for Records {
    const MIN_LEN: u32 = 4;
    fn decode(r: &mut Reader) -> Result<Self> {
        r.get_bytes().map(Records::Memory)
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, buf: &mut BytesMut) -> Result<()> {
        put_len(buf, "array", self.len())?;
        self.iter().try_for_each(|e| e.encode(buf))
    }
    fn encoded_len(&self) -> usize {
        4 + self.iter().map(Encode::encoded_len).sum::<usize>()
    }
    fn encode_spliced(&self, frame: &mut SplicedFrame) -> Result<()> {
        put_len(frame.head_mut(), "array", self.len())?;
        self.iter().try_for_each(|e| e.encode_spliced(frame))
    }
}

impl<T: Decode> Decode for Vec<T> {
    const MIN_LEN: u32 = 4;
    fn decode(r: &mut Reader) -> Result<Self> {
        r.get_array(T::MIN_LEN, T::decode)
    }
}

impl<T: Encode + Decode> Nullable for Vec<T> {
    const NULLABLE_MIN_LEN: u32 = 4;
    fn encode_nullable(value: Option<&Self>, buf: &mut BytesMut) -> Result<()> {
        match value {
            Some(v) => v.encode(buf),
            None => {
                put_null(buf);
                Ok(())
            }
        }
    }
    fn nullable_len(value: Option<&Self>) -> usize {
        value.map_or(4, Encode::encoded_len)
    }
    fn decode_nullable(r: &mut Reader) -> Result<Option<Self>> {
        r.get_nullable_array(T::MIN_LEN, T::decode)
    }
}

impl<T: Nullable> Encode for Option<T> {
    fn encode(&self, buf: &mut BytesMut) -> Result<()> {
        T::encode_nullable(self.as_ref(), buf)
    }
    fn encoded_len(&self) -> usize {
        T::nullable_len(self.as_ref())
    }
}

impl<T: Nullable> Decode for Option<T> {
    const MIN_LEN: u32 = T::NULLABLE_MIN_LEN;
    fn decode(r: &mut Reader) -> Result<Self> {
        T::decode_nullable(r)
    }
}

/// Defines a message struct whose wire form is its fields in declaration order, with its
/// [`Encode`], [`Decode`] and (in tests) random-value generator. One definition per struct
/// keeps the field order of encoder, decoder and generator identical by construction.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::wire::Encode for $name {
            fn encode(&self, buf: &mut ::bytes::BytesMut) -> $crate::Result<()> {
                let _ = &buf;
                $( $crate::wire::Encode::encode(&self.$field, buf)?; )*
                Ok(())
            }
            fn encoded_len(&self) -> usize {
                0 $( + $crate::wire::Encode::encoded_len(&self.$field) )*
            }
            fn encode_spliced(&self, frame: &mut $crate::frame::SplicedFrame) -> $crate::Result<()> {
                let _ = &frame;
                $( $crate::wire::Encode::encode_spliced(&self.$field, frame)?; )*
                Ok(())
            }
        }

        impl $crate::wire::Decode for $name {
            const MIN_LEN: u32 = 0 $( + <$ty as $crate::wire::Decode>::MIN_LEN )*;
            fn decode(r: &mut $crate::wire::Reader) -> $crate::Result<Self> {
                let _ = &r;
                Ok($name {
                    $( $field: {
                        r.set_context(concat!(stringify!($name), ".", stringify!($field)));
                        <$ty as $crate::wire::Decode>::decode(r)?
                    }, )*
                })
            }
        }

        #[cfg(test)]
        impl $crate::wire::testing::Generate for $name {
            fn generate(g: &mut ::proptest::test_runner::TestRunner) -> Self {
                let _ = &g;
                $name { $( $field: $crate::wire::testing::Generate::generate(g), )* }
            }
        }
    };
}
pub(crate) use wire_struct;

/// Defines a fieldless `i8` enum on the wire; decoding an unknown value is an error, since
/// guessing what a flag means is worse than refusing it.
macro_rules! wire_enum_i8 {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(i8)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )*
        }

        impl $crate::wire::Encode for $name {
            fn encode(&self, buf: &mut ::bytes::BytesMut) -> $crate::Result<()> {
                ::bytes::BufMut::put_i8(buf, *self as i8);
                Ok(())
            }
            fn encoded_len(&self) -> usize {
                1
            }
        }

        impl $crate::wire::Decode for $name {
            const MIN_LEN: u32 = 1;
            fn decode(r: &mut $crate::wire::Reader) -> $crate::Result<Self> {
                match r.get_i8()? {
                    $( $value => Ok($name::$variant), )*
                    other => Err($crate::Error::Invalid {
                        field: r.context(),
                        reason: format!("unknown {} {other}", stringify!($name)),
                    }),
                }
            }
        }

        #[cfg(test)]
        impl $crate::wire::testing::Generate for $name {
            fn generate(g: &mut ::proptest::test_runner::TestRunner) -> Self {
                const ALL: &[$name] = &[$($name::$variant),*];
                let i = usize::generate(g) % ALL.len();
                ALL[i]
            }
        }
    };
}
pub(crate) use wire_enum_i8;

/// Random values and the round-trip check shared by every codec test of the crate.
#[cfg(test)]
pub(crate) mod testing {
    use std::fmt::Debug;
    use std::marker::PhantomData;

    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;
    use proptest::strategy::{NewTree, ValueTree};
    use proptest::test_runner::TestRunner;

    use super::{Decode, Encode, Reader};
    use crate::types::{BrokerId, LeaderEpoch, Offset, PartitionId};

    /// A type that can produce an arbitrary value of itself. Leaves draw from proptest's own
    /// strategies; structs are generated field by field by `wire_struct!`.
    pub(crate) trait Generate: Sized {
        /// One random value.
        fn generate(g: &mut TestRunner) -> Self;
    }

    /// Draws one value from a proptest strategy.
    pub(crate) fn draw<S: Strategy>(g: &mut TestRunner, s: S) -> S::Value {
        s.new_tree(g).expect("strategy cannot fail").current()
    }

    macro_rules! generate_any {
        ($($ty:ty),*) => {$(
            impl Generate for $ty {
                fn generate(g: &mut TestRunner) -> Self {
                    draw(g, any::<$ty>())
                }
            }
        )*};
    }
    generate_any!(i8, u8, i16, u16, i32, u32, i64, u64, usize, bool, [u8; 16]);

    macro_rules! generate_newtype {
        ($($ty:ident),*) => {$(
            impl Generate for $ty {
                fn generate(g: &mut TestRunner) -> Self {
                    $ty(Generate::generate(g))
                }
            }
        )*};
    }
    generate_newtype!(Offset, LeaderEpoch, BrokerId, PartitionId);

    impl Generate for String {
        fn generate(g: &mut TestRunner) -> Self {
            draw(g, proptest::collection::vec(any::<char>(), 0..8))
                .into_iter()
                .collect()
        }
    }

    impl Generate for Bytes {
        fn generate(g: &mut TestRunner) -> Self {
            Bytes::from(draw(g, proptest::collection::vec(any::<u8>(), 0..24)))
        }
    }

    impl Generate for crate::Records {
        fn generate(g: &mut TestRunner) -> Self {
            crate::Records::Memory(Bytes::generate(g))
        }
    }

    impl<T: Generate> Generate for Vec<T> {
        fn generate(g: &mut TestRunner) -> Self {
            let n = draw(g, 0usize..4);
            (0..n).map(|_| T::generate(g)).collect()
        }
    }

    impl<T: Generate> Generate for Option<T> {
        fn generate(g: &mut TestRunner) -> Self {
            if draw(g, 0u8..4) == 0 {
                None
            } else {
                Some(T::generate(g))
            }
        }
    }

    /// A proptest strategy over any [`Generate`] type. It does not shrink: a failure prints
    /// the whole value and proptest records the seed for replay.
    pub(crate) struct Arb<T>(PhantomData<fn() -> T>);

    impl<T> Debug for Arb<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Arb")
        }
    }

    impl<T: Generate + Clone + Debug> Strategy for Arb<T> {
        type Tree = Just<T>;
        type Value = T;
        fn new_tree(&self, g: &mut TestRunner) -> NewTree<Self> {
            Ok(Just(T::generate(g)))
        }
    }

    /// The strategy of arbitrary `T`.
    pub(crate) fn arb<T: Generate + Clone + Debug>() -> Arb<T> {
        Arb(PhantomData)
    }

    /// Encodes `value`, checks `encoded_len`, decodes it back, and checks that the decoder
    /// consumed exactly the encoding and returned an equal value.
    pub(crate) fn check_round_trip<T: Encode + Decode + PartialEq + Debug>(value: &T) {
        let mut buf = BytesMut::new();
        value.encode(&mut buf).expect("encode");
        assert_eq!(buf.len(), value.encoded_len(), "encoded_len of {value:?}");
        let mut r = Reader::new(buf.freeze());
        let decoded = T::decode(&mut r).expect("decode");
        r.finish().expect("decoder consumed the whole encoding");
        assert_eq!(&decoded, value);
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{arb, check_round_trip};
    use super::*;
    use proptest::prelude::*;

    fn reader(bytes: &[u8]) -> Reader {
        Reader::new(Bytes::copy_from_slice(bytes))
    }

    #[test]
    fn known_encodings() {
        let check = |value: &dyn Fn(&mut BytesMut) -> Result<()>, expected: &[u8]| {
            let mut buf = BytesMut::new();
            value(&mut buf).unwrap();
            assert_eq!(&buf[..], expected);
        };
        check(&|b| 0x0102_i16.encode(b), &[1, 2]);
        check(&|b| (-2_i32).encode(b), &[0xff, 0xff, 0xff, 0xfe]);
        check(&|b| "hi".to_string().encode(b), &[0, 2, b'h', b'i']);
        check(&|b| None::<String>.encode(b), &[0xff, 0xff]);
        check(&|b| None::<Bytes>.encode(b), &[0xff; 4]);
        check(&|b| vec![7_u8].encode(b), &[0, 0, 0, 1, 7]);
        check(&|b| None::<Vec<u8>>.encode(b), &[0xff; 4]);
    }

    #[test]
    fn negative_lengths_other_than_null_are_rejected() {
        let minus_two = [0xff, 0xff, 0xff, 0xfe];
        assert!(matches!(
            reader(&minus_two).get_nullable_bytes(),
            Err(Error::NegativeLength { length: -2, .. })
        ));
        assert!(matches!(
            reader(&minus_two).get_nullable_array(1, |r| r.get_u8()),
            Err(Error::NegativeLength { length: -2, .. })
        ));
        assert!(matches!(
            reader(&[0x80, 0, 0, 0]).get_bytes(),
            Err(Error::NegativeLength { .. })
        ));
    }

    #[test]
    fn null_where_required_is_rejected() {
        assert!(reader(&[0xff, 0xff]).get_string().is_err());
        assert!(reader(&[0xff; 4]).get_bytes().is_err());
        assert!(reader(&[0xff; 4]).get_array(1, |r| r.get_u8()).is_err());
        assert_eq!(reader(&[0xff, 0xff]).get_nullable_string().unwrap(), None);
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        // 2^31 - 1 elements of at least 4 bytes each, in a 4-byte input.
        let err = reader(&[0x7f, 0xff, 0xff, 0xff])
            .get_array(4, |r| r.get_i32())
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        // Zero-sized elements are counted as one byte each.
        let err = reader(&[0x7f, 0xff, 0xff, 0xff])
            .get_array(0, |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        assert!(reader(&[0, 0, 0, 0x10, 1]).get_bytes().is_err());
        assert!(reader(&[0x10, 0, b'a']).get_string().is_err());
    }

    #[test]
    fn invalid_utf8_and_bool_are_rejected() {
        assert!(reader(&[0, 1, 0xff]).get_string().is_err());
        assert!(reader(&[2]).get_bool().is_err());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut r = reader(&[0, 1, 2]);
        assert_eq!(r.get_u16().unwrap(), 1);
        assert!(matches!(
            r.finish(),
            Err(Error::TrailingBytes { remaining: 1, .. })
        ));
    }

    #[test]
    fn too_long_values_are_refused_on_encode() {
        let long = "x".repeat(STRING_MAX_LEN + 1);
        assert!(matches!(
            put_string(&mut BytesMut::new(), &long),
            Err(Error::TooLong { .. })
        ));
        assert!(put_string(&mut BytesMut::new(), &long[1..]).is_ok());
    }

    #[test]
    fn bytes_are_sliced_without_copy() {
        let input = Bytes::from_static(&[0, 0, 0, 2, 9, 8]);
        let mut r = Reader::new(input.clone());
        let out = r.get_bytes().unwrap();
        assert_eq!(&out[..], &[9, 8]);
        assert_eq!(out.as_ptr(), input[4..].as_ptr());
    }

    proptest! {
        #[test]
        fn primitives_round_trip(
            a in any::<i64>(), b in any::<u16>(), c in any::<bool>(),
            s in arb::<Option<String>>(), d in arb::<Option<Bytes>>(),
            v in arb::<Option<Vec<i32>>>(), w in arb::<Vec<String>>(),
        ) {
            check_round_trip(&a);
            check_round_trip(&b);
            check_round_trip(&c);
            check_round_trip(&s);
            check_round_trip(&d);
            check_round_trip(&v);
            check_round_trip(&w);
        }

        #[test]
        fn primitives_decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let input = Bytes::from(bytes);
            let _ = Reader::new(input.clone()).get_nullable_string();
            let _ = Reader::new(input.clone()).get_nullable_bytes();
            let _ = Reader::new(input.clone()).get_bool();
            let _ = Reader::new(input.clone()).get_i64();
            let _ = Vec::<Option<String>>::decode(&mut Reader::new(input.clone()));
            let _ = Option::<Vec<Vec<u8>>>::decode(&mut Reader::new(input.clone()));
            let _ = Vec::<Bytes>::decode(&mut Reader::new(input));
        }
    }
}
