//! Resource ids: 17 characters of `[A-Za-z0-9]` from a cryptographic RNG (ids of runs and
//! builds double as bearer capabilities, so they must not be guessable).

use rand::Rng;

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Length of every resource id troupe generates.
pub const ID_LEN: usize = 17;

/// A fresh random resource id.
pub fn new_id() -> String {
    random_string(ID_LEN)
}

/// A random alphanumeric string of `len` characters (ThreadRng is a CSPRNG seeded by the OS).
pub fn random_string(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// True when `s` looks like an id troupe could have generated (used to tell ids from names).
pub fn looks_like_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_17_alphanumeric_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 17);
        assert!(looks_like_id(&a));
        assert_ne!(a, b);
    }
}
