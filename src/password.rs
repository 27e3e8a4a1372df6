//! Password hashing: salted PBKDF2-HMAC-SHA512, stored as a self-describing string.
//!
//! A stored hash reads `$pbkdf2-sha512$i=<iterations>$<salt>$<hash>` (the PHC string format;
//! salt and hash in unpadded standard base64). It names its algorithm and cost, so the cost can
//! be raised later: [`PasswordHash::needs_upgrade`] tells the store to rehash at the next login.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use sha2::Sha512;

use crate::error::{Error, Result};

/// PBKDF2 iterations by default: OWASP's current figure for PBKDF2-HMAC-SHA512.
pub const DEFAULT_ITERATIONS: u32 = 220_000;
/// The fewest iterations a setting may ask for (tests use it to run fast).
pub const MIN_ITERATIONS: u32 = 1_000;
/// The most iterations accepted, in settings and in stored hashes: a damaged or hostile
/// database must not make one login take minutes.
pub const MAX_ITERATIONS: u32 = 10_000_000;

const SCHEME: &str = "pbkdf2-sha512";
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 64;

/// The cost of new password hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pbkdf2Params {
    iterations: u32,
}

impl Pbkdf2Params {
    /// Parameters with `iterations` rounds, checked against [`MIN_ITERATIONS`] and
    /// [`MAX_ITERATIONS`].
    pub fn new(iterations: u32) -> Result<Self> {
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(Error::Config(format!(
                "hash iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, not {iterations}"
            )));
        }
        Ok(Pbkdf2Params { iterations })
    }
}

impl Default for Pbkdf2Params {
    fn default() -> Self {
        Pbkdf2Params {
            iterations: DEFAULT_ITERATIONS,
        }
    }
}

/// A salted password hash, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordHash {
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt from OpenSSL's generator.
    pub fn new(password: &[u8], params: Pbkdf2Params) -> Result<Self> {
        let mut salt = vec![0u8; SALT_LEN];
        openssl::rand::rand_bytes(&mut salt)
            .map_err(|e| Error::tls("cannot draw a random salt", e))?;
        let hash = derive(password, &salt, params.iterations);
        Ok(PasswordHash {
            iterations: params.iterations,
            salt,
            hash,
        })
    }

    /// Reads a stored hash string.
    pub fn parse(stored: &str) -> Result<Self> {
        let bad = |why: &str| Error::BadPasswordHash(why.to_string());
        let mut parts = stored.split('$');
        let (Some(""), Some(scheme), Some(cost), Some(salt), Some(hash), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad("not of the form $scheme$i=N$salt$hash"));
        };
        if scheme != SCHEME {
            return Err(bad("unknown hash scheme"));
        }
        let iterations: u32 = cost
            .strip_prefix("i=")
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=MAX_ITERATIONS).contains(n))
            .ok_or_else(|| bad("iteration count missing or out of range"))?;
        let salt = B64.decode(salt).map_err(|_| bad("salt is not base64"))?;
        let hash = B64.decode(hash).map_err(|_| bad("hash is not base64"))?;
        if salt.len() < SALT_LEN || hash.len() != HASH_LEN {
            return Err(bad("salt or hash has the wrong length"));
        }
        Ok(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }

    /// Whether `password` is the one this hash was made from, compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        let candidate = derive(password, &self.salt, self.iterations);
        // Both are HASH_LEN long (checked in `parse`); memcmp::eq panics on unequal lengths.
        candidate.len() == self.hash.len() && openssl::memcmp::eq(&candidate, &self.hash)
    }

    /// Whether this hash is cheaper than `params` asks, and so should be remade at the next
    /// successful login.
    pub fn needs_upgrade(&self, params: Pbkdf2Params) -> bool {
        self.iterations < params.iterations
    }
}

impl std::fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "${SCHEME}$i={}${}${}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.hash)
        )
    }
}

/// Spends the time of one verification at `params`, for a login whose account does not exist,
/// so that a failed login takes about as long whether or not the user exists.
pub fn spend_verification_time(password: &[u8], params: Pbkdf2Params) {
    let salt = [0u8; SALT_LEN];
    std::hint::black_box(derive(password, &salt, params.iterations));
}

fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Pbkdf2Params {
        Pbkdf2Params::new(MIN_ITERATIONS).unwrap()
    }

    #[test]
    fn default_cost_is_owasp_figure() {
        assert_eq!(Pbkdf2Params::default().iterations, 220_000);
        let stored = PasswordHash::new(b"pw", Pbkdf2Params::default())
            .unwrap()
            .to_string();
        assert!(stored.starts_with("$pbkdf2-sha512$i=220000$"), "{stored}");
    }

    #[test]
    fn round_trip_and_verify() {
        let h = PasswordHash::new(b"correct horse", fast()).unwrap();
        let parsed = PasswordHash::parse(&h.to_string()).unwrap();
        assert_eq!(parsed, h);
        assert!(parsed.verify(b"correct horse"));
        assert!(!parsed.verify(b"correct hors"));
        assert!(!parsed.verify(b""));
    }

    #[test]
    fn same_password_different_salt() {
        let a = PasswordHash::new(b"123", fast()).unwrap();
        let b = PasswordHash::new(b"123", fast()).unwrap();
        assert_ne!(a.to_string(), b.to_string());
    }

    #[test]
    fn matches_rfc_style_vector() {
        // PBKDF2-HMAC-SHA512("password", "salt", 1 iteration), first 16 bytes (RFC 6070 style
        // vector for SHA-512, as published with the pbkdf2 test suites).
        let out = derive(b"password", b"salt", 1);
        assert_eq!(
            &out[..16],
            &[
                0x86, 0x7f, 0x70, 0xcf, 0x1a, 0xde, 0x02, 0xcf, 0xf3, 0x75, 0x25, 0x99, 0xa3, 0xa5,
                0x3d, 0xc4
            ]
        );
    }

    #[test]
    fn agrees_with_openssl() {
        let mut expected = [0u8; HASH_LEN];
        openssl::pkcs5::pbkdf2_hmac(
            b"pw",
            b"0123456789abcdef",
            2000,
            openssl::hash::MessageDigest::sha512(),
            &mut expected,
        )
        .unwrap();
        assert_eq!(derive(b"pw", b"0123456789abcdef", 2000), expected);
    }

    #[test]
    fn upgrade_when_cheaper() {
        let h = PasswordHash::new(b"pw", fast()).unwrap();
        assert!(h.needs_upgrade(Pbkdf2Params::new(2 * MIN_ITERATIONS).unwrap()));
        assert!(!h.needs_upgrade(fast()));
    }

    #[test]
    fn rejects_bad_strings() {
        let good = PasswordHash::new(b"pw", fast()).unwrap().to_string();
        for bad in [
            "",
            "123",
            "$pbkdf2-sha256$i=1000$AAAAAAAAAAAAAAAAAAAAAA$AAAA",
            &good.replace("i=1000", "i=0"),
            &good.replace("i=1000", "i=99999999999"),
            &good.replace("i=1000", "n=1000"),
            &format!("{good}$extra"),
            &good[..good.len() - 4],
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn params_are_bounded() {
        assert!(Pbkdf2Params::new(MIN_ITERATIONS - 1).is_err());
        assert!(Pbkdf2Params::new(MAX_ITERATIONS + 1).is_err());
        assert!(Pbkdf2Params::new(DEFAULT_ITERATIONS).is_ok());
    }
}
