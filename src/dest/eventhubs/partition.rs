//! Which partition a partition key lands on, computed the way Event Hubs computes it.
//!
//! Events are sent per partition (`<hub>/Partitions/<id>`), each carrying its partition key,
//! so one AMQP batch can hold many contexts and every context keeps its order on one
//! partition. That needs the service's key-to-partition mapping on our side: Jenkins'
//! lookup3 hash of the key's UTF-8 bytes, folded to 16 bits, modulo the partition count.
//! Microsoft's SDKs carry the same code for their buffered producers (the .NET
//! `PartitionResolver`, ported in `azure_messaging_eventhubs`'s crate-private
//! `partition_resolver`), which says it matches the Event Hubs gateway; it is not public in the
//! Rust crate, so it is ported here and checked against the .NET test vectors.

/// The index (into the hub's partition ids, in the order the service lists them) that
/// `partition_key` maps to.
pub fn partition_index(partition_key: &str, partition_count: usize) -> usize {
    let count = i32::try_from(partition_count.max(1)).unwrap_or(i32::MAX);
    let hash = i32::from(hash_code(partition_key));
    // C#'s `%` keeps the dividend's sign; the absolute value picks the partition.
    (hash % count).unsigned_abs() as usize
}

/// The 16-bit hash code Event Hubs derives from a partition key.
pub fn hash_code(partition_key: &str) -> i16 {
    let (hash1, hash2) = lookup3(partition_key.as_bytes(), 0, 0);
    (hash1 ^ hash2) as u16 as i16
}

fn le32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Bob Jenkins' lookup3 `hashlittle2`: two 32-bit hashes of `data`.
fn lookup3(data: &[u8], seed1: u32, seed2: u32) -> (u32, u32) {
    let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut a = 0xDEAD_BEEF_u32.wrapping_add(length).wrapping_add(seed1);
    let mut b = a;
    let mut c = a.wrapping_add(seed2);
    // Every full 12-byte block but the last (the last, even when full, is the tail).
    let blocks = if data.len() > 12 {
        (data.len() - 1) / 12
    } else {
        0
    };
    for block in data.chunks_exact(12).take(blocks) {
        a = a.wrapping_add(le32(&block[0..4]));
        b = b.wrapping_add(le32(&block[4..8]));
        c = c.wrapping_add(le32(&block[8..12]));
        mix(&mut a, &mut b, &mut c);
    }
    let tail = &data[blocks * 12..];
    if tail.is_empty() {
        return (c, b);
    }
    let mut padded = [0u8; 12];
    padded[..tail.len()].copy_from_slice(tail);
    // Adding the zero-padded tail equals lookup3's byte-by-byte switch.
    a = a.wrapping_add(le32(&padded[0..4]));
    b = b.wrapping_add(le32(&padded[4..8]));
    c = c.wrapping_add(le32(&padded[8..12]));
    final_mix(&mut a, &mut b, &mut c);
    (c, b)
}

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    for (shift_a, shift_b, shift_c) in [(4, 6, 8), (16, 19, 4)] {
        *a = a.wrapping_sub(*c) ^ c.rotate_left(shift_a);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a) ^ a.rotate_left(shift_b);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b) ^ b.rotate_left(shift_c);
        *b = b.wrapping_add(*a);
    }
}

fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(14));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(11));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(25));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(16));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(4));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(14));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(24));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of the .NET SDK's `PartitionResolverTests` (the service's own mapping).
    #[test]
    fn hash_codes_match_the_dotnet_vectors() {
        let cases: &[(&str, i16)] = &[
            ("7", -15263),
            ("131", 30562),
            ("7149583486996073602", 12977),
            ("FWfAT", -22341),
            ("sOdeEAsyQoEuEFPGerWO", -6503),
            (
                "FAyAIctPeCgmiwLKbJcyswoHglHVjQdvtBowLACDNORsYvOcLddNJYDmhAVkbyLOrHTKLneMNcbgWVlasVywOByANjs",
                5226,
            ),
            (
                "1XYM6!(7(lF5wq4k4m*e$Nc!1ezLJv*1YK1Y-C^*&B$O)lq^iUkG(TNzXG;Zi#z2Og*Qq0#^*k):vXh$3,C7We7%W0meJ;b3,rQCg^J;^twXgs5E$$hWKxqp",
                23950,
            ),
            (
                "E(x;RRIaQcJs*P;D&jTPau-4K04oqr:lF6Z):ERpo&;9040qyV@G1_c9mgOs-8_8/10Fwa-7b7-yP!T-!IH&968)FWuI;(^g$2fN;)HJ^^yTn:",
                -29304,
            ),
            ("!c*_!I@1^c", 15372),
            ("p4*!jioeO/z-!-;w:dh", -3104),
            ("$0cb", 26269),
            ("-4189260826195535198", 453),
        ];
        for (key, expected) in cases {
            assert_eq!(hash_code(key), *expected, "key {key}");
        }
    }

    #[test]
    fn keys_spread_over_partitions_deterministically() {
        let indexes: Vec<usize> = (0..400)
            .map(|i| partition_index(&format!("user-{i}"), 4))
            .collect();
        for partition in 0..4 {
            let share = indexes.iter().filter(|&&p| p == partition).count();
            assert!(
                (50..=150).contains(&share),
                "partition {partition}: {share}"
            );
        }
        assert_eq!(partition_index("user-7", 4), indexes[7]);
        assert_eq!(partition_index("anything", 1), 0);
    }
}
