//! Signed webhooks: `Remit-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//!
//! Remit signs the notifications it sends this way, and external risk detectors sign the
//! signals they send Remit the same way. The timestamp is signed with the body, so a captured
//! request replays only within the tolerance; the comparison is constant-time.

use aws_lc_rs::hmac;

/// The header's name.
pub const HEADER: &str = "remit-signature";

/// The header value for `body` sent at `t` (Unix seconds).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={t},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature is too old or from the future")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks `header` for `body` at `now` (Unix seconds), accepting timestamps within
/// `tolerance` seconds either way; returns the signed timestamp (with the body, what a
/// receiver remembers to accept each message once).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance: i64) -> Result<i64, WebhookError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| WebhookError::Malformed)?),
            Some(("v1", v)) => sigs.push(hex::decode(v).map_err(|_| WebhookError::Malformed)?),
            _ => {}
        }
    }
    let t = t.ok_or(WebhookError::Malformed)?;
    if sigs.is_empty() || sigs.len() > 4 {
        return Err(WebhookError::Malformed);
    }
    if (now - t).abs() > tolerance {
        return Err(WebhookError::Stale);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut msg = t.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    // `hmac::verify` compares in constant time.
    if sigs.iter().any(|s| hmac::verify(&key, &msg, s).is_ok()) { Ok(t) } else { Err(WebhookError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_body_secret_and_time() {
        let h = sign(b"s3cret", 1_000, b"{\"a\":1}");
        assert!(h.starts_with("t=1000,v1="));
        assert_eq!(verify(b"s3cret", &h, b"{\"a\":1}", 1_010, 300), Ok(1_000));
        assert_eq!(verify(b"s3cret", &h, b"{\"a\":2}", 1_010, 300), Err(WebhookError::Mismatch));
        assert_eq!(verify(b"other", &h, b"{\"a\":1}", 1_010, 300), Err(WebhookError::Mismatch));
        assert_eq!(verify(b"s3cret", &h, b"{\"a\":1}", 2_000, 300), Err(WebhookError::Stale));
        assert_eq!(verify(b"s3cret", "v1=00", b"", 0, 300), Err(WebhookError::Malformed));
        assert_eq!(verify(b"s3cret", "t=1,v1=zz", b"", 0, 300), Err(WebhookError::Malformed));
    }
}
