//! Hash slots: `Slot` and `key_slot()`, the CRC16-XMODEM of a key (or of its hash tag) mod 16384.
//!
//! `key_slot` runs once per key of every request, so the CRC uses lookup tables built at compile
//! time (two 256-entry tables, two bytes per step; Redis's `crc16.c` uses one, a byte per step),
//! and the hash-tag search runs only for keys that contain a `{` at all, which is checked eight
//! bytes at a time in the same pass.

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
/// One pass for the common key without a `{`: eight bytes at a time, each word checked for a
/// `{` and then folded into the CRC. A key that has one is hashed again through [`hash_tag`].
pub fn key_slot(key: &[u8]) -> Slot {
    let mut crc = 0;
    let mut words = key.chunks_exact(8);
    for word in words.by_ref() {
        let word: [u8; 8] = word.try_into().expect("chunks_exact(8)");
        if has_open_brace(word) {
            return tagged_key_slot(key);
        }
        crc = crc16_update(crc, &word);
    }
    let rest = words.remainder();
    if rest.contains(&b'{') {
        return tagged_key_slot(key);
    }
    Slot(crc16_update(crc, rest) & (SLOT_COUNT as u16 - 1))
}

/// The slot of a key that holds a `{`, which may or may not open a hash tag.
fn tagged_key_slot(key: &[u8]) -> Slot {
    Slot(crc16_update(0, hash_tag(key)) & (SLOT_COUNT as u16 - 1))
}

/// Whether `word` holds a `{`, with plain integer arithmetic: the classic "has a zero byte"
/// test on `word ^ "{{{{{{{{"` (cheaper on a short key than calling `memchr`).
fn has_open_brace(word: [u8; 8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const BRACES: u64 = ONES * b'{' as u64;
    // A byte of `x` is zero exactly where `word` holds a '{'; this sets that byte's high bit
    // (borrows may set others above it, which only matters for whether any is set).
    let x = u64::from_ne_bytes(word) ^ BRACES;
    x.wrapping_sub(ONES) & !x & HIGHS != 0
}

/// Continues a CRC16-XMODEM (CCITT polynomial 0x1021, initial value 0, no reflection: how
/// Redis Cluster hashes keys) over `data`.
///
/// Two bytes per step ("slicing by 2"): the CRC is 16 bits wide, so XOR-ing the next two bytes
/// into it leaves a 16-bit value whose CRC is the CRC of its high byte followed by a zero byte,
/// XOR the CRC of its low byte, two table lookups.
fn crc16_update(mut crc: u16, data: &[u8]) -> u16 {
    let mut pairs = data.chunks_exact(2);
    for pair in pairs.by_ref() {
        let x = crc ^ u16::from_be_bytes([pair[0], pair[1]]);
        crc = CRC16_HIGH[usize::from(x >> 8)] ^ CRC16_TABLE[usize::from(x & 0xff)];
    }
    if let &[b] = pairs.remainder() {
        crc = (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)];
    }
    crc
}

/// `CRC16_TABLE[i]` is the CRC of the byte `i`: the polynomial applied bit by bit, once per
/// possible top byte, so one input byte costs one lookup.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// `CRC16_HIGH[i]` is the CRC of the byte `i` followed by a zero byte: one more byte step
/// applied to `CRC16_TABLE[i]`.
const CRC16_HIGH: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let crc = CRC16_TABLE[i];
        table[i] = (crc << 8) ^ CRC16_TABLE[(crc >> 8) as usize];
        i += 1;
    }
    table
};

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

    /// The textbook bit-at-a-time CRC16-XMODEM, to check the table-driven one against.
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

    #[test]
    fn table_crc_matches_bitwise_crc() {
        // The standard check value of CRC-16/XMODEM.
        assert_eq!(crc16_update(0, b"123456789"), 0x31c3);
        assert_eq!(crc16_update(0, b""), 0);
        let every_byte: Vec<u8> = (0..=255).collect();
        for len in 0..every_byte.len() {
            let data = &every_byte[len..];
            assert_eq!(crc16_update(0, data), crc16_bitwise(data), "len {len}");
        }
        // Pseudo-random keys of every length up to 100.
        let mut x: u32 = 12345;
        let noise: Vec<u8> = (0..5000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        for (i, key) in noise.chunks(100).enumerate() {
            let key = &key[..i % 100 + 1];
            assert_eq!(crc16_update(0, key), crc16_bitwise(key));
        }
    }

    /// Redis's `keyHashSlot`, transcribed: the reference the one-pass version must agree with.
    fn key_slot_reference(key: &[u8]) -> Slot {
        Slot(crc16_bitwise(hash_tag(key)) & 16383)
    }

    #[test]
    fn one_pass_agrees_with_the_reference_wherever_a_brace_sits() {
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
