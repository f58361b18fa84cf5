//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP): HMAC-SHA1 (what every
//! authenticator app supports), 6 digits, 30-second steps, one step of drift either way.
//! A code is accepted once: the verifier returns the step it matched, and the caller refuses
//! any step at or before the last one used.

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;

/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;

/// The HOTP value of `secret` at counter `step` (RFC 4226 §5.3).
pub fn hotp(secret: &[u8], step: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let h = tag.as_ref();
    let offset = usize::from(h[h.len() - 1] & 0x0f);
    let bin = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    bin % 10u32.pow(DIGITS)
}

/// The step `now` (Unix seconds) falls in.
pub fn step_at(now: i64) -> u64 {
    u64::try_from(now.max(0) / STEP_SECS).unwrap_or(0)
}

/// Checks `code` against the steps around `now`, newer than `last_used`; returns the step it
/// matched. Every candidate is compared (in constant time), so timing says nothing.
pub fn verify(secret: &[u8], code: &str, now: i64, last_used: Option<u64>) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let now_step = step_at(now);
    let mut found = None;
    for step in [now_step.saturating_sub(1), now_step, now_step + 1] {
        let want = format!("{:0width$}", hotp(secret, step), width = DIGITS as usize);
        let ok = bool::from(want.as_bytes().ct_eq(code.as_bytes()));
        if ok && last_used.is_none_or(|l| step > l) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// RFC 4648 base32 without padding (what `otpauth://` URIs carry).
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for b in bytes {
        buf = (buf << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buf >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B (SHA-1 rows; the RFC's 8-digit values, mod 10^6).
    #[test]
    fn rfc_6238_vectors() {
        let secret = b"12345678901234567890";
        for (t, want) in
            [(59, 94_287_082u32), (1_111_111_109, 7_081_804), (1_234_567_890, 89_005_924), (2_000_000_000, 69_279_037)]
        {
            assert_eq!(hotp(secret, step_at(t)), want % 1_000_000, "t={t}");
        }
    }

    #[test]
    fn codes_work_once_within_a_step_of_drift() {
        let secret = b"12345678901234567890";
        let now = 1_111_111_109;
        let code = format!("{:06}", hotp(secret, step_at(now)));
        let step = verify(secret, &code, now, None).unwrap_or_default();
        assert_eq!(step, step_at(now));
        assert_eq!(verify(secret, &code, now, Some(step)), None, "replayed");
        assert_eq!(verify(secret, &code, now + 30, None), Some(step), "one step late is fine");
        assert_eq!(verify(secret, &code, now + 90, None), None, "three steps late is not");
        assert_eq!(verify(secret, "12345", now, None), None);
        assert_eq!(verify(secret, "abcdef", now, None), None);
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }
}
