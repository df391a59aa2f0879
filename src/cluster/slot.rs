//! Hash slots: `Slot` and `key_slot()`, the CRC16-XMODEM of a key (or of its hash tag) mod 16384.
//!
//! `key_slot` runs once per key of every request, so the hash-tag search runs only for keys that
//! contain a `{` at all, which is checked eight bytes at a time.

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: usize = 16384;

/// A hash slot, always `< 16384`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(pub u16);

impl Slot {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The part of `key` that is hashed: the content of the first `{...}` if it is non-empty,
/// otherwise the whole key (as Redis's `keyHashSlot`).
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The slot that owns `key`.
///
/// The common key has no `{`: that is checked eight bytes at a time (cheaper on a short key than
/// a byte-by-byte `position`), and only a key that has one goes through [`hash_tag`].
pub fn key_slot(key: &[u8]) -> Slot {
    let mut words = key.chunks_exact(8);
    let braced = words
        .by_ref()
        .any(|w| has_open_brace(w.try_into().expect("8 bytes")))
        || words.remainder().contains(&b'{');
    let hashed = if braced { hash_tag(key) } else { key };
    Slot(crc16::State::<crc16::XMODEM>::calculate(hashed) & (SLOT_COUNT as u16 - 1))
}

/// Whether `word` holds a `{`, with plain integer arithmetic: the classic "has a zero byte"
/// test on `word ^ "{{{{{{{{"`.
fn has_open_brace(word: [u8; 8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const BRACES: u64 = ONES * b'{' as u64;
    // A byte of `x` is zero exactly where `word` holds a '{'; this sets that byte's high bit
    // (borrows may set others above it, which only matters for whether any is set).
    let x = u64::from_ne_bytes(word) ^ BRACES;
    x.wrapping_sub(ONES) & !x & HIGHS != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values are what `CLUSTER KEYSLOT` answers on Redis 7.0.15.
    #[test]
    fn matches_cluster_keyslot() {
        let cases: &[(&[u8], u16)] = &[
            (b"", 0),
            (b"foo", 12182),
            (b"bar", 5061),
            (b"123456789", 12739),
            (b"{user1000}.following", 3443),
            (b"{user1000}.followers", 3443),
            (b"user1000", 3443),
            (b"foo{}{bar}", 8363),
            (b"foo{{bar}}zap", 4015),
            (b"foo{bar}{zap}", 5061),
            (b"{}", 15257),
            (b"{", 4092),
            (b"}", 12090),
            (b"a{b", 13340),
        ];
        for (key, slot) in cases {
            assert_eq!(
                key_slot(key),
                Slot(*slot),
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    /// The textbook bit-at-a-time CRC16-XMODEM, as Redis's `crc16.c` defines it.
    fn crc16_bitwise(data: &[u8]) -> u16 {
        let mut crc = 0u16;
        for &b in data {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    /// Redis's `keyHashSlot`, transcribed: the reference the word-wise brace check must agree
    /// with.
    fn key_slot_reference(key: &[u8]) -> Slot {
        Slot(crc16_bitwise(hash_tag(key)) & 16383)
    }

    #[test]
    fn agrees_with_the_reference_wherever_a_brace_sits() {
        // Every position in keys of every length around the 8-byte word size, with `{` and `}`
        // and the byte values next to `{` (which the word test must not mistake for it).
        for len in 0..40 {
            let mut key: Vec<u8> = (0..len as u8).map(|i| b'a' + i % 26).collect();
            assert_eq!(key_slot(&key), key_slot_reference(&key), "len {len}");
            for at in 0..len {
                for b in [b'{', b'}', b'{' - 1, b'{' + 1, 0xfb, 0x7b ^ 0x80] {
                    let was = key[at];
                    key[at] = b;
                    assert_eq!(
                        key_slot(&key),
                        key_slot_reference(&key),
                        "len {len} at {at}"
                    );
                    // And a tag closing a few bytes later.
                    if b == b'{' && at + 3 < len {
                        key[at + 3] = b'}';
                        assert_eq!(key_slot(&key), key_slot_reference(&key), "len {len} {at}");
                        key[at + 3] = b'a';
                    }
                    key[at] = was;
                }
            }
        }
    }

    #[test]
    fn hash_tag_edges() {
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"nobrace"), b"nobrace");
    }
}
