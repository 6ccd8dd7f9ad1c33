//! Deterministic names. Kubernetes uses random suffixes; strait derives them
//! from a hash of what the name stands for, so the same input always yields the
//! same names and unrelated changes never rename anything.

/// The alphabet Kubernetes uses for generated name suffixes: no vowels (no
/// accidental words) and no characters that look alike.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a, 64 bit: tiny, fast and stable across releases and platforms.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separate parts so that ("ab","c") and ("a","bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `len` characters from [`ALPHABET`] taken from `hash`.
pub fn suffix(mut hash: u64, len: usize) -> String {
    let mut out = String::with_capacity(len);
    for _ in 0..len {
        out.push(ALPHABET[(hash % ALPHABET.len() as u64) as usize] as char);
        hash /= ALPHABET.len() as u64;
        if hash == 0 {
            hash = fnv1a(&[out.as_bytes()]);
        }
    }
    out
}

/// A `generateName`-style name: the base cut to leave room for the suffix,
/// as the API server does (names are at most 63 characters).
pub fn generated_name(base: &str, hash: u64) -> String {
    const SUFFIX_LEN: usize = 5;
    const MAX_BASE: usize = 63 - SUFFIX_LEN;
    let base = if base.len() > MAX_BASE {
        &base[..MAX_BASE]
    } else {
        base
    };
    format!("{base}{}", suffix(hash, SUFFIX_LEN))
}

/// A UID in the UUID format the API server uses, derived from what the
/// object is, so that it is the same every time the same object is made.
pub fn uid(kind: &str, namespace: &str, name: &str) -> String {
    let hi = fnv1a(&[
        b"uid",
        kind.as_bytes(),
        namespace.as_bytes(),
        name.as_bytes(),
    ]);
    let lo = fnv1a(&[&hi.to_le_bytes(), name.as_bytes()]);
    let n = (u128::from(hi) << 64) | u128::from(lo);
    // Version 4 / variant 1 bits, so that tools that parse UUIDs accept it.
    let n = (n & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_stable_and_use_the_alphabet() {
        let a = suffix(fnv1a(&[b"default", b"web"]), 5);
        assert_eq!(a, suffix(fnv1a(&[b"default", b"web"]), 5));
        assert_eq!(a.len(), 5);
        assert!(a.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
    }

    #[test]
    fn generated_names_fit_in_63_characters() {
        let long = "x".repeat(80);
        let name = generated_name(&format!("{long}-"), 7);
        assert_eq!(name.len(), 63);
    }
}
