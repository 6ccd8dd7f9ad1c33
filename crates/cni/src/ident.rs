//! The identifiers a runtime hands the plugin (container ID, interface
//! name, network name), checked as the CNI skel and libcni check them, and
//! the derived names that stand for them wherever a name has to be written
//! into a grammar (nft text) or a path.
//!
//! Even valid identifiers never reach nft text or a file name: a container
//! ID may be any length the spec allows (a 300-character one does not fit in
//! a file name or an nft comment), so everything on disk and in the ruleset
//! is keyed by a digest of the identifiers instead.

use crate::error::{code, Error, Result};

/// What CNI_CONTAINERID must match (spec: "must be a unique plaintext
/// identifier … alphanumeric with `_`, `.`, `-`", as the skel's regex
/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`).
pub fn check_container_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::new(
            code::INVALID_ENVIRONMENT,
            "CNI_CONTAINERID is not set",
        ));
    }
    if !is_plain_identifier(id) {
        return Err(Error::new(
            code::INVALID_ENVIRONMENT,
            format!(
                "CNI_CONTAINERID {:?} is invalid: it must start with a letter or digit and hold only letters, digits, '_', '.' and '-'",
                shorten(id)
            ),
        ));
    }
    Ok(())
}

/// CNI_IFNAME (code 4) or a configured interface name such as `bridge`
/// (code 7): the kernel's rules for a link name, as the skel applies them.
pub fn check_interface_name(name: &str, field: &str, error_code: u32) -> Result<()> {
    let problem = if name.is_empty() {
        Some("is empty".to_owned())
    } else if name.len() > 15 {
        // IFNAMSIZ is 16 with the terminating NUL.
        Some(format!("is {} bytes long; at most 15 fit", name.len()))
    } else if name == "." || name == ".." {
        Some("cannot be \".\" or \"..\"".to_owned())
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("cannot hold '/', ':' or whitespace".to_owned())
    } else if name.chars().any(char::is_control) {
        Some("cannot hold control characters".to_owned())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => {
            let msg = format!("{field} {:?} {p}", shorten(name));
            Err(if error_code == code::INVALID_CONFIG {
                Error::new(error_code, format!("invalid network configuration: {msg}"))
            } else {
                Error::new(error_code, msg)
            })
        }
    }
}

/// The network's `name` (spec: starts with an alphanumeric character, then
/// alphanumerics, `_`, `.` or `-`). It names host-local's directory, so it
/// must also fit in one path component.
pub fn check_network_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::config("name", "missing: the network needs a name"));
    }
    if !is_plain_identifier(name) {
        return Err(Error::config(
            "name",
            format!(
                "{:?} is invalid: it must start with a letter or digit and hold only letters, digits, '_', '.' and '-'",
                shorten(name)
            ),
        ));
    }
    if name.len() > 255 {
        return Err(Error::config(
            "name",
            format!(
                "is {} bytes long; it names a directory, at most 255",
                name.len()
            ),
        ));
    }
    Ok(())
}

fn is_plain_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Hostile input is quoted in messages, but not at any length.
fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The name one attachment goes by in files and nft comments: 32 hex
/// digits of SHA-256 over the network, container ID and interface name.
/// Fixed length and hex only, so it fits anywhere and escapes nothing.
pub fn attachment_key(network: &str, container_id: &str, ifname: &str) -> String {
    let mut input = Vec::with_capacity(network.len() + container_id.len() + ifname.len() + 2);
    for (i, part) in [network, container_id, ifname].iter().enumerate() {
        if i > 0 {
            // NUL cannot occur in any of them: the parts cannot run together.
            input.push(0);
        }
        input.extend_from_slice(part.as_bytes());
    }
    hex(&sha256(&input)[..16])
}

/// A short name derived from the network name for nft chain names.
pub fn network_key(network: &str) -> String {
    hex(&sha256(network.as_bytes())[..8])
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 (FIPS 180-4). A collision-resistant digest: a runtime that picks
/// container IDs must not be able to make two attachments share a file.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, v) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(v);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Two blocks of padding.
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn container_ids_as_the_skel_checks_them() {
        for ok in ["a", "0", "ctr-1", "A.b_c-9", "x..y", &"a".repeat(300)] {
            assert!(check_container_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "x\" ; flush ruleset ; \"",
            "../../etc",
            "-leading",
            ".hidden",
            "_x",
            "a/b",
            "a b",
            "a\nb",
            "a\r\nb",
            "é",
            "a}",
        ] {
            let err = check_container_id(bad).unwrap_err();
            assert_eq!(err.code, code::INVALID_ENVIRONMENT, "{bad:?}");
            assert!(err.msg.contains("CNI_CONTAINERID"), "{}", err.msg);
        }
    }

    #[test]
    fn interface_names_as_the_kernel_takes_them() {
        for ok in ["eth0", "net1", "a.b", "x-y_z", "123456789012345"] {
            assert!(
                check_interface_name(ok, "CNI_IFNAME", code::INVALID_ENVIRONMENT).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "",
            ".",
            "..",
            "1234567890123456",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\u{7f}",
        ] {
            let err =
                check_interface_name(bad, "CNI_IFNAME", code::INVALID_ENVIRONMENT).unwrap_err();
            assert_eq!(err.code, code::INVALID_ENVIRONMENT, "{bad:?}");
            assert!(err.msg.starts_with("CNI_IFNAME"), "{}", err.msg);
        }
        let err = check_interface_name("..", "bridge", code::INVALID_CONFIG).unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);
        assert!(err.msg.contains("bridge"), "{}", err.msg);
    }

    #[test]
    fn network_names_as_the_spec_says() {
        for ok in ["testnet", "k8s-pod-network", "a.b_c", "cbr0"] {
            assert!(check_network_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "-x", "a b", &"n".repeat(256)] {
            let err = check_network_name(bad).unwrap_err();
            assert_eq!(err.code, code::INVALID_CONFIG, "{bad:?}");
            assert!(err.msg.contains("name"), "{}", err.msg);
        }
    }

    #[test]
    fn keys_are_fixed_length_hex_and_keep_parts_apart() {
        let k = attachment_key("net", &"a".repeat(300), "eth0");
        assert_eq!(k.len(), 32);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(
            attachment_key("net", "ab", "c"),
            attachment_key("net", "a", "bc")
        );
        assert_ne!(
            attachment_key("n1", "ctr", "eth0"),
            attachment_key("n2", "ctr", "eth0")
        );
        assert_eq!(network_key("testnet").len(), 16);
    }
}
