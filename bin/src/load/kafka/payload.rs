//! What runnel-load puts in a record: the value's fixed header (who wrote it, its sequence, its
//! key, when it was created, a CRC), the keys, and a small deterministic random generator.
//!
//! Value layout (big-endian), [`HEADER_LEN`] bytes, then filler up to `--record-size`:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `RNL1` |
//! | 4 | flags: [`FLAG_IDEMPOTENT`], [`FLAG_CRC`] |
//! | 5..8 | zero |
//! | 8..16 | load producer id (run id << 32 \| producer index) |
//! | 16..20 | partition the producer sent it to |
//! | 20..28 | sequence of this record for (producer, partition), from 0 |
//! | 28..32 | key index, or [`NO_KEY`] |
//! | 32..40 | create time, microseconds since the Unix epoch |
//! | 40..44 | CRC-32C of bytes 0..40 and 44.. (zero without [`FLAG_CRC`]) |
//!
//! A value shorter than the header carries none of this: such records (`--record-size` under
//! [`HEADER_LEN`]) cannot be verified and their end-to-end latency comes from the record's
//! millisecond timestamp. Pure code: runs anywhere.

use bytes::{BufMut, Bytes, BytesMut};

/// First four bytes of every value runnel-load writes.
pub const MAGIC: [u8; 4] = *b"RNL1";
/// Length of the value header.
pub const HEADER_LEN: usize = 44;
/// The producer was idempotent: a duplicate is a violation.
pub const FLAG_IDEMPOTENT: u8 = 1;
/// The CRC field is filled in.
pub const FLAG_CRC: u8 = 2;
/// Key index of a record without a key.
pub const NO_KEY: u32 = u32::MAX;
/// Most distinct keys `--keys` accepts (they are built once per producer).
pub const KEYS_MAX: u32 = 1_000_000;

const CRC_AT: usize = 40;

/// The header fields of one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Load producer id (not Kafka's producer id).
    pub producer: u64,
    /// Partition it was sent to.
    pub partition: i32,
    /// Sequence within (producer, partition).
    pub sequence: u64,
    /// Key index, or [`NO_KEY`].
    pub key_index: u32,
    /// Create time, microseconds since the Unix epoch.
    pub create_us: u64,
    /// [`FLAG_IDEMPOTENT`] | [`FLAG_CRC`].
    pub flags: u8,
}

/// Why a value that starts with [`MAGIC`] is not a good runnel-load value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueError {
    /// Shorter than the header.
    Truncated(usize),
    /// The CRC does not match the bytes.
    Crc {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueError::Truncated(length) => write!(out, "value of {length} bytes is truncated"),
            ValueError::Crc { stored, computed } => write!(
                out,
                "value CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

/// Writes a value of `size` bytes: the header (when it fits), then bytes of `filler` (cycled).
pub fn write_value(out: &mut BytesMut, stamp: &Stamp, filler: &[u8], size: usize) -> Bytes {
    out.clear();
    out.reserve(size);
    if size < HEADER_LEN {
        put_filler(out, filler, size);
        return out.split().freeze();
    }
    out.put_slice(&MAGIC);
    out.put_u8(stamp.flags);
    out.put_slice(&[0; 3]);
    out.put_u64(stamp.producer);
    out.put_i32(stamp.partition);
    out.put_u64(stamp.sequence);
    out.put_u32(stamp.key_index);
    out.put_u64(stamp.create_us);
    out.put_u32(0);
    debug_assert_eq!(out.len(), HEADER_LEN);
    put_filler(out, filler, size - HEADER_LEN);
    if stamp.flags & FLAG_CRC != 0 {
        let crc = value_crc(out);
        out[CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_be_bytes());
    }
    out.split().freeze()
}

fn put_filler(out: &mut BytesMut, filler: &[u8], mut length: usize) {
    assert!(!filler.is_empty() || length == 0, "no filler to write");
    while length > 0 {
        let take = length.min(filler.len());
        out.put_slice(&filler[..take]);
        length -= take;
    }
}

fn value_crc(value: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&value[..CRC_AT]), &value[HEADER_LEN..])
}

/// Reads a value's header: `Ok(None)` if the value is not one of ours (no magic).
pub fn read_value(value: &[u8]) -> Result<Option<Stamp>, ValueError> {
    if !value.starts_with(&MAGIC) {
        return Ok(None);
    }
    if value.len() < HEADER_LEN {
        return Err(ValueError::Truncated(value.len()));
    }
    let u32_at = |at: usize| u32::from_be_bytes(value[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_be_bytes(value[at..at + 8].try_into().expect("8 bytes"));
    let stamp = Stamp {
        flags: value[4],
        producer: u64_at(8),
        partition: u32_at(16) as i32,
        sequence: u64_at(20),
        key_index: u32_at(28),
        create_us: u64_at(32),
    };
    if stamp.flags & FLAG_CRC != 0 {
        let stored = u32_at(CRC_AT);
        let computed = value_crc(value);
        if stored != computed {
            return Err(ValueError::Crc { stored, computed });
        }
    }
    Ok(Some(stamp))
}

/// The key bytes of key index `index`.
pub fn key_bytes(index: u32) -> Bytes {
    Bytes::from(format!("key-{index}"))
}

/// Whether a record's key is the one its stamp names.
pub fn key_matches(stamp: &Stamp, key: Option<&[u8]>) -> bool {
    match (stamp.key_index, key) {
        (NO_KEY, None) => true,
        (NO_KEY, Some(_)) | (_, None) => false,
        (index, Some(key)) => key == key_bytes(index).as_ref(),
    }
}

/// `--keys`: no key, or uniform over N keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpace {
    /// Null keys (records spread by the sticky partitioner).
    None,
    /// Keys `key-0 .. key-{N-1}`, each equally likely.
    Uniform(u32),
}

impl std::fmt::Display for KeySpace {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySpace::None => out.write_str("none"),
            KeySpace::Uniform(count) => write!(out, "{count}"),
        }
    }
}

/// Parses `--keys none|N`.
pub fn parse_keys(text: &str) -> Result<KeySpace, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(KeySpace::None);
    }
    match text.parse::<u32>() {
        Ok(count) if (1..=KEYS_MAX).contains(&count) => Ok(KeySpace::Uniform(count)),
        _ => Err(format!(
            "{text:?}: --keys is `none` or a key count from 1 to {KEYS_MAX}"
        )),
    }
}

/// Picks keys for one producer.
pub struct KeyChooser {
    keys: Vec<Bytes>,
    random: SplitMix64,
}

impl KeyChooser {
    /// Builds the key set once; `seed` makes each producer's sequence of keys its own.
    pub fn new(space: KeySpace, seed: u64) -> KeyChooser {
        let keys = match space {
            KeySpace::None => Vec::new(),
            KeySpace::Uniform(count) => (0..count).map(key_bytes).collect(),
        };
        KeyChooser {
            keys,
            random: SplitMix64::new(seed),
        }
    }

    /// The next key and its index, or `None` for null keys.
    pub fn next_key(&mut self) -> Option<(u32, Bytes)> {
        if self.keys.is_empty() {
            return None;
        }
        let index = self.random.below(self.keys.len() as u64) as usize;
        Some((index as u32, self.keys[index].clone()))
    }
}

/// SplitMix64: a small, fast, well-mixed generator; enough for keys and filler bytes.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0), by rejection so no value is favoured.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "empty range");
        let zone = u64::MAX - u64::MAX % bound;
        loop {
            let value = self.next_u64();
            if value < zone {
                return value % bound;
            }
        }
    }

    /// `length` random bytes.
    pub fn bytes(&mut self, length: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(length + 8);
        while out.len() < length {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(length);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(flags: u8) -> Stamp {
        Stamp {
            producer: 0x1234_5678_0000_0003,
            partition: 7,
            sequence: 99,
            key_index: 5,
            create_us: 1_700_000_000_123_456,
            flags,
        }
    }

    #[test]
    fn values_round_trip_and_have_the_asked_size() {
        let filler = SplitMix64::new(1).bytes(100);
        let mut buffer = BytesMut::new();
        for size in [HEADER_LEN, HEADER_LEN + 1, 1024, 5000] {
            let value = write_value(&mut buffer, &stamp(FLAG_CRC), &filler, size);
            assert_eq!(value.len(), size);
            assert_eq!(read_value(&value), Ok(Some(stamp(FLAG_CRC))));
        }
        let small = write_value(&mut buffer, &stamp(FLAG_CRC), &filler, 10);
        assert_eq!(small.len(), 10);
        assert_eq!(read_value(&small), Ok(None));
        assert_eq!(
            read_value(b"something else entirely, long enough"),
            Ok(None)
        );
    }

    #[test]
    fn a_changed_byte_fails_the_crc() {
        let filler = SplitMix64::new(2).bytes(64);
        let mut buffer = BytesMut::new();
        let value = write_value(&mut buffer, &stamp(FLAG_CRC), &filler, 300).to_vec();
        for at in [5, 9, 30, 43, 44, 299] {
            let mut changed = value.clone();
            changed[at] ^= 0x10;
            assert!(
                matches!(read_value(&changed), Err(ValueError::Crc { .. })),
                "byte {at}"
            );
        }
        assert_eq!(read_value(&value[..20]), Err(ValueError::Truncated(20)));
        // Without FLAG_CRC nothing is checked.
        let plain = write_value(&mut buffer, &stamp(0), &filler, 300).to_vec();
        let mut changed = plain.clone();
        changed[200] ^= 1;
        assert_eq!(read_value(&changed), Ok(Some(stamp(0))));
    }

    #[test]
    fn keys_match_their_index() {
        let keyed = stamp(0);
        assert!(key_matches(&keyed, Some(b"key-5")));
        assert!(!key_matches(&keyed, Some(b"key-6")));
        assert!(!key_matches(&keyed, None));
        let unkeyed = Stamp {
            key_index: NO_KEY,
            ..keyed
        };
        assert!(key_matches(&unkeyed, None));
        assert!(!key_matches(&unkeyed, Some(b"key-5")));
    }

    #[test]
    fn keys_are_uniform_over_the_key_space() {
        let mut chooser = KeyChooser::new(KeySpace::Uniform(10), 42);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            let (index, key) = chooser.next_key().expect("keyed");
            assert_eq!(key, key_bytes(index));
            counts[index as usize] += 1;
        }
        // Each key expects 10,000; a fair generator stays well within 5%.
        assert!(
            counts
                .iter()
                .all(|&count| (9_500..=10_500).contains(&count)),
            "{counts:?}"
        );
        assert!(KeyChooser::new(KeySpace::None, 1).next_key().is_none());
        let mut single = KeyChooser::new(KeySpace::Uniform(1), 3);
        assert_eq!(single.next_key().map(|(index, _)| index), Some(0));
    }

    #[test]
    fn keys_parse() {
        assert_eq!(parse_keys("none"), Ok(KeySpace::None));
        assert_eq!(parse_keys("NONE"), Ok(KeySpace::None));
        assert_eq!(parse_keys("1000"), Ok(KeySpace::Uniform(1000)));
        assert!(parse_keys("0").is_err());
        assert!(parse_keys("-3").is_err());
        assert!(parse_keys("2000000").is_err());
        assert!(parse_keys("many").is_err());
    }

    #[test]
    fn the_generator_is_deterministic_and_bounded() {
        let mut first = SplitMix64::new(7);
        let mut second = SplitMix64::new(7);
        assert_eq!(first.bytes(33), second.bytes(33));
        assert!((0..1000).all(|_| first.below(3) < 3));
        assert_ne!(SplitMix64::new(1).next_u64(), SplitMix64::new(2).next_u64());
    }
}
