//! The record codec and typed tables.
//!
//! Owns how keys and values become bytes: values are postcard behind a
//! schema-version byte ([`Record`]), keys use an order-preserving,
//! self-delimiting encoding ([`Key`]) so that a prefix of a composite key is a
//! byte prefix of the full key and scans come back in key order. It must not
//! touch sled or know which tables exist: tables are declared by the crates
//! that own them, as `const` [`Table`] values.

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A value that can be stored: serde + postcard behind a schema-version byte.
///
/// The byte lets a later release read data an earlier one wrote: bump
/// [`Record::VERSION`] when the shape changes and teach [`Record::upgrade`] to
/// read the old shape.
pub trait Record: Serialize + DeserializeOwned {
    /// The schema version written in front of every encoded value.
    const VERSION: u8 = 1;

    /// Decodes a value written under an older `version`. `None` means the
    /// version is unknown, which surfaces as [`DecodeErrorKind::UnknownVersion`].
    fn upgrade(version: u8, body: &[u8]) -> Option<Result<Self, postcard::Error>> {
        let _ = (version, body);
        None
    }
}

/// A count kept with the records it counts (e.g. a table's size, for a page's
/// `totalElements`): written only by the journal, from the deltas batches
/// add ([`Batch::add`](crate::Batch::add)); read with
/// [`Store::count`](crate::Store::count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count(pub u64);

impl Record for Count {}

/// Encoding a value failed: a programming error in the type's serde impl
/// (postcard cannot encode, for example, sequences of unknown length).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode a record for table {table}: {source}")]
pub struct EncodeError {
    /// The table the value was meant for.
    pub table: &'static str,
    /// What postcard said.
    #[source]
    pub source: postcard::Error,
}

/// A stored value could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode record {key} in table {table}: {kind}")]
pub struct DecodeError {
    /// The table the record was read from.
    pub table: &'static str,
    /// The record's key, rendered for humans (hex where it is not text).
    pub key: String,
    /// What is wrong with it.
    pub kind: DecodeErrorKind,
}

/// Why a stored value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The value is empty: not even a version byte.
    #[error("the value is empty")]
    Empty,
    /// Written by a release that knows a schema this one does not.
    #[error("unknown schema version {0}")]
    UnknownVersion(u8),
    /// The version is known but the body does not decode under it.
    #[error("malformed body: {0}")]
    Malformed(postcard::Error),
    /// The key itself does not decode as the table's key type.
    #[error("malformed key")]
    MalformedKey,
}

pub(crate) fn encode_value<V: Record>(table: &'static str, value: &V) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![V::VERSION];
    postcard::to_io(value, &mut out).map_err(|source| EncodeError { table, source })?;
    Ok(out)
}

pub(crate) fn decode_value<V: Record>(bytes: &[u8]) -> Result<V, DecodeErrorKind> {
    let (&version, body) = bytes.split_first().ok_or(DecodeErrorKind::Empty)?;
    let decoded = if version == V::VERSION {
        postcard::from_bytes(body)
    } else {
        V::upgrade(version, body).ok_or(DecodeErrorKind::UnknownVersion(version))?
    };
    decoded.map_err(DecodeErrorKind::Malformed)
}

/// Renders raw key bytes for an error message: text if it is text, else hex.
pub(crate) fn render_key(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.chars().all(|c| !c.is_control()) => text.to_owned(),
        _ => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// A key type: an order-preserving, self-delimiting byte encoding.
///
/// Order-preserving means byte order equals key order, so scans are sorted.
/// Self-delimiting means the encoding of `a` is a prefix of the encoding of
/// `(a, b)`, so a composite key can be scanned by its leading part.
pub trait Key: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one key off the front of `input`, advancing it.
    fn decode(input: &mut &[u8]) -> Option<Self>;
}

impl Key for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        let (head, rest) = input.split_first_chunk::<8>()?;
        *input = rest;
        Some(u64::from_be_bytes(*head))
    }
}

impl Key for u32 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        let (head, rest) = input.split_first_chunk::<4>()?;
        *input = rest;
        Some(u32::from_be_bytes(*head))
    }
}

/// Strings are escaped (`0x00` becomes `0x00 0xff`) and end in `0x00 0x01`,
/// which keeps byte order equal to string order and marks where they end.
impl Key for String {
    fn encode(&self, out: &mut Vec<u8>) {
        for &b in self.as_bytes() {
            out.push(b);
            if b == 0 {
                out.push(0xff);
            }
        }
        out.extend_from_slice(&[0, 1]);
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        let mut raw = Vec::new();
        let mut i = 0;
        loop {
            let b = *input.get(i)?;
            if b == 0 {
                match *input.get(i + 1)? {
                    0xff => raw.push(0),
                    1 => break,
                    _ => return None,
                }
                i += 2;
            } else {
                raw.push(b);
                i += 1;
            }
        }
        *input = &input[i + 2..];
        String::from_utf8(raw).ok()
    }
}

impl<A: Key, B: Key> Key for (A, B) {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
        self.1.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        Some((A::decode(input)?, B::decode(input)?))
    }
}

impl<A: Key, B: Key, C: Key> Key for (A, B, C) {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
        self.1.encode(out);
        self.2.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        Some((A::decode(input)?, B::decode(input)?, C::decode(input)?))
    }
}

/// A typed table: a name, a key type and a value type.
///
/// Declared as a `const` by the crate that owns the data, e.g.
/// `pub(crate) const COURSES: Table<u64, CourseRecord> = Table::new("courses");`.
/// Names must be unique within a store and must not contain a NUL byte.
pub struct Table<K, V> {
    name: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Table<K, V> {
    /// Declares a table. Panics (at compile time, in a `const`) on a name
    /// with a NUL byte, which would break the key space.
    pub const fn new(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            assert!(bytes[i] != 0, "table names must not contain NUL");
            i += 1;
        }
        Table { name, _types: PhantomData }
    }

    /// The table's name, as it appears in errors.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<K: Key, V> Table<K, V> {
    /// The byte prefix every key of this table starts with.
    pub(crate) fn prefix(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.name.len() + 2);
        out.push(b't');
        out.extend_from_slice(self.name.as_bytes());
        out.push(0);
        out
    }

    pub(crate) fn key_bytes(&self, key: &K) -> Vec<u8> {
        let mut out = self.prefix();
        key.encode(&mut out);
        out
    }

    /// The raw key of a leading part of a composite key.
    pub(crate) fn prefix_bytes<P: Key>(&self, part: &P) -> Vec<u8> {
        let mut out = self.prefix();
        part.encode(&mut out);
        out
    }

    pub(crate) fn decode_key(&self, raw: &[u8]) -> Result<K, DecodeError> {
        let prefix_len = self.name.len() + 2;
        let mut rest = raw.get(prefix_len..).unwrap_or_default();
        match K::decode(&mut rest) {
            Some(key) if rest.is_empty() => Ok(key),
            _ => Err(DecodeError { table: self.name, key: render_key(raw), kind: DecodeErrorKind::MalformedKey }),
        }
    }
}

impl<K, V> fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Table").field(&self.name).finish()
    }
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for Table<K, V> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        name: String,
    }
    impl Record for V1 {}

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        name: String,
        seats: u32,
    }
    impl Record for V2 {
        const VERSION: u8 = 2;
        fn upgrade(version: u8, body: &[u8]) -> Option<Result<Self, postcard::Error>> {
            (version == 1).then(|| postcard::from_bytes::<V1>(body).map(|v| V2 { name: v.name, seats: 0 }))
        }
    }

    fn encoded<K: Key>(key: &K) -> Vec<u8> {
        let mut out = Vec::new();
        key.encode(&mut out);
        out
    }

    #[test]
    fn values_round_trip_behind_their_version_byte() {
        let bytes = encode_value("t", &V1 { name: "korean".into() }).unwrap();
        assert_eq!(bytes[0], 1);
        assert_eq!(decode_value::<V1>(&bytes).unwrap(), V1 { name: "korean".into() });
    }

    #[test]
    fn an_old_version_is_upgraded_and_an_unknown_one_is_refused() {
        let old = encode_value("t", &V1 { name: "math".into() }).unwrap();
        assert_eq!(decode_value::<V2>(&old).unwrap(), V2 { name: "math".into(), seats: 0 });
        let mut future = old.clone();
        future[0] = 9;
        assert!(matches!(decode_value::<V2>(&future), Err(DecodeErrorKind::UnknownVersion(9))));
        assert!(matches!(decode_value::<V1>(&[]), Err(DecodeErrorKind::Empty)));
        assert!(matches!(decode_value::<V1>(&[1, 200]), Err(DecodeErrorKind::Malformed(_))));
    }

    #[test]
    fn a_string_key_may_contain_nul_and_still_delimits() {
        let key = ("a\0b".to_string(), 7u64);
        let bytes = encoded(&key);
        let mut input = bytes.as_slice();
        assert_eq!(<(String, u64)>::decode(&mut input), Some(key));
        assert!(input.is_empty());
    }

    proptest! {
        #[test]
        fn u64_keys_sort_like_numbers(a: u64, b: u64) {
            prop_assert_eq!(a.cmp(&b), encoded(&a).cmp(&encoded(&b)));
        }

        #[test]
        fn string_keys_sort_like_strings_and_round_trip(a in ".*", b in ".*", n: u64) {
            prop_assert_eq!(a.cmp(&b), encoded(&a).cmp(&encoded(&b)));
            let key = (a.clone(), n);
            let bytes = encoded(&key);
            prop_assert!(bytes.starts_with(&encoded(&a)));
            let mut input = bytes.as_slice();
            prop_assert_eq!(<(String, u64)>::decode(&mut input), Some(key));
        }
    }
}
