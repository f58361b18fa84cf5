//! Injected randomness, like the injected clock: ids, secrets and nonces come from a
//! [`Random`] the process is given, so a test can make them reproducible. Production uses
//! the operating system's CSPRNG (`remit_token::OsRandom`); [`SeededRandom`] is for tests
//! only and says so in its name's documentation: it is predictable.

use std::sync::Mutex;

/// A source of random bytes.
pub trait Random: Send + Sync {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);

    /// 16 fresh bytes (an id's randomness).
    fn bytes16(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        self.fill(&mut b);
        b
    }

    /// 32 fresh bytes (a secret's).
    fn bytes32(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        self.fill(&mut b);
        b
    }
}

/// A deterministic source for tests (xorshift64*): the same seed gives the same bytes.
/// Never use it for anything secret.
pub struct SeededRandom(Mutex<u64>);

impl SeededRandom {
    pub fn new(seed: u64) -> Self {
        SeededRandom(Mutex::new(seed | 1))
    }
}

impl Random for SeededRandom {
    fn fill(&self, buf: &mut [u8]) {
        let Ok(mut s) = self.0.lock() else { return };
        for chunk in buf.chunks_mut(8) {
            *s ^= *s >> 12;
            *s ^= *s << 25;
            *s ^= *s >> 27;
            let v = s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_repeats_and_differs_from_another() {
        let (a, b, c) = (SeededRandom::new(7), SeededRandom::new(7), SeededRandom::new(8));
        let x = a.bytes32();
        assert_eq!(x, b.bytes32());
        assert_ne!(x, c.bytes32());
    }
}
