//! Hex for stored hashes: one helper, refusing anything that is not exactly 64 hex digits
//! (a malformed stored hash is corrupt data, never a panic).

/// Decodes a 32-byte hash written as 64 hex digits.
pub(crate) fn decode32(s: &str) -> Option<[u8; 32]> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn malformed_hashes_are_refused_not_panics() {
        assert!(super::decode32(&"ab".repeat(32)).is_some());
        for bad in ["", "ab", &"zz".repeat(32), &"é".repeat(32), &"ab".repeat(33)] {
            assert!(super::decode32(bad).is_none(), "{bad}");
        }
    }
}
