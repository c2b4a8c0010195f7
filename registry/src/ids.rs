//! The one source of random identifiers: object IDs as Docker's (25 lowercase letters and digits),
//! join-token secrets, and node IDs. Randomness stays here, out of the model's pure apply: IDs are
//! drawn before a command is proposed and travel in it.

use rand::Rng;
use rand::distr::Alphanumeric;

/// `len` random lowercase letters and digits.
fn random_lowercase(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(|c| (c as char).to_ascii_lowercase()).collect()
}

/// A new service or task ID: 25 lowercase letters and digits, as Docker's.
pub fn object_id() -> String {
    random_lowercase(25)
}

/// A new join-token secret.
pub fn secret() -> String {
    random_lowercase(25)
}

/// A new node ID: non-zero, below 2^63 (shown as 16 hex digits).
pub fn node_id() -> u64 {
    rand::rng().random_range(1..u64::MAX >> 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let id = object_id();
        assert_eq!(id.len(), 25);
        assert!(id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{id}");
        assert_ne!(object_id(), object_id());
        assert!((1..u64::MAX >> 1).contains(&node_id()));
    }
}
